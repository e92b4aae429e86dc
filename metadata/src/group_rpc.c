/*
 * The MetaGroup RPC (api 1020): agents forward the Kafka group apis (JoinGroup, SyncGroup,
 * Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups,
 * OffsetDelete) as their request body; this file decodes the body with the generated Kafka
 * codec at the client's version, runs the coordinator (groups.c), journals what must persist,
 * and encodes the Kafka response body at the same version.
 *
 * A JoinGroup or SyncGroup that must wait is answered at once with Parked = true, so the agent's
 * connection keeps flowing in order; its Kafka answer is pushed later (correlation id -1,
 * MetaNotifyResponse.GroupReplies with the request's ticket) once every journal record it depends
 * on is durable. A 100 ms timer drives the coordinator's clock (meta_groups_tick). See
 * docs/groups.md.
 */
#include "server_int.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kp_messages.h"
#include "kp_rpc.h"
#include "runnel/common/log.h"
#include "runnel/metadata/groups.h"
#include "runnel/protocol/errors.h"

#define META_API_NOTIFY 1011
#define META_GROUP_TICK_MS 100

enum {
    K_OFFSET_COMMIT = 8,
    K_OFFSET_FETCH = 9,
    K_JOIN_GROUP = 11,
    K_HEARTBEAT = 12,
    K_LEAVE_GROUP = 13,
    K_SYNC_GROUP = 14,
    K_DESCRIBE_GROUPS = 15,
    K_LIST_GROUPS = 16,
    K_DELETE_GROUPS = 42,
    K_OFFSET_DELETE = 47,
};

/* Versions served (the agent advertises the same ranges). */
static const struct {
    int16_t key;
    int16_t min;
    int16_t max;
} meta__gapis[] = {
    {K_OFFSET_COMMIT, 0, 8},   {K_OFFSET_FETCH, 0, 8}, {K_JOIN_GROUP, 0, 9},
    {K_HEARTBEAT, 0, 4},       {K_LEAVE_GROUP, 0, 5},  {K_SYNC_GROUP, 0, 5},
    {K_DESCRIBE_GROUPS, 0, 5}, {K_LIST_GROUPS, 0, 5},  {K_DELETE_GROUPS, 0, 2},
    {K_OFFSET_DELETE, 0, 0},
};

/* Encodes a Kafka response struct of `key` at `version` into `out` (appended). */
static int meta__kenc(int16_t key, int16_t version, const void *msg, struct meta__buf *out)
{
    const struct kp_api *api = kp_api_find(key);
    size_t size = 0;
    if (api == NULL || api->response->size(msg, version, &size) != 0) {
        return -EINVAL;
    }
    meta__buf_reserve(out, size);
    struct kp_writer w;
    kp_writer_init(&w, out->p + out->len, size);
    if (api->response->encode(msg, version, &w) != 0 || w.err != 0) {
        return -EINVAL;
    }
    out->len += kp_writer_len(&w);
    return 0;
}

static struct kp_str meta__ks(const char *s)
{
    return kp_str_from(s);
}

static struct kp_str meta__ks_or_empty(const char *s)
{
    return kp_str_from(s != NULL ? s : "");
}

/* ---- answers of JoinGroup / SyncGroup (immediate or pushed) ---- */

static int meta__encode_greply(struct meta_server *srv, const struct meta_greply *r,
                               struct meta__buf *out)
{
    struct kp_arena *a = &srv->garena;
    int rc;
    if (r->api_key == K_JOIN_GROUP) {
        struct kp_join_group_response rs;
        kp_join_group_response_init(&rs);
        rs.error_code = r->error;
        rs.generation_id = r->generation;
        rs.protocol_type = r->protocol_type != NULL ? meta__ks(r->protocol_type) : KP_STR_NULL;
        /* Before v7 the protocol name is not nullable. */
        rs.protocol_name = r->protocol != NULL ? meta__ks(r->protocol)
                                               : (r->to.version >= 7 ? KP_STR_NULL : meta__ks(""));
        rs.leader = meta__ks_or_empty(r->leader);
        rs.member_id = meta__ks_or_empty(r->member_id);
        rs.skip_assignment = r->skip_assignment;
        rs.members_count = 0;
        const struct meta_group *g = r->group;
        if (g != NULL && g->n_members > 0) {
            rs.members = kp_arena_calloc(a, g->n_members, sizeof(*rs.members));
            if (rs.members == NULL) {
                return -ENOMEM;
            }
            for (uint32_t i = 0; i < g->n_members; i++) {
                const struct meta_gmember *m = &g->members[i];
                struct kp_join_group_response_join_group_response_member *o =
                    &rs.members[rs.members_count++];
                kp_join_group_response_join_group_response_member_init(o);
                o->member_id = meta__ks(m->id);
                o->group_instance_id =
                    m->instance_id != NULL ? meta__ks(m->instance_id) : KP_STR_NULL;
                o->metadata = (struct kp_bytes){NULL, 0};
                for (uint32_t k = 0; k < m->n_protos; k++) {
                    if (g->protocol != NULL && strcmp(m->protos[k].name, g->protocol) == 0) {
                        o->metadata =
                            (struct kp_bytes){m->protos[k].meta, (int32_t)m->protos[k].meta_len};
                    }
                }
            }
        }
        rc = meta__kenc(K_JOIN_GROUP, r->to.version, &rs, out);
    } else {
        struct kp_sync_group_response rs;
        kp_sync_group_response_init(&rs);
        rs.error_code = r->error;
        rs.protocol_type = r->protocol_type != NULL ? meta__ks(r->protocol_type) : KP_STR_NULL;
        rs.protocol_name = r->protocol != NULL ? meta__ks(r->protocol) : KP_STR_NULL;
        rs.assignment = (struct kp_bytes){r->assignment, (int32_t)r->assignment_len};
        rc = meta__kenc(K_SYNC_GROUP, r->to.version, &rs, out);
    }
    kp_arena_reset(a);
    return rc;
}

