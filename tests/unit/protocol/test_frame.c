/*
 * Tests for protocol/src/frame.c: frame splitting (need-more, exact, back-to-back, negative and
 * oversized sizes), request header parsing at v0/v1/v2 and on truncated input, and the
 * ApiVersions reply for supported and unsupported versions.
 */
#include "test_util.h"

#include <errno.h>
#include <string.h>

#include "runnel/protocol/frame.h"

static void test_split_needs_more(void **state)
{
    (void)state;
    const uint8_t buf[] = {0, 0, 0, 3, 'a', 'b', 'c'};
    struct kp_bytes frame = {NULL, 0};
    const char *why = NULL;
    for (size_t len = 0; len < sizeof(buf); len++) {
        assert_int_equal(kp_frame_split(buf, len, 0, &frame, &why), 0);
    }
    assert_int_equal(kp_frame_split(buf, sizeof(buf), 0, &frame, &why), 7);
    assert_ptr_equal(frame.ptr, buf + 4);
    assert_int_equal(frame.len, 3);
    assert_null(why);
}

static void test_split_back_to_back_and_empty(void **state)
{
    (void)state;
    const uint8_t buf[] = {0, 0, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 2, 'y'};
    struct kp_bytes frame;
    size_t pos = 0;
    ssize_t n = kp_frame_split(buf + pos, sizeof(buf) - pos, 0, &frame, NULL);
    assert_int_equal(n, 5);
    assert_int_equal(frame.ptr[0], 'x');
    pos += (size_t)n;
    n = kp_frame_split(buf + pos, sizeof(buf) - pos, 0, &frame, NULL);
    assert_int_equal(n, 4); /* zero-length payload */
    assert_int_equal(frame.len, 0);
    pos += (size_t)n;
    n = kp_frame_split(buf + pos, sizeof(buf) - pos, 0, &frame, NULL);
    assert_int_equal(n, 0); /* 2 announced, 1 present */
}

static void test_split_rejects_bad_sizes(void **state)
{
    (void)state;
    struct kp_bytes frame;
    const char *why = NULL;
    const uint8_t neg[] = {0xff, 0xff, 0xff, 0xfe};
    assert_int_equal(kp_frame_split(neg, sizeof(neg), 0, &frame, &why), -EBADMSG);
    assert_non_null(why);
    why = NULL;
    const uint8_t big[] = {0x06, 0x40, 0x00, 0x01}; /* 100 MiB + 1 */
    assert_int_equal(kp_frame_split(big, sizeof(big), 0, &frame, &why), -EMSGSIZE);
    assert_non_null(why);
    const uint8_t at_max[] = {0x06, 0x40, 0x00, 0x00}; /* exactly 100 MiB: wait for it */
    assert_int_equal(kp_frame_split(at_max, sizeof(at_max), 0, &frame, &why), 0);
    const uint8_t small[] = {0, 0, 0, 11};
    assert_int_equal(kp_frame_split(small, sizeof(small), 10, &frame, &why), -EMSGSIZE);
    assert_int_equal(kp_frame_split(small, sizeof(small), 11, &frame, &why), 0);
}

static void test_header_v1(void **state)
{
    (void)state;
    /* Produce v3: key 0, version 3, correlation 7, client id "ab", then the body. */
    const uint8_t in[] = {0, 0, 0, 3, 0, 0, 0, 7, 0, 2, 'a', 'b', 0xee};
    struct kp_arena a;
    struct kp_reader r;
    struct kp_request_header h;
    kp_arena_init(&a, 0);
    kp_reader_init(&r, in, sizeof(in));
    assert_int_equal(kp_request_header_parse(&r, &a, &h), 0);
    assert_int_equal(h.request_api_key, 0);
    assert_int_equal(h.request_api_version, 3);
    assert_int_equal(h.correlation_id, 7);
    assert_true(kp_str_eq_cstr(h.client_id, "ab"));
    assert_int_equal(kp_reader_remaining(&r), 1); /* at the body */
    kp_arena_free(&a);
}

static void test_header_v2_and_null_client(void **state)
{
    (void)state;
    /* Metadata v12 (flexible): client id null (int16 -1, never compact), tags {3: "z"}. */
    const uint8_t in[] = {0, 3, 0, 12, 0, 0, 1, 0, 0xff, 0xff, 1, 3, 1, 'z', 0xaa};
    struct kp_arena a;
    struct kp_reader r;
    struct kp_request_header h;
    kp_arena_init(&a, 0);
    kp_reader_init(&r, in, sizeof(in));
    assert_int_equal(kp_request_header_parse(&r, &a, &h), 0);
    assert_int_equal(h.correlation_id, 256);
    assert_int_equal(h.client_id.len, -1);
    assert_int_equal(h.unknown_tagged_fields.count, 1);
    assert_int_equal(h.unknown_tagged_fields.v[0].tag, 3);
    assert_int_equal(kp_reader_remaining(&r), 1);

    /* The same bytes as Metadata v8 (not flexible, header v1): no tag section is read. */
    uint8_t v11[sizeof(in)];
    memcpy(v11, in, sizeof(in));
    v11[3] = 8;
    kp_reader_init(&r, v11, sizeof(v11));
    assert_int_equal(kp_request_header_parse(&r, &a, &h), 0);
    assert_int_equal(kp_reader_remaining(&r), 5);
    kp_arena_free(&a);
}

