/*
 * Object format v1: round trips through seal/parse/decode with interleaved partitions, stored-as-is
 * chunks for client-compressed batches, detection of corrupted chunks, corrupted footers and
 * truncated objects, the raw-size cap, random garbage, the thread-pool seal and the readers that
 * fetch through a store.
 */
#include "test_util.h"

#include <errno.h>
#include <stdio.h>

#include "runnel/storage/object.h"
#include "store_test_util.h"

/* A fake Kafka v2 batch header (enough for store_batch_info_parse) plus a payload. */
static size_t make_batch(uint8_t *buf, size_t payload, int32_t records, int64_t ts, int codec,
                         uint8_t fill)
{
    memset(buf, 0, 61);
    size_t len = 61 + payload;
    uint32_t blen = (uint32_t)(len - 12);
    buf[8] = (uint8_t)(blen >> 24);
    buf[9] = (uint8_t)(blen >> 16);
    buf[10] = (uint8_t)(blen >> 8);
    buf[11] = (uint8_t)blen;
    buf[16] = 2;
    buf[22] = (uint8_t)codec;
    for (int i = 0; i < 8; i++) {
        buf[27 + i] = (uint8_t)((uint64_t)ts >> (56 - 8 * i));
        buf[35 + i] = (uint8_t)((uint64_t)(ts + 5) >> (56 - 8 * i));
    }
    for (int i = 0; i < 4; i++) {
        buf[57 + i] = (uint8_t)((uint32_t)records >> (24 - 8 * i));
    }
    for (size_t i = 0; i < payload; i++) {
        buf[61 + i] = (uint8_t)(fill + (i % 17 == 0 ? i : 0));
    }
    return len;
}

struct expect {
    uint8_t data[3][64 * 1024]; /* expected chunk bytes per partition */
    size_t len[3];              /* bytes */
};

static struct store_obj_builder *build(struct expect *e, int codec)
{
    uint8_t id[16];
    for (int i = 0; i < 16; i++) {
        id[i] = (uint8_t)(0xa0 + i);
    }
    struct store_obj_builder *b = store_obj_builder_new(id, 1700000000123, 1);
    uint8_t topic[16] = {0x11, 0x22};
    uint8_t batch[2048];
    memset(e, 0, sizeof(*e));
    for (int i = 0; i < 30; i++) {
        int part = i % 3;
        size_t n = make_batch(batch, 500 + (size_t)i * 10, 3, 1000 + i, codec, (uint8_t)i);
        struct store_batch_info info;
        assert_int_equal(store_batch_info_parse(batch, n, &info), 0);
        assert_int_equal(info.records, 3);
        assert_int_equal(info.first_ts, 1000 + i);
        assert_int_equal(info.last_ts, 1005 + i);
        assert_int_equal(info.compressed, codec != 0);
        assert_int_equal(store_obj_builder_add(b, topic, part * 7, batch, n, &info), 0);
        memcpy(e->data[part] + e->len[part], batch, n);
        e->len[part] += n;
    }
    assert_int_equal(store_obj_builder_chunks(b), 3);
    return b;
}