static void meta__gemit_cb(void *arg, const struct meta_greply *r)
{
    struct meta_server *srv = arg;
    if (srv->gcur_active && r->to.conn == srv->gcur_conn && r->to.ticket == srv->gcur_ticket) {
        srv->gcur_body.len = 0;
        if (meta__encode_greply(srv, r, &srv->gcur_body) == 0) {
            srv->gcur_answered = true;
        }
        return;
    }
    if (srv->n_gpush == srv->cap_gpush) {
        srv->cap_gpush = srv->cap_gpush ? srv->cap_gpush * 2 : 16;
        srv->gpush = kp_xrealloc(srv->gpush, sizeof(*srv->gpush) * srv->cap_gpush);
    }
    struct meta__gpush *p = &srv->gpush[srv->n_gpush];
    memset(p, 0, sizeof(*p));
    if (meta__encode_greply(srv, r, &p->body) != 0) {
        meta__buf_free(&p->body);
        rn_log(RN_LOG_ERROR, "group_reply_encode_failed", "api=%d version=%d", r->api_key,
               r->to.version);
        return;
    }
    p->conn = r->to.conn;
    p->ticket = r->to.ticket;
    p->sealed = false; /* seq is set once the call that produced it has journaled everything */
    srv->n_gpush++;
}

/* Gives the pushes produced by the last call the journal position they depend on. */
static void meta__gpush_seal(struct meta_server *srv)
{
    uint64_t last = srv->failed ? 0 : meta_journal_last_seq(srv->journal);
    for (size_t i = 0; i < srv->n_gpush; i++) {
        if (!srv->gpush[i].sealed) {
            srv->gpush[i].seq = last;
            srv->gpush[i].sealed = true;
        }
    }
}

static struct meta__conn *meta__conn_by_serial(struct meta_server *srv, uint64_t serial)
{
    for (struct meta__conn *c = srv->conns; c != NULL; c = c->next) {
        if (c->serial == serial) {
            return c;
        }
    }
    return NULL;
}

void meta__groups_flush(struct meta_server *srv)
{
    uint64_t durable = meta_journal_durable_seq(srv->journal);
    size_t kept = 0;
    for (size_t i = 0; i < srv->n_gpush; i++) {
        struct meta__gpush *p = &srv->gpush[i];
        if (!p->sealed || (!srv->failed && p->seq > durable)) {
            srv->gpush[kept++] = *p;
            continue;
        }
        struct meta__conn *c = meta__conn_by_serial(srv, p->conn);
        if (c != NULL && !c->closing && !srv->failed) {
            struct kp_meta_notify_response rs;
            kp_meta_notify_response_init(&rs);
            struct kp_meta_notify_response_meta_group_reply rep;
            kp_meta_notify_response_meta_group_reply_init(&rep);
            rep.ticket = p->ticket;
            rep.body = (struct kp_bytes){p->body.p, (int32_t)p->body.len};
            rs.group_replies = &rep;
            rs.group_replies_count = 1;
            const struct kp_api *api = kp_rpc_api_find(META_API_NOTIFY);
            size_t size = 0;
            if (api != NULL && api->response->size(&rs, 0, &size) == 0) {
                struct meta__buf f = {0};
                meta__frame_begin(&f, META_PUSH_CORRELATION_ID);
                meta__buf_reserve(&f, size);
                struct kp_writer w;
                kp_writer_init(&w, f.p + f.len, size);
                if (api->response->encode(&rs, 0, &w) == 0 && w.err == 0) {
                    f.len += kp_writer_len(&w);
                    meta__frame_end(&f);
                    meta__send(c, &f);
                } else {
                    meta__buf_free(&f);
                }
            }
        }
        /* A failed journal never acknowledges: the answer is dropped, and the client's own
         * request timeout makes it look the coordinator up again (docs/groups.md). */
        meta__buf_free(&p->body);
    }
    srv->n_gpush = kept;
}

/* Journals the expiry of a group's offsets (and of the group) as ordinary deletions, so replay
 * needs no clock. */
static void meta__expire_cb(void *arg, const struct meta_group *g, const struct kp_str *topics,
                            const int32_t *partitions, uint32_t n, bool delete_group)
{
    struct meta_server *srv = arg;
    struct meta_groups *gs = srv->state.groups;
    int64_t now = meta__now_ms();
    char *id = kp_xstrdup(g->id); /* g goes away with the deletion */
    struct kp_str gid = kp_str_from(id);
    if (n > 0) {
        meta_op_group_offset_delete(&srv->op, now, gid, topics, partitions, n);
        meta_groups_apply_offset_delete(gs, gid, topics, partitions, n);
        meta__journal_op(srv);
    }
    if (delete_group) {
        meta_op_group_delete(&srv->op, now, gid);
        meta_groups_apply_delete(gs, gid);
        meta__journal_op(srv);
    }
    rn_log(RN_LOG_INFO, "group_offsets_expired", "group=\"%s\" offsets=%u group_deleted=%d", id, n,
           delete_group);
    free(id);
}

