/*
 * Fetch (v4-17; v13+ names topics by id): the agent's read path.
 *
 * Each partition of a request runs through the same steps every time the fetch is attempted:
 *   1. its high watermark and log start offset must be known: the agent Watches the partition
 *      at the metadata service once (the Watch answer carries both, and from then on the
 *      service pushes every change), so a long poll is woken without polling;
 *   2. offsets outside [log start, high watermark] answer OFFSET_OUT_OF_RANGE; an offset at the
 *      high watermark has nothing to read;
 *   3. below the high watermark, one Lookup RPC for all such partitions names the extents
 *      (object key, chunk, byte range) from the one holding fetch_offset, up to the partition's
 *      byte limit; the chunks come from the chunk cache (cache.c) or with one ranged GET each;
 *   4. the extents' byte ranges are copied into one buffer per partition, every batch gets its
 *      real base offset written (batches are stored with base offset 0; the field is outside the
 *      CRC), the batches before the one holding fetch_offset are cut off, and the partition and
 *      response byte limits are applied with the KIP-74 rule (the first batch of the first
 *      partition with data is always returned whole, whatever the limits).
 * If fewer than min_bytes were found and max_wait_ms has not passed, the fetch parks; a pushed
 * high watermark past one of its fetch offsets, a metadata reconnect, the deadline or shutdown
 * runs it again (the deadline and shutdown then answer whatever was found).
 *
 * Transactions do not exist yet, so read_committed reads up to the last stable offset, which is
 * the high watermark, and aborted_transactions is empty (null for read_uncommitted). Fetch
 * sessions (KIP-227) are declined: session_id is always 0, and an incremental request answers
 * FETCH_SESSION_ID_NOT_FOUND so the client falls back to full fetches.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "cache.h"
#include "fetch.h"
#include "handlers.h"
#include "obs.h"
#include "runnel/common/log.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/records.h"

#define AGENT__PART_BUCKETS 4096      /* partition state hash buckets */
#define AGENT__META_API_LOOKUP 1007   /* MetaLookup */
#define AGENT__META_API_WATCH 1010    /* MetaWatch */
#define AGENT__INDEX_MAX 128          /* extents of the index kept per partition */
#define AGENT__LOOKUP_AHEAD (8 << 20) /* raw bytes of extents asked for per Lookup, at least */
#define AGENT__OVERDUE_MS 1000        /* after the deadline, answer without waiting for RPCs */
#define AGENT__LEADER_EPOCH 0         /* the epoch Metadata reports, written into served batches */

/* One cached extent of a partition's index (as the Lookup RPC named it). */
struct agent__iext {
    int64_t base_offset; /* first offset */
    int64_t last_offset; /* last offset */
    char *key;           /* object key (malloc) */
    uint64_t chunk_off;  /* chunk byte offset */
    uint32_t raw_off;    /* byte range in the decoded chunk */
    uint32_t raw_len;    /* bytes */
};

/* What the agent knows of one partition's offsets. */
struct agent__pstate {
    struct kp_uuid topic_id;    /* topic */
    int32_t partition;          /* index */
    int64_t hwm;                /* high watermark (valid when known) */
    int64_t log_start;          /* log start offset (valid when known) */
    bool known;                 /* a Watch answered on the current metadata connection */
    struct agent__iext *idx;    /* cached index: consecutive extents (AGENT__INDEX_MAX) */
    uint32_t n_idx;             /* extents in idx */
    struct agent__pstate *next; /* hash chain */
};

struct agent__fop;

/* One extent being read for a partition of a fetch. */
struct agent__fext {
    struct agent__fop *op;   /* owner */
    struct agent__fpart *fp; /* partition it belongs to */
    int64_t base_offset;     /* offset of its first record */
    int64_t last_offset;     /* offset of its last record */
    char *key;               /* object key (malloc) */
    uint64_t chunk_off;      /* chunk byte offset in the object */
    uint32_t raw_off;        /* byte range in the decoded chunk */
    uint32_t raw_len;        /* bytes */
    size_t pos;              /* its place in the partition's run of extents (sum of those before) */
    struct agent_cbuf *cbuf; /* the cached chunk holding its bytes (a reference), once read */
    uint8_t *bytes;          /* its bytes in there */
};

/* One partition of a fetch request. */
struct agent__fpart {
    int32_t ti;               /* request topic index */
    int32_t pi;               /* request partition index within the topic */
    struct kp_uuid topic_id;  /* resolved topic id */
    int32_t partition;        /* partition index */
    int64_t fetch_offset;     /* first offset wanted */
    int32_t max_bytes;        /* partition_max_bytes */
    struct agent__pstate *st; /* offsets state, NULL when err is set at resolution */
    int16_t err;              /* error of this attempt (or of resolution: sticky) */
    bool sticky;              /* err came from topic resolution and stays */
    bool want_data;           /* part of this attempt's Lookup */
    bool from_idx;            /* this attempt's extents came from the cached index */
    struct agent__fext *ext;  /* extents of this attempt */
    int32_t n_ext;            /* count */
    size_t out_off;           /* records served: [out_off, out_off + out_len) of the extents */
    size_t out_len;           /* bytes */
    const uint8_t *out_ptr;   /* where the first served byte is */
};

/* A Fetch request in progress. */
struct agent__fop {
    struct agent *a;                   /* agent */
    struct agent_fetch *fs;            /* read path state (outlives its ops) */
    struct agent_req *req;             /* the request */
    const struct kp_fetch_request *rq; /* decoded body (request arena) */
    struct agent__fpart *parts;        /* every requested partition, in request order */
    size_t nparts;                     /* count */
    uv_timer_t timer;                  /* max_wait_ms deadline */
    uint64_t deadline;                 /* loop time at which the fetch answers regardless */
    int pending;                       /* asynchronous steps of this attempt not yet done */
    bool final;                        /* this attempt answers whatever it finds */
    bool parked;                       /* waiting in the parked list */
    bool running;                      /* an attempt is in progress */
    bool overdue;                      /* the deadline passed while an attempt was waiting */
    bool answered;                     /* answered early; ends once its last callback has run */
    bool wake;                         /* woken while running: attempt again */
    size_t budget;           /* raw extent bytes this attempt may still read (max_bytes) */
    bool took_any;           /* some partition of this attempt has extents already */
    struct agent__fop *prev; /* list of live ops */
    struct agent__fop *next;
};

