/*
 * Unit tests for protocol/src/records.c: a byte-exact reference batch, build/parse/iterate with
 * every codec, concatenated batches and partial tails, truncation at every byte, bad CRCs, bad
 * header fields, hand-made malformed records (bad varints, negative and huge lengths and counts),
 * offset-delta rules, the in-place edits (base offset, epoch, LogAppendTime), control markers,
 * the decompression cap inside a batch, and random corruption under the sanitizers.
 */
#include "test_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/protocol/compress.h"
#include "runnel/protocol/crc32c.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/records.h"

#define CAP (16u << 20) /* decompression cap used by most tests */

/* One record, key null, value "hi", timestamp 1000; CRC computed independently (bitwise). */
static const uint8_t reference[] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3a, 0xff, 0xff,
    0xff, 0xff, 0x02, 0x23, 0x3d, 0xad, 0x44, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
    0xe8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0x00, 0x00, 0x00, 0x01, 0x10, 0x00, 0x00, 0x00, 0x01, 0x04, 0x68, 0x69, 0x00};

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void fix_crc(uint8_t *b, size_t len)
{
    put32(b + 17, kp_crc32c(0, b + KP_BATCH_CRC_START, len - KP_BATCH_CRC_START));
}

/* A batch around hand-made record bytes (uncompressed), with the CRC fixed. free() it. */
static uint8_t *raw_batch(const uint8_t *recs, size_t recs_len, int32_t count, int32_t lod,
                          size_t *len)
{
    size_t n = KP_BATCH_HEADER_SIZE + recs_len;
    uint8_t *b = calloc(1, n);
    assert_non_null(b);
    memcpy(b, reference, KP_BATCH_HEADER_SIZE);
    put32(b + 8, (uint32_t)(n - KP_BATCH_LOG_OVERHEAD));
    put32(b + 23, (uint32_t)lod);
    put32(b + 57, (uint32_t)count);
    memcpy(b + KP_BATCH_HEADER_SIZE, recs, recs_len);
    fix_crc(b, n);
    *len = n;
    return b;
}

static void test_reference_bytes(void **state)
{
    uint8_t value[] = "hi";
    struct kp_record_in rec = {.key = KP_BYTES_NULL, .value = {value, 2}, .timestamp = 1000};
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    uint8_t *out;
    size_t len;
    assert_int_equal(kp_batch_build(&spec, &rec, 1, &out, &len), 0);
    assert_int_equal(len, sizeof(reference));
    assert_memory_equal(out, reference, len);
    free(out);

    struct kp_batch b;
    struct kp_batch_err err;
    assert_int_equal(kp_batch_parse(reference, sizeof(reference), KP_BATCH_PRODUCE, &b, &err), 0);
    assert_int_equal(err.code, 0);
    assert_ptr_equal(b.ptr, reference);
    assert_int_equal(b.len, sizeof(reference));
    assert_int_equal(b.batch_length, 58);
    assert_int_equal(b.partition_leader_epoch, -1);
    assert_int_equal(b.magic, 2);
    assert_int_equal(b.crc, 0x233dad44u);
    assert_int_equal(b.attributes, 0);
    assert_int_equal(b.last_offset_delta, 0);
    assert_int_equal(b.base_timestamp, 1000);
    assert_int_equal(b.max_timestamp, 1000);
    assert_int_equal(b.producer_id, -1);
    assert_int_equal(b.producer_epoch, -1);
    assert_int_equal(b.base_sequence, -1);
    assert_int_equal(b.record_count, 1);
    assert_ptr_equal(b.records, reference + 61);
    assert_int_equal(b.records_len, 9);

    struct kp_record_iter it;
    struct kp_record r;
    assert_int_equal(kp_record_iter_init(&it, &b, CAP, &err), 0);
    assert_int_equal(kp_record_iter_next(&it, &r, &err), 1);
    assert_int_equal(r.key.len, -1);
    assert_null(r.key.ptr);
    assert_int_equal(r.value.len, 2);
    assert_ptr_equal(r.value.ptr, reference + 67); /* a view, not a copy */
    assert_int_equal(r.offset, 0);
    assert_int_equal(r.timestamp, 1000);
    assert_int_equal(r.header_count, 0);
    assert_int_equal(kp_record_iter_next(&it, &r, &err), 0);
    kp_record_iter_free(&it);
}

/* Deterministic test records: some null keys and values, headers, a late timestamp. */
struct fixture {
    struct kp_record_in recs[50];
    struct kp_header hdrs[50][3];
    uint8_t keys[50][16];
    uint8_t *big;
};