static void meta__on_group_timer(uv_timer_t *t)
{
    struct meta_server *srv = t->data;
    if (srv->state.groups == NULL || srv->failed) {
        return;
    }
    int64_t now = meta__now_ms();
    meta_groups_tick(srv->state.groups, now);
    if (now - srv->gexpired_ms >= 1000) {
        srv->gexpired_ms = now;
        meta_groups_expire(srv->state.groups, now, srv->opt.offsets_retention_ms, meta__expire_cb,
                           srv);
    }
    meta__gpush_seal(srv);
    meta__groups_flush(srv);
}

void meta__groups_open(struct meta_server *srv)
{
    struct meta_groups *gs = meta_groups_of(&srv->state);
    gs->emit = meta__gemit_cb;
    gs->emit_arg = srv;
    uint64_t seed = 0;
    if (uv_random(NULL, NULL, &seed, sizeof(seed), 0, NULL) != 0) {
        seed = meta__mono_ns();
    }
    gs->id_seed = seed;
    gs->initial_delay_ms = srv->opt.group_initial_delay_ms >= 0 ? srv->opt.group_initial_delay_ms
                                                                : META_GROUP_INITIAL_DELAY_MS;
    kp_arena_init(&srv->garena, 64u << 20);
    uv_timer_init(srv->loop, &srv->group_timer);
    srv->group_timer.data = srv;
}

void meta__groups_start(struct meta_server *srv)
{
    uv_timer_start(&srv->group_timer, meta__on_group_timer, META_GROUP_TICK_MS, META_GROUP_TICK_MS);
}

void meta__groups_conn_closed(struct meta_server *srv, struct meta__conn *c)
{
    if (srv->state.groups != NULL) {
        meta_groups_conn_closed(srv->state.groups, c->serial);
    }
}

void meta__groups_free(struct meta_server *srv)
{
    for (size_t i = 0; i < srv->n_gpush; i++) {
        meta__buf_free(&srv->gpush[i].body);
    }
    free(srv->gpush);
    srv->gpush = NULL;
    srv->n_gpush = 0;
    meta__buf_free(&srv->gcur_body);
    kp_arena_free(&srv->garena);
}

/* ---- the apis ---- */

struct meta__gctx {
    struct meta_server *srv;
    struct meta_groups *gs;
    const struct kp_meta_group_request *rq;
    struct kp_arena *a;
    int64_t now;
    struct meta__buf *out; /* the Kafka response body */
};

static struct meta_gwait meta__gwait_of(const struct meta__gctx *x)
{
    return (struct meta_gwait){.conn = x->srv->gcur_conn,
                               .ticket = x->rq->ticket,
                               .version = x->rq->api_version,
                               .active = true};
}

static int meta__join(struct meta__gctx *x, const struct kp_join_group_request *q)
{
    int32_t n = q->protocols_count > 0 ? q->protocols_count : 0;
    struct kp_str *names = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*names));
    struct kp_bytes *metas = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*metas));
    if (names == NULL || metas == NULL) {
        return -ENOMEM;
    }
    for (int32_t i = 0; i < n; i++) {
        names[i] = q->protocols[i].name;
        metas[i] = q->protocols[i].metadata;
    }
    int16_t v = x->rq->api_version;
    struct meta_gjoin j = {
        .group_id = q->group_id,
        .member_id = q->member_id,
        .instance_id = v >= 5 ? q->group_instance_id : KP_STR_NULL,
        .client_id = x->rq->client_id,
        .client_host = x->rq->client_host,
        .protocol_type = q->protocol_type,
        .session_ms = q->session_timeout_ms,
        .rebalance_ms = v >= 1 ? q->rebalance_timeout_ms : q->session_timeout_ms,
        .require_member_id = v >= 4,
        .n_protos = (uint32_t)n,
        .proto_names = names,
        .proto_meta = metas,
    };
    meta_group_join(x->gs, x->now, &j, meta__gwait_of(x));
    return 0;
}

static int meta__sync(struct meta__gctx *x, const struct kp_sync_group_request *q)
{
    int32_t n = q->assignments_count > 0 ? q->assignments_count : 0;
    struct meta_gsync_assign *as = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*as));
    if (as == NULL) {
        return -ENOMEM;
    }
    for (int32_t i = 0; i < n; i++) {
        as[i].member_id = q->assignments[i].member_id;
        as[i].assignment = q->assignments[i].assignment;
    }
    int16_t v = x->rq->api_version;
    bool stored = false;
    meta_group_sync(
        x->gs, x->now, q->group_id, q->generation_id, q->member_id,
        v >= 3 ? q->group_instance_id : KP_STR_NULL, v >= 5 ? q->protocol_type : KP_STR_NULL,
        v >= 5 ? q->protocol_name : KP_STR_NULL, as, (uint32_t)n, meta__gwait_of(x), &stored);
    if (stored) {
        const struct meta_group *g =
            meta_group_find(x->gs, q->group_id.ptr, (size_t)q->group_id.len);
        meta_op_group_generation(&x->srv->op, x->now, q->group_id, g->stored_generation,
                                 kp_str_from(g->stored_protocol_type),
                                 kp_str_from(g->stored_protocol), kp_str_from(g->stored_leader));
        meta__journal_op(x->srv);
    }
    return 0;
}

