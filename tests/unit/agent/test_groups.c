/*
 * The agent's group apis (agent/src/groups.c) against the in-process metadata service:
 * FindCoordinator v0 and v4 (batched keys) name this agent; JoinGroup/SyncGroup/Heartbeat/
 * OffsetCommit/OffsetFetch/LeaveGroup are forwarded, including a JoinGroup whose answer is parked
 * in the service (the initial rebalance delay) and arrives as a push; ApiVersions advertises the
 * group apis.
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "agent.h"
#include "agent_env.h"
#include "handlers.h"
#include "runnel/metadata/client.h"
#include "runnel/protocol/errors.h"

static void on_push(void *arg, const struct kp_meta_notify_response *n)
{
    agent_groups_on_notify(arg, n);
}

static void start(struct agent_env *e)
{
    agent_env_open(e, "groups");
    e->a.cfg.node_id = 7;
    e->a.cfg.default_partitions = 2;
    meta_client_set_push_cb(e->a.meta, on_push, &e->a);
    agent_env_listen(e, 1);
}

static void stop(struct agent_env *e)
{
    close(e->fd[0]);
    for (int i = 0; i < 50; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
    }
    agent_server_stop(&e->a);
    agent_topics_free(&e->a);
    if (e->a.meta != NULL) {
        meta_client_close(e->a.meta);
    }
    agent_env_close(e);
}

static void call(struct agent_env *e, int16_t key, int16_t version, const void *body, void *out)
{
    size_t rest = 0;
    agent_env_send(e, 0, key, version, ++e->corr, "test-groups", body);
    assert_int_equal(agent_env_recv(e, 0, key, version, 100000, out, &rest), e->corr);
    assert_int_equal(rest, 0);
}

static void test_find_coordinator(void **st)
{
    (void)st;
    struct agent_env e;
    start(&e);
    struct kp_find_coordinator_request q;
    kp_find_coordinator_request_init(&q);
    q.key = kp_str_from("g");
    struct kp_find_coordinator_response r;
    call(&e, 10, 0, &q, &r);
    assert_int_equal(r.error_code, 0);
    assert_int_equal(r.node_id, 7);
    assert_true(kp_str_eq_cstr(r.host, e.a.adv_host));
    assert_int_equal(r.port, e.a.adv_port);
    struct kp_str keys[] = {kp_str_from("a"), kp_str_from("b")};
    kp_find_coordinator_request_init(&q); /* v4 has no single key */
    q.coordinator_keys = keys;
    q.coordinator_keys_count = 2;
    call(&e, 10, 4, &q, &r);
    assert_int_equal(r.coordinators_count, 2);
    assert_true(kp_str_eq_cstr(r.coordinators[1].key, "b"));
    assert_int_equal(r.coordinators[1].node_id, 7);
    assert_int_equal(r.coordinators[1].port, e.a.adv_port);
    q.key_type = 9;
    call(&e, 10, 4, &q, &r);
    assert_int_equal(r.coordinators[0].error_code, KP_ERROR_INVALID_REQUEST);
    /* ApiVersions lists the group apis. */
    struct kp_api_versions_request av;
    kp_api_versions_request_init(&av);
    struct kp_api_versions_response avr;
    call(&e, 18, 3, &av, &avr);
    int found = 0;
    for (int32_t i = 0; i < avr.api_keys_count; i++) {
        int16_t k = avr.api_keys[i].api_key;
        if (k == 8 || k == 9 || k == 10 || k == 11 || k == 12 || k == 13 || k == 14 || k == 15 ||
            k == 16 || k == 42 || k == 47) {
            found++;
        }
        if (k == 11) {
            assert_int_equal(avr.api_keys[i].max_version, 9);
        }
    }
    assert_int_equal(found, 11);
    stop(&e);
}

static void join(struct agent_env *e, const char *member, struct kp_join_group_response *out)
{
    static const uint8_t meta[] = {0, 0, 0, 0, 0, 1, 0, 1, 't', 0xff, 0xff, 0xff, 0xff};
    struct kp_join_group_request q;
    kp_join_group_request_init(&q);
    struct kp_join_group_request_join_group_request_protocol p;
    kp_join_group_request_join_group_request_protocol_init(&p);
    p.name = kp_str_from("range");
    p.metadata = (struct kp_bytes){meta, sizeof(meta)};
    q.group_id = kp_str_from("g");
    q.session_timeout_ms = 10000;
    q.rebalance_timeout_ms = 10000;
    q.member_id = kp_str_from(member);
    q.protocol_type = kp_str_from("consumer");
    q.protocols = &p;
    q.protocols_count = 1;
    call(e, 11, 5, &q, out);
}

