/*
 * The Kafka listener: accepts connections, splits frames, dispatches requests and writes the
 * responses back in request order (see agent.h for a request's life).
 *
 * Reads go into a 64 KiB staging buffer; a complete small frame is copied out into memory its
 * request owns. A frame too large for the staging buffer gets a buffer of its own that the socket
 * reads into directly, so big Produce requests are never copied. A frame larger than
 * max_frame_bytes, a negative size, a header that does not parse, an unknown api key, an
 * unsupported version (other than ApiVersions) or a body that does not decode closes the
 * connection, as a Kafka broker does.
 *
 * Memory stays bounded: at most one frame (<= max_frame_bytes) is being read per connection,
 * a connection with AGENT__MAX_PENDING unanswered requests or AGENT__MAX_WRITING unsent response
 * bytes stops being read, and produce backpressure pauses every connection.
 *
 * Acknowledgements: a request that waits for a flush is answered up to flush.interval.ms later,
 * so no response carries the TCP acknowledgement of the request's bytes, and the kernel delays
 * it. A client that leaves Nagle's algorithm on (librdkafka's default) holds its next small
 * request until that acknowledgement comes, which added 4-6 ms to every produce at 10 MB/s. After
 * each read that leaves requests unanswered the socket is asked for an immediate ACK
 * (TCP_QUICKACK, Linux), one setsockopt per read.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "handlers.h"
#include "obs.h"
#include "runnel/common/config.h"
#include "runnel/common/log.h"
#include "runnel/protocol/frame.h"

#define AGENT__STAGE_CAP (64 * 1024)          /* staging buffer, bytes */
#define AGENT__MAX_PENDING 1024               /* unanswered requests before a conn pauses */
#define AGENT__MAX_WRITING (64 * 1024 * 1024) /* unsent response bytes before a conn pauses */
#define AGENT__ARENA_BASE (1024 * 1024)       /* arena bytes every request may use */
#define AGENT__ARENA_PER_BYTE 16              /* plus this many per frame byte */

/* One response frame of a write. */
struct agent__wframe {
    uint8_t *buf;               /* response bytes, freed when written */
    void (*release)(void *arg); /* the request's release callback, run when written */
    void *release_arg;          /* its argument */
};

/* One uv_write: the consecutive finished responses of a connection, in order. */
struct agent__write {
    uv_write_t req;                 /* libuv write request */
    struct agent_conn *conn;        /* connection written to (may be closing) */
    size_t len;                     /* bytes of the frames (claimed runs included) */
    size_t n;                       /* frames */
    struct agent__wframe frames[1]; /* n of them (allocated to size) */
};

#define AGENT__WRITE_BUFS_STACK 64  /* uv_buf_t kept on the stack for one write */
#define AGENT__WRITE_MAX_FRAMES 256 /* responses gathered into one write at most */

static void agent__conn_close(struct agent_conn *c, const char *why);
static void agent__conn_update_reading(struct agent_conn *c);

static uint64_t agent__now(struct agent *a)
{
    return uv_now(a->loop);
}

static void agent__req_free(struct agent_req *req)
{
    agent_obs_request_done(req);
    if (req->release != NULL) {
        req->release(req->release_arg);
    }
    free(req->runs);
    kp_arena_free(&req->arena);
    free(req->frame);
    free(req->resp);
    free(req);
}

static void agent__write_free(struct agent__write *wr)
{
    for (size_t i = 0; i < wr->n; i++) {
        if (wr->frames[i].release != NULL) {
            wr->frames[i].release(wr->frames[i].release_arg);
        }
        free(wr->frames[i].buf);
    }
    free(wr);
}

static void agent__write_cb(uv_write_t *w, int status)
{
    struct agent__write *wr = (struct agent__write *)w;
    struct agent_conn *c = wr->conn;
    c->writing -= wr->len;
    agent__write_free(wr);
    if (status < 0 && !c->closing) {
        agent__conn_close(c, uv_strerror(status));
        return;
    }
    agent__conn_update_reading(c);
}