struct agent_fetch {
    struct agent *a;                                  /* owner */
    struct agent_cache *cache;                        /* chunk cache */
    struct agent__pstate *parts[AGENT__PART_BUCKETS]; /* partition states */
    struct agent__fop *ops;                           /* live fetches */
    size_t n_ops;                                     /* count */
    bool closing;                                     /* agent_fetch_free() was called */
};

static void agent__fop_attempt(struct agent__fop *op);
static void agent__fop_continue(struct agent__fop *op);

/* ---- partition state ---- */

static size_t agent__phash(const struct kp_uuid *id, int32_t p)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < 16; i++) {
        h = (h ^ id->b[i]) * 1099511628211ULL;
    }
    h = (h ^ (uint32_t)p) * 1099511628211ULL;
    return (size_t)(h % AGENT__PART_BUCKETS);
}

static struct agent__pstate *agent__pfind(struct agent_fetch *fs, const struct kp_uuid *id,
                                          int32_t p, bool create)
{
    size_t h = agent__phash(id, p);
    for (struct agent__pstate *s = fs->parts[h]; s != NULL; s = s->next) {
        if (s->partition == p && memcmp(s->topic_id.b, id->b, 16) == 0) {
            return s;
        }
    }
    if (!create) {
        return NULL;
    }
    struct agent__pstate *s = kp_xcalloc(1, sizeof(*s));
    s->topic_id = *id;
    s->partition = p;
    s->next = fs->parts[h];
    fs->parts[h] = s;
    return s;
}

static void agent__idx_clear(struct agent__pstate *s)
{
    for (uint32_t i = 0; i < s->n_idx; i++) {
        free(s->idx[i].key);
    }
    s->n_idx = 0;
}

/*
 * Remembers the extents a Lookup returned. The index holds one run of consecutive extents: a
 * run that continues it (or restarts inside it) extends it, anything else replaces it; the
 * oldest extents are dropped past AGENT__INDEX_MAX (never those of this answer's front). Extents
 * never change once committed, so the index needs no invalidation except when a read through it
 * fails.
 */
static void agent__idx_learn(struct agent__pstate *s,
                             const struct kp_meta_lookup_response_meta_lookup_partition_result *pr)
{
    int32_t n = pr->extents_count > 0 ? pr->extents_count : 0;
    if (n == 0) {
        return;
    }
    int64_t first = pr->extents[0].base_offset;
    uint32_t keep = 0;
    if (s->n_idx > 0 && first == s->idx[s->n_idx - 1].last_offset + 1) {
        keep = s->n_idx;
    } else {
        for (uint32_t i = 0; i < s->n_idx; i++) {
            if (s->idx[i].base_offset == first) {
                keep = i;
                break;
            }
        }
    }
    for (uint32_t i = keep; i < s->n_idx; i++) {
        free(s->idx[i].key);
    }
    s->n_idx = keep;
    if (s->idx == NULL) {
        s->idx = kp_xcalloc(AGENT__INDEX_MAX, sizeof(*s->idx));
    }
    for (int32_t k = 0; k < n; k++) {
        const struct kp_meta_lookup_response_meta_lookup_extent *x = &pr->extents[k];
        if (x->raw_length < 0 || x->raw_offset < 0 || x->chunk_offset < 0 ||
            x->object_key.len <= 0 || x->last_offset < x->base_offset) {
            agent__idx_clear(s);
            return;
        }
        if (s->n_idx > 0 && x->base_offset != s->idx[s->n_idx - 1].last_offset + 1) {
            agent__idx_clear(s); /* not consecutive: start a new run */
        }
        if (s->n_idx == AGENT__INDEX_MAX) {
            if (k >= AGENT__INDEX_MAX) {
                break; /* keep the front of this answer: the next fetches need it first */
            }
            free(s->idx[0].key);
            memmove(&s->idx[0], &s->idx[1], (AGENT__INDEX_MAX - 1) * sizeof(*s->idx));
            s->n_idx--;
        }
        struct agent__iext *e = &s->idx[s->n_idx++];
        e->base_offset = x->base_offset;
        e->last_offset = x->last_offset;
        e->key = kp_xmalloc((size_t)x->object_key.len + 1);
        memcpy(e->key, x->object_key.ptr, (size_t)x->object_key.len);
        e->key[x->object_key.len] = '\0';
        e->chunk_off = (uint64_t)x->chunk_offset;
        e->raw_off = (uint32_t)x->raw_offset;
        e->raw_len = (uint32_t)x->raw_length;
    }
}

static void agent__fs_free(struct agent_fetch *fs)
{
    for (size_t i = 0; i < AGENT__PART_BUCKETS; i++) {
        while (fs->parts[i] != NULL) {
            struct agent__pstate *s = fs->parts[i];
            fs->parts[i] = s->next;
            agent__idx_clear(s);
            free(s->idx);
            free(s);
        }
    }
    free(fs);
}

/* ---- op lifetime ---- */

static void agent__fpart_reset(struct agent__fpart *fp)
{
    for (int32_t i = 0; i < fp->n_ext; i++) {
        free(fp->ext[i].key);
        agent_cbuf_unref(fp->ext[i].cbuf);
    }
    free(fp->ext);
    fp->ext = NULL;
    fp->n_ext = 0;
    fp->out_off = fp->out_len = 0;
    fp->out_ptr = NULL;
    fp->want_data = false;
    fp->from_idx = false;
    if (!fp->sticky) {
        fp->err = 0;
    }
}

static void agent__fop_closed(uv_handle_t *h)
{
    struct agent__fop *op = h->data;
    struct agent_fetch *fs = op->fs;
    free(op);
    fs->n_ops--; /* counted until here: the timer handle belongs to fs's lifetime */
    if (fs->closing && fs->n_ops == 0) {
        agent__fs_free(fs);
    }
}

/* Unlinks and frees the op (the request was answered already). */
static void agent__fop_end(struct agent__fop *op)
{
    struct agent_fetch *fs = op->fs;
    for (size_t i = 0; i < op->nparts; i++) {
        agent__fpart_reset(&op->parts[i]);
    }
    free(op->parts);
    op->parts = NULL;
    if (op->prev != NULL) {
        op->prev->next = op->next;
    } else {
        fs->ops = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    }
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, agent__fop_closed);
}

