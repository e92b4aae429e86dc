/*
 * Request handlers of the metadata server: one function per RPC api (protocol/spec/Meta*.json,
 * generated codec in kp_rpc.h). Each decodes its request from the frame, runs the state machine,
 * journals the operation when it changed the state (the same op, with the same time, that replay
 * applies), and encodes the response body. Reads answer from the in-memory state; server.c holds
 * every response until the journal records it may depend on are durable.
 */
#include "server_int.h"

#include <errno.h>
#include <string.h>

#include "kp_rpc.h"
#include "runnel/protocol/errors.h"

#define META_API_HELLO 1000
#define META_API_CREATE_TOPICS 1001
#define META_API_DELETE_TOPICS 1002
#define META_API_CREATE_PARTITIONS 1003
#define META_API_DESCRIBE_TOPICS 1004
#define META_API_ALTER_TOPIC_CONFIGS 1005
#define META_API_COMMIT 1006
#define META_API_LOOKUP 1007
#define META_API_LIST_OFFSETS 1008
#define META_API_INIT_PRODUCER_ID 1009
#define META_API_WATCH 1010
#define META_API_NOTIFY 1011
#define META_API_REGISTER_AGENT 1012
#define META_API_AGENT_HEARTBEAT 1013
#define META_API_ACQUIRE_LEASE 1014
#define META_API_RELEASE_LEASE 1015
#define META_API_GROUP 1020

#define META_LOOKUP_MAX_EXTENTS 10000 /* per partition per Lookup */

struct meta__ctx {
    struct meta_server *srv;         /* the server */
    struct meta__conn *conn;         /* the requesting connection */
    const struct meta__request *req; /* header and body */
    struct kp_arena *a;              /* per-request memory */
    const void *body;                /* the decoded request (generated struct of req->api_key) */
    int64_t now;                     /* the time this request happens at */
};

/* Encodes `msg` (a generated response struct) with the api's generated response ops. */
static int meta__encode(const struct meta__ctx *x, const void *msg, struct meta__buf *body)
{
    const struct kp_api *api = kp_rpc_api_find(x->req->api_key);
    size_t size = 0;
    if (api == NULL || api->response->size(msg, x->req->api_version, &size) != 0) {
        return -EINVAL;
    }
    meta__buf_reserve(body, size);
    struct kp_writer w;
    kp_writer_init(&w, body->p + body->len, size);
    if (api->response->encode(msg, x->req->api_version, &w) != 0 || w.err != 0) {
        return -EINVAL;
    }
    body->len += kp_writer_len(&w);
    return 0;
}

static struct kp_str meta__kstr(const char *s)
{
    return kp_str_from(s);
}

static const char *meta__ptr(struct kp_str s)
{
    return s.len >= 0 ? s.ptr : NULL;
}

static size_t meta__len(struct kp_str s)
{
    return s.len > 0 ? (size_t)s.len : 0;
}

static bool meta__uuid_is_zero(const struct kp_uuid *id)
{
    static const struct kp_uuid zero;
    return memcmp(id->b, zero.b, 16) == 0;
}

/* ---- Hello ---- */

static int meta__hello(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_hello_request *rq = x->body;
    struct kp_meta_hello_response rs;
    kp_meta_hello_response_init(&rs);
    rs.server_name = meta__kstr("runnel-metadata");
    rs.server_version = meta__kstr("0.1.0");
    rs.cluster_id = meta__kstr(x->srv->cluster_id);
    int n = 0;
    for (int16_t k = META_API_HELLO; k <= META_API_RELEASE_LEASE; k++) {
        n += kp_rpc_api_find(k) != NULL;
    }
    rs.api_keys = kp_arena_calloc(x->a, (size_t)n, sizeof(*rs.api_keys));
    if (rs.api_keys == NULL) {
        return -ENOMEM;
    }
    rs.api_keys_count = 0;
    for (int16_t k = META_API_HELLO; k <= META_API_RELEASE_LEASE; k++) {
        const struct kp_api *api = kp_rpc_api_find(k);
        if (api == NULL) {
            continue;
        }
        struct kp_meta_hello_response_meta_api_version *v = &rs.api_keys[rs.api_keys_count++];
        kp_meta_hello_response_meta_api_version_init(v);
        v->api_key = k;
        v->min_version = api->min_version;
        v->max_version = api->max_version;
    }
    /* RPC generation negotiation: the caller's range must include ours (0). */
    if (rq->min_version > 0 || rq->max_version < 0) {
        rs.error_code = KP_ERROR_UNSUPPORTED_VERSION;
    }
    return meta__encode(x, &rs, body);
}

/* ---- topics ---- */