/* Appends the uv_bufs of `req`'s response frame (its buffer around its claimed runs) to `b`. */
static size_t agent__frame_bufs(const struct agent_req *req, uint8_t *buf, size_t len, uv_buf_t *b,
                                size_t nb)
{
    size_t at = 0;
    for (size_t i = 0; i < req->n_runs; i++) { /* buffer pieces between the runs */
        const struct agent_run *run = &req->runs[i];
        if (run->at > at) {
            b[nb++] = uv_buf_init((char *)buf + at, (unsigned)(run->at - at));
            at = run->at;
        }
        b[nb++] = uv_buf_init((char *)run->ptr, (unsigned)run->len);
    }
    size_t buffered = len - req->resp_claimed;
    if (buffered > at) {
        b[nb++] = uv_buf_init((char *)buf + at, (unsigned)(buffered - at));
    }
    return nb;
}

/*
 * Sends every finished response at the head of the queue, in order, and frees those requests.
 * Consecutive finished responses go out in one uv_write (one writev), up to
 * AGENT__WRITE_MAX_FRAMES at a time. While the agent is corked the connection is only marked.
 */
static void agent__conn_flush(struct agent_conn *c)
{
    struct agent *a = c->agent;
    if (a->cork > 0 && !c->closing) {
        if (!c->dirty) {
            c->dirty = true;
            c->dirty_next = a->dirty;
            a->dirty = c;
        }
        return;
    }
    while (c->head != NULL && c->head->done) {
        /* Count the frames and buffers of the next write. */
        size_t n = 0;
        size_t nb = 0;
        for (struct agent_req *r = c->head; r != NULL && r->done && n < AGENT__WRITE_MAX_FRAMES;
             r = r->next) {
            if (!r->silent && !c->closing && r->resp != NULL) {
                n++;
                nb += 2 * r->n_runs + 1;
            }
        }
        struct agent__write *wr = NULL;
        uv_buf_t stack[AGENT__WRITE_BUFS_STACK];
        uv_buf_t *b = stack;
        if (n > 0) {
            wr = kp_xmalloc(sizeof(*wr) + (n - 1) * sizeof(wr->frames[0]));
            wr->conn = c;
            wr->len = 0;
            wr->n = 0;
            b = nb <= AGENT__WRITE_BUFS_STACK ? stack : kp_xmalloc(nb * sizeof(*b));
        }
        size_t used = 0;
        while (c->head != NULL && c->head->done && (wr == NULL || wr->n < n)) {
            struct agent_req *req = c->head;
            c->head = req->next;
            if (c->head == NULL) {
                c->tail = NULL;
            }
            c->pending--;
            if (!req->silent && !c->closing && req->resp != NULL) {
                struct agent__wframe *f = &wr->frames[wr->n++];
                f->buf = req->resp;
                f->release = req->release;
                f->release_arg = req->release_arg;
                used = agent__frame_bufs(req, f->buf, req->resp_len, b, used);
                wr->len += req->resp_len;
                req->resp = NULL;
                req->release = NULL;
            }
            agent__req_free(req);
        }
        if (wr == NULL) {
            continue; /* only silent requests: freed */
        }
        c->writing += wr->len;
        int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, b, (unsigned)used, agent__write_cb);
        if (b != stack) {
            free(b);
        }
        if (rc < 0) {
            c->writing -= wr->len;
            agent__write_free(wr);
            agent__conn_close(c, uv_strerror(rc));
            return;
        }
    }
    agent__conn_update_reading(c);
}

void agent_cork(struct agent *a)
{
    a->cork++;
}

void agent_uncork(struct agent *a)
{
    if (--a->cork > 0) {
        return;
    }
    while (a->dirty != NULL) {
        struct agent_conn *c = a->dirty;
        a->dirty = c->dirty_next;
        c->dirty = false;
        c->dirty_next = NULL;
        agent__conn_flush(c);
    }
}

void agent_req_respond(struct agent_req *req, const void *msg)
{
    agent_req_respond_gather(req, msg, NULL, NULL, NULL);
}

