/* Unit tests for common/src/metrics.c: declarations, series, updates and the exact Prometheus
 * text the registry renders. */
#include "test_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/common/metrics.h"

static char *render(struct rn_metrics *r)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(rn_metrics_render(r, &out, &len), 0);
    assert_int_equal(strlen(out), len);
    return out;
}

static void test_counter_gauge_text(void **state)
{
    struct rn_metrics *r = rn_metrics_new();
    struct rn_metric_family *c =
        rn_metrics_counter(r, "runnel_things_total", "Things done.", "kind,zone");
    struct rn_metric_family *g = rn_metrics_gauge(r, "runnel_level", "A level.", NULL);
    struct rn_metric_family *unused = rn_metrics_gauge(r, "runnel_unused", "No series.", NULL);
    assert_non_null(c);
    assert_non_null(g);
    assert_non_null(unused);
    struct rn_metric *a = rn_metric_get2(c, "a", "z1");
    struct rn_metric *b = rn_metric_get2(c, "b\"q\\\n", "z2");
    assert_ptr_equal(rn_metric_get2(c, "a", "z1"), a);
    rn_counter_add(a, 3);
    rn_counter_add(a, 4);
    rn_counter_add(b, 1);
    struct rn_metric *lv = rn_metric_get0(g);
    rn_gauge_set(lv, 10);
    rn_gauge_add(lv, -15);
    assert_int_equal(rn_metric_value(a), 7);
    assert_int_equal(rn_metric_value(lv), -5);
    char *out = render(r);
    assert_string_equal(out, "# HELP runnel_things_total Things done.\n"
                             "# TYPE runnel_things_total counter\n"
                             "runnel_things_total{kind=\"a\",zone=\"z1\"} 7\n"
                             "runnel_things_total{kind=\"b\\\"q\\\\\\n\",zone=\"z2\"} 1\n"
                             "# HELP runnel_level A level.\n"
                             "# TYPE runnel_level gauge\n"
                             "runnel_level -5\n");
    free(out);
    rn_metrics_free(r);
}

static void test_histogram_text(void **state)
{
    struct rn_metrics *r = rn_metrics_new();
    static const uint64_t bounds[] = {1000000, 10000000}; /* 1 ms, 10 ms in ns */
    struct rn_metric_family *h =
        rn_metrics_histogram(r, "runnel_op_seconds", "Op latency.", "op", 1e9, bounds, 2);
    assert_non_null(h);
    struct rn_metric *m = rn_metric_get1(h, "put");
    rn_histogram_observe(m, 500000);     /* 0.5 ms */
    rn_histogram_observe(m, 1000000);    /* exactly 1 ms: inclusive bound */
    rn_histogram_observe(m, 5000000);    /* 5 ms */
    rn_histogram_observe(m, 2000000000); /* 2 s: +Inf */
    assert_int_equal(rn_histogram_count(m), 4);
    char *out = render(r);
    assert_string_equal(out, "# HELP runnel_op_seconds Op latency.\n"
                             "# TYPE runnel_op_seconds histogram\n"
                             "runnel_op_seconds_bucket{op=\"put\",le=\"0.001\"} 2\n"
                             "runnel_op_seconds_bucket{op=\"put\",le=\"0.01\"} 3\n"
                             "runnel_op_seconds_bucket{op=\"put\",le=\"+Inf\"} 4\n"
                             "runnel_op_seconds_sum{op=\"put\"} 2.0065\n"
                             "runnel_op_seconds_count{op=\"put\"} 4\n");
    free(out);
    /* Unscaled bounds render as integers. */
    static const uint64_t sz[] = {1024};
    struct rn_metric_family *hs =
        rn_metrics_histogram(r, "runnel_size_bytes", "Sizes.", NULL, 1, sz, 1);
    rn_histogram_observe(rn_metric_get0(hs), 2048);
    out = render(r);
    assert_non_null(strstr(out, "runnel_size_bytes_bucket{le=\"1024\"} 0\n"
                                "runnel_size_bytes_bucket{le=\"+Inf\"} 1\n"
                                "runnel_size_bytes_sum 2048\n"
                                "runnel_size_bytes_count 1\n"));
    free(out);
    rn_metrics_free(r);
}

