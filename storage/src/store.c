/*
 * The generic half of every store: opening by URL, argument checks and copies, deadlines,
 * retries with exponential backoff and full jitter, cancellation, and delivering each
 * operation's result to the caller exactly once. Backends (s3.c, fs.c, mem.c, faulty.c) only run
 * single attempts; see store_int.h for the contract between the two halves.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <strings.h>

#include "store_int.h"

#include "runnel/protocol/mem.h"

#define STORE__DEFAULT_TIMEOUT_MS 30000
#define STORE__DEFAULT_RETRIES 6
#define STORE__MAX_KEYS 1000

static void store__op_start_step(struct store__op *op, uint64_t delay_ms);
static void store__op_deliver(struct store__op *op);

uint64_t store__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double store__rand01(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

int store__fail(struct store__result *r, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
    va_end(ap);
    r->err = err;
    return err;
}

void store__result_free(struct store__result *r)
{
    free(r->body);
    for (size_t i = 0; i < r->nentries; i++) {
        free(r->entries[i].key);
    }
    free(r->entries);
    free(r->next_token);
    memset(r, 0, sizeof(*r));
}

void store__result_add_entry(struct store__result *r, const char *key, size_t keylen, uint64_t size,
                             const char *etag)
{
    if ((r->nentries & (r->nentries + 1)) == 0 || r->nentries == 0) {
        size_t cap = r->nentries == 0 ? 16 : (r->nentries + 1) * 2;
        r->entries = kp_xrealloc(r->entries, cap * sizeof(*r->entries));
    }
    struct store_entry *e = &r->entries[r->nentries++];
    memset(e, 0, sizeof(*e));
    e->key = kp_xmalloc(keylen + 1);
    memcpy(e->key, key, keylen);
    e->key[keylen] = '\0';
    e->size = size;
    if (etag != NULL) {
        snprintf(e->etag, sizeof(e->etag), "%s", etag);
    }
}

bool store__key_valid(const char *key)
{
    size_t len = key == NULL ? 0 : strlen(key);
    if (len == 0 || len > 1024 || key[0] == '/') {
        return false;
    }
    const char *seg = key;
    for (const char *p = key;; p++) {
        if (*p == '/' || *p == '\0') {
            size_t n = (size_t)(p - seg);
            if (n == 0) {
                return false; /* "a//b" or a trailing '/' */
            }
            if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.')) {
                return false;
            }
            if (*p == '\0') {
                break;
            }
            seg = p + 1;
        } else if ((unsigned char)*p < 0x20) {
            return false;
        }
    }
    return true;
}

const char *store_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case -ENOENT:
        return "not found";
    case -EEXIST:
        return "already exists";
    case -EAGAIN:
        return "transient failure";
    case -ETIMEDOUT:
        return "deadline exceeded";
    case -ECANCELED:
        return "cancelled";
    case -EACCES:
        return "access denied";
    case -ERANGE:
        return "range not satisfiable";
    case -EINVAL:
        return "invalid argument";
    case -EFBIG:
        return "object too large";
    case -EIO:
        return "permanent failure";
    case -EBADMSG:
        return "corrupt object";
    default:
        return "error";
    }
}

bool store_err_retriable(int err)
{
    return err == -EAGAIN || err == -ETIMEDOUT;
}

/* ---- URL parsing ---- */

