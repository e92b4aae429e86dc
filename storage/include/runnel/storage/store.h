/*
 * Runnel's object-store interface: a small vtable (like SQLite's VFS) with one implementation per
 * backend, chosen by URL, all asynchronous on a libuv loop.
 *
 *   s3://bucket/prefix?endpoint=http://host:port&region=us-east-1&path_style=true
 *   file:///absolute/path?fd_cache=64&inline_max=8388608   (see docs/storage.md)
 *   mem://            (process-local, for unit tests)
 *   faulty+<url>?put_error_rate=0.1&latency_ms=5&...   (fault injection around any backend)
 *
 * Every operation is described by a caller-owned struct store_req, completes exactly once by
 * calling req->cb on the loop thread (never from inside the submitting call), has a deadline and
 * can be cancelled. The result is a classified error that says what to do next:
 *
 *   0            done
 *   -ENOENT      the key does not exist (GET/HEAD)
 *   -EEXIST      a create-only PUT lost: the key already existed (if an earlier attempt's response
 *                was lost, the store first checks by HEAD + ETag whether the object is ours and
 *                then reports success; `ambiguous` is set either way)
 *   -EAGAIN      transient (throttled, 5xx, connection reset/refused); retried already
 *   -ETIMEDOUT   the request's deadline passed
 *   -ECANCELED   store_cancel() or store_close() stopped it
 *   -EACCES      authentication/authorisation failed (wrong key or secret); not retried
 *   -ERANGE      a byte range starts beyond the object's end
 *   -EINVAL      bad argument (invalid key, range)
 *   -EFBIG       a GET body is larger than the configured cap
 *   -EIO         permanent failure; give up
 *
 * plus a one-line human message in req->msg. Transient failures are retried inside the store
 * with exponential backoff and full jitter, bounded by `retries` attempts and the deadline.
 *
 * Threading: a store and its requests belong to the loop thread; no call is thread-safe.
 */
#ifndef RUNNEL_STORAGE_STORE_H
#define RUNNEL_STORAGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct store;
struct store_req;
struct store__op;

typedef void (*store_cb)(struct store_req *req);

enum store_op_kind {
    STORE_PUT,
    STORE_GET,
    STORE_HEAD,
    STORE_DELETE,
    STORE_DELETE_MANY,
    STORE_LIST,
};

#define STORE_IF_NONE_MATCH 0x1 /* PUT: create only; -EEXIST if the key exists */

/* One key returned by LIST; keys are relative to the store's prefix. */
struct store_entry {
    char *key;     /* NUL-terminated, owned by the request */
    uint64_t size; /* bytes */
    char etag[72]; /* as the backend reports it, without quotes; may be empty */
};

struct store_req {
    /* Set by the caller (or by the store_put()/store_get()... helpers). */
    store_cb cb;         /* completion callback; required */
    void *data;          /* free for the caller */
    uint32_t timeout_ms; /* deadline from submission; 0 = the store's default */

    /* Results, valid inside the callback until store_req_cleanup(). */
    enum store_op_kind kind; /* which operation this was */
    int err;                 /* 0 or a negative errno from the list above */
    char msg[256];           /* human-readable detail when err != 0 */
    int http_status;         /* last HTTP status for S3, else 0 */
    int attempts;            /* attempts made (1 + retries) */
    bool ambiguous;          /* a mutating attempt ended with unknown outcome before this result */
    uint8_t *body;           /* GET: the bytes read (owned; freed by store_req_cleanup) */
    size_t body_len;         /* GET: bytes in body */
    uint64_t size;           /* GET/HEAD: total object size in bytes */
    char etag[72];           /* PUT/GET/HEAD: entity tag without quotes, when the backend has one */
    struct store_entry *entries; /* LIST: keys in ascending byte order (owned) */
    size_t nentries;             /* LIST: number of entries */
    char *next_token;            /* LIST: pass to the next call; NULL when the listing is done */
    size_t nfailed;              /* DELETE_MANY: keys that could not be deleted */

