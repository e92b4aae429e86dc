/*
 * faulty+<url> — wraps any store and injects the failures that reliability tests need, driven by
 * URL parameters (all rates are probabilities per operation, 0..1):
 *
 *   error_rate, put_error_rate, get_error_rate, head_error_rate, delete_error_rate,
 *   list_error_rate       fail with -EAGAIN before the inner store sees the operation
 *   error=eio|eacces|...  the class injected errors carry (default eagain)
 *   lost_response_rate    perform the operation, then report -EAGAIN ("response lost"): the
 *                         caller cannot tell it was applied
 *   put_lost_response_rate  the same for PUTs only (overrides lost_response_rate for PUTs)
 *   truncate_rate         GET returns success with a body cut short at a random length
 *   corrupt_rate          GET returns success with one byte flipped
 *   latency_ms            added before every operation reaches the inner store
 *   outage=START-END      every operation in [START, END) ms after the store opened fails
 *                         with -EAGAIN ("outage")
 *   seed=N                makes the fault sequence reproducible
 *
 * Other parameters are passed on to the inner store, which is opened without retries: the outer
 * store's retry loop sees the injected faults exactly as it would see real ones.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#include "runnel/protocol/mem.h"

struct store__faulty {
    struct store *inner;   /* wrapped store */
    double error_rate[6];  /* per enum store_op_kind */
    int error_class;       /* negative errno of injected errors */
    double lost_rate[6];   /* per enum store_op_kind: applied, response lost */
    double truncate_rate;  /* GET cut short */
    double corrupt_rate;   /* GET byte flipped */
    uint64_t latency_ms;   /* added per operation */
    uint64_t outage_start; /* ms after open */
    uint64_t outage_end;   /* ms after open; 0 = no outage */
    uint64_t opened_at;    /* loop time at open */
    uint64_t rng;          /* xorshift state */
    uint64_t injected;     /* faults injected so far (for tests) */
};

struct store__faulty_call {
    uv_timer_t timer;        /* latency */
    struct store_req inner;  /* request on the inner store */
    struct store__op *op;    /* outer operation */
    struct store__faulty *f; /* backend */
    bool inner_running;      /* inner request submitted and not yet back */
};

static const char *const store__faulty_kind_names[] = {"put",    "get",    "head",
                                                       "delete", "delete", "list"};

static void store__faulty_call_free(uv_handle_t *h)
{
    free(h->data);
}

static void store__faulty_finish(struct store__faulty_call *c)
{
    struct store__op *op = c->op;
    uv_close((uv_handle_t *)&c->timer, store__faulty_call_free);
    store__attempt_done(op);
}

static void store__faulty_inner_cb(struct store_req *ireq)
{
    struct store__faulty_call *c = ireq->data;
    struct store__faulty *f = c->f;
    struct store__op *op = c->op;
    struct store__result *r = &op->res;
    c->inner_running = false;
    r->err = ireq->err;
    memcpy(r->msg, ireq->msg, sizeof(r->msg));
    r->http_status = ireq->http_status;
    r->body = ireq->body;
    r->body_len = ireq->body_len;
    r->size = ireq->size;
    memcpy(r->etag, ireq->etag, sizeof(r->etag));
    r->entries = ireq->entries;
    r->nentries = ireq->nentries;
    r->next_token = ireq->next_token;
    r->nfailed = ireq->nfailed;
    ireq->body = NULL;
    ireq->entries = NULL;
    ireq->nentries = 0;
    ireq->next_token = NULL;
    if (r->err == 0) {
        if (f->lost_rate[op->kind] > 0 && store__rand01(&f->rng) < f->lost_rate[op->kind]) {
            f->injected++;
            store__result_free(r);
            store__fail(r, -EAGAIN, "response lost (injected; the %s was applied)",
                        store__faulty_kind_names[op->kind]);
        } else if (op->kind == STORE_GET && r->body_len > 0 && f->truncate_rate > 0 &&
                   store__rand01(&f->rng) < f->truncate_rate) {
            f->injected++;
            r->body_len = (size_t)(store__rand01(&f->rng) * (double)r->body_len);
        } else if (op->kind == STORE_GET && r->body_len > 0 && f->corrupt_rate > 0 &&
                   store__rand01(&f->rng) < f->corrupt_rate) {
            f->injected++;
            size_t at = (size_t)(store__rand01(&f->rng) * (double)r->body_len);
            r->body[at] ^= (uint8_t)(1u << (f->rng % 8));
        }
    }
    store__faulty_finish(c);
}