static int meta__heartbeat_k(struct meta__gctx *x, const struct kp_heartbeat_request *q)
{
    struct kp_heartbeat_response rs;
    kp_heartbeat_response_init(&rs);
    rs.error_code =
        meta_group_heartbeat(x->gs, x->now, q->group_id, q->generation_id, q->member_id,
                             x->rq->api_version >= 3 ? q->group_instance_id : KP_STR_NULL);
    return meta__kenc(K_HEARTBEAT, x->rq->api_version, &rs, x->out);
}

static int meta__leave(struct meta__gctx *x, const struct kp_leave_group_request *q)
{
    struct kp_leave_group_response rs;
    kp_leave_group_response_init(&rs);
    int16_t gerr = 0;
    if (x->rq->api_version < 3) {
        rs.error_code =
            meta_group_leave(x->gs, x->now, q->group_id, q->member_id, KP_STR_NULL, &gerr);
        return meta__kenc(K_LEAVE_GROUP, x->rq->api_version, &rs, x->out);
    }
    int32_t n = q->members_count > 0 ? q->members_count : 0;
    rs.members = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.members));
    if (rs.members == NULL) {
        return -ENOMEM;
    }
    rs.members_count = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kp_leave_group_request_member_identity *m = &q->members[i];
        struct kp_leave_group_response_member_response *o = &rs.members[i];
        kp_leave_group_response_member_response_init(o);
        o->member_id = m->member_id;
        o->group_instance_id = m->group_instance_id;
        int16_t ge = 0;
        o->error_code =
            meta_group_leave(x->gs, x->now, q->group_id, m->member_id, m->group_instance_id, &ge);
        if (ge != 0) {
            gerr = ge;
        }
    }
    if (gerr != 0) {
        rs.error_code = gerr;
        rs.members_count = 0;
    }
    return meta__kenc(K_LEAVE_GROUP, x->rq->api_version, &rs, x->out);
}

static bool meta__partition_exists(const struct meta_state *s, struct kp_str topic, int32_t p)
{
    if (topic.len <= 0) {
        return false;
    }
    const struct meta_topic *t = meta_state_topic_by_name(s, topic.ptr, (size_t)topic.len);
    return t != NULL && p >= 0 && (uint32_t)p < t->n_parts;
}

/*
 * The expiry an OffsetCommit asks for, as Kafka keeps it: v2-v4 retention_time_ms (-1: the
 * broker's retention) from now; v1 commit_timestamp (-1: now) plus the broker's retention.
 * 0 when the commit asks for nothing (later versions, or the defaults).
 */
static int64_t
meta__commit_expiry(const struct meta__gctx *x, int16_t v, const struct kp_offset_commit_request *q,
                    const struct kp_offset_commit_request_offset_commit_request_partition *qp)
{
    if (v >= 2 && v <= 4 && q->retention_time_ms >= 0) {
        return x->now + q->retention_time_ms;
    }
    if (v == 1 && qp->commit_timestamp >= 0 && x->srv->opt.offsets_retention_ms > 0) {
        return qp->commit_timestamp + x->srv->opt.offsets_retention_ms;
    }
    return 0;
}

static int meta__offset_commit(struct meta__gctx *x, const struct kp_offset_commit_request *q)
{
    int16_t v = x->rq->api_version;
    struct kp_offset_commit_response rs;
    kp_offset_commit_response_init(&rs);
    int16_t gerr = meta_group_commit_check(
        x->gs, x->now, q->group_id, v >= 1 ? q->generation_id_or_member_epoch : -1,
        v >= 1 ? q->member_id : kp_str_from(""), v >= 7 ? q->group_instance_id : KP_STR_NULL);
    int32_t nt = q->topics_count > 0 ? q->topics_count : 0;
    size_t total = 0;
    for (int32_t t = 0; t < nt; t++) {
        total += q->topics[t].partitions_count > 0 ? (size_t)q->topics[t].partitions_count : 0;
    }
    rs.topics = kp_arena_calloc(x->a, (size_t)nt + 1, sizeof(*rs.topics));
    struct meta_goffset_in *in = kp_arena_calloc(x->a, total + 1, sizeof(*in));
    if (rs.topics == NULL || in == NULL) {
        return -ENOMEM;
    }
    rs.topics_count = nt;
    uint32_t n_in = 0;
    for (int32_t t = 0; t < nt; t++) {
        const struct kp_offset_commit_request_offset_commit_request_topic *qt = &q->topics[t];
        struct kp_offset_commit_response_offset_commit_response_topic *ot = &rs.topics[t];
        kp_offset_commit_response_offset_commit_response_topic_init(ot);
        ot->name = qt->name;
        int32_t np = qt->partitions_count > 0 ? qt->partitions_count : 0;
        ot->partitions = kp_arena_calloc(x->a, (size_t)np + 1, sizeof(*ot->partitions));
        if (ot->partitions == NULL) {
            return -ENOMEM;
        }
        ot->partitions_count = np;
        for (int32_t p = 0; p < np; p++) {
            const struct kp_offset_commit_request_offset_commit_request_partition *qp =
                &qt->partitions[p];
            struct kp_offset_commit_response_offset_commit_response_partition *op =
                &ot->partitions[p];
            kp_offset_commit_response_offset_commit_response_partition_init(op);
            op->partition_index = qp->partition_index;
            if (gerr != 0) {
                op->error_code = gerr;
            } else if (!meta__partition_exists(&x->srv->state, qt->name, qp->partition_index)) {
                op->error_code = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            } else if (qp->committed_metadata.len > META_GROUP_METADATA_MAX) {
                op->error_code = KP_ERROR_OFFSET_METADATA_TOO_LARGE;
            } else {
                struct meta_goffset_in *o = &in[n_in++];
                o->topic = qt->name;
                o->partition = qp->partition_index;
                o->offset = qp->committed_offset;
                o->leader_epoch = v >= 6 ? qp->committed_leader_epoch : -1;
                o->metadata = qp->committed_metadata;
                o->expire_ms = meta__commit_expiry(x, v, q, qp);
            }
        }
    }
    if (n_in > 0) {
        meta_groups_apply_commit(x->gs, x->now, q->group_id, in, n_in);
        meta_op_group_commit(&x->srv->op, x->now, q->group_id, in, n_in);
        meta__journal_op(x->srv);
    }
    return meta__kenc(K_OFFSET_COMMIT, v, &rs, x->out);
}

