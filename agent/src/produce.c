/*
 * The write path: Produce and InitProducerId.
 *
 * A Produce request is validated partition by partition (Kafka's error codes, see
 * agent__validate()); every good batch is appended to the agent's one open object, grouped by
 * partition, and the request is parked on that object. The object is sealed when it is
 * flush.interval.ms old or holds flush.bytes (sealing compresses and checksums on libuv's worker
 * pool, small ones on the loop), then PUT under a fresh key that is never reused, then committed to
 * the metadata service, which checks idempotent-producer sequences and assigns offsets. Commits are
 * issued strictly in seal order, whatever order the PUTs finish in, so a producer's batches keep
 * their order across flushes. Parked requests are answered only from the commit's response: nothing
 * is acknowledged before the object is durable in the store and its commit durable in the metadata
 * service.
 *
 * Failures (see docs/agent-write-path.md): a failed seal or PUT answers KAFKA_STORAGE_ERROR
 * (retriable, nothing was written); a commit whose outcome is unknown (the metadata connection
 * dropped after the commit was sent) answers REQUEST_TIMED_OUT (retriable, "may have been
 * written", which Kafka clients treat as such); a metadata service that cannot be asked before
 * anything was appended answers NOT_LEADER_OR_FOLLOWER (retriable, refresh and retry).
 *
 * Backpressure: a->buffered_bytes counts the batch bytes of the open object and of every object
 * not yet committed; above buffer.max.bytes every connection stops being read until commits
 * bring it back under.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "agent.h"
#include "handlers.h"
#include "obs.h"
#include "runnel/common/log.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/records.h"
#include "runnel/storage/object.h"

#define AGENT__TS_AFTER_MAX_MS 3600000LL    /* message.timestamp.after.max.ms (Kafka 4 default) */
#define AGENT__VALIDATE_MAX_RAW (64u << 20) /* decompression cap for record validation, bytes */
#define AGENT__SLOW_PRODUCE_MS 10000        /* answers later than this are logged (warn) */
#define AGENT__INLINE_SEAL (256u << 10)     /* objects up to this size are sealed on the loop */

enum agent__pobj_state {
    AGENT__POBJ_OPEN,       /* taking batches */
    AGENT__POBJ_SEALING,    /* on the worker pool */
    AGENT__POBJ_PUTTING,    /* PUT in flight */
    AGENT__POBJ_PUT_DONE,   /* durable in the store, waiting for its turn to commit */
    AGENT__POBJ_FAILED,     /* seal or PUT failed; answered in its turn */
    AGENT__POBJ_COMMITTING, /* commit sent, waiting for the answer */
};

/* One Produce request parked on an object (acks 1 or all). */
struct agent__pwait {
    struct agent_req *req;            /* answered when the object's commit is answered */
    struct kp_produce_response *resp; /* in req's arena; ranges fill their slots */
    struct agent__pwait *next;        /* next waiter of the same object */
};

/* One batch in an object: what the commit says about it and where its answer goes. */
struct agent__prange {
    int64_t producer_id; /* -1: not idempotent */
    int16_t epoch;       /* producer epoch */
    int32_t base_seq;    /* first sequence */
    int32_t offsets;     /* lastOffsetDelta + 1 */
    int64_t max_ts;      /* ms */
    uint32_t raw_off;    /* bytes into the partition's uncompressed chunk */
    uint32_t raw_len;    /* bytes */
    int64_t append_time; /* LogAppendTime given to the batch, or -1 */
    struct kp_produce_response_partition_produce_response *slot; /* answer, or NULL (acks=0) */
};

/* One partition's chunk in an object. */
struct agent__ppart {
    struct kp_uuid topic_id;      /* topic */
    int32_t partition;            /* index */
    uint32_t raw_len;             /* batch bytes appended */
    struct agent__prange *ranges; /* batches in arrival order */
    uint32_t n_ranges;            /* used */
    uint32_t cap_ranges;          /* allocated */
    int64_t chunk_off;            /* after sealing: byte offset in the object */
    int64_t chunk_len;            /* after sealing: stored bytes */
};

/* One object: open, then sealed, uploaded and committed. */
struct agent__pobj {
    struct agent_produce *p;        /* owner */
    uint64_t seq;                   /* seal order */
    enum agent__pobj_state state;   /* see the enum */
    int16_t error;                  /* Kafka error for every batch when FAILED */
    struct store_obj_builder *b;    /* batches so far (until sealed) */
    uint8_t id[16];                 /* object id (random) */
    char key[96];                   /* store key: objects/<created ms>-<id hex> */
    int64_t created_ms;             /* wall clock at creation */
    uint64_t opened_loop_ms;        /* loop time of the first batch */
    uint64_t t_seal;                /* loop time the seal started (ms) */
    uint64_t t_put;                 /* loop time the PUT started (ms) */
    uint64_t t_put_done;            /* loop time the PUT finished (ms) */
    uint64_t t_commit;              /* loop time the commit was sent (ms) */
    size_t bytes;                   /* batch bytes, counted in a->buffered_bytes */
    struct agent__ppart *parts;     /* one per partition */
    uint32_t n_parts;               /* used */
    uint32_t cap_parts;             /* allocated */
    uint32_t *slots;                /* hash of (topic, partition) -> parts index + 1 */
    uint32_t n_slots;               /* power of two */
    struct agent__pwait *waiters;   /* parked requests */
    struct store_obj_seal_req seal; /* the seal on the worker pool */
    struct store_req put;           /* the PUT */
    uint8_t *data;                  /* sealed object */
    size_t data_len;                /* bytes */
    struct store_footer footer;     /* its footer */
    struct agent__pobj *next;       /* in-flight list, seal order */
};

struct agent_produce {
    struct agent *a;                     /* owner */
    uv_timer_t timer;                    /* flush.interval.ms of the open object */
    bool timer_closed;                   /* the timer's close callback ran */
    bool freeing;                        /* agent_produce_free() ran; the close callback frees */
    struct agent__pobj *open;            /* the open object, or NULL */
    struct agent__pobj *head;            /* sealed objects not yet answered, seal order */
    struct agent__pobj *tail;            /* newest of them */
    uint64_t next_seq;                   /* seal order counter */
    struct store_obj_builder *spare;     /* a builder kept for the next object */
    void (*drain_done)(struct agent *a); /* set while draining */
    uint64_t objects;                    /* objects committed (stats) */
    uint32_t lookups;                    /* Produce requests waiting for their topic lookup */
    struct agent__pctx *waiting;         /* those requests (any order; for agent_produce_free) */
    struct agent__pctx *ready;           /* requests whose lookup may be asked now, FIFO */
    struct agent__pctx *ready_tail;      /* newest of them */
    bool pumping;                        /* agent__pq_pump is running */
};

