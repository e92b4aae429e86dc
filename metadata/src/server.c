/*
 * The metadata RPC server's connection layer (server.h): accepts agents, splits Kafka-style
 * frames, parses request header v2, hands each request to meta__dispatch (handlers.c), and sends
 * responses in request order once the journal says what they depend on is durable. Also the
 * high-watermark pushes for watched partitions and the reaction to a failed journal.
 */
#include "server_int.h"

#include "meta_obs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/common/log.h"
#include "runnel/protocol/errors.h"

static void meta__conn_flush(struct meta__conn *c);
static void meta__conn_close(struct meta__conn *c);

void meta_server_options_default(struct meta_server_options *o)
{
    memset(o, 0, sizeof(*o));
    o->data_dir = "runnel-metadata";
    o->host = "127.0.0.1";
    o->port = 9093;
    o->snapshot_bytes = 256u << 20;
    o->snapshot_state_pct = 100;
    o->snapshot_write_rate = (uint64_t)META_SNAPSHOT_WRITE_MBPS_DEFAULT << 20;
    o->max_frame = 64u << 20;
    o->group_initial_delay_ms = 3000;
    o->offsets_retention_ms = 7LL * 24 * 3600 * 1000;
}

int meta_server_port(const struct meta_server *s)
{
    return s->port;
}

double meta_server_startup_ms(const struct meta_server *s)
{
    return s->startup_ms;
}

/* ---- writing ---- */

struct meta__write {
    uv_write_t req;       /* libuv request; first so the callback can cast */
    struct meta__buf buf; /* bytes being written */
};

static void meta__on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void meta__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void meta__on_write(uv_write_t *req, int status)
{
    struct meta__write *w = (struct meta__write *)req;
    uv_stream_t *stream = req->handle;
    struct meta__conn *c = stream->data;
    meta__buf_free(&w->buf);
    free(w);
    (void)status; /* errors surface as read errors and close the connection */
    /* A peer that stopped reading made us pause; resume once its backlog drained. */
    if (!c->closing && !c->reading && c->n_pending < META_MAX_PENDING / 2 &&
        uv_stream_get_write_queue_size(stream) <= META_MAX_UNSENT / 2) {
        c->reading = true;
        uv_read_start(stream, meta__on_alloc, meta__on_read);
    }
}

/* Takes ownership of `frame`. */
void meta__send(struct meta__conn *c, struct meta__buf *frame)
{
    if (c->closing) {
        meta__buf_free(frame);
        return;
    }
    struct meta__write *w = kp_xcalloc(1, sizeof(*w));
    w->buf = *frame;
    memset(frame, 0, sizeof(*frame));
    uv_buf_t b = uv_buf_init((char *)w->buf.p, (unsigned)w->buf.len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, meta__on_write) != 0) {
        meta__buf_free(&w->buf);
        free(w);
        meta__conn_close(c);
    }
}

void meta__frame_begin(struct meta__buf *f, int32_t correlation_id)
{
    f->len = 0;
    meta__put_u32(f, 0); /* size, patched in meta__frame_end */
    meta__put_u32(f, (uint32_t)correlation_id);
    meta__put_u8(f, 0); /* response header v1: no tagged fields */
}

void meta__frame_end(struct meta__buf *f)
{
    uint32_t size = (uint32_t)(f->len - 4);
    f->p[0] = (uint8_t)(size >> 24);
    f->p[1] = (uint8_t)(size >> 16);
    f->p[2] = (uint8_t)(size >> 8);
    f->p[3] = (uint8_t)size;
}

static void meta__pending_free(struct meta__pending *p)
{
    meta__buf_free(&p->frame);
    free(p);
}

/* Sends every response at the head of the queue whose dependencies are durable. */
static void meta__conn_flush(struct meta__conn *c)
{
    struct meta_server *srv = c->srv;
    uint64_t durable = meta_journal_durable_seq(srv->journal);
    while (c->head != NULL && !c->closing) {
        struct meta__pending *p = c->head;
        if (p->needed_seq > durable) {
            if (!srv->failed) {
                break;
            }
            /* Never acknowledge what is not on disk: answer an error or give up the socket. */
            struct meta__buf body = {0};
            if (meta__encode_error(p->api_key, p->api_version, KP_ERROR_KAFKA_STORAGE_ERROR,
                                   &body) != 0) {
                meta__buf_free(&body);
                meta__conn_close(c);
                return;
            }
            meta__frame_begin(&p->frame, p->correlation_id);
            meta__put_raw(&p->frame, body.p, body.len);
            meta__frame_end(&p->frame);
            meta__buf_free(&body);
        }
        meta__obs_request(p->api_key, p->started_ns, p->needed_seq > durable ? "storage" : NULL);
        c->head = p->next;
        if (c->head == NULL) {
            c->tail = NULL;
        }
        c->n_pending--;
        meta__send(c, &p->frame);
        meta__pending_free(p);
    }
}

