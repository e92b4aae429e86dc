/*
 * Consumer group benchmark over the real RPC and journal: a metadata server runs in a child
 * process (journal in /tmp, fdatasync per group commit); the parent plays N group members through
 * the client library, sending the Kafka JoinGroup v9 / SyncGroup v5 / OffsetCommit v8 bodies as
 * MetaGroup requests the way agents forward them (parked answers arrive as pushes). It reports
 *   - rebalance: the time from the leader's rejoin until every member of a Stable group of 10
 *     (then 100) members has its SyncGroup answer, median and max of several rounds (the group's
 *     first formation waits group.initial.rebalance.delay.ms = 3 s and is reported apart);
 *   - offset commits/s with 64 OffsetCommit requests in flight, 1 and 100 partitions each.
 *
 * usage: bench_metadata_groups [SECONDS_PER_COMMIT_RUN]   (default 3)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "kp_messages.h"
#include "kp_rpc.h"
#include "runnel/metadata/client.h"
#include "runnel/metadata/server.h"
#include "runnel/protocol/mem.h"

#define API_GROUP 1020
#define MAX_MEMBERS 100

struct member {
    char id[160];       /* member id ("" before the first answer) */
    int32_t generation; /* from the last JoinGroup answer */
    bool leader;        /* the last JoinGroup answer named it leader */
    bool joined;        /* JoinGroup answered in this round */
    bool synced;        /* SyncGroup answered in this round */
};

static uv_loop_t g_loop;
static struct meta_client *g_cli;
static struct member g_m[MAX_MEMBERS];
static int g_n;
static int g_synced;
static int g_joined;
static char g_ids[MAX_MEMBERS][160]; /* the leader's member list */
static int g_n_ids;
static int g_commits_done;
static int g_outstanding;
static int g_commit_parts;
static int64_t g_offset;
static bool g_stop;
static struct kp_arena g_arena;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void server_child(const char *dir, int port)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct meta_server_options o;
    meta_server_options_default(&o);
    o.data_dir = dir;
    o.port = port;
    char err[256];
    struct meta_server *srv;
    if (meta_server_open(&srv, &loop, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "server: %s\n", err);
        _exit(1);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(0);
}

/* Tickets: member * 4 + kind (0 join, 1 sync, 2 commit). */
static void on_answer(int64_t ticket, const struct kp_bytes *body);

static void on_rpc(void *arg, int status, const void *resp)
{
    const struct kp_meta_group_response *rs = resp;
    int64_t ticket = (int64_t)(intptr_t)arg;
    if (status != 0 || rs->error_code != 0) {
        fprintf(stderr, "group rpc failed: status %d error %d\n", status,
                status == 0 ? rs->error_code : 0);
        exit(1);
    }
    if (!rs->parked) {
        on_answer(ticket, &rs->body);
    }
}

static void on_push(void *arg, const struct kp_meta_notify_response *n)
{
    (void)arg;
    for (int32_t i = 0; i < n->group_replies_count; i++) {
        on_answer(n->group_replies[i].ticket, &n->group_replies[i].body);
    }
}

static void send_group(int64_t ticket, int16_t key, int16_t version, const void *msg)
{
    const struct kp_api *api = kp_api_find(key);
    size_t size = 0;
    api->request->size(msg, version, &size);
    uint8_t *buf = malloc(size + 1);
    struct kp_writer w;
    kp_writer_init(&w, buf, size);
    api->request->encode(msg, version, &w);
    struct kp_meta_group_request rq;
    kp_meta_group_request_init(&rq);
    rq.ticket = ticket;
    rq.api_key = key;
    rq.api_version = version;
    rq.client_id = kp_str_from("bench");
    rq.client_host = kp_str_from("/127.0.0.1");
    rq.body = (struct kp_bytes){buf, (int32_t)kp_writer_len(&w)};
    if (meta_client_call(g_cli, API_GROUP, &rq, on_rpc, (void *)(intptr_t)ticket) != 0) {
        fprintf(stderr, "call failed\n");
        exit(1);
    }
    free(buf);
}

static const uint8_t g_sub[] = {0,   0,   0,   0,   0,    1,    0,    5,   'b',
                                'e', 'n', 'c', 'h', 0xff, 0xff, 0xff, 0xff};

static void send_join(int i)
{
    struct kp_join_group_request q;
    kp_join_group_request_init(&q);
    struct kp_join_group_request_join_group_request_protocol p;
    kp_join_group_request_join_group_request_protocol_init(&p);
    p.name = kp_str_from("range");
    p.metadata = (struct kp_bytes){g_sub, sizeof(g_sub)};
    q.group_id = kp_str_from("bench-group");
    q.session_timeout_ms = 30000;
    q.rebalance_timeout_ms = 60000;
    q.member_id = kp_str_from(g_m[i].id);
    q.group_instance_id = KP_STR_NULL;
    q.protocol_type = kp_str_from("consumer");
    q.protocols = &p;
    q.protocols_count = 1;
    q.reason = KP_STR_NULL;
    send_group((int64_t)i * 4, 11, 9, &q);
}