/* Fills one group's answer of OffsetFetch: `topics` null = every committed offset. The v0-7 and
 * v8+ partition structs have the same fields; the callers copy between them. */
struct meta__fetched {
    struct kp_str topic;
    int32_t partition;
    int64_t offset;
    int32_t epoch;
    struct kp_str metadata;
};

static int meta__fetch_group(struct meta__gctx *x, struct kp_str group, int32_t n_topics,
                             const struct kp_str *topic_names, int32_t *const *parts,
                             const int32_t *n_parts, struct meta__fetched **out, size_t *n_out)
{
    const struct meta_group *g =
        group.len >= 0 ? meta_group_find(x->gs, group.ptr, (size_t)group.len) : NULL;
    size_t cap = 0;
    if (n_topics < 0) {
        cap = g != NULL ? g->n_offsets : 0;
    } else {
        for (int32_t t = 0; t < n_topics; t++) {
            cap += n_parts[t] > 0 ? (size_t)n_parts[t] : 0;
        }
    }
    struct meta__fetched *f = kp_arena_calloc(x->a, cap + 1, sizeof(*f));
    if (f == NULL) {
        return -ENOMEM;
    }
    size_t n = 0;
    if (n_topics < 0) {
        for (uint32_t i = 0; g != NULL && i < g->n_offsets; i++) {
            const struct meta_goffset *o = &g->offsets[i];
            f[n++] = (struct meta__fetched){kp_str_from(o->topic), o->partition, o->offset,
                                            o->leader_epoch, kp_str_from(o->metadata)};
        }
    } else {
        for (int32_t t = 0; t < n_topics; t++) {
            for (int32_t p = 0; p < n_parts[t]; p++) {
                const struct meta_goffset *o =
                    g != NULL ? meta_group_offset(g, topic_names[t], parts[t][p]) : NULL;
                f[n++] = o != NULL
                             ? (struct meta__fetched){topic_names[t], parts[t][p], o->offset,
                                                      o->leader_epoch, kp_str_from(o->metadata)}
                             : (struct meta__fetched){topic_names[t], parts[t][p], -1, -1,
                                                      kp_str_from("")};
            }
        }
    }
    *out = f;
    *n_out = n;
    return 0;
}

/* Groups consecutive entries by topic name into topic runs; returns the run count. */
static size_t meta__topic_runs(const struct meta__fetched *f, size_t n, size_t *starts)
{
    size_t runs = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || !kp_str_eq(f[i].topic, f[i - 1].topic)) {
            starts[runs++] = i;
        }
    }
    starts[runs] = n;
    return runs;
}

