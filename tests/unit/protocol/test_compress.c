/*
 * Unit tests for protocol/src/compress.c: round trips for every codec, both snappy framings,
 * the exact size cap, truncated and corrupted input, and decompression bombs measured with a
 * counting allocator (the output may never grow past the cap).
 */
#include "test_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include "runnel/protocol/compress.h"

static const int codecs[] = {KP_CODEC_GZIP, KP_CODEC_SNAPPY, KP_CODEC_LZ4, KP_CODEC_ZSTD};
#define N_CODECS (sizeof(codecs) / sizeof(codecs[0]))

/* Counts live and peak bytes of output buffers. */
struct counter {
    size_t live;
    size_t peak;
    size_t calls;
};

static void *count_resize(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    struct counter *c = ctx;
    c->live = c->live - old_size + new_size;
    if (c->live > c->peak) {
        c->peak = c->live;
    }
    c->calls++;
    return realloc(ptr, new_size);
}

static void count_release(void *ctx, void *ptr, size_t size)
{
    struct counter *c = ctx;
    c->live -= size;
    free(ptr);
}

static uint64_t rng = 0x1234567887654321ull;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* Half-compressible test data: runs of text with random bytes in between. */
static uint8_t *make_data(size_t n)
{
    uint8_t *d = malloc(n > 0 ? n : 1);
    assert_non_null(d);
    static const char text[] = "runnel keeps kafka records in object storage; ";
    for (size_t i = 0; i < n; i++) {
        d[i] = (i / 64) % 2 ? (uint8_t)rnd() : (uint8_t)text[i % (sizeof(text) - 1)];
    }
    return d;
}

static void round_trip(int codec, const uint8_t *data, size_t n)
{
    uint8_t *c = NULL, *d = NULL;
    size_t clen = 0, dlen = 0;
    const char *why = NULL;
    assert_int_equal(kp_compress(codec, KP_LEVEL_DEFAULT, data, n, &c, &clen), 0);
    assert_non_null(c);
    assert_int_equal(kp_decompress(codec, c, clen, n, &d, &dlen, &why), 0);
    assert_int_equal(dlen, n);
    assert_true(n == 0 || memcmp(d, data, n) == 0);
    free(d);
    /* One byte less than needed is refused, cleanly. */
    if (n > 0) {
        d = (uint8_t *)1;
        assert_int_equal(kp_decompress(codec, c, clen, n - 1, &d, &dlen, &why), -EFBIG);
        assert_null(d);
        assert_non_null(why);
    }
    free(c);
}

static void test_round_trips(void **state)
{
    static const size_t sizes[] = {0, 1, 100, 4095, 4096, 32768, 32769, 200000, 1 << 20};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        uint8_t *data = make_data(sizes[s]);
        for (size_t c = 0; c < N_CODECS; c++) {
            round_trip(codecs[c], data, sizes[s]);
        }
        free(data);
    }
}

static void test_levels_and_bad_args(void **state)
{
    uint8_t *data = make_data(5000);
    uint8_t *c = NULL, *d = NULL;
    size_t clen, dlen;
    const char *why;
    assert_int_equal(kp_compress(KP_CODEC_GZIP, 9, data, 5000, &c, &clen), 0);
    assert_int_equal(kp_decompress(KP_CODEC_GZIP, c, clen, 5000, &d, &dlen, &why), 0);
    free(c);
    free(d);
    assert_int_equal(kp_compress(KP_CODEC_ZSTD, 19, data, 5000, &c, &clen), 0);
    assert_int_equal(kp_decompress(KP_CODEC_ZSTD, c, clen, 5000, &d, &dlen, &why), 0);
    free(c);
    free(d);
    assert_int_equal(kp_compress(KP_CODEC_GZIP, 42, data, 5000, &c, &clen), -EINVAL);
    assert_int_equal(kp_compress(KP_CODEC_NONE, 0, data, 5000, &c, &clen), -EINVAL);
    assert_int_equal(kp_compress(7, 0, data, 5000, &c, &clen), -EINVAL);
    assert_int_equal(kp_decompress(KP_CODEC_NONE, data, 10, 100, &d, &dlen, &why), -EINVAL);
    assert_int_equal(kp_decompress(5, data, 10, 100, &d, &dlen, &why), -EINVAL);
    assert_string_equal(kp_codec_name(KP_CODEC_LZ4), "lz4");
    assert_string_equal(kp_codec_name(9), "unknown");
    free(data);
}