/* ---- the response ---- */

static int16_t agent__fstore_err(int err)
{
    (void)err;
    return KP_ERROR_KAFKA_STORAGE_ERROR;
}

void agent_fetch_cut_init(struct agent_fetch_cut *c, int64_t fetch_offset, size_t limit,
                          bool min_one, int32_t leader_epoch)
{
    memset(c, 0, sizeof(*c));
    c->fetch_offset = fetch_offset;
    c->limit = limit;
    c->min_one = min_one;
    c->leader_epoch = leader_epoch;
    c->start = SIZE_MAX;
}

int agent_fetch_cut_extent(struct agent_fetch_cut *c, uint8_t *bytes, size_t pos, size_t len,
                           int64_t base_offset, const char **why)
{
    struct kp_batch_iter it;
    kp_batch_iter_init(&it, bytes, len, KP_BATCH_SKIP_CRC);
    int64_t off = base_offset;
    struct kp_batch b;
    struct kp_batch_err berr;
    int rc = 0;
    while (!c->full && (rc = kp_batch_iter_next(&it, &b, &berr)) == 1) {
        size_t bpos = pos + (size_t)(b.ptr - bytes);
        uint8_t *p = bytes + (bpos - pos);
        kp_batch_set_base_offset(p, off);
        kp_batch_set_leader_epoch(p, c->leader_epoch);
        int64_t last = off + b.last_offset_delta;
        if (last >= c->fetch_offset && c->start == SIZE_MAX) {
            c->start = bpos;
            c->end = bpos;
        }
        if (c->start != SIZE_MAX) {
            size_t have = c->end - c->start;
            if (have + b.len <= c->limit || (have == 0 && c->min_one)) {
                c->end = bpos + b.len;
            } else {
                c->full = true;
                break;
            }
        }
        off = last + 1;
    }
    if (!c->full && rc < 0) {
        *why = berr.why != NULL ? berr.why : "malformed batch";
        return -EBADMSG;
    }
    return 0;
}

/* Cuts the batches of `fp` with `limit` (see fetch.h); false on malformed bytes (err set). */
static bool agent__fpart_cut(struct agent__fpart *fp, size_t limit, bool min_one)
{
    struct agent_fetch_cut c;
    agent_fetch_cut_init(&c, fp->fetch_offset, limit, min_one, AGENT__LEADER_EPOCH);
    for (int32_t k = 0; k < fp->n_ext && !c.full; k++) {
        struct agent__fext *e = &fp->ext[k];
        const char *why = NULL;
        if (agent_fetch_cut_extent(&c, e->bytes, e->pos, e->raw_len, e->base_offset, &why) != 0) {
            rn_log(RN_LOG_ERROR, "fetch_bad_batches", "key=%s offset=%lld why=\"%s\"", e->key,
                   (long long)e->base_offset, why);
            fp->err = KP_ERROR_KAFKA_STORAGE_ERROR;
            return false;
        }
    }
    if (c.start != SIZE_MAX && c.end > c.start) {
        fp->out_off = c.start;
        fp->out_len = c.end - c.start;
        for (int32_t k = 0; k < fp->n_ext; k++) {
            const struct agent__fext *e = &fp->ext[k];
            if (c.start < e->pos + e->raw_len) {
                fp->out_ptr = e->bytes + (c.start - e->pos);
                break;
            }
        }
    }
    return true;
}

/* Applies the limits to this attempt's data and returns the bytes that would be served. */
static size_t agent__fop_cut(struct agent__fop *op)
{
    int16_t version = op->req->hdr.request_api_version;
    size_t budget = (size_t)(op->rq->max_bytes > 0 ? op->rq->max_bytes : 0);
    if (version < 3) {
        budget = SIZE_MAX;
    }
    size_t total = 0;
    bool min_one = true;
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__fpart *fp = &op->parts[i];
        if (fp->err != 0 || fp->n_ext == 0) {
            continue;
        }
        size_t pmax = (size_t)(fp->max_bytes > 0 ? fp->max_bytes : 0);
        size_t left = budget > total ? budget - total : 0;
        size_t limit = pmax < left ? pmax : left;
        if (!agent__fpart_cut(fp, limit, min_one)) {
            continue;
        }
        total += fp->out_len;
        if (fp->out_len > 0) {
            min_one = false;
        }
    }
    return total;
}

/*
 * A response being sent: the served records go out from the cached chunks they live in (no copy),
 * so this holds a reference to every chunk they come from until the frame has been written.
 */
struct agent__fsend {
    struct kp_gather g;        /* claims each partition's records while the response encodes */
    struct agent__fop *op;     /* the fetch, during the encoding only */
    struct agent_req *req;     /* the request, during the encoding only */
    size_t next;               /* the partition whose records the encoder writes next */
    struct agent_cbuf **cbufs; /* chunk references held (malloc) */
    size_t n_cbufs;            /* count */
};

static void agent__fsend_release(void *arg)
{
    struct agent__fsend *fs = arg;
    for (size_t i = 0; i < fs->n_cbufs; i++) {
        agent_cbuf_unref(fs->cbufs[i]);
    }
    free(fs->cbufs);
    free(fs);
}

/* Whether fp has records in this response. */
static bool agent__fpart_serves(const struct agent__fpart *fp)
{
    return fp->err == 0 && fp->out_len > 0;
}

/*
 * The encoder reached a byte run: when it is the records of the next partition that serves any,
 * record that partition's bytes as runs of the request, extent by extent (adjacent extents of the
 * same chunk merge into one run). Partitions are encoded in request order, so one comparison
 * decides.
 */