static int meta__offset_fetch(struct meta__gctx *x, const struct kp_offset_fetch_request *q)
{
    int16_t v = x->rq->api_version;
    struct kp_offset_fetch_response rs;
    kp_offset_fetch_response_init(&rs);
    int32_t ng = v >= 8 ? (q->groups_count > 0 ? q->groups_count : 0) : 1;
    if (v >= 8) {
        rs.groups = kp_arena_calloc(x->a, (size_t)ng + 1, sizeof(*rs.groups));
        if (rs.groups == NULL) {
            return -ENOMEM;
        }
        rs.groups_count = ng;
    }
    for (int32_t gi = 0; gi < ng; gi++) {
        struct kp_str group = v >= 8 ? q->groups[gi].group_id : q->group_id;
        int32_t nt = v >= 8 ? q->groups[gi].topics_count : q->topics_count;
        if (v < 2 && nt < 0) {
            nt = 0;
        }
        struct kp_str *names = kp_arena_calloc(x->a, (size_t)(nt > 0 ? nt : 0) + 1, sizeof(*names));
        int32_t **parts = kp_arena_calloc(x->a, (size_t)(nt > 0 ? nt : 0) + 1, sizeof(*parts));
        int32_t *np = kp_arena_calloc(x->a, (size_t)(nt > 0 ? nt : 0) + 1, sizeof(*np));
        if (names == NULL || parts == NULL || np == NULL) {
            return -ENOMEM;
        }
        for (int32_t t = 0; t < nt; t++) {
            if (v >= 8) {
                names[t] = q->groups[gi].topics[t].name;
                parts[t] = q->groups[gi].topics[t].partition_indexes;
                np[t] = q->groups[gi].topics[t].partition_indexes_count;
            } else {
                names[t] = q->topics[t].name;
                parts[t] = q->topics[t].partition_indexes;
                np[t] = q->topics[t].partition_indexes_count;
            }
        }
        struct meta__fetched *f = NULL;
        size_t n = 0;
        int rc = meta__fetch_group(x, group, nt, names, parts, np, &f, &n);
        if (rc != 0) {
            return rc;
        }
        size_t *starts = kp_arena_calloc(x->a, n + 2, sizeof(*starts));
        if (starts == NULL) {
            return -ENOMEM;
        }
        size_t runs = meta__topic_runs(f, n, starts);
        int16_t gerr = group.len < 0 ? KP_ERROR_INVALID_GROUP_ID : 0;
        if (v >= 8) {
            struct kp_offset_fetch_response_offset_fetch_response_group *og = &rs.groups[gi];
            kp_offset_fetch_response_offset_fetch_response_group_init(og);
            og->group_id = group;
            og->error_code = gerr;
            og->topics = kp_arena_calloc(x->a, runs + 1, sizeof(*og->topics));
            if (og->topics == NULL) {
                return -ENOMEM;
            }
            og->topics_count = (int32_t)runs;
            for (size_t r = 0; r < runs; r++) {
                struct kp_offset_fetch_response_offset_fetch_response_topics *ot = &og->topics[r];
                kp_offset_fetch_response_offset_fetch_response_topics_init(ot);
                ot->name = f[starts[r]].topic;
                size_t cnt = starts[r + 1] - starts[r];
                ot->partitions = kp_arena_calloc(x->a, cnt + 1, sizeof(*ot->partitions));
                if (ot->partitions == NULL) {
                    return -ENOMEM;
                }
                ot->partitions_count = (int32_t)cnt;
                for (size_t k = 0; k < cnt; k++) {
                    const struct meta__fetched *e = &f[starts[r] + k];
                    struct kp_offset_fetch_response_offset_fetch_response_partitions *op =
                        &ot->partitions[k];
                    kp_offset_fetch_response_offset_fetch_response_partitions_init(op);
                    op->partition_index = e->partition;
                    op->committed_offset = e->offset;
                    op->committed_leader_epoch = e->epoch;
                    op->metadata = e->metadata;
                }
            }
        } else {
            rs.error_code = gerr;
            rs.topics = kp_arena_calloc(x->a, runs + 1, sizeof(*rs.topics));
            if (rs.topics == NULL) {
                return -ENOMEM;
            }
            rs.topics_count = (int32_t)runs;
            for (size_t r = 0; r < runs; r++) {
                struct kp_offset_fetch_response_offset_fetch_response_topic *ot = &rs.topics[r];
                kp_offset_fetch_response_offset_fetch_response_topic_init(ot);
                ot->name = f[starts[r]].topic;
                size_t cnt = starts[r + 1] - starts[r];
                ot->partitions = kp_arena_calloc(x->a, cnt + 1, sizeof(*ot->partitions));
                if (ot->partitions == NULL) {
                    return -ENOMEM;
                }
                ot->partitions_count = (int32_t)cnt;
                for (size_t k = 0; k < cnt; k++) {
                    const struct meta__fetched *e = &f[starts[r] + k];
                    struct kp_offset_fetch_response_offset_fetch_response_partition *op =
                        &ot->partitions[k];
                    kp_offset_fetch_response_offset_fetch_response_partition_init(op);
                    op->partition_index = e->partition;
                    op->committed_offset = e->offset;
                    op->committed_leader_epoch = e->epoch;
                    op->metadata = e->metadata;
                }
            }
        }
    }
    return meta__kenc(K_OFFSET_FETCH, v, &rs, x->out);
}

static int meta__describe(struct meta__gctx *x, const struct kp_describe_groups_request *q)
{
    struct kp_describe_groups_response rs;
    kp_describe_groups_response_init(&rs);
    int32_t n = q->groups_count > 0 ? q->groups_count : 0;
    rs.groups = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.groups));
    if (rs.groups == NULL) {
        return -ENOMEM;
    }
    rs.groups_count = n;
    for (int32_t i = 0; i < n; i++) {
        struct kp_describe_groups_response_described_group *o = &rs.groups[i];
        kp_describe_groups_response_described_group_init(o);
        o->group_id = q->groups[i];
        o->authorized_operations = INT32_MIN;
        const struct meta_group *g =
            q->groups[i].len >= 0
                ? meta_group_find(x->gs, q->groups[i].ptr, (size_t)q->groups[i].len)
                : NULL;
        o->protocol_type = kp_str_from("");
        o->protocol_data = kp_str_from("");
        o->members_count = 0;
        if (q->groups[i].len < 0) {
            o->error_code = KP_ERROR_INVALID_GROUP_ID;
            o->group_state = kp_str_from("");
            continue;
        }
        if (g == NULL) {
            o->group_state = kp_str_from(meta_gstate_name(META_GROUP_DEAD));
            continue;
        }
        bool stable = g->state == META_GROUP_STABLE;
        o->group_state = kp_str_from(meta_gstate_name(g->state));
        o->protocol_type = meta__ks_or_empty(g->protocol_type);
        o->protocol_data = stable ? meta__ks_or_empty(g->protocol) : kp_str_from("");
        o->members = kp_arena_calloc(x->a, g->n_members + 1, sizeof(*o->members));
        if (o->members == NULL) {
            return -ENOMEM;
        }
        o->members_count = (int32_t)g->n_members;
        for (uint32_t k = 0; k < g->n_members; k++) {
            const struct meta_gmember *m = &g->members[k];
            struct kp_describe_groups_response_described_group_member *om = &o->members[k];
            kp_describe_groups_response_described_group_member_init(om);
            om->member_id = kp_str_from(m->id);
            om->group_instance_id = m->instance_id ? kp_str_from(m->instance_id) : KP_STR_NULL;
            om->client_id = meta__ks_or_empty(m->client_id);
            om->client_host = meta__ks_or_empty(m->client_host);
            om->member_metadata = (struct kp_bytes){NULL, 0};
            om->member_assignment = (struct kp_bytes){NULL, 0};
            if (!stable) {
                continue;
            }
            for (uint32_t p = 0; p < m->n_protos; p++) {
                if (g->protocol != NULL && strcmp(m->protos[p].name, g->protocol) == 0) {
                    om->member_metadata =
                        (struct kp_bytes){m->protos[p].meta, (int32_t)m->protos[p].meta_len};
                }
            }
            om->member_assignment = (struct kp_bytes){m->assignment, (int32_t)m->assignment_len};
        }
    }
    return meta__kenc(K_DESCRIBE_GROUPS, x->rq->api_version, &rs, x->out);
}

