/*
 * The metrics registry and its Prometheus text rendering (see runnel/common/metrics.h).
 *
 * The structure (families, series, bindings) is guarded by one mutex, taken by declarations,
 * lookups and the renderer; values are C11 atomics updated with relaxed ordering, so updates
 * never take the lock. A histogram keeps one non-cumulative count per bucket and derives the
 * cumulative buckets and _count from them when rendering, so a scrape is always self-consistent
 * (+Inf bucket == _count) even while other threads observe.
 */
#include "runnel/common/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/common/log.h"

struct rn_metric {
    struct rn_metric_family *fam;        /* owner */
    char *values[RN_METRICS_MAX_LABELS]; /* label values (owned, unescaped) */
    _Atomic int64_t value;               /* counter/gauge value, base unit */
    _Atomic uint64_t sum;                /* histogram: sum of observations, base unit */
    _Atomic uint64_t *buckets;           /* histogram: nbounds + 1 non-cumulative counts */
    rn_metric_fn fn;                     /* bound reader, or NULL */
    void *fn_arg;                        /* its argument */
    struct rn_metric *next;              /* family's series in creation order */
};

struct rn_metric_family {
    struct rn_metrics *reg;                  /* owner */
    enum rn_metric_type type;                /* counter, gauge, histogram */
    char *name;                              /* metric name (owned) */
    char *help;                              /* help line (owned) */
    char *labels[RN_METRICS_MAX_LABELS];     /* label names (owned) */
    size_t nlabels;                          /* used entries of labels */
    double scale;                            /* output = value / scale */
    uint64_t bounds[RN_METRICS_MAX_BUCKETS]; /* histogram bucket upper bounds, base unit */
    char le[RN_METRICS_MAX_BUCKETS + 1][32]; /* the bounds as rendered, then "+Inf" */
    size_t nbounds;                          /* used entries of bounds */
    struct rn_metric *series;                /* first series */
    struct rn_metric *last;                  /* last series (appends) */
    rn_metric_collect_fn collect;            /* emits further samples at render, or NULL */
    void *collect_arg;                       /* its argument */
    size_t nseries;                          /* count of series */
    struct rn_metric_family *next;           /* registry's families in declaration order */
};

struct rn_metrics {
    pthread_mutex_t lock;          /* guards families, series lists and bindings */
    struct rn_metric_family *head; /* first family */
    struct rn_metric_family *tail; /* last family */
};

const uint64_t rn_metrics_latency_bounds_ns[] = {
    100000,     250000,     500000,     1000000,     2500000,     5000000,
    10000000,   25000000,   50000000,   100000000,   250000000,   500000000,
    1000000000, 2500000000, 5000000000, 10000000000, 30000000000, 60000000000,
};
const size_t rn_metrics_latency_nbounds =
    sizeof(rn_metrics_latency_bounds_ns) / sizeof(rn_metrics_latency_bounds_ns[0]);

const uint64_t rn_metrics_size_bounds[] = {
    1ULL << 10, 1ULL << 12, 1ULL << 14, 1ULL << 16, 1ULL << 18, 1ULL << 20,
    1ULL << 22, 1ULL << 24, 1ULL << 26, 1ULL << 28, 1ULL << 30,
};
const size_t rn_metrics_size_nbounds =
    sizeof(rn_metrics_size_bounds) / sizeof(rn_metrics_size_bounds[0]);

static void *rn__xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        abort();
    }
    return p;
}

static char *rn__xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (p == NULL) {
        abort();
    }
    return p;
}