static void fixture_init(struct fixture *f)
{
    static const char *hk[] = {"trace", "", "content-type"};
    f->big = malloc(3000);
    assert_non_null(f->big);
    for (int i = 0; i < 3000; i++) {
        f->big[i] = (uint8_t)(i * 7);
    }
    for (int i = 0; i < 50; i++) {
        struct kp_record_in *r = &f->recs[i];
        int klen = snprintf((char *)f->keys[i], sizeof(f->keys[i]), "key-%d", i);
        r->key = i % 7 == 3 ? KP_BYTES_NULL : (struct kp_bytes){f->keys[i], klen};
        r->value = i % 11 == 5 ? KP_BYTES_NULL : (struct kp_bytes){f->big, (i * 61) % 3000};
        r->timestamp = 1700000000000LL + i * 3 - (i == 20 ? 500 : 0);
        r->header_count = i % 4;
        for (int h = 0; h < r->header_count; h++) {
            f->hdrs[i][h].key = (struct kp_bytes){(const uint8_t *)hk[h], (int32_t)strlen(hk[h])};
            f->hdrs[i][h].value = h == 1 ? KP_BYTES_NULL : (struct kp_bytes){f->big + h, h * 5};
        }
        r->headers = f->hdrs[i];
    }
}

static bool bytes_eq(struct kp_bytes a, struct kp_bytes b)
{
    return a.len == b.len && (a.len <= 0 || memcmp(a.ptr, b.ptr, (size_t)a.len) == 0);
}

static uint8_t *build_fixture_batch(struct fixture *f, int codec, size_t n, size_t *len)
{
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    spec.attributes = (int16_t)codec;
    spec.base_offset = 1000;
    spec.producer_id = 77;
    spec.producer_epoch = 3;
    spec.base_sequence = 40;
    uint8_t *out;
    assert_int_equal(kp_batch_build(&spec, f->recs, n, &out, len), 0);
    return out;
}

