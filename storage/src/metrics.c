/*
 * Object-store metrics: every operation of every store in the process is counted once, when
 * store.c delivers its result (after retries, whatever the backend), so the figures are what
 * callers saw: operations and failures by kind, bytes moved, latency from submission to result
 * and the retries it took. The inner store of a faulty+ wrapper is not counted (the wrapper's
 * operations are). Names and labels are listed in docs/observability.md.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "runnel/common/metrics.h"
#include "store_int.h"

#define STORE__NKINDS (STORE_LIST + 1)

struct store__metrics {
    struct rn_metric_family *errors;           /* by op and error */
    struct rn_metric *requests[STORE__NKINDS]; /* operations finished */
    struct rn_metric *duration[STORE__NKINDS]; /* submission to result */
    struct rn_metric *bytes[STORE__NKINDS];    /* PUT: uploaded, GET: downloaded */
    struct rn_metric *retries[STORE__NKINDS];  /* attempts beyond the first */
};

static struct store__metrics store__m;
static pthread_once_t store__m_once = PTHREAD_ONCE_INIT;

static const char *const store__kind_names[STORE__NKINDS] = {
    [STORE_PUT] = "put",
    [STORE_GET] = "get",
    [STORE_HEAD] = "head",
    [STORE_DELETE] = "delete",
    [STORE_DELETE_MANY] = "delete_many",
    [STORE_LIST] = "list",
};

static void store__metrics_init(void)
{
    struct rn_metrics *r = rn_metrics_global();
    struct rn_metric_family *req =
        rn_metrics_counter(r, "runnel_store_requests_total",
                           "Object-store operations finished (after retries), by operation.", "op");
    struct rn_metric_family *dur = rn_metrics_histogram(
        r, "runnel_store_request_duration_seconds",
        "Object-store operation latency from submission to result, retries included.", "op", 1e9,
        rn_metrics_latency_bounds_ns, rn_metrics_latency_nbounds);
    struct rn_metric_family *bytes = rn_metrics_counter(
        r, "runnel_store_bytes_total",
        "Object bytes moved by successful operations (put: sent, get: received).", "op");
    struct rn_metric_family *retries = rn_metrics_counter(
        r, "runnel_store_retries_total", "Attempts beyond the first, by operation.", "op");
    store__m.errors = rn_metrics_counter(r, "runnel_store_errors_total",
                                         "Object-store operations that failed, by operation and "
                                         "error class.",
                                         "op,error");
    for (int k = 0; k < STORE__NKINDS; k++) {
        const char *n = store__kind_names[k];
        store__m.requests[k] = rn_metric_get1(req, n);
        store__m.duration[k] = rn_metric_get1(dur, n);
        store__m.retries[k] = rn_metric_get1(retries, n);
        if (k == STORE_PUT || k == STORE_GET) {
            store__m.bytes[k] = rn_metric_get1(bytes, n);
        }
    }
}

/* A stable label value for an error class. */
static const char *store__err_label(int err)
{
    switch (err) {
    case -ENOENT:
        return "not_found";
    case -EEXIST:
        return "exists";
    case -EAGAIN:
        return "transient";
    case -ETIMEDOUT:
        return "timeout";
    case -ECANCELED:
        return "cancelled";
    case -EACCES:
        return "denied";
    case -ERANGE:
        return "range";
    case -EINVAL:
        return "invalid";
    case -EFBIG:
        return "too_big";
    default:
        return "io";
    }
}

void store__metrics_done(const struct store__op *op)
{
    if (op->store->unmetered || op->kind < 0 || op->kind >= STORE__NKINDS) {
        return;
    }
    pthread_once(&store__m_once, store__metrics_init);
    int k = op->kind;
    const struct store__result *r = &op->res;
    rn_counter_add(store__m.requests[k], 1);
    rn_histogram_observe(store__m.duration[k], uv_hrtime() - op->started_ns);
    if (op->attempts > 1) {
        rn_counter_add(store__m.retries[k], (uint64_t)(op->attempts - 1));
    }
    if (r->err != 0) {
        rn_counter_add(
            rn_metric_get2(store__m.errors, store__kind_names[k], store__err_label(r->err)), 1);
        return;
    }
    if (k == STORE_PUT) {
        rn_counter_add(store__m.bytes[k], op->len);
    } else if (k == STORE_GET) {
        rn_counter_add(store__m.bytes[k], r->body_len);
    }
}
