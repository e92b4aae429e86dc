/*
 * Object blocks shared between agents (docs/cluster.md, "Object blocks"): every block of every
 * object has one owner among the live agents, chosen by rendezvous hashing of (object key, block
 * index) over the agent list that cluster.c keeps. The chunk cache asks this file for blocks it
 * does not own (agent_cache_set_remote); the owner answers AgentReadBlock (api key 1100, Runnel's
 * own namespace, not advertised in ApiVersions) on its Kafka listener from its block memory or
 * with one store read, never by asking a third agent. So each block is read from the store once
 * per cluster (once per zone when agents have zones: owners are picked within the asker's zone),
 * whichever agents its readers use.
 *
 * The client half keeps one connection per peer, opened on demand, with pipelined requests
 * matched to responses in order by correlation id. Every request has a deadline (3 s):
 * a peer that does not answer in time, refuses, or closes fails every request of that connection,
 * the cache reads those blocks from the store, and the peer is not asked again for a second
 * (during which this agent reads the peer's blocks itself).
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "cache.h"
#include "handlers.h"
#include "obs.h"
#include "runnel/common/log.h"
#include "runnel/protocol/errors.h"

#define AGENT__PEER_API 1100                /* AgentReadBlock */
#define AGENT__PEER_CLIENT_ID "runnel-peer" /* client id of the requests */
#define AGENT__PEER_DEADLINE_MS 3000        /* a request not answered by then fails */
#define AGENT__PEER_DOWN_MS 1000            /* a failed peer is not asked for this long */
#define AGENT__PEER_TICK_MS 250             /* deadline check period */
#define AGENT__PEER_KEY_MAX 255             /* longest object key served */

struct agent__pconn;

/* One request to a peer. */
struct agent__pcall {
    struct agent__pcall *next; /* send order = answer order */
    int32_t cid;               /* correlation id */
    uint64_t deadline;         /* loop time (ms) by which it must be answered */
    agent_block_cb cb;         /* the cache's callback */
    void *arg;                 /* its argument */
    uint8_t *frame;            /* encoded request frame (malloc) */
    size_t frame_len;          /* bytes */
    bool sent;                 /* handed to uv_write */
};

/* The socket of one connection attempt: freed once its handle is closed and no name lookup is
 * running any more. */
struct agent__psock {
    uv_tcp_t tcp;            /* first: handle data points here */
    uv_connect_t connect;    /* connect request */
    uv_getaddrinfo_t gai;    /* host name lookup (peers registered by name) */
    struct agent__pconn *pc; /* owner; NULL once detached */
    bool resolving;          /* gai in flight */
    bool closed;             /* tcp's close callback ran */
};

/* A peer: its address, its connection (or none), and its outstanding requests. */
struct agent__pconn {
    struct agent_peers *ps;    /* owner */
    struct agent__pconn *next; /* list of known peers */
    int32_t id;                /* agent id */
    char host[256];            /* address */
    int port;
    struct agent__psock *sock; /* current connection or NULL */
    bool connected;            /* sock is connected */
    uint64_t down_until;       /* loop time before which the peer is not asked */
    struct agent__pcall *head; /* oldest outstanding */
    struct agent__pcall *tail; /* newest */
    uint8_t *in;               /* received bytes not yet framed */
    size_t in_len;             /* bytes */
    size_t in_cap;             /* allocated */
};

struct agent_peers {
    struct agent *a;            /* owner */
    struct agent__pconn *conns; /* peers asked so far */
    uv_timer_t tick;            /* deadline checks */
    int32_t next_cid;           /* next correlation id */
    bool closing;               /* agent_peers_free() was called */
};

/* ---- ownership ---- */

static uint64_t agent__pmix(uint64_t x)
{
    x ^= x >> 30; /* splitmix64's finaliser */
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

const struct agent_peer *agent_block_owner(const struct agent_peer *peers, size_t n,
                                           const char *zone, const char *key, uint32_t index)
{
    bool in_zone = false;
    for (size_t i = 0; zone != NULL && zone[0] != '\0' && i < n && !in_zone; i++) {
        in_zone = strcmp(peers[i].zone, zone) == 0;
    }
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a over the key, then the index */
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h = (h ^ *p) * 0x100000001b3ULL;
    }
    h = agent__pmix(h ^ ((uint64_t)index * 0x9e3779b97f4a7c15ULL));
    const struct agent_peer *best = NULL;
    uint64_t best_score = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_zone && strcmp(peers[i].zone, zone) != 0) {
            continue; /* owners are chosen among the agents of the asker's zone */
        }
        uint64_t score = agent__pmix(h ^ ((uint64_t)(uint32_t)peers[i].id * 0xd6e8feb86659fd93ULL));
        if (best == NULL || score > best_score || (score == best_score && peers[i].id < best->id)) {
            best = &peers[i];
            best_score = score;
        }
    }
    return best;
}