/* librdkafka writes raw snappy without the xerial framing; both must decode. */
static void test_raw_snappy(void **state)
{
    uint8_t *data = make_data(70000);
    size_t clen = snappy_max_compressed_length(70000);
    char *c = malloc(clen);
    assert_int_equal(snappy_compress((const char *)data, 70000, c, &clen), SNAPPY_OK);
    uint8_t *d;
    size_t dlen;
    const char *why;
    assert_int_equal(kp_decompress(KP_CODEC_SNAPPY, c, clen, 70000, &d, &dlen, &why), 0);
    assert_int_equal(dlen, 70000);
    assert_memory_equal(d, data, 70000);
    free(d);
    assert_int_equal(kp_decompress(KP_CODEC_SNAPPY, c, clen, 69999, &d, &dlen, &why), -EFBIG);
    /* An empty raw block, and an xerial stream of one empty block (found by the fuzzer). */
    uint8_t empty[] = {0x00};
    assert_int_equal(kp_decompress(KP_CODEC_SNAPPY, empty, 1, 100, &d, &dlen, &why), 0);
    assert_int_equal(dlen, 0);
    free(d);
    uint8_t xempty[] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0, 0, 0, 0,
                        1,    0,   0,   0,   1,   0,   0,   0, 1, 0};
    assert_int_equal(kp_decompress(KP_CODEC_SNAPPY, xempty, sizeof(xempty), 100, &d, &dlen, &why),
                     0);
    assert_int_equal(dlen, 0);
    free(d);
    /* A raw block claiming 4 GiB is refused from its header alone. */
    uint8_t claim[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x00};
    assert_int_equal(kp_decompress(KP_CODEC_SNAPPY, claim, sizeof(claim), 1 << 20, &d, &dlen, &why),
                     -EFBIG);
    free(c);
    free(data);
}

/* Every strict prefix of a stream is an error (xerial snappy may end on a block boundary). */
static void test_truncation(void **state)
{
    uint8_t *data = make_data(3000);
    for (size_t ci = 0; ci < N_CODECS; ci++) {
        int codec = codecs[ci];
        uint8_t *c, *d;
        size_t clen, dlen;
        const char *why;
        assert_int_equal(kp_compress(codec, KP_LEVEL_DEFAULT, data, 3000, &c, &clen), 0);
        for (size_t k = 0; k < clen; k++) {
            uint8_t *copy = malloc(k > 0 ? k : 1);
            memcpy(copy, c, k);
            int rc = kp_decompress(codec, copy, k, 1 << 20, &d, &dlen, &why);
            if (rc == 0) {
                assert_int_equal(codec, KP_CODEC_SNAPPY);
                assert_true(dlen == 0 || dlen == 3000);
                assert_int_equal(k, 16); /* header with no blocks */
                free(d);
            } else {
                assert_int_equal(rc, -EBADMSG);
                assert_null(d);
                assert_non_null(why);
            }
            free(copy);
        }
        free(c);
    }
    free(data);
}

/* Random corruption never crashes or overruns (the sanitizer build checks), and stays capped. */
static void test_corruption(void **state)
{
    uint8_t *data = make_data(20000);
    for (size_t ci = 0; ci < N_CODECS; ci++) {
        uint8_t *c;
        size_t clen;
        assert_int_equal(kp_compress(codecs[ci], KP_LEVEL_DEFAULT, data, 20000, &c, &clen), 0);
        for (int round = 0; round < 300; round++) {
            uint8_t *copy = malloc(clen);
            memcpy(copy, c, clen);
            int flips = 1 + (int)(rnd() % 4);
            for (int f = 0; f < flips; f++) {
                copy[rnd() % clen] ^= (uint8_t)(1 + rnd() % 255);
            }
            struct counter cnt = {0};
            struct kp_alloc_ops ops = {count_resize, count_release, &cnt};
            uint8_t *d;
            size_t dlen, dcap;
            const char *why;
            int rc =
                kp_decompress_with(&ops, codecs[ci], copy, clen, 30000, &d, &dlen, &dcap, &why);
            assert_true(cnt.peak <= 30000);
            if (rc == 0) {
                assert_true(dlen <= 30000);
                ops.release(ops.ctx, d, dcap);
            } else {
                assert_true(rc == -EBADMSG || rc == -EFBIG);
            }
            assert_int_equal(cnt.live, 0);
            free(copy);
        }
        free(c);
    }
    free(data);
}