static void test_declaration_errors(void **state)
{
    struct rn_metrics *r = rn_metrics_new();
    static const uint64_t bad_bounds[] = {10, 5};
    static const uint64_t ok_bounds[] = {5, 10};
    assert_null(rn_metrics_counter(r, "1bad", "h", NULL));
    assert_null(rn_metrics_counter(r, "bad-name", "h", NULL));
    assert_null(rn_metrics_counter(r, "", "h", NULL));
    assert_null(rn_metrics_counter(r, "x_total", "two\nlines", NULL));
    assert_null(rn_metrics_counter(r, "x_total", "h", "le"));
    assert_null(rn_metrics_counter(r, "x_total", "h", "__name"));
    assert_null(rn_metrics_counter(r, "x_total", "h", "a,,b"));
    assert_null(rn_metrics_counter(r, "x_total", "h", "a,b,c,d,e"));
    assert_null(rn_metrics_counter(r, "x_total", "h", "a-b"));
    assert_null(rn_metrics_histogram(r, "x_seconds", "h", NULL, 1, bad_bounds, 2));
    assert_null(rn_metrics_histogram(r, "x_seconds", "h", NULL, 1, NULL, 0));
    assert_null(rn_metrics_histogram(r, "x_seconds", "h", NULL, 0, ok_bounds, 2));
    struct rn_metric_family *f = rn_metrics_counter(r, "ns:x_total", "h", "a,b");
    assert_non_null(f);
    /* Same shape: the same family; another type or other labels: refused. */
    assert_ptr_equal(rn_metrics_counter(r, "ns:x_total", "other help", "a,b"), f);
    assert_null(rn_metrics_gauge(r, "ns:x_total", "h", "a,b"));
    assert_null(rn_metrics_counter(r, "ns:x_total", "h", "a"));
    /* Wrong label counts give no series; updates of NULL are harmless. */
    assert_null(rn_metric_get1(f, "only-one"));
    assert_null(rn_metric_get0(NULL));
    const char *vals[2] = {"x", NULL};
    assert_null(rn_metric_getv(f, 2, vals));
    rn_counter_add(NULL, 1);
    rn_gauge_set(NULL, 1);
    rn_histogram_observe(NULL, 1);
    assert_int_equal(rn_metric_value(NULL), 0);
    rn_metrics_free(r);
}

static int64_t read_arg(void *arg)
{
    return *(int64_t *)arg;
}

static void test_bound_and_limits(void **state)
{
    struct rn_metrics *r = rn_metrics_new();
    struct rn_metric_family *g = rn_metrics_gauge(r, "runnel_conns", "Connections.", NULL);
    struct rn_metric *m = rn_metric_get0(g);
    int64_t live = 42;
    assert_int_equal(rn_metric_bind(m, read_arg, &live), 0);
    rn_gauge_set(m, 7); /* ignored while bound */
    char *out = render(r);
    assert_non_null(strstr(out, "runnel_conns 42\n"));
    free(out);
    live = 43;
    assert_int_equal(rn_metric_value(m), 43);
    rn_metrics_unbind(r, &live);
    assert_int_equal(rn_metric_value(m), 7);
    /* A counter bound to a reader that goes negative still renders 0. */
    struct rn_metric *c = rn_metric_get0(rn_metrics_counter(r, "runnel_c_total", "C.", NULL));
    int64_t neg = -3;
    rn_metric_bind(c, read_arg, &neg);
    out = render(r);
    assert_non_null(strstr(out, "runnel_c_total 0\n"));
    free(out);
    static const uint64_t b[] = {1};
    struct rn_metric *h =
        rn_metric_get0(rn_metrics_histogram(r, "runnel_h_seconds", "H.", NULL, 1, b, 1));
    assert_int_equal(rn_metric_bind(h, read_arg, &live), -EINVAL);
    /* The series cap holds. */
    struct rn_metric_family *many = rn_metrics_counter(r, "runnel_many_total", "Many.", "i");
    char name[32];
    for (int i = 0; i < RN_METRICS_MAX_SERIES; i++) {
        snprintf(name, sizeof(name), "%d", i);
        assert_non_null(rn_metric_get1(many, name));
    }
    assert_null(rn_metric_get1(many, "one-too-many"));
    assert_non_null(rn_metric_get1(many, "0")); /* existing series are still found */
    rn_metrics_free(r);
}

struct hammer {
    struct rn_metric *c; /* counter */
    struct rn_metric *h; /* histogram */
};

