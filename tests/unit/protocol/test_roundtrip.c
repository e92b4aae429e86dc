/*
 * Generated-codec round trips: every message (Kafka's and Runnel's own RPC) at every version,
 * filled by protocol/generated/kp_roundtrip_cases.inc with a non-default value in every field
 * that exists in that version (and, in a second pass, nulls wherever the version allows them,
 * plus one unknown tagged field per struct in flexible versions). Each is encoded, its size
 * checked against the bytes written, decoded, re-encoded and compared byte for byte; every
 * strict prefix of every encoding must fail to decode (in an exact-size heap copy, so the
 * sanitizer build catches any out-of-bounds read). Also: the ignorable rule, nullability and
 * tagged fields in non-flexible versions on encode, and arena limits on decode.
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_messages.h"
#include "kp_rpc.h"

struct rt_case {
    const struct kp_message_ops *ops; /* the message's codec */
    int16_t min_version;              /* first version to test */
    int16_t max_version;              /* last version to test */
    void (*fill)(void *m, int16_t version, struct kp_arena *a, int pass);
};

static const uint8_t rt_data[] = {0xde, 0xad, 0xbe};

static void rt_uuid(struct kp_uuid *u)
{
    for (size_t i = 0; i < sizeof(u->b); i++) {
        u->b[i] = (uint8_t)(i + 1);
    }
}

static struct kp_bytes rt_bytes(void)
{
    return (struct kp_bytes){rt_data, (int32_t)sizeof(rt_data)};
}

static void rt_unknown_tag(struct kp_tagged_fields *t, struct kp_arena *a)
{
    t->v = kp_arena_calloc(a, 1, sizeof(*t->v));
    t->count = 1;
    t->v[0].tag = 1000; /* above every known tag, so it is written last */
    t->v[0].data = (struct kp_bytes){rt_data, 2};
}

#include "kp_roundtrip_cases.inc"

#define RT_NCASES (sizeof(rt_cases) / sizeof(rt_cases[0]))

