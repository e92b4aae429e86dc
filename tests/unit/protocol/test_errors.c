/* Unit tests for protocol/src/errors.c: the Kafka error-code table. */
#include "test_util.h"

#include <string.h>

#include "runnel/protocol/errors.h"

static void test_known_codes(void **state)
{
    const struct kp_error_info *e = kp_error_info(35);
    assert_non_null(e);
    assert_int_equal(e->code, KP_ERROR_UNSUPPORTED_VERSION);
    assert_string_equal(e->name, "UNSUPPORTED_VERSION");
    assert_false(e->retriable);

    assert_string_equal(kp_error_name(45), "OUT_OF_ORDER_SEQUENCE_NUMBER");
    assert_string_equal(kp_error_name(87), "INVALID_RECORD");
    assert_string_equal(kp_error_name(-1), "UNKNOWN_SERVER_ERROR");
    assert_string_equal(kp_error_name(0), "NONE");
    assert_string_equal(kp_error_name(2), "CORRUPT_MESSAGE");
    assert_string_equal(kp_error_name(120), "TRANSACTION_ABORTABLE");
    assert_int_equal(KP_ERROR_CORRUPT_MESSAGE, 2);
    assert_int_equal(KP_ERROR_NOT_LEADER_OR_FOLLOWER, 6);
    assert_int_equal(KP_ERROR_UNKNOWN_TOPIC_ID, 100);

    /* Retriable flags clients depend on. */
    assert_true(kp_error_retriable(KP_ERROR_NOT_LEADER_OR_FOLLOWER));
    assert_true(kp_error_retriable(KP_ERROR_COORDINATOR_LOAD_IN_PROGRESS));
    assert_true(kp_error_retriable(KP_ERROR_CONCURRENT_TRANSACTIONS));
    assert_true(kp_error_retriable(KP_ERROR_CORRUPT_MESSAGE));
    assert_false(kp_error_retriable(KP_ERROR_INVALID_RECORD));
    assert_false(kp_error_retriable(KP_ERROR_NONE));
    assert_false(kp_error_retriable(KP_ERROR_PRODUCER_FENCED));
}

static void test_unknown_codes(void **state)
{
    assert_null(kp_error_info(-2));
    assert_null(kp_error_info(KP_ERROR_MAX_CODE + 1));
    assert_null(kp_error_info(INT16_MAX));
    assert_null(kp_error_info(INT16_MIN));
    assert_string_equal(kp_error_name(9999), "UNKNOWN_ERROR_CODE");
    assert_false(kp_error_retriable(9999));
}

/* The table is sorted, gap-free from -1 to KP_ERROR_MAX_CODE, and every entry is complete. */
static void test_table_sorted_unique(void **state)
{
    size_t n = kp_error_count();
    assert_int_equal(n, KP_ERROR_MAX_CODE + 2);
    for (size_t i = 0; i < n; i++) {
        const struct kp_error_info *e = kp_error_at(i);
        assert_non_null(e);
        assert_int_equal(e->code, (int)i - 1);
        assert_ptr_equal(kp_error_info(e->code), e);
        assert_non_null(e->name);
        assert_true(strlen(e->name) > 0);
        assert_non_null(e->message);
        assert_true(strlen(e->message) > 0);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(kp_error_at(j)->name, e->name);
        }
    }
    assert_null(kp_error_at(n));
}

int run_test_errors(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_codes),
        cmocka_unit_test(test_unknown_codes),
        cmocka_unit_test(test_table_sorted_unique),
    };
    return cmocka_run_group_tests_name("errors", tests, NULL, NULL);
}
