/*
 * Cross-check of the generated codec against an independent encoder: every request and response
 * class kafka-python defines (168 (message, version) pairs, non-flexible versions; 7 where
 * kafka-python's schema is wrong are listed and left out), encoded by kafka-python with every field
 * set (crosscheck_cases.inc, written by crosscheck_gen.py), must decode with the generated codec at
 * the same api key and version, consume every byte, and re-encode to the same bytes.
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_messages.h"

struct cc_case {
    const char *name;    /* kafka-python class name */
    int16_t key;         /* api key */
    int16_t version;     /* api version */
    bool response;       /* response (else request) */
    const uint8_t *data; /* kafka-python's encoding of the body */
    size_t len;          /* bytes in data */
};

#include "crosscheck_cases.inc"

static int check_one(const struct cc_case *c)
{
    const struct kp_api *api = kp_api_find(c->key);
    if (api == NULL) {
        print_error("%s: api key %d unknown\n", c->name, c->key);
        return 1;
    }
    if (c->version < api->min_version || c->version > api->max_version) {
        return 0; /* removed from Kafka's definitions (e.g. Produce v0-2 in Kafka 4) */
    }
    const struct kp_message_ops *ops = c->response ? api->response : api->request;
    struct kp_arena a;
    struct kp_reader r;
    int failures = 0;
    uint8_t *copy = malloc(c->len);
    memcpy(copy, c->data, c->len); /* exact-size copy so ASan sees over-reads */
    kp_arena_init(&a, 0);
    void *m = kp_arena_alloc(&a, ops->struct_size);
    kp_reader_init(&r, copy, c->len);
    int rc = ops->decode(&r, c->version, &a, m);
    if (rc != 0 || kp_reader_remaining(&r) != 0) {
        print_error("%s: decode rc %d (%s), %zu of %zu bytes left\n", c->name, rc,
                    r.why ? r.why : "", kp_reader_remaining(&r), c->len);
        failures++;
        goto out;
    }
    size_t n = 0;
    if (ops->size(m, c->version, &n) != 0 || n != c->len) {
        print_error("%s: size %zu, expected %zu\n", c->name, n, c->len);
        failures++;
        goto out;
    }
    uint8_t *buf = malloc(n);
    struct kp_writer w;
    kp_writer_init(&w, buf, n);
    if (ops->encode(m, c->version, &w) != 0 || memcmp(buf, c->data, n) != 0) {
        print_error("%s: re-encoding differs\n", c->name);
        failures++;
    }
    free(buf);
out:
    free(copy);
    kp_arena_free(&a);
    return failures;
}

static void test_kafka_python_encodings(void **state)
{
    (void)state;
    int failures = 0;
    size_t checked = 0;
    for (size_t i = 0; i < sizeof(cc_cases) / sizeof(cc_cases[0]); i++) {
        const struct kp_api *api = kp_api_find(cc_cases[i].key);
        if (api != NULL && cc_cases[i].version < api->min_version) {
            continue; /* removed from Kafka's definitions (e.g. Produce v0-2 in Kafka 4) */
        }
        failures += check_one(&cc_cases[i]);
        checked++;
    }
    print_message("cross-check: %zu kafka-python encodings\n", checked);
    assert_true(checked >= 160);
    assert_int_equal(failures, 0);
}

static void test_kafka_python_values(void **state)
{
    (void)state;
    /* FindCoordinator (GroupCoordinator) response v0: error 1, node 2, host "s3", port 4 --
     * kafka-python's counter order. */
    for (size_t i = 0; i < sizeof(cc_cases) / sizeof(cc_cases[0]); i++) {
        const struct cc_case *c = &cc_cases[i];
        if (c->key != 10 || c->version != 0 || !c->response) {
            continue;
        }
        struct kp_arena a;
        struct kp_reader r;
        struct kp_find_coordinator_response m;
        kp_arena_init(&a, 0);
        kp_reader_init(&r, c->data, c->len);
        assert_int_equal(kp_find_coordinator_response_decode(&r, 0, &a, &m), 0);
        assert_int_equal(m.error_code, 1);
        assert_int_equal(m.node_id, 2);
        assert_true(kp_str_eq_cstr(m.host, "s3"));
        assert_int_equal(m.port, 4);
        kp_arena_free(&a);
        return;
    }
    fail_msg("no FindCoordinator v0 response in the cases");
}

int run_test_crosscheck(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kafka_python_encodings),
        cmocka_unit_test(test_kafka_python_values),
    };
    return cmocka_run_group_tests_name("crosscheck", tests, NULL, NULL);
}
