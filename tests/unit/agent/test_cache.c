/*
 * The chunk cache (agent/src/cache.c) over a mem:// store: misses read the footer and the chunk
 * once and concurrent identical requests share those reads; hits issue nothing; the capacity is
 * never exceeded; objects handed in with agent_cache_put() (plain and zstd chunks) are served
 * without any GET; corrupt chunks and missing objects fail cleanly and are retried later.
 */
#include "test_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "cache.h"
#include "runnel/protocol/records.h"
#include "runnel/storage/object.h"
#include "runnel/storage/store.h"

struct env {
    uv_loop_t loop;
    struct store *store;
};

struct got {
    int calls;                 /* callbacks seen */
    int err;                   /* last error */
    uint8_t *raw;              /* copy of the last data */
    size_t raw_len;            /* bytes */
    bool pin;                  /* take a reference to the buffer */
    struct agent_cbuf *pinned; /* the reference taken */
    const uint8_t *pinned_raw; /* the bytes it holds */
};

static void got_cb(void *arg, int err, const uint8_t *raw, size_t raw_len, struct agent_cbuf *buf)
{
    struct got *g = arg;
    if (g->pin) { /* keep the cached bytes themselves, as a response being written does */
        assert_non_null(buf);
        agent_cbuf_ref(buf);
        g->pinned = buf;
        g->pinned_raw = raw;
    }
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

static void run(struct env *e)
{
    uv_run(&e->loop, UV_RUN_DEFAULT);
}

/*
 * Builds an object with `nparts` partitions, each holding one batch of `nrec` records with
 * `vlen`-byte values (repetitive: the chunks compress with zstd unless `random_values`).
 * Returns the object; *footer gets its footer; raw[i] the batch of partition i.
 */
static uint8_t *make_object(int nparts, int nrec, size_t vlen, bool random_values, size_t *len,
                            struct store_footer *footer, uint8_t **raw, size_t *raw_len)
{
    uint8_t id[16] = {1, 2, 3};
    uint8_t topic[16] = {9, 9, 9};
    struct store_obj_builder *b = store_obj_builder_new(id, 1000, 1);
    uint8_t *val = malloc(vlen);
    for (int p = 0; p < nparts; p++) {
        struct kp_record_in recs[8];
        assert_true(nrec <= 8);
        for (size_t k = 0; k < vlen; k++) {
            val[k] = random_values ? (uint8_t)rand() : (uint8_t)('a' + p);
        }
        for (int i = 0; i < nrec; i++) {
            memset(&recs[i], 0, sizeof(recs[i]));
            recs[i].key = (struct kp_bytes){NULL, -1};
            recs[i].value = (struct kp_bytes){val, (int32_t)vlen};
            recs[i].timestamp = 5000 + i;
        }
        struct kp_batch_spec spec;
        kp_batch_spec_init(&spec);
        uint8_t *batch = NULL;
        size_t blen = 0;
        assert_int_equal(kp_batch_build(&spec, recs, (size_t)nrec, &batch, &blen), 0);
        struct store_batch_info info;
        assert_int_equal(store_batch_info_parse(batch, blen, &info), 0);
        assert_int_equal(store_obj_builder_add(b, topic, p, batch, blen, &info), 0);
        raw[p] = batch;
        raw_len[p] = blen;
    }
    free(val);
    uint8_t *obj = NULL;
    assert_int_equal(store_obj_seal(b, &obj, len, footer), 0);
    store_obj_builder_free(b);
    return obj;
}

static void env_open(struct env *e)
{
    assert_int_equal(uv_loop_init(&e->loop), 0);
    char err[128];
    assert_int_equal(store_open(&e->loop, "mem://", NULL, &e->store, err, sizeof(err)), 0);
}

static void env_close(struct env *e)
{
    store_close(e->store);
    run(e);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

static void store_object(struct env *e, const char *key, const uint8_t *obj, size_t len)
{
    struct store_req req;
    memset(&req, 0, sizeof(req));
    put_done = 0;
    assert_int_equal(store_put(e->store, &req, key, obj, len, 0, put_cb), 0);
    run(e);
    assert_int_equal(put_done, 1);
    store_req_cleanup(&req);
}

static void test_miss_merge_hit(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    uint8_t *raw[4];
    size_t raw_len[4];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(4, 3, 200, false, &len, &ft, raw, raw_len);
    store_object(&e, "objects/a", obj, len);

    struct agent_cache *c = agent_cache_new(&e.loop, e.store, 1 << 20);
    struct got g[3];
    memset(g, 0, sizeof(g));
    /* Three concurrent requests for chunk 2 share one footer read and one chunk GET. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(agent_cache_get(c, "objects/a", ft.chunks[2].offset, got_cb, &g[i]), 0);
        assert_int_equal(g[i].calls, 0);
    }
    run(&e);
    struct agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.footer_gets, 1);
    assert_int_equal(st.chunk_gets, 1);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.merged, 2);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].err, 0);
        assert_int_equal(g[i].raw_len, raw_len[2]);
        assert_memory_equal(g[i].raw, raw[2], raw_len[2]);
    }
    /* A hit answers at once and reads nothing. */
    struct got h;
    memset(&h, 0, sizeof(h));
    assert_int_equal(agent_cache_get(c, "objects/a", ft.chunks[2].offset, got_cb, &h), 0);
    assert_int_equal(h.calls, 1);
    assert_memory_equal(h.raw, raw[2], raw_len[2]);
    /* Another chunk of the same object: the footer is cached, one GET. */
    assert_int_equal(agent_cache_get(c, "objects/a", ft.chunks[0].offset, got_cb, &h), 0);
    run(&e);
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.footer_gets, 1);
    assert_int_equal(st.chunk_gets, 2);
    assert_int_equal(h.calls, 2);
    assert_memory_equal(h.raw, raw[0], raw_len[0]);
    /* An offset that is no chunk of the object. */
    assert_int_equal(agent_cache_get(c, "objects/a", 3, got_cb, &h), 0);
    run(&e);
    assert_int_equal(h.calls, 3);
    assert_int_equal(h.err, -ENOENT);

    agent_cache_free(c);
    for (int i = 0; i < 3; i++) {
        free(g[i].raw);
    }
    free(h.raw);
    for (int i = 0; i < 4; i++) {
        free(raw[i]);
    }
    free(obj);
    store_footer_free(&ft);
    env_close(&e);
}

static void test_bound(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    uint8_t *raw[8];
    size_t raw_len[8];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(8, 4, 4000, true, &len, &ft, raw, raw_len);
    store_object(&e, "objects/b", obj, len);
    size_t cap = 3 * (raw_len[0] + 512); /* about three chunks */
    struct agent_cache *c = agent_cache_new(&e.loop, e.store, cap);
    struct got g;
    memset(&g, 0, sizeof(g));
    for (int round = 0; round < 2; round++) {
        for (int p = 0; p < 8; p++) {
            assert_int_equal(agent_cache_get(c, "objects/b", ft.chunks[p].offset, got_cb, &g), 0);
            run(&e);
            assert_int_equal(g.err, 0);
            assert_memory_equal(g.raw, raw[p], raw_len[p]);
            struct agent_cache_stats st;
            agent_cache_get_stats(c, &st);
            assert_true(st.bytes <= cap);
        }
    }
    struct agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    assert_true(st.evictions > 0);
    /* Everything was evicted before it was asked for again: every request was a GET. */
    assert_int_equal(st.chunk_gets, 16);

    /* A zero capacity keeps nothing but still merges concurrent requests. */
    struct agent_cache *z = agent_cache_new(&e.loop, e.store, 0);
    struct got g2[2];
    memset(g2, 0, sizeof(g2));
    assert_int_equal(agent_cache_get(z, "objects/b", ft.chunks[1].offset, got_cb, &g2[0]), 0);
    assert_int_equal(agent_cache_get(z, "objects/b", ft.chunks[1].offset, got_cb, &g2[1]), 0);
    run(&e);
    agent_cache_get_stats(z, &st);
    assert_int_equal(st.chunk_gets, 1);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(g2[0].err, 0);
    assert_int_equal(g2[1].err, 0);
    assert_memory_equal(g2[1].raw, raw[1], raw_len[1]);
    agent_cache_free(z);

    agent_cache_free(c);
    free(g.raw);
    free(g2[0].raw);
    free(g2[1].raw);
    for (int i = 0; i < 8; i++) {
        free(raw[i]);
    }
    free(obj);
    store_footer_free(&ft);
    env_close(&e);
}

/*
 * A reader holding a reference keeps a chunk's bytes alive through its eviction (ASan checks the
 * reads); the cache's accounting forgets them at eviction.
 */
static void test_pinned_survives_eviction(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    uint8_t *raw[8];
    size_t raw_len[8];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(8, 4, 4000, true, &len, &ft, raw, raw_len);
    store_object(&e, "objects/p", obj, len);
    struct agent_cache *c = agent_cache_new(&e.loop, e.store, raw_len[0] + 512); /* one chunk */
    struct got g;
    memset(&g, 0, sizeof(g));
    g.pin = true;
    assert_int_equal(agent_cache_get(c, "objects/p", ft.chunks[0].offset, got_cb, &g), 0);
    run(&e);
    assert_int_equal(g.err, 0);
    struct agent_cbuf *b = g.pinned;
    const uint8_t *bytes = g.pinned_raw;
    g.pin = false;
    for (int p = 1; p < 8; p++) { /* pushes chunk 0 out */
        assert_int_equal(agent_cache_get(c, "objects/p", ft.chunks[p].offset, got_cb, &g), 0);
        run(&e);
        assert_int_equal(g.err, 0);
    }
    struct agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    assert_true(st.evictions >= 7);
    assert_true(st.bytes <= raw_len[0] + 512);
    assert_memory_equal(bytes, raw[0], raw_len[0]);
    agent_cbuf_unref(b);
    /* Asked again, chunk 0 is read from the store anew. */
    assert_int_equal(agent_cache_get(c, "objects/p", ft.chunks[0].offset, got_cb, &g), 0);
    run(&e);
    assert_memory_equal(g.raw, raw[0], raw_len[0]);
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.chunk_gets, 9);
    agent_cache_free(c);
    free(g.raw);
    for (int i = 0; i < 8; i++) {
        free(raw[i]);
    }
    free(obj);
    store_footer_free(&ft);
    env_close(&e);
}