static int64_t agent__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- objects ---- */

static uint32_t agent__part_hash(const struct kp_uuid *id, int32_t partition)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++) {
        h = (h ^ id->b[i]) * 16777619u;
    }
    for (int i = 0; i < 4; i++) {
        h = (h ^ ((uint32_t)partition >> (8 * i) & 0xff)) * 16777619u;
    }
    return h;
}

static void agent__pobj_rehash(struct agent__pobj *o, uint32_t n_slots)
{
    free(o->slots);
    o->slots = kp_xcalloc(n_slots, sizeof(*o->slots));
    o->n_slots = n_slots;
    for (uint32_t i = 0; i < o->n_parts; i++) {
        uint32_t h = agent__part_hash(&o->parts[i].topic_id, o->parts[i].partition);
        uint32_t s = h & (n_slots - 1);
        while (o->slots[s] != 0) {
            s = (s + 1) & (n_slots - 1);
        }
        o->slots[s] = i + 1;
    }
}

/* The object's chunk for (topic, partition), created when `create`. */
static struct agent__ppart *agent__pobj_part(struct agent__pobj *o, const struct kp_uuid *id,
                                             int32_t partition, bool create)
{
    if (o->n_slots == 0) {
        if (!create) {
            return NULL;
        }
        agent__pobj_rehash(o, 16);
    }
    uint32_t h = agent__part_hash(id, partition);
    uint32_t s = h & (o->n_slots - 1);
    while (o->slots[s] != 0) {
        struct agent__ppart *pp = &o->parts[o->slots[s] - 1];
        if (pp->partition == partition && memcmp(pp->topic_id.b, id->b, 16) == 0) {
            return pp;
        }
        s = (s + 1) & (o->n_slots - 1);
    }
    if (!create) {
        return NULL;
    }
    if (o->n_parts == o->cap_parts) {
        o->cap_parts = o->cap_parts ? o->cap_parts * 2 : 8;
        o->parts = kp_xrealloc(o->parts, sizeof(*o->parts) * o->cap_parts);
    }
    struct agent__ppart *pp = &o->parts[o->n_parts++];
    memset(pp, 0, sizeof(*pp));
    pp->topic_id = *id;
    pp->partition = partition;
    o->slots[s] = o->n_parts;
    if (o->n_parts * 2 > o->n_slots) {
        agent__pobj_rehash(o, o->n_slots * 2);
    }
    return pp;
}

static struct agent__pobj *agent__pobj_new(struct agent_produce *p)
{
    struct agent__pobj *o = kp_xcalloc(1, sizeof(*o));
    o->p = p;
    o->state = AGENT__POBJ_OPEN;
    o->created_ms = agent__wall_ms();
    o->opened_loop_ms = uv_now(p->a->loop);
    if (getrandom(o->id, sizeof(o->id), 0) != (ssize_t)sizeof(o->id)) {
        /* Never expected; fall back to time and address mixing (still unique per process). */
        uint64_t x = (uint64_t)o->created_ms ^ (uint64_t)(uintptr_t)o ^ (p->next_seq << 32);
        memcpy(o->id, &x, 8);
        x = (uint64_t)clock() ^ (p->next_seq * 0x9e3779b97f4a7c15ull);
        memcpy(o->id + 8, &x, 8);
    }
    int n = snprintf(o->key, sizeof(o->key), "objects/%013" PRId64 "-", o->created_ms);
    for (int i = 0; i < 16 && n + 2 < (int)sizeof(o->key); i++) {
        n += snprintf(o->key + n, sizeof(o->key) - (size_t)n, "%02x", o->id[i]);
    }
    if (p->spare != NULL) {
        o->b = p->spare;
        p->spare = NULL;
        store_obj_builder_reset(o->b, o->id, o->created_ms);
    } else {
        o->b = store_obj_builder_new(o->id, o->created_ms, (int)p->a->cfg.zstd_level);
    }
    return o;
}

static void agent__pobj_free(struct agent__pobj *o)
{
    struct agent_produce *p = o->p;
    if (o->b != NULL) {
        if (p->spare == NULL) {
            p->spare = o->b;
        } else {
            store_obj_builder_free(o->b);
        }
    }
    for (uint32_t i = 0; i < o->n_parts; i++) {
        free(o->parts[i].ranges);
    }
    free(o->parts);
    free(o->slots);
    struct agent__pwait *w = o->waiters;
    while (w != NULL) {
        struct agent__pwait *next = w->next;
        free(w);
        w = next;
    }
    free(o->data);
    store_footer_free(&o->footer);
    store_req_cleanup(&o->put);
    free(o);
}

/* ---- backpressure ---- */

static void agent__pressure(struct agent *a)
{
    bool over = a->cfg.buffer_max_bytes > 0 && a->buffered_bytes >= (size_t)a->cfg.buffer_max_bytes;
    if (over != a->paused) {
        rn_log(RN_LOG_DEBUG, over ? "produce_paused" : "produce_resumed", "buffered=%zu",
               a->buffered_bytes);
        agent_server_set_paused(a, over);
    }
}

/* ---- completing objects ---- */

static void agent__check_drained(struct agent_produce *p)
{
    if (p->drain_done != NULL && p->open == NULL && p->head == NULL && p->lookups == 0) {
        void (*done)(struct agent * a) = p->drain_done;
        p->drain_done = NULL;
        done(p->a);
    }
}

