/*
 * mem:// — a process-local object store for unit tests: a sorted array of keys with their bytes.
 * Each store has its own contents (two mem:// stores never share data). Operations complete
 * during the attempt, on the loop thread, so tests are deterministic.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "store_int.h"

#include "runnel/protocol/mem.h"

struct store__mem_obj {
    char *key;     /* full key */
    uint8_t *data; /* object bytes */
    size_t len;    /* bytes */
    char etag[40]; /* hex MD5 of the bytes, as S3 reports single-part objects */
};

struct store__mem {
    struct store__mem_obj *objs; /* sorted by key (strcmp) */
    size_t n;                    /* used */
    size_t cap;                  /* allocated */
};

/* Index of `key`, or -(insertion point) - 1. */
static long store__mem_find(struct store__mem *m, const char *key)
{
    size_t lo = 0;
    size_t hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->objs[mid].key, key);
        if (c == 0) {
            return (long)mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -(long)lo - 1;
}

static void store__md5_hex(const void *buf, size_t len, char out[33])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(buf, len, md, &mdlen, EVP_md5(), NULL);
    for (unsigned int i = 0; i < mdlen && i < 16; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
}

static void store__mem_put(struct store__mem *m, struct store__op *op)
{
    long i = store__mem_find(m, op->key);
    if (i >= 0 && (op->flags & STORE_IF_NONE_MATCH)) {
        store__fail(&op->res, -EEXIST, "key %s already exists", op->key);
        return;
    }
    uint8_t *copy = kp_xmalloc(op->len == 0 ? 1 : op->len);
    if (op->len > 0) {
        memcpy(copy, op->buf, op->len);
    }
    struct store__mem_obj *o;
    if (i >= 0) {
        o = &m->objs[i];
        free(o->data);
    } else {
        size_t at = (size_t)(-i - 1);
        if (m->n == m->cap) {
            m->cap = m->cap == 0 ? 16 : m->cap * 2;
            m->objs = kp_xrealloc(m->objs, m->cap * sizeof(*m->objs));
        }
        memmove(&m->objs[at + 1], &m->objs[at], (m->n - at) * sizeof(*m->objs));
        m->n++;
        o = &m->objs[at];
        o->key = kp_xstrdup(op->key);
    }
    o->data = copy;
    o->len = op->len;
    store__md5_hex(copy, op->len, o->etag);
    memcpy(op->res.etag, o->etag, sizeof(o->etag));
    op->res.size = op->len;
}

static void store__mem_get(struct store__mem *m, struct store__op *op)
{
    long i = store__mem_find(m, op->key);
    if (i < 0) {
        store__fail(&op->res, -ENOENT, "key %s not found", op->key);
        return;
    }
    struct store__mem_obj *o = &m->objs[i];
    uint64_t off = op->off;
    uint64_t len = op->rlen;
    if (op->tail) {
        off = len >= o->len ? 0 : o->len - len;
        len = o->len - off;
    } else if (off > o->len || (off == o->len && o->len > 0 && (off > 0 || len > 0))) {
        store__fail(&op->res, -ERANGE, "range starts at %llu beyond the end (%zu bytes) of %s",
                    (unsigned long long)off, o->len, op->key);
        return;
    } else if (len == 0 || len > o->len - off) {
        len = o->len - off;
    }
    op->res.body = kp_xmalloc(len == 0 ? 1 : (size_t)len);
    memcpy(op->res.body, o->data + off, (size_t)len);
    op->res.body_len = (size_t)len;
    op->res.size = o->len;
    memcpy(op->res.etag, o->etag, sizeof(o->etag));
}

static void store__mem_delete_one(struct store__mem *m, const char *key)
{
    long i = store__mem_find(m, key);
    if (i < 0) {
        return;
    }
    free(m->objs[i].key);
    free(m->objs[i].data);
    memmove(&m->objs[i], &m->objs[i + 1], (m->n - (size_t)i - 1) * sizeof(*m->objs));
    m->n--;
}

static void store__mem_list(struct store__mem *m, struct store__op *op)
{
    const char *start = op->token != NULL ? op->token : (op->prefix != NULL ? op->prefix : "");
    long i = store__mem_find(m, start);
    size_t at = i >= 0 ? (size_t)i + (op->token != NULL ? 1 : 0) : (size_t)(-i - 1);
    size_t plen = op->prefix != NULL ? strlen(op->prefix) : 0;
    for (; at < m->n; at++) {
        struct store__mem_obj *o = &m->objs[at];
        if (plen > 0 && strncmp(o->key, op->prefix, plen) != 0) {
            break;
        }
        if (op->res.nentries == op->max_keys) {
            op->res.next_token = kp_xstrdup(op->res.entries[op->res.nentries - 1].key);
            break;
        }
        store__result_add_entry(&op->res, o->key, strlen(o->key), o->len, o->etag);
    }
}

static void store__mem_start(struct store *s, struct store__op *op)
{
    struct store__mem *m = s->impl;
    switch (op->kind) {
    case STORE_PUT:
        store__mem_put(m, op);
        break;
    case STORE_GET:
        store__mem_get(m, op);
        break;
    case STORE_HEAD: {
        long i = store__mem_find(m, op->key);
        if (i < 0) {
            store__fail(&op->res, -ENOENT, "key %s not found", op->key);
        } else {
            op->res.size = m->objs[i].len;
            memcpy(op->res.etag, m->objs[i].etag, sizeof(m->objs[i].etag));
        }
        break;
    }
    case STORE_DELETE:
        store__mem_delete_one(m, op->key);
        break;
    case STORE_DELETE_MANY:
        for (size_t k = 0; k < op->nkeys; k++) {
            store__mem_delete_one(m, op->keys[k]);
        }
        break;
    case STORE_LIST:
        store__mem_list(m, op);
        break;
    }
    store__attempt_done(op);
}

static bool store__mem_abort(struct store *s, struct store__op *op)
{
    return true;
}

static void store__mem_close(struct store *s)
{
    struct store__mem *m = s->impl;
    for (size_t i = 0; i < m->n; i++) {
        free(m->objs[i].key);
        free(m->objs[i].data);
    }
    free(m->objs);
    free(m);
    store__backend_closed(s);
}

static const struct store__ops store__mem_ops = {
    .name = "mem",
    .start = store__mem_start,
    .abort = store__mem_abort,
    .close = store__mem_close,
};

int store__mem_open(struct store *s, struct store__url *u, char *err, size_t errlen)
{
    int rc = store__params_check(u, err, errlen);
    if (rc < 0) {
        return rc;
    }
    s->ops = &store__mem_ops;
    s->impl = kp_xcalloc(1, sizeof(struct store__mem));
    return 0;
}