static void store__faulty_submit(struct store__faulty_call *c)
{
    struct store__op *op = c->op;
    struct store *in = c->f->inner;
    struct store_req *ir = &c->inner;
    memset(ir, 0, sizeof(*ir));
    ir->data = c;
    uint64_t now = uv_now(op->store->loop);
    ir->timeout_ms = op->deadline > now + 1 ? (uint32_t)(op->deadline - now) : 1;
    int rc = -EINVAL;
    switch (op->kind) {
    case STORE_PUT:
        rc = store_put(in, ir, op->key, op->buf, op->len, op->flags, store__faulty_inner_cb);
        break;
    case STORE_GET:
        rc = op->tail ? store_get_tail(in, ir, op->key, op->rlen, store__faulty_inner_cb)
                      : store_get(in, ir, op->key, op->off, op->rlen, store__faulty_inner_cb);
        break;
    case STORE_HEAD:
        rc = store_head(in, ir, op->key, store__faulty_inner_cb);
        break;
    case STORE_DELETE:
        rc = store_delete(in, ir, op->key, store__faulty_inner_cb);
        break;
    case STORE_DELETE_MANY:
        rc = store_delete_many(in, ir, (const char *const *)op->keys, op->nkeys,
                               store__faulty_inner_cb);
        break;
    case STORE_LIST:
        rc = store_list(in, ir, op->prefix, op->token, op->max_keys, store__faulty_inner_cb);
        break;
    }
    if (rc < 0) {
        store__fail(&op->res, rc, "inner store refused the request: %s", store_strerror(rc));
        store__faulty_finish(c);
        return;
    }
    c->inner_running = true;
}

static void store__faulty_timer_cb(uv_timer_t *t)
{
    store__faulty_submit(t->data);
}

static void store__faulty_start(struct store *s, struct store__op *op)
{
    struct store__faulty *f = s->impl;
    struct store__faulty_call *c = kp_xcalloc(1, sizeof(*c));
    c->op = op;
    c->f = f;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    op->bctx = c;
    uint64_t since = uv_now(s->loop) - f->opened_at;
    if (f->outage_end > 0 && since >= f->outage_start && since < f->outage_end) {
        f->injected++;
        store__fail(&op->res, -EAGAIN, "store unavailable (injected outage %llu-%llu ms)",
                    (unsigned long long)f->outage_start, (unsigned long long)f->outage_end);
        store__faulty_finish(c);
        return;
    }
    double rate = f->error_rate[op->kind];
    if (rate > 0 && store__rand01(&f->rng) < rate) {
        f->injected++;
        store__fail(&op->res, f->error_class, "injected %s error (%s)",
                    store__faulty_kind_names[op->kind], store_strerror(f->error_class));
        store__faulty_finish(c);
        return;
    }
    if (f->latency_ms > 0) {
        uv_timer_start(&c->timer, store__faulty_timer_cb, f->latency_ms, 0);
    } else {
        store__faulty_submit(c);
    }
}

static bool store__faulty_abort(struct store *s, struct store__op *op)
{
    struct store__faulty_call *c = op->bctx;
    if (c->inner_running) {
        store_cancel(&c->inner); /* the inner callback ends the attempt */
        return false;
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, store__faulty_call_free);
    return true;
}

static void store__faulty_close(struct store *s)
{
    struct store__faulty *f = s->impl;
    store_close(f->inner); /* frees itself once its handles close */
    free(f);
    store__backend_closed(s);
}

static const struct store__ops store__faulty_ops = {
    .name = "faulty",
    .start = store__faulty_start,
    .abort = store__faulty_abort,
    .close = store__faulty_close,
};

static int store__faulty_class(const char *v)
{
    static const struct {
        const char *name;
        int err;
    } classes[] = {{"eagain", -EAGAIN}, {"eio", -EIO},       {"eacces", -EACCES},
                   {"enoent", -ENOENT}, {"eexist", -EEXIST}, {"etimedout", -ETIMEDOUT}};
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
        if (strcmp(v, classes[i].name) == 0) {
            return classes[i].err;
        }
    }
    return 0;
}