static bool meta__in_filter(const struct kp_str *f, int32_t n, const char *value)
{
    if (n <= 0) {
        return true;
    }
    for (int32_t i = 0; i < n; i++) {
        /* Kafka compares state filters case-insensitively. */
        if (f[i].len >= 0 && strlen(value) == (size_t)f[i].len &&
            strncasecmp(value, f[i].ptr, (size_t)f[i].len) == 0) {
            return true;
        }
    }
    return false;
}

static int meta__list(struct meta__gctx *x, const struct kp_list_groups_request *q)
{
    int16_t v = x->rq->api_version;
    struct kp_list_groups_response rs;
    kp_list_groups_response_init(&rs);
    rs.groups = kp_arena_calloc(x->a, x->gs->n_groups + 1, sizeof(*rs.groups));
    if (rs.groups == NULL) {
        return -ENOMEM;
    }
    rs.groups_count = 0;
    for (uint32_t i = 0; i < x->gs->n_groups; i++) {
        const struct meta_group *g = x->gs->groups[i];
        const char *st = meta_gstate_name(g->state);
        if (g->state == META_GROUP_DEAD ||
            (v >= 4 && !meta__in_filter(q->states_filter, q->states_filter_count, st)) ||
            (v >= 5 && !meta__in_filter(q->types_filter, q->types_filter_count, "classic"))) {
            continue;
        }
        struct kp_list_groups_response_listed_group *o = &rs.groups[rs.groups_count++];
        kp_list_groups_response_listed_group_init(o);
        o->group_id = kp_str_from(g->id);
        o->protocol_type = meta__ks_or_empty(g->protocol_type);
        o->group_state = kp_str_from(st);
        o->group_type = kp_str_from("classic");
    }
    return meta__kenc(K_LIST_GROUPS, v, &rs, x->out);
}

static int meta__delete_groups(struct meta__gctx *x, const struct kp_delete_groups_request *q)
{
    struct kp_delete_groups_response rs;
    kp_delete_groups_response_init(&rs);
    int32_t n = q->groups_names_count > 0 ? q->groups_names_count : 0;
    rs.results = kp_arena_calloc(x->a, (size_t)n + 1, sizeof(*rs.results));
    if (rs.results == NULL) {
        return -ENOMEM;
    }
    rs.results_count = n;
    for (int32_t i = 0; i < n; i++) {
        struct kp_delete_groups_response_deletable_group_result *o = &rs.results[i];
        kp_delete_groups_response_deletable_group_result_init(o);
        o->group_id = q->groups_names[i];
        o->error_code = meta_group_delete_check(x->gs, q->groups_names[i]);
        if (o->error_code == 0) {
            meta_groups_apply_delete(x->gs, q->groups_names[i]);
            meta_op_group_delete(&x->srv->op, x->now, q->groups_names[i]);
            meta__journal_op(x->srv);
        }
    }
    return meta__kenc(K_DELETE_GROUPS, x->rq->api_version, &rs, x->out);
}

