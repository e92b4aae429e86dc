/*
 * Record batches produced by real clients (librdkafka via kcat and confluent-kafka-python,
 * kafka-python, kafkajs, @platformatic/kafka) with every codec they support: each golden Produce
 * frame's records are validated (magic, CRC-32C, lengths, producer rules), decompressed and
 * iterated with runnel/protocol/records.h, and every record must carry the payload the capture
 * drivers sent: key "k<i>" and value "v<i>-<codec>:" followed by "0123456789abcdef" x 8, with i
 * consecutive and the count, codec and idempotent/transactional flags given in the manifest.
 *
 * The Produce body is walked here with the codec.h primitives (not the generated codec), so this
 * test checks the record layer on its own.
 */
#include "test_util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden_util.h"
#include "runnel/protocol/codec.h"
#include "runnel/protocol/compress.h"
#include "runnel/protocol/records.h"

#define GOLDEN_PAD                                                                                 \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"                             \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define MAX_DECOMPRESSED (16u << 20)
#define MAX_PARTS 16

/* Codecs each client must have contributed at least one Produce frame for. */
static const struct {
    const char *client;
    const char *codecs[6];
} expected_codecs[] = {
    {"kcat", {"none", "gzip", "snappy", "lz4", "zstd", NULL}},
    {"confluent", {"none", "gzip", "snappy", "lz4", "zstd", NULL}},
    {"kafka-python", {"none", "gzip", "snappy", "lz4", "zstd", NULL}},
    {"kafkajs", {"none", "gzip", NULL}},
    {"platformatic", {"none", "gzip", "snappy", "lz4", NULL}},
};

struct part_records {
    struct kp_bytes records;
};

static void skip_tags(struct kp_reader *r)
{
    uint32_t n = kp_read_uvarint(r);
    for (uint32_t i = 0; i < n && r->err == 0; i++) {
        (void)kp_read_uvarint(r);
        uint32_t size = kp_read_uvarint(r);
        (void)kp_read_raw(r, size);
    }
}

/*
 * Walks a Produce request frame (v3..v12) to each partition's records. Returns the number of
 * partitions (<= MAX_PARTS) or -1.
 */
static int produce_records(const uint8_t *frame, size_t len, struct part_records *out)
{
    struct kp_reader r;
    kp_reader_init(&r, frame, len);
    int32_t size = kp_read_i32(&r);
    int16_t key = kp_read_i16(&r);
    int16_t ver = kp_read_i16(&r);
    (void)kp_read_i32(&r); /* correlation id */
    struct kp_str client_id;
    kp_read_string(&r, false, &client_id);
    if (r.err != 0 || size != (int32_t)(len - 4) || key != 0 || ver < 3 || ver > 12) {
        return -1;
    }
    bool flex = ver >= 9;
    if (flex) {
        skip_tags(&r);
    }
    struct kp_str txn_id;
    kp_read_string(&r, flex, &txn_id);
    (void)kp_read_i16(&r); /* acks */
    (void)kp_read_i32(&r); /* timeout */
    int n = 0;
    int32_t topics = kp_read_array_len(&r, flex, 2);
    for (int32_t t = 0; t < topics && r.err == 0; t++) {
        struct kp_str name;
        kp_read_string(&r, flex, &name);
        int32_t parts = kp_read_array_len(&r, flex, 5);
        for (int32_t p = 0; p < parts && r.err == 0; p++) {
            (void)kp_read_i32(&r); /* partition index */
            if (n == MAX_PARTS) {
                return -1;
            }
            kp_read_bytes(&r, flex, &out[n].records);
            n++;
            if (flex) {
                skip_tags(&r);
            }
        }
        if (flex) {
            skip_tags(&r);
        }
    }
    if (flex) {
        skip_tags(&r);
    }
    if (r.err != 0 || kp_reader_remaining(&r) != 0) {
        return -1;
    }
    return n;
}

/* What the manifest note says about one partition's records. */
struct note_part {
    char codec[16];
    int records;
    bool idempotent;
    bool transactional;
};

