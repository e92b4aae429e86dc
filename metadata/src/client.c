/*
 * The metadata client library (client.h): one TCP connection with pipelined requests matched to
 * responses in order by correlation id, pushes (correlation id -1) routed to the push callback,
 * and reconnection with backoff.
 */
#include "runnel/metadata/client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "runnel/protocol/mem.h"

#define META_CLIENT_ID "runnel-agent"
#define META_CLIENT_MAX_FRAME (256u << 20)
#define META_PUSH_CID (-1)

struct meta__call {
    struct meta__call *next; /* queue order = send order */
    int32_t cid;             /* correlation id */
    int16_t api_key;         /* to pick the response decoder */
    meta_client_cb cb;       /* completion */
    void *arg;               /* its argument */
    struct meta__buf frame;  /* encoded request frame */
    bool sent;               /* written on the current connection */
};

struct meta__cconn {
    uv_tcp_t tcp;          /* first: the handle's data points to this struct */
    uv_connect_t connect;  /* connect request */
    struct meta_client *c; /* owner; NULL once detached */
};

struct meta_client {
    uv_loop_t *loop;               /* not owned */
    char *host;                    /* server host */
    int port;                      /* server port */
    struct meta__cconn *conn;      /* current connection or NULL */
    uv_timer_t timer;              /* reconnect backoff */
    struct meta__call *head;       /* oldest outstanding */
    struct meta__call *tail;       /* newest */
    uint32_t n_calls;              /* outstanding */
    int32_t next_cid;              /* next correlation id (never negative) */
    struct meta__buf in;           /* received bytes not yet framed */
    struct kp_arena arena;         /* response decode memory */
    bool connected;                /* connection established */
    bool closing;                  /* meta_client_close called */
    uint32_t backoff_ms;           /* next reconnect delay */
    meta_client_push_cb push_cb;   /* pushes */
    void *push_arg;                /* its argument */
    meta_client_state_cb state_cb; /* connection changes */
    void *state_arg;               /* its argument */
};

static void meta__client_connect(struct meta_client *c);

void meta_client_set_push_cb(struct meta_client *c, meta_client_push_cb cb, void *arg)
{
    c->push_cb = cb;
    c->push_arg = arg;
}

void meta_client_set_state_cb(struct meta_client *c, meta_client_state_cb cb, void *arg)
{
    c->state_cb = cb;
    c->state_arg = arg;
}

uint32_t meta_client_in_flight(const struct meta_client *c)
{
    return c->n_calls;
}

bool meta_client_connected(const struct meta_client *c)
{
    return c->connected;
}

static void meta__call_free(struct meta__call *k)
{
    meta__buf_free(&k->frame);
    free(k);
}

static void meta__on_cconn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void meta__on_timer_closed(uv_handle_t *h)
{
    struct meta_client *c = h->data;
    meta__buf_free(&c->in);
    kp_arena_free(&c->arena);
    free(c->host);
    free(c);
}

struct meta__cwrite {
    uv_write_t req; /* first */
};

static void meta__on_cwrite(uv_write_t *req, int status)
{
    (void)status; /* failures show up as read errors */
    free(req);
}

static void meta__client_send(struct meta_client *c, struct meta__call *k)
{
    struct meta__cwrite *w = kp_xcalloc(1, sizeof(*w));
    uv_buf_t b = uv_buf_init((char *)k->frame.p, (unsigned)k->frame.len);
    k->sent = true;
    if (uv_write(&w->req, (uv_stream_t *)&c->conn->tcp, &b, 1, meta__on_cwrite) != 0) {
        free(w);
    }
}

/* Removes and fails every sent call (or all with all == true). */
static void meta__fail_calls(struct meta_client *c, int status, bool all)
{
    struct meta__call **pp = &c->head;
    struct meta__call *failed = NULL;
    struct meta__call **ft = &failed;
    c->tail = NULL;
    while (*pp != NULL) {
        struct meta__call *k = *pp;
        if (all || k->sent) {
            *pp = k->next;
            k->next = NULL;
            *ft = k;
            ft = &k->next;
            c->n_calls--;
        } else {
            c->tail = k;
            pp = &k->next;
        }
    }
    while (failed != NULL) {
        struct meta__call *k = failed;
        failed = k->next;
        k->cb(k->arg, status, NULL);
        meta__call_free(k);
    }
}