static void test_header_v0_and_unknown_key(void **state)
{
    (void)state;
    /* ControlledShutdown v0: header v0 has no client id. */
    const uint8_t cs[] = {0, 7, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1};
    struct kp_arena a;
    struct kp_reader r;
    struct kp_request_header h;
    kp_arena_init(&a, 0);
    kp_reader_init(&r, cs, sizeof(cs));
    assert_int_equal(kp_request_header_parse(&r, &a, &h), 0);
    assert_int_equal(h.correlation_id, 9);
    assert_int_equal(kp_reader_remaining(&r), 4);

    /* Unknown api key 999: header v1 is still parsed so the caller can answer. */
    const uint8_t unk[] = {0x03, 0xe7, 0, 1, 0, 0, 0, 5, 0, 0};
    kp_reader_init(&r, unk, sizeof(unk));
    assert_int_equal(kp_request_header_parse(&r, &a, &h), 0);
    assert_int_equal(h.request_api_key, 999);
    assert_int_equal(h.client_id.len, 0);
    kp_arena_free(&a);
}

static void test_header_truncated(void **state)
{
    (void)state;
    const uint8_t in[] = {0, 3, 0, 12, 0, 0, 1, 0, 0, 2, 'a', 'b', 0};
    struct kp_arena a;
    struct kp_reader r;
    struct kp_request_header h;
    kp_arena_init(&a, 0);
    for (size_t cut = 0; cut < sizeof(in); cut++) {
        kp_reader_init(&r, in, cut);
        assert_int_not_equal(kp_request_header_parse(&r, &a, &h), 0);
        assert_non_null(r.why);
    }
    kp_reader_init(&r, in, sizeof(in));
    assert_int_equal(kp_request_header_parse(&r, &a, &h), 0);
    kp_arena_free(&a);
}

static const struct kp_api_range served[] = {
    {0, 3, 11},
    {1, 4, 17},
    {3, 0, 12},
    {18, 0, 4},
};

/* Decodes a reply: checks the correlation id, returns the body decoded at `version`. */
static void decode_reply(struct kp_bytes out, int16_t version, struct kp_arena *a,
                         struct kp_api_versions_response *m)
{
    struct kp_reader r;
    kp_reader_init(&r, out.ptr, (size_t)out.len);
    assert_int_equal(kp_read_i32(&r), 42); /* header v0: the correlation id only */
    assert_int_equal(kp_api_versions_response_decode(&r, version, a, m), 0);
    assert_int_equal(kp_reader_remaining(&r), 0);
}

static void test_api_versions_supported(void **state)
{
    (void)state;
    struct kp_arena a;
    struct kp_bytes out;
    struct kp_api_versions_response m;
    kp_arena_init(&a, 0);
    assert_int_equal(kp_api_versions_reply(42, 3, 0, served, 4, &a, &out), 0);
    decode_reply(out, 3, &a, &m);
    assert_int_equal(m.error_code, 0);
    assert_int_equal(m.api_keys_count, 4);
    assert_int_equal(m.api_keys[1].api_key, 1);
    assert_int_equal(m.api_keys[1].min_version, 4);
    assert_int_equal(m.api_keys[1].max_version, 17);
    /* v3 is flexible: compact array (4 + 1) right after the error code. */
    assert_int_equal(out.ptr[6], 5);
    kp_arena_free(&a);
}

static void test_api_versions_unsupported_gets_v0_body(void **state)
{
    (void)state;
    struct kp_arena a;
    struct kp_bytes out;
    struct kp_api_versions_response m;
    kp_arena_init(&a, 0);
    const int16_t bad[] = {5, 127, -1};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kp_api_versions_reply(42, bad[i], 0, served, 4, &a, &out), 0);
        decode_reply(out, 0, &a, &m);
        assert_int_equal(m.error_code, 35);
        assert_int_equal(m.api_keys_count, 4);
        /* 4 (correlation) + 2 (error) + 4 (array) + 4 * 6 bytes per entry. */
        assert_int_equal(out.len, 4 + 2 + 4 + 4 * 6);
    }
    /* Serving ApiVersions only up to v2 makes v3 unsupported. */
    const struct kp_api_range narrow[] = {{18, 0, 2}};
    assert_int_equal(kp_api_versions_reply(42, 3, 0, narrow, 1, &a, &out), 0);
    decode_reply(out, 0, &a, &m);
    assert_int_equal(m.error_code, 35);
    assert_int_equal(kp_api_versions_reply(42, 2, 0, narrow, 1, &a, &out), 0);
    decode_reply(out, 2, &a, &m);
    assert_int_equal(m.error_code, 0);
    kp_arena_free(&a);
}

static void test_api_versions_arena_limit(void **state)
{
    (void)state;
    struct kp_arena a;
    struct kp_bytes out;
    kp_arena_init(&a, 16);
    assert_int_equal(kp_api_versions_reply(42, 3, 0, served, 4, &a, &out), -ENOMEM);
    kp_arena_free(&a);
}

int run_test_frame(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_needs_more),
        cmocka_unit_test(test_split_back_to_back_and_empty),
        cmocka_unit_test(test_split_rejects_bad_sizes),
        cmocka_unit_test(test_header_v1),
        cmocka_unit_test(test_header_v2_and_null_client),
        cmocka_unit_test(test_header_v0_and_unknown_key),
        cmocka_unit_test(test_header_truncated),
        cmocka_unit_test(test_api_versions_supported),
        cmocka_unit_test(test_api_versions_unsupported_gets_v0_body),
        cmocka_unit_test(test_api_versions_arena_limit),
    };
    return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
