/*
 * Object blocks shared between agents (agent/src/peer.c with cache.c and the Kafka listener):
 * three agents on one loop over one mem:// store, each with its listener on loopback, its cache
 * (4 KiB blocks) and the others as peers. Every block is read from the store once across the
 * three however they ask; a peer that is down or silent costs a store read, not an error (a
 * silent one after the 3 s deadline); a corrupt object
 * is detected through a peer as through the store; AgentReadBlock requests that are malformed or
 * name something the agent does not serve get an error and the connection keeps serving.
 */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "agent.h"
#include "cache.h"
#include "kp_rpc.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/records.h"
#include "runnel/storage/object.h"
#include "runnel/storage/store.h"

#define BLOCK 4096

struct net {
    uv_loop_t loop;
    struct store *store;
    struct agent a[3];
    int port[3];
};

struct got {
    int calls;    /* callbacks seen */
    int err;      /* last error */
    uint8_t *raw; /* copy of the last data */
    size_t raw_len;
};

static void got_cb(void *arg, int err, const uint8_t *raw, size_t raw_len, struct agent_cbuf *buf)
{
    (void)buf;
    struct got *g = arg;
    g->calls++;
    g->err = err;
    free(g->raw);
    g->raw = NULL;
    g->raw_len = 0;
    if (err == 0) {
        g->raw = malloc(raw_len ? raw_len : 1);
        memcpy(g->raw, raw, raw_len);
        g->raw_len = raw_len;
    }
}

static int put_done;
static void put_cb(struct store_req *r)
{
    assert_int_equal(r->err, 0);
    put_done++;
}

/* Turns the loop until *counter >= target (bounded); asserts it got there. */
static void pump(struct net *n, int *counter, int target)
{
    for (int i = 0; i < 20000 && *counter < target; i++) {
        uv_run(&n->loop, UV_RUN_NOWAIT);
        usleep(100);
    }
    assert_true(*counter >= target);
}

/* An object of `nparts` partitions with one batch of 4 random 1500-byte records each. */
static uint8_t *make_object(int nparts, size_t *len, struct store_footer *footer, uint8_t **raw,
                            size_t *raw_len)
{
    uint8_t id[16] = {4, 5, 6};
    uint8_t topic[16] = {7, 7, 7};
    struct store_obj_builder *b = store_obj_builder_new(id, 1000, 1);
    static uint8_t val[4][1500];
    for (int p = 0; p < nparts; p++) {
        struct kp_record_in recs[4];
        for (int i = 0; i < 4; i++) { /* random and different: zstd leaves them as they are */
            for (size_t k = 0; k < sizeof(val[i]); k++) {
                val[i][k] = (uint8_t)rand();
            }
            memset(&recs[i], 0, sizeof(recs[i]));
            recs[i].key = (struct kp_bytes){NULL, -1};
            recs[i].value = (struct kp_bytes){val[i], (int32_t)sizeof(val[i])};
            recs[i].timestamp = 5000 + i;
        }
        struct kp_batch_spec spec;
        kp_batch_spec_init(&spec);
        uint8_t *batch = NULL;
        size_t blen = 0;
        assert_int_equal(kp_batch_build(&spec, recs, 4, &batch, &blen), 0);
        struct store_batch_info info;
        assert_int_equal(store_batch_info_parse(batch, blen, &info), 0);
        assert_int_equal(store_obj_builder_add(b, topic, p, batch, blen, &info), 0);
        raw[p] = batch;
        raw_len[p] = blen;
    }
    uint8_t *obj = NULL;
    assert_int_equal(store_obj_seal(b, &obj, len, footer), 0);
    store_obj_builder_free(b);
    return obj;
}

/* Frees what make_object returned: the object, its footer and the `nparts` raw batches. */
static void free_object(uint8_t *obj, struct store_footer *footer, uint8_t **raw, int nparts)
{
    for (int p = 0; p < nparts; p++) {
        free(raw[p]);
    }
    free(obj);
    store_footer_free(footer);
}

static void store_object(struct net *n, const char *key, const uint8_t *obj, size_t len)
{
    struct store_req req;
    memset(&req, 0, sizeof(req));
    put_done = 0;
    assert_int_equal(store_put(n->store, &req, key, obj, len, 0, put_cb), 0);
    pump(n, &put_done, 1);
    store_req_cleanup(&req);
}

static uint64_t count_blocks(uint64_t size)
{
    uint64_t nb = 0;
    uint64_t s = 0;
    uint64_t e = 0;
    while (agent_cache_block_range(BLOCK, size, (uint32_t)nb, &s, &e)) {
        nb++;
    }
    return nb;
}