static void test_forwarding(void **st)
{
    (void)st;
    struct agent_env e;
    start(&e);
    struct kp_join_group_response j;
    join(&e, "", &j);
    assert_int_equal(j.error_code, KP_ERROR_MEMBER_ID_REQUIRED);
    char id[160];
    snprintf(id, sizeof(id), "%.*s", (int)j.member_id.len, j.member_id.ptr);
    assert_true(strncmp(id, "test-groups-", 12) == 0);
    /* Parked for the 3 s initial delay in the service, answered through a push. */
    join(&e, id, &j);
    assert_int_equal(j.error_code, 0);
    assert_int_equal(j.generation_id, 1);
    assert_true(kp_str_eq_cstr(j.leader, id));
    assert_int_equal(j.members_count, 1);

    struct kp_sync_group_request s;
    kp_sync_group_request_init(&s);
    struct kp_sync_group_request_sync_group_request_assignment as;
    kp_sync_group_request_sync_group_request_assignment_init(&as);
    as.member_id = kp_str_from(id);
    as.assignment = (struct kp_bytes){(const uint8_t *)"xyz", 3};
    s.group_id = kp_str_from("g");
    s.generation_id = 1;
    s.member_id = kp_str_from(id);
    s.assignments = &as;
    s.assignments_count = 1;
    struct kp_sync_group_response sr;
    call(&e, 14, 3, &s, &sr);
    assert_int_equal(sr.error_code, 0);
    assert_int_equal(sr.assignment.len, 3);

    struct kp_heartbeat_request h;
    kp_heartbeat_request_init(&h);
    h.group_id = kp_str_from("g");
    h.generation_id = 1;
    h.member_id = kp_str_from(id);
    struct kp_heartbeat_response hr;
    call(&e, 12, 1, &h, &hr);
    assert_int_equal(hr.error_code, 0);
    h.generation_id = 2;
    call(&e, 12, 1, &h, &hr);
    assert_int_equal(hr.error_code, KP_ERROR_ILLEGAL_GENERATION);

    /* OffsetFetch v1 of nothing committed; a commit to a missing topic is refused per partition. */
    struct kp_offset_commit_request c;
    kp_offset_commit_request_init(&c);
    struct kp_offset_commit_request_offset_commit_request_topic ct;
    kp_offset_commit_request_offset_commit_request_topic_init(&ct);
    struct kp_offset_commit_request_offset_commit_request_partition cp;
    kp_offset_commit_request_offset_commit_request_partition_init(&cp);
    cp.partition_index = 0;
    cp.committed_offset = 3;
    cp.committed_metadata = kp_str_from("");
    ct.name = kp_str_from("missing");
    ct.partitions = &cp;
    ct.partitions_count = 1;
    c.group_id = kp_str_from("g");
    c.generation_id_or_member_epoch = 1;
    c.member_id = kp_str_from(id);
    c.topics = &ct;
    c.topics_count = 1;
    struct kp_offset_commit_response cr;
    call(&e, 8, 2, &c, &cr);
    assert_int_equal(cr.topics[0].partitions[0].error_code, KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    struct kp_offset_fetch_request f;
    kp_offset_fetch_request_init(&f);
    struct kp_offset_fetch_request_offset_fetch_request_topic ft;
    kp_offset_fetch_request_offset_fetch_request_topic_init(&ft);
    int32_t parts[] = {0};
    ft.name = kp_str_from("missing");
    ft.partition_indexes = parts;
    ft.partition_indexes_count = 1;
    f.group_id = kp_str_from("g");
    f.topics = &ft;
    f.topics_count = 1;
    struct kp_offset_fetch_response fr;
    call(&e, 9, 1, &f, &fr);
    assert_int_equal(fr.topics[0].partitions[0].committed_offset, -1);

    struct kp_leave_group_request l;
    kp_leave_group_request_init(&l);
    l.group_id = kp_str_from("g");
    l.member_id = kp_str_from(id);
    struct kp_leave_group_response lr;
    call(&e, 13, 1, &l, &lr);
    assert_int_equal(lr.error_code, 0);
    call(&e, 13, 1, &l, &lr);
    assert_int_equal(lr.error_code, KP_ERROR_UNKNOWN_MEMBER_ID);
    stop(&e);
}

/* Shutdown fails a parked JoinGroup at once instead of holding the client until it is answered. */
static void test_drain(void **st)
{
    (void)st;
    struct agent_env e;
    start(&e);
    struct kp_join_group_response j;
    join(&e, "", &j);
    char id[160];
    snprintf(id, sizeof(id), "%.*s", (int)j.member_id.len, j.member_id.ptr);
    static const uint8_t meta[] = {0, 0, 0, 0, 0, 1, 0, 1, 't', 0xff, 0xff, 0xff, 0xff};
    struct kp_join_group_request q;
    kp_join_group_request_init(&q);
    struct kp_join_group_request_join_group_request_protocol p;
    kp_join_group_request_join_group_request_protocol_init(&p);
    p.name = kp_str_from("range");
    p.metadata = (struct kp_bytes){meta, sizeof(meta)};
    q.group_id = kp_str_from("g");
    q.session_timeout_ms = 10000;
    q.rebalance_timeout_ms = 10000;
    q.member_id = kp_str_from(id);
    q.protocol_type = kp_str_from("consumer");
    q.protocols = &p;
    q.protocols_count = 1;
    agent_env_send(&e, 0, 11, 5, ++e.corr, "test-groups", &q);
    for (int i = 0; i < 300; i++) { /* the Parked reply arrives; the answer would take 3 s */
        uv_run(&e.loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    agent_groups_drain(&e.a);
    size_t rest = 0;
    assert_int_equal(agent_env_recv(&e, 0, 11, 5, 100000, &j, &rest), e.corr);
    assert_int_equal(j.error_code, KP_ERROR_COORDINATOR_NOT_AVAILABLE);
    stop(&e);
}

int run_test_groups(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_coordinator),
        cmocka_unit_test(test_forwarding),
        cmocka_unit_test(test_drain),
    };
    return cmocka_run_group_tests_name("agent_groups", tests, NULL, NULL);
}