static bool agent__fsend_claim(struct kp_gather *g, size_t at, const uint8_t *ptr, size_t n)
{
    struct agent__fsend *fs = (struct agent__fsend *)g;
    struct agent__fop *op = fs->op;
    while (fs->next < op->nparts && !agent__fpart_serves(&op->parts[fs->next])) {
        fs->next++;
    }
    if (fs->next == op->nparts) {
        return false;
    }
    struct agent__fpart *fp = &op->parts[fs->next];
    if (ptr != fp->out_ptr || n != fp->out_len) {
        return false;
    }
    fs->next++;
    size_t start = fp->out_off;
    size_t end = fp->out_off + fp->out_len;
    const uint8_t *run = NULL;
    size_t run_len = 0;
    for (int32_t k = 0; k < fp->n_ext; k++) {
        struct agent__fext *e = &fp->ext[k];
        size_t lo = e->pos > start ? e->pos : start;
        size_t hi = e->pos + e->raw_len < end ? e->pos + e->raw_len : end;
        if (lo >= hi) {
            continue;
        }
        const uint8_t *p = e->bytes + (lo - e->pos);
        if (run != NULL && run + run_len == p) {
            run_len += hi - lo;
        } else {
            if (run != NULL) {
                agent_req_add_run(fs->req, at, run, run_len);
            }
            run = p;
            run_len = hi - lo;
        }
        fs->cbufs[fs->n_cbufs++] = e->cbuf; /* the reference moves to the send */
        e->cbuf = NULL;
    }
    if (run != NULL) {
        agent_req_add_run(fs->req, at, run, run_len);
    }
    return true;
}

static struct agent__fsend *agent__fsend_new(struct agent__fop *op)
{
    struct agent__fsend *fs = kp_xcalloc(1, sizeof(*fs));
    fs->g.claim = agent__fsend_claim;
    fs->g.min = 1;
    fs->op = op;
    fs->req = op->req;
    size_t n = 0;
    for (size_t i = 0; i < op->nparts; i++) {
        if (agent__fpart_serves(&op->parts[i])) {
            n += (size_t)op->parts[i].n_ext;
        }
    }
    fs->cbufs = kp_xmalloc((n ? n : 1) * sizeof(*fs->cbufs));
    return fs;
}

static void agent__fop_respond(struct agent__fop *op, int16_t top_error)
{
    struct agent_req *req = op->req;
    const struct kp_fetch_request *rq = op->rq;
    struct kp_fetch_response r;
    kp_fetch_response_init(&r);
    r.throttle_time_ms = 0;
    r.error_code = top_error;
    r.session_id = 0;
    int32_t nt = top_error != 0 || rq->topics_count < 0 ? 0 : rq->topics_count;
    r.responses = kp_arena_calloc(&req->arena, (size_t)nt + 1, sizeof(*r.responses));
    if (r.responses == NULL) {
        nt = 0;
    }
    r.responses_count = nt;
    size_t k = 0;
    bool ok = true;
    for (int32_t t = 0; t < nt && ok; t++) {
        struct kp_fetch_response_fetchable_topic_response *tr = &r.responses[t];
        kp_fetch_response_fetchable_topic_response_init(tr);
        tr->topic = rq->topics[t].topic;
        tr->topic_id = rq->topics[t].topic_id;
        int32_t np = rq->topics[t].partitions_count > 0 ? rq->topics[t].partitions_count : 0;
        tr->partitions = kp_arena_calloc(&req->arena, (size_t)np + 1, sizeof(*tr->partitions));
        if (tr->partitions == NULL) {
            ok = false;
            break;
        }
        tr->partitions_count = np;
        for (int32_t p = 0; p < np; p++, k++) {
            struct agent__fpart *fp = &op->parts[k];
            struct kp_fetch_response_partition_data *pd = &tr->partitions[p];
            kp_fetch_response_partition_data_init(pd);
            pd->partition_index = rq->topics[t].partitions[p].partition;
            pd->error_code = fp->err;
            pd->high_watermark = -1;
            pd->last_stable_offset = -1;
            pd->log_start_offset = -1;
            if (fp->st != NULL && fp->st->known && !fp->sticky) {
                pd->high_watermark = fp->st->hwm;
                pd->last_stable_offset = fp->st->hwm;
                pd->log_start_offset = fp->st->log_start;
            }
            pd->preferred_read_replica = -1;
            if (rq->isolation_level == 1) {
                pd->aborted_transactions = NULL;
                pd->aborted_transactions_count = 0;
            } else {
                pd->aborted_transactions = NULL;
                pd->aborted_transactions_count = -1;
            }
            pd->records = (struct kp_bytes){(const uint8_t *)"", 0};
            if (fp->err == 0 && fp->out_len > 0) {
                /* Sent through the gather claim below, run by run: never read as one view. */
                pd->records = (struct kp_bytes){fp->out_ptr, (int32_t)fp->out_len};
                agent_obs_fetch_bytes(fp->out_len);
            }
        }
    }
    if (!ok) {
        r.responses_count = 0;
        r.error_code = KP_ERROR_UNKNOWN_SERVER_ERROR;
    }
    struct agent__fsend *fs = agent__fsend_new(op); /* its op and req serve the encoding only */
    op->req = NULL;
    agent_req_respond_gather(req, &r, &fs->g, agent__fsend_release, fs);
    if (!op->answered) {
        agent__fop_end(op);
    }
}

/* ---- attempts ---- */

/*
 * The deadline passed long ago and the attempt still waits for the metadata service (queued
 * while it is unreachable): answer with what is known and no records; the op ends when its
 * outstanding callback arrives.
 */
static void agent__fop_answer_early(struct agent__fop *op)
{
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__fpart *fp = &op->parts[i];
        fp->out_len = 0;
        if (fp->err == 0 && (fp->st == NULL || !fp->st->known)) {
            fp->err = KP_ERROR_LEADER_NOT_AVAILABLE;
        }
    }
    rn_log(RN_LOG_WARN, "fetch_answered_early", "partitions=%zu", op->nparts);
    op->answered = true;
    agent__fop_respond(op, 0);
}

static void agent__fop_timer_cb(uv_timer_t *t)
{
    struct agent__fop *op = t->data;
    op->final = true;
    if (op->running && op->overdue) {
        agent__fop_answer_early(op);
        return;
    }
    if (op->running) {
        op->wake = true;
        op->overdue = true;
        uv_timer_start(&op->timer, agent__fop_timer_cb, AGENT__OVERDUE_MS, 0);
        return;
    }
    op->parked = false;
    agent__fop_attempt(op);
}

/* Wakes a parked fetch (new data, reconnect, shutdown). */
static void agent__fop_wake(struct agent__fop *op, bool final)
{
    if (final) {
        op->final = true;
    }
    if (op->running) {
        op->wake = true;
        return;
    }
    if (!op->parked) {
        return;
    }
    op->parked = false;
    agent__fop_attempt(op);
}