/* Gives agent `a` (registered as `self`) the peer list ids[i] at 127.0.0.1:ports[i]. */
static void set_peers(struct agent *a, int32_t self, const int32_t *ids, const int *ports, size_t k)
{
    agent_cluster_free(a);
    a->cluster.registered = true;
    a->cluster.id = self;
    a->cluster.peers = calloc(k, sizeof(*a->cluster.peers));
    for (size_t i = 0; i < k; i++) {
        a->cluster.peers[i].id = ids[i];
        /* agent 2 knows its peers by name: the client looks the name up */
        a->cluster.peers[i].host = strdup(self == 2 ? "localhost" : "127.0.0.1");
        a->cluster.peers[i].port = ports[i];
        a->cluster.peers[i].zone = strdup("");
    }
    a->cluster.n_peers = k;
}

static void net_open(struct net *n, int agents)
{
    memset(n, 0, sizeof(*n));
    assert_int_equal(uv_loop_init(&n->loop), 0);
    char err[128];
    assert_int_equal(store_open(&n->loop, "mem://", NULL, &n->store, err, sizeof(err)), 0);
    for (int i = 0; i < agents; i++) {
        struct agent *a = &n->a[i];
        a->loop = &n->loop;
        a->store = n->store;
        a->cfg.listen = "127.0.0.1:0";
        a->cfg.advertise = "";
        a->cfg.cluster_id = "test";
        a->cfg.max_frame_bytes = 64 << 20;
        a->cfg.max_connections = 100;
        a->cfg.cache_bytes = 64 << 20;
        a->cfg.cache_block_bytes = BLOCK;
        a->cfg.log_level = "error";
        a->cfg.log_format = "logfmt";
        assert_int_equal(agent_fetch_init(a), 0);
        assert_int_equal(agent_peers_init(a), 0);
        assert_int_equal(agent_server_start(a), 0);
        struct sockaddr_in sin;
        int sl = sizeof(sin);
        assert_int_equal(uv_tcp_getsockname(&a->listener, (struct sockaddr *)&sin, &sl), 0);
        n->port[i] = ntohs(sin.sin_port);
    }
    int32_t ids[3] = {1, 2, 3};
    for (int i = 0; i < agents; i++) {
        set_peers(&n->a[i], ids[i], ids, n->port, (size_t)agents);
    }
}

static void net_close(struct net *n, int agents)
{
    for (int i = 0; i < agents; i++) {
        struct agent *a = &n->a[i];
        agent_server_stop(a);
        agent_peers_free(a);
        agent_fetch_free(a);
        agent_cluster_free(a);
    }
    store_close(n->store);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&n->loop), 0);
}

static struct agent_cache_stats stats(struct agent *a)
{
    struct agent_cache_stats st;
    agent_cache_get_stats(agent__fetch_cache(a), &st);
    return st;
}

/* Three agents read every chunk of one object, all at once: each block leaves the store once.
 * (Agent 2 knows the others as "localhost": names work as well as numeric addresses.) */
static void test_each_block_read_once(void **state)
{
    (void)state;
    struct net n;
    net_open(&n, 3);
    uint8_t *raw[8];
    size_t raw_len[8];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(8, &len, &ft, raw, raw_len);
    store_object(&n, "objects/0000000001000-aa", obj, len);
    uint64_t nb = count_blocks(len);
    assert_true(nb >= 8);
    struct got g[3][8];
    memset(g, 0, sizeof(g));
    int target = 0;
    for (int i = 0; i < 3; i++) {
        for (int p = 0; p < 8; p++) {
            assert_int_equal(agent_cache_get(agent__fetch_cache(&n.a[i]),
                                             "objects/0000000001000-aa", ft.chunks[p].offset,
                                             got_cb, &g[i][p]),
                             0);
            target++;
        }
    }
    int done = 0;
    for (int k = 0; k < 20000 && done < target; k++) {
        uv_run(&n.loop, UV_RUN_NOWAIT);
        usleep(100);
        done = 0;
        for (int i = 0; i < 3; i++) {
            for (int p = 0; p < 8; p++) {
                done += g[i][p].calls;
            }
        }
    }
    assert_int_equal(done, target);
    uint64_t gets = 0;
    uint64_t asked = 0;
    for (int i = 0; i < 3; i++) {
        for (int p = 0; p < 8; p++) {
            assert_int_equal(g[i][p].err, 0);
            assert_int_equal(g[i][p].raw_len, raw_len[p]);
            assert_memory_equal(g[i][p].raw, raw[p], raw_len[p]);
            free(g[i][p].raw);
        }
        struct agent_cache_stats st = stats(&n.a[i]);
        assert_int_equal(st.remote_failed, 0);
        assert_true(st.remote_reads > 0); /* each owns about a third of the blocks */
        gets += st.store_gets;
        asked += st.remote_reads;
    }
    assert_int_equal(gets, nb);
    assert_int_equal(asked, 2 * nb); /* the two agents that do not own a block ask its owner */
    free_object(obj, &ft, raw, 8);
    net_close(&n, 3);
}