static void meta__fill_configs(struct meta__ctx *x, const struct meta_topic *t, void **out,
                               int32_t *count, size_t elem, void (*init)(void *))
{
    uint8_t *arr = kp_arena_calloc(x->a, META_CFG_COUNT, elem);
    *out = arr;
    *count = 0;
    if (arr == NULL) {
        return;
    }
    for (int k = 0; k < META_CFG_COUNT; k++) {
        /* All generated config entry structs share the layout name/value/is_default. */
        struct kp_meta_describe_topics_response_meta_described_config *c =
            (void *)(arr + elem * (size_t)k);
        init(c);
        c->name = meta__kstr(meta_config_key_name(k));
        c->value = meta__kstr(meta_topic_config(t, k));
        c->is_default = t->config[k] == NULL;
    }
    *count = META_CFG_COUNT;
}

static void meta__init_described_config(void *p)
{
    kp_meta_describe_topics_response_meta_described_config_init(p);
}

static void meta__init_created_config(void *p)
{
    kp_meta_create_topics_response_meta_created_config_init(p);
}

static int meta__create_topics(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_create_topics_request *rq = x->body;
    struct kp_meta_create_topics_response rs;
    kp_meta_create_topics_response_init(&rs);
    int32_t n = rq->topics_count > 0 ? rq->topics_count : 0;
    rs.topics = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.topics));
    if (rs.topics == NULL) {
        return -ENOMEM;
    }
    rs.topics_count = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kp_meta_create_topics_request_meta_creatable_topic *t = &rq->topics[i];
        struct kp_meta_create_topics_response_meta_created_topic *o = &rs.topics[i];
        kp_meta_create_topics_response_meta_created_topic_init(o);
        o->name = t->name;
        o->num_partitions = -1;
        int32_t nc = t->configs_count > 0 ? t->configs_count : 0;
        struct meta_config_kv *kv = kp_arena_calloc(x->a, (size_t)nc + 1, sizeof(*kv));
        if (kv == NULL) {
            return -ENOMEM;
        }
        for (int32_t k = 0; k < nc; k++) {
            kv[k].name = meta__ptr(t->configs[k].name);
            kv[k].name_len = meta__len(t->configs[k].name);
            kv[k].value = meta__ptr(t->configs[k].value);
            kv[k].value_len = meta__len(t->configs[k].value);
        }
        struct meta_topic *topic = NULL;
        uint64_t before = x->srv->state.mutations;
        o->error_code =
            meta_state_create_topic(&x->srv->state, meta__ptr(t->name), meta__len(t->name),
                                    t->num_partitions, kv, (size_t)nc, rq->validate_only, &topic);
        if (x->srv->state.mutations != before) {
            meta_op_create_topic(&x->srv->op, x->now, meta__ptr(t->name), meta__len(t->name),
                                 t->num_partitions, kv, (size_t)nc);
            meta__journal_op(x->srv);
        }
        if (o->error_code != 0) {
            o->error_message = meta__kstr(kp_error_name(o->error_code));
            continue;
        }
        o->num_partitions = t->num_partitions;
        if (topic != NULL) {
            o->topic_id = topic->id;
            meta__fill_configs(x, topic, (void **)&o->configs, &o->configs_count,
                               sizeof(*o->configs), meta__init_created_config);
        }
    }
    return meta__encode(x, &rs, body);
}

static int meta__delete_topics(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_delete_topics_request *rq = x->body;
    struct kp_meta_delete_topics_response rs;
    kp_meta_delete_topics_response_init(&rs);
    int32_t n = rq->topics_count > 0 ? rq->topics_count : 0;
    rs.topics = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.topics));
    if (rs.topics == NULL) {
        return -ENOMEM;
    }
    rs.topics_count = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kp_meta_delete_topics_request_meta_deletable_topic *t = &rq->topics[i];
        struct kp_meta_delete_topics_response_meta_deleted_topic *o = &rs.topics[i];
        kp_meta_delete_topics_response_meta_deleted_topic_init(o);
        o->name = t->name;
        o->topic_id = t->topic_id;
        const struct meta_topic *topic =
            t->name.len >= 0
                ? meta_state_topic_by_name(&x->srv->state, meta__ptr(t->name), meta__len(t->name))
                : meta_state_topic_by_id(&x->srv->state, &t->topic_id);
        if (topic != NULL) {
            o->topic_id = topic->id;
        }
        uint64_t before = x->srv->state.mutations;
        o->error_code = meta_state_delete_topic(&x->srv->state, meta__ptr(t->name),
                                                meta__len(t->name), &t->topic_id);
        if (x->srv->state.mutations != before) {
            meta_op_delete_topic(&x->srv->op, x->now, meta__ptr(t->name), meta__len(t->name),
                                 &t->topic_id);
            meta__journal_op(x->srv);
        }
    }
    return meta__encode(x, &rs, body);
}