/* All extents are in: cut, then answer or park. */
static void agent__fop_finish_attempt(struct agent__fop *op)
{
    if (op->answered) { /* the last callback of an op answered early */
        op->running = false;
        agent__fop_end(op);
        return;
    }
    size_t total = agent__fop_cut(op);
    bool errors = false;
    for (size_t i = 0; i < op->nparts; i++) {
        if (op->parts[i].err != 0) {
            errors = true;
        }
    }
    op->running = false;
    int32_t min_bytes = op->rq->min_bytes;
    bool enough = total > 0 && (min_bytes <= 0 || total >= (size_t)min_bytes);
    if (enough || errors || op->final || op->fs->closing || op->a->stopping ||
        op->req->conn == NULL || op->rq->max_wait_ms <= 0) {
        agent__fop_respond(op, 0);
        return;
    }
    for (size_t i = 0; i < op->nparts; i++) {
        agent__fpart_reset(&op->parts[i]);
    }
    if (op->wake) { /* something arrived while we were reading: look again */
        op->wake = false;
        agent__fop_attempt(op);
        return;
    }
    op->parked = true;
    uint64_t now = uv_now(op->a->loop);
    if (!uv_is_active((uv_handle_t *)&op->timer)) {
        uv_timer_start(&op->timer, agent__fop_timer_cb, op->deadline > now ? op->deadline - now : 0,
                       0);
    }
}

static void agent__fop_step_done(struct agent__fop *op)
{
    if (--op->pending == 0) {
        agent__fop_continue(op);
    }
}

static void agent__fext_chunk_cb(void *arg, int err, const uint8_t *raw, size_t raw_len,
                                 struct agent_cbuf *buf)
{
    struct agent__fext *e = arg;
    struct agent__fop *op = e->op;
    struct agent__fpart *fp = e->fp;
    if (err == 0 && ((size_t)e->raw_off > raw_len || e->raw_len > raw_len - e->raw_off)) {
        rn_log(RN_LOG_ERROR, "extent_outside_chunk", "key=%s chunk_offset=%llu raw=%u+%u len=%zu",
               e->key, (unsigned long long)e->chunk_off, e->raw_off, e->raw_len, raw_len);
        err = -EBADMSG;
    }
    if (err != 0) {
        if (fp->err == 0) {
            fp->err = agent__fstore_err(err);
        }
        if (fp->from_idx && fp->st != NULL) {
            agent__idx_clear(fp->st); /* ask the metadata service next time */
        }
    } else {
        agent_cbuf_ref(buf);
        e->cbuf = buf;
        e->bytes = (uint8_t *)raw + e->raw_off; /* batch headers are rewritten in place */
    }
    if (--op->pending == 0) { /* the last read of this attempt */
        agent__fop_finish_attempt(op);
    }
}

static void agent__fpart_alloc(struct agent__fpart *fp, int32_t n)
{
    fp->ext = kp_xcalloc((size_t)n, sizeof(*fp->ext));
    fp->n_ext = n;
}

/* Fills extent k of fp (the extents follow each other in offset order). */
static void agent__fpart_add(struct agent__fop *op, struct agent__fpart *fp, int32_t k,
                             int64_t base, int64_t last, const char *key, size_t key_len,
                             uint64_t chunk_off, uint32_t raw_off, uint32_t raw_len)
{
    struct agent__fext *e = &fp->ext[k];
    e->op = op;
    e->fp = fp;
    e->base_offset = base;
    e->last_offset = last;
    e->key = kp_xmalloc(key_len + 1);
    memcpy(e->key, key, key_len);
    e->key[key_len] = '\0';
    e->chunk_off = chunk_off;
    e->raw_off = raw_off;
    e->raw_len = raw_len;
    e->pos = k == 0 ? 0 : fp->ext[k - 1].pos + fp->ext[k - 1].raw_len;
}

/*
 * Serves fp's extents from the partition's cached index when it covers fetch_offset and either
 * fills max_bytes (by the Lookup RPC's own rule: whole extents, at least one) or reaches the
 * high watermark. Returns false when the metadata service must be asked.
 */
/*
 * Whether fp may take one more extent of `next_len` raw bytes after `taken` extents totalling
 * `total`: within min(partition_max_bytes, what is left of max_bytes), except that the very first
 * extent of the attempt is always taken (KIP-74). This bounds what one Fetch reads into memory.
 */
static bool agent__fop_fits(const struct agent__fop *op, const struct agent__fpart *fp,
                            int32_t taken, size_t total, size_t next_len)
{
    size_t pmax = (size_t)(fp->max_bytes > 0 ? fp->max_bytes : 0);
    size_t limit = pmax < op->budget ? pmax : op->budget;
    if (taken == 0 && !op->took_any) {
        return true;
    }
    return total + next_len <= limit;
}

/* Charges fp's extents against the attempt's budget. */
static void agent__fop_charge(struct agent__fop *op, int32_t taken, size_t total)
{
    op->budget -= total < op->budget ? total : op->budget;
    if (taken > 0) {
        op->took_any = true;
    }
}

static bool agent__idx_serve(struct agent__fop *op, struct agent__fpart *fp)
{
    const struct agent__pstate *s = fp->st;
    uint32_t lo = 0;
    uint32_t hi = s->n_idx;
    while (lo < hi) { /* first extent with last_offset >= fetch_offset */
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->idx[mid].last_offset < fp->fetch_offset) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == s->n_idx || s->idx[lo].base_offset > fp->fetch_offset) {
        return false;
    }
    size_t total = 0;
    uint32_t end = lo;
    bool full = false;
    while (end < s->n_idx) {
        if (!agent__fop_fits(op, fp, (int32_t)(end - lo), total, s->idx[end].raw_len)) {
            full = true;
            break;
        }
        total += s->idx[end].raw_len;
        end++;
    }
    if (!full && s->idx[end - 1].last_offset + 1 < s->hwm) {
        return false; /* the index ends before the data does */
    }
    agent__fop_charge(op, (int32_t)(end - lo), total);
    fp->from_idx = true;
    if (end == lo) {
        return true; /* over the limits: nothing from this partition this time */
    }
    agent__fpart_alloc(fp, (int32_t)(end - lo));
    for (uint32_t i = lo; i < end; i++) {
        const struct agent__iext *x = &s->idx[i];
        agent__fpart_add(op, fp, (int32_t)(i - lo), x->base_offset, x->last_offset, x->key,
                         strlen(x->key), x->chunk_off, x->raw_off, x->raw_len);
    }
    fp->from_idx = true;
    return true;
}