void agent_req_add_run(struct agent_req *req, size_t at, const uint8_t *ptr, size_t len)
{
    if (req->n_runs == req->cap_runs) {
        req->cap_runs = req->cap_runs ? 2 * req->cap_runs : 16;
        req->runs = kp_xrealloc(req->runs, req->cap_runs * sizeof(*req->runs));
    }
    req->runs[req->n_runs++] = (struct agent_run){at, ptr, len};
}

void agent_req_respond_gather(struct agent_req *req, const void *msg, struct kp_gather *g,
                              void (*release)(void *arg), void *arg)
{
    req->release = release;
    req->release_arg = arg;
    struct agent_conn *c = req->conn;
    if (c == NULL) { /* the client went away while we worked */
        agent__req_free(req);
        return;
    }
    agent_obs_response(req, msg);
    int16_t key = req->hdr.request_api_key;
    int16_t version = req->hdr.request_api_version;
    int16_t hv = kp_response_header_version(key, version);
    struct kp_response_header h;
    kp_response_header_init(&h);
    h.correlation_id = req->hdr.correlation_id;
    size_t hlen = 0;
    size_t blen = 0;
    int rc = kp_response_header_size(&h, hv, &hlen);
    if (rc == 0) {
        rc = req->api->response->size(msg, version, &blen);
    }
    if (rc == 0 && hlen + blen > INT32_MAX) {
        rc = -EOVERFLOW;
    }
    if (rc == 0) {
        req->resp_len = 4 + hlen + blen;
        req->resp = kp_xmalloc(req->resp_len);
        struct kp_writer w;
        kp_writer_init(&w, req->resp, req->resp_len);
        kp_write_i32(&w, (int32_t)(hlen + blen));
        rc = kp_response_header_encode(&h, hv, &w);
        if (rc == 0) {
            w.gather = g; /* the header never holds a claimable run */
            rc = req->api->response->encode(msg, version, &w);
        }
        req->resp_claimed = g != NULL ? g->claimed : 0;
        if (rc == 0 && (w.err != 0 || kp_writer_len(&w) + req->resp_claimed != req->resp_len)) {
            rc = -EPROTO;
        }
    }
    if (rc != 0) {
        rn_log(RN_LOG_ERROR, "response_encode_failed", "api=%s version=%d rc=%d", req->api->name,
               version, rc);
        req->done = true;
        req->silent = true;
        agent__conn_close(c, "response encoding failed");
        return;
    }
    req->done = true;
    agent__conn_flush(c);
}

void agent_req_respond_bytes(struct agent_req *req, struct kp_bytes hdr_and_body)
{
    struct agent_conn *c = req->conn;
    if (c == NULL) {
        agent__req_free(req);
        return;
    }
    req->resp_len = 4 + (size_t)hdr_and_body.len;
    req->resp = kp_xmalloc(req->resp_len);
    struct kp_writer w;
    kp_writer_init(&w, req->resp, req->resp_len);
    kp_write_i32(&w, hdr_and_body.len);
    kp_write_raw(&w, hdr_and_body.ptr, (size_t)hdr_and_body.len);
    req->done = true;
    agent__conn_flush(c);
}

void agent_req_finish_silent(struct agent_req *req)
{
    if (req->conn == NULL) {
        agent__req_free(req);
        return;
    }
    req->done = true;
    req->silent = true;
    agent__conn_flush(req->conn);
}

void agent_req_close_conn(struct agent_req *req, const char *why)
{
    agent_obs_request_error(req->hdr.request_api_key, "closed");
    struct agent_conn *c = req->conn;
    req->done = true;
    req->silent = true;
    if (c == NULL) {
        agent__req_free(req);
        return;
    }
    agent__conn_close(c, why);
}

/*
 * ApiVersions at a version newer than we know is answered whatever header the client used: a
 * client that does not know our versions yet may send a v1 header where the spec's rule says v2.
 * Returns true when the frame is ApiVersions and its header parses as v1.
 */