/* ---- watches and pushes ---- */

void meta__watch(struct meta_server *srv, struct meta__conn *c, uint32_t gid)
{
    for (uint32_t i = 0; i < c->n_watched; i++) {
        if (c->watched[i] == gid) {
            return;
        }
    }
    if (gid >= srv->n_watchers) {
        uint32_t n = gid + 1 > srv->n_watchers * 2 ? gid + 1 : srv->n_watchers * 2;
        srv->watchers = kp_xrealloc(srv->watchers, sizeof(*srv->watchers) * n);
        memset(&srv->watchers[srv->n_watchers], 0, sizeof(*srv->watchers) * (n - srv->n_watchers));
        srv->n_watchers = n;
    }
    struct meta__watchers *w = &srv->watchers[gid];
    w->conns = kp_xrealloc(w->conns, sizeof(*w->conns) * (w->n + 1));
    w->conns[w->n++] = c;
    c->watched = kp_xrealloc(c->watched, sizeof(*c->watched) * (c->n_watched + 1));
    c->watched[c->n_watched++] = gid;
}

void meta__unwatch(struct meta_server *srv, struct meta__conn *c, uint32_t gid)
{
    for (uint32_t i = 0; i < c->n_watched; i++) {
        if (c->watched[i] == gid) {
            c->watched[i] = c->watched[--c->n_watched];
            break;
        }
    }
    if (gid < srv->n_watchers) {
        struct meta__watchers *w = &srv->watchers[gid];
        for (uint32_t i = 0; i < w->n; i++) {
            if (w->conns[i] == c) {
                w->conns[i] = w->conns[--w->n];
                break;
            }
        }
    }
}

void meta__notice(struct meta_server *srv, const struct kp_uuid *topic, int32_t partition,
                  uint32_t gid)
{
    if (gid >= srv->n_watchers || srv->watchers[gid].n == 0) {
        return;
    }
    if (srv->n_notices == srv->cap_notices) {
        srv->cap_notices = srv->cap_notices ? srv->cap_notices * 2 : 64;
        srv->notices = kp_xrealloc(srv->notices, sizeof(*srv->notices) * srv->cap_notices);
    }
    struct meta__notice *n = &srv->notices[srv->n_notices++];
    n->seq = meta_journal_last_seq(srv->journal);
    n->gid = gid;
    n->topic_id = *topic;
    n->partition = partition;
}

/* Pushes durable notices to their watchers: one Notify frame per connection per wake-up. */
static void meta__push_notices(struct meta_server *srv)
{
    uint64_t durable = meta_journal_durable_seq(srv->journal);
    size_t ready = 0;
    while (ready < srv->n_notices && srv->notices[ready].seq <= durable) {
        ready++;
    }
    if (ready == 0) {
        return;
    }
    for (struct meta__conn *c = srv->conns; c != NULL; c = c->next) {
        if (c->n_watched == 0 || c->closing) {
            continue;
        }
        struct meta__notice *mine = kp_xmalloc(sizeof(*mine) * ready);
        size_t n = 0;
        for (size_t i = 0; i < ready; i++) {
            const struct meta__notice *x = &srv->notices[i];
            const struct meta__watchers *w = &srv->watchers[x->gid];
            bool watching = false;
            for (uint32_t k = 0; k < w->n && !watching; k++) {
                watching = w->conns[k] == c;
            }
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++) {
                seen = mine[k].gid == x->gid;
            }
            if (watching && !seen) {
                mine[n++] = *x;
            }
        }
        if (n > 0) {
            struct meta__buf body = {0};
            if (meta__encode_notify(srv, mine, n, &body) == 0) {
                struct meta__buf f = {0};
                meta__frame_begin(&f, META_PUSH_CORRELATION_ID);
                meta__put_raw(&f, body.p, body.len);
                meta__frame_end(&f);
                meta__send(c, &f);
            }
            meta__buf_free(&body);
        }
        free(mine);
    }
    memmove(srv->notices, srv->notices + ready, sizeof(*srv->notices) * (srv->n_notices - ready));
    srv->n_notices -= ready;
}

