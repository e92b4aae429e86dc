/*
 * Benchmark: what the metrics hooks cost on the request path and what a scrape costs. Figures
 * per operation: a counter add, a histogram observation, the agent's per-request hook work (two
 * clock reads, two counter adds, one observation), a counter add contended by two threads, a
 * series lookup by labels; and rendering a registry shaped like a busy agent's (every api x 3
 * versions with latency histograms plus store and metadata series). Prints figures; asserts
 * nothing about speed.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <uv.h>

#include "runnel/common/metrics.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define N 20000000L

static struct rn_metric *shared;

static void *contend(void *arg)
{
    (void)arg;
    for (long i = 0; i < N / 2; i++) {
        rn_counter_add(shared, 1);
    }
    return NULL;
}

/* Best of 5 runs of fn, in ns per operation. */
static double best_ns(void (*fn)(long), long n)
{
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        fn(n);
        double ns = (now() - t0) * 1e9 / (double)n;
        best = ns < best ? ns : best;
    }
    return best;
}

static struct rn_metric *c1, *c2, *c3, *h1;
static struct rn_metric_family *lookup_f;

static void op_counter(long n)
{
    for (long i = 0; i < n; i++) {
        rn_counter_add(c1, 1);
    }
}

static void op_hist(long n)
{
    for (long i = 0; i < n; i++) {
        rn_histogram_observe(h1, (uint64_t)(i & 0xffff) * 1000);
    }
}

static void op_request(long n)
{
    for (long i = 0; i < n; i++) {
        uint64_t t0 = uv_hrtime();
        rn_counter_add(c1, 1);
        rn_counter_add(c2, 300);
        rn_counter_add(c3, 64);
        rn_histogram_observe(h1, uv_hrtime() - t0);
    }
}

static void op_lookup(long n)
{
    for (long i = 0; i < n; i++) {
        (void)rn_metric_get2(lookup_f, "Produce", "9");
    }
}

int main(void)
{
    struct rn_metrics *r = rn_metrics_new();
    c1 = rn_metric_get0(rn_metrics_counter(r, "b_a_total", "a", NULL));
    c2 = rn_metric_get0(rn_metrics_counter(r, "b_b_total", "b", NULL));
    c3 = rn_metric_get0(rn_metrics_counter(r, "b_c_total", "c", NULL));
    h1 = rn_metric_get0(rn_metrics_histogram(
        r, "b_seconds", "h", NULL, 1e9, rn_metrics_latency_bounds_ns, rn_metrics_latency_nbounds));
    printf("counter add:             %6.2f ns/op\n", best_ns(op_counter, N));
    printf("histogram observe:       %6.2f ns/op\n", best_ns(op_hist, N));
    printf("per-request hook work:   %6.2f ns/request\n", best_ns(op_request, N / 4));

    shared = rn_metric_get0(rn_metrics_counter(r, "b_shared_total", "s", NULL));
    double best = 1e30;
    for (int k = 0; k < 5; k++) {
        pthread_t t[2];
        double t0 = now();
        pthread_create(&t[0], NULL, contend, NULL);
        pthread_create(&t[1], NULL, contend, NULL);
        pthread_join(t[0], NULL);
        pthread_join(t[1], NULL);
        double ns = (now() - t0) * 1e9 / (double)N;
        best = ns < best ? ns : best;
    }
    printf("counter add, 2 threads:  %6.2f ns/op (wall time per add, both threads together)\n",
           best);

    /* A busy agent's registry: 60 api/version latency histograms, their counters, store and
     * metadata series. */
    struct rn_metric_family *req =
        rn_metrics_counter(r, "runnel_agent_requests_total", "r", "api,version");
    struct rn_metric_family *dur =
        rn_metrics_histogram(r, "runnel_agent_request_duration_seconds", "d", "api,version", 1e9,
                             rn_metrics_latency_bounds_ns, rn_metrics_latency_nbounds);
    lookup_f = req;
    static const char *apis[] = {
        "Produce",         "Fetch",           "ListOffsets",      "Metadata",
        "ApiVersions",     "CreateTopics",    "DeleteTopics",     "InitProducerId",
        "DescribeConfigs", "AlterConfigs",    "CreatePartitions", "IncrementalAlterConfigs",
        "DescribeCluster", "FindCoordinator", "OffsetCommit",     "OffsetFetch",
        "JoinGroup",       "Heartbeat",       "SyncGroup",        "LeaveGroup"};
    int series = 0;
    for (size_t a = 0; a < sizeof(apis) / sizeof(apis[0]); a++) {
        for (int v = 0; v < 3; v++) {
            char ver[8];
            snprintf(ver, sizeof(ver), "%d", v + 7);
            rn_counter_add(rn_metric_get2(req, apis[a], ver), 1000);
            rn_histogram_observe(rn_metric_get2(dur, apis[a], ver), 1234567);
            series += 2;
        }
    }
    struct rn_metric_family *g = rn_metrics_gauge(r, "runnel_other", "o", "i");
    for (int i = 0; i < 100; i++) {
        char name[16];
        snprintf(name, sizeof(name), "%d", i);
        rn_gauge_set(rn_metric_get1(g, name), i);
        series++;
    }
    printf("series lookup (2 labels, %d series in its family): %6.0f ns/op\n", 60,
           best_ns(op_lookup, 200000));
    char *out = NULL;
    size_t len = 0;
    double rbest = 1e30;
    for (int k = 0; k < 20; k++) {
        double t0 = now();
        rn_metrics_render(r, &out, &len);
        double us = (now() - t0) * 1e6;
        rbest = us < rbest ? us : rbest;
        free(out);
    }
    printf("render %d series (%zu bytes): %6.1f us per scrape\n", series, len, rbest);
    rn_metrics_free(r);
    return 0;
}