/* An object agent 1 just flushed: it keeps the blocks it owns, so the others get those from its
 * memory and the store sees only the rest. */
static void test_flushed_blocks_served(void **state)
{
    (void)state;
    struct net n;
    net_open(&n, 3);
    uint8_t *raw[8];
    size_t raw_len[8];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(8, &len, &ft, raw, raw_len);
    const char *key = "objects/0000000001000-ff";
    store_object(&n, key, obj, len);
    agent_cache_put_object(&n.a[0], key, obj, len);
    uint64_t nb = count_blocks(len);
    uint64_t mine = 0;
    for (uint32_t j = 0; j < nb; j++) {
        mine += agent_block_owner(n.a[0].cluster.peers, 3, NULL, key, j)->id == 1;
    }
    assert_true(mine > 0 && mine < nb);
    struct got g;
    memset(&g, 0, sizeof(g));
    for (int i = 1; i < 3; i++) {
        for (int p = 0; p < 8; p++) {
            int want = g.calls + 1;
            assert_int_equal(
                agent_cache_get(agent__fetch_cache(&n.a[i]), key, ft.chunks[p].offset, got_cb, &g),
                0);
            pump(&n, &g.calls, want);
            assert_int_equal(g.err, 0);
            assert_memory_equal(g.raw, raw[p], raw_len[p]);
        }
    }
    assert_int_equal(stats(&n.a[0]).store_gets, 0);
    assert_int_equal(stats(&n.a[1]).store_gets + stats(&n.a[2]).store_gets, nb - mine);
    free(g.raw);
    free_object(obj, &ft, raw, 8);
    net_close(&n, 3);
}

/* A peer that is down (nothing listens at its address): its blocks come from the store. */
static void test_dead_peer_falls_back(void **state)
{
    (void)state;
    struct net n;
    net_open(&n, 1);
    uv_tcp_t probe; /* a port that was free a moment ago and has no listener now */
    uv_tcp_init(&n.loop, &probe);
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    assert_int_equal(uv_tcp_bind(&probe, (struct sockaddr *)&sin, 0), 0);
    int sl = sizeof(sin);
    assert_int_equal(uv_tcp_getsockname(&probe, (struct sockaddr *)&sin, &sl), 0);
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(&n.loop, UV_RUN_NOWAIT);
    int32_t ids[2] = {1, 9};
    int ports[2] = {n.port[0], ntohs(sin.sin_port)};
    set_peers(&n.a[0], 1, ids, ports, 2);

    uint8_t *raw[8];
    size_t raw_len[8];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(8, &len, &ft, raw, raw_len);
    store_object(&n, "objects/0000000001000-bb", obj, len);
    struct got g;
    memset(&g, 0, sizeof(g));
    for (int p = 0; p < 8; p++) {
        int want = g.calls + 1;
        assert_int_equal(agent_cache_get(agent__fetch_cache(&n.a[0]), "objects/0000000001000-bb",
                                         ft.chunks[p].offset, got_cb, &g),
                         0);
        pump(&n, &g.calls, want);
        assert_int_equal(g.err, 0);
        assert_memory_equal(g.raw, raw[p], raw_len[p]);
    }
    struct agent_cache_stats st = stats(&n.a[0]);
    assert_true(st.remote_failed > 0);
    assert_true(st.remote_failed <= st.remote_reads);
    assert_int_equal(st.store_gets, count_blocks(len)); /* each block once, by itself */
    free(g.raw);
    free_object(obj, &ft, raw, 8);
    net_close(&n, 1);
}

static uv_tcp_t silent_conn[4];
static int silent_n;

/* Accepts a connection and never reads from it or answers. */
static void silent_accept(uv_stream_t *server, int status)
{
    assert_int_equal(status, 0);
    assert_true(silent_n < 4);
    uv_tcp_init(server->loop, &silent_conn[silent_n]);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&silent_conn[silent_n]), 0);
    silent_n++;
}