static void test_round_trip(void **state)
{
    (void)state;
    static struct expect e;
    struct store_obj_builder *b = build(&e, 0);
    uint8_t *obj = NULL;
    size_t len = 0;
    struct store_footer sealed;
    assert_int_equal(store_obj_seal(b, &obj, &len, &sealed), 0);
    assert_memory_equal(obj + len - 4, "RNL1", 4);
    struct store_footer f;
    size_t need = 0;
    const char *why = NULL;
    assert_int_equal(store_footer_parse(obj, len, len, &f, &need, &why), 0);
    assert_int_equal(f.version, 1);
    assert_int_equal(f.created_at_ms, 1700000000123);
    assert_int_equal(f.object_id[0], 0xa0);
    assert_int_equal(f.nchunks, 3);
    assert_int_equal(f.object_size, len);
    for (uint32_t i = 0; i < 3; i++) {
        const struct store_chunk *c = &f.chunks[i];
        assert_int_equal(c->partition, (int)i * 7);
        assert_int_equal(c->topic_id[0], 0x11);
        assert_int_equal(c->codec, STORE_CODEC_ZSTD);
        assert_true(c->stored_len < c->raw_len);
        assert_int_equal(c->raw_len, e.len[i]);
        assert_int_equal(c->batch_count, 10);
        assert_int_equal(c->record_count, 30);
        assert_int_equal(c->first_ts, 1000 + i);
        assert_int_equal(c->last_ts, 1005 + 27 + i);
        assert_memory_equal(c, &sealed.chunks[i], sizeof(*c));
        uint8_t *raw = NULL;
        size_t rawlen = 0;
        assert_int_equal(
            store_chunk_decode(c, obj + c->offset, c->stored_len, 1 << 20, &raw, &rawlen, &why), 0);
        assert_int_equal(rawlen, e.len[i]);
        assert_memory_equal(raw, e.data[i], rawlen);
        free(raw);
        /* The raw-size cap. */
        assert_int_equal(
            store_chunk_decode(c, obj + c->offset, c->stored_len, rawlen - 1, &raw, &rawlen, &why),
            -EFBIG);
    }
    store_footer_free(&f);
    /* A short tail asks for more. */
    assert_int_equal(store_footer_parse(obj + len - 20, 20, len, &f, &need, &why) == -ENOBUFS, 1);
    assert_int_equal(need, 36 + 3 * 65 + 8);
    assert_int_equal(store_footer_parse(obj + len - need, need, len, &f, &need, &why), 0);
    store_footer_free(&f);
    store_footer_free(&sealed);
    free(obj);
    /* Sealing twice gives the same bytes (the builder is not consumed). */
    uint8_t *obj2 = NULL;
    size_t len2 = 0;
    assert_int_equal(store_obj_seal(b, &obj, &len, NULL), 0);
    assert_int_equal(store_obj_seal(b, &obj2, &len2, NULL), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(obj, obj2, len);
    free(obj);
    free(obj2);
    store_obj_builder_free(b);
}

static void test_precompressed_stored_as_is(void **state)
{
    (void)state;
    static struct expect e;
    struct store_obj_builder *b = build(&e, 4 /* zstd by the client */);
    uint8_t *obj = NULL;
    size_t len = 0;
    struct store_footer f;
    assert_int_equal(store_obj_seal(b, &obj, &len, &f), 0);
    for (uint32_t i = 0; i < f.nchunks; i++) {
        assert_int_equal(f.chunks[i].codec, STORE_CODEC_NONE);
        assert_int_equal(f.chunks[i].stored_len, e.len[i]);
        assert_memory_equal(obj + f.chunks[i].offset, e.data[i], e.len[i]);
    }
    store_footer_free(&f);
    free(obj);
    store_obj_builder_free(b);
}

static void test_incompressible_stored_as_is(void **state)
{
    (void)state;
    uint8_t id[16] = {0};
    uint8_t topic[16] = {9};
    struct store_obj_builder *b = store_obj_builder_new(id, 0, 3);
    uint8_t batch[4096];
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < sizeof(batch); i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        batch[i] = (uint8_t)x;
    }
    struct store_batch_info info = {.records = 1};
    assert_int_equal(store_obj_builder_add(b, topic, 0, batch, sizeof(batch), &info), 0);
    uint8_t *obj = NULL;
    size_t len = 0;
    struct store_footer f;
    assert_int_equal(store_obj_seal(b, &obj, &len, &f), 0);
    assert_int_equal(f.chunks[0].codec, STORE_CODEC_NONE);
    assert_memory_equal(obj, batch, sizeof(batch));
    store_footer_free(&f);
    free(obj);
    store_obj_builder_free(b);
}

static void test_empty_object(void **state)
{
    (void)state;
    uint8_t id[16] = {0};
    struct store_obj_builder *b = store_obj_builder_new(id, 5, 1);
    uint8_t *obj = NULL;
    size_t len = 0;
    assert_int_equal(store_obj_seal(b, &obj, &len, NULL), 0);
    assert_int_equal(len, 36 + 8);
    struct store_footer f;
    size_t need;
    const char *why;
    assert_int_equal(store_footer_parse(obj, len, len, &f, &need, &why), 0);
    assert_int_equal(f.nchunks, 0);
    store_footer_free(&f);
    free(obj);
    store_obj_builder_free(b);
}

static void test_bad_add(void **state)
{
    (void)state;
    uint8_t id[16] = {0};
    struct store_obj_builder *b = store_obj_builder_new(id, 5, 1);
    struct store_batch_info info = {0};
    uint8_t batch[4] = {0};
    assert_int_equal(store_obj_builder_add(b, id, -1, batch, 4, &info), -EINVAL);
    assert_int_equal(store_obj_builder_add(b, id, 0, batch, 0, &info), -EINVAL);
    assert_int_equal(store_obj_builder_add(b, id, 0, NULL, 4, &info), -EINVAL);
    assert_int_equal(store_batch_info_parse(batch, 4, &info), -EINVAL);
    uint8_t hdr[61] = {0};
    hdr[16] = 1; /* magic 1 */
    assert_int_equal(store_batch_info_parse(hdr, sizeof(hdr), &info), -EINVAL);
    store_obj_builder_free(b);
}

