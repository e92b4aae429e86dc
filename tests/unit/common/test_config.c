/* Unit tests for common/src/config.c: precedence, parsing, errors. */
#include "test_util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runnel/common/config.h"

static char *listen_addr;
static int64_t flush_ms;
static bool verbose;

static const struct rn_setting settings[] = {
    {"listen", RN_SETTING_STRING, "127.0.0.1:9092", "address", &listen_addr, 0, 0},
    {"flush.interval.ms", RN_SETTING_INT, "250", "flush age", &flush_ms, 1, 60000},
    {"verbose", RN_SETTING_BOOL, "false", "chatty", &verbose, 0, 0},
    {NULL, 0, NULL, NULL, NULL, 0, 0},
};
static const struct rn_command_spec spec = {"test", "A test command.", settings};

static int load(int argc, char **argv)
{
    return rn_config_load(&spec, argc, argv, NULL, 0, NULL);
}

static void test_defaults(void **state)
{
    char *argv[] = {"test"};
    assert_int_equal(load(1, argv), 0);
    assert_string_equal(listen_addr, "127.0.0.1:9092");
    assert_int_equal(flush_ms, 250);
    assert_false(verbose);
    rn_config_free(&spec);
}

static void test_precedence(void **state)
{
    char path[] = "/tmp/runnel-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "# comment\nflush.interval.ms = 100\nlisten = 0.0.0.0:1\nverbose=yes\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    setenv("RUNNEL_FLUSH_INTERVAL_MS", "200", 1);
    char *argv[] = {"test", "--config", path, "--listen=1.2.3.4:5"};
    assert_int_equal(load(4, argv), 0);
    assert_string_equal(listen_addr, "1.2.3.4:5"); /* flag beats file */
    assert_int_equal(flush_ms, 200);               /* env beats file */
    assert_true(verbose);                          /* file beats default */

    char *argv2[] = {"test", "--config", path, "--flush-interval-ms", "7", "--verbose"};
    assert_int_equal(load(6, argv2), 0);
    assert_int_equal(flush_ms, 7); /* flag (dashed form) beats env */
    unsetenv("RUNNEL_FLUSH_INTERVAL_MS");
    rn_config_free(&spec);
    unlink(path);
}

static void test_errors(void **state)
{
    char *bad_int[] = {"test", "--flush.interval.ms", "abc"};
    assert_int_equal(load(3, bad_int), -EINVAL);
    char *range[] = {"test", "--flush.interval.ms=0"};
    assert_int_equal(load(2, range), -EINVAL);
    char *unknown[] = {"test", "--no-such-thing", "1"};
    assert_int_equal(load(3, unknown), -EINVAL);
    char *missing[] = {"test", "--listen"};
    assert_int_equal(load(2, missing), -EINVAL);
    char *stray[] = {"test", "stray"};
    assert_int_equal(load(2, stray), -EINVAL);
    char *file[] = {"test", "--config", "/nonexistent/runnel.conf"};
    assert_int_equal(load(3, file), -EINVAL);
    rn_config_free(&spec);
}

static void test_suffix_and_positional(void **state)
{
    char *argv[] = {"test", "--flush.interval.ms", "1k", "one", "two"};
    const char *pos[2];
    int n = 0;
    assert_int_equal(rn_config_load(&spec, 5, argv, pos, 2, &n), 0);
    assert_int_equal(flush_ms, 1024);
    assert_int_equal(n, 2);
    assert_string_equal(pos[1], "two");
    rn_config_free(&spec);
}

static void test_hostport(void **state)
{
    char host[64];
    int port;
    assert_int_equal(rn_parse_hostport("127.0.0.1:9092", host, sizeof(host), &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9092);
    assert_int_equal(rn_parse_hostport("[::1]:80", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(rn_parse_hostport(":9", host, sizeof(host), &port), 0);
    assert_true(rn_host_is_wildcard(host));
    assert_true(rn_host_is_wildcard("0.0.0.0"));
    assert_true(rn_host_is_wildcard("::"));
    assert_false(rn_host_is_wildcard("127.0.0.1"));
    assert_false(rn_host_is_wildcard("::1"));
    assert_string_equal(host, "");
    assert_int_equal(rn_parse_hostport("nohost", host, sizeof(host), &port), -EINVAL);
    assert_int_equal(rn_parse_hostport("h:70000", host, sizeof(host), &port), -EINVAL);
    assert_int_equal(rn_parse_hostport("h:", host, sizeof(host), &port), -EINVAL);
}

int run_test_config(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults), cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_errors),   cmocka_unit_test(test_suffix_and_positional),
        cmocka_unit_test(test_hostport),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
