/*
 * ListOffsets (v1-7).
 *
 * Timestamps -1 (latest: the high watermark, which is also the last stable offset while
 * transactions do not exist, so isolation_level changes nothing), -2 (earliest: the log start
 * offset), -4 (earliest local, = -2) and -5 (latest tiered, = -1) are answered by the metadata
 * service's ListOffsets RPC alone, with timestamp -1. For -3 (MAX_TIMESTAMP, v7+) and for
 * timestamps >= 0 the service names the extent holding the answer (the first extent whose
 * largest timestamp reaches the target, or the extent with the largest timestamp); the agent
 * then reads that extent's batches (one Lookup RPC for all such partitions, then the chunk
 * cache) and scans its records for the exact offset: the first record whose timestamp is >= the
 * target, or the first record carrying the largest timestamp. No such record: offset and
 * timestamp -1, as Kafka answers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "cache.h"
#include "handlers.h"
#include "runnel/common/log.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/records.h"

#define AGENT__META_API_LOOKUP 1007           /* MetaLookup */
#define AGENT__META_API_LIST_OFFSETS 1008     /* MetaListOffsets */
#define AGENT__LO_LEADER_EPOCH 0              /* the epoch Metadata reports */
#define AGENT__LO_MAX_DECOMPRESS (256u << 20) /* cap for one batch's records while scanning */

/* One partition of the request. */
struct agent__lopart {
    struct agent__loop *op;  /* owner */
    struct kp_uuid topic_id; /* resolved topic */
    int32_t partition;       /* index */
    int64_t target;          /* requested timestamp */
    int16_t err;             /* Kafka error */
    bool asked;              /* part of the metadata ListOffsets */
    bool scan;               /* needs the records of one extent */
    int64_t offset;          /* answer */
    int64_t timestamp;       /* answer */
    int64_t ext_base;        /* extent to scan: first offset */
    char *key;               /* its object key (malloc) */
    uint64_t chunk_off;      /* its chunk */
    uint32_t raw_off;        /* its byte range in the chunk */
    uint32_t raw_len;        /* bytes */
};

struct agent__loop {
    struct agent *a;                          /* agent */
    struct agent_req *req;                    /* the request */
    const struct kp_list_offsets_request *rq; /* its body */
    struct agent__lopart *parts;              /* every partition, in request order */
    size_t nparts;                            /* count */
    int pending;                              /* chunk reads in flight (+1 while starting) */
};

static void agent__lo_respond(struct agent__loop *op)
{
    struct agent_req *req = op->req;
    const struct kp_list_offsets_request *rq = op->rq;
    struct kp_list_offsets_response r;
    kp_list_offsets_response_init(&r);
    int32_t nt = rq->topics_count > 0 ? rq->topics_count : 0;
    r.topics = kp_arena_calloc(&req->arena, (size_t)nt + 1, sizeof(*r.topics));
    r.topics_count = r.topics != NULL ? nt : 0;
    size_t k = 0;
    for (int32_t t = 0; t < r.topics_count; t++) {
        struct kp_list_offsets_response_list_offsets_topic_response *tr = &r.topics[t];
        kp_list_offsets_response_list_offsets_topic_response_init(tr);
        tr->name = rq->topics[t].name;
        int32_t np = rq->topics[t].partitions_count > 0 ? rq->topics[t].partitions_count : 0;
        tr->partitions = kp_arena_calloc(&req->arena, (size_t)np + 1, sizeof(*tr->partitions));
        if (tr->partitions == NULL) {
            np = 0;
        }
        tr->partitions_count = np;
        for (int32_t p = 0; p < np; p++, k++) {
            const struct agent__lopart *lp = &op->parts[k];
            struct kp_list_offsets_response_list_offsets_partition_response *pr =
                &tr->partitions[p];
            kp_list_offsets_response_list_offsets_partition_response_init(pr);
            pr->partition_index = lp->partition;
            pr->error_code = lp->err;
            pr->offset = lp->err == 0 ? lp->offset : -1;
            pr->timestamp = lp->err == 0 ? lp->timestamp : -1;
            /* LeaderEpoch exists from v4 and is not ignorable: leave the default below. */
            if (req->hdr.request_api_version >= 4) {
                pr->leader_epoch = lp->err == 0 && lp->offset >= 0 ? AGENT__LO_LEADER_EPOCH : -1;
            }
            pr->old_style_offsets = NULL;
            pr->old_style_offsets_count = 0;
        }
    }
    agent_req_respond(req, &r);
    for (size_t i = 0; i < op->nparts; i++) {
        free(op->parts[i].key);
    }
    free(op->parts);
    free(op);
}

/*
 * Scans the batches of one extent (base offsets not yet written: offsets are counted from
 * ext_base) for the answer. Returns true when found.
 */