/* ---- reading ---- */

static void meta__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct meta__conn *c = h->data;
    (void)suggested;
    meta__buf_reserve(&c->in, 64 * 1024);
    buf->base = (char *)c->in.p + c->in.len;
    buf->len = c->in.cap - c->in.len;
}

static int meta__parse_header(struct kp_reader *r, struct meta__request *req)
{
    req->api_key = kp_read_i16(r);
    req->api_version = kp_read_i16(r);
    req->correlation_id = kp_read_i32(r);
    struct kp_str client_id;
    kp_read_string(r, false, &client_id);
    uint32_t tags = kp_read_uvarint(r);
    for (uint32_t i = 0; i < tags && !r->err; i++) {
        (void)kp_read_uvarint(r);
        uint32_t size = kp_read_uvarint(r);
        (void)kp_read_raw(r, size);
    }
    return r->err;
}

static void meta__handle_frame(struct meta__conn *c, const uint8_t *p, size_t len)
{
    struct meta_server *srv = c->srv;
    struct kp_reader r;
    kp_reader_init(&r, p, len);
    struct meta__request req;
    if (meta__parse_header(&r, &req) != 0) {
        rn_log(RN_LOG_WARN, "meta_bad_header", "why=\"%s\"", r.why ? r.why : "short");
        meta__conn_close(c);
        return;
    }
    req.body = r.p;
    req.body_len = kp_reader_remaining(&r);
    struct meta__pending *pend = kp_xcalloc(1, sizeof(*pend));
    pend->started_ns = meta__obs_now_ns();
    pend->api_key = req.api_key;
    pend->api_version = req.api_version;
    pend->correlation_id = req.correlation_id;
    struct meta__buf body = {0};
    int rc;
    if (srv->failed) {
        rc = meta__encode_error(req.api_key, req.api_version, KP_ERROR_KAFKA_STORAGE_ERROR, &body);
    } else {
        rc = meta__dispatch(srv, c, &req, &body);
    }
    kp_arena_reset(&srv->arena);
    if (rc != 0) {
        meta__obs_request(req.api_key, pend->started_ns, "bad_request");
        meta__buf_free(&body);
        free(pend);
        meta__conn_close(c);
        return;
    }
    pend->needed_seq = srv->failed ? 0 : meta_journal_last_seq(srv->journal);
    meta__frame_begin(&pend->frame, req.correlation_id);
    meta__put_raw(&pend->frame, body.p, body.len);
    meta__frame_end(&pend->frame);
    meta__buf_free(&body);
    if (c->tail != NULL) {
        c->tail->next = pend;
    } else {
        c->head = pend;
    }
    c->tail = pend;
    c->n_pending++;
}

static void meta__on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct meta__conn *c = stream->data;
    (void)buf;
    if (nread < 0) {
        meta__conn_close(c);
        return;
    }
    c->in.len += (size_t)nread;
    size_t off = 0;
    while (!c->closing && c->in.len - off >= 4) {
        const uint8_t *p = c->in.p + off;
        int32_t size =
            (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        if (size < 8 || (size_t)size > c->srv->opt.max_frame) {
            rn_log(RN_LOG_WARN, "meta_bad_frame", "size=%d", size);
            meta__conn_close(c);
            return;
        }
        if (c->in.len - off - 4 < (size_t)size) {
            break;
        }
        meta__handle_frame(c, p + 4, (size_t)size);
        off += 4 + (size_t)size;
    }
    if (off > 0 && !c->closing) {
        memmove(c->in.p, c->in.p + off, c->in.len - off);
        c->in.len -= off;
    }
    if (c->closing) {
        return;
    }
    meta__conn_flush(c);
    if (!c->closing && (c->n_pending >= META_MAX_PENDING ||
                        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > META_MAX_UNSENT)) {
        uv_read_stop((uv_stream_t *)&c->tcp); /* backpressure until durable replies drain */
        c->reading = false;
    }
}

static void meta__on_conn_closed(uv_handle_t *h)
{
    struct meta__conn *c = h->data;
    while (c->head != NULL) {
        struct meta__pending *p = c->head;
        c->head = p->next;
        meta__pending_free(p);
    }
    meta__buf_free(&c->in);
    free(c->watched);
    free(c);
}