/* Encodes `m` into a fresh heap buffer of exactly its size; NULL (and a message) on failure. */
static uint8_t *rt_encode(const struct kp_message_ops *ops, const void *m, int16_t v, size_t *len)
{
    size_t size = 0;
    int rc = ops->size(m, v, &size);
    if (rc != 0) {
        print_error("%s v%d: size failed: %d\n", ops->name, v, rc);
        return NULL;
    }
    uint8_t *buf = malloc(size > 0 ? size : 1);
    struct kp_writer w;
    kp_writer_init(&w, buf, size);
    rc = ops->encode(m, v, &w);
    if (rc != 0 || kp_writer_len(&w) != size) {
        print_error("%s v%d: encode rc %d, wrote %zu of size %zu\n", ops->name, v, rc,
                    kp_writer_len(&w), size);
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}

/* One (message, version, pass): returns the number of failures. */
static int rt_one(const struct rt_case *c, int16_t v, int pass, bool truncate)
{
    const struct kp_message_ops *ops = c->ops;
    struct kp_arena a;
    int failures = 0;
    uint8_t *b1 = NULL;
    uint8_t *b2 = NULL;
    size_t n1 = 0;
    size_t n2 = 0;

    kp_arena_init(&a, 0);
    void *m = kp_arena_alloc(&a, ops->struct_size);
    c->fill(m, v, &a, pass);
    b1 = rt_encode(ops, m, v, &n1);
    if (b1 == NULL) {
        failures++;
        goto out;
    }
    void *m2 = kp_arena_alloc(&a, ops->struct_size);
    struct kp_reader r;
    kp_reader_init(&r, b1, n1);
    int rc = ops->decode(&r, v, &a, m2);
    if (rc != 0 || kp_reader_remaining(&r) != 0) {
        print_error("%s v%d pass %d: decode rc %d (%s), %zu bytes left\n", ops->name, v, pass, rc,
                    r.why ? r.why : "", kp_reader_remaining(&r));
        failures++;
        goto out;
    }
    b2 = rt_encode(ops, m2, v, &n2);
    if (b2 == NULL || n1 != n2 || memcmp(b1, b2, n1) != 0) {
        print_error("%s v%d pass %d: re-encoding differs (%zu vs %zu bytes)\n", ops->name, v, pass,
                    n1, n2);
        failures++;
        goto out;
    }
    if (truncate) {
        for (size_t cut = 0; cut < n1; cut++) {
            uint8_t *p = malloc(cut > 0 ? cut : 1);
            memcpy(p, b1, cut);
            struct kp_arena ta;
            kp_arena_init(&ta, 1 << 20);
            void *m3 = kp_arena_alloc(&ta, ops->struct_size);
            kp_reader_init(&r, p, cut);
            rc = ops->decode(&r, v, &ta, m3);
            kp_arena_free(&ta);
            free(p);
            if (rc == 0) {
                print_error("%s v%d pass %d: %zu-byte prefix of %zu decoded\n", ops->name, v, pass,
                            cut, n1);
                failures++;
                break;
            }
        }
    }
out:
    free(b1);
    free(b2);
    kp_arena_free(&a);
    return failures;
}

static void test_every_message_every_version(void **state)
{
    (void)state;
    int failures = 0;
    size_t pairs = 0;
    for (size_t i = 0; i < RT_NCASES; i++) {
        for (int16_t v = rt_cases[i].min_version; v <= rt_cases[i].max_version; v++) {
            failures += rt_one(&rt_cases[i], v, 0, false);
            failures += rt_one(&rt_cases[i], v, 1, false);
            pairs++;
        }
    }
    print_message("round trip: %zu messages, %zu (message, version) pairs, 2 passes each\n",
                  RT_NCASES, pairs);
    assert_true(pairs >= 700);
    assert_int_equal(failures, 0);
}

static void test_every_prefix_fails(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < RT_NCASES; i++) {
        for (int16_t v = rt_cases[i].min_version; v <= rt_cases[i].max_version; v++) {
            failures += rt_one(&rt_cases[i], v, 0, true);
            failures += rt_one(&rt_cases[i], v, 1, true);
        }
    }
    assert_int_equal(failures, 0);
}

/* Encodes into a scratch buffer; returns encode's result (size must agree). */
static int try_encode(const struct kp_message_ops *ops, const void *m, int16_t v)
{
    uint8_t buf[4096];
    size_t size = 0;
    int rc_size = ops->size(m, v, &size);
    struct kp_writer w;
    kp_writer_init(&w, buf, sizeof(buf));
    int rc = ops->encode(m, v, &w);
    assert_int_equal(rc, rc_size);
    if (rc == 0) {
        assert_int_equal(kp_writer_len(&w), size);
    }
    return rc;
}

static void test_non_ignorable_field_refused_in_old_version(void **state)
{
    (void)state;
    struct kp_metadata_request m;
    kp_metadata_request_init(&m);
    assert_true(m.allow_auto_topic_creation); /* default true */
    assert_int_equal(try_encode(&kp_metadata_request_ops, &m, 3), 0);
    m.allow_auto_topic_creation = false; /* v4+, not ignorable */
    assert_int_equal(try_encode(&kp_metadata_request_ops, &m, 3), -EINVAL);
    assert_int_equal(try_encode(&kp_metadata_request_ops, &m, 4), 0);
}

