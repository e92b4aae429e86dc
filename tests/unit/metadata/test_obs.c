/*
 * The metadata service's metrics and readiness (metadata/src/obs.c) with a real server and client
 * on one loop: a request is counted by api with its latency, the state gauges read the live
 * server, the "metadata_journal" readiness check passes while the
 * journal is healthy, and closing the server removes the check and unbinds the gauges.
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "runnel/common/metrics.h"
#include "runnel/common/obs.h"
#include "runnel/metadata/client.h"
#include "runnel/metadata/server.h"

struct obs_env {
    uv_loop_t loop;          /* test loop */
    struct meta_server *srv; /* server under test */
    struct meta_client *cli; /* client */
    char dir[64];            /* data directory */
    int done;                /* completed calls */
};

static void on_hello(void *arg, int status, const void *resp)
{
    struct obs_env *e = arg;
    assert_int_equal(status, 0);
    assert_non_null(resp);
    e->done++;
}

static struct rn_metric *req_series(const char *api)
{
    struct rn_metric_family *f =
        rn_metrics_counter(rn_metrics_global(), "runnel_meta_requests_total", "x", "api");
    assert_non_null(f);
    return rn_metric_get1(f, api);
}

static uint64_t hist_count(const char *name, const char *label, const char *value)
{
    struct rn_metric_family *f =
        rn_metrics_histogram(rn_metrics_global(), name, "x", label, 1e9,
                             rn_metrics_latency_bounds_ns, rn_metrics_latency_nbounds);
    assert_non_null(f);
    return rn_histogram_count(rn_metric_get1(f, value));
}

static int64_t gauge(const char *name)
{
    return rn_metric_value(rn_metric_get0(rn_metrics_gauge(rn_metrics_global(), name, "x", NULL)));
}

static void test_server_metrics(void **state)
{
    struct obs_env *e = calloc(1, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "/tmp/runnel-test-obs-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    uv_loop_init(&e->loop);
    struct meta_server_options o;
    meta_server_options_default(&o);
    o.data_dir = e->dir;
    o.port = 0;
    char err[256];
    assert_int_equal(meta_server_open(&e->srv, &e->loop, &o, err, sizeof(err)), 0);
    assert_int_equal(meta_client_open(&e->cli, &e->loop, "127.0.0.1", meta_server_port(e->srv)), 0);

    int64_t hellos = rn_metric_value(req_series("MetaHello"));
    uint64_t hello_lat = hist_count("runnel_meta_request_duration_seconds", "api", "MetaHello");
    struct kp_meta_hello_request rq;
    kp_meta_hello_request_init(&rq);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(meta_client_call(e->cli, 1000, &rq, on_hello, e), 0);
    }
    for (int i = 0; i < 20000 && e->done < 3; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    assert_int_equal(e->done, 3);
    assert_int_equal(rn_metric_value(req_series("MetaHello")) - hellos, 3);
    assert_int_equal(
        hist_count("runnel_meta_request_duration_seconds", "api", "MetaHello") - hello_lat, 3);
    assert_int_equal(gauge("runnel_meta_connections"), 1);
    assert_int_equal(gauge("runnel_meta_topics"), 0);
    assert_int_equal(gauge("runnel_meta_journal_failed"), 0);

    char report[512];
    assert_true(rn_obs_ready(report, sizeof(report)));
    assert_non_null(strstr(report, "metadata_journal: ok\n"));

    meta_client_close(e->cli);
    meta_server_close(e->srv);
    /* Closed: the check is gone and the gauges no longer read the freed server. */
    assert_true(rn_obs_ready(report, sizeof(report)));
    assert_null(strstr(report, "metadata_journal"));
    assert_int_equal(gauge("runnel_meta_connections"), 0);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
    assert_int_equal(system(cmd), 0);
    free(e);
}

int run_test_obs(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_metrics),
    };
    return cmocka_run_group_tests_name("metadata_obs", tests, NULL, NULL);
}