/* Answers every parked request of `o`, unlinks it from the in-flight list and frees it. */
static void agent__pobj_finish(struct agent__pobj *o)
{
    struct agent_produce *p = o->p;
    struct agent *a = p->a;
    uint64_t now = uv_now(a->loop);
    agent_cork(a); /* every request of the object answered: one write per connection */
    for (struct agent__pwait *w = o->waiters; w != NULL; w = w->next) {
        uint64_t waited = now - w->req->started_ms;
        if (waited >= AGENT__SLOW_PRODUCE_MS) {
            /* Diagnostics for client timeouts: says the agent did answer, late, and why. */
            rn_log(RN_LOG_WARN, "produce_slow",
                   "peer=%s correlation_id=%d waited_ms=%llu key=%s open_ms=%llu seal_ms=%llu "
                   "put_ms=%llu commit_ms=%llu",
                   w->req->conn != NULL ? w->req->conn->peer : "(closed)",
                   w->req->hdr.correlation_id, (unsigned long long)waited, o->key,
                   (unsigned long long)(o->t_seal - o->opened_loop_ms),
                   (unsigned long long)(o->t_put - o->t_seal),
                   (unsigned long long)(o->t_put_done - o->t_put),
                   (unsigned long long)(now - o->t_commit));
        }
        agent_req_respond(w->req, w->resp);
        w->req = NULL;
    }
    agent_uncork(a);
    struct agent__pobj **pp = &p->head;
    struct agent__pobj *prev = NULL;
    while (*pp != NULL && *pp != o) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == o) {
        *pp = o->next;
        if (p->tail == o) {
            p->tail = prev;
        }
    }
    a->buffered_bytes -= o->bytes < a->buffered_bytes ? o->bytes : a->buffered_bytes;
    agent__pobj_free(o);
    agent__pressure(a);
}

/* Every batch of `o` gets `error` (the object never became visible, or its fate is unknown). */
static void agent__pobj_fail_all(struct agent__pobj *o, int16_t error)
{
    agent_obs_produce_failed(error, o->bytes);
    for (uint32_t i = 0; i < o->n_parts; i++) {
        for (uint32_t j = 0; j < o->parts[i].n_ranges; j++) {
            struct agent__prange *r = &o->parts[i].ranges[j];
            if (r->slot != NULL) {
                r->slot->error_code = error;
                r->slot->base_offset = -1;
                r->slot->log_append_time_ms = -1;
                r->slot->log_start_offset = -1;
            }
        }
    }
}

static void agent__commit_cb(void *arg, int status, const void *response)
{
    struct agent__pobj *o = arg;
    struct agent_produce *p = o->p;
    const struct kp_meta_commit_response *r = response;
    if (status != 0) {
        /* Sent but unanswered: the commit may have been applied. Retriable, possibly written. */
        rn_log(RN_LOG_WARN, "commit_unknown", "key=%s status=%d", o->key, status);
        agent__pobj_fail_all(o, KP_ERROR_REQUEST_TIMED_OUT);
    } else if (r->error_code != 0) {
        int16_t e = r->error_code;
        rn_log(RN_LOG_WARN, "commit_refused", "key=%s error=%s", o->key, kp_error_name(e));
        if (e == KP_ERROR_INVALID_REQUEST) {
            e = KP_ERROR_KAFKA_STORAGE_ERROR; /* refused as a whole: nothing was appended */
        } else if (e == KP_ERROR_DUPLICATE_RESOURCE) {
            e = KP_ERROR_REQUEST_TIMED_OUT; /* committed before, offsets unknown */
        }
        agent__pobj_fail_all(o, e);
    } else {
        p->objects++;
        agent_obs_object_committed(p->a, o->bytes, o->data_len, o->opened_loop_ms, o->t_seal,
                                   o->t_put, o->t_put_done, o->t_commit, uv_now(p->a->loop));
        if (rn_log_enabled(RN_LOG_DEBUG)) {
            uint64_t now = uv_now(p->a->loop);
            rn_log(RN_LOG_DEBUG, "object_committed",
                   "key=%s bytes=%zu stored=%zu partitions=%u open_ms=%llu seal_ms=%llu "
                   "put_ms=%llu wait_ms=%llu commit_ms=%llu",
                   o->key, o->bytes, o->data_len, o->n_parts,
                   (unsigned long long)(o->t_seal - o->opened_loop_ms),
                   (unsigned long long)(o->t_put - o->t_seal),
                   (unsigned long long)(o->t_put_done - o->t_put),
                   (unsigned long long)(o->t_commit - o->t_put_done),
                   (unsigned long long)(now - o->t_commit));
        }
        for (uint32_t i = 0; i < o->n_parts; i++) {
            struct agent__ppart *pp = &o->parts[i];
            const struct kp_meta_commit_response_meta_commit_partition_result *pr =
                (int32_t)i < r->partitions_count ? &r->partitions[i] : NULL;
            for (uint32_t j = 0; j < pp->n_ranges; j++) {
                struct agent__prange *rg = &pp->ranges[j];
                if (rg->slot == NULL) {
                    continue;
                }
                int16_t err = KP_ERROR_UNKNOWN_SERVER_ERROR;
                int64_t base = -1;
                if (pr != NULL && (int32_t)j < pr->ranges_count) {
                    err = pr->ranges[j].error_code;
                    base = pr->ranges[j].base_offset;
                } else if (pr != NULL && pr->error_code != 0) {
                    err = pr->error_code;
                }
                rg->slot->error_code = err;
                rg->slot->base_offset = err == 0 ? base : -1;
                rg->slot->log_append_time_ms = err == 0 ? rg->append_time : -1;
                rg->slot->log_start_offset = pr != NULL && err == 0 ? pr->log_start_offset : -1;
            }
        }
    }
    agent__pobj_finish(o);
    agent__check_drained(p);
}

