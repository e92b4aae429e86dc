/*
 * Internals shared by storage/'s files: the backend vtable, the per-request operation record the
 * generic layer (store.c) hands to backends, URL parameters, and small helpers. Backends implement
 * one *attempt* of an operation; store.c owns deadlines, retries with backoff, cancellation and
 * delivery of the result to the caller's struct store_req.
 */
#ifndef RUNNEL_STORAGE_STORE_INT_H
#define RUNNEL_STORAGE_STORE_INT_H

#include <stdarg.h>
#include <sys/types.h>

#include "runnel/storage/store.h"

/* What one attempt produced; moved into the caller's request when the operation ends. */
struct store__result {
    int err;                     /* 0 or negative errno class */
    char msg[256];               /* detail for err */
    int http_status;             /* S3 only */
    uint8_t *body;               /* GET bytes (malloc) */
    size_t body_len;             /* bytes in body */
    uint64_t size;               /* object size */
    char etag[72];               /* without quotes */
    struct store_entry *entries; /* LIST (malloc, keys malloc) */
    size_t nentries;             /* entries used */
    char *next_token;            /* LIST continuation (malloc) or NULL */
    size_t nfailed;              /* DELETE_MANY failures */
};

/* One operation in flight: arguments (copied), timers, and the current attempt's result. */
struct store__op {
    struct store *store;     /* owner */
    struct store_req *req;   /* caller's request; NULL once delivered early (detached) */
    enum store_op_kind kind; /* what to do */
    char *key;               /* PUT/GET/HEAD/DELETE: the key, without the store prefix */
    const uint8_t *buf;      /* PUT: caller's bytes (borrowed until delivery) */
    size_t len;              /* PUT: bytes in buf */
    int flags;               /* PUT: STORE_IF_NONE_MATCH */
    uint64_t off;            /* GET: first byte */
    uint64_t rlen;           /* GET: bytes wanted; 0 = to the end */
    bool tail;               /* GET: rlen is a suffix length */
    char **keys;             /* DELETE_MANY keys (copied) */
    size_t nkeys;            /* number of keys */
    char *prefix;            /* LIST prefix or NULL */
    char *token;             /* LIST continuation or NULL */
    size_t max_keys;         /* LIST page size */
    uint32_t timeout_ms;     /* the deadline, relative to submission */

    struct store__result res;  /* filled by the backend during an attempt */
    uint64_t deadline;         /* loop time (ms) when the operation times out */
    int attempts;              /* attempts started */
    char last_err[160];        /* message of the last attempt that ended with an error, or "" */
    bool running;              /* an attempt is in the backend */
    bool stopping;             /* cancelled/timed out while running; deliver when it returns */
    int stop_err;              /* -ECANCELED or -ETIMEDOUT for a stop */
    bool ambiguous;            /* a mutating attempt ended with unknown outcome */
    bool finished;             /* result delivered or op abandoned; waiting to be freed */
    bool in_submit;            /* the first attempt is being started inside store_xxx() */
    bool done_pending;         /* an attempt ended inside submit; handled on the next turn */
    bool verifying;            /* HEAD after an ambiguous create-only PUT lost with -EEXIST */
    struct store__result lost; /* the -EEXIST result kept while verifying */
    uv_timer_t deadline_timer; /* fires at the deadline */
    uv_timer_t step_timer;     /* backoff between attempts and deferred delivery */
    int closing;               /* timer handles still closing */
    void *bctx;                /* backend's per-attempt state */
    struct store__op *next;    /* store's list of ops */
    struct store__op *prev;    /* store's list of ops */
    uint64_t started_ns;       /* uv_hrtime() at submission (metrics.c) */
};

struct store__ops {
    const char *name; /* "s3", "file", ... */
    /*
     * Starts one attempt. The backend fills op->res and calls store__attempt_done(op) exactly
     * once, possibly before start returns.
     */
    void (*start)(struct store *s, struct store__op *op);
    /*
     * Stops the attempt in flight. Returns true if stopped (store__attempt_done will not be
     * called), false if the attempt will still end with store__attempt_done.
     */
    bool (*abort)(struct store *s, struct store__op *op);
    /* Releases the backend; calls store__backend_closed(s) when its handles are gone. */
    void (*close)(struct store *s);
};