static void *hammer_thread(void *arg)
{
    struct hammer *hm = arg;
    for (int i = 0; i < 100000; i++) {
        rn_counter_add(hm->c, 1);
        rn_histogram_observe(hm->h, (uint64_t)(i % 3));
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct rn_metrics *r = rn_metrics_new();
    static const uint64_t b[] = {0, 1};
    struct hammer hm = {
        rn_metric_get0(rn_metrics_counter(r, "runnel_t_total", "T.", NULL)),
        rn_metric_get0(rn_metrics_histogram(r, "runnel_t_bytes", "T.", NULL, 1, b, 2)),
    };
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, hammer_thread, &hm), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    assert_int_equal(rn_metric_value(hm.c), 400000);
    assert_int_equal(rn_histogram_count(hm.h), 400000);
    char *out = render(r);
    /* 100000 % 3 pattern: 33334 zeros, 33333 ones, 33333 twos per thread. */
    assert_non_null(strstr(out, "runnel_t_bytes_bucket{le=\"0\"} 133336\n"
                                "runnel_t_bytes_bucket{le=\"1\"} 266668\n"
                                "runnel_t_bytes_bucket{le=\"+Inf\"} 400000\n"
                                "runnel_t_bytes_sum 399996\n"));
    free(out);
    rn_metrics_free(r);
}

static void test_long_lines(void **state)
{
    struct rn_metrics *r = rn_metrics_new();
    char name[201];
    memset(name, 'n', 200);
    name[200] = '\0';
    char help[301];
    memset(help, 'h', 300);
    help[300] = '\0';
    char val[100];
    memset(val, 'v', 99);
    val[99] = '\0';
    rn_gauge_set(rn_metric_get1(rn_metrics_gauge(r, name, help, "l"), val), 5);
    char *out = render(r);
    char want[2048];
    snprintf(want, sizeof(want), "# HELP %s %s\n# TYPE %s gauge\n%s{l=\"%s\"} 5\n", name, help,
             name, name, val);
    assert_string_equal(out, want);
    free(out);
    rn_metrics_free(r);
}

static int collect_n; /* samples the collector emits */

static void collect_lag(void *arg, struct rn_metric_emitter *e)
{
    int *calls = arg;
    (*calls)++;
    for (int i = 0; i < collect_n; i++) {
        char part[16];
        snprintf(part, sizeof(part), "%d", i);
        const char *v[2] = {"g\"1", part};
        rn_metric_emit(e, v, 10 - i);
    }
    rn_metric_emit(e, NULL, 1); /* wrong values: dropped */
}

static void test_collector(void **state)
{
    struct rn_metrics *r = rn_metrics_new();
    struct rn_metric_family *f = rn_metrics_gauge(r, "runnel_lag", "Lag.", "group,partition");
    int calls = 0;
    assert_int_equal(rn_metrics_collect(f, collect_lag, &calls), 0);
    collect_n = 0;
    char *out = render(r);
    assert_string_equal(out, ""); /* no samples: not even the header */
    free(out);
    collect_n = 2;
    out = render(r);
    assert_string_equal(out, "# HELP runnel_lag Lag.\n"
                             "# TYPE runnel_lag gauge\n"
                             "runnel_lag{group=\"g\\\"1\",partition=\"0\"} 10\n"
                             "runnel_lag{group=\"g\\\"1\",partition=\"1\"} 9\n");
    free(out);
    /* The cap holds per render. */
    collect_n = RN_METRICS_MAX_SERIES + 10;
    out = render(r);
    int lines = 0;
    for (char *p = out; (p = strchr(p, '\n')) != NULL; p++) {
        lines++;
    }
    assert_int_equal(lines, 2 + RN_METRICS_MAX_SERIES);
    free(out);
    assert_int_equal(calls, 3);
    rn_metrics_unbind(r, &calls);
    out = render(r);
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(calls, 3);
    static const uint64_t b[] = {1};
    assert_int_equal(rn_metrics_collect(rn_metrics_histogram(r, "runnel_hh", "H.", NULL, 1, b, 1),
                                        collect_lag, &calls),
                     -EINVAL);
    rn_metrics_free(r);
}

static void test_global(void **state)
{
    struct rn_metrics *g = rn_metrics_global();
    assert_non_null(g);
    assert_ptr_equal(rn_metrics_global(), g);
}

int run_test_metrics(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_gauge_text),
        cmocka_unit_test(test_histogram_text),
        cmocka_unit_test(test_declaration_errors),
        cmocka_unit_test(test_bound_and_limits),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_global),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_collector),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
