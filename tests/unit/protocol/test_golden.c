/*
 * Golden bytes: request frames captured from real clients (kcat and confluent-kafka-python on
 * librdkafka 2.0.2, kafka-python 2.0.2, kafkajs 2.2.4, @platformatic/kafka 1.35.0; see
 * tests/golden/capture/README.md) must split as frames, decode with the request header parser
 * and the generated codec at their version, and re-encode to exactly the same bytes. Every
 * truncation of every frame must be an error, never a crash or an out-of-bounds read (each cut
 * is copied into a buffer of exactly its size for the sanitizer).
 */
#include "test_util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "golden_util.h"
#include "kp_messages.h"
#include "runnel/protocol/codec.h"
#include "runnel/protocol/frame.h"
#include "runnel/protocol/mem.h"

#define ARENA_LIMIT (64u << 20)

static int16_t be16(const uint8_t *p)
{
    return (int16_t)(((unsigned)p[0] << 8) | p[1]);
}

/*
 * Decodes one frame body (header + message) from `buf`. Returns 0 with *api, *msg and *hdr set, or
 * a negative value with *why describing the failure.
 */
static int decode_frame(const uint8_t *buf, size_t len, struct kp_arena *a,
                        struct kp_request_header *hdr, const struct kp_api **api, void **msg,
                        const char **why)
{
    struct kp_reader r;
    kp_reader_init(&r, buf, len);
    int rc = kp_request_header_parse(&r, a, hdr);
    if (rc != 0) {
        *why = r.why != NULL ? r.why : "header parse failed";
        return rc < 0 ? rc : -1;
    }
    if (len < 4) {
        *why = "header parsed from fewer than 4 bytes";
        return -1;
    }
    *api = kp_api_find(be16(buf));
    if (*api == NULL) {
        *why = "unknown api key";
        return -1;
    }
    const struct kp_message_ops *ops = (*api)->request;
    *msg = kp_arena_alloc(a, ops->struct_size);
    if (*msg == NULL) {
        *why = "arena";
        return -1;
    }
    ops->init(*msg);
    rc = ops->decode(&r, be16(buf + 2), a, *msg);
    if (rc != 0) {
        *why = r.why != NULL ? r.why : "decode failed";
        return rc < 0 ? rc : -1;
    }
    if (kp_reader_remaining(&r) != 0) {
        *why = "bytes left after the message";
        return -1;
    }
    return 0;
}

/* Re-encodes size + header + body; returns a malloc'd buffer or NULL with *why set. */
static uint8_t *encode_frame(const struct kp_request_header *hdr, const struct kp_api *api,
                             int16_t version, const void *msg, size_t *out_len, const char **why)
{
    int16_t hv = kp_request_header_version(api->key, version);
    size_t hsize = 0;
    size_t bsize = 0;
    if (kp_request_header_size(hdr, hv, &hsize) != 0 ||
        api->request->size(msg, version, &bsize) != 0) {
        *why = "size failed";
        return NULL;
    }
    size_t total = 4 + hsize + bsize;
    uint8_t *out = malloc(total);
    assert_non_null(out);
    struct kp_writer w;
    kp_writer_init(&w, out, total);
    kp_write_i32(&w, (int32_t)(hsize + bsize));
    if (kp_request_header_encode(hdr, hv, &w) != 0 || api->request->encode(msg, version, &w) != 0 ||
        w.err != 0 || kp_writer_len(&w) != total) {
        free(out);
        *why = "encode failed or wrote a different size than computed";
        return NULL;
    }
    *out_len = total;
    return out;
}