static int store__hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static char *store__pct_decode(const char *s, size_t n, bool plus_space)
{
    char *out = kp_xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && store__hexval(s[i + 1]) >= 0 &&
            store__hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(store__hexval(s[i + 1]) * 16 + store__hexval(s[i + 2]));
            i += 2;
        } else if (plus_space && s[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

int store__url_parse(const char *url, struct store__url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    const char *sep = strstr(url, "://");
    if (sep == NULL || sep == url) {
        snprintf(err, errlen, "store URL '%s' has no scheme (want s3://, file://, mem://)", url);
        return -EINVAL;
    }
    u->scheme = kp_xmalloc((size_t)(sep - url) + 1);
    memcpy(u->scheme, url, (size_t)(sep - url));
    u->scheme[sep - url] = '\0';
    const char *rest = sep + 3;
    const char *q = strchr(rest, '?');
    size_t restlen = q == NULL ? strlen(rest) : (size_t)(q - rest);
    u->rest = store__pct_decode(rest, restlen, false);
    if (q == NULL) {
        return 0;
    }
    const char *p = q + 1;
    while (*p != '\0') {
        const char *amp = strchr(p, '&');
        size_t n = amp == NULL ? strlen(p) : (size_t)(amp - p);
        if (n > 0) {
            const char *eq = memchr(p, '=', n);
            u->params = kp_xrealloc(u->params, (u->nparams + 1) * sizeof(*u->params));
            struct store__param *pa = &u->params[u->nparams++];
            size_t nl = eq == NULL ? n : (size_t)(eq - p);
            pa->name = store__pct_decode(p, nl, true);
            pa->value = eq == NULL ? kp_xstrdup("") : store__pct_decode(eq + 1, n - nl - 1, true);
            pa->used = false;
        }
        if (amp == NULL) {
            break;
        }
        p = amp + 1;
    }
    return 0;
}

void store__url_free(struct store__url *u)
{
    for (size_t i = 0; i < u->nparams; i++) {
        free(u->params[i].name);
        free(u->params[i].value);
    }
    free(u->params);
    free(u->scheme);
    free(u->rest);
    memset(u, 0, sizeof(*u));
}

const char *store__param(struct store__url *u, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < u->nparams; i++) {
        if (strcmp(u->params[i].name, name) == 0) {
            u->params[i].used = true;
            v = u->params[i].value;
        }
    }
    return v;
}

int store__param_u64(struct store__url *u, const char *name, uint64_t *out, char *err,
                     size_t errlen)
{
    const char *v = store__param(u, name);
    if (v == NULL) {
        return 0;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (v[0] == '\0' || v[0] == '-' || *end != '\0' || errno != 0) {
        snprintf(err, errlen, "parameter %s=%s: want a non-negative integer", name, v);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

int store__param_double(struct store__url *u, const char *name, double *out, char *err,
                        size_t errlen)
{
    const char *v = store__param(u, name);
    if (v == NULL) {
        return 0;
    }
    char *end = NULL;
    double x = strtod(v, &end);
    if (v[0] == '\0' || *end != '\0' || !(x >= 0.0 && x <= 1.0)) {
        snprintf(err, errlen, "parameter %s=%s: want a number between 0 and 1", name, v);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

int store__param_bool(struct store__url *u, const char *name, bool *out, char *err, size_t errlen)
{
    const char *v = store__param(u, name);
    if (v == NULL) {
        return 0;
    }
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "") == 0) {
        *out = true;
    } else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *out = false;
    } else {
        snprintf(err, errlen, "parameter %s=%s: want true or false", name, v);
        return -EINVAL;
    }
    return 0;
}

int store__params_check(struct store__url *u, char *err, size_t errlen)
{
    for (size_t i = 0; i < u->nparams; i++) {
        if (!u->params[i].used) {
            snprintf(err, errlen, "unknown parameter '%s' for a %s:// store", u->params[i].name,
                     u->scheme);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- opening and closing ---- */

int store__open_url(uv_loop_t *loop, struct store__url *u, const struct store_config *cfg,
                    struct store **out, int retries, char *err, size_t errlen)
{
    struct store *s = kp_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->timeout_ms =
        cfg != NULL && cfg->timeout_ms != 0 ? cfg->timeout_ms : STORE__DEFAULT_TIMEOUT_MS;
    s->retries = retries;
    s->retry_base_ms = 50;
    s->retry_cap_ms = 5000;
    s->rng = (store__now_ms() ^ (uint64_t)(uintptr_t)s) | 1;
    uint64_t v;
    int rc = 0;
    v = s->timeout_ms;
    if ((rc = store__param_u64(u, "timeout_ms", &v, err, errlen)) < 0) {
        goto out_free;
    }
    s->timeout_ms = v == 0 ? STORE__DEFAULT_TIMEOUT_MS : (uint32_t)(v > 86400000 ? 86400000 : v);
    v = (uint64_t)s->retries;
    if ((rc = store__param_u64(u, "retries", &v, err, errlen)) < 0) {
        goto out_free;
    }
    s->retries = v > 100 ? 100 : (int)v;
    v = s->retry_base_ms;
    if ((rc = store__param_u64(u, "retry_base_ms", &v, err, errlen)) < 0) {
        goto out_free;
    }
    s->retry_base_ms = v > 60000 ? 60000 : (uint32_t)v;
    v = s->retry_cap_ms;
    if ((rc = store__param_u64(u, "retry_cap_ms", &v, err, errlen)) < 0) {
        goto out_free;
    }
    s->retry_cap_ms = v > 600000 ? 600000 : (uint32_t)v;

    const char *scheme = u->scheme;
    if (strncmp(scheme, "faulty+", 7) == 0) {
        rc = store__faulty_open(s, u, cfg, err, errlen);
    } else if (strcmp(scheme, "mem") == 0) {
        rc = store__mem_open(s, u, err, errlen);
    } else if (strcmp(scheme, "file") == 0) {
        rc = store__fs_open(s, u, err, errlen);
    } else if (strcmp(scheme, "s3") == 0) {
        rc = store__s3_open(s, u, cfg, err, errlen);
    } else {
        snprintf(err, errlen, "unknown store scheme '%s://' (want s3, file, mem, faulty+...)",
                 scheme);
        rc = -EINVAL;
    }
    if (rc < 0) {
        goto out_free;
    }
    *out = s;
    return 0;
out_free:
    free(s);
    return rc;
}

int store_open(uv_loop_t *loop, const char *url, const struct store_config *cfg, struct store **out,
               char *err, size_t errlen)
{
    char dummy[8];
    if (err == NULL) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    struct store__url u;
    int rc = store__url_parse(url, &u, err, errlen);
    if (rc < 0) {
        store__url_free(&u);
        return rc;
    }
    int retries = cfg != NULL && cfg->retries >= 0 ? cfg->retries : STORE__DEFAULT_RETRIES;
    rc = store__open_url(loop, &u, cfg, out, retries, err, errlen);
    store__url_free(&u);
    return rc;
}

const char *store_backend(const struct store *s)
{
    return s->ops->name;
}

static void store__maybe_free(struct store *s)
{
    if (s->closing && s->ops_head == NULL && !s->backend_closed) {
        s->backend_closed = true;
        s->ops->close(s); /* ends with store__backend_closed(s), which frees s */
    }
}

void store__backend_closed(struct store *s)
{
    free(s);
}

void store_close(struct store *s)
{
    if (s->closing) {
        return;
    }
    s->closing = true;
    struct store__op *next;
    for (struct store__op *op = s->ops_head; op != NULL; op = next) {
        next = op->next;
        if (op->req != NULL && op->req->op_ == op) {
            store_cancel(op->req);
        }
    }
    store__maybe_free(s);
}

/* ---- operations ---- */

static void store__op_closed(uv_handle_t *h)
{
    struct store__op *op = h->data;
    if (--op->closing > 0) {
        return;
    }
    struct store *s = op->store;
    if (op->prev != NULL) {
        op->prev->next = op->next;
    } else {
        s->ops_head = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    }
    store__result_free(&op->res);
    store__result_free(&op->lost);
    free(op->key);
    for (size_t i = 0; i < op->nkeys; i++) {
        free(op->keys[i]);
    }
    free(op->keys);
    free(op->prefix);
    free(op->token);
    free(op);
    store__maybe_free(s);
}

/* Frees the op once the backend is done with it and its timers are closed. */
static void store__op_release(struct store__op *op)
{
    op->closing = 2;
    uv_close((uv_handle_t *)&op->deadline_timer, store__op_closed);
    uv_close((uv_handle_t *)&op->step_timer, store__op_closed);
}

/* Moves the result into the caller's request and calls back; the op is finished afterwards. */
static void store__op_deliver(struct store__op *op)
{
    struct store_req *req = op->req;
    op->finished = true;
    uv_timer_stop(&op->deadline_timer);
    uv_timer_stop(&op->step_timer);
    if (req != NULL) {
        struct store__result *r = &op->res;
        store__metrics_done(op);
        req->err = r->err;
        memcpy(req->msg, r->msg, sizeof(req->msg));
        req->http_status = r->http_status;
        req->attempts = op->attempts;
        req->ambiguous = op->ambiguous;
        req->body = r->body;
        req->body_len = r->body_len;
        req->size = r->size;
        memcpy(req->etag, r->etag, sizeof(req->etag));
        req->entries = r->entries;
        req->nentries = r->nentries;
        req->next_token = r->next_token;
        req->nfailed = r->nfailed;
        memset(r, 0, sizeof(*r));
        req->op_ = NULL;
        op->req = NULL;
    }
    if (!op->running) {
        store__op_release(op);
    }
    if (req != NULL) {
        req->cb(req);
    }
}

static bool store__op_mutates(const struct store__op *op)
{
    return op->kind == STORE_PUT || op->kind == STORE_DELETE || op->kind == STORE_DELETE_MANY;
}

static void store__op_attempt(struct store__op *op)
{
    op->attempts++;
    op->running = true;
    if (op->res.err != 0 && op->res.msg[0] != '\0') {
        /* Kept for the message of a deadline that falls while the next attempt runs. */
        snprintf(op->last_err, sizeof(op->last_err), "%.159s", op->res.msg);
    }
    store__result_free(&op->res);
    op->store->ops->start(op->store, op);
}

/* Ends a stopped op: the message says why and what the last attempt saw. */
static void store__op_kind_restore(struct store__op *op);

static void store__op_deliver_stop(struct store__op *op)
{
    store__op_kind_restore(op);
    /* What the attempt in flight saw, else what the last finished attempt saw. */
    char last[200];
    bool cur = op->res.err != 0 && op->res.msg[0] != '\0';
    snprintf(last, sizeof(last), "%.150s", cur ? op->res.msg : op->last_err);
    store__result_free(&op->res);
    if (op->stop_err == -ETIMEDOUT) {
        if (last[0] != '\0') {
            store__fail(&op->res, -ETIMEDOUT,
                        "deadline of %u ms exceeded after %d attempt(s); last error: %s",
                        op->timeout_ms, op->attempts, last);
        } else {
            store__fail(&op->res, -ETIMEDOUT, "deadline of %u ms exceeded after %d attempt(s)",
                        op->timeout_ms, op->attempts);
        }
    } else {
        store__fail(&op->res, -ECANCELED, "cancelled after %d attempt(s)", op->attempts);
    }
    store__op_deliver(op);
}

static void store__step_cb(uv_timer_t *t)
{
    struct store__op *op = t->data;
    if (op->finished) {
        return;
    }
    if (op->stopping) {
        store__op_deliver_stop(op);
        return;
    }
    if (op->done_pending) {
        op->done_pending = false;
        store__attempt_done(op);
        return;
    }
    store__op_attempt(op);
}

static void store__op_start_step(struct store__op *op, uint64_t delay_ms)
{
    uv_timer_start(&op->step_timer, store__step_cb, delay_ms, 0);
}

/* Undoes the HEAD detour of a verification, if one was under way. */
static void store__op_kind_restore(struct store__op *op)
{
    if (op->verifying) {
        op->verifying = false;
        op->kind = STORE_PUT;
        store__result_free(&op->lost);
    }
}

static void store__op_verify_done(struct store__op *op)
{
    struct store__result *r = &op->res;
    op->verifying = false;
    op->kind = STORE_PUT;
    bool mine = false;
    if (r->err == 0 && r->size == op->len && strlen(r->etag) == 32) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        char hex[33];
        EVP_Digest(op->buf != NULL ? (const void *)op->buf : "", op->len, md, &mdlen, EVP_md5(),
                   NULL);
        for (unsigned int i = 0; i < 16; i++) {
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        }
        mine = strcasecmp(hex, r->etag) == 0;
    }
    if (mine) {
        char etag[sizeof(r->etag)];
        memcpy(etag, r->etag, sizeof(etag));
        store__result_free(r);
        store__result_free(&op->lost);
        memcpy(r->etag, etag, sizeof(etag));
        r->size = op->len;
        snprintf(r->msg, sizeof(r->msg),
                 "created by an earlier attempt whose response was lost (ETag verified)");
    } else {
        store__result_free(r);
        *r = op->lost;
        memset(&op->lost, 0, sizeof(op->lost));
    }
    store__op_deliver(op);
}

void store__attempt_done(struct store__op *op)
{
    struct store *s = op->store;
    op->running = false;
    op->bctx = NULL;
    if (op->in_submit) {
        /* Never call back from inside the caller's store_xxx(): finish on the next turn. */
        op->done_pending = true;
        store__op_start_step(op, 0);
        return;
    }
    if (op->finished) {
        /* Delivered early (detached); the backend has let go now. */
        store__op_release(op);
        return;
    }
    struct store__result *r = &op->res;
    if (store__op_mutates(op) && (store_err_retriable(r->err) || op->stopping)) {
        op->ambiguous = true;
    }
    if (op->stopping) {
        store__op_kind_restore(op);
        store__op_deliver_stop(op);
        return;
    }
    if (op->verifying) {
        store__op_verify_done(op);
        return;
    }
    if (op->kind == STORE_PUT && (op->flags & STORE_IF_NONE_MATCH) && op->ambiguous &&
        r->err == -EEXIST && !s->closing) {
        /* An earlier attempt may have created the key and lost its response: if the object's
         * ETag is the MD5 of our bytes (S3's ETag of a single-part object), it is ours. */
        op->verifying = true;
        op->lost = *r;
        memset(r, 0, sizeof(*r));
        op->kind = STORE_HEAD;
        op->running = true;
        s->ops->start(s, op);
        return;
    }
    if (store_err_retriable(r->err) && op->attempts <= s->retries && !s->closing) {
        uint64_t ceil = s->retry_base_ms;
        for (int i = 1; i < op->attempts && ceil < s->retry_cap_ms; i++) {
            ceil *= 2;
        }
        if (ceil > s->retry_cap_ms) {
            ceil = s->retry_cap_ms;
        }
        uint64_t delay = (uint64_t)(store__rand01(&s->rng) * (double)(ceil + 1));
        uint64_t now = uv_now(s->loop);
        if (now + delay < op->deadline) {
            store__op_start_step(op, delay);
            return;
        }
    }
    if (r->err != 0 && op->attempts > 1) {
        char tmp[sizeof(r->msg)];
        snprintf(tmp, sizeof(tmp), "%.200s (after %d attempts)", r->msg, op->attempts);
        memcpy(r->msg, tmp, sizeof(tmp));
    }
    store__op_deliver(op);
}

/*
 * Stops the op with `err` (-ECANCELED or -ETIMEDOUT). Delivery always happens from a later
 * callback, never inside the caller's store_cancel().
 */
static void store__op_stop(struct store__op *op, int err)
{
    struct store *s = op->store;
    if (op->finished || op->stopping) {
        return;
    }
    op->stopping = true;
    op->stop_err = err;
    if (op->running) {
        if (store__op_mutates(op)) {
            op->ambiguous = true;
        }
        if (s->ops->abort(s, op)) {
            op->running = false;
            op->bctx = NULL;
            store__result_free(&op->res);
        } else if (op->kind == STORE_PUT) {
            /* The backend may still read the caller's buffer: wait for it to finish. */
            return;
        }
        /* Otherwise deliver now; the attempt ends in the background and then frees the op. */
    }
    store__op_start_step(op, 0);
}

static void store__deadline_cb(uv_timer_t *t)
{
    store__op_stop(t->data, -ETIMEDOUT);
}

int store_cancel(struct store_req *req)
{
    if (req == NULL || req->op_ == NULL) {
        return -EINVAL;
    }
    store__op_stop(req->op_, -ECANCELED);
    return 0;
}

void store_req_cleanup(struct store_req *req)
{
    free(req->body);
    req->body = NULL;
    req->body_len = 0;
    for (size_t i = 0; i < req->nentries; i++) {
        free(req->entries[i].key);
    }
    free(req->entries);
    req->entries = NULL;
    req->nentries = 0;
    free(req->next_token);
    req->next_token = NULL;
}

static struct store__op *store__op_new(struct store *s, struct store_req *req,
                                       enum store_op_kind kind, store_cb cb)
{
    struct store__op *op = kp_xcalloc(1, sizeof(*op));
    op->store = s;
    op->req = req;
    op->kind = kind;
    void *data = req->data;
    uint32_t timeout = req->timeout_ms;
    memset(req, 0, sizeof(*req));
    req->data = data;
    req->timeout_ms = timeout;
    req->cb = cb;
    req->kind = kind;
    req->op_ = op;
    op->timeout_ms = timeout != 0 ? timeout : s->timeout_ms;
    return op;
}

static int store__op_submit(struct store *s, struct store__op *op)
{
    uv_timer_init(s->loop, &op->deadline_timer);
    uv_timer_init(s->loop, &op->step_timer);
    op->deadline_timer.data = op;
    op->step_timer.data = op;
    op->deadline = uv_now(s->loop) + op->timeout_ms;
    op->started_ns = uv_hrtime();
    op->next = s->ops_head;
    if (s->ops_head != NULL) {
        s->ops_head->prev = op;
    }
    s->ops_head = op;
    uv_timer_start(&op->deadline_timer, store__deadline_cb, op->timeout_ms, 0);
    /* The first attempt starts now; if it ends at once, its result waits for the next turn. */
    op->in_submit = true;
    store__op_attempt(op);
    op->in_submit = false;
    return 0;
}

static int store__check(struct store *s, struct store_req *req, store_cb cb)
{
    if (s == NULL || req == NULL || cb == NULL) {
        return -EINVAL;
    }
    if (req->op_ != NULL) {
        return -EBUSY;
    }
    if (s->closing) {
        return -ECANCELED;
    }
    return 0;
}

int store_put(struct store *s, struct store_req *req, const char *key, const void *buf, size_t len,
              int flags, store_cb cb)
{
    int rc = store__check(s, req, cb);
    if (rc < 0) {
        return rc;
    }
    if (!store__key_valid(key) || (buf == NULL && len > 0) || (flags & ~STORE_IF_NONE_MATCH)) {
        return -EINVAL;
    }
    struct store__op *op = store__op_new(s, req, STORE_PUT, cb);
    op->key = kp_xstrdup(key);
    op->buf = buf;
    op->len = len;
    op->flags = flags;
    return store__op_submit(s, op);
}

int store_get(struct store *s, struct store_req *req, const char *key, uint64_t off, uint64_t len,
              store_cb cb)
{
    int rc = store__check(s, req, cb);
    if (rc < 0) {
        return rc;
    }
    if (!store__key_valid(key) || (len > 0 && off + len < off)) {
        return -EINVAL;
    }
    struct store__op *op = store__op_new(s, req, STORE_GET, cb);
    op->key = kp_xstrdup(key);
    op->off = off;
    op->rlen = len;
    return store__op_submit(s, op);
}

int store_get_tail(struct store *s, struct store_req *req, const char *key, uint64_t len,
                   store_cb cb)
{
    int rc = store__check(s, req, cb);
    if (rc < 0) {
        return rc;
    }
    if (!store__key_valid(key) || len == 0) {
        return -EINVAL;
    }
    struct store__op *op = store__op_new(s, req, STORE_GET, cb);
    op->key = kp_xstrdup(key);
    op->rlen = len;
    op->tail = true;
    return store__op_submit(s, op);
}

int store_head(struct store *s, struct store_req *req, const char *key, store_cb cb)
{
    int rc = store__check(s, req, cb);
    if (rc < 0) {
        return rc;
    }
    if (!store__key_valid(key)) {
        return -EINVAL;
    }
    struct store__op *op = store__op_new(s, req, STORE_HEAD, cb);
    op->key = kp_xstrdup(key);
    return store__op_submit(s, op);
}

int store_delete(struct store *s, struct store_req *req, const char *key, store_cb cb)
{
    int rc = store__check(s, req, cb);
    if (rc < 0) {
        return rc;
    }
    if (!store__key_valid(key)) {
        return -EINVAL;
    }
    struct store__op *op = store__op_new(s, req, STORE_DELETE, cb);
    op->key = kp_xstrdup(key);
    return store__op_submit(s, op);
}

int store_delete_many(struct store *s, struct store_req *req, const char *const *keys, size_t n,
                      store_cb cb)
{
    int rc = store__check(s, req, cb);
    if (rc < 0) {
        return rc;
    }
    if (n > 1000000 || (n > 0 && keys == NULL)) {
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!store__key_valid(keys[i])) {
            return -EINVAL;
        }
    }
    struct store__op *op = store__op_new(s, req, STORE_DELETE_MANY, cb);
    op->keys = kp_xcalloc(n == 0 ? 1 : n, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        op->keys[i] = kp_xstrdup(keys[i]);
    }
    op->nkeys = n;
    return store__op_submit(s, op);
}

int store_list(struct store *s, struct store_req *req, const char *prefix, const char *token,
               size_t max_keys, store_cb cb)
{
    int rc = store__check(s, req, cb);
    if (rc < 0) {
        return rc;
    }
    if ((prefix != NULL && strlen(prefix) > 1024) || (token != NULL && strlen(token) > 2048)) {
        return -EINVAL;
    }
    struct store__op *op = store__op_new(s, req, STORE_LIST, cb);
    op->prefix = prefix != NULL && prefix[0] != '\0' ? kp_xstrdup(prefix) : NULL;
    op->token = token != NULL && token[0] != '\0' ? kp_xstrdup(token) : NULL;
    op->max_keys = max_keys == 0 || max_keys > STORE__MAX_KEYS ? STORE__MAX_KEYS : max_keys;
    return store__op_submit(s, op);
}
