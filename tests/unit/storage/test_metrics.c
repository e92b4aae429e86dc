/* Unit tests for storage/src/metrics.c: operations on a mem:// store and on a faulty+mem://
 * store move the process registry's object-store series exactly once each. */
#include "test_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/common/metrics.h"
#include "store_test_util.h"

static struct rn_metric *counter1(const char *name, const char *label, const char *v)
{
    struct rn_metric_family *f = rn_metrics_counter(rn_metrics_global(), name, "x", label);
    /* Declared by storage with its own help: the same shape finds the family. */
    assert_non_null(f);
    return rn_metric_get1(f, v);
}

static int64_t err_count(const char *op, const char *error)
{
    struct rn_metric_family *f =
        rn_metrics_counter(rn_metrics_global(), "runnel_store_errors_total", "x", "op,error");
    return rn_metric_value(rn_metric_get2(f, op, error));
}

static uint64_t put_latency_count(void)
{
    struct rn_metric_family *f =
        rn_metrics_histogram(rn_metrics_global(), "runnel_store_request_duration_seconds", "x",
                             "op", 1e9, rn_metrics_latency_bounds_ns, rn_metrics_latency_nbounds);
    assert_non_null(f);
    return rn_histogram_count(rn_metric_get1(f, "put"));
}

/* Two PUTs (one refused as existing), a ranged GET and a GET of a missing key. */
static void exercise(const char *url)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[256];
    assert_int_equal(store_open(&loop, url, NULL, &s, err, sizeof(err)), 0);
    struct store_req req;
    assert_int_equal(tstore_put(&loop, s, "a/1", "hello", 5, 0, &req), 0);
    store_req_cleanup(&req);
    assert_int_equal(tstore_put(&loop, s, "a/1", "hello", 5, STORE_IF_NONE_MATCH, &req), -EEXIST);
    store_req_cleanup(&req);
    assert_int_equal(tstore_get(&loop, s, "a/1", 1, 3, &req), 0);
    store_req_cleanup(&req);
    assert_int_equal(tstore_get(&loop, s, "a/missing", 0, 0, &req), -ENOENT);
    store_req_cleanup(&req);
    assert_int_equal(tstore_close_loop(&loop, s), 0);
}

static void test_counts(void **state)
{
    struct rn_metric *puts = counter1("runnel_store_requests_total", "op", "put");
    struct rn_metric *gets = counter1("runnel_store_requests_total", "op", "get");
    struct rn_metric *put_bytes = counter1("runnel_store_bytes_total", "op", "put");
    struct rn_metric *get_bytes = counter1("runnel_store_bytes_total", "op", "get");
    int64_t p0 = rn_metric_value(puts), g0 = rn_metric_value(gets);
    int64_t pb0 = rn_metric_value(put_bytes), gb0 = rn_metric_value(get_bytes);
    int64_t ex0 = err_count("put", "exists"), nf0 = err_count("get", "not_found");
    uint64_t lat0 = put_latency_count();

    exercise("mem://");
    assert_int_equal(rn_metric_value(puts) - p0, 2);
    assert_int_equal(rn_metric_value(gets) - g0, 2);
    assert_int_equal(rn_metric_value(put_bytes) - pb0, 5); /* the refused PUT moved nothing */
    assert_int_equal(rn_metric_value(get_bytes) - gb0, 3); /* the range asked for 3 bytes */
    assert_int_equal(err_count("put", "exists") - ex0, 1);
    assert_int_equal(err_count("get", "not_found") - nf0, 1);
    assert_int_equal(put_latency_count() - lat0, 2);

    /* Through the fault-injection wrapper (no faults asked): still once per operation. */
    exercise("faulty+mem://");
    assert_int_equal(rn_metric_value(puts) - p0, 4);
    assert_int_equal(rn_metric_value(gets) - g0, 4);
    assert_int_equal(rn_metric_value(put_bytes) - pb0, 10);

    /* And the rendered text carries them. */
    char *out = NULL;
    size_t len = 0;
    rn_metrics_render(rn_metrics_global(), &out, &len);
    assert_non_null(strstr(out, "# TYPE runnel_store_request_duration_seconds histogram\n"));
    assert_non_null(strstr(out, "runnel_store_errors_total{op=\"get\",error=\"not_found\"} "));
    free(out);
}

int run_test_metrics(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
    };
    return cmocka_run_group_tests_name("storage_metrics", tests, NULL, NULL);
}
