/*
 * The chunk cache (see cache.h): a hash table of entries of three kinds, plus an LRU list of the
 * entries that hold data:
 *
 *   chunk  (key, chunk byte offset)  a decoded chunk, or its stored bytes before the first read
 *   object (key)                     the object's parsed footer and size
 *   block  (key, block index)        raw bytes of the object, as read from the store or a peer
 *
 * Entry states: LOADING (a read is in flight; requests queue as waiters and share it), STORED (a
 * chunk handed in by agent_cache_put() whose zstd bytes are not decoded yet) and READY. Only
 * READY and STORED entries are charged against the capacity and sit in the LRU; an entry whose
 * waiters are being called is never evicted. A failed load removes its entry, so the next
 * request tries again.
 *
 * A chunk miss: the object entry (block 0 -> footer, more blocks when the footer is larger than
 * block 0), then a range read that gathers the blocks the chunk spans into one buffer, then the
 * CRC check and decode. The blocks stay cached on their own, so the other chunks of the object
 * (and the peers the agent owns blocks for) are served without another GET.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "runnel/common/log.h"
#include "runnel/protocol/mem.h"
#include "runnel/storage/object.h"

#define AGENT__CACHE_BUCKETS_MIN 1024
#define AGENT__BLOCK_MAX (1u << 30)

enum agent__cstate {
    AGENT__C_LOADING,
    AGENT__C_STORED,
    AGENT__C_READY,
};

enum agent__ckind {
    AGENT__K_CHUNK,
    AGENT__K_OBJECT,
    AGENT__K_BLOCK,
};

struct agent_cbuf {
    uint8_t *data; /* bytes (malloc) */
    size_t len;    /* count */
    int refs;      /* references; the bytes are freed at zero */
};

struct agent__cwait {
    agent_cache_cb cb;         /* chunk and object waiters */
    agent_block_cb bcb;        /* block waiters */
    void *arg;                 /* its argument */
    struct agent__cwait *next; /* next waiter, in arrival order */
};

struct agent__crange;

struct agent__centry {
    struct agent_cache *cache; /* owner */
    char *key;                 /* object key, NUL-terminated */
    enum agent__ckind kind;    /* see the file comment */
    uint64_t off;              /* chunk: byte offset; block: index; object: 0 */
    uint64_t hash;             /* of (kind, key, off) */
    enum agent__cstate state;  /* see the file comment */
    uint8_t *data;             /* READY chunk/block: bytes (owned by buf); STORED: stored bytes */
    size_t len;                /* bytes in data */
    struct agent_cbuf *buf;    /* READY chunk/block: holds data, one reference is the entry's */
    uint64_t size;             /* block and object: object size in bytes (0: not known yet) */
    struct store_chunk desc;   /* chunk: its footer entry (when STORED or being read) */
    struct store_footer ft;    /* object: the parsed footer */
    size_t charge;             /* bytes counted against the capacity */
    int busy;                  /* > 0 while its waiters are being called */
    bool drop;                 /* remove once no longer busy (its bytes proved corrupt) */
    bool remote;               /* block: being read from a peer */
    struct agent__cwait *waiters; /* queued requests (LOADING) */
    struct agent__cwait **wtail;  /* where the next waiter goes */
    struct agent__centry *hnext;  /* hash chain */
    struct agent__centry *lprev;  /* LRU list (READY and STORED only); head = most recent */
    struct agent__centry *lnext;
    bool in_lru;              /* linked in the LRU list */
    struct store_req *sreq;   /* block: the store GET in flight (malloc) */
    struct agent__crange *rg; /* chunk/object: the range read in flight */
    uv_work_t work;           /* decode of a chunk on the thread pool */
    int wrc;                  /* that decode's result */
    const char *why;          /* its error description */
    uint8_t *wout;            /* its output */
    size_t wlen;              /* bytes */
};

struct agent_cache {
    uv_loop_t *loop;                /* the agent's loop */
    struct store *store;            /* where misses are read from */
    size_t block;                   /* block size, bytes */
    agent_cache_remote_fn remote;   /* peer block source, or NULL */
    agent_cache_owns_fn owns;       /* which blocks this agent owns, or NULL */
    void *remote_ctx;               /* its context */
    struct agent__centry **buckets; /* hash table */
    size_t nbuckets;                /* power of two */
    struct agent__centry *lru_head; /* most recently used */
    struct agent__centry *lru_tail; /* least recently used */
    int inflight;                   /* reads and decodes not yet completed */
    bool closing;                   /* agent_cache_free() was called */
    struct agent_cache_stats st;    /* counters; bytes/entries/cap kept current */
};