static void meta__drop(struct meta_client *c)
{
    if (c->conn == NULL) {
        return;
    }
    struct meta__cconn *cc = c->conn;
    c->conn = NULL;
    cc->c = NULL;
    uv_close((uv_handle_t *)&cc->tcp, meta__on_cconn_closed);
    bool was = c->connected;
    c->connected = false;
    c->in.len = 0;
    meta__fail_calls(c, c->closing ? -ECANCELED : -ECONNRESET, c->closing);
    if (was && c->state_cb != NULL && !c->closing) {
        c->state_cb(c->state_arg, false);
    }
}

static void meta__on_retry(uv_timer_t *t)
{
    struct meta_client *c = t->data;
    if (!c->closing) {
        meta__client_connect(c);
    }
}

static void meta__schedule_reconnect(struct meta_client *c)
{
    uv_timer_start(&c->timer, meta__on_retry, c->backoff_ms, 0);
    c->backoff_ms = c->backoff_ms * 2 > 2000 ? 2000 : c->backoff_ms * 2;
}

static void meta__on_calloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct meta__cconn *cc = h->data;
    (void)suggested;
    if (cc->c == NULL) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    struct meta_client *c = cc->c;
    meta__buf_reserve(&c->in, 64 * 1024);
    buf->base = (char *)c->in.p + c->in.len;
    buf->len = c->in.cap - c->in.len;
}

/* Handles one response frame; returns false if the connection must be dropped. */
static bool meta__client_frame(struct meta_client *c, const uint8_t *p, size_t len)
{
    struct kp_reader r;
    kp_reader_init(&r, p, len);
    int32_t cid = kp_read_i32(&r);
    uint32_t tags = kp_read_uvarint(&r);
    for (uint32_t i = 0; i < tags && !r.err; i++) {
        (void)kp_read_uvarint(&r);
        (void)kp_read_raw(&r, kp_read_uvarint(&r));
    }
    if (r.err) {
        return false;
    }
    kp_arena_reset(&c->arena);
    if (cid == META_PUSH_CID) {
        struct kp_meta_notify_response n;
        if (kp_meta_notify_response_decode(&r, 0, &c->arena, &n) != 0) {
            return false;
        }
        if (c->push_cb != NULL) {
            c->push_cb(c->push_arg, &n);
        }
        return true;
    }
    struct meta__call *k = c->head;
    if (k == NULL || !k->sent || k->cid != cid) {
        return false; /* responses arrive in request order */
    }
    c->head = k->next;
    if (c->head == NULL) {
        c->tail = NULL;
    }
    c->n_calls--;
    const struct kp_api *api = kp_rpc_api_find(k->api_key);
    void *msg = kp_arena_alloc(&c->arena, api->response->struct_size);
    int status = 0;
    if (msg == NULL || api->response->decode(&r, 0, &c->arena, msg) != 0) {
        status = -EPROTO;
    }
    k->cb(k->arg, status, status == 0 ? msg : NULL);
    meta__call_free(k);
    return status == 0;
}

static void meta__on_cread(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct meta__cconn *cc = s->data;
    (void)buf;
    struct meta_client *c = cc->c;
    if (c == NULL) {
        return;
    }
    if (nread < 0) {
        meta__drop(c);
        if (!c->closing) {
            meta__schedule_reconnect(c);
        }
        return;
    }
    c->in.len += (size_t)nread;
    size_t off = 0;
    while (c->conn == cc && c->in.len - off >= 4) {
        const uint8_t *p = c->in.p + off;
        uint32_t size = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (size < 4 || size > META_CLIENT_MAX_FRAME) {
            off = c->in.len;
            meta__drop(c);
            if (!c->closing) {
                meta__schedule_reconnect(c);
            }
            return;
        }
        if (c->in.len - off - 4 < size) {
            break;
        }
        bool ok = meta__client_frame(c, p + 4, size);
        off += 4 + size;
        if (!ok && c->conn == cc) {
            meta__drop(c);
            if (!c->closing) {
                meta__schedule_reconnect(c);
            }
            return;
        }
    }
    if (c->conn == cc && off > 0) {
        memmove(c->in.p, c->in.p + off, c->in.len - off);
        c->in.len -= off;
    }
}