struct store {
    const struct store__ops *ops; /* backend */
    uv_loop_t *loop;              /* where everything runs */
    void *impl;                   /* backend state */
    uint32_t timeout_ms;          /* default deadline per request */
    int retries;                  /* retries after the first attempt */
    uint32_t retry_base_ms;       /* first backoff ceiling */
    uint32_t retry_cap_ms;        /* largest backoff ceiling */
    uint64_t rng;                 /* xorshift state for jitter */
    struct store__op *ops_head;   /* operations not yet freed */
    bool closing;                 /* store_close() was called */
    bool backend_closed;          /* ops->close finished */
    bool unmetered;               /* wrapped by faulty+: the outer store counts (metrics.c) */
};

/* One `name=value` pair of a URL query (both percent-decoded, malloc). */
struct store__param {
    char *name;  /* parameter name */
    char *value; /* its value ("" when absent) */
    bool used;   /* consumed by someone */
};

struct store__url {
    char *scheme;                /* e.g. "s3", "faulty+mem" */
    char *rest;                  /* between "://" and "?" (percent-decoded) */
    struct store__param *params; /* query parameters */
    size_t nparams;              /* count */
};

int store__url_parse(const char *url, struct store__url *u, char *err, size_t errlen);
void store__url_free(struct store__url *u);
/* The value of parameter `name` (marking it used) or NULL. */
const char *store__param(struct store__url *u, const char *name);
/* Parses an unsigned/double parameter; returns -EINVAL with a message on bad syntax. */
int store__param_u64(struct store__url *u, const char *name, uint64_t *out, char *err,
                     size_t errlen);
int store__param_double(struct store__url *u, const char *name, double *out, char *err,
                        size_t errlen);
int store__param_bool(struct store__url *u, const char *name, bool *out, char *err, size_t errlen);
/* -EINVAL naming the first parameter nobody used, else 0. */
int store__params_check(struct store__url *u, char *err, size_t errlen);

/* Opens a backend without the generic retry layer (for wrappers). */
int store__open_url(uv_loop_t *loop, struct store__url *u, const struct store_config *cfg,
                    struct store **out, int retries, char *err, size_t errlen);

/* Backend constructors: fill s->ops and s->impl from the URL, or fail with a message. */
int store__mem_open(struct store *s, struct store__url *u, char *err, size_t errlen);
int store__fs_open(struct store *s, struct store__url *u, char *err, size_t errlen);
int store__s3_open(struct store *s, struct store__url *u, const struct store_config *cfg, char *err,
                   size_t errlen);
int store__faulty_open(struct store *s, struct store__url *u, const struct store_config *cfg,
                       char *err, size_t errlen);

/* file:// counters, for tests and benchmarks. */
struct store__fs_stats {
    uint64_t inline_reads; /* GET/HEAD answered on the loop thread from a cached descriptor */
    uint64_t fallbacks;    /* inline GETs finished on the pool (data not in the page cache) */
    uint64_t pool_reads;   /* GET/HEAD started on the pool (key not in the descriptor cache) */
    uint64_t cached_opens; /* keys opened on the loop thread (openat2 RESOLVE_CACHED) */
    uint64_t evictions;    /* cached descriptors dropped (LRU, delete, overwrite, gone) */
    size_t cached;         /* descriptors in the cache now */
};

/* Copies the counters of a file:// store; -EINVAL for another backend. */
int store__fs_get_stats(struct store *s, struct store__fs_stats *out);

/* The preadv2() the file backend's inline reads use; tests replace it to inject EAGAIN. */
struct iovec;
extern ssize_t (*store__fs_preadv2)(int fd, const struct iovec *iov, int iovcnt, off_t off,
                                    int flags);

/* Called by a backend when an attempt has ended (op->res filled). */
void store__attempt_done(struct store__op *op);
/* Called by a backend's close once its handles are closed. */
void store__backend_closed(struct store *s);

/* Counts a finished operation (kind, outcome, bytes, latency, retries) in the process's metrics
 * registry; called once per operation just before its callback (metrics.c). */
void store__metrics_done(const struct store__op *op);

/* Sets op->res.err and a printf-style message; returns err. */
int store__fail(struct store__result *r, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void store__result_free(struct store__result *r);
/* Appends an entry (key copied) to a result's list. */
void store__result_add_entry(struct store__result *r, const char *key, size_t keylen, uint64_t size,
                             const char *etag);

/* Valid key: 1..1024 bytes, no NUL, no leading '/', no "." or ".." segment, no "//". */
bool store__key_valid(const char *key);

/* Uniform random double in [0,1) from a xorshift64* state. */
double store__rand01(uint64_t *state);

/* Wall-clock milliseconds. */
uint64_t store__now_ms(void);

#endif
