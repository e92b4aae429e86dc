/*
 * The chunk cache (see cache.h): a hash table of entries, each either a chunk of an object
 * (key, byte offset) or an object's footer, plus an LRU list of the entries that hold data.
 *
 * Entry states: LOADING (a read is in flight; requests queue as waiters and share it), STORED (a
 * chunk handed in by agent_cache_put() whose zstd bytes are not decoded yet) and READY. Only
 * READY and STORED entries are charged against the capacity and sit in the LRU; an entry whose
 * waiters are being called is never evicted. A failed load removes its entry, so the next
 * request tries again.
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
#define AGENT__FOOTER_OFF UINT64_MAX /* the offset that names an object's footer entry */

enum agent__cstate {
    AGENT__C_LOADING,
    AGENT__C_STORED,
    AGENT__C_READY,
};

struct agent_cbuf {
    uint8_t *data; /* bytes (malloc) */
    size_t len;    /* count */
    int refs;      /* references; the bytes are freed at zero */
};

struct agent__cwait {
    agent_cache_cb cb;         /* caller's callback */
    void *arg;                 /* its argument */
    struct agent__cwait *next; /* next waiter, in arrival order */
};

struct agent__centry {
    struct agent_cache *cache; /* owner */
    char *key;                 /* object key, NUL-terminated */
    uint64_t off;              /* chunk byte offset, or AGENT__FOOTER_OFF */
    uint64_t hash;             /* of (key, off) */
    enum agent__cstate state;  /* see the file comment */
    uint8_t *data;             /* READY chunk: raw batches (owned by buf); STORED: stored bytes */
    size_t len;                /* bytes in data */
    struct agent_cbuf *buf;    /* READY chunk: holds data, one reference is the entry's */
    struct store_chunk desc;   /* chunk: its footer entry (when STORED or being read) */
    struct store_footer ft;    /* footer entry: the parsed footer */
    size_t charge;             /* bytes counted against the capacity */
    int busy;                  /* > 0 while its waiters are being called */
    struct agent__cwait *waiters; /* queued requests (LOADING) */
    struct agent__cwait **wtail;  /* where the next waiter goes */
    struct agent__centry *hnext;  /* hash chain */
    struct agent__centry *lprev;  /* LRU list (READY and STORED only); head = most recent */
    struct agent__centry *lnext;
    bool in_lru;              /* linked in the LRU list */
    struct store_obj_read rd; /* the read in flight (LOADING) */
    uv_work_t work;           /* decode of a STORED chunk on the thread pool */
    int wrc;                  /* that decode's result */
    const char *why;          /* its error description */
    uint8_t *wout;            /* its output */
    size_t wlen;              /* bytes */
};

struct agent_cache {
    uv_loop_t *loop;                /* the agent's loop */
    struct store *store;            /* where misses are read from */
    struct agent__centry **buckets; /* hash table */
    size_t nbuckets;                /* power of two */
    struct agent__centry *lru_head; /* most recently used */
    struct agent__centry *lru_tail; /* least recently used */
    int inflight;                   /* reads and decodes not yet completed */
    bool closing;                   /* agent_cache_free() was called */
    struct agent_cache_stats st;    /* counters; bytes/entries/cap kept current */
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

static uint64_t agent__chash(const char *key, uint64_t off)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h = (h ^ *p) * 1099511628211ULL;
    }
    for (int i = 0; i < 8; i++) {
        h = (h ^ ((off >> (8 * i)) & 0xff)) * 1099511628211ULL;
    }
    return h;
}