static void meta__on_connect(uv_connect_t *req, int status)
{
    struct meta__cconn *cc = req->data;
    struct meta_client *c = cc->c;
    if (c == NULL) {
        return;
    }
    if (status < 0) {
        c->conn = NULL;
        cc->c = NULL;
        uv_close((uv_handle_t *)&cc->tcp, meta__on_cconn_closed);
        if (!c->closing) {
            meta__schedule_reconnect(c);
        }
        return;
    }
    c->connected = true;
    c->backoff_ms = 100;
    uv_tcp_nodelay(&cc->tcp, 1);
    uv_read_start((uv_stream_t *)&cc->tcp, meta__on_calloc, meta__on_cread);
    for (struct meta__call *k = c->head; k != NULL; k = k->next) {
        if (!k->sent) {
            meta__client_send(c, k);
        }
    }
    if (c->state_cb != NULL) {
        c->state_cb(c->state_arg, true);
    }
}

static void meta__client_connect(struct meta_client *c)
{
    struct sockaddr_storage addr;
    if (uv_ip4_addr(c->host, c->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(c->host, c->port, (struct sockaddr_in6 *)&addr) != 0) {
        meta__schedule_reconnect(c);
        return;
    }
    struct meta__cconn *cc = kp_xcalloc(1, sizeof(*cc));
    cc->c = c;
    uv_tcp_init(c->loop, &cc->tcp);
    cc->tcp.data = cc;
    cc->connect.data = cc;
    c->conn = cc;
    if (uv_tcp_connect(&cc->connect, &cc->tcp, (struct sockaddr *)&addr, meta__on_connect) != 0) {
        c->conn = NULL;
        cc->c = NULL;
        uv_close((uv_handle_t *)&cc->tcp, meta__on_cconn_closed);
        meta__schedule_reconnect(c);
    }
}

int meta_client_open(struct meta_client **out, uv_loop_t *loop, const char *host, int port)
{
    struct meta_client *c = kp_xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->host = kp_xstrdup(host);
    c->port = port;
    c->backoff_ms = 100;
    kp_arena_init(&c->arena, 0);
    kp_arena_keep(&c->arena, 4u << 20); /* answers of the same size take no malloc */
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    meta__client_connect(c);
    *out = c;
    return 0;
}

int meta_client_call(struct meta_client *c, int16_t api_key, const void *request, meta_client_cb cb,
                     void *arg)
{
    if (c->closing) {
        return -ECANCELED;
    }
    const struct kp_api *api = kp_rpc_api_find(api_key);
    size_t size = 0;
    if (api == NULL || cb == NULL || api->request->size(request, 0, &size) != 0) {
        return -EINVAL;
    }
    struct meta__call *k = kp_xcalloc(1, sizeof(*k));
    k->cid = c->next_cid;
    c->next_cid = c->next_cid == INT32_MAX ? 0 : c->next_cid + 1;
    k->api_key = api_key;
    k->cb = cb;
    k->arg = arg;
    size_t id_len = strlen(META_CLIENT_ID);
    size_t head = 2 + 2 + 4 + 2 + id_len + 1;
    meta__buf_reserve(&k->frame, 4 + head + size);
    meta__put_u32(&k->frame, (uint32_t)(head + size));
    meta__put_u16(&k->frame, (uint16_t)api_key);
    meta__put_u16(&k->frame, 0);
    meta__put_u32(&k->frame, (uint32_t)k->cid);
    meta__put_u16(&k->frame, (uint16_t)id_len);
    meta__put_raw(&k->frame, META_CLIENT_ID, id_len);
    meta__put_u8(&k->frame, 0); /* request header v2: no tagged fields */
    struct kp_writer w;
    kp_writer_init(&w, k->frame.p + k->frame.len, size);
    if (api->request->encode(request, 0, &w) != 0 || w.err != 0) {
        meta__call_free(k);
        return -EINVAL;
    }
    k->frame.len += size;
    if (c->tail != NULL) {
        c->tail->next = k;
    } else {
        c->head = k;
    }
    c->tail = k;
    c->n_calls++;
    if (c->connected) {
        meta__client_send(c, k);
    }
    return 0;
}

void meta_client_close(struct meta_client *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    if (c->conn != NULL) {
        meta__drop(c);
    }
    meta__fail_calls(c, -ECANCELED, true);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, meta__on_timer_closed);
}
