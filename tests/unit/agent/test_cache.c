/*
 * The chunk cache (agent/src/cache.c) over a mem:// store: misses read each object block once
 * (block 0 with the footer first) and concurrent identical requests share those reads; hits issue
 * nothing; the block layout (end-aligned, a short head absorbed) and footers larger than a block;
 * the capacity is never exceeded; objects handed in with agent_cache_put() (plain and zstd
 * chunks) are served without any GET; corrupt chunks and missing objects fail cleanly and are
 * retried later.
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

/* What a block read delivered (agent_cache_get_block). */
struct bgot_s {
    int calls;
    int err;
    uint64_t size;
    size_t len;
    uint8_t *copy;
};

static struct bgot_s bg;

static void bgot_cb(void *arg, int err, uint64_t obj_size, const uint8_t *data, size_t len,
                    struct agent_cbuf *buf)
{
    (void)buf;
    struct bgot_s *b = arg;
    b->calls++;
    b->err = err;
    b->size = obj_size;
    b->len = len;
    free(b->copy);
    b->copy = NULL;
    if (err == 0) {
        b->copy = malloc(len ? len : 1);
        memcpy(b->copy, data, len);
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
    /* Three concurrent requests for chunk 2 share one GET: the object is one block. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(agent_cache_get(c, "objects/a", ft.chunks[2].offset, got_cb, &g[i]), 0);
        assert_int_equal(g[i].calls, 0);
    }
    run(&e);
    struct agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.store_gets, 1);
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
    /* Another chunk of the same object: footer and block are cached, no GET. */
    assert_int_equal(agent_cache_get(c, "objects/a", ft.chunks[0].offset, got_cb, &h), 0);
    run(&e);
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.store_gets, 1);
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
    assert_int_equal(agent_cache_set_block_bytes(c, 4096), 0);
    uint64_t round_gets = 0;
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
        if (round == 0) {
            struct agent_cache_stats st;
            agent_cache_get_stats(c, &st);
            round_gets = st.store_gets;
            assert_true(round_gets >= (len + 4095) / 4096); /* every block at least once */
        }
    }
    struct agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    assert_true(st.evictions > 0);
    /* The first chunks were evicted before they were asked for again: read anew. */
    assert_true(st.store_gets > round_gets);

    /* A zero capacity keeps nothing but still merges concurrent requests. */
    struct agent_cache *z = agent_cache_new(&e.loop, e.store, 0);
    struct got g2[2];
    memset(g2, 0, sizeof(g2));
    assert_int_equal(agent_cache_get(z, "objects/b", ft.chunks[1].offset, got_cb, &g2[0]), 0);
    assert_int_equal(agent_cache_get(z, "objects/b", ft.chunks[1].offset, got_cb, &g2[1]), 0);
    run(&e);
    agent_cache_get_stats(z, &st);
    assert_int_equal(st.store_gets, 1);
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
    assert_int_equal(agent_cache_set_block_bytes(c, 4096), 0);
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
    uint64_t gets = st.store_gets;
    assert_int_equal(agent_cache_get(c, "objects/p", ft.chunks[0].offset, got_cb, &g), 0);
    run(&e);
    assert_memory_equal(g.raw, raw[0], raw_len[0]);
    agent_cache_get_stats(c, &st);
    assert_true(st.store_gets > gets);
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
    assert_int_equal(st.store_gets, 0);
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
    /* The failure is not cached, nor the block it came from: asking again reads again. */
    assert_int_equal(agent_cache_get(c, "objects/bad", ft.chunks[1].offset, got_cb, &g), 0);
    run(&e);
    assert_int_equal(g.err, -EBADMSG);
    struct agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.store_gets, 2);
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