static int meta__create_partitions(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_create_partitions_request *rq = x->body;
    struct kp_meta_create_partitions_response rs;
    kp_meta_create_partitions_response_init(&rs);
    int32_t n = rq->topics_count > 0 ? rq->topics_count : 0;
    rs.topics = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.topics));
    if (rs.topics == NULL) {
        return -ENOMEM;
    }
    rs.topics_count = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kp_meta_create_partitions_request_meta_partitions_topic *t = &rq->topics[i];
        struct kp_meta_create_partitions_response_meta_partitions_topic_result *o = &rs.topics[i];
        kp_meta_create_partitions_response_meta_partitions_topic_result_init(o);
        o->name = t->name;
        uint64_t before = x->srv->state.mutations;
        o->error_code = meta_state_create_partitions(
            &x->srv->state, meta__ptr(t->name), meta__len(t->name), t->count, rq->validate_only);
        if (x->srv->state.mutations != before) {
            meta_op_create_partitions(&x->srv->op, x->now, meta__ptr(t->name), meta__len(t->name),
                                      t->count);
            meta__journal_op(x->srv);
        }
        if (o->error_code != 0) {
            o->error_message = meta__kstr(kp_error_name(o->error_code));
        }
    }
    return meta__encode(x, &rs, body);
}

static int meta__describe_one(struct meta__ctx *x, const struct meta_topic *t, bool parts,
                              bool configs,
                              struct kp_meta_describe_topics_response_meta_described_topic *o)
{
    o->name = meta__kstr(t->name);
    o->topic_id = t->id;
    o->num_partitions = (int32_t)t->n_parts;
    if (parts) {
        o->partitions = kp_arena_calloc(x->a, t->n_parts + 1, sizeof(*o->partitions));
        if (o->partitions == NULL) {
            return -ENOMEM;
        }
        o->partitions_count = (int32_t)t->n_parts;
        for (uint32_t p = 0; p < t->n_parts; p++) {
            struct kp_meta_describe_topics_response_meta_described_partition *d = &o->partitions[p];
            kp_meta_describe_topics_response_meta_described_partition_init(d);
            d->partition_index = (int32_t)p;
            d->log_start_offset = t->parts[p].log_start;
            d->high_watermark = t->parts[p].hwm;
            d->extent_count = (int32_t)t->parts[p].n_ext;
        }
    }
    if (configs) {
        meta__fill_configs(x, t, (void **)&o->configs, &o->configs_count, sizeof(*o->configs),
                           meta__init_described_config);
    }
    return 0;
}

static int meta__describe_topics(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_describe_topics_request *rq = x->body;
    const struct meta_state *s = &x->srv->state;
    struct kp_meta_describe_topics_response rs;
    kp_meta_describe_topics_response_init(&rs);
    bool all = rq->topics == NULL || rq->topics_count < 0;
    int32_t n = all ? (int32_t)s->n_topics : rq->topics_count;
    rs.topics = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.topics));
    if (rs.topics == NULL) {
        return -ENOMEM;
    }
    rs.topics_count = n;
    for (int32_t i = 0; i < n; i++) {
        struct kp_meta_describe_topics_response_meta_described_topic *o = &rs.topics[i];
        kp_meta_describe_topics_response_meta_described_topic_init(o);
        const struct meta_topic *t;
        if (all) {
            t = &s->topics[i];
        } else if (rq->topics[i].name.len >= 0) {
            t = meta_state_topic_by_name(s, meta__ptr(rq->topics[i].name),
                                         meta__len(rq->topics[i].name));
        } else {
            t = meta_state_topic_by_id(s, &rq->topics[i].topic_id);
        }
        if (t == NULL) {
            o->error_code = rq->topics[i].name.len >= 0 ? KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION
                                                        : KP_ERROR_UNKNOWN_TOPIC_ID;
            o->name = rq->topics[i].name;
            o->topic_id = rq->topics[i].topic_id;
            continue;
        }
        if (meta__describe_one(x, t, rq->include_partitions, rq->include_configs, o) != 0) {
            return -ENOMEM;
        }
    }
    return meta__encode(x, &rs, body);
}

static int meta__alter_configs(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_alter_topic_configs_request *rq = x->body;
    struct kp_meta_alter_topic_configs_response rs;
    kp_meta_alter_topic_configs_response_init(&rs);
    int32_t n = rq->topics_count > 0 ? rq->topics_count : 0;
    rs.topics = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.topics));
    if (rs.topics == NULL) {
        return -ENOMEM;
    }
    rs.topics_count = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kp_meta_alter_topic_configs_request_meta_alterable_topic *t = &rq->topics[i];
        struct kp_meta_alter_topic_configs_response_meta_altered_topic *o = &rs.topics[i];
        kp_meta_alter_topic_configs_response_meta_altered_topic_init(o);
        o->name = t->name;
        int32_t nc = t->configs_count > 0 ? t->configs_count : 0;
        struct meta_config_kv *kv = kp_arena_calloc(x->a, (size_t)nc + 1, sizeof(*kv));
        if (kv == NULL) {
            return -ENOMEM;
        }
        bool bad = false;
        for (int32_t k = 0; k < nc; k++) {
            kv[k].name = meta__ptr(t->configs[k].name);
            kv[k].name_len = meta__len(t->configs[k].name);
            if (t->configs[k].operation == 0) {
                kv[k].value = meta__ptr(t->configs[k].value);
                kv[k].value_len = meta__len(t->configs[k].value);
                bad = bad || kv[k].value == NULL;
            } else if (t->configs[k].operation != 1) {
                bad = true;
            }
        }
        if (bad) {
            o->error_code = KP_ERROR_INVALID_CONFIG;
            o->error_message = meta__kstr("operation must be 0 SET (with a value) or 1 DELETE");
            continue;
        }
        uint64_t before = x->srv->state.mutations;
        o->error_code =
            meta_state_alter_configs(&x->srv->state, meta__ptr(t->name), meta__len(t->name), kv,
                                     (size_t)nc, rq->validate_only);
        if (x->srv->state.mutations != before) {
            meta_op_alter_configs(&x->srv->op, x->now, meta__ptr(t->name), meta__len(t->name), kv,
                                  (size_t)nc);
            meta__journal_op(x->srv);
        }
        if (o->error_code != 0) {
            o->error_message = meta__kstr(kp_error_name(o->error_code));
        }
    }
    return meta__encode(x, &rs, body);
}