static void send_sync(int i)
{
    struct kp_sync_group_request q;
    kp_sync_group_request_init(&q);
    q.group_id = kp_str_from("bench-group");
    q.generation_id = g_m[i].generation;
    q.member_id = kp_str_from(g_m[i].id);
    q.group_instance_id = KP_STR_NULL;
    q.protocol_type = kp_str_from("consumer");
    q.protocol_name = kp_str_from("range");
    struct kp_sync_group_request_sync_group_request_assignment as[MAX_MEMBERS];
    static const uint8_t assignment[] = {0, 0, 0, 0, 0, 1, 0, 5, 'b', 'e', 'n', 'c', 'h',
                                         0, 0, 0, 1, 0, 0, 0, 0, 0,   0,   0,   0};
    q.assignments_count = 0;
    if (g_m[i].leader) {
        for (int k = 0; k < g_n_ids; k++) {
            kp_sync_group_request_sync_group_request_assignment_init(&as[k]);
            as[k].member_id = kp_str_from(g_ids[k]);
            as[k].assignment = (struct kp_bytes){assignment, sizeof(assignment)};
        }
        q.assignments = as;
        q.assignments_count = g_n_ids;
    }
    send_group((int64_t)i * 4 + 1, 14, 5, &q);
}

static void on_answer(int64_t ticket, const struct kp_bytes *body)
{
    int i = (int)(ticket / 4);
    int kind = (int)(ticket % 4);
    struct kp_reader r;
    kp_reader_init(&r, body->ptr, (size_t)body->len);
    kp_arena_reset(&g_arena);
    if (kind == 0) {
        struct kp_join_group_response rs;
        kp_join_group_response_init(&rs);
        if (kp_join_group_response_decode(&r, 9, &g_arena, &rs) != 0) {
            fprintf(stderr, "bad join answer\n");
            exit(1);
        }
        snprintf(g_m[i].id, sizeof(g_m[i].id), "%.*s", (int)rs.member_id.len, rs.member_id.ptr);
        if (rs.error_code == 79) { /* MEMBER_ID_REQUIRED */
            send_join(i);
            return;
        }
        if (rs.error_code != 0) {
            fprintf(stderr, "join error %d\n", rs.error_code);
            exit(1);
        }
        g_m[i].generation = rs.generation_id;
        g_m[i].leader = rs.members_count > 0;
        if (g_m[i].leader) {
            g_n_ids = rs.members_count;
            for (int k = 0; k < rs.members_count; k++) {
                snprintf(g_ids[k], sizeof(g_ids[k]), "%.*s", (int)rs.members[k].member_id.len,
                         rs.members[k].member_id.ptr);
            }
        }
        g_m[i].joined = true;
        g_joined++;
        send_sync(i);
    } else if (kind == 1) {
        struct kp_sync_group_response rs;
        kp_sync_group_response_init(&rs);
        if (kp_sync_group_response_decode(&r, 5, &g_arena, &rs) != 0 || rs.error_code != 0) {
            fprintf(stderr, "sync error %d\n", rs.error_code);
            exit(1);
        }
        g_m[i].synced = true;
        g_synced++;
    } else {
        g_outstanding--;
        g_commits_done++;
        if (g_commit_parts > 0) { /* a commit (leaves come after the commit runs) */
            struct kp_offset_commit_response rs;
            kp_offset_commit_response_init(&rs);
            if (kp_offset_commit_response_decode(&r, 8, &g_arena, &rs) != 0 ||
                rs.topics_count != 1 || rs.topics[0].partitions[0].error_code != 0) {
                fprintf(stderr, "commit refused (error %d)\n",
                        rs.topics_count == 1 ? rs.topics[0].partitions[0].error_code : -1);
                exit(1);
            }
        }
    }
}

static void reset_round(void)
{
    for (int i = 0; i < g_n; i++) {
        g_m[i].joined = false;
        g_m[i].synced = false;
    }
    g_joined = 0;
    g_synced = 0;
}