static bool agent__reparse_v1(struct kp_reader *r, struct agent_req *req)
{
    if (req->frame_len < 4 || req->frame[0] != 0 || req->frame[1] != 18) {
        return false;
    }
    kp_reader_init(r, req->frame, req->frame_len);
    kp_request_header_init(&req->hdr);
    return kp_request_header_decode(r, 1, &req->arena, &req->hdr) == 0 && r->err == 0;
}

/* Takes ownership of `frame` (the bytes after the size field) and runs its request. */
static void agent__dispatch(struct agent_conn *c, uint8_t *frame, size_t len)
{
    struct agent *a = c->agent;
    struct agent_req *req = kp_xcalloc(1, sizeof(*req));
    size_t limit = AGENT__ARENA_BASE + AGENT__ARENA_PER_BYTE * len;
    kp_arena_init(&req->arena, limit);
    req->frame = frame;
    req->frame_len = len;
    req->started_ms = agent__now(a);
    req->started_ns = uv_hrtime();

    struct kp_reader r;
    kp_reader_init(&r, frame, len);
    if (kp_request_header_parse(&r, &req->arena, &req->hdr) != 0 && !agent__reparse_v1(&r, req)) {
        rn_log(RN_LOG_WARN, "bad_request_header", "peer=%s why=\"%s\"", c->peer,
               r.why ? r.why : "invalid");
        agent_obs_request_error(-1, "bad_header");
        agent__req_free(req);
        agent__conn_close(c, "bad request header");
        return;
    }
    int16_t key = req->hdr.request_api_key;
    int16_t version = req->hdr.request_api_version;
    const struct agent_api *served = agent_api_find(key);
    req->api = kp_api_find(key);
    if (served == NULL && (served = agent_api_internal_find(key)) != NULL) {
        req->api = kp_rpc_api_find(key); /* Runnel's own (peer.c): header v1, response v0 */
    }
    if (served == NULL || req->api == NULL) {
        rn_log(RN_LOG_WARN, "unsupported_api", "peer=%s api_key=%d", c->peer, key);
        agent_obs_request_error(key, "unsupported_api");
        agent__req_free(req);
        agent__conn_close(c, "unsupported api key");
        return;
    }

    req->conn = c;
    if (c->tail != NULL) {
        c->tail->next = req;
    } else {
        c->head = req;
    }
    c->tail = req;
    c->pending++;

    if (version < served->min_version || version > served->max_version ||
        version < req->api->min_version || version > req->api->max_version) {
        if (key == 18) { /* ApiVersions: a v0 body with UNSUPPORTED_VERSION and the list */
            agent_handle_api_versions(req);
            return;
        }
        rn_log(RN_LOG_WARN, "unsupported_version", "peer=%s correlation_id=%d api=%s version=%d",
               c->peer, req->hdr.correlation_id, req->api->name, version);
        agent_req_close_conn(req, "unsupported version");
        return;
    }
    req->body = kp_arena_alloc(&req->arena, req->api->request->struct_size);
    if (req->body == NULL) {
        agent_req_close_conn(req, "request too large to decode");
        return;
    }
    req->api->request->init(req->body);
    if (req->api->request->decode(&r, version, &req->arena, req->body) != 0 || r.err != 0) {
        rn_log(RN_LOG_WARN, "bad_request_body",
               "peer=%s correlation_id=%d api=%s version=%d why=\"%s\"", c->peer,
               req->hdr.correlation_id, req->api->name, version, r.why ? r.why : "invalid");
        agent_req_close_conn(req, "malformed request");
        return;
    }
    served->fn(req);
}

static void agent__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct agent_conn *c = h->data;
    if (c->big != NULL) {
        *buf = uv_buf_init((char *)c->big + c->big_len, (unsigned)(c->big_need - c->big_len));
        return;
    }
    if (c->stage == NULL) {
        c->stage = kp_xmalloc(AGENT__STAGE_CAP);
        c->stage_cap = AGENT__STAGE_CAP;
    }
    *buf = uv_buf_init((char *)c->stage + c->stage_len, (unsigned)(c->stage_cap - c->stage_len));
}