static void test_corrupted_chunk_detected(void **state)
{
    (void)state;
    static struct expect e;
    struct store_obj_builder *b = build(&e, 0);
    uint8_t *obj = NULL;
    size_t len = 0;
    struct store_footer f;
    assert_int_equal(store_obj_seal(b, &obj, &len, &f), 0);
    const struct store_chunk *c = &f.chunks[1];
    const char *why = NULL;
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    for (size_t at = 0; at < c->stored_len; at += c->stored_len / 7 + 1) {
        obj[c->offset + at] ^= 0x40;
        assert_int_equal(
            store_chunk_decode(c, obj + c->offset, c->stored_len, 1 << 20, &raw, &rawlen, &why),
            -EBADMSG);
        assert_non_null(strstr(why, "CRC32C"));
        obj[c->offset + at] ^= 0x40;
    }
    /* A short read of the chunk. */
    assert_int_equal(
        store_chunk_decode(c, obj + c->offset, c->stored_len - 1, 1 << 20, &raw, &rawlen, &why),
        -EBADMSG);
    /* A CRC-valid entry whose raw length lies: zstd's frame size disagrees. */
    struct store_chunk lie = *c;
    lie.raw_len += 1;
    assert_int_equal(
        store_chunk_decode(&lie, obj + c->offset, c->stored_len, 1 << 20, &raw, &rawlen, &why),
        -EBADMSG);
    /* A corrupted footer byte fails the footer CRC. */
    size_t need;
    struct store_footer g;
    obj[f.footer_offset + 40] ^= 1;
    assert_int_equal(store_footer_parse(obj, len, len, &g, &need, &why), -EBADMSG);
    assert_non_null(strstr(why, "CRC"));
    store_footer_free(&f);
    free(obj);
    store_obj_builder_free(b);
}

static void test_truncated_object_detected(void **state)
{
    (void)state;
    static struct expect e;
    struct store_obj_builder *b = build(&e, 0);
    uint8_t *obj = NULL;
    size_t len = 0;
    assert_int_equal(store_obj_seal(b, &obj, &len, NULL), 0);
    struct store_footer f;
    size_t need;
    const char *why;
    /* Every prefix of the object is rejected (no magic, or a footer that does not fit). */
    for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 97)) {
        int rc = store_footer_parse(obj, cut, cut, &f, &need, &why);
        assert_int_equal(rc, -EBADMSG);
    }
    /* Chunks cut out of the middle while the tail survives. */
    size_t drop = 100;
    uint8_t *shorter = malloc(len - drop);
    memcpy(shorter, obj, 50);
    memcpy(shorter + 50, obj + 50 + drop, len - 50 - drop);
    assert_int_equal(store_footer_parse(shorter, len - drop, len - drop, &f, &need, &why),
                     -EBADMSG);
    assert_non_null(strstr(why, "chunk"));
    free(shorter);
    free(obj);
    store_obj_builder_free(b);
}

static void test_garbage_never_crashes(void **state)
{
    (void)state;
    uint8_t buf[512];
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int round = 0; round < 3000; round++) {
        size_t n = (size_t)(x % sizeof(buf));
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (uint8_t)x;
        }
        if (n >= 8 && round % 2 == 0) {
            memcpy(buf + n - 4, "RNL1", 4);
            uint32_t fl = (uint32_t)(x % (n + 10));
            buf[n - 8] = (uint8_t)(fl >> 24);
            buf[n - 7] = (uint8_t)(fl >> 16);
            buf[n - 6] = (uint8_t)(fl >> 8);
            buf[n - 5] = (uint8_t)fl;
        }
        struct store_footer f;
        size_t need = 0;
        const char *why = NULL;
        int rc = store_footer_parse(buf, n, n, &f, &need, &why);
        assert_true(rc == -EBADMSG || rc == 0);
        if (rc == 0) {
            store_footer_free(&f);
        }
        x += 0x9E3779B97F4A7C15ULL;
    }
}

struct seal_wait {
    bool done; /* callback ran */
};

static void seal_cb(struct store_obj_seal_req *req)
{
    ((struct seal_wait *)req->data)->done = true;
}