static void check_fixture_batch(struct fixture *f, const uint8_t *buf, size_t len, int codec,
                                size_t n)
{
    struct kp_batch b;
    struct kp_batch_err err;
    assert_int_equal(kp_batch_parse(buf, len, KP_BATCH_PRODUCE, &b, &err), 0);
    assert_int_equal(kp_batch_codec(&b), codec);
    assert_int_equal(b.record_count, (int32_t)n);
    assert_int_equal(b.last_offset_delta, (int32_t)n - 1);
    assert_int_equal(b.base_offset, 1000);
    assert_int_equal(b.producer_id, 77);
    assert_int_equal(b.producer_epoch, 3);
    assert_int_equal(b.base_sequence, 40);
    assert_int_equal(b.base_timestamp, f->recs[0].timestamp);
    int64_t max = f->recs[0].timestamp;
    for (size_t i = 0; i < n; i++) {
        max = f->recs[i].timestamp > max ? f->recs[i].timestamp : max;
    }
    assert_int_equal(b.max_timestamp, max);

    struct kp_record_iter it;
    struct kp_record r;
    assert_int_equal(kp_record_iter_init(&it, &b, CAP, &err), 0);
    size_t i = 0;
    int rc;
    while ((rc = kp_record_iter_next(&it, &r, &err)) == 1) {
        assert_true(i < n);
        assert_true(bytes_eq(r.key, f->recs[i].key));
        assert_true(bytes_eq(r.value, f->recs[i].value));
        assert_int_equal(r.timestamp, f->recs[i].timestamp);
        assert_int_equal(r.offset, 1000 + (int64_t)i);
        assert_int_equal(r.offset_delta, (int32_t)i);
        assert_int_equal(r.header_count, f->recs[i].header_count);
        struct kp_header_iter hi;
        struct kp_header h;
        kp_header_iter_init(&hi, &r);
        int nh = 0;
        while (kp_header_next(&hi, &h) == 1) {
            assert_true(bytes_eq(h.key, f->recs[i].headers[nh].key));
            assert_true(bytes_eq(h.value, f->recs[i].headers[nh].value));
            nh++;
        }
        assert_int_equal(nh, f->recs[i].header_count);
        i++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(i, n);
    kp_record_iter_free(&it);

    assert_int_equal(kp_batch_validate_records(&b, KP_BATCH_PRODUCE, CAP, &err), 0);
    int has_null_key = 0;
    for (i = 0; i < n; i++) {
        has_null_key |= f->recs[i].key.len < 0;
    }
    rc = kp_batch_validate_records(&b, KP_RECORDS_REQUIRE_KEY, CAP, &err);
    if (has_null_key) {
        assert_int_equal(rc, -EBADMSG);
        assert_int_equal(err.code, KP_ERROR_INVALID_RECORD);
    } else {
        assert_int_equal(rc, 0);
    }
}

static void test_build_parse_each_codec(void **state)
{
    struct fixture f;
    fixture_init(&f);
    for (int codec = 0; codec <= 4; codec++) {
        static const size_t counts[] = {1, 3, 50};
        for (size_t c = 0; c < 3; c++) {
            size_t len;
            uint8_t *buf = build_fixture_batch(&f, codec, counts[c], &len);
            check_fixture_batch(&f, buf, len, codec, counts[c]);
            free(buf);
        }
    }
    /* Levels reach the codec. */
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    spec.attributes = KP_CODEC_ZSTD;
    spec.level = 100;
    uint8_t *out;
    size_t len;
    assert_int_equal(kp_batch_build(&spec, f.recs, 5, &out, &len), -EINVAL);
    free(f.big);
}

static void test_builder_rejects(void **state)
{
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    struct kp_record_in rec = {.key = KP_BYTES_NULL, .value = KP_BYTES_NULL};
    uint8_t *out;
    size_t len;
    assert_int_equal(kp_batch_build(&spec, &rec, 0, &out, &len), -EINVAL);
    struct kp_header h = {.key = KP_BYTES_NULL, .value = KP_BYTES_NULL};
    rec.headers = &h;
    rec.header_count = 1;
    assert_int_equal(kp_batch_build(&spec, &rec, 1, &out, &len), -EINVAL);
    rec.header_count = 0;
    spec.attributes = 6;
    assert_int_equal(kp_batch_build(&spec, &rec, 1, &out, &len), -EINVAL);
    spec.attributes = 0;
    assert_int_equal(kp_batch_build(&spec, &rec, 1, &out, &len), 0);
    free(out);
}

static void test_concatenated_and_partial_tail(void **state)
{
    struct fixture f;
    fixture_init(&f);
    size_t lens[3], total = 0;
    uint8_t *parts[3];
    for (int i = 0; i < 3; i++) {
        parts[i] = build_fixture_batch(&f, i * 2, 5 + (size_t)i, &lens[i]);
        total += lens[i];
    }
    uint8_t *buf = malloc(total);
    size_t pos = 0;
    for (int i = 0; i < 3; i++) {
        memcpy(buf + pos, parts[i], lens[i]);
        pos += lens[i];
        free(parts[i]);
    }
    for (size_t cut = 0; cut <= total; cut++) {
        uint8_t *copy = malloc(cut > 0 ? cut : 1);
        memcpy(copy, buf, cut);
        size_t whole = 0, consumed = 0;
        while (whole < 3 && consumed + lens[whole] <= cut) {
            consumed += lens[whole++];
        }
        struct kp_batch_iter it;
        struct kp_batch b;
        struct kp_batch_err err;
        size_t got = 0;
        int rc;
        kp_batch_iter_init(&it, copy, cut, KP_BATCH_PARTIAL_TAIL);
        while ((rc = kp_batch_iter_next(&it, &b, &err)) == 1) {
            got++;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(got, whole);
        assert_int_equal(it.tail, cut - consumed);

        kp_batch_iter_init(&it, copy, cut, KP_BATCH_PRODUCE);
        got = 0;
        while ((rc = kp_batch_iter_next(&it, &b, &err)) == 1) {
            got++;
        }
        assert_int_equal(got, whole);
        if (cut == consumed) {
            assert_int_equal(rc, 0);
        } else {
            assert_int_equal(rc, -ENODATA);
            assert_int_equal(err.code, KP_ERROR_CORRUPT_MESSAGE);
            assert_int_equal(err.offset, consumed);
            assert_non_null(err.why);
        }
        free(copy);
    }
    free(buf);
    free(f.big);
}

/* Shortening batchLength (and fixing the CRC) leaves records cut short: an error, never a read
 * past the end, at every possible length and with every codec. */
static void test_records_truncated_every_byte(void **state)
{
    struct fixture f;
    fixture_init(&f);
    for (int codec = 0; codec <= 4; codec++) {
        size_t len;
        uint8_t *full = build_fixture_batch(&f, codec, 12, &len);
        for (size_t k = 0; k < len; k++) {
            uint8_t *b = malloc(k > 0 ? k : 1);
            memcpy(b, full, k);
            struct kp_batch batch;
            struct kp_batch_err err;
            int rc = kp_batch_parse(b, k, 0, &batch, &err);
            assert_int_equal(rc, -ENODATA);
            assert_int_equal(err.code, KP_ERROR_CORRUPT_MESSAGE);
            if (k >= KP_BATCH_HEADER_SIZE) {
                put32(b + 8, (uint32_t)(k - KP_BATCH_LOG_OVERHEAD));
                fix_crc(b, k);
                rc = kp_batch_parse(b, k, 0, &batch, &err);
                if (rc == 0) {
                    rc = kp_batch_validate_records(&batch, 0, CAP, &err);
                }
                assert_int_equal(rc < 0, 1);
                assert_true(err.code == KP_ERROR_CORRUPT_MESSAGE ||
                            err.code == KP_ERROR_INVALID_RECORD);
                assert_non_null(err.why);
            }
            free(b);
        }
        free(full);
    }
    free(f.big);
}

static void test_bad_crc(void **state)
{
    uint8_t b[sizeof(reference)];
    struct kp_batch batch;
    struct kp_batch_err err;
    for (size_t i = KP_BATCH_CRC_START; i < sizeof(b); i++) {
        memcpy(b, reference, sizeof(b));
        b[i] ^= 0x01;
        assert_int_equal(kp_batch_parse(b, sizeof(b), 0, &batch, &err), -EBADMSG);
        assert_int_equal(err.code, KP_ERROR_CORRUPT_MESSAGE);
        assert_string_equal(err.why, "record batch CRC-32C mismatch");
    }
    /* The stored CRC itself. */
    memcpy(b, reference, sizeof(b));
    b[18] ^= 0x80;
    assert_int_equal(kp_batch_parse(b, sizeof(b), 0, &batch, &err), -EBADMSG);
    assert_int_equal(err.code, KP_ERROR_CORRUPT_MESSAGE);
    assert_int_equal(kp_batch_parse(b, sizeof(b), KP_BATCH_SKIP_CRC, &batch, &err), 0);
    /* baseOffset and partitionLeaderEpoch are outside the CRC. */
    memcpy(b, reference, sizeof(b));
    b[3] = 0x55;
    b[14] = 0x12;
    assert_int_equal(kp_batch_parse(b, sizeof(b), 0, &batch, &err), 0);
}

/* Mutates one header field of the reference batch (CRC fixed) and expects the given outcome. */
static void expect_header(size_t off, int width, int64_t value, unsigned flags, int rc,
                          int16_t code)
{
    uint8_t b[sizeof(reference)];
    memcpy(b, reference, sizeof(b));
    for (int i = 0; i < width; i++) {
        b[off + (size_t)i] = (uint8_t)((uint64_t)value >> (8 * (width - 1 - i)));
    }
    fix_crc(b, sizeof(b));
    struct kp_batch batch;
    struct kp_batch_err err;
    assert_int_equal(kp_batch_parse(b, sizeof(b), flags, &batch, &err), rc);
    assert_int_equal(err.code, code);
}

static void test_bad_header_fields(void **state)
{
    const int16_t corrupt = KP_ERROR_CORRUPT_MESSAGE, invalid = KP_ERROR_INVALID_RECORD;
    expect_header(8, 4, -1, 0, -EBADMSG, corrupt);        /* negative batchLength */
    expect_header(8, 4, INT32_MIN, 0, -EBADMSG, corrupt); /* very negative */
    expect_header(8, 4, 10, 0, -EBADMSG, corrupt);        /* shorter than a header */
    expect_header(8, 4, 48, 0, -EBADMSG, corrupt);
    expect_header(8, 4, 59, 0, -ENODATA, corrupt);        /* one byte past the input */
    expect_header(8, 4, INT32_MAX, 0, -ENODATA, corrupt); /* huge */
    expect_header(16, 1, 1, 0, -EBADMSG, invalid);        /* magic 1 */
    expect_header(16, 1, 0, 0, -EBADMSG, invalid);        /* magic 0 */
    expect_header(16, 1, 3, 0, -EBADMSG, corrupt);        /* unknown magic */
    expect_header(16, 1, -1, 0, -EBADMSG, corrupt);
    expect_header(21, 2, 5, 0, -EBADMSG, corrupt);  /* codec 5 */
    expect_header(21, 2, 7, 0, -EBADMSG, corrupt);  /* codec 7 */
    expect_header(57, 4, -1, 0, -EBADMSG, invalid); /* negative recordCount */
    expect_header(57, 4, INT32_MIN, 0, -EBADMSG, invalid);
    expect_header(57, 4, 2, 0, -EBADMSG, invalid);  /* count 2, lastOffsetDelta 0 */
    expect_header(23, 4, -5, 0, -EBADMSG, invalid); /* lastOffsetDelta < count - 1 */
    expect_header(23, 4, 3, 0, 0, 0);               /* a gap is fine when fetched... */
    expect_header(23, 4, 3, KP_BATCH_PRODUCE, -EBADMSG, invalid); /* ...not when produced */
    expect_header(21, 2, KP_ATTR_CONTROL | KP_ATTR_TRANSACTIONAL, KP_BATCH_PRODUCE, -EBADMSG,
                  invalid);
    expect_header(0, 8, INT64_MAX, 0, 0, 0); /* baseOffset + 0 still fits */

    /* recordCount 0 (an emptied batch) is fine when fetched, not when produced. */
    uint8_t b[sizeof(reference)];
    memcpy(b, reference, sizeof(b));
    put32(b + 57, 0);
    fix_crc(b, sizeof(b));
    struct kp_batch batch;
    struct kp_batch_err err;
    assert_int_equal(kp_batch_parse(b, sizeof(b), KP_BATCH_PRODUCE, &batch, &err), -EBADMSG);
    assert_int_equal(err.code, invalid);
    assert_int_equal(kp_batch_parse(b, sizeof(b), 0, &batch, &err), 0);
    /* ... but then the record bytes are left over. */
    assert_int_equal(kp_batch_validate_records(&batch, 0, CAP, &err), -EBADMSG);
    assert_int_equal(err.code, invalid);

    /* baseOffset + lastOffsetDelta must not overflow (found by the fuzzer). */
    put32(b + 23, (uint32_t)-1);
    memset(b, 0x80, 1);
    memset(b + 1, 0, 7);
    fix_crc(b, sizeof(b));
    assert_int_equal(kp_batch_parse(b, sizeof(b), 0, &batch, &err), -EBADMSG);
    assert_int_equal(err.code, KP_ERROR_CORRUPT_MESSAGE);

    /* A huge count with a matching lastOffsetDelta needs more bytes than there are. */
    put32(b + 57, INT32_MAX);
    put32(b + 23, INT32_MAX - 1);
    fix_crc(b, sizeof(b));
    assert_int_equal(kp_batch_parse(b, sizeof(b), 0, &batch, &err), -EBADMSG);
    assert_int_equal(err.code, invalid);
}

/* A compressed batch claiming INT32_MAX records ends quickly with "fewer records". */
static void test_huge_count_compressed(void **state)
{
    struct fixture f;
    fixture_init(&f);
    size_t len;
    uint8_t *b = build_fixture_batch(&f, KP_CODEC_LZ4, 4, &len);
    put32(b + 57, INT32_MAX);
    put32(b + 23, INT32_MAX - 1);
    fix_crc(b, len);
    struct kp_batch batch;
    struct kp_batch_err err;
    assert_int_equal(kp_batch_parse(b, len, 0, &batch, &err), 0);
    assert_int_equal(kp_batch_validate_records(&batch, 0, CAP, &err), -EBADMSG);
    assert_int_equal(err.code, KP_ERROR_INVALID_RECORD);
    assert_string_equal(err.why, "fewer records than recordCount");
    free(b);
    free(f.big);
}

/* Record bytes made by hand, one case per row; each must be refused with INVALID_RECORD. */
struct bad_case {
    const char *name;
    uint8_t bytes[40];
    size_t len;
    int32_t count;
};

static void test_malformed_records(void **state)
{
    /* Valid baseline: length 8: attr 0, ts 0, off 0, key null, value "hi", 0 headers. */
    static const uint8_t good[] = {0x10, 0, 0, 0, 0x01, 0x04, 'h', 'i', 0};
    size_t len;
    uint8_t *b = raw_batch(good, sizeof(good), 1, 0, &len);
    struct kp_batch batch;
    struct kp_batch_err err;
    assert_int_equal(kp_batch_parse(b, len, KP_BATCH_PRODUCE, &batch, &err), 0);
    assert_int_equal(kp_batch_validate_records(&batch, KP_BATCH_PRODUCE, CAP, &err), 0);
    free(b);

    static const struct bad_case cases[] = {
        {"negative record length", {0x01, 0, 0, 0, 0x01, 0x01, 0}, 7, 1},
        {"record length past the end", {0x20, 0, 0, 0, 0x01, 0x01, 0}, 7, 1},
        {"record length below minimum", {0x08, 0, 0, 0, 0x01, 0x01, 0}, 7, 1},
        {"record length INT32_MAX", {0xfe, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0x01, 0x01, 0}, 11, 1},
        {"key length -2", {0x0e, 0, 0, 0, 0x03, 0x01, 0, 0}, 8, 1},
        {"key longer than the record", {0x0e, 0, 0, 0, 0x14, 0x01, 0, 0}, 8, 1},
        {"value length huge", {0x12, 0, 0, 0, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0}, 11, 1},
        {"value length -3", {0x0c, 0, 0, 0, 0x01, 0x05, 0}, 7, 1},
        {"header count -1", {0x0c, 0, 0, 0, 0x01, 0x01, 0x01}, 7, 1},
        {"header count huge", {0x14, 0, 0, 0, 0x01, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f}, 11, 1},
        {"header key null", {0x10, 0, 0, 0, 0x01, 0x01, 0x02, 0x01, 0x01}, 9, 1},
        {"header value -2", {0x10, 0, 0, 0, 0x01, 0x01, 0x02, 0x00, 0x03}, 9, 1},
        {"header key past the record", {0x10, 0, 0, 0, 0x01, 0x01, 0x02, 0x08, 0x01}, 9, 1},
        {"overlong offsetDelta varint",
         {0x14, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01, 0x01, 0},
         12,
         1},
        {"overlong timestampDelta varlong",
         {0x24, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0x01, 0x01,
          0, 0, 0},
         19,
         1},
        {"overlong record length varint", {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0}, 8, 1},
        {"fields shorter than the length", {0x0e, 0, 0, 0, 0x01, 0x01, 0, 0}, 8, 1},
        {"bytes after the last record", {0x0c, 0, 0, 0, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0, 0}, 14, 1},
        {"fewer records than recordCount", {0x0c, 0, 0, 0, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0}, 13, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct bad_case *c = &cases[i];
        b = raw_batch(c->bytes, c->len, c->count, c->count - 1, &len);
        int rc = kp_batch_parse(b, len, 0, &batch, &err);
        if (rc == 0) {
            rc = kp_batch_validate_records(&batch, 0, CAP, &err);
        }
        if (rc != -EBADMSG || err.code != KP_ERROR_INVALID_RECORD) {
            fail_msg("case '%s': rc %d code %d why %s", c->name, rc, err.code,
                     err.why ? err.why : "(none)");
        }
        assert_non_null(err.why);
        free(b);
    }
}

/* Records with offset deltas (0, X, 4): hand-made, lastOffsetDelta 4, count 3. */
static int check_deltas(uint8_t d1, uint8_t d2, unsigned flags, int32_t lod)
{
    uint8_t recs[] = {0x0c, 0,    0, 0x00, 0x01, 0x01, 0,  0x0c, 0,    0, d1,
                      0x01, 0x01, 0, 0x0c, 0,    0,    d2, 0x01, 0x01, 0};
    size_t len;
    uint8_t *b = raw_batch(recs, sizeof(recs), 3, lod, &len);
    struct kp_batch batch;
    struct kp_batch_err err;
    int rc = kp_batch_parse(b, len, 0, &batch, &err);
    assert_int_equal(rc, 0);
    rc = kp_batch_validate_records(&batch, flags, CAP, &err);
    if (rc != 0) {
        assert_int_equal(err.code, KP_ERROR_INVALID_RECORD);
    }
    free(b);
    return rc;
}

static void test_offset_deltas(void **state)
{
    /* zigzag: 1 -> 0x02, 2 -> 0x04, 4 -> 0x08, -1 -> 0x01 */
    assert_int_equal(check_deltas(0x02, 0x04, KP_BATCH_PRODUCE, 2), 0);
    assert_int_equal(check_deltas(0x02, 0x04, 0, 2), 0);
    assert_int_equal(check_deltas(0x04, 0x08, 0, 4), 0); /* gaps after compaction */
    assert_int_equal(check_deltas(0x04, 0x08, KP_BATCH_PRODUCE, 4), -EBADMSG);
    assert_int_equal(check_deltas(0x00, 0x04, 0, 2), -EBADMSG); /* repeated delta */
    assert_int_equal(check_deltas(0x04, 0x02, 0, 2), -EBADMSG); /* decreasing */
    assert_int_equal(check_deltas(0x02, 0x08, 0, 2), -EBADMSG); /* past lastOffsetDelta */
    assert_int_equal(check_deltas(0x01, 0x04, 0, 2), -EBADMSG); /* negative */
    assert_int_equal(check_deltas(0x02, 0x04, KP_BATCH_PRODUCE, 3), -EBADMSG); /* lod mismatch */
}

static void test_in_place_edits(void **state)
{
    struct fixture f;
    fixture_init(&f);
    size_t len;
    uint8_t *b = build_fixture_batch(&f, KP_CODEC_SNAPPY, 10, &len);
    uint32_t crc = kp_crc32c(0, b + 17, 4);
    kp_batch_set_base_offset(b, 123456789012LL);
    kp_batch_set_leader_epoch(b, 9);
    assert_int_equal(kp_crc32c(0, b + 17, 4), crc); /* stored CRC untouched */
    struct kp_batch batch;
    struct kp_batch_err err;
    assert_int_equal(kp_batch_parse(b, len, KP_BATCH_PRODUCE, &batch, &err), 0);
    assert_int_equal(batch.base_offset, 123456789012LL);
    assert_int_equal(batch.partition_leader_epoch, 9);
    assert_int_equal(kp_batch_last_offset(&batch), 123456789012LL + 9);

    struct kp_record_iter it;
    struct kp_record r;
    assert_int_equal(kp_record_iter_init(&it, &batch, CAP, &err), 0);
    assert_int_equal(kp_record_iter_next(&it, &r, &err), 1);
    assert_int_equal(r.offset, 123456789012LL);
    assert_int_equal(r.timestamp, f.recs[0].timestamp);
    kp_record_iter_free(&it);

    /* LogAppendTime changes covered bytes: the CRC is recomputed and the batch still parses. */
    uint32_t before = batch.crc;
    assert_int_equal(kp_batch_set_log_append_time(b, len, 1800000000000LL), 0);
    assert_int_equal(kp_batch_parse(b, len, KP_BATCH_PRODUCE, &batch, &err), 0);
    assert_int_not_equal(batch.crc, before);
    assert_true(batch.attributes & KP_ATTR_LOG_APPEND_TIME);
    assert_int_equal(kp_batch_codec(&batch), KP_CODEC_SNAPPY);
    assert_int_equal(batch.max_timestamp, 1800000000000LL);
    assert_int_equal(batch.base_timestamp, f.recs[0].timestamp);
    assert_int_equal(kp_record_iter_init(&it, &batch, CAP, &err), 0);
    int n = 0;
    while (kp_record_iter_next(&it, &r, &err) == 1) {
        assert_int_equal(r.timestamp, 1800000000000LL);
        n++;
    }
    assert_int_equal(n, 10);
    kp_record_iter_free(&it);
    assert_int_equal(kp_batch_set_log_append_time(b, 60, 1), -EINVAL);
    assert_int_equal(kp_batch_set_log_append_time(b, len - 1, 1), -EINVAL);
    free(b);
    free(f.big);
}

static void test_control_batch(void **state)
{
    uint8_t *b;
    size_t len;
    assert_int_equal(
        kp_control_batch_build(500, 4242, 7, KP_CONTROL_COMMIT, 13, 1700000000000LL, &b, &len), 0);
    struct kp_batch batch;
    struct kp_batch_err err;
    assert_int_equal(kp_batch_parse(b, len, 0, &batch, &err), 0);
    assert_true(kp_batch_is_control(&batch));
    assert_true(kp_batch_is_transactional(&batch));
    assert_int_equal(kp_batch_codec(&batch), 0);
    assert_int_equal(batch.producer_id, 4242);
    assert_int_equal(batch.producer_epoch, 7);
    assert_int_equal(batch.base_sequence, -1);
    assert_int_equal(batch.record_count, 1);
    assert_int_equal(batch.base_offset, 500);
    struct kp_record_iter it;
    struct kp_record r;
    assert_int_equal(kp_record_iter_init(&it, &batch, CAP, &err), 0);
    assert_int_equal(kp_record_iter_next(&it, &r, &err), 1);
    int16_t type = -1;
    assert_int_equal(kp_control_record_type(&r, &type), 0);
    assert_int_equal(type, KP_CONTROL_COMMIT);
    static const uint8_t value[] = {0, 0, 0, 0, 0, 13};
    assert_int_equal(r.value.len, 6);
    assert_memory_equal(r.value.ptr, value, 6);
    assert_int_equal(kp_record_iter_next(&it, &r, &err), 0);
    kp_record_iter_free(&it);
    /* Producers may not send control batches. */
    assert_int_equal(kp_batch_parse(b, len, KP_BATCH_PRODUCE, &batch, &err), -EBADMSG);
    assert_int_equal(err.code, KP_ERROR_INVALID_RECORD);
    free(b);

    assert_int_equal(
        kp_control_batch_build(0, 1, 0, KP_CONTROL_ABORT, 0, 1700000000000LL, &b, &len), 0);
    assert_int_equal(kp_batch_parse(b, len, 0, &batch, &err), 0);
    assert_int_equal(kp_record_iter_init(&it, &batch, CAP, &err), 0);
    assert_int_equal(kp_record_iter_next(&it, &r, &err), 1);
    assert_int_equal(kp_control_record_type(&r, &type), 0);
    assert_int_equal(type, KP_CONTROL_ABORT);
    r.key.len = 3;
    assert_int_equal(kp_control_record_type(&r, &type), -EBADMSG);
    kp_record_iter_free(&it);
    free(b);
}

/* A compressed batch whose records expand past the cap fails at iteration start. */
static void test_decompression_cap(void **state)
{
    static uint8_t zeros[10000];
    struct kp_record_in recs[100];
    for (int i = 0; i < 100; i++) {
        recs[i] = (struct kp_record_in){
            .key = KP_BYTES_NULL, .value = {zeros, sizeof(zeros)}, .timestamp = 1};
    }
    for (int codec = 1; codec <= 4; codec++) {
        struct kp_batch_spec spec;
        kp_batch_spec_init(&spec);
        spec.attributes = (int16_t)codec;
        uint8_t *b;
        size_t len;
        assert_int_equal(kp_batch_build(&spec, recs, 100, &b, &len), 0);
        assert_true(len < 100000);
        struct kp_batch batch;
        struct kp_batch_err err;
        assert_int_equal(kp_batch_parse(b, len, KP_BATCH_PRODUCE, &batch, &err), 0);
        struct kp_record_iter it;
        assert_int_equal(kp_record_iter_init(&it, &batch, 64 * 1024, &err), -EFBIG);
        assert_int_equal(err.code, KP_ERROR_CORRUPT_MESSAGE);
        assert_int_equal(kp_batch_validate_records(&batch, 0, 64 * 1024, &err), -EFBIG);
        assert_int_equal(kp_batch_validate_records(&batch, 0, 2 << 20, &err), 0);
        /* Corrupt compressed bytes (CRC fixed): CORRUPT_MESSAGE, not a crash. */
        memset(b + KP_BATCH_HEADER_SIZE, 0x5a, len - KP_BATCH_HEADER_SIZE);
        fix_crc(b, len);
        assert_int_equal(kp_batch_parse(b, len, 0, &batch, &err), 0);
        int rc = kp_batch_validate_records(&batch, 0, 2 << 20, &err);
        assert_true(rc < 0);
        assert_true(err.code == KP_ERROR_CORRUPT_MESSAGE || err.code == KP_ERROR_INVALID_RECORD);
        free(b);
    }
}

static uint64_t rng = 0xfeedfacecafebeefull;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* Random byte flips (CRC skipped) through parse + iterate + headers: no crash, no overrun. */
static void test_random_corruption(void **state)
{
    struct fixture f;
    fixture_init(&f);
    for (int codec = 0; codec <= 4; codec++) {
        size_t len;
        uint8_t *orig = build_fixture_batch(&f, codec, 8, &len);
        for (int round = 0; round < 400; round++) {
            uint8_t *b = malloc(len);
            memcpy(b, orig, len);
            int flips = 1 + (int)(rnd() % 3);
            for (int i = 0; i < flips; i++) {
                size_t at = round % 2 ? KP_BATCH_HEADER_SIZE + rnd() % (len - KP_BATCH_HEADER_SIZE)
                                      : rnd() % len;
                b[at] ^= (uint8_t)(1 + rnd() % 255);
            }
            struct kp_batch batch;
            struct kp_batch_err err;
            if (kp_batch_parse(b, len, KP_BATCH_SKIP_CRC, &batch, &err) == 0) {
                struct kp_record_iter it;
                struct kp_record r;
                if (kp_record_iter_init(&it, &batch, 1 << 20, &err) == 0) {
                    int n = 0;
                    while (kp_record_iter_next(&it, &r, &err) == 1) {
                        struct kp_header_iter hi;
                        struct kp_header h;
                        kp_header_iter_init(&hi, &r);
                        while (kp_header_next(&hi, &h) == 1) {
                            assert_true(h.key.len >= 0);
                        }
                        n++;
                    }
                    assert_true(n <= batch.record_count);
                    kp_record_iter_free(&it);
                }
            } else {
                assert_non_null(err.why);
                assert_true(err.code == KP_ERROR_CORRUPT_MESSAGE ||
                            err.code == KP_ERROR_INVALID_RECORD);
            }
            free(b);
        }
        free(orig);
    }
    free(f.big);
}

/*
 * Real clients' batches: every Produce frame listed in tests/golden/frames/MANIFEST.tsv (captured
 * by the golden-frames tooling) holds batches that parse with Kafka's producer rules and whose
 * records all decode. Batches are found by scanning for a header that parses with a valid CRC,
 * so this test does not depend on the generated Produce decoder.
 */
static void test_real_client_batches(void **state)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/golden/frames/MANIFEST.tsv", RUNNEL_SOURCE_DIR);
    FILE *manifest = fopen(path, "r");
    if (manifest == NULL) {
        skip();
    }
    char line[1024];
    int per_codec[5] = {0};
    int frames = 0;
    while (fgets(line, sizeof(line), manifest) != NULL) {
        char client[64], file[512];
        int api_key;
        if (line[0] == '#' ||
            sscanf(line, "%63[^\t]\t%511[^\t]\t%d", client, file, &api_key) != 3 || api_key != 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/tests/golden/frames/%s", RUNNEL_SOURCE_DIR, file);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        int found = 0;
        for (size_t off = 0; off + KP_BATCH_HEADER_SIZE <= n; off++) {
            struct kp_batch b;
            struct kp_batch_err err;
            if (buf[off + 16] != KP_BATCH_MAGIC_V2 ||
                kp_batch_parse(buf + off, n - off, KP_BATCH_PRODUCE, &b, &err) != 0) {
                continue;
            }
            if (kp_batch_validate_records(&b, KP_BATCH_PRODUCE, CAP, &err) != 0) {
                fail_msg("%s: batch at %zu: %s", file, off, err.why);
            }
            per_codec[kp_batch_codec(&b)]++;
            found++;
            off += b.len - 1;
        }
        if (found == 0) {
            fail_msg("%s: no record batch found", file);
        }
        frames++;
    }
    fclose(manifest);
    if (frames == 0) {
        skip();
    }
    for (int codec = 0; codec <= 4; codec++) {
        assert_true(per_codec[codec] > 0);
    }
}

int run_test_records(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_bytes),
        cmocka_unit_test(test_build_parse_each_codec),
        cmocka_unit_test(test_builder_rejects),
        cmocka_unit_test(test_concatenated_and_partial_tail),
        cmocka_unit_test(test_records_truncated_every_byte),
        cmocka_unit_test(test_bad_crc),
        cmocka_unit_test(test_bad_header_fields),
        cmocka_unit_test(test_huge_count_compressed),
        cmocka_unit_test(test_malformed_records),
        cmocka_unit_test(test_offset_deltas),
        cmocka_unit_test(test_in_place_edits),
        cmocka_unit_test(test_control_batch),
        cmocka_unit_test(test_decompression_cap),
        cmocka_unit_test(test_random_corruption),
        cmocka_unit_test(test_real_client_batches),
    };
    return cmocka_run_group_tests_name("records", tests, NULL, NULL);
}