/* Sends the commit of a PUT object. */
static void agent__commit(struct agent__pobj *o)
{
    struct agent *a = o->p->a;
    struct kp_meta_commit_request rq;
    kp_meta_commit_request_init(&rq);
    rq.object_key = kp_str_from(o->key);
    rq.object_size = (int64_t)o->data_len;
    rq.object_created_ms = o->created_ms;
    rq.fenced_error_code = KP_ERROR_INVALID_PRODUCER_EPOCH;
    size_t nr = 0;
    for (uint32_t i = 0; i < o->n_parts; i++) {
        nr += o->parts[i].n_ranges;
    }
    struct kp_meta_commit_request_meta_commit_partition *parts =
        kp_xcalloc(o->n_parts ? o->n_parts : 1, sizeof(*parts));
    struct kp_meta_commit_request_meta_commit_range *ranges =
        kp_xcalloc(nr ? nr : 1, sizeof(*ranges));
    size_t k = 0;
    for (uint32_t i = 0; i < o->n_parts; i++) {
        struct agent__ppart *pp = &o->parts[i];
        struct kp_meta_commit_request_meta_commit_partition *cp = &parts[i];
        kp_meta_commit_request_meta_commit_partition_init(cp);
        cp->topic_id = pp->topic_id;
        cp->partition_index = pp->partition;
        cp->chunk_offset = pp->chunk_off;
        cp->chunk_length = (int32_t)pp->chunk_len;
        cp->ranges = &ranges[k];
        cp->ranges_count = (int32_t)pp->n_ranges;
        for (uint32_t j = 0; j < pp->n_ranges; j++, k++) {
            const struct agent__prange *r = &pp->ranges[j];
            kp_meta_commit_request_meta_commit_range_init(&ranges[k]);
            ranges[k].producer_id = r->producer_id;
            ranges[k].producer_epoch = r->epoch;
            ranges[k].base_sequence = r->base_seq;
            ranges[k].record_count = r->offsets;
            ranges[k].max_timestamp = r->max_ts;
            ranges[k].raw_offset = (int32_t)r->raw_off;
            ranges[k].raw_length = (int32_t)r->raw_len;
        }
    }
    rq.partitions = parts;
    rq.partitions_count = (int32_t)o->n_parts;
    o->state = AGENT__POBJ_COMMITTING;
    o->t_commit = uv_now(a->loop);
    int rc = meta_client_call(a->meta, 1006, &rq, agent__commit_cb, o);
    free(parts);
    free(ranges);
    if (rc != 0) {
        rn_log(RN_LOG_ERROR, "commit_not_sent", "key=%s rc=%d", o->key, rc);
        agent__pobj_fail_all(o, KP_ERROR_KAFKA_STORAGE_ERROR);
        agent__pobj_finish(o);
    }
}

/*
 * Moves the oldest sealed objects forward in seal order: an object whose PUT is done is
 * committed once every older object's commit has been sent; a failed one is answered in its
 * turn. Stops at the first object still sealing or uploading.
 */
static void agent__advance(struct agent_produce *p)
{
    struct agent__pobj *o = p->head;
    while (o != NULL) {
        struct agent__pobj *next = o->next;
        if (o->state == AGENT__POBJ_COMMITTING) {
            o = next;
            continue;
        }
        if (o->state == AGENT__POBJ_PUT_DONE) {
            agent__commit(o);
        } else if (o->state == AGENT__POBJ_FAILED) {
            agent__pobj_fail_all(o, o->error);
            agent__pobj_finish(o);
        } else {
            break;
        }
        o = next;
    }
    agent__check_drained(p);
}

static void agent__put_cb(struct store_req *req)
{
    struct agent__pobj *o = req->data;
    struct agent *a = o->p->a;
    o->t_put_done = uv_now(a->loop);
    if (req->err != 0) {
        rn_log(RN_LOG_ERROR, "object_put_failed", "key=%s error=\"%s\" msg=\"%s\" attempts=%d",
               o->key, store_strerror(req->err), req->msg, req->attempts);
        o->state = AGENT__POBJ_FAILED;
        o->error = KP_ERROR_KAFKA_STORAGE_ERROR;
    } else {
        o->state = AGENT__POBJ_PUT_DONE;
        /* Tail consumers read this object from memory once the commit makes it visible. */
        agent_cache_put_object(a, o->key, o->data, o->data_len);
        free(o->data); /* the cache keeps its own copy; only the size is still needed */
        o->data = NULL;
    }
    agent__advance(o->p);
}

static void agent__seal_cb(struct store_obj_seal_req *sr)
{
    struct agent__pobj *o = sr->data;
    struct agent_produce *p = o->p;
    struct agent *a = p->a;
    /* The builder is not needed any more; keep one for the next object. */
    if (p->spare == NULL) {
        p->spare = o->b;
    } else {
        store_obj_builder_free(o->b);
    }
    o->b = NULL;
    if (sr->err != 0) {
        rn_log(RN_LOG_ERROR, "object_seal_failed", "key=%s rc=%d", o->key, sr->err);
        o->state = AGENT__POBJ_FAILED;
        o->error = KP_ERROR_KAFKA_STORAGE_ERROR;
        agent__advance(p);
        return;
    }
    o->data = sr->out;
    o->data_len = sr->out_len;
    o->footer = sr->footer;
    sr->out = NULL;
    memset(&sr->footer, 0, sizeof(sr->footer));
    for (uint32_t i = 0; i < o->footer.nchunks; i++) {
        const struct store_chunk *c = &o->footer.chunks[i];
        struct kp_uuid id;
        memcpy(id.b, c->topic_id, 16);
        struct agent__ppart *pp = agent__pobj_part(o, &id, c->partition, false);
        if (pp != NULL) {
            pp->chunk_off = (int64_t)c->offset;
            pp->chunk_len = c->stored_len;
        }
    }
    o->state = AGENT__POBJ_PUTTING;
    o->t_put = uv_now(a->loop);
    o->put.data = o;
    int rc = store_put(a->store, &o->put, o->key, o->data, o->data_len, STORE_IF_NONE_MATCH,
                       agent__put_cb);
    if (rc != 0) {
        rn_log(RN_LOG_ERROR, "object_put_failed", "key=%s rc=%d", o->key, rc);
        o->state = AGENT__POBJ_FAILED;
        o->error = KP_ERROR_KAFKA_STORAGE_ERROR;
        agent__advance(p);
    }
}

/*
 * Seals the open object (if it holds anything) on the worker pool, or, when `inline_ok` and it
 * holds at most AGENT__INLINE_SEAL bytes, right here on the loop: compressing a small object takes
 * well under a millisecond, less than the round trip to a worker costs when the cores are busy
 * (the produce latency's p99). Only the flush timer passes inline_ok: the seal callback may
 * answer requests, which must not happen inside the handler of the request that filled the
 * object.
 */