#define BOMB_SIZE ((size_t)1 << 30) /* 1 GiB of zeros */
#define BOMB_CAP ((size_t)1 << 20)  /* decompressed at most 1 MiB */
#define ZERO_CHUNK ((size_t)1 << 20)

static uint8_t *zstd_bomb(size_t *len)
{
    static uint8_t zeros[ZERO_CHUNK];
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1);
    size_t cap = 1 << 20, pos = 0;
    uint8_t *buf = malloc(cap);
    for (size_t done = 0; done < BOMB_SIZE; done += ZERO_CHUNK) {
        ZSTD_inBuffer in = {zeros, ZERO_CHUNK, 0};
        ZSTD_EndDirective end = done + ZERO_CHUNK == BOMB_SIZE ? ZSTD_e_end : ZSTD_e_continue;
        size_t left;
        do {
            ZSTD_outBuffer out = {buf + pos, cap - pos, 0};
            left = ZSTD_compressStream2(cctx, &out, &in, end);
            assert_false(ZSTD_isError(left));
            pos += out.pos;
            if (cap - pos < 4096) {
                cap *= 2;
                buf = realloc(buf, cap);
            }
        } while (in.pos < in.size || (end == ZSTD_e_end && left != 0));
    }
    ZSTD_freeCCtx(cctx);
    *len = pos;
    return buf;
}

static uint8_t *gzip_bomb(size_t *len)
{
    static uint8_t zeros[ZERO_CHUNK];
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = 1 << 20, pos = 0;
    uint8_t *buf = malloc(cap);
    for (size_t done = 0; done < BOMB_SIZE; done += ZERO_CHUNK) {
        zs.next_in = zeros;
        zs.avail_in = ZERO_CHUNK;
        int flush = done + ZERO_CHUNK == BOMB_SIZE ? Z_FINISH : Z_NO_FLUSH;
        int zr;
        do {
            if (cap - pos < 65536) {
                cap *= 2;
                buf = realloc(buf, cap);
            }
            zs.next_out = buf + pos;
            zs.avail_out = (uInt)(cap - pos);
            zr = deflate(&zs, flush);
            assert_true(zr == Z_OK || zr == Z_STREAM_END || zr == Z_BUF_ERROR);
            pos = cap - zs.avail_out;
        } while (zs.avail_in > 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
    }
    *len = pos;
    deflateEnd(&zs);
    return buf;
}

static uint8_t *lz4_bomb(size_t *len)
{
    static uint8_t zeros[ZERO_CHUNK];
    LZ4F_cctx *cctx;
    assert_false(LZ4F_isError(LZ4F_createCompressionContext(&cctx, LZ4F_VERSION)));
    size_t step = LZ4F_compressBound(ZERO_CHUNK, NULL);
    size_t cap = 64 << 20;
    uint8_t *buf = malloc(cap);
    size_t pos = LZ4F_compressBegin(cctx, buf, cap, NULL);
    assert_false(LZ4F_isError(pos));
    for (size_t done = 0; done < BOMB_SIZE; done += ZERO_CHUNK) {
        assert_true(cap - pos >= step);
        size_t n = LZ4F_compressUpdate(cctx, buf + pos, cap - pos, zeros, ZERO_CHUNK, NULL);
        assert_false(LZ4F_isError(n));
        pos += n;
    }
    size_t n = LZ4F_compressEnd(cctx, buf + pos, cap - pos, NULL);
    assert_false(LZ4F_isError(n));
    LZ4F_freeCompressionContext(cctx);
    *len = pos + n;
    return buf;
}

/* xerial framing: 64 MiB of zeros as 32 KiB blocks (each block is small, the total is not). */
static uint8_t *snappy_bomb(size_t *len)
{
    static uint8_t zeros[32768];
    size_t blen = snappy_max_compressed_length(sizeof(zeros));
    char *block = malloc(blen);
    assert_int_equal(snappy_compress((const char *)zeros, sizeof(zeros), block, &blen), SNAPPY_OK);
    size_t blocks = (64u << 20) / sizeof(zeros);
    size_t total = 16 + blocks * (4 + blen);
    uint8_t *buf = malloc(total);
    static const uint8_t hdr[16] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1};
    memcpy(buf, hdr, 16);
    size_t pos = 16;
    for (size_t i = 0; i < blocks; i++) {
        buf[pos] = (uint8_t)(blen >> 24);
        buf[pos + 1] = (uint8_t)(blen >> 16);
        buf[pos + 2] = (uint8_t)(blen >> 8);
        buf[pos + 3] = (uint8_t)blen;
        memcpy(buf + pos + 4, block, blen);
        pos += 4 + blen;
    }
    free(block);
    *len = pos;
    return buf;
}