static void agent__fop_read(struct agent__fop *op);

static void agent__fop_lookup_cb(void *arg, int status, const void *response)
{
    struct agent__fop *op = arg;
    if (op->answered) {
        agent__fop_finish_attempt(op);
        return;
    }
    const struct kp_meta_lookup_response *rs = response;
    size_t j = 0;
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__fpart *fp = &op->parts[i];
        if (!fp->want_data) {
            continue;
        }
        if (status != 0 || op->fs->closing || rs == NULL || (int32_t)j >= rs->partitions_count) {
            fp->err = KP_ERROR_LEADER_NOT_AVAILABLE;
            j++;
            continue;
        }
        const struct kp_meta_lookup_response_meta_lookup_partition_result *pr =
            &rs->partitions[j++];
        if (pr->error_code == 0 && pr->high_watermark >= fp->st->hwm) {
            fp->st->hwm = pr->high_watermark;
            fp->st->log_start = pr->log_start_offset;
        }
        if (pr->error_code != 0) {
            fp->err = pr->error_code;
            continue;
        }
        int32_t n = pr->extents_count > 0 ? pr->extents_count : 0;
        for (int32_t k = 0; k < n; k++) {
            const struct kp_meta_lookup_response_meta_lookup_extent *x = &pr->extents[k];
            if (x->raw_length < 0 || x->raw_offset < 0 || x->chunk_offset < 0 ||
                x->object_key.len <= 0) {
                fp->err = KP_ERROR_KAFKA_STORAGE_ERROR;
                break;
            }
        }
        if (fp->err != 0 || n == 0) {
            continue;
        }
        agent__idx_learn(fp->st, pr);
        /* The Lookup asked ahead for the index; this fetch takes what fits its limits. */
        size_t total = 0;
        int32_t take = 0;
        while (take < n &&
               agent__fop_fits(op, fp, take, total, (size_t)pr->extents[take].raw_length)) {
            total += (size_t)pr->extents[take].raw_length;
            take++;
        }
        agent__fop_charge(op, take, total);
        n = take;
        if (n == 0) {
            continue;
        }
        agent__fpart_alloc(fp, n);
        for (int32_t k = 0; k < n; k++) {
            const struct kp_meta_lookup_response_meta_lookup_extent *x = &pr->extents[k];
            agent__fpart_add(op, fp, k, x->base_offset, x->last_offset, x->object_key.ptr,
                             (size_t)x->object_key.len, (uint64_t)x->chunk_offset,
                             (uint32_t)x->raw_offset, (uint32_t)x->raw_length);
        }
    }
    agent__fop_read(op);
}

/* Starts the chunk reads of this attempt's extents; finishes the attempt when all are in. */
static void agent__fop_read(struct agent__fop *op)
{
    /* Start the chunk reads; pending holds one extra count so that hits answered at once do
     * not finish the step before every read is started. */
    op->pending = 1;
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__fpart *fp = &op->parts[i];
        if (op->fs->cache == NULL && fp->n_ext > 0 && fp->err == 0) {
            fp->err = KP_ERROR_LEADER_NOT_AVAILABLE; /* shutting down */
        }
        for (int32_t k = 0; k < fp->n_ext && fp->err == 0; k++) {
            op->pending++;
            if (agent_cache_get(op->fs->cache, fp->ext[k].key, fp->ext[k].chunk_off,
                                agent__fext_chunk_cb, &fp->ext[k]) != 0) {
                fp->err = KP_ERROR_LEADER_NOT_AVAILABLE;
                op->pending--;
            }
        }
    }
    op->pending--;
    if (op->pending == 0) {
        agent__fop_finish_attempt(op);
    }
}

/* Second phase: offsets known; decide per partition, then one Lookup for those with data. */
static void agent__fop_lookup(struct agent__fop *op)
{
    if (op->answered) {
        agent__fop_finish_attempt(op);
        return;
    }
    struct kp_meta_lookup_request q;
    kp_meta_lookup_request_init(&q);
    size_t n = 0;
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__fpart *fp = &op->parts[i];
        if (fp->err != 0) {
            continue;
        }
        if (!fp->st->known) {
            fp->err = KP_ERROR_LEADER_NOT_AVAILABLE;
            continue;
        }
        if (fp->fetch_offset < fp->st->log_start || fp->fetch_offset > fp->st->hwm) {
            fp->err = KP_ERROR_OFFSET_OUT_OF_RANGE;
            continue;
        }
        if (fp->fetch_offset < fp->st->hwm && !agent__idx_serve(op, fp)) {
            fp->want_data = true;
            n++;
        }
    }
    if (op->fs->closing) {
        for (size_t i = 0; i < op->nparts; i++) {
            op->parts[i].want_data = false;
        }
        agent__fop_finish_attempt(op);
        return;
    }
    if (n == 0) {
        agent__fop_read(op);
        return;
    }
    q.partitions = kp_xcalloc(n, sizeof(*q.partitions));
    q.partitions_count = (int32_t)n;
    size_t j = 0;
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__fpart *fp = &op->parts[i];
        if (!fp->want_data) {
            continue;
        }
        kp_meta_lookup_request_meta_lookup_partition_init(&q.partitions[j]);
        q.partitions[j].topic_id = fp->topic_id;
        q.partitions[j].partition_index = fp->partition;
        q.partitions[j].offset = fp->fetch_offset;
        q.partitions[j].max_bytes =
            fp->max_bytes > AGENT__LOOKUP_AHEAD ? fp->max_bytes : AGENT__LOOKUP_AHEAD;
        j++;
    }
    int rc = meta_client_call(op->a->meta, AGENT__META_API_LOOKUP, &q, agent__fop_lookup_cb, op);
    free(q.partitions);
    if (rc != 0) {
        agent__fop_lookup_cb(op, rc, NULL);
    }
}

