/* Helpers shared by the storage unit tests: run a loop until a store request completes. */
#ifndef RUNNEL_TEST_STORE_UTIL_H
#define RUNNEL_TEST_STORE_UTIL_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "runnel/storage/store.h"

struct tstore_wait {
    bool done; /* callback ran */
    int calls; /* how many times */
};

static inline void tstore_cb(struct store_req *r)
{
    struct tstore_wait *w = r->data;
    w->done = true;
    w->calls++;
}

/* Runs `loop` until the request's callback has run; returns req->err. */
static inline int tstore_wait(uv_loop_t *loop, struct store_req *r)
{
    struct tstore_wait *w = r->data;
    while (!w->done) {
        uv_run(loop, UV_RUN_ONCE);
    }
    return r->err;
}

/* Submits with fn-specific args through a small macro-free set of wrappers. */
static inline int tstore_put(uv_loop_t *loop, struct store *s, const char *key, const void *buf,
                             size_t len, int flags, struct store_req *out)
{
    struct tstore_wait w = {0};
    memset(out, 0, sizeof(*out));
    out->data = &w;
    int rc = store_put(s, out, key, buf, len, flags, tstore_cb);
    if (rc < 0) {
        return rc;
    }
    rc = tstore_wait(loop, out);
    out->data = NULL;
    return rc;
}

static inline int tstore_get(uv_loop_t *loop, struct store *s, const char *key, uint64_t off,
                             uint64_t len, struct store_req *out)
{
    struct tstore_wait w = {0};
    memset(out, 0, sizeof(*out));
    out->data = &w;
    int rc = store_get(s, out, key, off, len, tstore_cb);
    if (rc < 0) {
        return rc;
    }
    rc = tstore_wait(loop, out);
    out->data = NULL;
    return rc;
}

/* Closes the store and runs the loop until every handle is gone; returns uv_loop_close(). */
static inline int tstore_close_loop(uv_loop_t *loop, struct store *s)
{
    if (s != NULL) {
        store_close(s);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop);
}

#endif