static void check_bomb(int codec, const uint8_t *bomb, size_t len)
{
    struct counter cnt = {0};
    struct kp_alloc_ops ops = {count_resize, count_release, &cnt};
    uint8_t *d = (uint8_t *)1;
    size_t dlen, dcap;
    const char *why = NULL;
    int rc = kp_decompress_with(&ops, codec, bomb, len, BOMB_CAP, &d, &dlen, &dcap, &why);
    assert_int_equal(rc, -EFBIG);
    assert_null(d);
    assert_non_null(why);
    assert_true(cnt.peak <= BOMB_CAP);
    assert_true(cnt.peak > 0);
    assert_int_equal(cnt.live, 0);
}

static void test_bombs(void **state)
{
    size_t len;
    uint8_t *b = zstd_bomb(&len);
    assert_true(len < BOMB_SIZE / 1000);
    check_bomb(KP_CODEC_ZSTD, b, len);
    free(b);
    b = gzip_bomb(&len);
    assert_true(len < BOMB_SIZE / 100);
    check_bomb(KP_CODEC_GZIP, b, len);
    free(b);
    b = lz4_bomb(&len);
    assert_true(len < BOMB_SIZE / 100);
    check_bomb(KP_CODEC_LZ4, b, len);
    free(b);
    b = snappy_bomb(&len);
    check_bomb(KP_CODEC_SNAPPY, b, len);
    free(b);
}

/* A zstd frame demanding a huge window is refused without zstd allocating it. */
static void test_zstd_window_limit(void **state)
{
    /* Hand-made frame: magic, descriptor (no content size), window 2^30, one raw last block. */
    uint8_t frame[4 + 1 + 1 + 3 + 10] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3};
    uint32_t bh = 1 | (0 << 1) | (10 << 3);
    frame[6] = (uint8_t)bh;
    frame[7] = (uint8_t)(bh >> 8);
    frame[8] = (uint8_t)(bh >> 16);
    memset(frame + 9, 'x', 10);
    uint8_t *d;
    size_t dlen;
    const char *why;
    assert_int_equal(kp_decompress(KP_CODEC_ZSTD, frame, sizeof(frame), 2 << 20, &d, &dlen, &why),
                     -EFBIG);
    /* The same frame with a 1 MiB window decodes. */
    frame[5] = 10 << 3;
    assert_int_equal(kp_decompress(KP_CODEC_ZSTD, frame, sizeof(frame), 2 << 20, &d, &dlen, &why),
                     0);
    assert_int_equal(dlen, 10);
    assert_memory_equal(d, "xxxxxxxxxx", 10);
    free(d);
}

/* Concatenated gzip members and zstd frames decode as one stream. */
static void test_concatenated(void **state)
{
    uint8_t *data = make_data(1000);
    for (int codec = KP_CODEC_GZIP; codec <= KP_CODEC_ZSTD; codec++) {
        if (codec == KP_CODEC_SNAPPY) {
            continue;
        }
        uint8_t *a, *b, *d;
        size_t alen, blen, dlen;
        const char *why;
        assert_int_equal(kp_compress(codec, KP_LEVEL_DEFAULT, data, 400, &a, &alen), 0);
        assert_int_equal(kp_compress(codec, KP_LEVEL_DEFAULT, data + 400, 600, &b, &blen), 0);
        uint8_t *both = malloc(alen + blen);
        memcpy(both, a, alen);
        memcpy(both + alen, b, blen);
        assert_int_equal(kp_decompress(codec, both, alen + blen, 1000, &d, &dlen, &why), 0);
        assert_int_equal(dlen, 1000);
        assert_memory_equal(d, data, 1000);
        free(d);
        free(both);
        free(a);
        free(b);
    }
    free(data);
}

int run_test_compress(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),       cmocka_unit_test(test_levels_and_bad_args),
        cmocka_unit_test(test_raw_snappy),        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_corruption),        cmocka_unit_test(test_bombs),
        cmocka_unit_test(test_zstd_window_limit), cmocka_unit_test(test_concatenated),
    };
    return cmocka_run_group_tests_name("compress", tests, NULL, NULL);
}