/* Splits complete frames out of the staging buffer; moves a large frame to its own buffer. */
static void agent__process_stage(struct agent_conn *c)
{
    size_t max = (size_t)c->agent->cfg.max_frame_bytes;
    size_t pos = 0;
    while (!c->closing && c->big == NULL) {
        struct kp_bytes frame;
        const char *why = NULL;
        ssize_t n = kp_frame_split(c->stage + pos, c->stage_len - pos, max, &frame, &why);
        if (n < 0) {
            rn_log(RN_LOG_WARN, "bad_frame", "peer=%s why=\"%s\"", c->peer, why ? why : "?");
            agent_obs_request_error(-1, "bad_frame");
            agent__conn_close(c, why);
            return;
        }
        if (n > 0) {
            uint8_t *copy = kp_xmalloc((size_t)frame.len);
            memcpy(copy, frame.ptr, (size_t)frame.len);
            pos += (size_t)n;
            agent__dispatch(c, copy, (size_t)frame.len);
            continue;
        }
        size_t have = c->stage_len - pos;
        if (have >= 4) {
            const uint8_t *p = c->stage + pos;
            size_t size = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
            if (size + 4 > c->stage_cap) { /* read the rest straight into its own buffer */
                c->big = kp_xmalloc(size ? size : 1);
                c->big_need = size;
                c->big_len = have - 4;
                memcpy(c->big, p + 4, c->big_len);
                pos = c->stage_len;
            }
        }
        break;
    }
    if (c->closing) {
        return;
    }
    if (pos > 0) {
        memmove(c->stage, c->stage + pos, c->stage_len - pos);
        c->stage_len -= pos;
    }
}

/* Acknowledges what was read now when requests are left waiting (see the top of this file). */
static void agent__conn_quickack(struct agent_conn *c)
{
#ifdef TCP_QUICKACK
    uv_os_fd_t fd;
    if (c->closing || c->head == NULL || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) {
        return;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
#else
    (void)c;
#endif
}

static void agent__read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct agent_conn *c = s->data;
    if (nread < 0) {
        agent__conn_close(c, nread == UV_EOF ? NULL : uv_strerror((int)nread));
        return;
    }
    if (nread == 0 || c->closing) {
        return;
    }
    if (c->agent->cfg.idle_timeout_ms > 0) {
        uv_timer_again(&c->idle);
    }
    if (c->big != NULL) {
        c->big_len += (size_t)nread;
        if (c->big_len == c->big_need) {
            uint8_t *frame = c->big;
            size_t len = c->big_need;
            c->big = NULL;
            c->big_len = c->big_need = 0;
            agent__dispatch(c, frame, len);
            if (!c->closing) {
                agent__process_stage(c); /* frames that followed may already be staged */
            }
            agent__conn_quickack(c);
        }
        return;
    }
    c->stage_len += (size_t)nread;
    agent__process_stage(c);
    agent__conn_quickack(c);
}

static void agent__conn_update_reading(struct agent_conn *c)
{
    if (c->closing) {
        return;
    }
    bool want = !c->agent->paused && !c->agent->stopping && c->pending < AGENT__MAX_PENDING &&
                c->writing < AGENT__MAX_WRITING;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, agent__alloc_cb, agent__read_cb) == 0) {
            c->reading = true;
        }
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    if (c->agent->stopping && c->pending == 0 && c->writing == 0) {
        agent__conn_close(c, NULL);
    }
}

void agent_server_set_paused(struct agent *a, bool paused)
{
    if (a->paused == paused) {
        return;
    }
    a->paused = paused;
    agent_obs_paused(a, paused);
    for (struct agent_conn *c = a->conns; c != NULL; c = c->next) {
        agent__conn_update_reading(c);
    }
}

static void agent__tcp_closed(uv_handle_t *h)
{
    struct agent_conn *c = h->data;
    free(c->stage);
    free(c->big);
    free(c);
}