static void test_put_object_served_from_memory(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    uint8_t *raw[3];
    size_t raw_len[3];
    struct store_footer ft;
    size_t len = 0;
    /* Repetitive values (zstd chunks), 100 KiB per chunk: decoded on the thread pool. */
    uint8_t *obj = make_object(3, 4, 25000, false, &len, &ft, raw, raw_len);
    assert_int_equal(ft.chunks[0].codec, STORE_CODEC_ZSTD);
    struct agent_cache *c = agent_cache_new(&e.loop, e.store, 16 << 20);
    /* Not in the store at all: only the cache has it. */
    agent_cache_put(c, "objects/fresh", obj, len);
    free(obj);
    struct got g;
    memset(&g, 0, sizeof(g));
    for (int p = 0; p < 3; p++) {
        assert_int_equal(agent_cache_get(c, "objects/fresh", ft.chunks[p].offset, got_cb, &g), 0);
        run(&e);
        assert_int_equal(g.err, 0);
        assert_int_equal(g.raw_len, raw_len[p]);
        assert_memory_equal(g.raw, raw[p], raw_len[p]);
    }
    struct agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.chunk_gets, 0);
    assert_int_equal(st.footer_gets, 0);
    assert_int_equal(st.put_objects, 1);
    /* Garbage handed in is ignored. */
    uint8_t junk[64];
    memset(junk, 7, sizeof(junk));
    agent_cache_put(c, "objects/junk", junk, sizeof(junk));
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.put_objects, 1);
    agent_cache_free(c);
    free(g.raw);
    for (int i = 0; i < 3; i++) {
        free(raw[i]);
    }
    store_footer_free(&ft);
    env_close(&e);
}