static void agent__seal_open(struct agent_produce *p, bool inline_ok)
{
    struct agent__pobj *o = p->open;
    if (o == NULL) {
        return;
    }
    p->open = NULL;
    if (!p->timer_closed && !uv_is_closing((uv_handle_t *)&p->timer)) {
        uv_timer_stop(&p->timer);
    }
    o->seq = p->next_seq++;
    o->state = AGENT__POBJ_SEALING;
    if (p->tail != NULL) {
        p->tail->next = o;
    } else {
        p->head = o;
    }
    p->tail = o;
    rn_log(RN_LOG_DEBUG, "object_seal", "key=%s bytes=%zu partitions=%u", o->key, o->bytes,
           o->n_parts);
    o->seal.data = o;
    o->t_seal = uv_now(p->a->loop);
    if (inline_ok && o->bytes <= AGENT__INLINE_SEAL) {
        o->seal.b = o->b;
        o->seal.err = store_obj_seal(o->b, &o->seal.out, &o->seal.out_len, &o->seal.footer);
        agent__seal_cb(&o->seal);
        return;
    }
    int rc = store_obj_seal_async(p->a->loop, &o->seal, o->b, agent__seal_cb);
    if (rc != 0) {
        rn_log(RN_LOG_ERROR, "object_seal_failed", "key=%s rc=%d", o->key, rc);
        o->state = AGENT__POBJ_FAILED;
        o->error = KP_ERROR_KAFKA_STORAGE_ERROR;
        agent__advance(p);
    }
}

static void agent__timer_cb(uv_timer_t *t)
{
    struct agent_produce *p = t->data;
    agent__seal_open(p, true);
}

/* ---- validation ---- */

/* What a validated partition contributes to the open object. */
struct agent__pgood {
    struct kp_produce_response_partition_produce_response *slot; /* its answer */
    struct kp_uuid topic_id;                                     /* topic */
    int32_t partition;                                           /* index */
    bool log_append_time;                                        /* topic setting */
    struct kp_batch batch;                                       /* the one batch */
};

/*
 * Kafka's checks of a Produce partition, in the order Kafka makes them: exactly one batch of
 * magic 2, zstd only from v7, the batch size against max.message.bytes, the CRC, producer rules
 * (records present, lastOffsetDelta consistent), no transactional batches (no transactions
 * here), every record well formed (uncompressed batches, or any batch of a compacted topic), and
 * CreateTime timestamps at most message.timestamp.after.max.ms in the future. Returns 0 or the
 * Kafka error; *why describes it.
 */
static int16_t agent__validate(struct kp_bytes rec, int16_t version, const struct agent_topic *t,
                               int64_t now_ms, struct kp_batch *out, const char **why)
{
    struct kp_batch_err be = {0};
    *why = NULL;
    if (rec.ptr == NULL || rec.len <= 0) {
        *why = "no record batch";
        return KP_ERROR_INVALID_RECORD;
    }
    size_t len = (size_t)rec.len;
    if (len > 16 && rec.ptr[16] != KP_BATCH_MAGIC_V2) {
        *why = "only record batches with magic 2 are accepted";
        return KP_ERROR_INVALID_RECORD;
    }
    if (kp_batch_parse(rec.ptr, len, KP_BATCH_SKIP_CRC, out, &be) != 0) {
        *why = be.why;
        return be.code ? be.code : KP_ERROR_CORRUPT_MESSAGE;
    }
    if (out->len != len) {
        *why = "exactly one record batch per partition is allowed";
        return KP_ERROR_INVALID_RECORD;
    }
    if (kp_batch_codec(out) == 4 && version < 7) {
        *why = "zstd needs Produce v7 or later";
        return KP_ERROR_UNSUPPORTED_COMPRESSION_TYPE;
    }
    if (t->max_message_bytes > 0 && (int64_t)out->len > t->max_message_bytes) {
        *why = "batch larger than max.message.bytes";
        return KP_ERROR_MESSAGE_TOO_LARGE;
    }
    if (kp_batch_parse(rec.ptr, len, KP_BATCH_PRODUCE, out, &be) != 0) {
        *why = be.why;
        return be.code ? be.code : KP_ERROR_CORRUPT_MESSAGE;
    }
    if (kp_batch_is_transactional(out)) {
        *why = "transactions are not supported";
        return KP_ERROR_INVALID_TXN_STATE;
    }
    if (kp_batch_codec(out) == 0 || t->compact) {
        unsigned flags = KP_BATCH_PRODUCE | (t->compact ? KP_RECORDS_REQUIRE_KEY : 0);
        if (kp_batch_validate_records(out, flags, AGENT__VALIDATE_MAX_RAW, &be) != 0) {
            *why = be.why;
            return be.code ? be.code : KP_ERROR_INVALID_RECORD;
        }
    }
    if (!t->log_append_time && (out->attributes & KP_ATTR_LOG_APPEND_TIME) == 0 &&
        (out->max_timestamp > now_ms + AGENT__TS_AFTER_MAX_MS ||
         out->base_timestamp > now_ms + AGENT__TS_AFTER_MAX_MS)) {
        *why = "timestamp more than message.timestamp.after.max.ms in the future";
        return KP_ERROR_INVALID_TIMESTAMP;
    }
    return 0;
}

/* ---- Produce ---- */

/*
 * A Produce request between the topic lookup and its answer. Requests of one connection are
 * appended in the order they arrived, as a Kafka broker (which reads a connection's next request
 * only after answering the last) does: an idempotent producer's batches would otherwise reach the
 * metadata service out of sequence. A request's topic lookup is therefore asked only once the
 * previous request of its connection was appended: each connection knows its newest waiting
 * request (agent_conn.produce_last), each waiting request the next one of its connection
 * (next_same). A lookup the cache answers completes at once, so requests wait only behind a cache
 * miss of their own connection; other connections go on.
 */
struct agent__pctx {
    struct agent *a;                  /* the agent */
    struct agent_req *req;            /* the request */
    struct kp_produce_response *resp; /* answer being built (arena) */
    bool any_error;                   /* some partition failed validation */
    bool started;                     /* its lookup was asked */
    struct kp_str *names;             /* topic names to look up (arena) */
    size_t n_names;                   /* count */
    struct agent__pctx *next_same;    /* the next request of its connection, waiting for this */
    struct agent__pctx *next_ready;   /* agent_produce.ready list */
    struct agent__pctx *prev;         /* agent_produce.waiting list */
    struct agent__pctx *next;
};