static int meta__offset_delete(struct meta__gctx *x, const struct kp_offset_delete_request *q)
{
    struct kp_offset_delete_response rs;
    kp_offset_delete_response_init(&rs);
    rs.error_code = meta_group_offset_delete_check(x->gs, q->group_id);
    rs.topics_count = 0;
    if (rs.error_code != 0) {
        return meta__kenc(K_OFFSET_DELETE, x->rq->api_version, &rs, x->out);
    }
    const struct meta_group *g = meta_group_find(x->gs, q->group_id.ptr, (size_t)q->group_id.len);
    int32_t nt = q->topics_count > 0 ? q->topics_count : 0;
    size_t total = 0;
    for (int32_t t = 0; t < nt; t++) {
        total += q->topics[t].partitions_count > 0 ? (size_t)q->topics[t].partitions_count : 0;
    }
    rs.topics = kp_arena_calloc(x->a, (size_t)nt + 1, sizeof(*rs.topics));
    struct kp_str *dt = kp_arena_calloc(x->a, total + 1, sizeof(*dt));
    int32_t *dp = kp_arena_calloc(x->a, total + 1, sizeof(*dp));
    if (rs.topics == NULL || dt == NULL || dp == NULL) {
        return -ENOMEM;
    }
    rs.topics_count = nt;
    uint32_t nd = 0;
    for (int32_t t = 0; t < nt; t++) {
        const struct kp_offset_delete_request_offset_delete_request_topic *qt = &q->topics[t];
        struct kp_offset_delete_response_offset_delete_response_topic *ot = &rs.topics[t];
        kp_offset_delete_response_offset_delete_response_topic_init(ot);
        ot->name = qt->name;
        int32_t np = qt->partitions_count > 0 ? qt->partitions_count : 0;
        ot->partitions = kp_arena_calloc(x->a, (size_t)np + 1, sizeof(*ot->partitions));
        if (ot->partitions == NULL) {
            return -ENOMEM;
        }
        ot->partitions_count = np;
        bool subscribed = meta_group_topic_subscribed(g, qt->name);
        for (int32_t p = 0; p < np; p++) {
            struct kp_offset_delete_response_offset_delete_response_partition *op =
                &ot->partitions[p];
            kp_offset_delete_response_offset_delete_response_partition_init(op);
            op->partition_index = qt->partitions[p].partition_index;
            if (!meta__partition_exists(&x->srv->state, qt->name, op->partition_index)) {
                op->error_code = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            } else if (subscribed) {
                op->error_code = KP_ERROR_GROUP_SUBSCRIBED_TO_TOPIC;
            } else {
                dt[nd] = qt->name;
                dp[nd++] = op->partition_index;
            }
        }
    }
    if (nd > 0) {
        meta_groups_apply_offset_delete(x->gs, q->group_id, dt, dp, nd);
        meta_op_group_offset_delete(&x->srv->op, x->now, q->group_id, dt, dp, nd);
        meta__journal_op(x->srv);
    }
    return meta__kenc(K_OFFSET_DELETE, x->rq->api_version, &rs, x->out);
}

int meta__group_call(struct meta_server *srv, struct meta__conn *c,
                     const struct kp_meta_group_request *rq, int64_t now, struct kp_arena *a,
                     struct kp_meta_group_response *rs)
{
    bool served = false;
    for (size_t i = 0; i < sizeof(meta__gapis) / sizeof(meta__gapis[0]); i++) {
        served |= meta__gapis[i].key == rq->api_key && rq->api_version >= meta__gapis[i].min &&
                  rq->api_version <= meta__gapis[i].max;
    }
    const struct kp_api *api = kp_api_find(rq->api_key);
    if (!served || api == NULL || rq->body.len < 0) {
        rs->error_code = KP_ERROR_UNSUPPORTED_VERSION;
        return 0;
    }
    void *body = kp_arena_alloc(a, api->request->struct_size);
    if (body == NULL) {
        return -ENOMEM;
    }
    api->request->init(body);
    struct kp_reader r;
    kp_reader_init(&r, rq->body.ptr, (size_t)rq->body.len);
    if (api->request->decode(&r, rq->api_version, a, body) != 0) {
        rs->error_code = KP_ERROR_INVALID_REQUEST;
        return 0;
    }
    struct meta__gctx x = {.srv = srv,
                           .gs = meta_groups_of(&srv->state),
                           .rq = rq,
                           .a = a,
                           .now = now,
                           .out = &srv->gcur_body};
    srv->gcur_body.len = 0;
    srv->gcur_conn = c->serial;
    srv->gcur_ticket = rq->ticket;
    srv->gcur_active = true;
    srv->gcur_answered = false;
    int rc;
    bool at_once = true; /* only JoinGroup and SyncGroup may park (they set gcur_answered) */
    switch (rq->api_key) {
    case K_JOIN_GROUP:
        rc = meta__join(&x, body);
        at_once = false;
        break;
    case K_SYNC_GROUP:
        rc = meta__sync(&x, body);
        at_once = false;
        break;
    case K_HEARTBEAT:
        rc = meta__heartbeat_k(&x, body);
        break;
    case K_LEAVE_GROUP:
        rc = meta__leave(&x, body);
        break;
    case K_OFFSET_COMMIT:
        rc = meta__offset_commit(&x, body);
        break;
    case K_OFFSET_FETCH:
        rc = meta__offset_fetch(&x, body);
        break;
    case K_DESCRIBE_GROUPS:
        rc = meta__describe(&x, body);
        break;
    case K_LIST_GROUPS:
        rc = meta__list(&x, body);
        break;
    case K_DELETE_GROUPS:
        rc = meta__delete_groups(&x, body);
        break;
    case K_OFFSET_DELETE:
        rc = meta__offset_delete(&x, body);
        break;
    default:
        rc = 0;
        at_once = false; /* answered by the error code alone, no body */
        rs->error_code = KP_ERROR_UNSUPPORTED_VERSION;
        break;
    }
    if (at_once) {
        srv->gcur_answered = rc == 0;
    }
    srv->gcur_active = false;
    /* Answers this call produced for other parked requests depend on what it journaled. */
    meta__gpush_seal(srv);
    meta__groups_flush(srv);
    if (rc != 0) {
        return rc;
    }
    if (srv->gcur_answered) {
        uint8_t *copy = kp_arena_alloc(a, srv->gcur_body.len + 1);
        if (copy == NULL) {
            return -ENOMEM;
        }
        if (srv->gcur_body.len > 0) {
            memcpy(copy, srv->gcur_body.p, srv->gcur_body.len);
        }
        rs->body = (struct kp_bytes){copy, (int32_t)srv->gcur_body.len};
    } else if (rs->error_code == 0) {
        rs->parked = true;
        rs->body = (struct kp_bytes){NULL, 0};
    }
    return 0;
}