/* ---- client ---- */

static void agent__pconn_fail(struct agent__pconn *pc, int err, const char *why);

static void agent__psock_closed(uv_handle_t *h)
{
    struct agent__psock *sk = h->data;
    sk->closed = true;
    if (!sk->resolving) {
        free(sk);
    }
}

static void agent__pcall_free(struct agent__pcall *k)
{
    free(k->frame);
    free(k);
}

/* Drops pc's connection and fails every outstanding request (the cache reads the store). */
static void agent__pconn_fail(struct agent__pconn *pc, int err, const char *why)
{
    struct agent_peers *ps = pc->ps;
    if (pc->sock != NULL) {
        pc->sock->pc = NULL;
        uv_close((uv_handle_t *)&pc->sock->tcp, agent__psock_closed);
        pc->sock = NULL;
    }
    pc->connected = false;
    pc->in_len = 0;
    free(pc->in); /* a block-sized buffer: not kept for a connection that is gone */
    pc->in = NULL;
    pc->in_cap = 0;
    if (!ps->closing) {
        pc->down_until = uv_now(ps->a->loop) + AGENT__PEER_DOWN_MS;
        if (pc->head != NULL) {
            rn_log(RN_LOG_WARN, "peer_failed", "id=%d address=%s:%d why=\"%s\"", (int)pc->id,
                   pc->host, pc->port, why);
        }
    }
    struct agent__pcall *k = pc->head;
    pc->head = pc->tail = NULL;
    while (k != NULL) {
        struct agent__pcall *next = k->next;
        k->cb(k->arg, err, 0, NULL, 0, NULL);
        agent__pcall_free(k);
        k = next;
    }
}

struct agent__pwrite {
    uv_write_t req; /* first */
};

static void agent__pwrite_cb(uv_write_t *w, int status)
{
    (void)status; /* a failed write shows up as a read error or a deadline */
    free(w);
}

static void agent__pcall_send(struct agent__pconn *pc, struct agent__pcall *k)
{
    struct agent__pwrite *w = kp_xcalloc(1, sizeof(*w));
    uv_buf_t b = uv_buf_init((char *)k->frame, (unsigned)k->frame_len);
    k->sent = true;
    if (uv_write(&w->req, (uv_stream_t *)&pc->sock->tcp, &b, 1, agent__pwrite_cb) != 0) {
        free(w);
    }
}

static void agent__palloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct agent__psock *s = h->data;
    struct agent__pconn *pc = s->pc;
    if (pc == NULL) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    size_t want = pc->in_len + 256 * 1024;
    if (pc->in_len >= 4) { /* room for the whole frame being read */
        const uint8_t *p = pc->in;
        size_t size = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
        if (4 + size > want) {
            want = 4 + size;
        }
    }
    if (pc->in_cap < want) {
        pc->in = kp_xrealloc(pc->in, want);
        pc->in_cap = want;
    }
    *buf = uv_buf_init((char *)pc->in + pc->in_len, (unsigned)(pc->in_cap - pc->in_len));
}

/* Handles one response frame (after the size); false when the connection must be dropped. */
static bool agent__pframe(struct agent__pconn *pc, const uint8_t *p, size_t len)
{
    struct kp_reader r;
    kp_reader_init(&r, p, len);
    int32_t cid = kp_read_i32(&r); /* response header v0 */
    struct agent__pcall *k = pc->head;
    if (r.err != 0 || k == NULL || !k->sent || k->cid != cid) {
        return false; /* responses arrive in request order */
    }
    pc->head = k->next;
    if (pc->head == NULL) {
        pc->tail = NULL;
    }
    struct kp_arena arena;
    kp_arena_init(&arena, 0);
    struct kp_agent_read_block_response rs;
    kp_agent_read_block_response_init(&rs);
    int err = 0;
    if (kp_agent_read_block_response_decode(&r, 0, &arena, &rs) != 0 || r.err != 0) {
        err = -EPROTO;
    } else if (rs.error_code != 0) {
        err = rs.error_code == KP_ERROR_RESOURCE_NOT_FOUND ? -ENOENT : -EIO;
    } else if (rs.object_size <= 0 || rs.data.len < 0) {
        err = -EPROTO;
    }
    if (err == 0) {
        k->cb(k->arg, 0, (uint64_t)rs.object_size, rs.data.ptr, (size_t)rs.data.len, NULL);
    } else {
        k->cb(k->arg, err, 0, NULL, 0, NULL);
    }
    kp_arena_free(&arena);
    agent__pcall_free(k);
    return err != -EPROTO;
}

