/* Unit tests for common/src/log.c: levels, logfmt and JSON output. */
#include "test_util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "runnel/common/log.h"

static int fds[2];

static void capture_start(void)
{
    assert_int_equal(pipe(fds), 0);
    rn_log_set_fd(fds[1]);
}

/* Returns what was logged since capture_start(). */
static void capture_end(char *out, size_t cap)
{
    rn_log_set_fd(-1);
    close(fds[1]);
    ssize_t n = read(fds[0], out, cap - 1);
    close(fds[0]);
    out[n < 0 ? 0 : n] = '\0';
}

static void test_logfmt(void **state)
{
    char buf[4096];
    assert_int_equal(rn_log_configure("info", "logfmt"), 0);
    capture_start();
    rn_log(RN_LOG_INFO, "listening", "addr=%s port=9092", "127.0.0.1");
    capture_end(buf, sizeof(buf));
    assert_non_null(strstr(buf, " level=info event=listening addr=127.0.0.1 port=9092\n"));
    assert_int_equal(strncmp(buf, "ts=", 3), 0);
    capture_start();
    rn_log(RN_LOG_DEBUG, "hidden", "x=%s", "1");
    capture_end(buf, sizeof(buf));
    assert_string_equal(buf, "");
}

static void test_json(void **state)
{
    char buf[4096];
    assert_int_equal(rn_log_configure("debug", "json"), 0);
    capture_start();
    rn_log(RN_LOG_WARN, "slow", "msg=\"%s\" n=3", "a \\\"b\\\" c");
    capture_end(buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"level\":\"warn\",\"event\":\"slow\""));
    assert_non_null(strstr(buf, "\"msg\":\"a \\\"b\\\" c\""));
    assert_non_null(strstr(buf, "\"n\":\"3\"}\n"));
    assert_int_equal(rn_log_configure("info", "logfmt"), 0);
}

static void test_bad_settings(void **state)
{
    assert_int_equal(rn_log_configure("loud", NULL), -EINVAL);
    assert_int_equal(rn_log_configure(NULL, "xml"), -EINVAL);
    assert_true(rn_log_enabled(RN_LOG_ERROR));
}

int run_test_log(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logfmt),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_bad_settings),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