static void agent__produce_answer_now(struct agent_req *req, struct kp_produce_response *resp,
                                      bool any_error)
{
    const struct kp_produce_request *pr = req->body;
    if (pr->acks == 0) {
        if (any_error) {
            /* Kafka closes an acks=0 connection on errors so the producer notices. */
            agent_req_close_conn(req, "acks=0 produce failed");
        } else {
            agent_req_finish_silent(req);
        }
        return;
    }
    agent_req_respond(req, resp);
}

static void agent__set_all(struct kp_produce_response *resp, int16_t error)
{
    for (int32_t i = 0; i < resp->responses_count; i++) {
        for (int32_t j = 0; j < resp->responses[i].partition_responses_count; j++) {
            struct kp_produce_response_partition_produce_response *s =
                &resp->responses[i].partition_responses[j];
            if (s->error_code == 0) {
                s->error_code = error;
            }
        }
    }
}

static void agent__produce_run(struct agent__pctx *ctx, int status, struct agent_topic **topics,
                               size_t n)
{
    struct agent_req *req = ctx->req;
    struct agent *a = req->conn != NULL ? ctx->a : NULL;
    const struct kp_produce_request *pr = req->body;
    struct kp_produce_response *resp = ctx->resp;
    if (a == NULL) { /* the client went away: nothing to append for it */
        agent_req_respond(req, resp);
        return;
    }
    struct agent_produce *p = a->produce;
    if (status != 0 || n != (size_t)pr->topic_data_count) {
        agent__set_all(resp, KP_ERROR_NOT_LEADER_OR_FOLLOWER);
        agent__produce_answer_now(req, resp, true);
        return;
    }
    int64_t now = agent__wall_ms();
    size_t total = 0;
    for (int32_t i = 0; i < pr->topic_data_count; i++) {
        total += (size_t)(pr->topic_data[i].partition_data_count > 0
                              ? pr->topic_data[i].partition_data_count
                              : 0);
    }
    struct agent__pgood *good = kp_xcalloc(total ? total : 1, sizeof(*good));
    size_t n_good = 0;
    for (int32_t i = 0; i < pr->topic_data_count; i++) {
        const struct kp_produce_request_topic_produce_data *td = &pr->topic_data[i];
        const struct agent_topic *t = topics[i];
        for (int32_t j = 0; j < td->partition_data_count; j++) {
            const struct kp_produce_request_partition_produce_data *pd = &td->partition_data[j];
            struct kp_produce_response_partition_produce_response *slot =
                &resp->responses[i].partition_responses[j];
            if (slot->error_code != 0) {
                continue;
            }
            int16_t err = 0;
            const char *why = NULL;
            struct agent__pgood *g = &good[n_good];
            if (t == NULL || pd->index < 0 || pd->index >= t->partitions) {
                err = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
                why = "unknown topic or partition";
            } else {
                err = agent__validate(pd->records, req->hdr.request_api_version, t, now, &g->batch,
                                      &why);
            }
            if (err != 0) {
                slot->error_code = err;
                ctx->any_error = true;
                if (why != NULL && req->hdr.request_api_version >= 8) {
                    slot->error_message = kp_str_from(why);
                }
                rn_log(RN_LOG_DEBUG, "produce_refused",
                       "topic=%.*s partition=%d error=%s why=\"%s\"",
                       (int)(td->name.len > 0 ? td->name.len : 0), td->name.ptr ? td->name.ptr : "",
                       pd->index, kp_error_name(err), why ? why : "");
                continue;
            }
            g->slot = slot;
            g->topic_id = t->id;
            g->partition = pd->index;
            g->log_append_time = t->log_append_time;
            n_good++;
        }
    }
    if (n_good == 0) {
        free(good);
        agent__produce_answer_now(req, resp, ctx->any_error);
        return;
    }

    if (p->open == NULL) {
        p->open = agent__pobj_new(p);
    }
    struct agent__pobj *o = p->open;
    bool waiting = false;
    for (size_t k = 0; k < n_good; k++) {
        struct agent__pgood *g = &good[k];
        struct kp_batch *b = &g->batch;
        int64_t append_time = -1;
        int64_t max_ts = b->max_timestamp;
        if (g->log_append_time) {
            /*
             * The request owns its frame, so the batch can be rewritten where it lies. Kafka
             * sets only the attribute bit and maxTimestamp; baseTimestamp is set too, so that
             * clients ignoring the bit (base + delta) still see the append time.
             */
            uint8_t *w = (uint8_t *)(uintptr_t)b->ptr;
            for (int i = 0; i < 8; i++) {
                w[27 + i] = (uint8_t)((uint64_t)now >> (56 - 8 * i));
            }
            kp_batch_set_log_append_time(w, b->len, now);
            append_time = now;
            max_ts = now;
        }
        struct store_batch_info info = {
            .records = (uint32_t)b->record_count,
            .first_ts = g->log_append_time ? now : b->base_timestamp,
            .last_ts = max_ts,
            .compressed = kp_batch_codec(b) != 0,
        };
        struct agent__ppart *pp = agent__pobj_part(o, &g->topic_id, g->partition, true);
        if (pp->raw_len + (uint64_t)b->len > STORE_OBJ_MAX_CHUNK_RAW ||
            store_obj_builder_add(o->b, g->topic_id.b, g->partition, b->ptr, b->len, &info) != 0) {
            g->slot->error_code = KP_ERROR_KAFKA_STORAGE_ERROR;
            ctx->any_error = true;
            continue;
        }
        if (pp->n_ranges == pp->cap_ranges) {
            pp->cap_ranges = pp->cap_ranges ? pp->cap_ranges * 2 : 4;
            pp->ranges = kp_xrealloc(pp->ranges, sizeof(*pp->ranges) * pp->cap_ranges);
        }
        struct agent__prange *r = &pp->ranges[pp->n_ranges++];
        r->producer_id = b->producer_id;
        r->epoch = b->producer_epoch;
        r->base_seq = b->base_sequence;
        r->offsets = b->last_offset_delta + 1;
        r->max_ts = max_ts;
        r->raw_off = pp->raw_len;
        r->raw_len = (uint32_t)b->len;
        r->append_time = append_time;
        r->slot = pr->acks != 0 ? g->slot : NULL;
        pp->raw_len += (uint32_t)b->len;
        o->bytes += b->len;
        a->buffered_bytes += b->len;
        waiting = true;
    }
    free(good);
    if (o->n_parts == 0) { /* nothing was added after all */
        agent__pobj_free(o);
        p->open = NULL;
    }

    if (!waiting) {
        agent__produce_answer_now(req, resp, ctx->any_error);
    } else if (pr->acks == 0) {
        agent__produce_answer_now(req, resp, ctx->any_error);
    } else {
        struct agent__pwait *w = kp_xcalloc(1, sizeof(*w));
        w->req = req;
        w->resp = resp;
        w->next = o->waiters;
        o->waiters = w;
    }
    if (p->open != NULL) {
        if (p->open->bytes >= (size_t)a->cfg.flush_bytes || p->drain_done != NULL) {
            agent__seal_open(p, false);
        } else if (!uv_is_active((uv_handle_t *)&p->timer)) {
            uint64_t age = uv_now(a->loop) - p->open->opened_loop_ms;
            uint64_t ival = (uint64_t)a->cfg.flush_interval_ms;
            uv_timer_start(&p->timer, agent__timer_cb, age < ival ? ival - age : 0, 0);
        }
    }
    agent__pressure(a);
}