/* ---- commit ---- */

static int meta__commit(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_commit_request *rq = x->body;
    struct meta_state *s = &x->srv->state;
    int32_t np = rq->partitions_count > 0 ? rq->partitions_count : 0;
    struct meta_commit c = {
        .object_key = meta__ptr(rq->object_key),
        .object_key_len = meta__len(rq->object_key),
        .object_size = rq->object_size,
        .object_created_ms = rq->object_created_ms,
        .fenced_error = rq->fenced_error_code,
        .n_parts = (uint32_t)np,
    };
    c.parts = kp_arena_calloc(x->a, (size_t)np + 1, sizeof(*c.parts));
    if (c.parts == NULL) {
        return -ENOMEM;
    }
    size_t total = 0;
    for (int32_t i = 0; i < np; i++) {
        const struct kp_meta_commit_request_meta_commit_partition *p = &rq->partitions[i];
        struct meta_commit_part *cp = &c.parts[i];
        cp->topic_id = p->topic_id;
        cp->topic_name = meta__ptr(p->topic_name);
        cp->topic_name_len = meta__len(p->topic_name);
        cp->partition = p->partition_index;
        cp->chunk_off = p->chunk_offset;
        cp->chunk_len = p->chunk_length;
        cp->n_ranges = p->ranges_count > 0 ? (uint32_t)p->ranges_count : 0;
        cp->ranges = kp_arena_calloc(x->a, cp->n_ranges + 1, sizeof(*cp->ranges));
        if (cp->ranges == NULL) {
            return -ENOMEM;
        }
        for (uint32_t j = 0; j < cp->n_ranges; j++) {
            const struct kp_meta_commit_request_meta_commit_range *g = &p->ranges[j];
            struct meta_commit_range *cr = &cp->ranges[j];
            cr->producer_id = g->producer_id;
            cr->epoch = g->producer_epoch;
            cr->base_seq = g->base_sequence;
            cr->record_count = g->record_count;
            cr->max_ts = g->max_timestamp;
            cr->raw_off = (uint32_t)g->raw_offset;
            cr->raw_len = (uint32_t)g->raw_length;
            if (g->raw_offset < 0 || g->raw_length < 0) {
                cr->record_count = 0; /* refused as malformed below */
            }
        }
        total += cp->n_ranges;
    }
    struct meta_part_result *pr = kp_arena_calloc(x->a, (size_t)np + 1, sizeof(*pr));
    struct meta_range_result *rr = kp_arena_calloc(x->a, total + 1, sizeof(*rr));
    if (pr == NULL || rr == NULL) {
        return -ENOMEM;
    }
    /* A commit the state will take is journaled before it is applied: the writer thread
     * writes and fdatasyncs the record while this thread applies it and encodes the answer
     * (replay applies the same record to the same state, with the same outcome). At 1,000
     * partitions per commit that is about two thirds of the loop's work per commit. */
    int16_t refused = meta_state_commit_check(s, x->now, &c);
    if (refused == 0) {
        meta_op_commit(&x->srv->op, x->now, &c);
        meta__journal_op(x->srv);
    }
    int16_t err = meta_state_commit_checked(s, refused, &c, pr, rr);
    if (refused == 0) {
        for (int32_t i = 0; i < np; i++) {
            if (pr[i].error == 0) {
                struct meta_topic *t = meta_state_topic_by_id(s, &pr[i].topic_id);
                if (t != NULL) {
                    meta__notice(x->srv, &t->id, c.parts[i].partition,
                                 t->parts[c.parts[i].partition].gid);
                }
            }
        }
    }
    struct kp_meta_commit_response rs;
    kp_meta_commit_response_init(&rs);
    rs.error_code = err;
    if (err != 0) {
        rs.error_message =
            meta__kstr(err == KP_ERROR_REQUEST_TIMED_OUT ? "object older than the commit deadline"
                                                         : kp_error_name(err));
    }
    rs.partitions = kp_arena_calloc(x->a, (size_t)np + 1, sizeof(*rs.partitions));
    if (rs.partitions == NULL) {
        return -ENOMEM;
    }
    rs.partitions_count = np;
    size_t k = 0;
    for (int32_t i = 0; i < np; i++) {
        struct kp_meta_commit_response_meta_commit_partition_result *o = &rs.partitions[i];
        kp_meta_commit_response_meta_commit_partition_result_init(o);
        o->topic_id = meta__uuid_is_zero(&pr[i].topic_id) ? c.parts[i].topic_id : pr[i].topic_id;
        o->partition_index = c.parts[i].partition;
        o->error_code = pr[i].error;
        o->base_offset = pr[i].base_offset;
        o->high_watermark = pr[i].hwm;
        o->log_start_offset = pr[i].log_start;
        o->ranges = kp_arena_calloc(x->a, c.parts[i].n_ranges + 1, sizeof(*o->ranges));
        if (o->ranges == NULL) {
            return -ENOMEM;
        }
        o->ranges_count = (int32_t)c.parts[i].n_ranges;
        for (uint32_t j = 0; j < c.parts[i].n_ranges; j++, k++) {
            kp_meta_commit_response_meta_commit_range_result_init(&o->ranges[j]);
            o->ranges[j].error_code = rr[k].error;
            o->ranges[j].base_offset = rr[k].base_offset;
            o->ranges[j].duplicate = rr[k].duplicate;
        }
    }
    return meta__encode(x, &rs, body);
}