static struct agent__centry *agent__cfind(struct agent_cache *c, const char *key, uint64_t off,
                                          uint64_t h)
{
    for (struct agent__centry *e = c->buckets[h & (c->nbuckets - 1)]; e != NULL; e = e->hnext) {
        if (e->hash == h && e->off == off && strcmp(e->key, key) == 0) {
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

static struct agent__centry *agent__cinsert(struct agent_cache *c, const char *key, uint64_t off,
                                            uint64_t h)
{
    if (c->st.entries + 1 > c->nbuckets * 2) {
        agent__cgrow(c);
    }
    struct agent__centry *e = kp_xcalloc(1, sizeof(*e));
    e->cache = c;
    e->key = kp_xstrdup(key);
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

/* Unlinks `e` from the table and the LRU and frees it (no waiters may be left). */
static void agent__cremove(struct agent_cache *c, struct agent__centry *e)
{
    struct agent__centry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != NULL && *pp != e) {
        pp = &(*pp)->hnext;
    }
    if (*pp == e) {
        *pp = e->hnext;
    }
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

static void agent__cwait_add(struct agent__centry *e, agent_cache_cb cb, void *arg)
{
    struct agent__cwait *w = kp_xcalloc(1, sizeof(*w));
    w->cb = cb;
    w->arg = arg;
    *e->wtail = w;
    e->wtail = &w->next;
}

static void agent__cmaybe_free(struct agent_cache *c);

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
        if (err == 0 && e->off != AGENT__FOOTER_OFF) {
            w->cb(w->arg, 0, e->data, e->len, e->buf);
        } else {
            w->cb(w->arg, err, NULL, 0, NULL);
        }
        free(w);
    }
    e->busy--;
    if (err != 0) {
        c->st.errors++;
        agent__cremove(c, e);
    } else {
        agent__cevict(c);
    }
}

static void agent__cchunk_read_cb(struct store_obj_read *r)
{
    struct agent__centry *e = r->data;
    struct agent_cache *c = e->cache;
    c->inflight--;
    int err = r->err;
    if (err == 0) {
        agent__cset_ready(e, r->raw, r->raw_len);
        r->raw = NULL;
        agent__cset_charge(c, e, e->len + sizeof(*e));
        agent__lru_push(c, e);
    } else {
        rn_log(RN_LOG_WARN, "chunk_read_failed", "key=%s offset=%llu error=\"%s\"", e->key,
               (unsigned long long)e->off, r->msg);
    }
    store_obj_read_cleanup(r);
    agent__cdeliver(c, e, err);
    agent__cmaybe_free(c);
}

/* Starts the ranged GET of chunk entry `e` described by `d`. */
static void agent__cstart_chunk_read(struct agent_cache *c, struct agent__centry *e,
                                     const struct store_chunk *d)
{
    e->desc = *d;
    memset(&e->rd, 0, sizeof(e->rd));
    e->rd.data = e;
    int rc = store_obj_read_chunk(c->store, &e->rd, e->key, d, d->raw_len, agent__cchunk_read_cb);
    if (rc != 0) {
        agent__cdeliver(c, e, rc);
        return;
    }
    c->inflight++;
    c->st.chunk_gets++;
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

/* A footer this chunk entry waited for arrived (err 0) or failed. */
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
    uint64_t h = agent__chash(e->key, AGENT__FOOTER_OFF);
    struct agent__centry *f = agent__cfind(c, e->key, AGENT__FOOTER_OFF, h);
    const struct store_chunk *d = f != NULL ? agent__footer_chunk(&f->ft, e->off) : NULL;
    if (d == NULL) {
        rn_log(RN_LOG_WARN, "chunk_not_in_footer", "key=%s offset=%llu", e->key,
               (unsigned long long)e->off);
        agent__cdeliver(c, e, -ENOENT);
        return;
    }
    agent__cstart_chunk_read(c, e, d);
}

static void agent__cfooter_read_cb(struct store_obj_read *r)
{
    struct agent__centry *f = r->data;
    struct agent_cache *c = f->cache;
    c->inflight--;
    int err = r->err;
    if (err == 0) {
        f->ft = r->footer;
        memset(&r->footer, 0, sizeof(r->footer));
        f->state = AGENT__C_READY;
        agent__cset_charge(c, f, f->ft.nchunks * sizeof(struct store_chunk) + sizeof(*f));
        agent__lru_push(c, f);
    } else {
        rn_log(RN_LOG_WARN, "footer_read_failed", "key=%s error=\"%s\"", f->key, r->msg);
    }
    store_obj_read_cleanup(r);
    agent__cdeliver(c, f, err);
    agent__cmaybe_free(c);
}

/* Gets chunk entry `e` (LOADING, no data) going: from the cached footer or after reading it. */
static void agent__cload_chunk(struct agent_cache *c, struct agent__centry *e)
{
    uint64_t h = agent__chash(e->key, AGENT__FOOTER_OFF);
    struct agent__centry *f = agent__cfind(c, e->key, AGENT__FOOTER_OFF, h);
    if (f != NULL && f->state == AGENT__C_READY) {
        agent__lru_push(c, f);
        agent__cfooter_ready(e, 0, NULL, 0, NULL);
        return;
    }
    if (f == NULL) {
        f = agent__cinsert(c, e->key, AGENT__FOOTER_OFF, h);
        agent__cwait_add(f, agent__cfooter_ready, e);
        memset(&f->rd, 0, sizeof(f->rd));
        f->rd.data = f;
        int rc = store_obj_read_footer(c->store, &f->rd, f->key, agent__cfooter_read_cb);
        if (rc != 0) {
            agent__cdeliver(c, f, rc);
            return;
        }
        c->inflight++;
        c->st.footer_gets++;
        return;
    }
    agent__cwait_add(f, agent__cfooter_ready, e);
}

static void agent__cdecode_work(uv_work_t *w)
{
    struct agent__centry *e = w->data;
    e->wrc =
        store_chunk_decode(&e->desc, e->data, e->len, e->desc.raw_len, &e->wout, &e->wlen, &e->why);
}

/* Replaces a STORED entry's bytes with the decoded result; delivers to its waiters. */
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

/* A STORED entry was asked for: decode it (on the pool when large), then serve its waiters. */
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

struct agent_cache *agent_cache_new(uv_loop_t *loop, struct store *s, size_t cap_bytes)
{
    struct agent_cache *c = kp_xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->store = s;
    c->nbuckets = AGENT__CACHE_BUCKETS_MIN;
    c->buckets = kp_xcalloc(c->nbuckets, sizeof(*c->buckets));
    c->st.cap = cap_bytes;
    return c;
}

int agent_cache_get(struct agent_cache *c, const char *key, uint64_t chunk_off, agent_cache_cb cb,
                    void *arg)
{
    if (c->closing) {
        return -ECANCELED;
    }
    if (chunk_off == AGENT__FOOTER_OFF) {
        return -EINVAL;
    }
    uint64_t h = agent__chash(key, chunk_off);
    struct agent__centry *e = agent__cfind(c, key, chunk_off, h);
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
        agent__cwait_add(e, cb, arg);
        return 0;
    }
    if (e != NULL) { /* STORED: handed in by a flush, decode now */
        c->st.hits++;
        agent__cwait_add(e, cb, arg);
        agent__cdecode(c, e);
        return 0;
    }
    c->st.misses++;
    e = agent__cinsert(c, key, chunk_off, h);
    agent__cwait_add(e, cb, arg);
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
        uint64_t h = agent__chash(key, d->offset);
        if (agent__cfind(c, key, d->offset, h) != NULL) {
            continue;
        }
        struct agent__centry *e = agent__cinsert(c, key, d->offset, h);
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
    uint64_t h = agent__chash(key, AGENT__FOOTER_OFF);
    if (agent__cfind(c, key, AGENT__FOOTER_OFF, h) == NULL) {
        struct agent__centry *f = agent__cinsert(c, key, AGENT__FOOTER_OFF, h);
        f->ft = ft;
        f->state = AGENT__C_READY;
        agent__cset_charge(c, f, ft.nchunks * sizeof(struct store_chunk) + sizeof(*f));
        agent__lru_push(c, f);
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
                w->cb(w->arg, -ECANCELED, NULL, 0, NULL);
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