/* A byte range of an object gathered from its blocks into one buffer. */
struct agent__crange {
    struct agent_cache *c;                  /* owner */
    char *key;                              /* object key (owned) */
    uint64_t size;                          /* object size */
    uint64_t lo;                            /* first byte */
    uint64_t hi;                            /* one past the last */
    uint8_t *buf;                           /* hi - lo bytes (malloc) */
    int pending;                            /* block reads not yet answered (+1 at start) */
    int err;                                /* first error */
    void (*done)(struct agent__crange *rg); /* runs once every block answered */
    struct agent__centry *e;                /* the entry it is for */
};

void agent_cbuf_ref(struct agent_cbuf *b)
{
    b->refs++;
}

void agent_cbuf_unref(struct agent_cbuf *b)
{
    if (b != NULL && --b->refs == 0) {
        free(b->data);
        free(b);
    }
}

bool agent_cache_block_range(size_t block_bytes, uint64_t size, uint32_t index, uint64_t *start,
                             uint64_t *end)
{
    uint64_t b = block_bytes;
    uint64_t slack = b / 4;
    uint64_t n;
    if (size <= b + slack) {
        n = 1;
    } else {
        n = size / b;
        uint64_t r = size % b;
        if (r > slack) {
            n++;
        }
    }
    if (index >= n) {
        return false;
    }
    *end = size - (uint64_t)index * b;
    *start = index == n - 1 ? 0 : *end - b;
    return true;
}

/* The block index holding byte `x` of an object of `size` bytes (x < size). */
static uint32_t agent__block_of(size_t block_bytes, uint64_t size, uint64_t x)
{
    uint64_t j = (size - 1 - x) / block_bytes;
    uint64_t s = 0;
    uint64_t e = 0;
    while (j > 0 && !agent_cache_block_range(block_bytes, size, (uint32_t)j, &s, &e)) {
        j--; /* the head remainder absorbed into the block after it */
    }
    return (uint32_t)j;
}

/* Makes entry `e` READY with `data` (malloc, `len` bytes, now owned by the entry's buffer). */
static void agent__cset_ready(struct agent__centry *e, uint8_t *data, size_t len)
{
    struct agent_cbuf *b = kp_xmalloc(sizeof(*b));
    b->data = data;
    b->len = len;
    b->refs = 1;
    e->buf = b;
    e->data = data;
    e->len = len;
    e->state = AGENT__C_READY;
}

static uint64_t agent__chash(enum agent__ckind kind, const char *key, uint64_t off)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h = (h ^ *p) * 1099511628211ULL;
    }
    for (int i = 0; i < 8; i++) {
        h = (h ^ ((off >> (8 * i)) & 0xff)) * 1099511628211ULL;
    }
    return h;
}