/* ---- queries ---- */

static int meta__lookup(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_lookup_request *rq = x->body;
    const struct meta_state *s = &x->srv->state;
    struct kp_meta_lookup_response rs;
    kp_meta_lookup_response_init(&rs);
    int32_t n = rq->partitions_count > 0 ? rq->partitions_count : 0;
    rs.partitions = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.partitions));
    if (rs.partitions == NULL) {
        return -ENOMEM;
    }
    rs.partitions_count = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kp_meta_lookup_request_meta_lookup_partition *q = &rq->partitions[i];
        struct kp_meta_lookup_response_meta_lookup_partition_result *o = &rs.partitions[i];
        kp_meta_lookup_response_meta_lookup_partition_result_init(o);
        o->topic_id = q->topic_id;
        o->partition_index = q->partition_index;
        const struct meta_partition *p = meta_state_partition(s, &q->topic_id, q->partition_index);
        if (p == NULL) {
            o->error_code = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            continue;
        }
        o->log_start_offset = p->log_start;
        o->high_watermark = p->hwm;
        if (q->offset == p->hwm) {
            continue; /* at the end: nothing yet (the caller long-polls via Watch) */
        }
        int64_t e = meta_partition_find_offset(p, q->offset);
        if (e < 0) {
            o->error_code = KP_ERROR_OFFSET_OUT_OF_RANGE;
            continue;
        }
        uint32_t cnt = 0;
        int64_t bytes = 0;
        uint32_t first = (uint32_t)e;
        while (first + cnt < p->n_ext && cnt < META_LOOKUP_MAX_EXTENTS &&
               (cnt == 0 || bytes + p->ext[first + cnt].raw_len <= (int64_t)q->max_bytes)) {
            bytes += p->ext[first + cnt].raw_len;
            cnt++;
        }
        o->extents = kp_arena_calloc(x->a, cnt, sizeof(*o->extents));
        if (o->extents == NULL) {
            return -ENOMEM;
        }
        o->extents_count = (int32_t)cnt;
        for (uint32_t k = 0; k < cnt; k++) {
            const struct meta_extent *ex = &p->ext[first + k];
            struct kp_meta_lookup_response_meta_lookup_extent *d = &o->extents[k];
            kp_meta_lookup_response_meta_lookup_extent_init(d);
            d->base_offset = ex->base_offset;
            d->last_offset = ex->base_offset + ex->record_count - 1;
            d->object_key = meta__kstr(s->objects[ex->object].key);
            d->chunk_offset = (int64_t)ex->chunk_off;
            d->chunk_length = (int32_t)ex->chunk_len;
            d->raw_offset = (int32_t)ex->raw_off;
            d->raw_length = (int32_t)ex->raw_len;
            d->max_timestamp = ex->max_ts;
        }
    }
    return meta__encode(x, &rs, body);
}