static void agent__fop_watch_cb(void *arg, int status, const void *response)
{
    struct agent__fop *op = arg;
    const struct kp_meta_watch_response *rs = response;
    if (status == 0 && rs != NULL && !op->fs->closing) {
        for (int32_t i = 0; i < rs->partitions_count; i++) {
            const struct kp_meta_watch_response_meta_watch_partition_result *pr =
                &rs->partitions[i];
            struct agent__pstate *s =
                agent__pfind(op->fs, &pr->topic_id, pr->partition_index, false);
            if (s == NULL) {
                continue;
            }
            if (pr->error_code != 0) {
                for (size_t k = 0; k < op->nparts; k++) {
                    if (op->parts[k].st == s && op->parts[k].err == 0) {
                        op->parts[k].err = pr->error_code;
                    }
                }
                continue;
            }
            if (!s->known || pr->high_watermark >= s->hwm) {
                s->hwm = pr->high_watermark;
                s->log_start = pr->log_start_offset;
            }
            s->known = true;
        }
    }
    agent__fop_step_done(op);
}

/* First phase: Watch the partitions whose offsets are not known yet. */
static void agent__fop_attempt(struct agent__fop *op)
{
    op->running = true;
    op->wake = false;
    op->took_any = false;
    op->budget = SIZE_MAX;
    if (op->req->hdr.request_api_version >= 3) {
        op->budget = (size_t)(op->rq->max_bytes > 0 ? op->rq->max_bytes : 0);
    }
    for (size_t i = 0; i < op->nparts; i++) {
        agent__fpart_reset(&op->parts[i]);
    }
    size_t n = 0;
    for (size_t i = 0; i < op->nparts; i++) {
        if (op->parts[i].err == 0 && !op->parts[i].st->known) {
            n++;
        }
    }
    if (n == 0 || op->fs->closing) {
        op->pending = 1;
        agent__fop_step_done(op);
        return;
    }
    struct kp_meta_watch_request q;
    kp_meta_watch_request_init(&q);
    q.add = kp_xcalloc(n, sizeof(*q.add));
    q.add_count = (int32_t)n;
    q.remove = NULL;
    q.remove_count = 0;
    size_t j = 0;
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__fpart *fp = &op->parts[i];
        if (fp->err == 0 && !fp->st->known) {
            kp_meta_watch_request_meta_watch_partition_init(&q.add[j]);
            q.add[j].topic_id = fp->topic_id;
            q.add[j].partition_index = fp->partition;
            j++;
        }
    }
    op->pending = 1;
    int rc = meta_client_call(op->a->meta, AGENT__META_API_WATCH, &q, agent__fop_watch_cb, op);
    free(q.add);
    if (rc != 0) {
        agent__fop_watch_cb(op, rc, NULL);
    }
}

static void agent__fop_continue(struct agent__fop *op)
{
    agent__fop_lookup(op);
}

/* ---- the handler ---- */

static void agent__fetch_topics_cb(void *arg, int status, struct agent_topic **topics,
                                   const int16_t *errors, size_t n)
{
    struct agent__fop *op = arg;
    const struct kp_fetch_request *rq = op->rq;
    if (op->answered) { /* answered early while the topics were looked up */
        op->running = false;
        agent__fop_end(op);
        return;
    }
    op->running = false;
    size_t k = 0;
    for (size_t t = 0; t < n; t++) {
        const struct kp_fetch_request_fetch_topic *ft = &rq->topics[t];
        int32_t np = ft->partitions_count > 0 ? ft->partitions_count : 0;
        const struct agent_topic *tp = status == 0 ? topics[t] : NULL;
        for (int32_t p = 0; p < np; p++, k++) {
            struct agent__fpart *fp = &op->parts[k];
            fp->ti = (int32_t)t;
            fp->pi = p;
            fp->partition = ft->partitions[p].partition;
            fp->fetch_offset = ft->partitions[p].fetch_offset;
            fp->max_bytes = ft->partitions[p].partition_max_bytes;
            if (status != 0) {
                fp->err = KP_ERROR_LEADER_NOT_AVAILABLE;
            } else if (tp == NULL) {
                fp->err = errors != NULL && errors[t] != 0 ? errors[t]
                                                           : KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            } else if (fp->partition < 0 || fp->partition >= tp->partitions) {
                fp->err = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            } else {
                fp->topic_id = tp->id;
                fp->st = agent__pfind(op->fs, &tp->id, fp->partition, true);
                continue;
            }
            fp->sticky = true;
        }
    }
    if (op->req->conn == NULL) {
        agent__fop_respond(op, 0);
        return;
    }
    agent__fop_attempt(op);
}

/* Looks the request's topics up by name (by id from v13 on, through the topic cache). */
static void agent__fetch_resolve(struct agent__fop *op)
{
    struct agent_req *req = op->req;
    const struct kp_fetch_request *rq = op->rq;
    int32_t nt = rq->topics_count > 0 ? rq->topics_count : 0;
    struct kp_str *names = kp_arena_calloc(&req->arena, (size_t)nt + 1, sizeof(*names));
    if (names == NULL) {
        agent__fop_respond(op, KP_ERROR_UNKNOWN_SERVER_ERROR);
        return;
    }
    for (int32_t t = 0; t < nt; t++) {
        names[t] = rq->topics[t].topic;
        if (req->hdr.request_api_version >= 13) {
            const struct agent_topic *tp = agent_topic_by_id(op->a, &rq->topics[t].topic_id);
            names[t] = kp_str_from(tp != NULL ? tp->name : "");
        }
        rn_log(RN_LOG_DEBUG, "fetch_topic", "topic=\"%.*s\" partitions=%d",
               names[t].len > 0 ? names[t].len : 0, names[t].len > 0 ? names[t].ptr : "",
               rq->topics[t].partitions_count);
    }
    agent_topics_get(op->a, names, (size_t)nt, false, agent__fetch_topics_cb, op);
}

static void agent__fetch_ids_cb(void *arg, int status, struct agent_topic **topics,
                                const int16_t *errors, size_t n)
{
    (void)status;
    (void)topics;
    (void)errors;
    (void)n;
    struct agent__fop *op = arg;
    if (op->answered) {
        op->running = false;
        agent__fop_end(op);
        return;
    }
    agent__fetch_resolve(op);
}