static bool agent__lo_scan(struct agent__lopart *lp, const uint8_t *buf, size_t len)
{
    struct kp_batch_iter it;
    kp_batch_iter_init(&it, buf, len, KP_BATCH_SKIP_CRC);
    struct kp_batch b;
    struct kp_batch_err berr;
    int64_t base = lp->ext_base;
    bool want_max = lp->target == -3;
    int64_t best_ts = -1;
    int64_t best_off = -1;
    while (kp_batch_iter_next(&it, &b, &berr) == 1) {
        int64_t batch_base = base;
        base += (int64_t)b.last_offset_delta + 1;
        if (kp_batch_is_control(&b)) {
            continue;
        }
        if (want_max ? b.max_timestamp <= best_ts : b.max_timestamp < lp->target) {
            continue;
        }
        struct kp_record_iter ri;
        if (kp_record_iter_init(&ri, &b, AGENT__LO_MAX_DECOMPRESS, &berr) != 0) {
            continue;
        }
        ri.base_offset = batch_base;
        struct kp_record rec;
        while (kp_record_iter_next(&ri, &rec, &berr) == 1) {
            int64_t off = batch_base + rec.offset_delta;
            if (want_max) {
                if (rec.timestamp > best_ts) {
                    best_ts = rec.timestamp;
                    best_off = off;
                }
            } else if (rec.timestamp >= lp->target) {
                lp->offset = off;
                lp->timestamp = rec.timestamp;
                kp_record_iter_free(&ri);
                return true;
            }
        }
        kp_record_iter_free(&ri);
    }
    if (want_max && best_off >= 0) {
        lp->offset = best_off;
        lp->timestamp = best_ts;
        return true;
    }
    return false;
}

static void agent__lo_chunk_cb(void *arg, int err, const uint8_t *raw, size_t raw_len,
                               struct agent_cbuf *buf)
{
    (void)buf;
    struct agent__lopart *lp = arg;
    struct agent__loop *op = lp->op;
    if (err == 0 && (size_t)lp->raw_off <= raw_len && lp->raw_len <= raw_len - lp->raw_off) {
        if (!agent__lo_scan(lp, raw + lp->raw_off, lp->raw_len) && lp->target >= 0) {
            /* The extent's largest timestamp said otherwise; trust the records. */
            lp->offset = -1;
            lp->timestamp = -1;
        }
    } else {
        rn_log(RN_LOG_WARN, "list_offsets_scan_failed", "key=%s error=%d", lp->key, err);
        lp->err = KP_ERROR_KAFKA_STORAGE_ERROR;
    }
    if (--op->pending == 0) {
        agent__lo_respond(op);
    }
}

static void agent__lo_lookup_cb(void *arg, int status, const void *response)
{
    struct agent__loop *op = arg;
    const struct kp_meta_lookup_response *rs = response;
    struct agent_cache *cache = agent__fetch_cache(op->a);
    size_t j = 0;
    op->pending = 1;
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__lopart *lp = &op->parts[i];
        if (!lp->scan) {
            continue;
        }
        const struct kp_meta_lookup_response_meta_lookup_partition_result *pr =
            status == 0 && rs != NULL && (int32_t)j < rs->partitions_count ? &rs->partitions[j]
                                                                           : NULL;
        j++;
        if (pr == NULL || pr->error_code != 0 || pr->extents_count < 1 ||
            pr->extents[0].object_key.len <= 0 || pr->extents[0].raw_offset < 0 ||
            pr->extents[0].raw_length < 0 || pr->extents[0].chunk_offset < 0 || cache == NULL) {
            lp->err =
                pr != NULL && pr->error_code != 0 ? pr->error_code : KP_ERROR_LEADER_NOT_AVAILABLE;
            continue;
        }
        const struct kp_meta_lookup_response_meta_lookup_extent *x = &pr->extents[0];
        lp->ext_base = x->base_offset;
        lp->key = kp_xmalloc((size_t)x->object_key.len + 1);
        memcpy(lp->key, x->object_key.ptr, (size_t)x->object_key.len);
        lp->key[x->object_key.len] = '\0';
        lp->chunk_off = (uint64_t)x->chunk_offset;
        lp->raw_off = (uint32_t)x->raw_offset;
        lp->raw_len = (uint32_t)x->raw_length;
        op->pending++;
        if (agent_cache_get(cache, lp->key, lp->chunk_off, agent__lo_chunk_cb, lp) != 0) {
            lp->err = KP_ERROR_LEADER_NOT_AVAILABLE;
            op->pending--;
        }
    }
    if (--op->pending == 0) {
        agent__lo_respond(op);
    }
}