struct rn_metrics *rn_metrics_new(void)
{
    struct rn_metrics *r = rn__xcalloc(1, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

static void rn__series_free(struct rn_metric *m)
{
    for (size_t i = 0; i < RN_METRICS_MAX_LABELS; i++) {
        free(m->values[i]);
    }
    free((void *)m->buckets);
    free(m);
}

static void rn__family_free(struct rn_metric_family *f)
{
    struct rn_metric *m = f->series;
    while (m != NULL) {
        struct rn_metric *next = m->next;
        rn__series_free(m);
        m = next;
    }
    for (size_t i = 0; i < f->nlabels; i++) {
        free(f->labels[i]);
    }
    free(f->name);
    free(f->help);
    free(f);
}

void rn_metrics_free(struct rn_metrics *r)
{
    if (r == NULL) {
        return;
    }
    struct rn_metric_family *f = r->head;
    while (f != NULL) {
        struct rn_metric_family *next = f->next;
        rn__family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static struct rn_metrics *rn__global;
static pthread_once_t rn__global_once = PTHREAD_ONCE_INIT;

static void rn__global_init(void)
{
    rn__global = rn_metrics_new();
}

struct rn_metrics *rn_metrics_global(void)
{
    pthread_once(&rn__global_once, rn__global_init);
    return rn__global;
}

static bool rn__name_valid(const char *s, bool colon_ok)
{
    if (s == NULL || s[0] == '\0') {
        return false;
    }
    for (size_t i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool ok = alpha || (colon_ok && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* Splits "a,b" into owned label names; returns the count or -EINVAL. */
static int rn__split_labels(const char *labels, char **out)
{
    if (labels == NULL || labels[0] == '\0') {
        return 0;
    }
    size_t n = 0;
    const char *p = labels;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (n == RN_METRICS_MAX_LABELS || len == 0) {
            goto out_bad;
        }
        out[n] = rn__xstrndup(p, len);
        /* "le" is reserved for histogram buckets, "__" prefixes for Prometheus itself. */
        if (!rn__name_valid(out[n], false) || strcmp(out[n], "le") == 0 ||
            strncmp(out[n], "__", 2) == 0) {
            n++;
            goto out_bad;
        }
        n++;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    return (int)n;
out_bad:
    for (size_t i = 0; i < n; i++) {
        free(out[i]);
        out[i] = NULL;
    }
    return -EINVAL;
}

static bool rn__same_shape(const struct rn_metric_family *f, enum rn_metric_type type,
                           char **labels, size_t nlabels, double scale, const uint64_t *bounds,
                           size_t nbounds)
{
    if (f->type != type || f->nlabels != nlabels || f->scale != scale || f->nbounds != nbounds) {
        return false;
    }
    for (size_t i = 0; i < nlabels; i++) {
        if (strcmp(f->labels[i], labels[i]) != 0) {
            return false;
        }
    }
    return nbounds == 0 || memcmp(f->bounds, bounds, nbounds * sizeof(bounds[0])) == 0;
}

struct rn_metric_family *rn_metrics_family(struct rn_metrics *r, enum rn_metric_type type,
                                           const char *name, const char *help, const char *labels,
                                           double scale, const uint64_t *bounds, size_t nbounds)
{
    char *lnames[RN_METRICS_MAX_LABELS] = {0};
    bool ok = r != NULL && rn__name_valid(name, true) && help != NULL && !(scale <= 0) &&
              (type == RN_METRIC_HISTOGRAM
                   ? bounds != NULL && nbounds > 0 && nbounds <= RN_METRICS_MAX_BUCKETS
                   : nbounds == 0) &&
              strchr(help, '\n') == NULL;
    for (size_t i = 1; ok && i < nbounds; i++) {
        ok = bounds[i] > bounds[i - 1];
    }
    int nl = ok ? rn__split_labels(labels, lnames) : -EINVAL;
    if (nl < 0) {
        rn_log(RN_LOG_ERROR, "metric_declaration_rejected", "name=%s", name ? name : "(null)");
        return NULL;
    }
    pthread_mutex_lock(&r->lock);
    struct rn_metric_family *f;
    for (f = r->head; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            break;
        }
    }
    if (f != NULL) {
        bool same = rn__same_shape(f, type, lnames, (size_t)nl, scale, bounds, nbounds);
        pthread_mutex_unlock(&r->lock);
        for (int i = 0; i < nl; i++) {
            free(lnames[i]);
        }
        if (!same) {
            rn_log(RN_LOG_ERROR, "metric_redeclared", "name=%s", name);
            return NULL;
        }
        return f;
    }
    f = rn__xcalloc(1, sizeof(*f));
    f->reg = r;
    f->type = type;
    f->name = rn__xstrndup(name, strlen(name));
    f->help = rn__xstrndup(help, strlen(help));
    memcpy(f->labels, lnames, sizeof(lnames));
    f->nlabels = (size_t)nl;
    f->scale = scale;
    if (nbounds > 0) {
        memcpy(f->bounds, bounds, nbounds * sizeof(bounds[0]));
    }
    f->nbounds = nbounds;
    for (size_t i = 0; i <= nbounds && type == RN_METRIC_HISTOGRAM; i++) {
        if (i == nbounds) {
            snprintf(f->le[i], sizeof(f->le[i]), "+Inf");
        } else if (scale == 1) {
            snprintf(f->le[i], sizeof(f->le[i]), "%llu", (unsigned long long)bounds[i]);
        } else {
            snprintf(f->le[i], sizeof(f->le[i]), "%.12g", (double)bounds[i] / scale);
        }
    }
    if (r->tail != NULL) {
        r->tail->next = f;
    } else {
        r->head = f;
    }
    r->tail = f;
    pthread_mutex_unlock(&r->lock);
    return f;
}

struct rn_metric_family *rn_metrics_counter(struct rn_metrics *r, const char *name,
                                            const char *help, const char *labels)
{
    return rn_metrics_family(r, RN_METRIC_COUNTER, name, help, labels, 1, NULL, 0);
}

struct rn_metric_family *rn_metrics_gauge(struct rn_metrics *r, const char *name, const char *help,
                                          const char *labels)
{
    return rn_metrics_family(r, RN_METRIC_GAUGE, name, help, labels, 1, NULL, 0);
}

struct rn_metric_family *rn_metrics_histogram(struct rn_metrics *r, const char *name,
                                              const char *help, const char *labels, double scale,
                                              const uint64_t *bounds, size_t nbounds)
{
    return rn_metrics_family(r, RN_METRIC_HISTOGRAM, name, help, labels, scale, bounds, nbounds);
}

struct rn_metric *rn_metric_getv(struct rn_metric_family *f, size_t n, const char *const *values)
{
    if (f == NULL || n != f->nlabels) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (values[i] == NULL) {
            return NULL;
        }
    }
    struct rn_metrics *r = f->reg;
    pthread_mutex_lock(&r->lock);
    struct rn_metric *m;
    for (m = f->series; m != NULL; m = m->next) {
        size_t i = 0;
        while (i < n && strncmp(m->values[i], values[i], RN_METRICS_MAX_LABEL_LEN) == 0) {
            i++;
        }
        if (i == n) {
            break;
        }
    }
    if (m == NULL && f->nseries < RN_METRICS_MAX_SERIES) {
        m = rn__xcalloc(1, sizeof(*m));
        m->fam = f;
        for (size_t i = 0; i < n; i++) {
            m->values[i] = rn__xstrndup(values[i], RN_METRICS_MAX_LABEL_LEN);
        }
        if (f->type == RN_METRIC_HISTOGRAM) {
            m->buckets = rn__xcalloc(f->nbounds + 1, sizeof(m->buckets[0]));
        }
        if (f->last != NULL) {
            f->last->next = m;
        } else {
            f->series = m;
        }
        f->last = m;
        f->nseries++;
    }
    pthread_mutex_unlock(&r->lock);
    return m;
}

struct rn_metric *rn_metric_get0(struct rn_metric_family *f)
{
    return rn_metric_getv(f, 0, NULL);
}

struct rn_metric *rn_metric_get1(struct rn_metric_family *f, const char *v1)
{
    const char *v[1] = {v1};
    return rn_metric_getv(f, 1, v);
}

struct rn_metric *rn_metric_get2(struct rn_metric_family *f, const char *v1, const char *v2)
{
    const char *v[2] = {v1, v2};
    return rn_metric_getv(f, 2, v);
}

void rn_counter_add(struct rn_metric *m, uint64_t n)
{
    if (m != NULL) {
        atomic_fetch_add_explicit(&m->value, (int64_t)n, memory_order_relaxed);
    }
}

void rn_gauge_set(struct rn_metric *m, int64_t v)
{
    if (m != NULL) {
        atomic_store_explicit(&m->value, v, memory_order_relaxed);
    }
}

void rn_gauge_add(struct rn_metric *m, int64_t delta)
{
    if (m != NULL) {
        atomic_fetch_add_explicit(&m->value, delta, memory_order_relaxed);
    }
}

void rn_histogram_observe(struct rn_metric *m, uint64_t v)
{
    if (m == NULL || m->buckets == NULL) {
        return;
    }
    const struct rn_metric_family *f = m->fam;
    size_t lo = 0;
    size_t hi = f->nbounds; /* index of the first bound >= v, or nbounds for +Inf */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->bounds[mid] < v) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    atomic_fetch_add_explicit(&m->buckets[lo], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->sum, v, memory_order_relaxed);
}

int64_t rn_metric_value(struct rn_metric *m)
{
    if (m == NULL) {
        return 0;
    }
    if (m->fn != NULL) {
        pthread_mutex_lock(&m->fam->reg->lock);
        int64_t v = m->fn != NULL ? m->fn(m->fn_arg)
                                  : atomic_load_explicit(&m->value, memory_order_relaxed);
        pthread_mutex_unlock(&m->fam->reg->lock);
        return v;
    }
    return atomic_load_explicit(&m->value, memory_order_relaxed);
}

uint64_t rn_histogram_count(struct rn_metric *m)
{
    uint64_t n = 0;
    if (m == NULL || m->buckets == NULL) {
        return 0;
    }
    for (size_t i = 0; i <= m->fam->nbounds; i++) {
        n += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
    }
    return n;
}

int rn_metric_bind(struct rn_metric *m, rn_metric_fn fn, void *arg)
{
    if (m == NULL || fn == NULL || m->fam->type == RN_METRIC_HISTOGRAM) {
        return -EINVAL;
    }
    pthread_mutex_lock(&m->fam->reg->lock);
    m->fn = fn;
    m->fn_arg = arg;
    pthread_mutex_unlock(&m->fam->reg->lock);
    return 0;
}

int rn_metrics_collect(struct rn_metric_family *f, rn_metric_collect_fn fn, void *arg)
{
    if (f == NULL || fn == NULL || f->type == RN_METRIC_HISTOGRAM) {
        return -EINVAL;
    }
    pthread_mutex_lock(&f->reg->lock);
    f->collect = fn;
    f->collect_arg = arg;
    pthread_mutex_unlock(&f->reg->lock);
    return 0;
}

void rn_metrics_unbind(struct rn_metrics *r, void *arg)
{
    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->lock);
    for (struct rn_metric_family *f = r->head; f != NULL; f = f->next) {
        if (f->collect != NULL && f->collect_arg == arg) {
            f->collect = NULL;
            f->collect_arg = NULL;
        }
        for (struct rn_metric *m = f->series; m != NULL; m = m->next) {
            if (m->fn != NULL && m->fn_arg == arg) {
                m->fn = NULL;
                m->fn_arg = NULL;
            }
        }
    }
    pthread_mutex_unlock(&r->lock);
}

/* ---- rendering ---- */

struct rn__sbuf {
    char *p;    /* bytes (NUL-terminated) */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
};

static void rn__reserve(struct rn__sbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) {
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        abort();
    }
    b->p = p;
    b->cap = cap;
}

static void rn__put(struct rn__sbuf *b, const char *s, size_t n)
{
    rn__reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void rn__puts(struct rn__sbuf *b, const char *s)
{
    rn__put(b, s, strlen(s));
}

static void rn__printf(struct rn__sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void rn__printf(struct rn__sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n <= 0) {
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        rn__put(b, tmp, (size_t)n);
        return;
    }
    rn__reserve(b, (size_t)n); /* longer than the stack buffer: format again in place */
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Help text escapes backslash and newline; label values also escape the double quote. */
static void rn__put_escaped(struct rn__sbuf *b, const char *s, bool quote)
{
    while (*s != '\0') {
        size_t plain = strcspn(s, quote ? "\\\n\"" : "\\\n");
        rn__put(b, s, plain);
        s += plain;
        if (*s == '\\') {
            rn__puts(b, "\\\\");
        } else if (*s == '\n') {
            rn__puts(b, "\\n");
        } else if (*s == '"') {
            rn__puts(b, "\\\"");
        } else {
            break;
        }
        s++;
    }
}

/* A value in the base unit, scaled for output. */
static void rn__put_value(struct rn__sbuf *b, const struct rn_metric_family *f, double v,
                          bool is_signed, int64_t iv)
{
    if (f->scale == 1) {
        if (is_signed) {
            rn__printf(b, "%lld", (long long)iv);
        } else {
            rn__printf(b, "%.0f", v);
        }
        return;
    }
    rn__printf(b, "%.12g", v / f->scale);
}

/* `name{labels[,le="x"]} ` for one series; `le` may be NULL. */
static void rn__put_series_name(struct rn__sbuf *b, const struct rn_metric_family *f,
                                const struct rn_metric *m, const char *suffix, const char *le)
{
    rn__puts(b, f->name);
    rn__puts(b, suffix);
    if (f->nlabels > 0 || le != NULL) {
        rn__puts(b, "{");
        for (size_t i = 0; i < f->nlabels; i++) {
            if (i > 0) {
                rn__puts(b, ",");
            }
            rn__puts(b, f->labels[i]);
            rn__puts(b, "=\"");
            rn__put_escaped(b, m->values[i], true);
            rn__puts(b, "\"");
        }
        if (le != NULL) {
            rn__puts(b, f->nlabels > 0 ? ",le=\"" : "le=\"");
            rn__puts(b, le);
            rn__puts(b, "\"");
        }
        rn__puts(b, "}");
    }
    rn__puts(b, " ");
}

static void rn__render_histogram(struct rn__sbuf *b, const struct rn_metric_family *f,
                                 const struct rn_metric *m)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
        rn__put_series_name(b, f, m, "_bucket", f->le[i]);
        rn__printf(b, "%llu\n", (unsigned long long)cum);
    }
    uint64_t sum = atomic_load_explicit(&m->sum, memory_order_relaxed);
    rn__put_series_name(b, f, m, "_sum", NULL);
    rn__put_value(b, f, (double)sum, false, 0);
    rn__puts(b, "\n");
    rn__put_series_name(b, f, m, "_count", NULL);
    rn__printf(b, "%llu\n", (unsigned long long)cum);
}

struct rn_metric_emitter {
    struct rn__sbuf *b;               /* output */
    const struct rn_metric_family *f; /* family being rendered */
    size_t n;                         /* samples emitted by its collector so far */
    bool header;                      /* HELP/TYPE written */
};

static void rn__put_header(struct rn_metric_emitter *e)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    if (e->header) {
        return;
    }
    e->header = true;
    rn__printf(e->b, "# HELP %s ", e->f->name);
    rn__put_escaped(e->b, e->f->help, false);
    rn__printf(e->b, "\n# TYPE %s %s\n", e->f->name, types[e->f->type]);
}

void rn_metric_emit(struct rn_metric_emitter *e, const char *const *values, int64_t value)
{
    if (e == NULL || e->n >= RN_METRICS_MAX_SERIES) {
        return;
    }
    const struct rn_metric_family *f = e->f;
    struct rn_metric tmp;
    memset(&tmp, 0, sizeof(tmp));
    for (size_t i = 0; i < f->nlabels; i++) {
        if (values == NULL || values[i] == NULL) {
            return;
        }
        tmp.values[i] = (char *)values[i];
    }
    if (f->type == RN_METRIC_COUNTER && value < 0) {
        value = 0;
    }
    rn__put_header(e);
    e->n++;
    rn__put_series_name(e->b, f, &tmp, "", NULL);
    rn__put_value(e->b, f, (double)value, true, value);
    rn__puts(e->b, "\n");
}

int rn_metrics_render(struct rn_metrics *r, char **out, size_t *len)
{
    struct rn__sbuf b = {0};
    rn__reserve(&b, 0);
    b.p[0] = '\0';
    pthread_mutex_lock(&r->lock);
    for (struct rn_metric_family *f = r->head; f != NULL; f = f->next) {
        struct rn_metric_emitter e = {.b = &b, .f = f};
        if (f->series != NULL) {
            rn__put_header(&e);
        }
        for (struct rn_metric *m = f->series; m != NULL; m = m->next) {
            if (f->type == RN_METRIC_HISTOGRAM) {
                rn__render_histogram(&b, f, m);
                continue;
            }
            int64_t v = m->fn != NULL ? m->fn(m->fn_arg)
                                      : atomic_load_explicit(&m->value, memory_order_relaxed);
            if (f->type == RN_METRIC_COUNTER && v < 0) {
                v = 0; /* a counter never goes negative; a bound reader may misbehave */
            }
            rn__put_series_name(&b, f, m, "", NULL);
            rn__put_value(&b, f, (double)v, true, v);
            rn__puts(&b, "\n");
        }
        if (f->collect != NULL) {
            f->collect(f->collect_arg, &e);
        }
    }
    pthread_mutex_unlock(&r->lock);
    *out = b.p;
    *len = b.len;
    return 0;
}