/* Parses "topic=T codec=C records=N [idempotent] [transactional]; ..." Returns parts or -1. */
static int parse_note(const char *note, struct note_part *out)
{
    int n = 0;
    const char *p = note;
    while (*p != '\0' && n < MAX_PARTS) {
        const char *end = strstr(p, "; ");
        size_t plen = end != NULL ? (size_t)(end - p) : strlen(p);
        char part[256];
        if (plen >= sizeof(part)) {
            return -1;
        }
        memcpy(part, p, plen);
        part[plen] = '\0';
        struct note_part *np = &out[n];
        memset(np, 0, sizeof(*np));
        const char *c = strstr(part, "codec=");
        const char *k = strstr(part, "records=");
        if (c == NULL || k == NULL || sscanf(c, "codec=%15s", np->codec) != 1 ||
            sscanf(k, "records=%d", &np->records) != 1) {
            return -1;
        }
        np->idempotent = strstr(part, "idempotent") != NULL;
        np->transactional = strstr(part, "transactional") != NULL;
        n++;
        p += plen + (end != NULL ? 2 : 0);
    }
    return n;
}

/* Checks one record against the drivers' payload rule; *next is the expected index (or -1). */
static void check_record(const struct golden_frame *g, const struct kp_record *rec,
                         const char *codec, int *next)
{
    char key[32];
    assert_true(rec->key.len > 1 && rec->key.len < (int32_t)sizeof(key));
    memcpy(key, rec->key.ptr, (size_t)rec->key.len);
    key[rec->key.len] = '\0';
    int i = -1;
    char extra;
    if (sscanf(key, "k%d%c", &i, &extra) != 1) {
        fail_msg("%s: unexpected key %s", g->file, key);
    }
    if (*next >= 0 && i != *next) {
        fail_msg("%s: key k%d where k%d was expected", g->file, i, *next);
    }
    *next = i + 1;
    char want[256];
    int wl = snprintf(want, sizeof(want), "v%d-%s:%s", i, codec, GOLDEN_PAD);
    assert_true(wl > 0 && (size_t)wl < sizeof(want));
    if (rec->value.len != wl || memcmp(rec->value.ptr, want, (size_t)wl) != 0) {
        fail_msg("%s: record %s has the wrong value (%d bytes)", g->file, key, rec->value.len);
    }
}

/* Validates and iterates one partition's batches; returns the number of records seen. */
static int check_partition(const struct golden_frame *g, struct kp_bytes records,
                           const struct note_part *np)
{
    assert_true(records.len > 0);
    struct kp_batch_iter it;
    kp_batch_iter_init(&it, records.ptr, (size_t)records.len, KP_BATCH_PRODUCE);
    struct kp_batch b;
    struct kp_batch_err err;
    int total = 0;
    int next = -1;
    int rc;
    while ((rc = kp_batch_iter_next(&it, &b, &err)) == 1) {
        assert_int_equal(b.magic, 2);
        if (strcmp(kp_codec_name(kp_batch_codec(&b)), np->codec) != 0) {
            fail_msg("%s: batch codec %s, manifest says %s", g->file,
                     kp_codec_name(kp_batch_codec(&b)), np->codec);
        }
        assert_int_equal(kp_batch_is_transactional(&b), np->transactional);
        assert_int_equal(b.producer_id >= 0, np->idempotent || np->transactional);
        assert_false(kp_batch_is_control(&b));
        rc = kp_batch_validate_records(&b, KP_BATCH_PRODUCE, MAX_DECOMPRESSED, &err);
        if (rc != 0) {
            fail_msg("%s: batch invalid: %s", g->file, err.why);
        }
        struct kp_record_iter ri;
        rc = kp_record_iter_init(&ri, &b, MAX_DECOMPRESSED, &err);
        if (rc != 0) {
            fail_msg("%s: cannot iterate: %s", g->file, err.why);
        }
        struct kp_record rec;
        int in_batch = 0;
        while ((rc = kp_record_iter_next(&ri, &rec, &err)) == 1) {
            assert_int_equal(rec.offset_delta, in_batch);
            check_record(g, &rec, np->codec, &next);
            in_batch++;
        }
        kp_record_iter_free(&ri);
        if (rc != 0) {
            fail_msg("%s: record iteration failed: %s", g->file, err.why);
        }
        assert_int_equal(in_batch, b.record_count);
        total += in_batch;
    }
    if (rc != 0) {
        fail_msg("%s: batch walk failed: %s", g->file, err.why);
    }
    return total;
}