static void agent__produce_topics_cb(void *arg, int status, struct agent_topic **topics,
                                     const int16_t *errors, size_t n);

/* Takes `ctx` off the waiting list. */
static void agent__pq_unlink(struct agent_produce *p, struct agent__pctx *ctx)
{
    if (ctx->prev != NULL) {
        ctx->prev->next = ctx->next;
    } else {
        p->waiting = ctx->next;
    }
    if (ctx->next != NULL) {
        ctx->next->prev = ctx->prev;
    }
    ctx->prev = ctx->next = NULL;
}

/* Unless its connection closed, makes the connection forget `ctx` as its newest waiting request. */
static void agent__pq_conn_forget(struct agent__pctx *ctx)
{
    struct agent_conn *c = ctx->req->conn; /* NULL once the connection closed */
    if (c != NULL && c->produce_last == ctx) {
        c->produce_last = NULL;
    }
}

/* Queues `ctx` to have its lookup asked by agent__pq_pump. */
static void agent__pq_ready(struct agent_produce *p, struct agent__pctx *ctx)
{
    ctx->next_ready = NULL;
    if (p->ready_tail != NULL) {
        p->ready_tail->next_ready = ctx;
    } else {
        p->ready = ctx;
    }
    p->ready_tail = ctx;
}

/*
 * Asks the lookups of the ready requests, oldest first. A lookup the cache answers runs its
 * callback (and appends) inside agent_topics_get, and that callback may make the connection's
 * next request ready: it is queued here, never started from inside the callback, so this does
 * not recurse however many requests wait.
 */
static void agent__pq_pump(struct agent_produce *p)
{
    if (p->pumping) {
        return;
    }
    p->pumping = true;
    while (p->ready != NULL) {
        struct agent__pctx *ctx = p->ready;
        p->ready = ctx->next_ready;
        if (p->ready == NULL) {
            p->ready_tail = NULL;
        }
        ctx->started = true;
        agent_topics_get(ctx->a, ctx->names, ctx->n_names, false, agent__produce_topics_cb, ctx);
    }
    p->pumping = false;
}

static void agent__produce_topics_cb(void *arg, int status, struct agent_topic **topics,
                                     const int16_t *errors, size_t n)
{
    (void)errors;
    struct agent__pctx *ctx = arg;
    struct agent *a = ctx->a;
    struct agent_produce *p = a->produce;
    if (p == NULL) { /* shut down while the lookup ran: nothing may be appended any more */
        agent__pq_conn_forget(ctx);
        agent__set_all(ctx->resp, KP_ERROR_NOT_LEADER_OR_FOLLOWER);
        agent__produce_answer_now(ctx->req, ctx->resp, true);
        return;
    }
    agent__pq_unlink(p, ctx);
    struct agent__pctx *next = ctx->next_same;
    agent__pq_conn_forget(ctx);
    /* The lookup still counts while the request is appended, so a drain cannot finish (and
     * free the write path) under it. */
    agent__produce_run(ctx, status, topics, n); /* may free ctx with its request */
    p->lookups--;
    if (next != NULL) {
        agent__pq_ready(p, next);
        agent__pq_pump(p);
    }
    agent__check_drained(p);
}

void agent_handle_produce(struct agent_req *req)
{
    struct agent *a = req->conn->agent;
    const struct kp_produce_request *pr = req->body;
    int16_t version = req->hdr.request_api_version;
    struct kp_produce_response *resp = kp_arena_calloc(&req->arena, 1, sizeof(*resp));
    int32_t nt = pr->topic_data_count > 0 ? pr->topic_data_count : 0;
    struct kp_str *names = kp_arena_calloc(&req->arena, nt ? (size_t)nt : 1, sizeof(*names));
    struct agent__pctx *ctx = kp_arena_calloc(&req->arena, 1, sizeof(*ctx));
    if (resp == NULL || names == NULL || ctx == NULL) {
        agent_req_close_conn(req, "produce request too large");
        return;
    }
    kp_produce_response_init(resp);
    resp->responses = kp_arena_calloc(&req->arena, nt ? (size_t)nt : 1, sizeof(*resp->responses));
    if (resp->responses == NULL) {
        agent_req_close_conn(req, "produce request too large");
        return;
    }
    resp->responses_count = nt;
    int16_t all_error = 0;
    if (version < 3) {
        all_error = KP_ERROR_UNSUPPORTED_VERSION; /* message formats 0 and 1 are gone (KIP-724) */
    } else if (pr->acks != 0 && pr->acks != 1 && pr->acks != -1) {
        all_error = KP_ERROR_INVALID_REQUIRED_ACKS;
    } else if (pr->transactional_id.len >= 0 && pr->transactional_id.ptr != NULL) {
        all_error = KP_ERROR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED; /* no transactions here */
    } else if (a->stopping && a->produce->drain_done == NULL && a->produce->head == NULL &&
               a->produce->open == NULL) {
        all_error = KP_ERROR_NOT_LEADER_OR_FOLLOWER; /* drained already: another agent takes it */
    }
    for (int32_t i = 0; i < nt; i++) {
        const struct kp_produce_request_topic_produce_data *td = &pr->topic_data[i];
        struct kp_produce_response_topic_produce_response *tr = &resp->responses[i];
        kp_produce_response_topic_produce_response_init(tr);
        tr->name = td->name;
        names[i] = td->name;
        int32_t np = td->partition_data_count > 0 ? td->partition_data_count : 0;
        tr->partition_responses =
            kp_arena_calloc(&req->arena, np ? (size_t)np : 1, sizeof(*tr->partition_responses));
        if (tr->partition_responses == NULL) {
            agent_req_close_conn(req, "produce request too large");
            return;
        }
        tr->partition_responses_count = np;
        for (int32_t j = 0; j < np; j++) {
            struct kp_produce_response_partition_produce_response *s = &tr->partition_responses[j];
            kp_produce_response_partition_produce_response_init(s);
            s->index = td->partition_data[j].index;
            s->error_code = all_error;
            s->base_offset = -1;
            s->log_append_time_ms = -1;
            s->log_start_offset = -1;
        }
    }
    if (all_error != 0 || nt == 0) {
        agent__produce_answer_now(req, resp, all_error != 0);
        return;
    }
    ctx->a = a;
    ctx->req = req;
    ctx->resp = resp;
    ctx->names = names;
    ctx->n_names = (size_t)nt;
    struct agent_produce *p = a->produce;
    p->lookups++;
    ctx->next = p->waiting;
    if (p->waiting != NULL) {
        p->waiting->prev = ctx;
    }
    p->waiting = ctx;
    struct agent_conn *c = req->conn;
    struct agent__pctx *before = c->produce_last;
    c->produce_last = ctx;
    if (before != NULL) {
        before->next_same = ctx; /* asked when `before` is appended */
        return;
    }
    agent__pq_ready(p, ctx);
    agent__pq_pump(p);
}