void agent_handle_fetch(struct agent_req *req)
{
    struct agent *a = req->conn->agent;
    struct agent_fetch *fs = a->fetch;
    const struct kp_fetch_request *rq = req->body;
    struct agent__fop *op = kp_xcalloc(1, sizeof(*op));
    op->a = a;
    op->fs = fs;
    op->req = req;
    op->rq = rq;
    op->deadline = req->started_ms + (uint64_t)(rq->max_wait_ms > 0 ? rq->max_wait_ms : 0);
    uv_timer_init(a->loop, &op->timer);
    op->timer.data = op;
    op->next = fs->ops;
    if (fs->ops != NULL) {
        fs->ops->prev = op;
    }
    fs->ops = op;
    fs->n_ops++;

    int32_t nt = rq->topics_count > 0 ? rq->topics_count : 0;
    size_t np = 0;
    for (int32_t t = 0; t < nt; t++) {
        np += (size_t)(rq->topics[t].partitions_count > 0 ? rq->topics[t].partitions_count : 0);
    }
    op->parts = kp_xcalloc(np + 1, sizeof(*op->parts));
    op->nparts = np;
    if (rq->session_id != 0) {
        /* We never create sessions, so an incremental fetch names one we do not know. */
        agent__fop_respond(op, KP_ERROR_FETCH_SESSION_ID_NOT_FOUND);
        return;
    }
    /* The deadline runs from now; "running" covers the topic lookups too. */
    op->running = true;
    uv_timer_start(&op->timer, agent__fop_timer_cb,
                   (uint64_t)(rq->max_wait_ms > 0 ? rq->max_wait_ms : 0), 0);
    if (req->hdr.request_api_version < 13) {
        agent__fetch_resolve(op);
        return;
    }
    /* v13+ names topics by id: refresh the topic cache first when an id is not in it. */
    for (int32_t t = 0; t < nt; t++) {
        if (agent_topic_by_id(a, &rq->topics[t].topic_id) == NULL) {
            agent_topics_get_all(a, agent__fetch_ids_cb, op);
            return;
        }
    }
    agent__fetch_resolve(op);
}

/* ---- hooks ---- */

int agent_fetch_init(struct agent *a)
{
    struct agent_fetch *fs = kp_xcalloc(1, sizeof(*fs));
    fs->a = a;
    fs->cache = agent_cache_new(a->loop, a->store, (size_t)a->cfg.cache_bytes);
    if (a->cfg.cache_block_bytes > 0 &&
        agent_cache_set_block_bytes(fs->cache, (size_t)a->cfg.cache_block_bytes) != 0) {
        rn_log(RN_LOG_ERROR, "bad_setting", "setting=cache.block.bytes value=%lld",
               (long long)a->cfg.cache_block_bytes);
        agent_cache_free(fs->cache);
        free(fs);
        return -EINVAL;
    }
    agent_obs_cache(a, fs->cache);
    a->fetch = fs;
    return 0;
}

struct agent_cache *agent__fetch_cache(struct agent *a)
{
    return a->fetch != NULL ? a->fetch->cache : NULL;
}

void agent_cache_put_object(struct agent *a, const char *key, const uint8_t *obj, size_t len)
{
    if (a->fetch != NULL && a->fetch->cache != NULL) {
        agent_cache_put(a->fetch->cache, key, obj, len);
    }
}

void agent_fetch_on_notify(struct agent *a, const struct kp_meta_notify_response *n)
{
    struct agent_fetch *fs = a->fetch;
    if (fs == NULL || fs->closing) {
        return;
    }
    bool changed = false;
    for (int32_t i = 0; i < n->partitions_count; i++) {
        const struct kp_meta_notify_response_meta_notify_partition *p = &n->partitions[i];
        struct agent__pstate *s = agent__pfind(fs, &p->topic_id, p->partition_index, false);
        if (s == NULL) {
            continue;
        }
        if (!s->known || p->high_watermark != s->hwm || p->log_start_offset != s->log_start) {
            s->hwm = p->high_watermark;
            s->log_start = p->log_start_offset;
            s->known = true;
            changed = true;
        }
    }
    if (!changed) {
        return;
    }
    struct agent__fop *op = fs->ops;
    while (op != NULL) {
        struct agent__fop *next = op->next;
        bool wake = false;
        for (size_t i = 0; i < op->nparts && !wake; i++) {
            const struct agent__fpart *fp = &op->parts[i];
            if (fp->st != NULL && fp->st->known && !fp->sticky &&
                (fp->fetch_offset < fp->st->hwm || fp->fetch_offset < fp->st->log_start)) {
                wake = true;
            }
        }
        if (wake) {
            agent__fop_wake(op, false);
        }
        op = next;
    }
}

void agent_fetch_on_meta_state(struct agent *a, bool connected)
{
    struct agent_fetch *fs = a->fetch;
    if (fs == NULL || fs->closing) {
        return;
    }
    if (!connected) { /* watches are per connection: every partition must be watched again */
        for (size_t i = 0; i < AGENT__PART_BUCKETS; i++) {
            for (struct agent__pstate *s = fs->parts[i]; s != NULL; s = s->next) {
                s->known = false;
            }
        }
        return;
    }
    struct agent__fop *op = fs->ops;
    while (op != NULL) {
        struct agent__fop *next = op->next;
        agent__fop_wake(op, false);
        op = next;
    }
}

void agent_fetch_drain(struct agent *a)
{
    struct agent_fetch *fs = a->fetch;
    if (fs == NULL) {
        return;
    }
    struct agent__fop *op = fs->ops;
    while (op != NULL) {
        struct agent__fop *next = op->next;
        agent__fop_wake(op, true);
        op = next;
    }
}

void agent_fetch_free(struct agent *a)
{
    struct agent_fetch *fs = a->fetch;
    if (fs == NULL) {
        return;
    }
    a->fetch = NULL;
    fs->closing = true;
    agent_obs_cache(a, NULL);
    agent_cache_free(fs->cache);
    fs->cache = NULL;
    struct agent__fop *op = fs->ops;
    while (op != NULL) {
        struct agent__fop *next = op->next;
        agent__fop_wake(op, true);
        op = next;
    }
    if (fs->n_ops == 0) {
        agent__fs_free(fs);
    }
}