static void read_cb(struct store_obj_read *r)
{
    ((struct seal_wait *)r->data)->done = true;
}

static void test_async_seal_and_store_readers(void **state)
{
    (void)state;
    static struct expect e;
    struct store_obj_builder *b = build(&e, 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store_obj_seal_req sr = {0};
    struct seal_wait w = {0};
    sr.data = &w;
    assert_int_equal(store_obj_seal_async(&loop, &sr, b, seal_cb), 0);
    while (!w.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(sr.err, 0);
    assert_int_equal(sr.footer.nchunks, 3);
    struct store *s = NULL;
    char err[128];
    assert_int_equal(store_open(&loop, "mem://", NULL, &s, err, sizeof(err)), 0);
    struct store_req pr;
    assert_int_equal(tstore_put(&loop, s, "o/1", sr.out, sr.out_len, 0, &pr), 0);

    struct store_obj_read rd = {0};
    w.done = false;
    rd.data = &w;
    assert_int_equal(store_obj_read_footer(s, &rd, "o/1", read_cb), 0);
    while (!w.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(rd.err, 0);
    assert_int_equal(rd.footer.nchunks, 3);
    struct store_footer f = rd.footer;
    memset(&rd.footer, 0, sizeof(rd.footer));
    for (uint32_t i = 0; i < 3; i++) {
        w.done = false;
        assert_int_equal(store_obj_read_chunk(s, &rd, "o/1", &f.chunks[i], 1 << 20, read_cb), 0);
        while (!w.done) {
            uv_run(&loop, UV_RUN_ONCE);
        }
        assert_int_equal(rd.err, 0);
        assert_int_equal(rd.raw_len, e.len[i]);
        assert_memory_equal(rd.raw, e.data[i], e.len[i]);
        store_obj_read_cleanup(&rd);
    }
    /* A missing object and a non-object. */
    w.done = false;
    assert_int_equal(store_obj_read_footer(s, &rd, "o/missing", read_cb), 0);
    while (!w.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(rd.err, -ENOENT);
    assert_int_equal(
        tstore_put(&loop, s, "o/text", "just some text, not an object at all", 36, 0, &pr), 0);
    w.done = false;
    assert_int_equal(store_obj_read_footer(s, &rd, "o/text", read_cb), 0);
    while (!w.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(rd.err, -EBADMSG);
    assert_non_null(strstr(rd.msg, "Runnel object"));
    /* A truncated object in the store. */
    assert_int_equal(tstore_put(&loop, s, "o/cut", sr.out, sr.out_len - 3, 0, &pr), 0);
    w.done = false;
    assert_int_equal(store_obj_read_footer(s, &rd, "o/cut", read_cb), 0);
    while (!w.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(rd.err, -EBADMSG);
    store_footer_free(&f);
    store_footer_free(&sr.footer);
    free(sr.out);
    store_obj_builder_free(b);
    assert_int_equal(tstore_close_loop(&loop, s), 0);
}

/* A chunk above STORE_OBJ_DECODE_ON_LOOP_MAX is decoded on the thread pool: same result, and a
 * corrupted one is still caught. */
static void test_large_chunk_decoded_off_loop(void **state)
{
    (void)state;
    uint8_t id[16] = {8};
    uint8_t topic[16] = {8};
    struct store_obj_builder *b = store_obj_builder_new(id, 1, 1);
    size_t n = 3 * STORE_OBJ_DECODE_ON_LOOP_MAX;
    uint8_t *batch = malloc(n);
    uint64_t x = 0x1234567;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        batch[i] = (uint8_t)(x >> 56);
    }
    struct store_batch_info info = {.records = 1};
    assert_int_equal(store_obj_builder_add(b, topic, 0, batch, n, &info), 0);
    uint8_t *obj = NULL;
    size_t len = 0;
    struct store_footer f;
    assert_int_equal(store_obj_seal(b, &obj, &len, &f), 0);
    assert_true(f.chunks[0].stored_len > STORE_OBJ_DECODE_ON_LOOP_MAX);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[128];
    assert_int_equal(store_open(&loop, "mem://", NULL, &s, err, sizeof(err)), 0);
    struct store_req pr;
    assert_int_equal(tstore_put(&loop, s, "big", obj, len, 0, &pr), 0);
    obj[1000] ^= 1;
    assert_int_equal(tstore_put(&loop, s, "big-bad", obj, len, 0, &pr), 0);
    for (int bad = 0; bad < 2; bad++) {
        struct store_obj_read rd = {0};
        struct seal_wait w = {0};
        rd.data = &w;
        assert_int_equal(
            store_obj_read_chunk(s, &rd, bad ? "big-bad" : "big", &f.chunks[0], 1 << 30, read_cb),
            0);
        while (!w.done) {
            uv_run(&loop, UV_RUN_ONCE);
        }
        if (bad) {
            assert_int_equal(rd.err, -EBADMSG);
            assert_non_null(strstr(rd.msg, "CRC32C"));
        } else {
            assert_int_equal(rd.err, 0);
            assert_int_equal(rd.raw_len, n);
            assert_memory_equal(rd.raw, batch, n);
        }
        store_obj_read_cleanup(&rd);
    }
    store_footer_free(&f);
    free(obj);
    free(batch);
    store_obj_builder_free(b);
    assert_int_equal(tstore_close_loop(&loop, s), 0);
}

/* Fills buf with key=value text that zstd compresses ~3x, varying with seed. */
static void kv_text(uint8_t *buf, size_t n, uint32_t seed)
{
    static const char *const words[] = {"sku", "cart", "total", "qty", "zone", "shard"};
    size_t at = 0;
    while (at < n) {
        seed = seed * 1103515245u + 12345u;
        char w[40];
        int k = snprintf(w, sizeof(w), " %s_%u=%u", words[(seed >> 16) % 6], (seed >> 8) % 64,
                         seed % 100000);
        for (int i = 0; i < k && at < n; i++) {
            buf[at++] = (uint8_t)w[i];
        }
    }
}

/*
 * The builder's compression context is reused from seal to seal, with level 1 tuned per chunk
 * size (small and large chunks): sealing twice gives the same bytes, every chunk decodes to
 * what was added, and a reset builder seals a different object correctly; also at level 5.
 */
static void test_seal_context_reuse(void **state)
{
    (void)state;
    const size_t sizes[] = {300u << 10, 10u << 10, 200u << 10};
    uint8_t *data = malloc(sizes[0]);
    for (int level = 1; level <= 5; level += 4) {
        uint8_t id[16] = {(uint8_t)level};
        struct store_obj_builder *b = store_obj_builder_new(id, 1, level);
        uint8_t topic[16] = {0x21};
        for (uint32_t obj_no = 0; obj_no < 2; obj_no++) {
            if (obj_no > 0) {
                store_obj_builder_reset(b, NULL, 2);
            }
            for (int32_t part = 0; part < 3; part++) {
                kv_text(data, sizes[part], obj_no * 10 + (uint32_t)part);
                struct store_batch_info info = {.records = 1, .first_ts = 1, .last_ts = 1};
                assert_int_equal(store_obj_builder_add(b, topic, part, data, sizes[part], &info),
                                 0);
            }
            uint8_t *obj1 = NULL;
            uint8_t *obj2 = NULL;
            size_t len1 = 0;
            size_t len2 = 0;
            struct store_footer f;
            assert_int_equal(store_obj_seal(b, &obj1, &len1, &f), 0);
            assert_int_equal(store_obj_seal(b, &obj2, &len2, NULL), 0);
            assert_int_equal(len1, len2);
            assert_memory_equal(obj1, obj2, len1);
            assert_int_equal(f.nchunks, 3);
            for (uint32_t c = 0; c < 3; c++) {
                const struct store_chunk *ch = &f.chunks[c];
                assert_int_equal(ch->codec, STORE_CODEC_ZSTD);
                assert_true(ch->stored_len < ch->raw_len / 2);
                uint8_t *raw = NULL;
                size_t rawlen = 0;
                const char *why = NULL;
                assert_int_equal(store_chunk_decode(ch, obj1 + ch->offset, ch->stored_len, 1 << 20,
                                                    &raw, &rawlen, &why),
                                 0);
                kv_text(data, sizes[ch->partition], obj_no * 10 + (uint32_t)ch->partition);
                assert_int_equal(rawlen, sizes[ch->partition]);
                assert_memory_equal(raw, data, rawlen);
                free(raw);
            }
            store_footer_free(&f);
            free(obj1);
            free(obj2);
        }
        store_obj_builder_free(b);
    }
    free(data);
}

/* A reset builder starts empty, reuses its buffers, and seals only the new batches. */
static void test_builder_reset(void **state)
{
    (void)state;
    static struct expect e;
    struct store_obj_builder *b = build(&e, 0);
    uint8_t id2[16] = {0x55};
    store_obj_builder_reset(b, id2, 77);
    assert_int_equal(store_obj_builder_bytes(b), 0);
    assert_int_equal(store_obj_builder_chunks(b), 0);
    uint8_t topic[16] = {0x99};
    uint8_t batch[200];
    memset(batch, 'q', sizeof(batch));
    struct store_batch_info info = {.records = 4, .first_ts = 10, .last_ts = 20};
    assert_int_equal(store_obj_builder_add(b, topic, 3, batch, sizeof(batch), &info), 0);
    assert_int_equal(store_obj_builder_add(b, topic, 3, batch, 100, &info), 0);
    uint8_t *obj = NULL;
    size_t len = 0;
    struct store_footer f;
    assert_int_equal(store_obj_seal(b, &obj, &len, &f), 0);
    assert_int_equal(f.nchunks, 1);
    assert_int_equal(f.created_at_ms, 77);
    assert_int_equal(f.object_id[0], 0x55);
    assert_int_equal(f.chunks[0].partition, 3);
    assert_int_equal(f.chunks[0].raw_len, 300);
    assert_int_equal(f.chunks[0].batch_count, 2);
    assert_int_equal(f.chunks[0].record_count, 8);
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    const char *why = NULL;
    assert_int_equal(
        store_chunk_decode(&f.chunks[0], obj, f.chunks[0].stored_len, 1 << 20, &raw, &rawlen, &why),
        0);
    assert_int_equal(rawlen, 300);
    for (size_t i = 0; i < rawlen; i++) {
        assert_int_equal(raw[i], 'q');
    }
    free(raw);
    store_footer_free(&f);
    free(obj);
    /* Reset twice in a row, then free with spare buffers held. */
    store_obj_builder_reset(b, NULL, 0);
    store_obj_builder_reset(b, NULL, 0);
    store_obj_builder_free(b);
}

/* A footer larger than the reader's first tail GET (64 KiB): the reader fetches it again. */
static void test_large_footer_two_reads(void **state)
{
    (void)state;
    uint8_t id[16] = {3};
    struct store_obj_builder *b = store_obj_builder_new(id, 9, 1);
    uint8_t batch[100];
    memset(batch, 'z', sizeof(batch));
    struct store_batch_info info = {.records = 1, .first_ts = 5, .last_ts = 6};
    for (int i = 0; i < 1500; i++) {
        uint8_t topic[16] = {(uint8_t)(i >> 8), (uint8_t)i};
        assert_int_equal(store_obj_builder_add(b, topic, i % 3, batch, sizeof(batch), &info), 0);
    }
    assert_int_equal(store_obj_builder_chunks(b), 1500);
    uint8_t *obj = NULL;
    size_t len = 0;
    assert_int_equal(store_obj_seal(b, &obj, &len, NULL), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[128];
    assert_int_equal(store_open(&loop, "mem://", NULL, &s, err, sizeof(err)), 0);
    struct store_req pr;
    assert_int_equal(tstore_put(&loop, s, "big-footer", obj, len, 0, &pr), 0);
    struct store_obj_read rd = {0};
    struct seal_wait w = {0};
    rd.data = &w;
    assert_int_equal(store_obj_read_footer(s, &rd, "big-footer", read_cb), 0);
    while (!w.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(rd.err, 0);
    assert_int_equal(rd.footer.nchunks, 1500);
    assert_true(36 + 1500 * 65 > 64 * 1024);
    assert_int_equal(rd.footer.chunks[1499].partition, 1499 % 3);
    store_obj_read_cleanup(&rd);
    free(obj);
    store_obj_builder_free(b);
    assert_int_equal(tstore_close_loop(&loop, s), 0);
}

int run_test_object(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_precompressed_stored_as_is),
        cmocka_unit_test(test_incompressible_stored_as_is),
        cmocka_unit_test(test_empty_object),
        cmocka_unit_test(test_bad_add),
        cmocka_unit_test(test_corrupted_chunk_detected),
        cmocka_unit_test(test_truncated_object_detected),
        cmocka_unit_test(test_garbage_never_crashes),
        cmocka_unit_test(test_async_seal_and_store_readers),
        cmocka_unit_test(test_large_footer_two_reads),
        cmocka_unit_test(test_builder_reset),
        cmocka_unit_test(test_seal_context_reuse),
        cmocka_unit_test(test_large_chunk_decoded_off_loop),
    };
    return cmocka_run_group_tests_name("object", tests, NULL, NULL);
}