static int meta__list_offsets(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_list_offsets_request *rq = x->body;
    const struct meta_state *s = &x->srv->state;
    struct kp_meta_list_offsets_response rs;
    kp_meta_list_offsets_response_init(&rs);
    int32_t n = rq->partitions_count > 0 ? rq->partitions_count : 0;
    rs.partitions = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.partitions));
    if (rs.partitions == NULL) {
        return -ENOMEM;
    }
    rs.partitions_count = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kp_meta_list_offsets_request_meta_list_offsets_partition *q =
            &rq->partitions[i];
        struct kp_meta_list_offsets_response_meta_list_offsets_partition_result *o =
            &rs.partitions[i];
        kp_meta_list_offsets_response_meta_list_offsets_partition_result_init(o);
        o->topic_id = q->topic_id;
        o->partition_index = q->partition_index;
        o->offset = -1;
        o->timestamp = -1;
        o->last_offset = -1;
        const struct meta_partition *p = meta_state_partition(s, &q->topic_id, q->partition_index);
        if (p == NULL) {
            o->error_code = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            continue;
        }
        int64_t e = -1;
        if (q->timestamp == -1 || q->timestamp == -5) {
            o->offset = p->hwm;
        } else if (q->timestamp == -2 || q->timestamp == -4) {
            o->offset = p->log_start;
        } else if (q->timestamp == -3) {
            e = p->max_ts_ext;
        } else if (q->timestamp >= 0) {
            e = meta_partition_find_timestamp(p, q->timestamp);
        } else {
            o->error_code = KP_ERROR_INVALID_REQUEST;
        }
        if (e >= 0) {
            const struct meta_extent *ex = &p->ext[e];
            o->offset = ex->base_offset;
            o->timestamp = ex->max_ts;
            o->last_offset = ex->base_offset + ex->record_count - 1;
        }
    }
    return meta__encode(x, &rs, body);
}

/* ---- producers, watches, agents, leases ---- */

static int meta__init_producer_id(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_init_producer_id_request *rq = x->body;
    struct kp_meta_init_producer_id_response rs;
    kp_meta_init_producer_id_response_init(&rs);
    uint64_t before = x->srv->state.mutations;
    rs.error_code = meta_state_init_producer(
        &x->srv->state, x->now, meta__ptr(rq->transactional_id), meta__len(rq->transactional_id),
        rq->producer_id, rq->producer_epoch, &rs.producer_id, &rs.producer_epoch);
    if (x->srv->state.mutations != before) {
        meta_op_init_producer(&x->srv->op, x->now, meta__ptr(rq->transactional_id),
                              meta__len(rq->transactional_id), rq->producer_id, rq->producer_epoch);
        meta__journal_op(x->srv);
    }
    return meta__encode(x, &rs, body);
}

static int meta__watch_api(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_watch_request *rq = x->body;
    const struct meta_state *s = &x->srv->state;
    for (int32_t i = 0; i < rq->remove_count; i++) {
        const struct meta_partition *p =
            meta_state_partition(s, &rq->remove[i].topic_id, rq->remove[i].partition_index);
        if (p != NULL) {
            meta__unwatch(x->srv, x->conn, p->gid);
        }
    }
    struct kp_meta_watch_response rs;
    kp_meta_watch_response_init(&rs);
    int32_t n = rq->add_count > 0 ? rq->add_count : 0;
    rs.partitions = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.partitions));
    if (rs.partitions == NULL) {
        return -ENOMEM;
    }
    rs.partitions_count = n;
    for (int32_t i = 0; i < n; i++) {
        struct kp_meta_watch_response_meta_watch_partition_result *o = &rs.partitions[i];
        kp_meta_watch_response_meta_watch_partition_result_init(o);
        o->topic_id = rq->add[i].topic_id;
        o->partition_index = rq->add[i].partition_index;
        const struct meta_partition *p =
            meta_state_partition(s, &rq->add[i].topic_id, rq->add[i].partition_index);
        if (p == NULL) {
            o->error_code = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            o->high_watermark = -1;
            o->log_start_offset = -1;
            continue;
        }
        meta__watch(x->srv, x->conn, p->gid);
        o->high_watermark = p->hwm;
        o->log_start_offset = p->log_start;
    }
    return meta__encode(x, &rs, body);
}

int meta__encode_notify(struct meta_server *srv, const struct meta__notice *n, size_t count,
                        struct meta__buf *body)
{
    struct kp_arena *a = &srv->arena;
    struct kp_meta_notify_response rs;
    kp_meta_notify_response_init(&rs);
    rs.partitions = kp_arena_calloc(a, count, sizeof(*rs.partitions));
    if (rs.partitions == NULL) {
        return -ENOMEM;
    }
    rs.partitions_count = 0;
    for (size_t i = 0; i < count; i++) {
        const struct meta_partition *p =
            meta_state_partition(&srv->state, &n[i].topic_id, n[i].partition);
        if (p == NULL) {
            continue; /* deleted since */
        }
        struct kp_meta_notify_response_meta_notify_partition *o =
            &rs.partitions[rs.partitions_count++];
        kp_meta_notify_response_meta_notify_partition_init(o);
        o->topic_id = n[i].topic_id;
        o->partition_index = n[i].partition;
        /* The current values: at least as new as the durable commit that caused the push, and
         * every commit in between is durable once its own push arrives. */
        o->high_watermark = p->hwm;
        o->log_start_offset = p->log_start;
    }
    struct meta__request req = {.api_key = META_API_NOTIFY, .api_version = 0};
    struct meta__ctx x = {.srv = srv, .req = &req, .a = a};
    int rc = meta__encode(&x, &rs, body);
    kp_arena_reset(a);
    return rc;
}