static void test_golden_round_trip(void **state)
{
    (void)state;
    struct golden_set set;
    assert_int_equal(golden_load(&set), 0);
    assert_true(set.count >= 25);
    struct kp_arena a;
    kp_arena_init(&a, ARENA_LIMIT);
    int failures = 0;
    for (size_t i = 0; i < set.count; i++) {
        const struct golden_frame *g = &set.frames[i];
        kp_arena_reset(&a);
        struct kp_bytes frame;
        const char *why = NULL;
        ssize_t used = kp_frame_split(g->data, g->len, KP_MAX_FRAME_DEFAULT, &frame, &why);
        if (used != (ssize_t)g->len || frame.ptr != g->data + 4 ||
            frame.len != (int32_t)(g->len - 4)) {
            fprintf(stderr, "golden %s: frame split gave %zd\n", g->file, used);
            failures++;
            continue;
        }
        assert_true(frame.len >= 4);
        if (be16(frame.ptr) != g->api_key || be16(frame.ptr + 2) != g->api_version) {
            fprintf(stderr, "golden %s: manifest key/version differ from the frame\n", g->file);
            failures++;
            continue;
        }
        struct kp_request_header hdr;
        const struct kp_api *api = NULL;
        void *msg = NULL;
        if (decode_frame(frame.ptr, (size_t)frame.len, &a, &hdr, &api, &msg, &why) != 0) {
            fprintf(stderr, "golden %s: decode failed: %s\n", g->file, why);
            failures++;
            continue;
        }
        if (g->api_version < api->min_version || g->api_version > api->max_version) {
            fprintf(stderr, "golden %s: version outside the codec's range\n", g->file);
            failures++;
            continue;
        }
        size_t out_len = 0;
        uint8_t *out = encode_frame(&hdr, api, g->api_version, msg, &out_len, &why);
        if (out == NULL) {
            fprintf(stderr, "golden %s: %s\n", g->file, why);
            failures++;
            continue;
        }
        if (out_len != g->len || memcmp(out, g->data, g->len) != 0) {
            size_t at = 0;
            while (at < out_len && at < g->len && out[at] == g->data[at]) {
                at++;
            }
            fprintf(stderr,
                    "golden %s: re-encoded %zu bytes, captured %zu; first difference at %zu\n",
                    g->file, out_len, g->len, at);
            failures++;
        }
        free(out);
    }
    kp_arena_free(&a);
    golden_free(&set);
    assert_int_equal(failures, 0);
}

static void test_golden_truncated(void **state)
{
    (void)state;
    struct golden_set set;
    assert_int_equal(golden_load(&set), 0);
    struct kp_arena a;
    kp_arena_init(&a, ARENA_LIMIT);
    int failures = 0;
    for (size_t i = 0; i < set.count; i++) {
        const struct golden_frame *g = &set.frames[i];
        /* A frame cut short is "need more bytes" to the splitter. */
        for (size_t cut = 0; cut < g->len; cut += (cut < 8 ? 1 : 97)) {
            uint8_t *t = malloc(cut > 0 ? cut : 1);
            assert_non_null(t);
            memcpy(t, g->data, cut);
            struct kp_bytes frame;
            const char *why = NULL;
            assert_int_equal(kp_frame_split(t, cut, KP_MAX_FRAME_DEFAULT, &frame, &why), 0);
            free(t);
        }
        /* Every strict prefix of the body fails to decode. */
        const uint8_t *body = g->data + 4;
        size_t body_len = g->len - 4;
        for (size_t cut = 0; cut < body_len; cut++) {
            uint8_t *t = malloc(cut > 0 ? cut : 1);
            assert_non_null(t);
            memcpy(t, body, cut);
            kp_arena_reset(&a);
            struct kp_request_header hdr;
            const struct kp_api *api = NULL;
            void *msg = NULL;
            const char *why = NULL;
            if (decode_frame(t, cut, &a, &hdr, &api, &msg, &why) == 0) {
                fprintf(stderr, "golden %s: decoded from the first %zu of %zu bytes\n", g->file,
                        cut, body_len);
                failures++;
            }
            free(t);
        }
    }
    kp_arena_free(&a);
    golden_free(&set);
    assert_int_equal(failures, 0);
}

/* Client id prefix each client puts in its request headers. */
static const char *client_id_prefix(const char *client)
{
    if (strcmp(client, "kcat") == 0 || strcmp(client, "confluent") == 0) {
        return "rdkafka";
    }
    if (strcmp(client, "kafka-python") == 0) {
        return "kafka-python-";
    }
    if (strcmp(client, "kafkajs") == 0) {
        return "golden-kafkajs";
    }
    return "golden-platformatic";
}