static double run_round(bool first)
{
    reset_round();
    double t0 = now_s();
    int leader = 0;
    for (int i = 0; i < g_n; i++) {
        if (g_m[i].leader) {
            leader = i;
        }
    }
    if (!first) {
        send_join(leader); /* the leader's rejoin starts the rebalance; the others follow */
    }
    for (int i = 0; i < g_n; i++) {
        if (first || i != leader) {
            send_join(i);
        }
    }
    while (g_synced < g_n) {
        uv_run(&g_loop, UV_RUN_ONCE);
    }
    return (now_s() - t0) * 1000;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void send_commit(void)
{
    struct kp_offset_commit_request q;
    kp_offset_commit_request_init(&q);
    struct kp_offset_commit_request_offset_commit_request_topic t;
    kp_offset_commit_request_offset_commit_request_topic_init(&t);
    struct kp_offset_commit_request_offset_commit_request_partition ps[100];
    for (int k = 0; k < g_commit_parts; k++) {
        kp_offset_commit_request_offset_commit_request_partition_init(&ps[k]);
        ps[k].partition_index = k;
        ps[k].committed_offset = ++g_offset;
        ps[k].committed_leader_epoch = -1;
        ps[k].committed_metadata = kp_str_from("");
    }
    t.name = kp_str_from("bench");
    t.partitions = ps;
    t.partitions_count = g_commit_parts;
    q.group_id = kp_str_from("bench-group");
    q.generation_id_or_member_epoch = g_m[0].generation;
    q.member_id = kp_str_from(g_m[0].id);
    q.group_instance_id = KP_STR_NULL;
    q.topics = &t;
    q.topics_count = 1;
    g_outstanding++;
    send_group(2, 8, 8, &q);
}

static void run_commits(double seconds, int parts)
{
    g_commit_parts = parts;
    g_commits_done = 0;
    double t0 = now_s();
    g_stop = false;
    while (!g_stop) {
        while (g_outstanding < 64) {
            send_commit();
        }
        uv_run(&g_loop, UV_RUN_ONCE);
        g_stop = now_s() - t0 >= seconds;
    }
    while (g_outstanding > 0) {
        uv_run(&g_loop, UV_RUN_ONCE);
    }
    double el = now_s() - t0;
    printf("  offset commits, 64 in flight, %3d partitions each: %.0f commits/s (%.0f "
           "partition offsets/s)\n",
           parts, g_commits_done / el, g_commits_done * (double)parts / el);
}

static int g_created;

static void on_create(void *arg, int status, const void *resp)
{
    (void)arg;
    (void)resp;
    g_created = status == 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3;
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/runnel-bench-groups-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return 1;
    }
    int port = 20000 + getpid() % 20000;
    pid_t pid = fork();
    if (pid == 0) {
        server_child(dir, port);
    }
    kp_arena_init(&g_arena, 16u << 20);
    uv_loop_init(&g_loop);
    meta_client_open(&g_cli, &g_loop, "127.0.0.1", port);
    meta_client_set_push_cb(g_cli, on_push, NULL);
    struct kp_meta_create_topics_request ct;
    kp_meta_create_topics_request_init(&ct);
    struct kp_meta_create_topics_request_meta_creatable_topic t;
    kp_meta_create_topics_request_meta_creatable_topic_init(&t);
    t.name = kp_str_from("bench");
    t.num_partitions = 100;
    ct.topics = &t;
    ct.topics_count = 1;
    while (!g_created) {
        meta_client_call(g_cli, 1001, &ct, on_create, NULL);
        while (meta_client_in_flight(g_cli) > 0) {
            uv_run(&g_loop, UV_RUN_ONCE);
        }
        if (!g_created) {
            usleep(50000);
        }
    }
    printf("consumer group benchmark (real RPC over loopback + journal with fdatasync, %s)\n", dir);
    int sizes[] = {10, 100};
    for (int s = 0; s < 2; s++) {
        memset(g_m, 0, sizeof(g_m));
        g_n = sizes[s];
        /* A fresh group per size: members of the previous one would never rejoin. */
        double form = run_round(true);
        enum { ROUNDS = 9 };
        double ms[ROUNDS];
        for (int r = 0; r < ROUNDS; r++) {
            ms[r] = run_round(false);
        }
        qsort(ms, ROUNDS, sizeof(double), cmp_d);
        printf("  group of %3d members: first formation %.0f ms (includes the 3 s initial "
               "delay); rebalance median %.2f ms, max %.2f ms over %d rounds\n",
               g_n, form, ms[ROUNDS / 2], ms[ROUNDS - 1], ROUNDS);
        if (s == 0) {
            run_commits(seconds, 1);
            run_commits(seconds, 100);
            g_commit_parts = 0;
        }
        /* Leave: the next size starts from an empty group. */
        for (int i = 0; i < g_n; i++) {
            struct kp_leave_group_request q;
            kp_leave_group_request_init(&q);
            struct kp_leave_group_request_member_identity mi;
            kp_leave_group_request_member_identity_init(&mi);
            mi.member_id = kp_str_from(g_m[i].id);
            mi.group_instance_id = KP_STR_NULL;
            mi.reason = KP_STR_NULL;
            q.group_id = kp_str_from("bench-group");
            q.members = &mi;
            q.members_count = 1;
            g_outstanding++;
            send_group((int64_t)i * 4 + 2, 13, 5, &q);
        }
        while (g_outstanding > 0) {
            uv_run(&g_loop, UV_RUN_ONCE);
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    meta_client_close(g_cli);
    uv_run(&g_loop, UV_RUN_DEFAULT);
    kp_arena_free(&g_arena);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