int store__faulty_open(struct store *s, struct store__url *u, const struct store_config *cfg,
                       char *err, size_t errlen)
{
    struct store__faulty *f = kp_xcalloc(1, sizeof(*f));
    int rc = 0;
    double all = 0;
    static const char *const names[] = {
        "put_error_rate", "get_error_rate", "head_error_rate", "delete_error_rate", NULL,
        "list_error_rate"};
    f->error_class = -EAGAIN;
    uint64_t seed = store__now_ms();
    if ((rc = store__param_double(u, "error_rate", &all, err, errlen)) < 0) {
        goto out_free;
    }
    for (int k = 0; k < 6; k++) {
        f->error_rate[k] = all;
    }
    for (int k = 0; k < 6; k++) {
        if (names[k] == NULL) {
            continue;
        }
        if ((rc = store__param_double(u, names[k], &f->error_rate[k], err, errlen)) < 0) {
            goto out_free;
        }
    }
    f->error_rate[STORE_DELETE_MANY] = f->error_rate[STORE_DELETE];
    double lost = 0;
    if ((rc = store__param_double(u, "lost_response_rate", &lost, err, errlen)) < 0) {
        goto out_free;
    }
    for (int k = 0; k < 6; k++) {
        f->lost_rate[k] = lost;
    }
    if ((rc = store__param_double(u, "put_lost_response_rate", &f->lost_rate[STORE_PUT], err,
                                  errlen)) < 0 ||
        (rc = store__param_double(u, "truncate_rate", &f->truncate_rate, err, errlen)) < 0 ||
        (rc = store__param_double(u, "corrupt_rate", &f->corrupt_rate, err, errlen)) < 0 ||
        (rc = store__param_u64(u, "latency_ms", &f->latency_ms, err, errlen)) < 0 ||
        (rc = store__param_u64(u, "seed", &seed, err, errlen)) < 0) {
        goto out_free;
    }
    const char *cls = store__param(u, "error");
    if (cls != NULL && (f->error_class = store__faulty_class(cls)) == 0) {
        snprintf(err, errlen,
                 "parameter error=%s: want eagain, eio, eacces, enoent, eexist or "
                 "etimedout",
                 cls);
        rc = -EINVAL;
        goto out_free;
    }
    const char *outage = store__param(u, "outage");
    if (outage != NULL) {
        unsigned long long a = 0;
        unsigned long long b = 0;
        int used = 0;
        if (sscanf(outage, "%llu-%llu%n", &a, &b, &used) != 2 || outage[used] != '\0' || b <= a) {
            snprintf(err, errlen, "parameter outage=%s: want START_MS-END_MS with END > START",
                     outage);
            rc = -EINVAL;
            goto out_free;
        }
        f->outage_start = a;
        f->outage_end = b;
    }
    f->rng = (seed * 0x9E3779B97F4A7C15ULL) | 1;
    /* The inner store gets the remaining parameters; it rejects what it does not know. */
    struct store__url inner = {0};
    inner.scheme = u->scheme + 7;
    inner.rest = u->rest;
    inner.params = kp_xcalloc(u->nparams + 1, sizeof(*inner.params));
    for (size_t i = 0; i < u->nparams; i++) {
        if (!u->params[i].used) {
            inner.params[inner.nparams++] = u->params[i];
            u->params[i].used = true;
        }
    }
    if (strncmp(inner.scheme, "faulty+", 7) == 0) {
        snprintf(err, errlen, "faulty+ cannot wrap itself");
        free(inner.params);
        rc = -EINVAL;
        goto out_free;
    }
    struct store_config icfg = {0};
    if (cfg != NULL) {
        icfg = *cfg;
    }
    icfg.timeout_ms = 86400000;
    rc = store__open_url(s->loop, &inner, &icfg, &f->inner, 0, err, errlen);
    if (rc == 0) {
        f->inner->unmetered = true;
    }
    free(inner.params);
    if (rc < 0) {
        goto out_free;
    }
    f->opened_at = uv_now(s->loop);
    s->ops = &store__faulty_ops;
    s->impl = f;
    return 0;
out_free:
    free(f);
    return rc;
}