static void agent__pread_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct agent__psock *sk = s->data;
    struct agent__pconn *pc = sk->pc;
    if (pc == NULL) {
        return;
    }
    if (nread < 0) {
        agent__pconn_fail(pc, -ECONNRESET,
                          nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        return;
    }
    pc->in_len += (size_t)nread;
    struct agent_cache *c = agent__fetch_cache(pc->ps->a);
    size_t max =
        (c != NULL ? agent_cache_block_bytes(c) : AGENT_CACHE_BLOCK_BYTES) * 2 + (1u << 20);
    size_t off = 0;
    while (pc->sock == sk && pc->in_len - off >= 4) {
        const uint8_t *p = pc->in + off;
        size_t size = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
        if (size < 4 || size > max) {
            agent__pconn_fail(pc, -EPROTO, "bad response frame size");
            return;
        }
        if (pc->in_len - off - 4 < size) {
            break;
        }
        bool ok = agent__pframe(pc, p + 4, size);
        off += 4 + size;
        if (!ok) {
            agent__pconn_fail(pc, -EPROTO, "unexpected or undecodable response");
            return;
        }
    }
    if (pc->sock == sk && off > 0) {
        memmove(pc->in, pc->in + off, pc->in_len - off);
        pc->in_len -= off;
        if (pc->in_len == 0 && pc->head == NULL && pc->in_cap > 256 * 1024) {
            free(pc->in); /* idle: give the block-sized buffer back */
            pc->in = NULL;
            pc->in_cap = 0;
        }
    }
}

static void agent__pconnect_cb(uv_connect_t *req, int status)
{
    struct agent__psock *sk = req->data;
    struct agent__pconn *pc = sk->pc;
    if (pc == NULL) {
        return;
    }
    if (status < 0) {
        agent__pconn_fail(pc, -ECONNREFUSED, uv_strerror(status));
        return;
    }
    pc->connected = true;
    uv_tcp_nodelay(&sk->tcp, 1);
    uv_read_start((uv_stream_t *)&sk->tcp, agent__palloc_cb, agent__pread_cb);
    for (struct agent__pcall *k = pc->head; k != NULL; k = k->next) {
        if (!k->sent) {
            agent__pcall_send(pc, k);
        }
    }
}

/* Connects sk (owned by pc) to `addr`; false when the connect could not start. */
static bool agent__psock_connect(struct agent__psock *sk, const struct sockaddr *addr)
{
    return uv_tcp_connect(&sk->connect, &sk->tcp, addr, agent__pconnect_cb) == 0;
}

static void agent__pgai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct agent__psock *sk = req->data;
    sk->resolving = false;
    struct agent__pconn *pc = sk->pc;
    if (pc == NULL) { /* failed or closed meanwhile */
        uv_freeaddrinfo(res);
        if (sk->closed) {
            free(sk);
        }
        return;
    }
    const struct addrinfo *ai = res;
    for (const struct addrinfo *x = res; x != NULL; x = x->ai_next) {
        if (x->ai_family == AF_INET) { /* agents listen on 0.0.0.0 by default: IPv4 first */
            ai = x;
            break;
        }
    }
    if (status != 0 || ai == NULL || !agent__psock_connect(sk, ai->ai_addr)) {
        uv_freeaddrinfo(res);
        agent__pconn_fail(pc, -EHOSTUNREACH, status != 0 ? uv_strerror(status) : "no address");
        return;
    }
    uv_freeaddrinfo(res);
}

/* Starts connecting pc (a numeric address at once, a host name after a lookup); 0 or a negative
 * errno (then nothing was started). */