static void test_golden_produce_batches(void **state)
{
    (void)state;
    struct golden_set set;
    assert_int_equal(golden_load(&set), 0);
    int produce_frames = 0;
    bool seen[sizeof(expected_codecs) / sizeof(expected_codecs[0])][6];
    memset(seen, 0, sizeof(seen));
    for (size_t i = 0; i < set.count; i++) {
        const struct golden_frame *g = &set.frames[i];
        if (g->api_key != 0) {
            continue;
        }
        produce_frames++;
        struct part_records parts[MAX_PARTS];
        struct note_part notes[MAX_PARTS];
        int np = produce_records(g->data, g->len, parts);
        int nn = parse_note(g->note, notes);
        if (np <= 0 || np != nn) {
            fail_msg("%s: %d partitions, %d in the manifest note", g->file, np, nn);
        }
        for (int p = 0; p < np; p++) {
            int got = check_partition(g, parts[p].records, &notes[p]);
            if (got != notes[p].records) {
                fail_msg("%s: %d records, manifest says %d", g->file, got, notes[p].records);
            }
            for (size_t c = 0; c < sizeof(expected_codecs) / sizeof(expected_codecs[0]); c++) {
                if (strcmp(expected_codecs[c].client, g->client) != 0) {
                    continue;
                }
                for (int k = 0; expected_codecs[c].codecs[k] != NULL; k++) {
                    if (strcmp(expected_codecs[c].codecs[k], notes[p].codec) == 0) {
                        seen[c][k] = true;
                    }
                }
            }
        }
    }
    for (size_t c = 0; c < sizeof(expected_codecs) / sizeof(expected_codecs[0]); c++) {
        for (int k = 0; expected_codecs[c].codecs[k] != NULL; k++) {
            if (!seen[c][k]) {
                fail_msg("no %s Produce frame from %s", expected_codecs[c].codecs[k],
                         expected_codecs[c].client);
            }
        }
    }
    assert_true(produce_frames >= 20);
    golden_free(&set);
}

/* Any flipped bit in the CRC-covered part of a real client's batch must be refused. */
static void test_golden_batches_corrupted(void **state)
{
    (void)state;
    struct golden_set set;
    assert_int_equal(golden_load(&set), 0);
    int checked = 0;
    for (size_t i = 0; i < set.count; i++) {
        const struct golden_frame *g = &set.frames[i];
        if (g->api_key != 0) {
            continue;
        }
        struct part_records parts[MAX_PARTS];
        int np = produce_records(g->data, g->len, parts);
        assert_true(np > 0);
        struct kp_batch b;
        struct kp_batch_err err;
        size_t len = (size_t)parts[0].records.len;
        assert_int_equal(kp_batch_parse(parts[0].records.ptr, len, 0, &b, &err), 0);
        uint8_t *copy = malloc(b.len);
        assert_non_null(copy);
        /* Every 7th byte of the covered region, and the stored CRC itself. */
        for (size_t at = KP_BATCH_CRC_START - 4; at < b.len;
             at += (at < KP_BATCH_CRC_START ? 1 : 7)) {
            memcpy(copy, b.ptr, b.len);
            copy[at] ^= 0x10;
            struct kp_batch bad;
            if (kp_batch_parse(copy, b.len, 0, &bad, &err) == 0) {
                fail_msg("%s: flipping byte %zu of the batch went unnoticed", g->file, at);
            }
            assert_non_null(err.why);
            checked++;
        }
        /* Truncation anywhere inside the batch is an error too, never a crash. */
        for (size_t cut = 0; cut < b.len; cut++) {
            uint8_t *t = malloc(cut > 0 ? cut : 1);
            assert_non_null(t);
            memcpy(t, b.ptr, cut);
            struct kp_batch bad;
            assert_true(kp_batch_parse(t, cut, 0, &bad, &err) < 0);
            free(t);
        }
        free(copy);
    }
    assert_true(checked > 0);
    golden_free(&set);
}

int run_test_golden_batches(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_produce_batches),
        cmocka_unit_test(test_golden_batches_corrupted),
    };
    return cmocka_run_group_tests_name("golden_batches", tests, NULL, NULL);
}