static struct agent__centry *agent__cfind(struct agent_cache *c, enum agent__ckind kind,
                                          const char *key, uint64_t off, uint64_t h)
{
    for (struct agent__centry *e = c->buckets[h & (c->nbuckets - 1)]; e != NULL; e = e->hnext) {
        if (e->hash == h && e->kind == kind && e->off == off && strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}

static void agent__cgrow(struct agent_cache *c)
{
    size_t n = c->nbuckets * 2;
    struct agent__centry **b = kp_xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct agent__centry *e = c->buckets[i];
        while (e != NULL) {
            struct agent__centry *next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

static struct agent__centry *agent__cinsert(struct agent_cache *c, enum agent__ckind kind,
                                            const char *key, uint64_t off, uint64_t h)
{
    if (c->st.entries + 1 > c->nbuckets * 2) {
        agent__cgrow(c);
    }
    struct agent__centry *e = kp_xcalloc(1, sizeof(*e));
    e->cache = c;
    e->key = kp_xstrdup(key);
    e->kind = kind;
    e->off = off;
    e->hash = h;
    e->state = AGENT__C_LOADING;
    e->wtail = &e->waiters;
    e->hnext = c->buckets[h & (c->nbuckets - 1)];
    c->buckets[h & (c->nbuckets - 1)] = e;
    c->st.entries++;
    return e;
}

static void agent__lru_unlink(struct agent_cache *c, struct agent__centry *e)
{
    if (!e->in_lru) {
        return;
    }
    if (e->lprev != NULL) {
        e->lprev->lnext = e->lnext;
    } else {
        c->lru_head = e->lnext;
    }
    if (e->lnext != NULL) {
        e->lnext->lprev = e->lprev;
    } else {
        c->lru_tail = e->lprev;
    }
    e->lprev = e->lnext = NULL;
    e->in_lru = false;
}

static void agent__lru_push(struct agent_cache *c, struct agent__centry *e)
{
    agent__lru_unlink(c, e);
    e->lnext = c->lru_head;
    if (c->lru_head != NULL) {
        c->lru_head->lprev = e;
    } else {
        c->lru_tail = e;
    }
    c->lru_head = e;
    e->in_lru = true;
}

/* Unlinks `e` from the hash table (a no-op when it is not there). */
static void agent__chash_unlink(struct agent_cache *c, struct agent__centry *e)
{
    struct agent__centry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != NULL && *pp != e) {
        pp = &(*pp)->hnext;
    }
    if (*pp == e) {
        *pp = e->hnext;
    }
    e->hnext = NULL;
}

/* Unlinks `e` from the table and the LRU and frees it (no waiters may be left). */
static void agent__cremove(struct agent_cache *c, struct agent__centry *e)
{
    agent__chash_unlink(c, e);
    agent__lru_unlink(c, e);
    c->st.bytes -= e->charge;
    c->st.entries--;
    if (e->buf != NULL) {
        agent_cbuf_unref(e->buf);
    } else {
        free(e->data);
    }
    store_footer_free(&e->ft);
    free(e->key);
    free(e);
}

/* Drops least recently used entries until the charged bytes fit the capacity. */
static void agent__cevict(struct agent_cache *c)
{
    struct agent__centry *e = c->lru_tail;
    while (c->st.bytes > c->st.cap && e != NULL) {
        struct agent__centry *prev = e->lprev;
        if (e->busy == 0) {
            agent__cremove(c, e);
            c->st.evictions++;
        }
        e = prev;
    }
}

static void agent__cset_charge(struct agent_cache *c, struct agent__centry *e, size_t charge)
{
    c->st.bytes -= e->charge;
    e->charge = charge;
    c->st.bytes += charge;
}

static void agent__cwait_add(struct agent__centry *e, agent_cache_cb cb, agent_block_cb bcb,
                             void *arg)
{
    struct agent__cwait *w = kp_xcalloc(1, sizeof(*w));
    w->cb = cb;
    w->bcb = bcb;
    w->arg = arg;
    *e->wtail = w;
    e->wtail = &w->next;
}

static void agent__cmaybe_free(struct agent_cache *c);

/* Calls one waiter of `e` with the entry's outcome. */
static void agent__ccall(struct agent__centry *e, const struct agent__cwait *w, int err)
{
    if (w->bcb != NULL) {
        if (err == 0) {
            w->bcb(w->arg, 0, e->size, e->data, e->len, e->buf);
        } else {
            w->bcb(w->arg, err, 0, NULL, 0, NULL);
        }
    } else if (err == 0 && e->kind == AGENT__K_CHUNK) {
        w->cb(w->arg, 0, e->data, e->len, e->buf);
    } else {
        w->cb(w->arg, err, NULL, 0, NULL);
    }
}

/*
 * Calls every waiter of `e` with the entry's outcome: err 0 with the entry READY, or err != 0
 * (the entry is then removed). Waiters added while calling are served too.
 */
static void agent__cdeliver(struct agent_cache *c, struct agent__centry *e, int err)
{
    e->busy++;
    while (e->waiters != NULL) {
        struct agent__cwait *w = e->waiters;
        e->waiters = w->next;
        if (e->waiters == NULL) {
            e->wtail = &e->waiters;
        }
        agent__ccall(e, w, err);
        free(w);
    }
    e->busy--;
    if (err != 0) {
        c->st.errors++;
        agent__cremove(c, e);
    } else if (e->drop && e->busy == 0) {
        agent__cremove(c, e);
    } else {
        agent__cevict(c);
    }
}

/* Removes block `index` of `key` (or marks it for removal while it is in use). */
static void agent__bdrop(struct agent_cache *c, const char *key, uint32_t index)
{
    uint64_t h = agent__chash(AGENT__K_BLOCK, key, index);
    struct agent__centry *b = agent__cfind(c, AGENT__K_BLOCK, key, index, h);
    if (b == NULL || b->state != AGENT__C_READY) {
        return;
    }
    if (b->busy > 0) { /* out of the table now, freed when its user lets go */
        agent__chash_unlink(c, b);
        b->drop = true;
    } else {
        agent__cremove(c, b);
    }
}

/* ---- blocks ---- */

/* Makes block entry `e` READY with `data` (malloc, `len` bytes) of an object of `size` bytes. */
static void agent__bset(struct agent_cache *c, struct agent__centry *e, uint8_t *data, size_t len,
                        uint64_t size)
{
    agent__cset_ready(e, data, len);
    e->size = size;
    agent__cset_charge(c, e, len + sizeof(*e));
    agent__lru_push(c, e);
}

static void agent__bstore_cb(struct store_req *r)
{
    struct agent__centry *e = r->data;
    struct agent_cache *c = e->cache;
    c->inflight--;
    e->sreq = NULL;
    int err = r->err;
    uint64_t start = 0;
    uint64_t end = 0;
    if (err == 0) {
        c->st.store_bytes += r->body_len;
        uint64_t size = r->size;
        uint64_t have_from = size - r->body_len; /* tail reads: where the body starts */
        if (e->size != 0 && size != e->size) {
            err = -EBADMSG;
            rn_log(RN_LOG_WARN, "block_size_mismatch", "key=%s block=%llu size=%llu expected=%llu",
                   e->key, (unsigned long long)e->off, (unsigned long long)size,
                   (unsigned long long)e->size);
        } else if (size == 0 || r->body_len > size ||
                   !agent_cache_block_range(c->block, size, (uint32_t)e->off, &start, &end)) {
            err = -EBADMSG;
        } else if (e->size != 0 && r->body_len != end - start) {
            err = -EBADMSG; /* a ranged read came back short */
        } else if (e->size == 0 && have_from > start) {
            err = -EBADMSG; /* cannot happen: a tail read covers block 0 */
        }
        if (err == 0) {
            uint8_t *body = r->body;
            size_t len = (size_t)(end - start);
            if (e->size == 0 && start > have_from) {
                memmove(body, body + (start - have_from), len);
            }
            r->body = NULL;
            agent__bset(c, e, body, len, size);
        }
    }
    if (err != 0 && !c->closing) {
        rn_log(RN_LOG_WARN, "block_read_failed", "key=%s block=%llu error=\"%s\"", e->key,
               (unsigned long long)e->off, r->err != 0 ? r->msg : "unexpected length");
    }
    store_req_cleanup(r);
    free(r);
    agent__cdeliver(c, e, err);
    agent__cmaybe_free(c);
}

/* Reads block entry `e` from the store. */
static void agent__bstart_store(struct agent_cache *c, struct agent__centry *e)
{
    if (c->closing) {
        agent__cdeliver(c, e, -ECANCELED);
        return;
    }
    struct store_req *r = kp_xcalloc(1, sizeof(*r));
    r->data = e;
    int rc;
    if (e->size == 0) { /* block 0 of an object of unknown size: the tail, with the slack */
        rc = store_get_tail(c->store, r, e->key, c->block + c->block / 4, agent__bstore_cb);
    } else {
        uint64_t start = 0;
        uint64_t end = 0;
        agent_cache_block_range(c->block, e->size, (uint32_t)e->off, &start, &end);
        rc = store_get(c->store, r, e->key, start, end - start, agent__bstore_cb);
    }
    if (rc != 0) {
        free(r);
        agent__cdeliver(c, e, rc);
        return;
    }
    e->sreq = r;
    c->inflight++;
    c->st.store_gets++;
}

/* The owner answered (or failed): keep the block, or read it from the store after all. */
static void agent__bremote_cb(void *arg, int err, uint64_t obj_size, const uint8_t *data,
                              size_t len, struct agent_cbuf *buf)
{
    (void)buf;
    struct agent__centry *e = arg;
    struct agent_cache *c = e->cache;
    c->inflight--;
    e->remote = false;
    uint64_t start = 0;
    uint64_t end = 0;
    if (err == 0 && ((e->size != 0 && obj_size != e->size) ||
                     !agent_cache_block_range(c->block, obj_size, (uint32_t)e->off, &start, &end) ||
                     len != end - start)) {
        err = -EBADMSG;
    }
    if (err == 0) {
        uint8_t *copy = kp_xmalloc(len ? len : 1);
        memcpy(copy, data, len);
        agent__bset(c, e, copy, len, obj_size);
        agent__cdeliver(c, e, 0);
    } else {
        c->st.remote_failed++;
        if (!c->closing) {
            rn_log(RN_LOG_DEBUG, "peer_block_failed", "key=%s block=%llu error=%d", e->key,
                   (unsigned long long)e->off, err);
        }
        agent__bstart_store(c, e);
    }
    agent__cmaybe_free(c);
}

/*
 * Gets block `index` of `key` for cb: from memory, by joining a load, from the owner (when
 * `remote` and one is set) or from the store. cb may run before this returns.
 */
static void agent__bget(struct agent_cache *c, const char *key, uint32_t index, uint64_t size,
                        bool remote, agent_block_cb cb, void *arg)
{
    uint64_t h = agent__chash(AGENT__K_BLOCK, key, index);
    struct agent__centry *e = agent__cfind(c, AGENT__K_BLOCK, key, index, h);
    if (e != NULL && e->state == AGENT__C_READY) {
        c->st.block_hits++;
        agent__lru_push(c, e);
        e->busy++;
        cb(arg, 0, e->size, e->data, e->len, e->buf);
        e->busy--;
        if (e->drop && e->busy == 0) {
            agent__cremove(c, e);
        }
        return;
    }
    if (e != NULL && e->state == AGENT__C_LOADING) {
        c->st.block_hits++;
        agent__cwait_add(e, NULL, cb, arg);
        return;
    }
    if (c->closing) {
        cb(arg, -ECANCELED, 0, NULL, 0, NULL);
        return;
    }
    if (size == 0 && index != 0) {
        cb(arg, -EINVAL, 0, NULL, 0, NULL);
        return;
    }
    e = agent__cinsert(c, AGENT__K_BLOCK, key, index, h);
    e->size = size;
    agent__cwait_add(e, NULL, cb, arg);
    if (remote && c->remote != NULL &&
        c->remote(c->remote_ctx, e->key, index, size, agent__bremote_cb, e)) {
        e->remote = true;
        c->inflight++;
        c->st.remote_reads++;
        return;
    }
    agent__bstart_store(c, e);
}

/* ---- ranges ---- */

/* Runs the range's completion and frees it (the caller's top-level callback frees the cache
 * when it was closed meanwhile: never here, inside a delivery). */
static void agent__crange_finish(struct agent__crange *rg)
{
    struct agent_cache *c = rg->c;
    c->inflight--;
    rg->done(rg);
    free(rg->buf);
    free(rg->key);
    free(rg);
}

/* One block of a range read. */
struct agent__crpart {
    struct agent__crange *rg; /* the range */
    uint32_t index;           /* the block */
};

static void agent__crange_block_cb(void *arg, int err, uint64_t obj_size, const uint8_t *data,
                                   size_t len, struct agent_cbuf *buf)
{
    (void)buf;
    struct agent__crpart *part = arg;
    struct agent__crange *rg = part->rg;
    uint64_t s = 0;
    uint64_t e = 0;
    if (err == 0 &&
        (obj_size != rg->size ||
         !agent_cache_block_range(rg->c->block, rg->size, part->index, &s, &e) || e - s != len)) {
        err = -EBADMSG;
    }
    if (err != 0) {
        if (rg->err == 0) {
            rg->err = err;
        }
    } else {
        uint64_t from = s > rg->lo ? s : rg->lo;
        uint64_t to = e < rg->hi ? e : rg->hi;
        if (to > from) {
            memcpy(rg->buf + (from - rg->lo), data + (from - s), (size_t)(to - from));
        }
    }
    free(part);
    if (--rg->pending == 0) {
        agent__crange_finish(rg);
    }
}

/*
 * Reads [lo, hi) of `key` (an object of `size` bytes) from its blocks for entry `e`; done(rg)
 * runs once (maybe before this returns) with rg->err and rg->buf, which it may take.
 */
static void agent__crange_start(struct agent_cache *c, struct agent__centry *e, uint64_t size,
                                uint64_t lo, uint64_t hi, void (*done)(struct agent__crange *rg))
{
    struct agent__crange *rg = kp_xcalloc(1, sizeof(*rg));
    rg->c = c;
    rg->key = kp_xstrdup(e->key);
    rg->size = size;
    rg->lo = lo;
    rg->hi = hi;
    rg->buf = kp_xmalloc(hi > lo ? (size_t)(hi - lo) : 1);
    rg->done = done;
    rg->e = e;
    rg->pending = 1;
    e->rg = rg;
    c->inflight++; /* until finished, so the cache outlives it */
    if (hi > lo) {
        uint32_t first = agent__block_of(c->block, size, hi - 1);
        uint32_t last = agent__block_of(c->block, size, lo);
        for (uint32_t j = first; j <= last; j++) {
            struct agent__crpart *part = kp_xmalloc(sizeof(*part));
            part->rg = rg;
            part->index = j;
            rg->pending++;
            agent__bget(c, rg->key, j, size, true, agent__crange_block_cb, part);
        }
    }
    if (--rg->pending == 0) {
        agent__crange_finish(rg);
    }
}

/* Drops the blocks [lo, hi) of an object of `size` came from (they held corrupt bytes). */
static void agent__crange_drop(struct agent_cache *c, const char *key, uint64_t size, uint64_t lo,
                               uint64_t hi)
{
    if (hi <= lo || size == 0) {
        return;
    }
    uint32_t first = agent__block_of(c->block, size, hi - 1);
    uint32_t last = agent__block_of(c->block, size, lo);
    for (uint32_t j = first; j <= last; j++) {
        agent__bdrop(c, key, j);
    }
}

/* ---- objects (footers) ---- */

/* Parses object entry o's footer from `tail` (the object's last `len` bytes); 0, -ENOBUFS with
 * *need, or -EBADMSG. On success o is READY. */
static int agent__oparse(struct agent_cache *c, struct agent__centry *o, const uint8_t *tail,
                         size_t len, size_t *need)
{
    const char *why = NULL;
    struct store_footer ft;
    int rc = store_footer_parse(tail, len, o->size, &ft, need, &why);
    if (rc == 0) {
        o->ft = ft;
        o->state = AGENT__C_READY;
        agent__cset_charge(c, o, ft.nchunks * sizeof(struct store_chunk) + sizeof(*o));
        agent__lru_push(c, o);
    } else if (rc != -ENOBUFS) {
        rn_log(RN_LOG_WARN, "footer_corrupt", "key=%s why=\"%s\"", o->key, why ? why : "?");
        rc = -EBADMSG;
    }
    return rc;
}

static void agent__orange_done(struct agent__crange *rg)
{
    struct agent__centry *o = rg->e;
    struct agent_cache *c = o->cache;
    o->rg = NULL;
    int err = rg->err;
    size_t need = 0;
    if (err == 0) {
        err = agent__oparse(c, o, rg->buf, (size_t)(rg->hi - rg->lo), &need);
        if (err != 0) {
            err = -EBADMSG;
            agent__crange_drop(c, o->key, o->size, rg->lo, rg->hi);
        }
    }
    agent__cdeliver(c, o, err);
}

/* Block 0 of object entry o arrived (or failed). */
static void agent__oblock_cb(void *arg, int err, uint64_t obj_size, const uint8_t *data, size_t len,
                             struct agent_cbuf *buf)
{
    (void)buf;
    struct agent__centry *o = arg;
    struct agent_cache *c = o->cache;
    c->inflight--; /* the caller's top-level callback frees a closed cache, never this one */
    if (err != 0) {
        agent__cdeliver(c, o, err);
        return;
    }
    o->size = obj_size;
    size_t need = 0;
    err = agent__oparse(c, o, data, len, &need);
    if (err == -ENOBUFS && need > len && need <= obj_size && need <= STORE_OBJ_MAX_FOOTER) {
        agent__crange_start(c, o, obj_size, obj_size - need, obj_size, agent__orange_done);
        return;
    }
    if (err != 0) {
        err = -EBADMSG;
        agent__bdrop(c, o->key, 0);
    }
    agent__cdeliver(c, o, err);
}

/* ---- chunks ---- */

static void agent__cdecode_work(uv_work_t *w)
{
    struct agent__centry *e = w->data;
    e->wrc =
        store_chunk_decode(&e->desc, e->data, e->len, e->desc.raw_len, &e->wout, &e->wlen, &e->why);
}

/* Replaces a chunk entry's stored bytes with the decoded result; delivers to its waiters. */
static void agent__cdecode_done(struct agent_cache *c, struct agent__centry *e)
{
    int err = e->wrc;
    if (err == 0) {
        free(e->data);
        agent__cset_ready(e, e->wout, e->wlen);
        e->wout = NULL;
        agent__cset_charge(c, e, e->len + sizeof(*e));
        agent__lru_push(c, e);
    } else {
        rn_log(RN_LOG_ERROR, "chunk_decode_failed", "key=%s offset=%llu why=\"%s\"", e->key,
               (unsigned long long)e->off, e->why ? e->why : "?");
        agent__lru_unlink(c, e);
        uint64_t h = agent__chash(AGENT__K_OBJECT, e->key, 0);
        struct agent__centry *o = agent__cfind(c, AGENT__K_OBJECT, e->key, 0, h);
        if (o != NULL && o->size != 0) { /* read the blocks anew next time */
            agent__crange_drop(c, e->key, o->size, e->desc.offset,
                               e->desc.offset + e->desc.stored_len);
        }
    }
    agent__cdeliver(c, e, err);
}

static void agent__cdecode_after(uv_work_t *w, int status)
{
    struct agent__centry *e = w->data;
    struct agent_cache *c = e->cache;
    c->inflight--;
    if (status != 0 && e->wrc == 0) {
        e->wrc = -ECANCELED;
    }
    agent__cdecode_done(c, e);
    agent__cmaybe_free(c);
}

/* A chunk entry holding its stored bytes: decode it (on the pool when large), then serve. */
static void agent__cdecode(struct agent_cache *c, struct agent__centry *e)
{
    e->state = AGENT__C_LOADING;
    agent__lru_unlink(c, e); /* a loading entry is not evicted */
    e->work.data = e;
    if (e->len > STORE_OBJ_DECODE_ON_LOOP_MAX &&
        uv_queue_work(c->loop, &e->work, agent__cdecode_work, agent__cdecode_after) == 0) {
        c->inflight++;
        return;
    }
    agent__cdecode_work(&e->work);
    agent__cdecode_done(c, e);
}

/* The chunk's stored bytes were gathered from its blocks (or failed). */
static void agent__crange_done(struct agent__crange *rg)
{
    struct agent__centry *e = rg->e;
    struct agent_cache *c = e->cache;
    e->rg = NULL;
    if (rg->err != 0) {
        agent__cdeliver(c, e, rg->err);
        return;
    }
    e->data = rg->buf;
    e->len = (size_t)(rg->hi - rg->lo);
    rg->buf = NULL;
    agent__cdecode(c, e);
}

static const struct store_chunk *agent__footer_chunk(const struct store_footer *f, uint64_t off)
{
    size_t lo = 0;
    size_t hi = f->nchunks;
    while (lo < hi) { /* chunks are in byte order */
        size_t mid = lo + (hi - lo) / 2;
        if (f->chunks[mid].offset < off) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < f->nchunks && f->chunks[lo].offset == off) {
        return &f->chunks[lo];
    }
    for (size_t i = 0; i < f->nchunks; i++) { /* not sorted after all: look everywhere */
        if (f->chunks[i].offset == off) {
            return &f->chunks[i];
        }
    }
    return NULL;
}

/* The object entry this chunk entry waited for is READY (err 0) or failed. */
static void agent__cfooter_ready(void *arg, int err, const uint8_t *raw, size_t raw_len,
                                 struct agent_cbuf *buf)
{
    (void)raw;
    (void)raw_len;
    (void)buf;
    struct agent__centry *e = arg;
    struct agent_cache *c = e->cache;
    if (err != 0) {
        agent__cdeliver(c, e, err);
        return;
    }
    uint64_t h = agent__chash(AGENT__K_OBJECT, e->key, 0);
    struct agent__centry *o = agent__cfind(c, AGENT__K_OBJECT, e->key, 0, h);
    const struct store_chunk *d = o != NULL ? agent__footer_chunk(&o->ft, e->off) : NULL;
    if (d == NULL) {
        rn_log(RN_LOG_WARN, "chunk_not_in_footer", "key=%s offset=%llu", e->key,
               (unsigned long long)e->off);
        agent__cdeliver(c, e, -ENOENT);
        return;
    }
    e->desc = *d;
    if (o->size == 0) { /* handed in by agent_cache_put() and still held whole: cannot be */
        agent__cdeliver(c, e, -EBADMSG);
        return;
    }
    agent__crange_start(c, e, o->size, d->offset, d->offset + d->stored_len, agent__crange_done);
}

/* Gets chunk entry `e` (LOADING, no data) going: from the cached footer or after reading it. */
static void agent__cload_chunk(struct agent_cache *c, struct agent__centry *e)
{
    uint64_t h = agent__chash(AGENT__K_OBJECT, e->key, 0);
    struct agent__centry *o = agent__cfind(c, AGENT__K_OBJECT, e->key, 0, h);
    if (o != NULL && o->state == AGENT__C_READY) {
        agent__lru_push(c, o);
        agent__cfooter_ready(e, 0, NULL, 0, NULL);
        return;
    }
    if (o == NULL) {
        o = agent__cinsert(c, AGENT__K_OBJECT, e->key, 0, h);
        agent__cwait_add(o, agent__cfooter_ready, NULL, e);
        c->inflight++;
        agent__bget(c, o->key, 0, 0, true, agent__oblock_cb, o);
        return;
    }
    agent__cwait_add(o, agent__cfooter_ready, NULL, e);
}

/* ---- public ---- */

struct agent_cache *agent_cache_new(uv_loop_t *loop, struct store *s, size_t cap_bytes)
{
    struct agent_cache *c = kp_xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->store = s;
    c->block = AGENT_CACHE_BLOCK_BYTES;
    c->nbuckets = AGENT__CACHE_BUCKETS_MIN;
    c->buckets = kp_xcalloc(c->nbuckets, sizeof(*c->buckets));
    c->st.cap = cap_bytes;
    return c;
}

int agent_cache_set_block_bytes(struct agent_cache *c, size_t block_bytes)
{
    if (block_bytes < AGENT_CACHE_BLOCK_MIN || block_bytes > AGENT__BLOCK_MAX) {
        return -EINVAL;
    }
    c->block = block_bytes;
    return 0;
}

size_t agent_cache_block_bytes(const struct agent_cache *c)
{
    return c->block;
}

void agent_cache_set_remote(struct agent_cache *c, agent_cache_remote_fn fn,
                            agent_cache_owns_fn owns, void *ctx)
{
    c->remote = fn;
    c->owns = owns;
    c->remote_ctx = ctx;
}

int agent_cache_get_block(struct agent_cache *c, const char *key, uint32_t index, uint64_t obj_size,
                          agent_block_cb cb, void *arg)
{
    if (c->closing) {
        return -ECANCELED;
    }
    uint64_t s = 0;
    uint64_t e = 0;
    if (obj_size == 0 ? index != 0 : !agent_cache_block_range(c->block, obj_size, index, &s, &e)) {
        return -EINVAL;
    }
    agent__bget(c, key, index, obj_size, false, cb, arg);
    return 0;
}

int agent_cache_get(struct agent_cache *c, const char *key, uint64_t chunk_off, agent_cache_cb cb,
                    void *arg)
{
    if (c->closing) {
        return -ECANCELED;
    }
    uint64_t h = agent__chash(AGENT__K_CHUNK, key, chunk_off);
    struct agent__centry *e = agent__cfind(c, AGENT__K_CHUNK, key, chunk_off, h);
    if (e != NULL && e->state == AGENT__C_READY) {
        c->st.hits++;
        agent__lru_push(c, e);
        e->busy++;
        cb(arg, 0, e->data, e->len, e->buf);
        e->busy--;
        agent__cevict(c);
        return 0;
    }
    if (e != NULL && e->state == AGENT__C_LOADING) {
        c->st.merged++;
        agent__cwait_add(e, cb, NULL, arg);
        return 0;
    }
    if (e != NULL) { /* STORED: handed in by a flush, decode now */
        c->st.hits++;
        agent__cwait_add(e, cb, NULL, arg);
        agent__cdecode(c, e);
        return 0;
    }
    c->st.misses++;
    e = agent__cinsert(c, AGENT__K_CHUNK, key, chunk_off, h);
    agent__cwait_add(e, cb, NULL, arg);
    agent__cload_chunk(c, e);
    return 0;
}

void agent_cache_put(struct agent_cache *c, const char *key, const uint8_t *obj, size_t len)
{
    if (c->closing || obj == NULL || len == 0) {
        return;
    }
    struct store_footer ft;
    size_t need = 0;
    const char *why = NULL;
    int rc = store_footer_parse(obj, len, len, &ft, &need, &why);
    if (rc != 0) {
        rn_log(RN_LOG_WARN, "cache_put_bad_object", "key=%s why=\"%s\"", key, why ? why : "?");
        return;
    }
    c->st.put_objects++;
    for (uint32_t i = 0; i < ft.nchunks; i++) {
        const struct store_chunk *d = &ft.chunks[i];
        if (d->offset > len || d->stored_len > len - d->offset) {
            continue; /* store_footer_parse checked this; stay safe anyway */
        }
        uint64_t h = agent__chash(AGENT__K_CHUNK, key, d->offset);
        if (agent__cfind(c, AGENT__K_CHUNK, key, d->offset, h) != NULL) {
            continue;
        }
        struct agent__centry *e = agent__cinsert(c, AGENT__K_CHUNK, key, d->offset, h);
        e->desc = *d;
        size_t n = d->stored_len;
        uint8_t *data = kp_xmalloc(n ? n : 1);
        memcpy(data, obj + d->offset, n);
        /* Uncompressed chunks are their raw bytes already (and were checksummed just now). */
        if (d->codec == STORE_CODEC_NONE) {
            agent__cset_ready(e, data, n);
        } else {
            e->data = data;
            e->len = n;
            e->state = AGENT__C_STORED;
        }
        agent__cset_charge(c, e, e->len + sizeof(*e));
        agent__lru_push(c, e);
    }
    uint64_t s = 0;
    uint64_t end = 0;
    for (uint32_t j = 0; c->owns != NULL && agent_cache_block_range(c->block, len, j, &s, &end);
         j++) {
        uint64_t bh = agent__chash(AGENT__K_BLOCK, key, j);
        if (!c->owns(c->remote_ctx, key, j) ||
            agent__cfind(c, AGENT__K_BLOCK, key, j, bh) != NULL) {
            continue;
        }
        struct agent__centry *b = agent__cinsert(c, AGENT__K_BLOCK, key, j, bh);
        uint8_t *data = kp_xmalloc(end > s ? (size_t)(end - s) : 1);
        memcpy(data, obj + s, (size_t)(end - s));
        agent__bset(c, b, data, (size_t)(end - s), len);
    }
    uint64_t h = agent__chash(AGENT__K_OBJECT, key, 0);
    if (agent__cfind(c, AGENT__K_OBJECT, key, 0, h) == NULL) {
        struct agent__centry *o = agent__cinsert(c, AGENT__K_OBJECT, key, 0, h);
        o->ft = ft;
        o->size = len;
        o->state = AGENT__C_READY;
        agent__cset_charge(c, o, ft.nchunks * sizeof(struct store_chunk) + sizeof(*o));
        agent__lru_push(c, o);
    } else {
        store_footer_free(&ft);
    }
    agent__cevict(c);
}

void agent_cache_get_stats(const struct agent_cache *c, struct agent_cache_stats *out)
{
    *out = c->st;
}

static void agent__cmaybe_free(struct agent_cache *c)
{
    if (!c->closing || c->inflight > 0) {
        return;
    }
    for (size_t i = 0; i < c->nbuckets; i++) {
        while (c->buckets[i] != NULL) {
            struct agent__centry *e = c->buckets[i];
            while (e->waiters != NULL) { /* cannot happen with nothing in flight; be safe */
                struct agent__cwait *w = e->waiters;
                e->waiters = w->next;
                agent__ccall(e, w, -ECANCELED);
                free(w);
            }
            agent__cremove(c, e);
        }
    }
    free(c->buckets);
    free(c);
}

void agent_cache_free(struct agent_cache *c)
{
    if (c == NULL) {
        return;
    }
    c->closing = true;
    agent__cmaybe_free(c);
}