/* Checks a decoded Produce request against the manifest note ("topic=T codec=C records=N ..."). */
static void check_produce(const struct golden_frame *g, const struct kp_produce_request *m,
                          const uint8_t *frame, size_t frame_len)
{
    char topic[128];
    const char *t = strstr(g->note, "topic=");
    assert_non_null(t);
    assert_int_equal(sscanf(t, "topic=%127s", topic), 1);
    assert_true(m->topic_data_count >= 1);
    if (!kp_str_eq_cstr(m->topic_data[0].name, topic)) {
        fail_msg("%s: decoded topic %.*s, manifest says %s", g->file,
                 (int)m->topic_data[0].name.len, m->topic_data[0].name.ptr, topic);
    }
    assert_true(m->acks == 0 || m->acks == 1 || m->acks == -1);
    assert_int_equal(m->acks == 0, strstr(g->note, "acks=0") != NULL);
    /* A transactional producer names its transactional id; the others send null. */
    assert_int_equal(m->transactional_id.len >= 0, strstr(g->note, "transactional") != NULL);
    assert_true(m->topic_data[0].partition_data_count >= 1);
    struct kp_bytes rec = m->topic_data[0].partition_data[0].records;
    /* Records are a view into the frame, never a copy, and hold a v2 batch. */
    assert_true(rec.len > 61);
    assert_true(rec.ptr >= frame && rec.ptr + rec.len <= frame + frame_len);
    assert_int_equal(rec.ptr[16], 2);
}

/* Decoded header and body values agree with the manifest and the capture drivers. */
static void test_golden_decoded_values(void **state)
{
    (void)state;
    struct golden_set set;
    assert_int_equal(golden_load(&set), 0);
    struct kp_arena a;
    kp_arena_init(&a, ARENA_LIMIT);
    int produce = 0;
    for (size_t i = 0; i < set.count; i++) {
        const struct golden_frame *g = &set.frames[i];
        kp_arena_reset(&a);
        struct kp_request_header hdr;
        const struct kp_api *api = NULL;
        void *msg = NULL;
        const char *why = NULL;
        if (decode_frame(g->data + 4, g->len - 4, &a, &hdr, &api, &msg, &why) != 0) {
            fail_msg("golden %s: decode failed: %s", g->file, why);
        }
        assert_int_equal(hdr.request_api_key, g->api_key);
        assert_int_equal(hdr.request_api_version, g->api_version);
        assert_int_equal(api->key, g->api_key);
        const char *prefix = client_id_prefix(g->client);
        size_t plen = strlen(prefix);
        if (hdr.client_id.len < (int32_t)plen || memcmp(hdr.client_id.ptr, prefix, plen) != 0) {
            fail_msg("golden %s: client id %.*s", g->file, (int)hdr.client_id.len,
                     hdr.client_id.ptr != NULL ? hdr.client_id.ptr : "");
        }
        /* None of these clients sends tagged fields this codec does not know. */
        assert_int_equal(hdr.unknown_tagged_fields.count, 0);
        if (g->api_key == 0) {
            check_produce(g, msg, g->data + 4, g->len - 4);
            produce++;
        }
    }
    assert_true(produce >= 20);
    kp_arena_free(&a);
    golden_free(&set);
}

/* The set covers every client, each with several API keys. */
static void test_golden_coverage(void **state)
{
    (void)state;
    static const char *clients[] = {"kcat", "confluent", "kafka-python", "kafkajs", "platformatic"};
    struct golden_set set;
    assert_int_equal(golden_load(&set), 0);
    for (size_t c = 0; c < sizeof(clients) / sizeof(clients[0]); c++) {
        bool keys[128] = {false};
        int frames = 0;
        int distinct = 0;
        for (size_t i = 0; i < set.count; i++) {
            const struct golden_frame *g = &set.frames[i];
            if (strcmp(g->client, clients[c]) != 0) {
                continue;
            }
            frames++;
            assert_true(g->api_key >= 0 && g->api_key < 128);
            if (!keys[g->api_key]) {
                keys[g->api_key] = true;
                distinct++;
            }
        }
        if (frames < 10 || distinct < 8) {
            fail_msg("client %s: only %d frames over %d api keys", clients[c], frames, distinct);
        }
    }
    golden_free(&set);
}

int run_test_golden(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_coverage),
        cmocka_unit_test(test_golden_round_trip),
        cmocka_unit_test(test_golden_decoded_values),
        cmocka_unit_test(test_golden_truncated),
    };
    return cmocka_run_group_tests_name("golden", tests, NULL, NULL);
}