    struct store__op *op_; /* private: the operation in flight */
};

/* Options not carried by the URL (URL parameters override nothing here; these are defaults). */
struct store_config {
    const char *access_key;    /* S3 credentials; NULL: URL parameter or AWS_ACCESS_KEY_ID */
    const char *secret_key;    /* NULL: URL parameter or AWS_SECRET_ACCESS_KEY */
    const char *session_token; /* NULL: URL parameter or AWS_SESSION_TOKEN */
    const char *ca_file;       /* PEM bundle for TLS verification; NULL: system default */
    uint32_t timeout_ms;       /* default deadline per request; 0: 30000 */
    int retries;               /* retries after the first attempt; -1: default 6 */
};

/*
 * Opens the store named by `url` on `loop`. `cfg` may be NULL. On success stores the handle in
 * *out and returns 0; on failure returns -EINVAL (bad URL or parameter) or another negative errno
 * and, when `err` is not NULL, writes a message into err[errlen].
 */
int store_open(uv_loop_t *loop, const char *url, const struct store_config *cfg, struct store **out,
               char *err, size_t errlen);

/*
 * Cancels every request in flight (their callbacks run with -ECANCELED on later loop
 * iterations), releases the store's handles and frees it once they are closed. The
 * caller keeps running the loop until it has no more handles, as with any libuv object.
 */
void store_close(struct store *s);

/* The backend's name ("s3", "file", "mem", "faulty"). */
const char *store_backend(const struct store *s);

/*
 * Operations. Each fills `req` (zeroed before its first use; previous results cleaned up),
 * submits it and returns 0; req->cb runs later exactly once, never inside this call. `data` and
 * `timeout_ms` are kept, every other field is reset. A negative return (-EINVAL for a bad key or
 * range, -EBUSY if req is in flight, -ECANCELED if the store is closing) means nothing was
 * submitted and the callback will not run.
 * Keys are copied. PUT borrows `buf` until the callback runs.
 */
int store_put(struct store *s, struct store_req *req, const char *key, const void *buf, size_t len,
              int flags, store_cb cb);

/* GET of the whole object (len == 0 and off == 0) or of bytes [off, off+len). The read stops at
 * the object's end, so body_len may be less than len. */
int store_get(struct store *s, struct store_req *req, const char *key, uint64_t off, uint64_t len,
              store_cb cb);

/* GET of the last `len` bytes (an HTTP suffix range); req->size tells the object's size. */
int store_get_tail(struct store *s, struct store_req *req, const char *key, uint64_t len,
                   store_cb cb);

int store_head(struct store *s, struct store_req *req, const char *key, store_cb cb);

/* Deletes one key; deleting a missing key succeeds (as in S3). */
int store_delete(struct store *s, struct store_req *req, const char *key, store_cb cb);

/* Deletes `n` keys (copied); req->nfailed counts failures, err is the first failure's class. */
int store_delete_many(struct store *s, struct store_req *req, const char *const *keys, size_t n,
                      store_cb cb);

/*
 * Lists keys starting with `prefix` (may be NULL), at most `max_keys` (0: 1000) per call, in
 * ascending byte order. `token` is NULL for the first page, else the previous next_token.
 */
int store_list(struct store *s, struct store_req *req, const char *prefix, const char *token,
               size_t max_keys, store_cb cb);

/*
 * Asks the store to stop `req`. Its callback still runs exactly once (with -ECANCELED unless it
 * had already finished). A PUT whose bytes are being written may be applied anyway; the callback
 * then still says -ECANCELED and sets ambiguous. Returns 0, or -EINVAL if req is not in flight.
 */
int store_cancel(struct store_req *req);

/* Frees the results held by `req` (body, entries, token). Safe to call more than once. */
void store_req_cleanup(struct store_req *req);

/* A short name for a store error ("not found", "already exists", ...). */
const char *store_strerror(int err);

/* True for errors that a later retry might cure (-EAGAIN, -ETIMEDOUT). */
bool store_err_retriable(int err);

#endif