static int agent__pconn_open(struct agent__pconn *pc)
{
    struct sockaddr_storage addr;
    bool numeric = uv_ip4_addr(pc->host, pc->port, (struct sockaddr_in *)&addr) == 0 ||
                   uv_ip6_addr(pc->host, pc->port, (struct sockaddr_in6 *)&addr) == 0;
    struct agent__psock *sk = kp_xcalloc(1, sizeof(*sk));
    sk->pc = pc;
    uv_tcp_init(pc->ps->a->loop, &sk->tcp);
    sk->tcp.data = sk;
    sk->connect.data = sk;
    sk->gai.data = sk;
    int rc = 0;
    if (numeric) {
        rc = agent__psock_connect(sk, (struct sockaddr *)&addr) ? 0 : -ECONNREFUSED;
    } else {
        char port[16];
        snprintf(port, sizeof(port), "%d", pc->port);
        struct addrinfo hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        rc = uv_getaddrinfo(pc->ps->a->loop, &sk->gai, agent__pgai_cb, pc->host, port, &hints);
        sk->resolving = rc == 0;
    }
    if (rc != 0) {
        uv_close((uv_handle_t *)&sk->tcp, agent__psock_closed);
        return rc;
    }
    pc->sock = sk;
    return 0;
}

static struct agent__pconn *agent__pconn_get(struct agent_peers *ps, const struct agent_peer *p)
{
    for (struct agent__pconn *pc = ps->conns; pc != NULL; pc = pc->next) {
        if (pc->id == p->id) {
            if (strcmp(pc->host, p->host) != 0 || pc->port != p->port) { /* moved */
                agent__pconn_fail(pc, -ECONNRESET, "peer address changed");
                snprintf(pc->host, sizeof(pc->host), "%s", p->host);
                pc->port = p->port;
                pc->down_until = 0;
            }
            return pc;
        }
    }
    struct agent__pconn *pc = kp_xcalloc(1, sizeof(*pc));
    pc->ps = ps;
    pc->id = p->id;
    snprintf(pc->host, sizeof(pc->host), "%s", p->host);
    pc->port = p->port;
    pc->next = ps->conns;
    ps->conns = pc;
    return pc;
}

/* The owner of block `index` of `key`, or NULL while blocks are not shared (closing, not
 * registered, or no other agent). */
static const struct agent_peer *agent__peers_owner(const struct agent_peers *ps, const char *key,
                                                   uint32_t index)
{
    const struct agent_cluster *cl = &ps->a->cluster;
    if (ps->closing || !cl->registered || cl->n_peers < 2) {
        return NULL;
    }
    return agent_block_owner(cl->peers, cl->n_peers, ps->a->cfg.zone, key, index);
}

/* The cache's remote source (agent_cache_remote_fn). */
static bool agent__peers_remote(void *ctx, const char *key, uint32_t index, uint64_t obj_size,
                                agent_block_cb cb, void *arg)
{
    struct agent_peers *ps = ctx;
    struct agent *a = ps->a;
    const struct agent_peer *owner = agent__peers_owner(ps, key, index);
    if (owner == NULL || owner->id == a->cluster.id) {
        return false;
    }
    struct agent__pconn *pc = agent__pconn_get(ps, owner);
    uint64_t now = uv_now(a->loop);
    if (pc->down_until > now) {
        return false;
    }
    struct kp_agent_read_block_request q;
    kp_agent_read_block_request_init(&q);
    q.object_key = kp_str_from(key);
    q.block_index = (int32_t)index;
    q.block_bytes = (int32_t)agent_cache_block_bytes(agent__fetch_cache(a));
    q.object_size = obj_size > 0 ? (int64_t)obj_size : -1;
    struct kp_request_header h;
    kp_request_header_init(&h);
    h.request_api_key = AGENT__PEER_API;
    h.request_api_version = 0;
    h.correlation_id = ps->next_cid;
    h.client_id = kp_str_from(AGENT__PEER_CLIENT_ID);
    int16_t hv = kp_request_header_version(AGENT__PEER_API, 0);
    size_t head = 0;
    size_t body = 0;
    if (kp_request_header_size(&h, hv, &head) != 0 ||
        kp_agent_read_block_request_size(&q, 0, &body) != 0) {
        return false;
    }
    struct agent__pcall *k = kp_xcalloc(1, sizeof(*k));
    k->frame_len = 4 + head + body;
    k->frame = kp_xmalloc(k->frame_len);
    k->cid = ps->next_cid;
    ps->next_cid = ps->next_cid == INT32_MAX ? 0 : ps->next_cid + 1;
    struct kp_writer w;
    kp_writer_init(&w, k->frame, k->frame_len);
    kp_write_i32(&w, (int32_t)(head + body));
    if (kp_request_header_encode(&h, hv, &w) != 0 ||
        kp_agent_read_block_request_encode(&q, 0, &w) != 0 || w.err != 0 ||
        kp_writer_len(&w) != k->frame_len) {
        agent__pcall_free(k);
        return false;
    }
    if (pc->sock == NULL && agent__pconn_open(pc) != 0) {
        agent__pcall_free(k);
        pc->down_until = now + AGENT__PEER_DOWN_MS;
        return false;
    }
    k->cb = cb;
    k->arg = arg;
    k->deadline = now + AGENT__PEER_DEADLINE_MS;
    if (pc->tail != NULL) {
        pc->tail->next = k;
    } else {
        pc->head = k;
    }
    pc->tail = k;
    if (pc->connected) {
        agent__pcall_send(pc, k);
    }
    return true;
}

