/*
 * A small metrics registry: counters, gauges and histograms with labels, rendered in the
 * Prometheus text exposition format (version 0.0.4) for `GET /metrics`.
 *
 * A family is a metric name with its help, type and label names; a series is one combination of
 * label values in a family. Callers declare families once, look up the series they update once
 * (the lookup takes a lock and compares strings) and then update it on the hot path with one
 * relaxed atomic operation per value, from any thread (the metadata journal's writer thread
 * observes fsync latency, everything else runs on a libuv loop).
 *
 *   struct rn_metric_family *f = rn_metrics_counter(rn_metrics_global(), "runnel_x_total",
 *                                                   "Things done.", "kind");
 *   struct rn_metric *m = rn_metric_get(f, "a");
 *   rn_counter_add(m, 1);
 *
 * Values are unsigned (counters, histograms) or signed (gauges) 64-bit integers in the family's
 * base unit; a family's `scale` divides them on output, so durations are observed in nanoseconds
 * and exposed in seconds (scale 1e9). A series may instead be bound to a function that the
 * renderer calls (a gauge of live connections reads the agent's own count).
 *
 * Every update function accepts NULL and does nothing then, so a hook never needs a check when
 * a declaration failed (a bad name or too many series is a programming error, logged once).
 * The registry never frees series while it lives, so series pointers stay valid.
 */
#ifndef RUNNEL_COMMON_METRICS_H
#define RUNNEL_COMMON_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rn_metric_type {
    RN_METRIC_COUNTER,   /* only goes up; name ends in _total */
    RN_METRIC_GAUGE,     /* goes up and down */
    RN_METRIC_HISTOGRAM, /* observations counted into cumulative buckets, with _sum and _count */
};

#define RN_METRICS_MAX_LABELS 4      /* label names per family */
#define RN_METRICS_MAX_SERIES 4096   /* series per family; further lookups return NULL */
#define RN_METRICS_MAX_BUCKETS 32    /* histogram bounds per family */
#define RN_METRICS_MAX_LABEL_LEN 128 /* bytes of one label value; longer values are cut */

struct rn_metrics;
struct rn_metric_family;
struct rn_metric;

/* Reads a bound series' current value (in the family's base unit) at render time. */
typedef int64_t (*rn_metric_fn)(void *arg);

/* A new, empty registry (tests); free with rn_metrics_free(). Aborts on out-of-memory. */
struct rn_metrics *rn_metrics_new(void);

/* Frees a registry and every family and series in it. */
void rn_metrics_free(struct rn_metrics *r);

/* The process-wide registry every module registers into; created on first use, lives until
 * exit. `runnel dev` exposes the agent's and the metadata service's metrics from it at once. */
struct rn_metrics *rn_metrics_global(void);

/*
 * Declares a family, or returns the existing one when the same name was declared before with the
 * same type and labels. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*; `help` is one line (copied);
 * `labels` is a comma-separated list of at most RN_METRICS_MAX_LABELS label names ("api,version")
 * or NULL for none. `scale` (> 0) divides values on output (1 for plain counts). For histograms,
 * `bounds` are the buckets' inclusive upper bounds in the base unit, strictly ascending, at most
 * RN_METRICS_MAX_BUCKETS (the +Inf bucket is implicit). Returns NULL on a bad argument or a
 * conflicting re-declaration.
 */
struct rn_metric_family *rn_metrics_family(struct rn_metrics *r, enum rn_metric_type type,
                                           const char *name, const char *help, const char *labels,
                                           double scale, const uint64_t *bounds, size_t nbounds);

/* Shorthands for rn_metrics_family() with scale 1 (counters, gauges) and the given scale. */
struct rn_metric_family *rn_metrics_counter(struct rn_metrics *r, const char *name,
                                            const char *help, const char *labels);
struct rn_metric_family *rn_metrics_gauge(struct rn_metrics *r, const char *name, const char *help,
                                          const char *labels);
struct rn_metric_family *rn_metrics_histogram(struct rn_metrics *r, const char *name,
                                              const char *help, const char *labels, double scale,
                                              const uint64_t *bounds, size_t nbounds);

/* Bucket bounds in nanoseconds from 100 us to 60 s, for latencies exposed in seconds. */
extern const uint64_t rn_metrics_latency_bounds_ns[];
extern const size_t rn_metrics_latency_nbounds;
/* Bucket bounds in bytes from 1 KiB to 1 GiB (powers of 4), for sizes. */
extern const uint64_t rn_metrics_size_bounds[];
extern const size_t rn_metrics_size_nbounds;

/*
 * Finds or creates the series with these label values: exactly as many NUL-terminated values as
 * the family has label names (values are copied and escaped on output). Returns NULL when `f` is
 * NULL, the count is wrong or the family holds RN_METRICS_MAX_SERIES series already.
 */
struct rn_metric *rn_metric_getv(struct rn_metric_family *f, size_t n, const char *const *values);
/* rn_metric_getv() for families with 0, 1 or 2 labels. */
struct rn_metric *rn_metric_get0(struct rn_metric_family *f);
struct rn_metric *rn_metric_get1(struct rn_metric_family *f, const char *v1);
struct rn_metric *rn_metric_get2(struct rn_metric_family *f, const char *v1, const char *v2);

void rn_counter_add(struct rn_metric *m, uint64_t n);
void rn_gauge_set(struct rn_metric *m, int64_t v);
void rn_gauge_add(struct rn_metric *m, int64_t delta);
/* Counts `v` (base unit) into its bucket and adds it to the sum. */
void rn_histogram_observe(struct rn_metric *m, uint64_t v);

/* Current value of a counter or gauge series (bound series: the function's value). */
int64_t rn_metric_value(struct rn_metric *m);
/* Observation count of a histogram series. */
uint64_t rn_histogram_count(struct rn_metric *m);

/*
 * Binds a counter or gauge series to fn(arg), called under the registry's lock by the thread
 * that renders (a libuv loop's: keep it cheap and do not call back into the registry). Updates
 * of a bound series are ignored. rn_metrics_unbind() undoes every binding made with `arg`; call
 * it before `arg` goes away. Returns 0, or -EINVAL for a NULL series or a histogram.
 */
int rn_metric_bind(struct rn_metric *m, rn_metric_fn fn, void *arg);
void rn_metrics_unbind(struct rn_metrics *r, void *arg);

/*
 * Collector families: for sets of series that come and go (consumer lag per group and
 * partition), a counter or gauge family can be given a function that emits its samples at
 * render time, under the registry's lock on the rendering thread, in addition to the family's
 * ordinary series. fn calls rn_metric_emit() once per sample; at most RN_METRICS_MAX_SERIES
 * samples are kept per render (the rest are dropped). rn_metrics_unbind(r, arg) detaches it.
 * Returns 0, or -EINVAL for a NULL family, a histogram or a NULL fn.
 */
struct rn_metric_emitter;
typedef void (*rn_metric_collect_fn)(void *arg, struct rn_metric_emitter *e);
int rn_metrics_collect(struct rn_metric_family *f, rn_metric_collect_fn fn, void *arg);
/* Emits one sample: as many label values as the family has label names, value in base unit. */
void rn_metric_emit(struct rn_metric_emitter *e, const char *const *values, int64_t value);

/*
 * Renders every family that has at least one series or sample, in declaration order, as Prometheus
 * text format 0.0.4 into a malloc'd NUL-terminated buffer stored in *out (length in *len; the
 * caller frees it). Returns 0 (aborts on out-of-memory).
 */
int rn_metrics_render(struct rn_metrics *r, char **out, size_t *len);

/* The Content-Type of the rendered text. */
#define RN_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