/* A peer that accepts but never answers: after the deadline (3 s) the blocks come from the
 * store, and the read succeeds. */
static void test_silent_peer_times_out(void **state)
{
    (void)state;
    struct net n;
    net_open(&n, 1);
    uv_tcp_t srv;
    uv_tcp_init(&n.loop, &srv);
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    assert_int_equal(uv_tcp_bind(&srv, (struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&srv, 8, silent_accept), 0);
    int sl = sizeof(sin);
    assert_int_equal(uv_tcp_getsockname(&srv, (struct sockaddr *)&sin, &sl), 0);
    int32_t ids[2] = {1, 7};
    int ports[2] = {n.port[0], ntohs(sin.sin_port)};
    set_peers(&n.a[0], 1, ids, ports, 2);
    silent_n = 0;

    uint8_t *raw[8];
    size_t raw_len[8];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(8, &len, &ft, raw, raw_len);
    const char *key = "objects/0000000001000-ab";
    store_object(&n, key, obj, len);
    struct got g[8];
    memset(g, 0, sizeof(g));
    for (int p = 0; p < 8; p++) {
        assert_int_equal(
            agent_cache_get(agent__fetch_cache(&n.a[0]), key, ft.chunks[p].offset, got_cb, &g[p]),
            0);
    }
    int done = 0;
    for (int k = 0; k < 15000 && done < 8; k++) { /* at most ~15 s */
        uv_run(&n.loop, UV_RUN_NOWAIT);
        usleep(1000);
        done = 0;
        for (int p = 0; p < 8; p++) {
            done += g[p].calls;
        }
    }
    assert_int_equal(done, 8);
    for (int p = 0; p < 8; p++) {
        assert_int_equal(g[p].err, 0);
        assert_memory_equal(g[p].raw, raw[p], raw_len[p]);
        free(g[p].raw);
    }
    struct agent_cache_stats st = stats(&n.a[0]);
    assert_true(silent_n >= 1);
    assert_true(st.remote_failed >= 1);
    assert_int_equal(st.store_gets, count_blocks(len));
    for (int i = 0; i < silent_n; i++) {
        uv_close((uv_handle_t *)&silent_conn[i], NULL);
    }
    uv_close((uv_handle_t *)&srv, NULL);
    free_object(obj, &ft, raw, 8);
    net_close(&n, 1);
}

/* A corrupt chunk read through its blocks' owners is detected; the other chunks are fine. */
static void test_corrupt_through_peer(void **state)
{
    (void)state;
    struct net n;
    net_open(&n, 2);
    uint8_t *raw[8];
    size_t raw_len[8];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(8, &len, &ft, raw, raw_len);
    for (int p = 0; p < 8; p++) { /* flip a bit inside every chunk's first block-sized part */
        obj[ft.chunks[p].offset + 100] ^= 0x40;
    }
    store_object(&n, "objects/0000000001000-cc", obj, len);
    struct got g;
    memset(&g, 0, sizeof(g));
    for (int i = 0; i < 2; i++) {
        for (int p = 0; p < 8; p++) {
            int want = g.calls + 1;
            assert_int_equal(agent_cache_get(agent__fetch_cache(&n.a[i]),
                                             "objects/0000000001000-cc", ft.chunks[p].offset,
                                             got_cb, &g),
                             0);
            pump(&n, &g.calls, want);
            assert_int_equal(g.err, -EBADMSG);
        }
    }
    struct agent_cache_stats st = stats(&n.a[1]);
    assert_true(st.remote_reads > 0);
    assert_int_equal(st.errors, 8);
    free(g.raw);
    free_object(obj, &ft, raw, 8);
    net_close(&n, 2);
}

/* ---- AgentReadBlock on the wire ---- */

static int raw_connect(struct net *n, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(0x7f000001);
    sin.sin_port = htons((uint16_t)port);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
    assert_true(rc == 0 || errno == EINPROGRESS);
    for (int i = 0; i < 50; i++) {
        uv_run(&n->loop, UV_RUN_NOWAIT);
    }
    return fd;
}

/* Sends AgentReadBlock v0 (request header v1) with correlation id `cid`. */
static void send_read(struct net *n, int fd, int32_t cid, const char *key, int32_t index,
                      int32_t block_bytes, int64_t size)
{
    struct kp_agent_read_block_request q;
    kp_agent_read_block_request_init(&q);
    q.object_key = kp_str_from(key);
    q.block_index = index;
    q.block_bytes = block_bytes;
    q.object_size = size;
    size_t body = 0;
    assert_int_equal(kp_agent_read_block_request_size(&q, 0, &body), 0);
    size_t head = 2 + 2 + 4 + 2 + 4;
    size_t total = 4 + head + body;
    uint8_t *buf = malloc(total);
    struct kp_writer w;
    kp_writer_init(&w, buf, total);
    kp_write_i32(&w, (int32_t)(head + body));
    kp_write_i16(&w, 1100);
    kp_write_i16(&w, 0);
    kp_write_i32(&w, cid);
    kp_write_i16(&w, 4);
    kp_write_raw(&w, "test", 4);
    assert_int_equal(kp_agent_read_block_request_encode(&q, 0, &w), 0);
    assert_int_equal(kp_writer_len(&w), total);
    size_t off = 0;
    for (int i = 0; i < 100000 && off < total; i++) {
        ssize_t k = send(fd, buf + off, total - off, MSG_NOSIGNAL);
        if (k > 0) {
            off += (size_t)k;
        }
        uv_run(&n->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(off, total);
    free(buf);
}

/* Reads one response: returns its error code; *size and data (copied into out, *out_len) set. */
static int16_t recv_read(struct net *n, int fd, int32_t cid, int64_t *size, uint8_t **out,
                         size_t *out_len)
{
    uint8_t szb[4];
    size_t got = 0;
    for (int i = 0; i < 200000 && got < 4; i++) {
        ssize_t k = recv(fd, szb + got, 4 - got, MSG_DONTWAIT);
        if (k > 0) {
            got += (size_t)k;
        }
        uv_run(&n->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(got, 4);
    size_t fl = ((size_t)szb[0] << 24) | ((size_t)szb[1] << 16) | ((size_t)szb[2] << 8) | szb[3];
    uint8_t *f = malloc(fl);
    got = 0;
    for (int i = 0; i < 200000 && got < fl; i++) {
        ssize_t k = recv(fd, f + got, fl - got, MSG_DONTWAIT);
        if (k > 0) {
            got += (size_t)k;
        }
        uv_run(&n->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(got, fl);
    struct kp_reader r;
    kp_reader_init(&r, f, fl);
    assert_int_equal(kp_read_i32(&r), cid);
    struct kp_arena arena;
    kp_arena_init(&arena, 0);
    struct kp_agent_read_block_response rs;
    assert_int_equal(kp_agent_read_block_response_decode(&r, 0, &arena, &rs), 0);
    assert_int_equal(r.err, 0);
    *size = rs.object_size;
    *out = NULL;
    *out_len = 0;
    if (rs.data.len > 0) {
        *out = malloc((size_t)rs.data.len);
        memcpy(*out, rs.data.ptr, (size_t)rs.data.len);
        *out_len = (size_t)rs.data.len;
    }
    int16_t code = rs.error_code;
    kp_arena_free(&arena);
    free(f);
    return code;
}

static void test_read_block_requests(void **state)
{
    (void)state;
    struct net n;
    net_open(&n, 1);
    uint8_t *raw[4];
    size_t raw_len[4];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(4, &len, &ft, raw, raw_len);
    const char *key = "objects/0000000001000-dd";
    store_object(&n, key, obj, len);
    int fd = raw_connect(&n, n.port[0]);
    int64_t size = 0;
    uint8_t *data = NULL;
    size_t dlen = 0;
    struct {
        const char *key;
        int32_t index;
        int32_t block;
        int64_t size;
        int16_t code;
    } bad[] = {
        {"../etc/passwd", 0, BLOCK, -1, KP_ERROR_INVALID_REQUEST},     /* not an object key */
        {"objects/a/../../x", 0, BLOCK, -1, KP_ERROR_INVALID_REQUEST}, /* path tricks */
        {"", 0, BLOCK, -1, KP_ERROR_INVALID_REQUEST},
        {key, 0, 8192, -1, KP_ERROR_INVALID_REQUEST},              /* another block size */
        {key, 1, BLOCK, -1, KP_ERROR_INVALID_REQUEST},             /* block 1 needs the size */
        {key, -1, BLOCK, (int64_t)len, KP_ERROR_INVALID_REQUEST},  /* negative index */
        {key, 999, BLOCK, (int64_t)len, KP_ERROR_INVALID_REQUEST}, /* beyond the object */
        {key, 0, BLOCK, 0, KP_ERROR_INVALID_REQUEST},              /* size 0 */
        {"objects/0000000001000-ee", 0, BLOCK, -1, KP_ERROR_RESOURCE_NOT_FOUND}, /* missing */
    };
    int32_t cid = 1;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++, cid++) {
        send_read(&n, fd, cid, bad[i].key, bad[i].index, bad[i].block, bad[i].size);
        assert_int_equal(recv_read(&n, fd, cid, &size, &data, &dlen), bad[i].code);
        assert_int_equal(dlen, 0);
    }
    /* The same connection still serves: block 0 without the size, then block 1 with it. */
    for (int32_t j = 0; j < 2; j++, cid++) {
        send_read(&n, fd, cid, key, j, BLOCK, j == 0 ? -1 : (int64_t)len);
        assert_int_equal(recv_read(&n, fd, cid, &size, &data, &dlen), 0);
        assert_int_equal(size, (int64_t)len);
        uint64_t s = 0;
        uint64_t e = 0;
        assert_true(agent_cache_block_range(BLOCK, len, (uint32_t)j, &s, &e));
        assert_int_equal(dlen, e - s);
        assert_memory_equal(data, obj + s, dlen);
        free(data);
    }
    /* Pipelined: answered in order. */
    send_read(&n, fd, 100, key, 2, BLOCK, (int64_t)len);
    send_read(&n, fd, 101, "nope", 0, BLOCK, -1);
    send_read(&n, fd, 102, key, 0, BLOCK, (int64_t)len);
    assert_int_equal(recv_read(&n, fd, 100, &size, &data, &dlen), 0);
    free(data);
    assert_int_equal(recv_read(&n, fd, 101, &size, &data, &dlen), KP_ERROR_INVALID_REQUEST);
    assert_int_equal(recv_read(&n, fd, 102, &size, &data, &dlen), 0);
    free(data);
    struct agent_cache_stats st = stats(&n.a[0]);
    assert_int_equal(st.store_gets, 4); /* blocks 0, 1, 2 and the missing object's */
    close(fd);
    free_object(obj, &ft, raw, 4);
    net_close(&n, 1);
}

/* Rendezvous ownership: every block has one owner, spread over the agents, and removing an
 * agent moves only that agent's blocks; with zones, owners are in the asker's zone. */
static void test_owner_spread(void **state)
{
    (void)state;
    struct agent_peer p[3] = {{1, "h", 1, ""}, {2, "h", 2, ""}, {3, "h", 3, ""}};
    int count[4] = {0};
    int moved = 0;
    for (uint32_t j = 0; j < 300; j++) {
        const struct agent_peer *o = agent_block_owner(p, 3, "", "objects/x", j);
        assert_non_null(o);
        count[o->id]++;
        const struct agent_peer *o2 = agent_block_owner(p, 2, NULL, "objects/x", j); /* 3 left */
        if (o->id != 3) {
            assert_int_equal(o2->id, o->id);
        } else {
            moved++;
        }
    }
    for (int i = 1; i <= 3; i++) {
        assert_true(count[i] > 50);
    }
    assert_int_equal(moved, count[3]);
    assert_null(agent_block_owner(p, 0, NULL, "objects/x", 0));
    /* Zones: owners are chosen within the asker's zone; a zone nobody is in means everyone. */
    struct agent_peer z[4] = {
        {1, "h", 1, "a"}, {2, "h", 2, "b"}, {3, "h", 3, "b"}, {4, "h", 4, "a"}};
    int seen[5] = {0};
    for (uint32_t j = 0; j < 200; j++) {
        const struct agent_peer *o = agent_block_owner(z, 4, "b", "objects/y", j);
        assert_true(o->id == 2 || o->id == 3);
        seen[o->id]++;
        o = agent_block_owner(z, 4, "a", "objects/y", j);
        assert_true(o->id == 1 || o->id == 4);
        seen[o->id]++;
        seen[agent_block_owner(z, 4, "c", "objects/y", j)->id]++;
    }
    for (int i = 1; i <= 4; i++) {
        assert_true(seen[i] > 100);
    }
}

int run_test_peer(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owner_spread),          cmocka_unit_test(test_each_block_read_once),
        cmocka_unit_test(test_flushed_blocks_served), cmocka_unit_test(test_dead_peer_falls_back),
        cmocka_unit_test(test_silent_peer_times_out), cmocka_unit_test(test_corrupt_through_peer),
        cmocka_unit_test(test_read_block_requests),
    };
    return cmocka_run_group_tests_name("peer", tests, NULL, NULL);
}