/* The cache's ownership test (agent_cache_owns_fn). */
static bool agent__peers_owns(void *ctx, const char *key, uint32_t index)
{
    struct agent_peers *ps = ctx;
    const struct agent_peer *owner = agent__peers_owner(ps, key, index);
    return owner != NULL && owner->id == ps->a->cluster.id;
}

static bool agent__peer_listed(const struct agent_cluster *cl, int32_t id)
{
    for (size_t i = 0; i < cl->n_peers; i++) {
        if (cl->peers[i].id == id) {
            return true;
        }
    }
    return false;
}

/* Fails requests past their deadline; forgets idle peers that left the agent list. */
static void agent__peers_tick(uv_timer_t *t)
{
    struct agent_peers *ps = t->data;
    uint64_t now = uv_now(ps->a->loop);
    struct agent__pconn **pp = &ps->conns;
    while (*pp != NULL) {
        struct agent__pconn *pc = *pp;
        if (pc->head != NULL && pc->head->deadline <= now) {
            agent__pconn_fail(pc, -ETIMEDOUT, "no answer within the deadline");
        }
        if (pc->head == NULL && !agent__peer_listed(&ps->a->cluster, pc->id)) {
            *pp = pc->next;
            agent__pconn_fail(pc, -ECANCELED, "left");
            free(pc);
            continue;
        }
        pp = &pc->next;
    }
}

int agent_peers_init(struct agent *a)
{
    struct agent_cache *c = agent__fetch_cache(a);
    if (c == NULL) {
        return -EINVAL;
    }
    struct agent_peers *ps = kp_xcalloc(1, sizeof(*ps));
    ps->a = a;
    uv_timer_init(a->loop, &ps->tick);
    ps->tick.data = ps;
    uv_timer_start(&ps->tick, agent__peers_tick, AGENT__PEER_TICK_MS, AGENT__PEER_TICK_MS);
    uv_unref((uv_handle_t *)&ps->tick);
    agent_cache_set_remote(c, agent__peers_remote, agent__peers_owns, ps);
    a->peers = ps;
    return 0;
}

static void agent__peers_tick_closed(uv_handle_t *h)
{
    struct agent_peers *ps = h->data;
    while (ps->conns != NULL) {
        struct agent__pconn *pc = ps->conns;
        ps->conns = pc->next;
        free(pc->in);
        free(pc);
    }
    free(ps);
}

void agent_peers_free(struct agent *a)
{
    struct agent_peers *ps = a->peers;
    if (ps == NULL) {
        return;
    }
    a->peers = NULL;
    ps->closing = true;
    struct agent_cache *c = agent__fetch_cache(a);
    if (c != NULL) {
        agent_cache_set_remote(c, NULL, NULL, NULL);
    }
    for (struct agent__pconn *pc = ps->conns; pc != NULL; pc = pc->next) {
        agent__pconn_fail(pc, -ECANCELED, "closing");
    }
    uv_timer_stop(&ps->tick);
    uv_close((uv_handle_t *)&ps->tick, agent__peers_tick_closed);
}

/* ---- server: AgentReadBlock ---- */

/* A response being sent: the block's bytes go out from the cache's buffer (a reference). */
struct agent__pserve {
    struct kp_gather g;     /* claims the block's bytes */
    struct agent_req *req;  /* during the encoding only */
    const uint8_t *data;    /* the block */
    size_t len;             /* bytes */
    struct agent_cbuf *buf; /* the reference held */
};