static void agent__idle_closed(uv_handle_t *h)
{
    struct agent_conn *c = h->data;
    uv_close((uv_handle_t *)&c->tcp, agent__tcp_closed);
}

static void agent__conn_close(struct agent_conn *c, const char *why)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    if (why != NULL) {
        rn_log(RN_LOG_DEBUG, "conn_closed", "peer=%s why=\"%s\"", c->peer, why);
    }
    struct agent *a = c->agent;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        a->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    a->n_conns--;
    /* Requests still being worked on outlive the connection and free themselves when done. */
    struct agent_req *req = c->head;
    while (req != NULL) {
        struct agent_req *next = req->next;
        if (req->done) {
            agent__req_free(req);
        } else {
            req->conn = NULL;
            req->next = NULL;
        }
        req = next;
    }
    c->head = c->tail = NULL;
    c->pending = 0;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    uv_close((uv_handle_t *)&c->idle, agent__idle_closed);
}

static void agent__idle_cb(uv_timer_t *t)
{
    struct agent_conn *c = t->data;
    if (c->pending == 0 && c->writing == 0) {
        agent__conn_close(c, "idle timeout");
    }
}

static void agent__on_connection(uv_stream_t *server, int status)
{
    struct agent *a = server->data;
    if (status < 0) {
        rn_log(RN_LOG_WARN, "accept_failed", "error=\"%s\"", uv_strerror(status));
        return;
    }
    struct agent_conn *c = kp_xcalloc(1, sizeof(*c));
    c->agent = a;
    uv_tcp_init(a->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, agent__tcp_closed);
        return;
    }
    uv_timer_init(a->loop, &c->idle);
    c->idle.data = c;
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    snprintf(c->peer, sizeof(c->peer), "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        char ip[48];
        int port = 0;
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
        snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
    }
    c->next = a->conns;
    if (a->conns != NULL) {
        a->conns->prev = c;
    }
    a->conns = c;
    a->n_conns++;
    agent_obs_conn_accepted();
    if (a->stopping || a->n_conns > a->cfg.max_connections) {
        rn_log(RN_LOG_WARN, "conn_refused", "peer=%s connections=%lld", c->peer,
               (long long)a->n_conns);
        agent__conn_close(c, "connection limit");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 60);
    if (a->cfg.idle_timeout_ms > 0) {
        uv_timer_start(&c->idle, agent__idle_cb, (uint64_t)a->cfg.idle_timeout_ms,
                       (uint64_t)a->cfg.idle_timeout_ms);
    }
    agent__conn_update_reading(c);
}

int agent_server_start(struct agent *a)
{
    char host[256];
    int port;
    if (rn_parse_hostport(a->cfg.listen, host, sizeof(host), &port) != 0) {
        rn_log(RN_LOG_ERROR, "bad_listen_address", "listen=%s", a->cfg.listen);
        return -EINVAL;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res);
    if (gai != 0) {
        rn_log(RN_LOG_ERROR, "bad_listen_address", "listen=%s error=\"%s\"", a->cfg.listen,
               gai_strerror(gai));
        return -EINVAL;
    }
    uv_tcp_init(a->loop, &a->listener);
    a->listener.data = a;
    int rc = uv_tcp_bind(&a->listener, res->ai_addr, 0);
    freeaddrinfo(res);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)&a->listener, 1024, agent__on_connection);
    }
    if (rc != 0) {
        rn_log(RN_LOG_ERROR, "listen_failed", "listen=%s error=\"%s\"", a->cfg.listen,
               uv_strerror(rc));
        return rc;
    }
    return 0;
}

void agent_server_stop(struct agent *a)
{
    a->stopping = true;
    if (!uv_is_closing((uv_handle_t *)&a->listener)) {
        uv_close((uv_handle_t *)&a->listener, NULL);
    }
    struct agent_conn *c = a->conns;
    while (c != NULL) {
        struct agent_conn *next = c->next;
        agent__conn_update_reading(c);
        c = next;
    }
}