static void agent__lo_meta_cb(void *arg, int status, const void *response)
{
    struct agent__loop *op = arg;
    const struct kp_meta_list_offsets_response *rs = response;
    size_t j = 0;
    size_t nscan = 0;
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__lopart *lp = &op->parts[i];
        if (!lp->asked) {
            continue;
        }
        if (status != 0 || rs == NULL || (int32_t)j >= rs->partitions_count) {
            lp->err = KP_ERROR_LEADER_NOT_AVAILABLE;
            j++;
            continue;
        }
        const struct kp_meta_list_offsets_response_meta_list_offsets_partition_result *pr =
            &rs->partitions[j++];
        lp->err = pr->error_code;
        lp->offset = pr->offset;
        lp->timestamp = -1;
        if (lp->err == 0 && (lp->target == -3 || lp->target >= 0)) {
            lp->timestamp = pr->timestamp;
            if (pr->offset >= 0) {
                lp->scan = true;
                nscan++;
            } else {
                lp->offset = -1;
                lp->timestamp = -1;
            }
        }
    }
    if (nscan == 0 || op->req->conn == NULL) {
        agent__lo_respond(op);
        return;
    }
    struct kp_meta_lookup_request q;
    kp_meta_lookup_request_init(&q);
    q.partitions = kp_xcalloc(nscan, sizeof(*q.partitions));
    q.partitions_count = (int32_t)nscan;
    j = 0;
    for (size_t i = 0; i < op->nparts; i++) {
        struct agent__lopart *lp = &op->parts[i];
        if (!lp->scan) {
            continue;
        }
        kp_meta_lookup_request_meta_lookup_partition_init(&q.partitions[j]);
        q.partitions[j].topic_id = lp->topic_id;
        q.partitions[j].partition_index = lp->partition;
        q.partitions[j].offset = lp->offset;
        q.partitions[j].max_bytes = 1; /* just the extent holding it */
        j++;
    }
    int rc = meta_client_call(op->a->meta, AGENT__META_API_LOOKUP, &q, agent__lo_lookup_cb, op);
    free(q.partitions);
    if (rc != 0) {
        agent__lo_lookup_cb(op, rc, NULL);
    }
}

static void agent__lo_topics_cb(void *arg, int status, struct agent_topic **topics,
                                const int16_t *errors, size_t n)
{
    struct agent__loop *op = arg;
    const struct kp_list_offsets_request *rq = op->rq;
    int16_t version = op->req->hdr.request_api_version;
    size_t k = 0;
    size_t nask = 0;
    for (size_t t = 0; t < n; t++) {
        int32_t np = rq->topics[t].partitions_count > 0 ? rq->topics[t].partitions_count : 0;
        const struct agent_topic *tp = status == 0 ? topics[t] : NULL;
        for (int32_t p = 0; p < np; p++, k++) {
            struct agent__lopart *lp = &op->parts[k];
            lp->op = op;
            lp->partition = rq->topics[t].partitions[p].partition_index;
            lp->target = rq->topics[t].partitions[p].timestamp;
            lp->offset = -1;
            lp->timestamp = -1;
            if (status != 0) {
                lp->err = KP_ERROR_LEADER_NOT_AVAILABLE;
            } else if (tp == NULL) {
                lp->err = errors != NULL && errors[t] != 0 ? errors[t]
                                                           : KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            } else if (lp->partition < 0 || lp->partition >= tp->partitions) {
                lp->err = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            } else if (lp->target < -5 || (lp->target == -3 && version < 7) ||
                       (lp->target < -3 && version < 8)) {
                lp->err = KP_ERROR_UNSUPPORTED_VERSION;
            } else {
                lp->topic_id = tp->id;
                lp->asked = true;
                nask++;
            }
        }
    }
    if (nask == 0 || op->req->conn == NULL) {
        agent__lo_respond(op);
        return;
    }
    struct kp_meta_list_offsets_request q;
    kp_meta_list_offsets_request_init(&q);
    q.partitions = kp_xcalloc(nask, sizeof(*q.partitions));
    q.partitions_count = (int32_t)nask;
    size_t j = 0;
    for (size_t i = 0; i < op->nparts; i++) {
        const struct agent__lopart *lp = &op->parts[i];
        if (!lp->asked) {
            continue;
        }
        kp_meta_list_offsets_request_meta_list_offsets_partition_init(&q.partitions[j]);
        q.partitions[j].topic_id = lp->topic_id;
        q.partitions[j].partition_index = lp->partition;
        q.partitions[j].timestamp = lp->target;
        j++;
    }
    int rc = meta_client_call(op->a->meta, AGENT__META_API_LIST_OFFSETS, &q, agent__lo_meta_cb, op);
    free(q.partitions);
    if (rc != 0) {
        agent__lo_meta_cb(op, rc, NULL);
    }
}

void agent_handle_list_offsets(struct agent_req *req)
{
    struct agent *a = req->conn->agent;
    const struct kp_list_offsets_request *rq = req->body;
    struct agent__loop *op = kp_xcalloc(1, sizeof(*op));
    op->a = a;
    op->req = req;
    op->rq = rq;
    int32_t nt = rq->topics_count > 0 ? rq->topics_count : 0;
    size_t np = 0;
    for (int32_t t = 0; t < nt; t++) {
        np += (size_t)(rq->topics[t].partitions_count > 0 ? rq->topics[t].partitions_count : 0);
    }
    op->parts = kp_xcalloc(np + 1, sizeof(*op->parts));
    op->nparts = np;
    struct kp_str *names = kp_arena_calloc(&req->arena, (size_t)nt + 1, sizeof(*names));
    if (names == NULL) {
        agent__lo_respond(op);
        return;
    }
    for (int32_t t = 0; t < nt; t++) {
        names[t] = rq->topics[t].name;
    }
    agent_topics_get(a, names, (size_t)nt, false, agent__lo_topics_cb, op);
}