static void test_ignorable_field_dropped_in_old_version(void **state)
{
    (void)state;
    struct kp_join_group_request m;
    kp_join_group_request_init(&m);
    assert_int_equal(m.rebalance_timeout_ms, -1);
    m.group_id = kp_str_from("g");
    m.rebalance_timeout_ms = 5000; /* v1+, ignorable */
    assert_int_equal(try_encode(&kp_join_group_request_ops, &m, 0), 0);

    uint8_t buf[256];
    struct kp_writer w;
    kp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(kp_join_group_request_encode(&m, 0, &w), 0);
    struct kp_reader r;
    struct kp_join_group_request back;
    struct kp_arena a;
    kp_arena_init(&a, 0);
    kp_reader_init(&r, buf, kp_writer_len(&w));
    assert_int_equal(kp_join_group_request_decode(&r, 0, &a, &back), 0);
    assert_int_equal(back.rebalance_timeout_ms, -1); /* not on the wire in v0 */
    assert_true(kp_str_eq_cstr(back.group_id, "g"));
    kp_arena_free(&a);
}

static void test_null_and_tags_rules(void **state)
{
    (void)state;
    struct kp_join_group_request m;
    kp_join_group_request_init(&m);
    m.group_instance_id = KP_STR_NULL; /* nullable 5+, absent before: default null is fine */
    assert_int_equal(try_encode(&kp_join_group_request_ops, &m, 5), 0);
    m.group_id = KP_STR_NULL; /* never nullable */
    assert_int_equal(try_encode(&kp_join_group_request_ops, &m, 5), -EINVAL);
    m.group_id = kp_str_from("g");

    struct kp_tagged_field tf = {7, {rt_data, 1}};
    m.unknown_tagged_fields.v = &tf;
    m.unknown_tagged_fields.count = 1;
    assert_int_equal(try_encode(&kp_join_group_request_ops, &m, 5), -EINVAL); /* not flexible */
    assert_int_equal(try_encode(&kp_join_group_request_ops, &m, 6), 0);       /* flexible */

    m.protocols_count = 2; /* count without elements */
    m.protocols = NULL;
    assert_int_equal(try_encode(&kp_join_group_request_ops, &m, 6), -EINVAL);
    m.protocols_count = -1; /* null array, not nullable */
    assert_int_equal(try_encode(&kp_join_group_request_ops, &m, 6), -EINVAL);
    m.protocols_count = 0;
    assert_int_equal(try_encode(&kp_join_group_request_ops, &m, 99), -EINVAL);
}

