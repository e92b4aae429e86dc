/*
 * The /metrics, /healthz and /readyz endpoints (runnel/common/obs.h) on top of the HTTP server,
 * plus the process-level series every Runnel process exposes (build info, the usual process_*
 * series of CPU, memory and descriptors, and the listener's own requests).
 */
#include "runnel/common/obs.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "runnel/common/http.h"
#include "runnel/common/log.h"
#include "runnel/common/metrics.h"

#ifndef RUNNEL_VERSION
#define RUNNEL_VERSION "0.1.0"
#endif

struct rn__obs_check {
    const char *name;   /* static */
    rn_obs_ready_fn fn; /* the check */
    void *arg;          /* its argument, also the key for removal */
};

static struct rn_http_server *rn__obs_srv;
static struct rn__obs_check rn__obs_checks[RN_OBS_MAX_CHECKS];
static size_t rn__obs_nchecks;
static bool rn__obs_metrics_made; /* the process-level series exist */
static struct rn_metric *rn__obs_scrape_other;
static struct rn_metric *rn__obs_scrape_metrics;
static struct rn_metric *rn__obs_scrape_ready;
static struct rn_metric *rn__obs_scrape_health;

int rn_obs_add_check(const char *name, rn_obs_ready_fn fn, void *arg)
{
    if (rn__obs_nchecks == RN_OBS_MAX_CHECKS) {
        return -ENOSPC;
    }
    rn__obs_checks[rn__obs_nchecks++] = (struct rn__obs_check){name, fn, arg};
    return 0;
}

void rn_obs_remove_checks(void *arg)
{
    size_t j = 0;
    for (size_t i = 0; i < rn__obs_nchecks; i++) {
        if (rn__obs_checks[i].arg != arg) {
            rn__obs_checks[j++] = rn__obs_checks[i];
        }
    }
    rn__obs_nchecks = j;
}

bool rn_obs_ready(char *out, size_t out_len)
{
    bool ready = true;
    size_t pos = 0;
    if (out != NULL && out_len > 0) {
        out[0] = '\0';
    }
    for (size_t i = 0; i < rn__obs_nchecks; i++) {
        char why[200] = "";
        bool ok = rn__obs_checks[i].fn(rn__obs_checks[i].arg, why, sizeof(why));
        ready = ready && ok;
        if (out != NULL && pos < out_len) {
            int n = snprintf(out + pos, out_len - pos, "%s: %s\n", rn__obs_checks[i].name,
                             ok ? "ok" : (why[0] ? why : "not ready"));
            pos += n > 0 ? (size_t)n : 0;
        }
    }
    return ready;
}

static char *rn__obs_strdup(const char *s, size_t *len)
{
    char *p = strdup(s);
    if (p == NULL) {
        abort();
    }
    *len = strlen(p);
    return p;
}

static void rn__obs_handle(void *arg, const struct rn_http_request *req,
                           struct rn_http_response *resp)
{
    (void)arg;
    if (strcmp(req->path, "/metrics") == 0) {
        rn_counter_add(rn__obs_scrape_metrics, 1);
        rn_metrics_render(rn_metrics_global(), &resp->body, &resp->body_len);
        resp->content_type = RN_METRICS_CONTENT_TYPE;
    } else if (strcmp(req->path, "/healthz") == 0) {
        rn_counter_add(rn__obs_scrape_health, 1);
        resp->body = rn__obs_strdup("ok\n", &resp->body_len);
    } else if (strcmp(req->path, "/readyz") == 0) {
        rn_counter_add(rn__obs_scrape_ready, 1);
        char report[2048];
        bool ok = rn_obs_ready(report, sizeof(report));
        char text[2100];
        snprintf(text, sizeof(text), "%s\n%s", ok ? "ready" : "not ready", report);
        resp->status = ok ? 200 : 503;
        resp->body = rn__obs_strdup(text, &resp->body_len);
    } else {
        rn_counter_add(rn__obs_scrape_other, 1);
        resp->status = 404;
        resp->body =
            rn__obs_strdup("404 Not Found: try /metrics, /healthz or /readyz\n", &resp->body_len);
    }
}

/* ---- process series, read at scrape time (Prometheus' usual process_* names) ---- */

static int64_t rn__obs_cpu_us(void *arg)
{
    (void)arg;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) {
        return 0;
    }
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