/* ---- InitProducerId ---- */

static void agent__init_pid_cb(void *arg, int status, const void *response)
{
    struct agent_req *req = arg;
    struct kp_init_producer_id_response r;
    kp_init_producer_id_response_init(&r);
    r.producer_id = -1;
    r.producer_epoch = -1;
    if (status != 0) {
        r.error_code = KP_ERROR_COORDINATOR_NOT_AVAILABLE; /* retriable: ask again */
    } else {
        const struct kp_meta_init_producer_id_response *m = response;
        r.error_code = m->error_code;
        if (r.error_code == KP_ERROR_PRODUCER_FENCED && req->hdr.request_api_version < 4) {
            r.error_code = KP_ERROR_INVALID_PRODUCER_EPOCH; /* PRODUCER_FENCED is v4+ (KIP-588) */
        }
        if (r.error_code == 0) {
            r.producer_id = m->producer_id;
            r.producer_epoch = m->producer_epoch;
        }
    }
    agent_req_respond(req, &r);
}

void agent_handle_init_producer_id(struct agent_req *req)
{
    struct agent *a = req->conn->agent;
    const struct kp_init_producer_id_request *ir = req->body;
    if (ir->transactional_id.ptr != NULL && ir->transactional_id.len >= 0) {
        /* Transactions are out of scope: refuse transactional ids as an unauthorised one. */
        struct kp_init_producer_id_response r;
        kp_init_producer_id_response_init(&r);
        r.error_code = KP_ERROR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        r.producer_id = -1;
        r.producer_epoch = -1;
        agent_req_respond(req, &r);
        return;
    }
    struct kp_meta_init_producer_id_request m;
    kp_meta_init_producer_id_request_init(&m);
    m.transactional_id = KP_STR_NULL;
    m.transaction_timeout_ms = ir->transaction_timeout_ms;
    m.producer_id = req->hdr.request_api_version >= 3 ? ir->producer_id : -1;
    m.producer_epoch = req->hdr.request_api_version >= 3 ? ir->producer_epoch : -1;
    if (meta_client_call(a->meta, 1009, &m, agent__init_pid_cb, req) != 0) {
        agent__init_pid_cb(req, -ECANCELED, NULL);
    }
}

/* ---- hooks ---- */

int agent_produce_init(struct agent *a)
{
    struct agent_produce *p = kp_xcalloc(1, sizeof(*p));
    p->a = a;
    uv_timer_init(a->loop, &p->timer);
    p->timer.data = p;
    a->produce = p;
    return 0;
}

void agent_produce_drain(struct agent *a, void (*done)(struct agent *a))
{
    struct agent_produce *p = a->produce;
    if (p == NULL) {
        done(a);
        return;
    }
    p->drain_done = done;
    agent__seal_open(p, false);
    agent__check_drained(p);
}

static void agent__timer_closed(uv_handle_t *h)
{
    struct agent_produce *p = h->data;
    p->timer_closed = true;
    if (p->freeing && p->head == NULL) {
        free(p);
    }
}

void agent_produce_free(struct agent *a)
{
    struct agent_produce *p = a->produce;
    if (p == NULL) {
        return;
    }
    a->produce = NULL;
    /* Requests whose lookup was never asked (only after a failed drain): answered here. Those
     * whose lookup runs are answered by its callback. */
    while (p->waiting != NULL) {
        struct agent__pctx *ctx = p->waiting;
        agent__pq_unlink(p, ctx);
        if (!ctx->started) {
            agent__pq_conn_forget(ctx);
            agent__set_all(ctx->resp, KP_ERROR_NOT_LEADER_OR_FOLLOWER);
            agent__produce_answer_now(ctx->req, ctx->resp, true);
        }
    }
    p->ready = p->ready_tail = NULL;
    if (p->open != NULL) {
        agent__pobj_fail_all(p->open, KP_ERROR_KAFKA_STORAGE_ERROR);
        agent__pobj_finish(p->open);
        p->open = NULL;
    }
    /* Objects still on the worker pool or in flight (only after a failed drain) are left to
     * the process exit: their callbacks may still run and need them. */
    if (p->spare != NULL) {
        store_obj_builder_free(p->spare);
        p->spare = NULL;
    }
    p->freeing = true;
    if (!uv_is_closing((uv_handle_t *)&p->timer)) {
        uv_close((uv_handle_t *)&p->timer, agent__timer_closed);
    }
    /* Otherwise the shutdown grace walk closed the timer without our callback: libuv may still
     * touch the handle, so the state is left to the process exit. */
}