static void test_decode_refuses_huge_counts_and_bad_versions(void **state)
{
    (void)state;
    /* Metadata v1: topics array count 0x7fffffff with 4 bytes behind it. */
    const uint8_t huge[] = {0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    struct kp_metadata_request m;
    struct kp_arena a;
    struct kp_reader r;
    kp_arena_init(&a, 1024);
    kp_reader_init(&r, huge, sizeof(huge));
    assert_int_equal(kp_metadata_request_decode(&r, 1, &a, &m), KP_ERR_SHORT);
    assert_true(a.used == 0); /* nothing allocated for an unverified count */

    /* Negative count other than -1. */
    const uint8_t neg[] = {0xff, 0xff, 0xff, 0xfe};
    kp_reader_init(&r, neg, sizeof(neg));
    assert_int_equal(kp_metadata_request_decode(&r, 1, &a, &m), KP_ERR_INVALID);

    /* Null topics is allowed from v1 (nullableVersions 1+) but not in v0. */
    const uint8_t null_topics[] = {0xff, 0xff, 0xff, 0xff};
    kp_reader_init(&r, null_topics, sizeof(null_topics));
    assert_int_equal(kp_metadata_request_decode(&r, 1, &a, &m), 0);
    assert_int_equal(m.topics_count, -1);
    kp_reader_init(&r, null_topics, sizeof(null_topics));
    assert_int_equal(kp_metadata_request_decode(&r, 0, &a, &m), KP_ERR_INVALID);

    kp_reader_init(&r, null_topics, sizeof(null_topics));
    assert_int_equal(kp_metadata_request_decode(&r, 200, &a, &m), KP_ERR_INVALID);

    /* Arena limit: two topics fit the input but not a 1-byte arena. */
    struct kp_arena tiny;
    kp_arena_init(&tiny, 1);
    const uint8_t two[] = {0, 0, 0, 2, 0, 1, 'a', 0, 1, 'b'};
    kp_reader_init(&r, two, sizeof(two));
    assert_int_equal(kp_metadata_request_decode(&r, 1, &tiny, &m), KP_ERR_NOMEM);
    kp_arena_free(&tiny);
    kp_arena_free(&a);
}

static void test_unknown_tags_survive(void **state)
{
    (void)state;
    /* ApiVersions request v3: client name "c", version "1", tags: {5: "xyz"}, {9: ""}. */
    const uint8_t in[] = {2, 'c', 2, '1', 2, 5, 3, 'x', 'y', 'z', 9, 0};
    struct kp_api_versions_request m;
    struct kp_arena a;
    struct kp_reader r;
    kp_arena_init(&a, 0);
    kp_reader_init(&r, in, sizeof(in));
    assert_int_equal(kp_api_versions_request_decode(&r, 3, &a, &m), 0);
    assert_int_equal(m.unknown_tagged_fields.count, 2);
    assert_int_equal(m.unknown_tagged_fields.v[0].tag, 5);
    assert_int_equal(m.unknown_tagged_fields.v[0].data.len, 3);
    uint8_t out[64];
    struct kp_writer w;
    kp_writer_init(&w, out, sizeof(out));
    assert_int_equal(kp_api_versions_request_encode(&m, 3, &w), 0);
    assert_int_equal(kp_writer_len(&w), sizeof(in));
    assert_memory_equal(out, in, sizeof(in));
    kp_arena_free(&a);
}

static void test_api_table_and_header_versions(void **state)
{
    (void)state;
    const struct kp_api *p = kp_api_find(0);
    assert_non_null(p);
    assert_string_equal(p->name, "Produce");
    assert_ptr_equal(p->request, &kp_produce_request_ops);
    assert_ptr_equal(p->response, &kp_produce_response_ops);
    assert_int_equal(p->flexible_min, 9);
    assert_null(kp_api_find(-1));
    assert_null(kp_api_find(999));
    assert_true(kp_api_count() >= 80);
    for (size_t i = 1; i < kp_api_count(); i++) {
        assert_true(kp_api_at(i - 1)->key < kp_api_at(i)->key);
    }
    assert_null(kp_api_at(kp_api_count()));
    assert_int_equal(kp_request_header_version(0, 8), 1);
    assert_int_equal(kp_request_header_version(0, 9), 2);
    assert_int_equal(kp_request_header_version(7, 0), 0);
    assert_int_equal(kp_request_header_version(18, 3), 2);
    assert_int_equal(kp_response_header_version(18, 3), 0);
    assert_int_equal(kp_response_header_version(18, 4), 0);
    assert_int_equal(kp_response_header_version(1, 12), 1);
    assert_int_equal(kp_response_header_version(1, 11), 0);
    assert_int_equal(kp_response_header_version(3, 9), 1);
    /* Own RPC table: whatever protocol/spec holds, every entry resolves. */
    for (size_t i = 0; i < kp_rpc_api_count(); i++) {
        assert_ptr_equal(kp_rpc_api_find(kp_rpc_api_at(i)->key), kp_rpc_api_at(i));
    }
}

int run_test_roundtrip(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_message_every_version),
        cmocka_unit_test(test_every_prefix_fails),
        cmocka_unit_test(test_non_ignorable_field_refused_in_old_version),
        cmocka_unit_test(test_ignorable_field_dropped_in_old_version),
        cmocka_unit_test(test_null_and_tags_rules),
        cmocka_unit_test(test_decode_refuses_huge_counts_and_bad_versions),
        cmocka_unit_test(test_unknown_tags_survive),
        cmocka_unit_test(test_api_table_and_header_versions),
    };
    return cmocka_run_group_tests_name("roundtrip", tests, NULL, NULL);
}
