/*
 * The MetaGroup RPC (metadata/src/group_rpc.c) through the real server and client library on one
 * loop: Kafka request bodies in, Kafka response bodies out; a JoinGroup/SyncGroup that waits is
 * answered Parked and its answer pushed with the ticket; OffsetCommit per-partition errors
 * (UNKNOWN_TOPIC_OR_PARTITION, OFFSET_METADATA_TOO_LARGE); OffsetFetch v1 and v8 with two groups;
 * DescribeGroups, ListGroups, DeleteGroups (NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND), OffsetDelete
 * (GROUP_SUBSCRIBED_TO_TOPIC); committed offsets and the generation surviving a restart.
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "kp_messages.h"
#include "runnel/metadata/client.h"
#include "runnel/metadata/server.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/mem.h"

#define MAX_TICKETS 64

struct answer {
    bool have;     /* an answer (immediate or pushed) arrived */
    bool pushed;   /* it came as a push */
    bool parked;   /* the RPC reply said Parked */
    uint8_t *body; /* the Kafka response body (malloc) */
    size_t len;    /* bytes */
};

struct env {
    uv_loop_t loop;
    struct meta_server *srv;
    struct meta_client *cli;
    char dir[64];
    int replies; /* RPC replies received */
    int created;
    struct answer ans[MAX_TICKETS];
    struct kp_arena arena;
};

static struct env *g_env;
static int64_t g_retention_ms = 7LL * 24 * 3600 * 1000; /* offsets.retention for start() */