static void meta__conn_close(struct meta__conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    struct meta_server *srv = c->srv;
    meta__groups_conn_closed(srv, c);
    while (c->n_watched > 0) {
        meta__unwatch(srv, c, c->watched[c->n_watched - 1]);
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        srv->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    uv_close((uv_handle_t *)&c->tcp, meta__on_conn_closed);
}

static void meta__on_connection(uv_stream_t *server, int status)
{
    struct meta_server *srv = server->data;
    if (status < 0) {
        return;
    }
    struct meta__conn *c = kp_xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->serial = ++srv->next_serial;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, meta__on_conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, meta__on_alloc, meta__on_read);
}

/* ---- durability ---- */

/*
 * A snapshot costs in proportion to the state (the snapshot thread loads, replays and
 * serialises all of it); tying the interval to the state's size keeps that cost per journal
 * byte bounded as the state grows, and start-up (load the snapshot, replay the journal) at most
 * about twice a snapshot's load at 100 %.
 */
uint64_t meta_snapshot_due_bytes(uint64_t n_extents, const struct meta_server_options *o)
{
    uint64_t raw = n_extents * (uint64_t)META_SNAPSHOT_EXTENT_BYTES;
    uint64_t rel = raw / 100 * o->snapshot_state_pct;
    return rel > o->snapshot_bytes ? rel : o->snapshot_bytes;
}

/*
 * Reports a finished background snapshot, and starts the next one once the journal grew by
 * meta_snapshot_due_bytes. Runs after every group commit and when the snapshot thread ends.
 */
static void meta__snapshot_tick(struct meta_server *srv)
{
    char why[512] = "";
    int done = meta_journal_snapshot_poll(srv->journal, why, sizeof(why));
    if (done != 0) {
        uint64_t ns = meta__mono_ns() - srv->snap_started_ns;
        meta__obs_snapshot_done(ns, done > 0);
        if (done > 0) {
            rn_log(RN_LOG_INFO, "meta_snapshot_written", "total_ms=%.1f", ns / 1e6);
        } else {
            rn_log(RN_LOG_ERROR, "meta_snapshot_failed", "total_ms=%.1f error=\"%s\"", ns / 1e6,
                   why[0] != '\0' ? why : strerror(-done));
        }
    }
    uint64_t t0 = meta__mono_ns();
    if (srv->failed || srv->opt.snapshot_bytes == 0 ||
        meta_journal_snapshot_running(srv->journal) || t0 < srv->snap_retry_ns ||
        meta_journal_bytes(srv->journal) <
            meta_snapshot_due_bytes(srv->state.n_extents, &srv->opt)) {
        return;
    }
    int rc = meta_journal_snapshot_start(srv->journal);
    if (rc == 0) {
        srv->snap_started_ns = t0;
        rn_log(RN_LOG_INFO, "meta_snapshot_started", "extents=%llu",
               (unsigned long long)srv->state.n_extents);
    } else if (rc != -EBUSY) {
        srv->snap_retry_ns = t0 + 1000000000u; /* no thread: try again in a second */
        meta__obs_snapshot_done(0, false);
        rn_log(RN_LOG_WARN, "meta_snapshot_start_failed", "error=\"%s\"", strerror(-rc));
    }
}

static void meta__on_durable(uv_async_t *a)
{
    struct meta_server *srv = a->data;
    int jerr = meta_journal_failed(srv->journal);
    if (jerr != 0 && !srv->failed) {
        srv->failed = true;
        rn_log(RN_LOG_ERROR, "meta_journal_failed",
               "error=\"%s\" action=\"refusing all requests; restart to recover\"",
               strerror(-jerr));
    }
    meta__push_notices(srv);
    for (struct meta__conn *c = srv->conns, *next; c != NULL; c = next) {
        next = c->next;
        meta__conn_flush(c);
        if (!c->closing && !c->reading && c->n_pending < META_MAX_PENDING / 2 &&
            uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= META_MAX_UNSENT) {
            c->reading = true;
            uv_read_start((uv_stream_t *)&c->tcp, meta__on_alloc, meta__on_read);
        }
    }
    meta__groups_flush(srv);
    meta__snapshot_tick(srv);
}

static void meta__journal_notify(void *arg)
{
    uv_async_send(arg);
}

bool meta__journal_op(struct meta_server *srv)
{
    return meta_journal_append(srv->journal, &srv->op) != 0;
}

/* ---- life cycle ---- */