static int meta__register_agent(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_register_agent_request *rq = x->body;
    struct kp_meta_register_agent_response rs;
    kp_meta_register_agent_response_init(&rs);
    uint64_t before = x->srv->state.mutations;
    rs.error_code = meta_state_register_agent(
        &x->srv->state, x->now, rq->agent_id, meta__ptr(rq->host), meta__len(rq->host), rq->port,
        meta__ptr(rq->zone), meta__len(rq->zone), rq->session_timeout_ms, &rs.agent_id,
        &rs.agent_epoch);
    if (x->srv->state.mutations != before) {
        meta_op_register_agent(&x->srv->op, x->now, rq->agent_id, meta__ptr(rq->host),
                               meta__len(rq->host), rq->port, meta__ptr(rq->zone),
                               meta__len(rq->zone), rq->session_timeout_ms);
        meta__journal_op(x->srv);
    }
    return meta__encode(x, &rs, body);
}

static int meta__heartbeat(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_agent_heartbeat_request *rq = x->body;
    struct meta_state *s = &x->srv->state;
    struct kp_meta_agent_heartbeat_response rs;
    kp_meta_agent_heartbeat_response_init(&rs);
    uint64_t before = s->mutations;
    rs.error_code = meta_state_heartbeat(s, x->now, rq->agent_id, rq->agent_epoch);
    if (s->mutations != before) {
        meta_op_heartbeat(&x->srv->op, x->now, rq->agent_id, rq->agent_epoch);
        meta__journal_op(x->srv);
    }
    rs.agents = kp_arena_calloc(x->a, s->n_agents + 1, sizeof(*rs.agents));
    if (rs.agents == NULL) {
        return -ENOMEM;
    }
    rs.agents_count = 0;
    for (uint32_t i = 0; i < s->n_agents; i++) {
        const struct meta_agent *ag = &s->agents[i];
        if (!meta_agent_live(ag, x->now)) {
            continue;
        }
        struct kp_meta_agent_heartbeat_response_meta_live_agent *o = &rs.agents[rs.agents_count++];
        kp_meta_agent_heartbeat_response_meta_live_agent_init(o);
        o->agent_id = ag->id;
        o->host = meta__kstr(ag->host);
        o->port = ag->port;
        o->zone = meta__kstr(ag->zone);
    }
    return meta__encode(x, &rs, body);
}

static int meta__acquire_lease(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_acquire_lease_request *rq = x->body;
    struct kp_meta_acquire_lease_response rs;
    kp_meta_acquire_lease_response_init(&rs);
    uint64_t before = x->srv->state.mutations;
    rs.error_code = meta_state_acquire_lease(&x->srv->state, x->now, meta__ptr(rq->name),
                                             meta__len(rq->name), rq->holder, rq->duration_ms,
                                             &rs.holder, &rs.lease_epoch, &rs.expires_ms);
    if (x->srv->state.mutations != before) {
        meta_op_acquire_lease(&x->srv->op, x->now, meta__ptr(rq->name), meta__len(rq->name),
                              rq->holder, rq->duration_ms);
        meta__journal_op(x->srv);
    }
    return meta__encode(x, &rs, body);
}

static int meta__release_lease(struct meta__ctx *x, struct meta__buf *body)
{
    const struct kp_meta_release_lease_request *rq = x->body;
    struct kp_meta_release_lease_response rs;
    kp_meta_release_lease_response_init(&rs);
    uint64_t before = x->srv->state.mutations;
    rs.error_code = meta_state_release_lease(&x->srv->state, meta__ptr(rq->name),
                                             meta__len(rq->name), rq->holder, rq->lease_epoch);
    if (x->srv->state.mutations != before) {
        meta_op_release_lease(&x->srv->op, x->now, meta__ptr(rq->name), meta__len(rq->name),
                              rq->holder, rq->lease_epoch);
        meta__journal_op(x->srv);
    }
    return meta__encode(x, &rs, body);
}

/* ---- consumer groups (group_rpc.c) ---- */

static int meta__group(struct meta__ctx *x, struct meta__buf *body)
{
    struct kp_meta_group_response rs;
    kp_meta_group_response_init(&rs);
    int rc = meta__group_call(x->srv, x->conn, x->body, x->now, x->a, &rs);
    return rc != 0 ? rc : meta__encode(x, &rs, body);
}

/* ---- dispatch ---- */

struct meta__handler {
    int16_t key;                                            /* api key */
    int (*fn)(struct meta__ctx *x, struct meta__buf *body); /* handler */
};