static void test_block_layout(void **state)
{
    (void)state;
    uint64_t s = 0;
    uint64_t e = 0;
    /* Up to 1.25 blocks: one block, the whole object. */
    assert_true(agent_cache_block_range(1024, 1280, 0, &s, &e));
    assert_int_equal(s, 0);
    assert_int_equal(e, 1280);
    assert_false(agent_cache_block_range(1024, 1280, 1, &s, &e));
    /* Block 0 is the last block_bytes; the head is its own block when over a quarter block. */
    assert_true(agent_cache_block_range(1024, 1281, 0, &s, &e));
    assert_int_equal(s, 257);
    assert_int_equal(e, 1281);
    assert_true(agent_cache_block_range(1024, 1281, 1, &s, &e));
    assert_int_equal(s, 0);
    assert_int_equal(e, 257);
    /* ... and absorbed into the block after it otherwise. */
    assert_true(agent_cache_block_range(1024, 2248, 1, &s, &e));
    assert_int_equal(s, 0);
    assert_int_equal(e, 1224);
    assert_false(agent_cache_block_range(1024, 2248, 2, &s, &e));
    assert_true(agent_cache_block_range(1024, 4096, 3, &s, &e));
    assert_int_equal(s, 0);
    assert_int_equal(e, 1024);
    assert_false(agent_cache_block_range(1024, 4096, 4, &s, &e));
}

/* Blocks of 1 KiB: each block is read once however many chunks need it, a footer larger than
 * block 0 is gathered from several blocks, and agent_cache_get_block() serves the same bytes. */
static void test_small_blocks(void **state)
{
    (void)state;
    struct env e;
    env_open(&e);
    uint8_t *raw[40];
    size_t raw_len[40];
    struct store_footer ft;
    size_t len = 0;
    /* 40 partitions: a 2.6 KB footer, more than a block and a quarter. */
    uint8_t *obj = make_object(40, 2, 300, true, &len, &ft, raw, raw_len);
    assert_true(ft.nchunks * STORE_OBJ_ENTRY_SIZE > 1280);
    store_object(&e, "objects/s", obj, len);
    struct agent_cache *c = agent_cache_new(&e.loop, e.store, 64 << 20);
    assert_int_equal(agent_cache_set_block_bytes(c, 1024), 0);
    uint64_t nblocks = 0;
    uint64_t s = 0;
    uint64_t end = 0;
    while (agent_cache_block_range(1024, len, (uint32_t)nblocks, &s, &end)) {
        nblocks++;
    }
    struct got g[40];
    memset(g, 0, sizeof(g));
    for (int p = 0; p < 40; p++) { /* all at once: loads of shared blocks merge */
        assert_int_equal(agent_cache_get(c, "objects/s", ft.chunks[p].offset, got_cb, &g[p]), 0);
    }
    run(&e);
    for (int p = 0; p < 40; p++) {
        assert_int_equal(g[p].calls, 1);
        assert_int_equal(g[p].err, 0);
        assert_int_equal(g[p].raw_len, raw_len[p]);
        assert_memory_equal(g[p].raw, raw[p], raw_len[p]);
    }
    struct agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.store_gets, nblocks);
    /* A block as a peer would get it. */
    memset(&bg, 0, sizeof(bg));
    assert_true(agent_cache_block_range(1024, len, 2, &s, &end));
    assert_int_equal(agent_cache_get_block(c, "objects/s", 2, len, bgot_cb, &bg), 0);
    assert_int_equal(bg.calls, 1);
    assert_int_equal(bg.err, 0);
    assert_int_equal(bg.size, len);
    assert_int_equal(bg.len, end - s);
    assert_memory_equal(bg.copy, obj + s, bg.len);
    /* Beyond the object, or a later block without the size: refused. */
    assert_int_equal(agent_cache_get_block(c, "objects/s", (uint32_t)nblocks, len, bgot_cb, &bg),
                     -EINVAL);
    assert_int_equal(agent_cache_get_block(c, "objects/s", 1, 0, bgot_cb, &bg), -EINVAL);
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.store_gets, nblocks);
    agent_cache_free(c);
    free(bg.copy);
    for (int p = 0; p < 40; p++) {
        free(g[p].raw);
        free(raw[p]);
    }
    free(obj);
    store_footer_free(&ft);
    env_close(&e);
}

int run_test_cache(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_layout),
        cmocka_unit_test(test_small_blocks),
        cmocka_unit_test(test_miss_merge_hit),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_pinned_survives_eviction),
        cmocka_unit_test(test_put_object_served_from_memory),
        cmocka_unit_test(test_corrupt_and_missing),
        cmocka_unit_test(test_free_with_reads_in_flight),
    };
    return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