static bool agent__pserve_claim(struct kp_gather *g, size_t at, const uint8_t *ptr, size_t n)
{
    struct agent__pserve *sv = (struct agent__pserve *)g;
    if (ptr != sv->data || n != sv->len) {
        return false;
    }
    agent_req_add_run(sv->req, at, ptr, n);
    return true;
}

static void agent__pserve_release(void *arg)
{
    struct agent__pserve *sv = arg;
    agent_cbuf_unref(sv->buf);
    free(sv);
}

static void agent__pserve_error(struct agent_req *req, int16_t code, const char *why)
{
    rn_log(RN_LOG_DEBUG, "peer_read_refused", "peer=%s error=%d why=\"%s\"",
           req->conn != NULL ? req->conn->peer : "?", (int)code, why);
    agent_obs_peer_served(false);
    struct kp_agent_read_block_response rs;
    kp_agent_read_block_response_init(&rs);
    rs.error_code = code;
    agent_req_respond(req, &rs);
}

static void agent__pserve_cb(void *arg, int err, uint64_t obj_size, const uint8_t *data, size_t len,
                             struct agent_cbuf *buf)
{
    struct agent_req *req = arg;
    if (err != 0) {
        agent__pserve_error(
            req, err == -ENOENT ? KP_ERROR_RESOURCE_NOT_FOUND : KP_ERROR_KAFKA_STORAGE_ERROR,
            "store read failed");
        return;
    }
    agent_obs_peer_served(true);
    struct agent__pserve *sv = kp_xcalloc(1, sizeof(*sv));
    sv->g.claim = agent__pserve_claim;
    sv->g.min = 4096;
    sv->req = req;
    sv->data = data;
    sv->len = len;
    sv->buf = buf;
    agent_cbuf_ref(buf);
    struct kp_agent_read_block_response rs;
    kp_agent_read_block_response_init(&rs);
    rs.object_size = (int64_t)obj_size;
    rs.data.ptr = data;
    rs.data.len = (int32_t)len;
    agent_req_respond_gather(req, &rs, &sv->g, agent__pserve_release, sv);
}

/* Keys the agent writes: objects/<digits>-<hex> (produce.c); anything else is refused. */
static bool agent__pkey_ok(struct kp_str k)
{
    static const char prefix[] = "objects/";
    size_t n = k.len > 0 ? (size_t)k.len : 0;
    if (n <= sizeof(prefix) - 1 || n > AGENT__PEER_KEY_MAX ||
        memcmp(k.ptr, prefix, sizeof(prefix) - 1) != 0) {
        return false;
    }
    for (size_t i = sizeof(prefix) - 1; i < n; i++) {
        char ch = k.ptr[i];
        bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_';
        if (!ok) {
            return false;
        }
    }
    return true;
}

void agent_handle_read_block(struct agent_req *req)
{
    const struct kp_agent_read_block_request *q = req->body;
    struct agent_cache *c = agent__fetch_cache(req->conn->agent);
    if (c == NULL) {
        agent__pserve_error(req, KP_ERROR_KAFKA_STORAGE_ERROR, "no cache");
        return;
    }
    if (!agent__pkey_ok(q->object_key)) {
        agent__pserve_error(req, KP_ERROR_INVALID_REQUEST, "not an object key of this cluster");
        return;
    }
    if (q->block_bytes <= 0 || (size_t)q->block_bytes != agent_cache_block_bytes(c)) {
        agent__pserve_error(req, KP_ERROR_INVALID_REQUEST, "different cache.block.bytes");
        return;
    }
    uint64_t size = q->object_size > 0 ? (uint64_t)q->object_size : 0;
    uint64_t s = 0;
    uint64_t e = 0;
    if (q->block_index < 0 || q->object_size == 0 || q->object_size < -1 ||
        (size == 0 ? q->block_index != 0
                   : !agent_cache_block_range(agent_cache_block_bytes(c), size,
                                              (uint32_t)q->block_index, &s, &e))) {
        agent__pserve_error(req, KP_ERROR_INVALID_REQUEST, "no such block");
        return;
    }
    char key[AGENT__PEER_KEY_MAX + 1];
    memcpy(key, q->object_key.ptr, (size_t)q->object_key.len);
    key[q->object_key.len] = '\0';
    int rc = agent_cache_get_block(c, key, (uint32_t)q->block_index, size, agent__pserve_cb, req);
    if (rc != 0) {
        agent__pserve_error(req, KP_ERROR_KAFKA_STORAGE_ERROR, "cache closing");
    }
}