static void pump(struct env *e, bool (*done)(struct env *e, int64_t t), int64_t t)
{
    for (int i = 0; i < 20000 && !done(e, t); i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    assert_true(done(e, t));
}

static bool have_answer(struct env *e, int64_t t)
{
    return e->ans[t].have;
}

static bool have_created(struct env *e, int64_t t)
{
    (void)t;
    return e->created > 0;
}

static void keep(struct answer *a, const struct kp_bytes *b, bool pushed)
{
    free(a->body);
    a->len = b->len > 0 ? (size_t)b->len : 0;
    a->body = kp_xmalloc(a->len + 1);
    if (a->len > 0) {
        memcpy(a->body, b->ptr, a->len);
    }
    a->have = true;
    a->pushed = pushed;
}

static void on_reply(void *arg, int status, const void *resp)
{
    int64_t t = (int64_t)(intptr_t)arg;
    const struct kp_meta_group_response *rs = resp;
    assert_int_equal(status, 0);
    assert_int_equal(rs->error_code, 0);
    g_env->replies++;
    g_env->ans[t].parked = rs->parked;
    if (!rs->parked) {
        keep(&g_env->ans[t], &rs->body, false);
    }
}

static void on_push(void *arg, const struct kp_meta_notify_response *n)
{
    struct env *e = arg;
    for (int32_t i = 0; i < n->group_replies_count; i++) {
        int64_t t = n->group_replies[i].ticket;
        assert_true(t >= 0 && t < MAX_TICKETS);
        keep(&e->ans[t], &n->group_replies[i].body, true);
    }
}

static void on_create(void *arg, int status, const void *resp)
{
    struct env *e = arg;
    (void)resp;
    assert_int_equal(status, 0);
    e->created++;
}

static void start(struct env *e, bool fresh)
{
    if (fresh) {
        memset(e, 0, sizeof(*e));
        snprintf(e->dir, sizeof(e->dir), "/tmp/runnel-test-grpc-XXXXXX");
        assert_non_null(mkdtemp(e->dir));
        kp_arena_init(&e->arena, 1u << 20);
    }
    g_env = e;
    uv_loop_init(&e->loop);
    struct meta_server_options o;
    meta_server_options_default(&o);
    o.data_dir = e->dir;
    o.port = 0;
    o.group_initial_delay_ms = 0;
    o.offsets_retention_ms = g_retention_ms;
    char err[256];
    assert_int_equal(meta_server_open(&e->srv, &e->loop, &o, err, sizeof(err)), 0);
    assert_int_equal(meta_client_open(&e->cli, &e->loop, "127.0.0.1", meta_server_port(e->srv)), 0);
    meta_client_set_push_cb(e->cli, on_push, e);
}

static void stop(struct env *e, bool remove)
{
    meta_client_close(e->cli);
    meta_server_close(e->srv);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    if (remove) {
        for (int i = 0; i < MAX_TICKETS; i++) {
            free(e->ans[i].body);
        }
        kp_arena_free(&e->arena);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
        assert_int_equal(system(cmd), 0);
    }
}

/* Sends a Kafka request as MetaGroup with ticket t; returns once the RPC reply arrived. */
static void send_k(struct env *e, int64_t t, int16_t key, int16_t version, const void *msg)
{
    const struct kp_api *api = kp_api_find(key);
    size_t size = 0;
    assert_int_equal(api->request->size(msg, version, &size), 0);
    uint8_t *buf = kp_xmalloc(size + 1);
    struct kp_writer w;
    kp_writer_init(&w, buf, size);
    assert_int_equal(api->request->encode(msg, version, &w), 0);
    struct kp_meta_group_request rq;
    kp_meta_group_request_init(&rq);
    rq.ticket = t;
    rq.api_key = key;
    rq.api_version = version;
    rq.client_id = kp_str_from("test");
    rq.client_host = kp_str_from("/127.0.0.1");
    rq.body = (struct kp_bytes){buf, (int32_t)kp_writer_len(&w)};
    e->ans[t].have = false;
    e->ans[t].parked = false;
    int before = e->replies;
    assert_int_equal(meta_client_call(e->cli, 1020, &rq, on_reply, (void *)(intptr_t)t), 0);
    free(buf);
    for (int i = 0; i < 20000 && e->replies == before; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    assert_int_equal(e->replies, before + 1);
}

/* Decodes answer t as a response of (key, version) into the env's arena. */
static void *decode(struct env *e, int64_t t, int16_t key, int16_t version)
{
    pump(e, have_answer, t);
    const struct kp_api *api = kp_api_find(key);
    void *m = kp_arena_alloc(&e->arena, api->response->struct_size);
    api->response->init(m);
    struct kp_reader r;
    kp_reader_init(&r, e->ans[t].body, e->ans[t].len);
    assert_int_equal(api->response->decode(&r, version, &e->arena, m), 0);
    assert_int_equal(kp_reader_remaining(&r), 0);
    return m;
}

static const uint8_t sub_t[] = {0, 0, 0, 0, 0, 1, 0, 1, 't', 0xff, 0xff, 0xff, 0xff};

static void join(struct env *e, int64_t t, const char *member)
{
    struct kp_join_group_request q;
    kp_join_group_request_init(&q);
    struct kp_join_group_request_join_group_request_protocol p;
    kp_join_group_request_join_group_request_protocol_init(&p);
    p.name = kp_str_from("range");
    p.metadata = (struct kp_bytes){sub_t, sizeof(sub_t)};
    q.group_id = kp_str_from("g");
    q.session_timeout_ms = 10000;
    q.rebalance_timeout_ms = 10000;
    q.member_id = kp_str_from(member);
    q.group_instance_id = KP_STR_NULL;
    q.protocol_type = kp_str_from("consumer");
    q.protocols = &p;
    q.protocols_count = 1;
    q.reason = KP_STR_NULL;
    send_k(e, t, 11, 7, &q);
}

static struct kp_join_group_response *join_answer(struct env *e, int64_t t)
{
    return decode(e, t, 11, 7);
}

static void sync_(struct env *e, int64_t t, const char *member, int32_t gen,
                  const struct kp_sync_group_request_sync_group_request_assignment *as, int n)
{
    struct kp_sync_group_request q;
    kp_sync_group_request_init(&q);
    q.group_id = kp_str_from("g");
    q.generation_id = gen;
    q.member_id = kp_str_from(member);
    q.group_instance_id = KP_STR_NULL;
    q.protocol_type = kp_str_from("consumer");
    q.protocol_name = kp_str_from("range");
    q.assignments = (void *)as;
    q.assignments_count = n;
    send_k(e, t, 14, 5, &q);
}

static void create_topic(struct env *e)
{
    struct kp_meta_create_topics_request ct;
    kp_meta_create_topics_request_init(&ct);
    struct kp_meta_create_topics_request_meta_creatable_topic t;
    kp_meta_create_topics_request_meta_creatable_topic_init(&t);
    t.name = kp_str_from("t");
    t.num_partitions = 2;
    ct.topics = &t;
    ct.topics_count = 1;
    assert_int_equal(meta_client_call(e->cli, 1001, &ct, on_create, e), 0);
    pump(e, have_created, 0);
}

static int16_t commit_one(struct env *e, int64_t tk, const char *member, int32_t gen,
                          const char *topic, int32_t part, int64_t offset, struct kp_str meta)
{
    struct kp_offset_commit_request q;
    kp_offset_commit_request_init(&q);
    struct kp_offset_commit_request_offset_commit_request_topic t;
    kp_offset_commit_request_offset_commit_request_topic_init(&t);
    struct kp_offset_commit_request_offset_commit_request_partition p;
    kp_offset_commit_request_offset_commit_request_partition_init(&p);
    p.partition_index = part;
    p.committed_offset = offset;
    p.committed_leader_epoch = 7;
    p.committed_metadata = meta;
    t.name = kp_str_from(topic);
    t.partitions = &p;
    t.partitions_count = 1;
    q.group_id = kp_str_from("g");
    q.generation_id_or_member_epoch = gen;
    q.member_id = kp_str_from(member);
    q.group_instance_id = KP_STR_NULL;
    q.topics = &t;
    q.topics_count = 1;
    send_k(e, tk, 8, 8, &q);
    struct kp_offset_commit_response *r = decode(e, tk, 8, 8);
    assert_int_equal(r->topics_count, 1);
    assert_int_equal(r->topics[0].partitions_count, 1);
    return r->topics[0].partitions[0].error_code;
}

static void test_group_rpc(void **st)
{
    (void)st;
    struct env *e = kp_xcalloc(1, sizeof(*e));
    start(e, true);
    create_topic(e);

    /* KIP-394, then a lone member forms generation 1 at once (no initial delay here). */
    join(e, 1, "");
    assert_false(e->ans[1].parked);
    struct kp_join_group_response *j = join_answer(e, 1);
    assert_int_equal(j->error_code, KP_ERROR_MEMBER_ID_REQUIRED);
    char a[128];
    snprintf(a, sizeof(a), "%.*s", (int)j->member_id.len, j->member_id.ptr);
    join(e, 2, a);
    j = join_answer(e, 2);
    assert_int_equal(j->error_code, 0);
    assert_int_equal(j->generation_id, 1);
    assert_int_equal(j->members_count, 1);

    /* B's join parks; A learns of the rebalance from its heartbeat and rejoins. */
    join(e, 3, "");
    j = join_answer(e, 3);
    char b[128];
    snprintf(b, sizeof(b), "%.*s", (int)j->member_id.len, j->member_id.ptr);
    join(e, 4, b);
    assert_true(e->ans[4].parked);
    struct kp_heartbeat_request hb;
    kp_heartbeat_request_init(&hb);
    hb.group_id = kp_str_from("g");
    hb.generation_id = 1;
    hb.member_id = kp_str_from(a);
    hb.group_instance_id = KP_STR_NULL;
    send_k(e, 5, 12, 4, &hb);
    struct kp_heartbeat_response *h = decode(e, 5, 12, 4);
    assert_int_equal(h->error_code, KP_ERROR_REBALANCE_IN_PROGRESS);
    join(e, 6, a);
    j = join_answer(e, 6);
    assert_false(e->ans[6].pushed);
    assert_int_equal(j->generation_id, 2);
    assert_int_equal(j->members_count, 2);
    j = join_answer(e, 4);
    assert_true(e->ans[4].pushed);
    assert_int_equal(j->generation_id, 2);
    assert_int_equal(j->members_count, 0);

    /* B's sync parks until A (the leader) assigns; B's answer is pushed. */
    sync_(e, 7, b, 2, NULL, 0);
    assert_true(e->ans[7].parked);
    struct kp_sync_group_request_sync_group_request_assignment as[2];
    kp_sync_group_request_sync_group_request_assignment_init(&as[0]);
    kp_sync_group_request_sync_group_request_assignment_init(&as[1]);
    as[0].member_id = kp_str_from(a);
    as[0].assignment = (struct kp_bytes){(const uint8_t *)"AA", 2};
    as[1].member_id = kp_str_from(b);
    as[1].assignment = (struct kp_bytes){(const uint8_t *)"BB", 2};
    sync_(e, 8, a, 2, as, 2);
    struct kp_sync_group_response *s = decode(e, 8, 14, 5);
    assert_int_equal(s->error_code, 0);
    assert_memory_equal(s->assignment.ptr, "AA", 2);
    s = decode(e, 7, 14, 5);
    assert_true(e->ans[7].pushed);
    assert_memory_equal(s->assignment.ptr, "BB", 2);
    assert_true(kp_str_eq_cstr(s->protocol_name, "range"));

    /* Commits: per-partition errors. */
    assert_int_equal(commit_one(e, 9, a, 2, "t", 0, 5, kp_str_from("m")), 0);
    char big[5000];
    memset(big, 'x', sizeof(big));
    assert_int_equal(commit_one(e, 10, a, 2, "t", 1, 5, (struct kp_str){big, sizeof(big)}),
                     KP_ERROR_OFFSET_METADATA_TOO_LARGE);
    assert_int_equal(commit_one(e, 11, a, 2, "nope", 0, 5, kp_str_from("")),
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    assert_int_equal(commit_one(e, 12, a, 2, "t", 9, 5, kp_str_from("")),
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    assert_int_equal(commit_one(e, 13, a, 1, "t", 0, 6, kp_str_from("")),
                     KP_ERROR_ILLEGAL_GENERATION);
    assert_int_equal(commit_one(e, 14, "ghost", 2, "t", 0, 6, kp_str_from("")),
                     KP_ERROR_UNKNOWN_MEMBER_ID);

    /* OffsetFetch v8: two groups, one with explicit partitions, one unknown with all topics. */
    struct kp_offset_fetch_request fq;
    kp_offset_fetch_request_init(&fq);
    struct kp_offset_fetch_request_offset_fetch_request_group gq[2];
    kp_offset_fetch_request_offset_fetch_request_group_init(&gq[0]);
    kp_offset_fetch_request_offset_fetch_request_group_init(&gq[1]);
    struct kp_offset_fetch_request_offset_fetch_request_topics tq;
    kp_offset_fetch_request_offset_fetch_request_topics_init(&tq);
    int32_t parts[] = {0, 1};
    tq.name = kp_str_from("t");
    tq.partition_indexes = parts;
    tq.partition_indexes_count = 2;
    gq[0].group_id = kp_str_from("g");
    gq[0].topics = &tq;
    gq[0].topics_count = 1;
    gq[1].group_id = kp_str_from("other");
    gq[1].topics = NULL;
    gq[1].topics_count = -1;
    fq.groups = gq;
    fq.groups_count = 2;
    send_k(e, 15, 9, 8, &fq);
    struct kp_offset_fetch_response *f = decode(e, 15, 9, 8);
    assert_int_equal(f->groups_count, 2);
    assert_int_equal(f->groups[0].topics_count, 1);
    assert_int_equal(f->groups[0].topics[0].partitions_count, 2);
    assert_int_equal(f->groups[0].topics[0].partitions[0].committed_offset, 5);
    assert_int_equal(f->groups[0].topics[0].partitions[0].committed_leader_epoch, 7);
    assert_true(kp_str_eq_cstr(f->groups[0].topics[0].partitions[0].metadata, "m"));
    assert_int_equal(f->groups[0].topics[0].partitions[1].committed_offset, -1);
    assert_int_equal(f->groups[1].topics_count, 0);

    /* DescribeGroups, ListGroups. */
    struct kp_describe_groups_request dq;
    kp_describe_groups_request_init(&dq);
    struct kp_str names[] = {kp_str_from("g"), kp_str_from("unknown")};
    dq.groups = names;
    dq.groups_count = 2;
    send_k(e, 16, 15, 5, &dq);
    struct kp_describe_groups_response *d = decode(e, 16, 15, 5);
    assert_true(kp_str_eq_cstr(d->groups[0].group_state, "Stable"));
    assert_true(kp_str_eq_cstr(d->groups[0].protocol_data, "range"));
    assert_int_equal(d->groups[0].members_count, 2);
    assert_int_equal(d->groups[0].members[1].member_assignment.len, 2);
    assert_true(kp_str_eq_cstr(d->groups[1].group_state, "Dead"));
    assert_int_equal(d->groups[1].error_code, 0);
    struct kp_list_groups_request lq;
    kp_list_groups_request_init(&lq);
    send_k(e, 17, 16, 5, &lq);
    struct kp_list_groups_response *l = decode(e, 16 + 1, 16, 5);
    assert_int_equal(l->groups_count, 1);
    assert_true(kp_str_eq_cstr(l->groups[0].group_state, "Stable"));
    assert_true(kp_str_eq_cstr(l->groups[0].protocol_type, "consumer"));

    /* DeleteGroups and OffsetDelete refuse while the group is in use. */
    struct kp_delete_groups_request xq;
    kp_delete_groups_request_init(&xq);
    struct kp_str del[] = {kp_str_from("g"), kp_str_from("nope")};
    xq.groups_names = del;
    xq.groups_names_count = 2;
    send_k(e, 18, 42, 2, &xq);
    struct kp_delete_groups_response *x = decode(e, 18, 42, 2);
    assert_int_equal(x->results[0].error_code, KP_ERROR_NON_EMPTY_GROUP);
    assert_int_equal(x->results[1].error_code, KP_ERROR_GROUP_ID_NOT_FOUND);
    struct kp_offset_delete_request oq;
    kp_offset_delete_request_init(&oq);
    struct kp_offset_delete_request_offset_delete_request_topic ot;
    kp_offset_delete_request_offset_delete_request_topic_init(&ot);
    struct kp_offset_delete_request_offset_delete_request_partition op;
    kp_offset_delete_request_offset_delete_request_partition_init(&op);
    op.partition_index = 0;
    ot.name = kp_str_from("t");
    ot.partitions = &op;
    ot.partitions_count = 1;
    oq.group_id = kp_str_from("g");
    oq.topics = &ot;
    oq.topics_count = 1;
    send_k(e, 19, 47, 0, &oq);
    struct kp_offset_delete_response *o = decode(e, 19, 47, 0);
    assert_int_equal(o->error_code, 0);
    assert_int_equal(o->topics[0].partitions[0].error_code, KP_ERROR_GROUP_SUBSCRIBED_TO_TOPIC);

    /* Restart: the offsets and the generation persist; the members are gone. */
    stop(e, false);
    start(e, false);
    send_k(e, 20, 9, 8, &fq);
    f = decode(e, 20, 9, 8);
    assert_int_equal(f->groups[0].topics[0].partitions[0].committed_offset, 5);
    send_k(e, 21, 12, 4, &hb);
    h = decode(e, 21, 12, 4);
    assert_int_equal(h->error_code, KP_ERROR_UNKNOWN_MEMBER_ID);
    join(e, 22, "");
    j = join_answer(e, 22);
    snprintf(a, sizeof(a), "%.*s", (int)j->member_id.len, j->member_id.ptr);
    join(e, 23, a);
    j = join_answer(e, 23);
    assert_int_equal(j->generation_id, 3);
    /* Once Empty, the group and its offsets can be deleted. */
    struct kp_leave_group_request lv;
    kp_leave_group_request_init(&lv);
    struct kp_leave_group_request_member_identity mi;
    kp_leave_group_request_member_identity_init(&mi);
    mi.member_id = kp_str_from(a);
    mi.group_instance_id = KP_STR_NULL;
    mi.reason = KP_STR_NULL;
    lv.group_id = kp_str_from("g");
    lv.members = &mi;
    lv.members_count = 1;
    send_k(e, 24, 13, 5, &lv);
    struct kp_leave_group_response *lr = decode(e, 24, 13, 5);
    assert_int_equal(lr->error_code, 0);
    assert_int_equal(lr->members[0].error_code, 0);
    send_k(e, 25, 42, 2, &xq);
    x = decode(e, 25, 42, 2);
    assert_int_equal(x->results[0].error_code, 0);
    send_k(e, 26, 9, 8, &fq);
    f = decode(e, 26, 9, 8);
    assert_int_equal(f->groups[0].topics[0].partitions[0].committed_offset, -1);
    stop(e, true);
    free(e);
}

static bool fetch_is(struct env *e, int64_t want)
{
    struct kp_offset_fetch_request fq;
    kp_offset_fetch_request_init(&fq);
    struct kp_offset_fetch_request_offset_fetch_request_topic tq;
    kp_offset_fetch_request_offset_fetch_request_topic_init(&tq);
    int32_t parts[] = {0};
    tq.name = kp_str_from("t");
    tq.partition_indexes = parts;
    tq.partition_indexes_count = 1;
    fq.group_id = kp_str_from("g");
    fq.topics = &tq;
    fq.topics_count = 1;
    send_k(e, 40, 9, 1, &fq);
    struct kp_offset_fetch_response *f = decode(e, 40, 9, 1);
    return f->topics[0].partitions[0].committed_offset == want;
}

static int list_count(struct env *e)
{
    struct kp_list_groups_request lq;
    kp_list_groups_request_init(&lq);
    send_k(e, 41, 16, 5, &lq);
    struct kp_list_groups_response *l = decode(e, 41, 16, 5);
    return l->groups_count;
}

/* offsets.retention: the offsets of an Empty group expire, then the group; journaled. */
static void test_retention(void **st)
{
    (void)st;
    struct env *e = kp_xcalloc(1, sizeof(*e));
    g_retention_ms = 300;
    start(e, true);
    create_topic(e);
    /* A simple consumer's commit (generation -1) creates the group. */
    assert_int_equal(commit_one(e, 1, "", -1, "t", 0, 5, kp_str_from("")), 0);
    assert_true(fetch_is(e, 5));
    assert_int_equal(list_count(e), 1);
    for (int i = 0; i < 40 && !fetch_is(e, -1); i++) {
        for (int k = 0; k < 50; k++) {
            uv_run(&e->loop, UV_RUN_NOWAIT);
            usleep(1000);
        }
    }
    assert_true(fetch_is(e, -1));
    assert_int_equal(list_count(e), 0);
    /* The expiry was journaled: it stays expired after a restart (with retention off). */
    g_retention_ms = 0;
    stop(e, false);
    start(e, false);
    assert_true(fetch_is(e, -1));
    assert_int_equal(list_count(e), 0);
    g_retention_ms = 7LL * 24 * 3600 * 1000;
    stop(e, true);
    free(e);
}

int run_test_group_rpc(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_rpc),
        cmocka_unit_test(test_retention),
    };
    return cmocka_run_group_tests_name("group_rpc", tests, NULL, NULL);
}