static void meta__server_free(struct meta_server *srv)
{
    meta_journal_close(srv->journal);
    meta_state_free(&srv->state);
    for (uint32_t i = 0; i < srv->n_watchers; i++) {
        free(srv->watchers[i].conns);
    }
    free(srv->watchers);
    free(srv->notices);
    meta__groups_free(srv);
    meta_op_buf_free(&srv->op);
    kp_arena_free(&srv->arena);
    free(srv->data_dir);
    free(srv->host);
    free(srv);
}

static void meta__on_handle_closed(uv_handle_t *h)
{
    struct meta_server *srv = h->data;
    if (--srv->handles_open == 0) {
        meta__server_free(srv);
    }
}

int meta_server_open(struct meta_server **out, uv_loop_t *loop, const struct meta_server_options *o,
                     char *err, size_t err_len)
{
    *out = NULL;
    struct meta_server *srv = kp_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->opt = *o;
    srv->data_dir = kp_xstrdup(o->data_dir);
    srv->host = kp_xstrdup(o->host);
    srv->opt.data_dir = srv->data_dir;
    srv->opt.host = srv->host;
    if (srv->opt.max_frame == 0) {
        srv->opt.max_frame = 64u << 20;
    }
    kp_arena_init(&srv->arena, srv->opt.max_frame * 4);
    /* A 1,000-partition commit needs ~0.5 MB of arena (request, state arguments, answer): kept
     * from one request to the next, it costs no malloc and no fresh pages. */
    kp_arena_keep(&srv->arena, 4u << 20);
    meta_state_init(&srv->state, NULL);
    uv_async_init(loop, &srv->durable_async, meta__on_durable);
    srv->durable_async.data = srv;
    uint64_t t0 = meta__mono_ns();
    int rc = meta_journal_open(&srv->journal, srv->data_dir, &srv->state, meta__journal_notify,
                               &srv->durable_async, err, err_len);
    srv->startup_ms = (meta__mono_ns() - t0) / 1e6;
    if (rc == 0) {
        meta_journal_set_snapshot_rate(srv->journal, srv->opt.snapshot_write_rate);
        /* After the replay, which faults its pages in itself: the loop's appends from here on
         * find their pages ready (state.c, toucher.c). Without the thread they still work. */
        int trc = meta_state_start_toucher(&srv->state);
        if (trc != 0) {
            rn_log(RN_LOG_WARN, "meta_toucher_failed", "error=\"%s\"", strerror(-trc));
        }
    }
    if (rc == 0 && srv->state.mutations == 0 && srv->state.n_topics == 0 &&
        meta_journal_last_seq(srv->journal) == 0) {
        /* A new data directory: give the cluster its random seed (topic ids) via a snapshot. */
        uint8_t seed[16];
        if (uv_random(NULL, NULL, seed, sizeof(seed), 0, NULL) == 0) {
            memcpy(srv->state.cluster_seed, seed, sizeof(seed));
            rc = meta_journal_snapshot(srv->journal, &srv->state);
        }
    }
    for (int i = 0; i < 8; i++) {
        snprintf(srv->cluster_id + 2 * i, 3, "%02x", srv->state.cluster_seed[i]);
    }
    struct sockaddr_storage addr;
    if (rc == 0) {
        rc = uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&addr);
        if (rc != 0) {
            rc = uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&addr);
        }
        if (rc != 0) {
            snprintf(err, err_len, "bad listen address %s", o->host);
        }
    }
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    meta__groups_open(srv);
    srv->handles_open = 3;
    if (rc == 0) {
        rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0);
        if (rc == 0) {
            rc = uv_listen((uv_stream_t *)&srv->listener, 512, meta__on_connection);
        }
        if (rc != 0) {
            snprintf(err, err_len, "cannot listen on %s:%d: %s", o->host, o->port, uv_strerror(rc));
        }
    }
    if (rc != 0) {
        uv_close((uv_handle_t *)&srv->listener, meta__on_handle_closed);
        uv_close((uv_handle_t *)&srv->durable_async, meta__on_handle_closed);
        uv_close((uv_handle_t *)&srv->group_timer, meta__on_handle_closed);
        return rc;
    }
    meta__groups_start(srv);
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
    srv->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    meta__obs_open(srv);
    *out = srv;
    return 0;
}

void meta_server_close(struct meta_server *srv)
{
    meta__obs_close(srv);
    while (srv->conns != NULL) {
        meta__conn_close(srv->conns);
    }
    uv_close((uv_handle_t *)&srv->listener, meta__on_handle_closed);
    uv_close((uv_handle_t *)&srv->durable_async, meta__on_handle_closed);
    uv_close((uv_handle_t *)&srv->group_timer, meta__on_handle_closed);
}