static int64_t rn__obs_rss(void *arg)
{
    (void)arg;
    long pages = 0;
    long resident = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (f == NULL) {
        return 0;
    }
    int n = fscanf(f, "%ld %ld", &pages, &resident);
    fclose(f);
    return n == 2 ? (int64_t)resident * sysconf(_SC_PAGESIZE) : 0;
}

static int64_t rn__obs_open_fds(void *arg)
{
    (void)arg;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return 0;
    }
    int64_t n = 0;
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n > 3 ? n - 3 : 0; /* ".", ".." and the directory's own descriptor */
}

static int64_t rn__obs_max_fds(void *arg)
{
    (void)arg;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return 0;
    }
    return (int64_t)rl.rlim_cur;
}

static int64_t rn__obs_ready_value(void *arg)
{
    (void)arg;
    return rn_obs_ready(NULL, 0) ? 1 : 0;
}

static void rn__obs_process_metrics(void)
{
    struct rn_metrics *r = rn_metrics_global();
    rn_metric_bind(
        rn_metric_get0(rn_metrics_gauge(r, "runnel_ready",
                                        "1 when every readiness check passes (as /readyz).", NULL)),
        rn__obs_ready_value, &rn__obs_metrics_made);
    rn_gauge_set(
        rn_metric_get1(rn_metrics_gauge(r, "runnel_build_info",
                                        "Always 1; the version label names the build.", "version"),
                       RUNNEL_VERSION),
        1);
    rn_gauge_set(
        rn_metric_get0(rn_metrics_gauge(r, "process_start_time_seconds",
                                        "Start time of the process since the Unix epoch.", NULL)),
        (int64_t)time(NULL));
    rn_metric_bind(rn_metric_get0(rn_metrics_family(
                       r, RN_METRIC_COUNTER, "process_cpu_seconds_total",
                       "User and system CPU time of the process.", NULL, 1e6, NULL, 0)),
                   rn__obs_cpu_us, &rn__obs_metrics_made);
    rn_metric_bind(rn_metric_get0(rn_metrics_gauge(r, "process_resident_memory_bytes",
                                                   "Resident memory of the process.", NULL)),
                   rn__obs_rss, &rn__obs_metrics_made);
    rn_metric_bind(rn_metric_get0(rn_metrics_gauge(r, "process_open_fds",
                                                   "Open file descriptors of the process.", NULL)),
                   rn__obs_open_fds, &rn__obs_metrics_made);
    rn_metric_bind(
        rn_metric_get0(rn_metrics_gauge(r, "process_max_fds",
                                        "The process's limit of open file descriptors.", NULL)),
        rn__obs_max_fds, &rn__obs_metrics_made);
    struct rn_metric_family *f = rn_metrics_counter(
        r, "runnel_http_requests_total", "Requests to the observability listener by path.", "path");
    rn__obs_scrape_metrics = rn_metric_get1(f, "/metrics");
    rn__obs_scrape_health = rn_metric_get1(f, "/healthz");
    rn__obs_scrape_ready = rn_metric_get1(f, "/readyz");
    rn__obs_scrape_other = rn_metric_get1(f, "other");
    rn__obs_metrics_made = true;
}

int rn_obs_start(uv_loop_t *loop, const char *hostport, char *err, size_t errlen)
{
    if (hostport == NULL || hostport[0] == '\0' || strcmp(hostport, "off") == 0) {
        return 0;
    }
    if (rn__obs_srv != NULL) {
        snprintf(err, errlen, "the observability listener is already running");
        return -EALREADY;
    }
    if (!rn__obs_metrics_made) {
        rn__obs_process_metrics();
    }
    int rc =
        rn_http_server_start(&rn__obs_srv, loop, hostport, NULL, rn__obs_handle, NULL, err, errlen);
    if (rc != 0) {
        rn__obs_srv = NULL;
        return rc;
    }
    rn_log(RN_LOG_INFO, "http_listening", "listen=%s port=%d", hostport,
           rn_http_server_port(rn__obs_srv));
    return 0;
}

int rn_obs_port(void)
{
    return rn__obs_srv != NULL ? rn_http_server_port(rn__obs_srv) : 0;
}

void rn_obs_stop(void)
{
    if (rn__obs_srv != NULL) {
        rn_http_server_close(rn__obs_srv);
        rn__obs_srv = NULL;
    }
}
