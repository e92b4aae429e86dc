/*
 * Many agents (agent/src/cluster.c): the runnel_az=ZONE hint in client.id, the brokers a client
 * is shown in each mode, and rendezvous leadership (every agent gets a fair share; an agent
 * leaving or joining moves only its own partitions; every agent computes the same answer).
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

static struct kp_uuid uuid_of(int seed)
{
    struct kp_uuid u;
    for (int i = 0; i < 16; i++) {
        u.b[i] = (uint8_t)(seed * 31 + i * 7);
    }
    return u;
}

static void test_cluster_client_zone(void **state)
{
    (void)state;
    struct kp_str z;
    assert_true(agent_cluster_client_zone(kp_str_from("runnel_az=eu-1a"), &z));
    assert_true(kp_str_eq_cstr(z, "eu-1a"));
    assert_true(agent_cluster_client_zone(kp_str_from("app,runnel_az=b,other=1"), &z));
    assert_true(kp_str_eq_cstr(z, "b"));
    assert_true(agent_cluster_client_zone(kp_str_from("svc runnel_az=c"), &z));
    assert_true(kp_str_eq_cstr(z, "c"));
    assert_false(agent_cluster_client_zone(kp_str_from("xrunnel_az=b"), &z));
    assert_false(agent_cluster_client_zone(kp_str_from("runnel_az="), &z));
    assert_false(agent_cluster_client_zone(kp_str_from("rdkafka"), &z));
    assert_false(agent_cluster_client_zone(KP_STR_NULL, &z));
}

static void test_cluster_leader_shares(void **state)
{
    (void)state;
    struct agent_broker three[3] = {{1, "h", 1, ""}, {2, "h", 2, ""}, {3, "h", 3, ""}};
    struct agent_broker four[4] = {
        {1, "h", 1, ""}, {2, "h", 2, ""}, {3, "h", 3, ""}, {7, "h", 7, ""}};
    struct agent_broker two[2] = {{1, "h", 1, ""}, {3, "h", 3, ""}}; /* 2 left */
    int share[8] = {0};
    int moved_join = 0;
    const int topics = 50;
    const int parts = 60;
    for (int t = 0; t < topics; t++) {
        struct kp_uuid id = uuid_of(t);
        for (int p = 0; p < parts; p++) {
            int32_t l3 = agent_cluster_leader(three, 3, &id, p);
            assert_int_equal(l3, agent_cluster_leader(three, 3, &id, p)); /* deterministic */
            share[l3]++;
            int32_t l2 = agent_cluster_leader(two, 2, &id, p);
            if (l3 != 2) {
                assert_int_equal(l2, l3); /* only the leaver's partitions move */
            }
            int32_t l4 = agent_cluster_leader(four, 4, &id, p);
            if (l4 != l3) {
                assert_int_equal(l4, 7); /* partitions only move to the joiner */
                moved_join++;
            }
        }
    }
    int total = topics * parts;
    for (int a = 1; a <= 3; a++) {
        assert_true(share[a] > total * 28 / 100);
        assert_true(share[a] < total * 39 / 100);
    }
    assert_true(moved_join > total * 18 / 100);
    assert_true(moved_join < total * 32 / 100);
}

static void test_cluster_view(void **state)
{
    (void)state;
    struct agent a;
    memset(&a, 0, sizeof(a));
    a.cfg.node_id = 5;
    snprintf(a.adv_host, sizeof(a.adv_host), "lb.example");
    a.adv_port = 9092;
    struct kp_arena arena;
    kp_arena_init(&arena, 1 << 20);
    struct agent_broker *v;

    /* Load-balancer mode: this agent alone at the advertised address, whatever the hint. */
    assert_int_equal(agent_cluster_view(&a, kp_str_from("runnel_az=b"), &arena, &v), 1);
    assert_int_equal(v[0].id, 5);
    assert_string_equal(v[0].host, "lb.example");
    assert_int_equal(v[0].port, 9092);

    /* Direct mode before the first heartbeat answer: itself. */
    a.cluster.direct = true;
    assert_int_equal(agent_cluster_view(&a, kp_str_from("c"), &arena, &v), 1);
    assert_int_equal(v[0].id, 5);

    struct agent_peer peers[3] = {{1, "h1", 1, "a"}, {2, "h2", 2, "b"}, {3, "h3", 3, "b"}};
    a.cluster.peers = peers;
    a.cluster.n_peers = 3;
    assert_int_equal(agent_cluster_view(&a, kp_str_from("rdkafka"), &arena, &v), 3);
    assert_string_equal(v[2].host, "h3");
    assert_int_equal(agent_cluster_view(&a, kp_str_from("x,runnel_az=b"), &arena, &v), 2);
    assert_int_equal(v[0].id, 2);
    assert_int_equal(v[1].id, 3);
    assert_int_equal(agent_cluster_view(&a, kp_str_from("runnel_az=a"), &arena, &v), 1);
    assert_int_equal(v[0].id, 1);
    /* A zone with no live agent: everyone. */
    assert_int_equal(agent_cluster_view(&a, kp_str_from("runnel_az=zz"), &arena, &v), 3);
    a.cluster.peers = NULL;
    a.cluster.n_peers = 0;
    kp_arena_free(&arena);
}

/* The peer address of an agent listening on a wildcard: where its route to the metadata
 * service leaves from. */
static void test_cluster_route_addr(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(agent_cluster_route_addr("127.0.0.1", 9000, out, sizeof(out)), 0);
    assert_string_equal(out, "127.0.0.1");
    assert_int_equal(agent_cluster_route_addr("localhost", 9000, out, sizeof(out)), 0);
    assert_true(strcmp(out, "127.0.0.1") == 0 || strcmp(out, "::1") == 0);
}

int run_test_cluster(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_client_zone),
        cmocka_unit_test(test_cluster_leader_shares),
        cmocka_unit_test(test_cluster_view),
        cmocka_unit_test(test_cluster_route_addr),
    };
    return cmocka_run_group_tests_name("cluster", tests, NULL, NULL);
}