static const struct meta__handler meta__handlers[] = {
    {META_API_HELLO, meta__hello},
    {META_API_CREATE_TOPICS, meta__create_topics},
    {META_API_DELETE_TOPICS, meta__delete_topics},
    {META_API_CREATE_PARTITIONS, meta__create_partitions},
    {META_API_DESCRIBE_TOPICS, meta__describe_topics},
    {META_API_ALTER_TOPIC_CONFIGS, meta__alter_configs},
    {META_API_COMMIT, meta__commit},
    {META_API_LOOKUP, meta__lookup},
    {META_API_LIST_OFFSETS, meta__list_offsets},
    {META_API_INIT_PRODUCER_ID, meta__init_producer_id},
    {META_API_WATCH, meta__watch_api},
    {META_API_REGISTER_AGENT, meta__register_agent},
    {META_API_AGENT_HEARTBEAT, meta__heartbeat},
    {META_API_ACQUIRE_LEASE, meta__acquire_lease},
    {META_API_RELEASE_LEASE, meta__release_lease},
    {META_API_GROUP, meta__group},
};

int meta__dispatch(struct meta_server *srv, struct meta__conn *c, const struct meta__request *req,
                   struct meta__buf *body)
{
    const struct kp_api *api = kp_rpc_api_find(req->api_key);
    if (api == NULL || req->api_version < api->min_version || req->api_version > api->max_version) {
        if (req->api_key == META_API_HELLO) {
            /* Like ApiVersions: answer a Hello of any version with a v0 body. */
            struct meta__request v0 = *req;
            v0.api_version = 0;
            v0.body_len = 0;
            struct kp_meta_hello_response rs;
            kp_meta_hello_response_init(&rs);
            rs.error_code = KP_ERROR_UNSUPPORTED_VERSION;
            struct meta__ctx x = {.srv = srv, .conn = c, .req = &v0, .a = &srv->arena};
            return meta__encode(&x, &rs, body);
        }
        return -EPROTO;
    }
    for (size_t i = 0; i < sizeof(meta__handlers) / sizeof(meta__handlers[0]); i++) {
        if (meta__handlers[i].key != req->api_key) {
            continue;
        }
        /* Every handler gets its request decoded here, with the api's generated ops. */
        void *rq = kp_arena_alloc(&srv->arena, api->request->struct_size);
        if (rq == NULL) {
            return -ENOMEM;
        }
        api->request->init(rq);
        struct kp_reader r;
        kp_reader_init(&r, req->body, req->body_len);
        if (api->request->decode(&r, req->api_version, &srv->arena, rq) != 0) {
            return -EINVAL;
        }
        struct meta__ctx x = {
            .srv = srv, .conn = c, .req = req, .a = &srv->arena, .body = rq, .now = meta__now_ms()};
        return meta__handlers[i].fn(&x, body);
    }
    return -EPROTO;
}

int meta__encode_error(int16_t api_key, int16_t api_version, int16_t error, struct meta__buf *body)
{
    struct meta__request req = {.api_key = api_key, .api_version = api_version};
    struct meta__ctx x = {.req = &req};
    const struct kp_api *api = kp_rpc_api_find(api_key);
    if (api == NULL || api_version < api->min_version || api_version > api->max_version) {
        return -ENOTSUP;
    }
    switch (api_key) {
    case META_API_COMMIT: {
        struct kp_meta_commit_response rs;
        kp_meta_commit_response_init(&rs);
        rs.error_code = error;
        rs.error_message = meta__kstr("metadata journal failed; nothing was committed");
        return meta__encode(&x, &rs, body);
    }
    case META_API_INIT_PRODUCER_ID: {
        struct kp_meta_init_producer_id_response rs;
        kp_meta_init_producer_id_response_init(&rs);
        rs.error_code = error;
        return meta__encode(&x, &rs, body);
    }
    case META_API_REGISTER_AGENT: {
        struct kp_meta_register_agent_response rs;
        kp_meta_register_agent_response_init(&rs);
        rs.error_code = error;
        return meta__encode(&x, &rs, body);
    }
    case META_API_AGENT_HEARTBEAT: {
        struct kp_meta_agent_heartbeat_response rs;
        kp_meta_agent_heartbeat_response_init(&rs);
        rs.error_code = error;
        return meta__encode(&x, &rs, body);
    }
    case META_API_ACQUIRE_LEASE: {
        struct kp_meta_acquire_lease_response rs;
        kp_meta_acquire_lease_response_init(&rs);
        rs.error_code = error;
        rs.holder = -1;
        return meta__encode(&x, &rs, body);
    }
    case META_API_RELEASE_LEASE: {
        struct kp_meta_release_lease_response rs;
        kp_meta_release_lease_response_init(&rs);
        rs.error_code = error;
        return meta__encode(&x, &rs, body);
    }
    case META_API_HELLO: {
        struct kp_meta_hello_response rs;
        kp_meta_hello_response_init(&rs);
        rs.error_code = error;
        return meta__encode(&x, &rs, body);
    }
    case META_API_GROUP: {
        struct kp_meta_group_response rs;
        kp_meta_group_response_init(&rs);
        rs.error_code = error;
        return meta__encode(&x, &rs, body);
    }
    default:
        return -ENOTSUP;
    }
}