static void test_corrupt_and_missing(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    uint8_t *raw[2];
    size_t raw_len[2];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(2, 2, 300, true, &len, &ft, raw, raw_len);
    obj[ft.chunks[1].offset + 40] ^= 0x55; /* flip bits inside chunk 1 */
    store_object(&e, "objects/bad", obj, len);
    struct agent_cache *c = agent_cache_new(&e.loop, e.store, 1 << 20);
    struct got g;
    memset(&g, 0, sizeof(g));
    assert_int_equal(agent_cache_get(c, "objects/bad", ft.chunks[1].offset, got_cb, &g), 0);
    run(&e);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.err, -EBADMSG);
    /* The failure is not cached: asking again reads again. */
    assert_int_equal(agent_cache_get(c, "objects/bad", ft.chunks[1].offset, got_cb, &g), 0);
    run(&e);
    assert_int_equal(g.err, -EBADMSG);
    struct agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.chunk_gets, 2);
    assert_int_equal(st.errors, 2);
    /* The intact chunk of the same object is fine. */
    assert_int_equal(agent_cache_get(c, "objects/bad", ft.chunks[0].offset, got_cb, &g), 0);
    run(&e);
    assert_int_equal(g.err, 0);
    assert_memory_equal(g.raw, raw[0], raw_len[0]);
    /* A missing object. */
    assert_int_equal(agent_cache_get(c, "objects/none", 0, got_cb, &g), 0);
    run(&e);
    assert_int_equal(g.err, -ENOENT);
    agent_cache_free(c);
    free(g.raw);
    for (int i = 0; i < 2; i++) {
        free(raw[i]);
    }
    free(obj);
    store_footer_free(&ft);
    env_close(&e);
}

static void test_free_with_reads_in_flight(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    uint8_t *raw[1];
    size_t raw_len[1];
    struct store_footer ft;
    size_t len = 0;
    uint8_t *obj = make_object(1, 1, 100, true, &len, &ft, raw, raw_len);
    store_object(&e, "objects/c", obj, len);
    struct agent_cache *c = agent_cache_new(&e.loop, e.store, 1 << 20);
    struct got g;
    memset(&g, 0, sizeof(g));
    assert_int_equal(agent_cache_get(c, "objects/c", ft.chunks[0].offset, got_cb, &g), 0);
    agent_cache_free(c); /* the waiter is still answered exactly once */
    run(&e);
    assert_int_equal(g.calls, 1);
    free(g.raw);
    free(raw[0]);
    free(obj);
    store_footer_free(&ft);
    env_close(&e);
}

int run_test_cache(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_miss_merge_hit),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_pinned_survives_eviction),
        cmocka_unit_test(test_put_object_served_from_memory),
        cmocka_unit_test(test_corrupt_and_missing),
        cmocka_unit_test(test_free_with_reads_in_flight),
    };
    return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
