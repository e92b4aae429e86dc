/*
 * The metadata server and client library together on one libuv loop over loopback TCP: Hello,
 * topic admin, pipelined commits answered in order, Lookup, ListOffsets, Watch pushes,
 * InitProducerId, agents and leases, unknown api handling, state surviving a restart, and a
 * failed journal (test hook) turning commits into KAFKA_STORAGE_ERROR instead of acks.
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <uv.h>

#include "runnel/metadata/client.h"
#include "runnel/metadata/server.h"
#include "runnel/protocol/errors.h"

struct env {
    uv_loop_t loop;          /* test loop */
    struct meta_server *srv; /* server under test */
    struct meta_client *cli; /* client */
    char dir[64];            /* data directory */
    int done;                /* completed callbacks */
    int pushes;              /* push callbacks */
    int64_t push_hwm;        /* last pushed high watermark */
    int64_t bases[64];       /* commit base offsets by callback order */
    int16_t errors[64];      /* commit errors by callback order */
    int order[64];           /* arg of each completion, in order */
    struct kp_uuid topic_id; /* created topic */
    int16_t last_error;      /* error of the last simple response */
    int64_t last_i64;        /* a value of the last response */
    int32_t last_i32;        /* another */
    int64_t span;            /* last - base offset of the first looked-up extent */
    char key[32];            /* its object key */
};

static void run_until(struct env *e, int *counter, int target)
{
    for (int i = 0; i < 20000 && *counter < target; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    assert_true(*counter >= target);
}

static void start(struct env *e, bool fresh)
{
    if (fresh) {
        snprintf(e->dir, sizeof(e->dir), "/tmp/runnel-test-server-XXXXXX");
        assert_non_null(mkdtemp(e->dir));
    }
    uv_loop_init(&e->loop);
    struct meta_server_options o;
    meta_server_options_default(&o);
    o.data_dir = e->dir;
    o.port = 0;
    char err[256];
    assert_int_equal(meta_server_open(&e->srv, &e->loop, &o, err, sizeof(err)), 0);
    assert_int_equal(meta_client_open(&e->cli, &e->loop, "127.0.0.1", meta_server_port(e->srv)), 0);
}

static void stop(struct env *e, bool remove)
{
    meta_client_close(e->cli);
    meta_server_close(e->srv);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    if (remove) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
        assert_int_equal(system(cmd), 0);
    }
}

static void on_hello(void *arg, int status, const void *resp)
{
    struct env *e = arg;
    assert_int_equal(status, 0);
    const struct kp_meta_hello_response *r = resp;
    e->last_error = r->error_code;
    e->last_i32 = r->api_keys_count;
    e->done++;
}

static void on_create(void *arg, int status, const void *resp)
{
    struct env *e = arg;
    assert_int_equal(status, 0);
    const struct kp_meta_create_topics_response *r = resp;
    assert_int_equal(r->topics_count, 2);
    assert_int_equal(r->topics[0].error_code, 0);
    assert_int_equal(r->topics[0].num_partitions, 3);
    assert_true(r->topics[0].configs_count > 5);
    assert_int_equal(r->topics[1].error_code, KP_ERROR_INVALID_TOPIC_EXCEPTION);
    e->topic_id = r->topics[0].topic_id;
    e->done++;
}

struct commit_arg {
    struct env *e; /* test env */
    int i;         /* request number */
};

static void on_commit(void *arg, int status, const void *resp)
{
    struct commit_arg *a = arg;
    struct env *e = a->e;
    assert_int_equal(status, 0);
    const struct kp_meta_commit_response *r = resp;
    e->order[e->done] = a->i;
    e->errors[a->i] = r->error_code;
    e->bases[a->i] = r->error_code == 0 ? r->partitions[0].base_offset : -1;
    if (r->error_code == 0) {
        assert_int_equal(r->partitions[0].error_code, 0);
        assert_int_equal(r->partitions[0].ranges_count, 1);
    }
    e->done++;
}

static void send_commit(struct env *e, struct commit_arg *a, const char *key, int32_t part,
                        int32_t records, int64_t ts)
{
    struct kp_meta_commit_request rq;
    kp_meta_commit_request_init(&rq);
    struct kp_meta_commit_request_meta_commit_partition p;
    kp_meta_commit_request_meta_commit_partition_init(&p);
    struct kp_meta_commit_request_meta_commit_range r;
    kp_meta_commit_request_meta_commit_range_init(&r);
    r.record_count = records;
    r.max_timestamp = ts;
    r.raw_offset = 0;
    r.raw_length = 100;
    p.topic_id = e->topic_id;
    p.partition_index = part;
    p.chunk_offset = 0;
    p.chunk_length = 100;
    p.ranges = &r;
    p.ranges_count = 1;
    rq.object_key = kp_str_from(key);
    rq.object_size = 100;
    rq.object_created_ms = (int64_t)time(NULL) * 1000;
    rq.partitions = &p;
    rq.partitions_count = 1;
    assert_int_equal(meta_client_call(e->cli, 1006, &rq, on_commit, a), 0);
}

static void on_lookup(void *arg, int status, const void *resp)
{
    struct env *e = arg;
    assert_int_equal(status, 0);
    const struct kp_meta_lookup_response *r = resp;
    assert_int_equal(r->partitions_count, 1);
    e->last_error = r->partitions[0].error_code;
    e->last_i64 = r->partitions[0].high_watermark;
    e->last_i32 = r->partitions[0].extents_count;
    e->span = -1;
    e->key[0] = '\0';
    if (r->partitions[0].extents_count > 0) {
        e->span = r->partitions[0].extents[0].last_offset - r->partitions[0].extents[0].base_offset;
        snprintf(e->key, sizeof(e->key), "%.*s", (int)r->partitions[0].extents[0].object_key.len,
                 r->partitions[0].extents[0].object_key.ptr);
    }
    e->done++;
}

static void on_list_offsets(void *arg, int status, const void *resp)
{
    struct env *e = arg;
    assert_int_equal(status, 0);
    const struct kp_meta_list_offsets_response *r = resp;
    assert_int_equal(r->partitions_count, 3);
    assert_int_equal(r->partitions[0].offset, 50); /* latest */
    assert_int_equal(r->partitions[1].offset, 0);  /* earliest */
    assert_int_equal(r->partitions[2].offset, 20); /* first extent with max ts >= 1002 */
    assert_int_equal(r->partitions[2].timestamp, 1002);
    e->done++;
}

static void on_watch(void *arg, int status, const void *resp)
{
    struct env *e = arg;
    assert_int_equal(status, 0);
    const struct kp_meta_watch_response *r = resp;
    assert_int_equal(r->partitions_count, 1);
    assert_int_equal(r->partitions[0].high_watermark, 50);
    e->done++;
}

static void on_push(void *arg, const struct kp_meta_notify_response *n)
{
    struct env *e = arg;
    for (int32_t i = 0; i < n->partitions_count; i++) {
        e->push_hwm = n->partitions[i].high_watermark;
    }
    e->pushes++;
}

static void on_init_pid(void *arg, int status, const void *resp)
{
    struct env *e = arg;
    assert_int_equal(status, 0);
    const struct kp_meta_init_producer_id_response *r = resp;
    e->last_error = r->error_code;
    e->last_i64 = r->producer_id;
    e->last_i32 = r->producer_epoch;
    e->done++;
}

static void on_lease(void *arg, int status, const void *resp)
{
    struct env *e = arg;
    assert_int_equal(status, 0);
    const struct kp_meta_acquire_lease_response *r = resp;
    e->last_error = r->error_code;
    e->last_i32 = r->holder;
    e->done++;
}

/* The snapshot interval: snapshot.bytes for a small state, a share of the state when larger. */
static void test_snapshot_due(void **state)
{
    (void)state;
    struct meta_server_options o;
    meta_server_options_default(&o);
    assert_int_equal(o.snapshot_state_pct, 100);
    assert_int_equal(meta_snapshot_due_bytes(0, &o), 256u << 20);
    assert_int_equal(meta_snapshot_due_bytes(1000000, &o), 256u << 20); /* 44 MB of state */
    assert_int_equal(meta_snapshot_due_bytes(10000000, &o), 440000000u);
    o.snapshot_state_pct = 50;
    assert_int_equal(meta_snapshot_due_bytes(10000000, &o), 256u << 20);
    assert_int_equal(meta_snapshot_due_bytes(20000000, &o), 440000000u);
    o.snapshot_state_pct = 0;
    assert_int_equal(meta_snapshot_due_bytes(20000000, &o), 256u << 20);
    o.snapshot_bytes = 1;
    assert_int_equal(meta_snapshot_due_bytes(20000000, &o), 1);
}

static void test_server_roundtrip(void **state)
{
    (void)state;
    struct env *e = calloc(1, sizeof(*e));
    start(e, true);
    meta_client_set_push_cb(e->cli, on_push, e);

    struct kp_meta_hello_request h;
    kp_meta_hello_request_init(&h);
    h.client_name = kp_str_from("test");
    h.client_version = kp_str_from("0");
    assert_int_equal(meta_client_call(e->cli, 1000, &h, on_hello, e), 0);
    run_until(e, &e->done, 1);
    assert_int_equal(e->last_error, 0);
    assert_int_equal(e->last_i32, 16);

    struct kp_meta_create_topics_request ct;
    kp_meta_create_topics_request_init(&ct);
    struct kp_meta_create_topics_request_meta_creatable_topic t[2];
    kp_meta_create_topics_request_meta_creatable_topic_init(&t[0]);
    kp_meta_create_topics_request_meta_creatable_topic_init(&t[1]);
    t[0].name = kp_str_from("orders");
    t[0].num_partitions = 3;
    t[1].name = kp_str_from("bad/name");
    t[1].num_partitions = 1;
    ct.topics = t;
    ct.topics_count = 2;
    assert_int_equal(meta_client_call(e->cli, 1001, &ct, on_create, e), 0);
    run_until(e, &e->done, 2);

    /* Five pipelined commits, answered in order with consecutive offsets. */
    e->done = 0;
    struct commit_arg ca[8];
    char keys[8][16];
    for (int i = 0; i < 5; i++) {
        ca[i] = (struct commit_arg){e, i};
        snprintf(keys[i], sizeof(keys[i]), "obj-%d", i);
        send_commit(e, &ca[i], keys[i], 0, 10, 1000 + i);
    }
    run_until(e, &e->done, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(e->order[i], i);
        assert_int_equal(e->errors[i], 0);
        assert_int_equal(e->bases[i], 10 * i);
    }
    /* The same key again is refused (already committed). */
    ca[5] = (struct commit_arg){e, 5};
    send_commit(e, &ca[5], "obj-1", 0, 10, 0);
    run_until(e, &e->done, 6);
    assert_int_equal(e->errors[5], KP_ERROR_DUPLICATE_RESOURCE);

    struct kp_meta_lookup_request lk;
    kp_meta_lookup_request_init(&lk);
    struct kp_meta_lookup_request_meta_lookup_partition lp;
    kp_meta_lookup_request_meta_lookup_partition_init(&lp);
    lp.topic_id = e->topic_id;
    lp.partition_index = 0;
    lp.offset = 25;
    lp.max_bytes = 150;
    lk.partitions = &lp;
    lk.partitions_count = 1;
    e->done = 0;
    assert_int_equal(meta_client_call(e->cli, 1007, &lk, on_lookup, e), 0);
    run_until(e, &e->done, 1);
    assert_int_equal(e->last_error, 0);
    assert_int_equal(e->last_i64, 50);
    assert_int_equal(e->last_i32, 1); /* 100 raw bytes each, max 150 */
    assert_int_equal(e->span, 9);
    assert_string_equal(e->key, "obj-2");
    lp.offset = 51;
    assert_int_equal(meta_client_call(e->cli, 1007, &lk, on_lookup, e), 0);
    run_until(e, &e->done, 2);
    assert_int_equal(e->last_error, KP_ERROR_OFFSET_OUT_OF_RANGE);

    struct kp_meta_list_offsets_request lo;
    kp_meta_list_offsets_request_init(&lo);
    struct kp_meta_list_offsets_request_meta_list_offsets_partition lop[3];
    int64_t tss[3] = {-1, -2, 1002};
    for (int i = 0; i < 3; i++) {
        kp_meta_list_offsets_request_meta_list_offsets_partition_init(&lop[i]);
        lop[i].topic_id = e->topic_id;
        lop[i].partition_index = 0;
        lop[i].timestamp = tss[i];
    }
    lo.partitions = lop;
    lo.partitions_count = 3;
    assert_int_equal(meta_client_call(e->cli, 1008, &lo, on_list_offsets, e), 0);
    run_until(e, &e->done, 3);

    /* Watch, then a commit pushes the new high watermark. */
    struct kp_meta_watch_request w;
    kp_meta_watch_request_init(&w);
    struct kp_meta_watch_request_meta_watch_partition wp;
    kp_meta_watch_request_meta_watch_partition_init(&wp);
    wp.topic_id = e->topic_id;
    wp.partition_index = 0;
    w.add = &wp;
    w.add_count = 1;
    assert_int_equal(meta_client_call(e->cli, 1010, &w, on_watch, e), 0);
    run_until(e, &e->done, 4);
    e->done = 0;
    ca[6] = (struct commit_arg){e, 6};
    send_commit(e, &ca[6], "obj-6", 0, 7, 0);
    run_until(e, &e->pushes, 1);
    assert_int_equal(e->push_hwm, 57);
    run_until(e, &e->done, 1);

    struct kp_meta_init_producer_id_request ip;
    kp_meta_init_producer_id_request_init(&ip);
    e->done = 0;
    assert_int_equal(meta_client_call(e->cli, 1009, &ip, on_init_pid, e), 0);
    run_until(e, &e->done, 1);
    assert_int_equal(e->last_error, 0);
    int64_t pid = e->last_i64;
    assert_true(pid > 0);
    ip.producer_id = pid;
    ip.producer_epoch = 0;
    assert_int_equal(meta_client_call(e->cli, 1009, &ip, on_init_pid, e), 0);
    run_until(e, &e->done, 2);
    assert_int_equal(e->last_i64, pid);
    assert_int_equal(e->last_i32, 1);

    struct kp_meta_acquire_lease_request al;
    kp_meta_acquire_lease_request_init(&al);
    al.name = kp_str_from("gc");
    al.holder = 7;
    al.duration_ms = 60000;
    assert_int_equal(meta_client_call(e->cli, 1014, &al, on_lease, e), 0);
    run_until(e, &e->done, 3);
    assert_int_equal(e->last_i32, 7);
    al.holder = 8;
    assert_int_equal(meta_client_call(e->cli, 1014, &al, on_lease, e), 0);
    run_until(e, &e->done, 4);
    assert_int_equal(e->last_i32, 7);
    stop(e, false);

    /* Restart: everything acknowledged is still there. */
    memset(&e->loop, 0, sizeof(e->loop));
    e->done = 0;
    start(e, false);
    lp.offset = 50;
    lp.max_bytes = 1 << 20;
    assert_int_equal(meta_client_call(e->cli, 1007, &lk, on_lookup, e), 0);
    run_until(e, &e->done, 1);
    assert_int_equal(e->last_error, 0);
    assert_int_equal(e->last_i64, 57);
    assert_int_equal(e->last_i32, 1);
    assert_int_equal(e->span, 6);
    assert_string_equal(e->key, "obj-6");
    stop(e, true);
    free(e);
}

static void test_server_fsync_failure(void **state)
{
    (void)state;
    struct env *e = calloc(1, sizeof(*e));
    start(e, true);
    char hook[128];
    snprintf(hook, sizeof(hook), "%s/fail", e->dir);
    setenv("RUNNEL_META_FAIL_FSYNC_FILE", hook, 1);
    struct kp_meta_create_topics_request ct;
    kp_meta_create_topics_request_init(&ct);
    struct kp_meta_create_topics_request_meta_creatable_topic t[2];
    kp_meta_create_topics_request_meta_creatable_topic_init(&t[0]);
    kp_meta_create_topics_request_meta_creatable_topic_init(&t[1]);
    t[0].name = kp_str_from("orders");
    t[0].num_partitions = 3;
    t[1].name = kp_str_from("..");
    t[1].num_partitions = 1;
    ct.topics = t;
    ct.topics_count = 2;
    assert_int_equal(meta_client_call(e->cli, 1001, &ct, on_create, e), 0);
    run_until(e, &e->done, 1);
    e->done = 0;
    struct commit_arg ca[4];
    ca[0] = (struct commit_arg){e, 0};
    send_commit(e, &ca[0], "ok", 0, 1, 0);
    run_until(e, &e->done, 1);
    assert_int_equal(e->errors[0], 0);
    FILE *f = fopen(hook, "w");
    assert_non_null(f);
    fclose(f);
    for (int i = 1; i < 4; i++) {
        ca[i] = (struct commit_arg){e, i};
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        send_commit(e, &ca[i], key, 0, 1, 0);
    }
    run_until(e, &e->done, 4);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(e->errors[i], KP_ERROR_KAFKA_STORAGE_ERROR);
    }
    unsetenv("RUNNEL_META_FAIL_FSYNC_FILE");
    stop(e, false);
    /* After restart the acknowledged commit exists. */
    memset(&e->loop, 0, sizeof(e->loop));
    start(e, false);
    struct kp_meta_lookup_request lk;
    kp_meta_lookup_request_init(&lk);
    struct kp_meta_lookup_request_meta_lookup_partition lp;
    kp_meta_lookup_request_meta_lookup_partition_init(&lp);
    lp.topic_id = e->topic_id;
    lp.partition_index = 0;
    lp.offset = 0;
    lp.max_bytes = 1000;
    lk.partitions = &lp;
    lk.partitions_count = 1;
    e->done = 0;
    assert_int_equal(meta_client_call(e->cli, 1007, &lk, on_lookup, e), 0);
    run_until(e, &e->done, 1);
    /* The acknowledged commit is there; the refused ones may or may not have reached the disk
     * (a failed fdatasync says nothing either way), exactly like a commit whose reply was lost. */
    assert_string_equal(e->key, "ok");
    assert_true(e->last_i64 >= 1 && e->last_i64 <= 4);
    stop(e, true);
    free(e);
}

/* Sends raw bytes on a fresh socket, pumps the loop, returns what came back (-1: closed with
 * nothing). */
static ssize_t raw_exchange(struct env *e, const uint8_t *req, size_t len, uint8_t *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(meta_server_port(e->srv)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(write(fd, req, len), (ssize_t)len);
    ssize_t got = 0;
    for (int i = 0; i < 5000; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        ssize_t n = recv(fd, out + got, cap - (size_t)got, MSG_DONTWAIT);
        if (n > 0) {
            got += n;
            if (got >= 4) {
                uint32_t size = (uint32_t)out[0] << 24 | (uint32_t)out[1] << 16 |
                                (uint32_t)out[2] << 8 | out[3];
                if ((size_t)got >= 4 + size) {
                    break;
                }
            }
        } else if (n == 0) {
            got = got > 0 ? got : -1;
            break;
        }
        usleep(200);
    }
    close(fd);
    return got;
}

static void test_server_bad_input(void **state)
{
    (void)state;
    struct env *e = calloc(1, sizeof(*e));
    start(e, true);
    uint8_t out[4096];
    /* Hello at an unknown version: a v0 body with UNSUPPORTED_VERSION, like ApiVersions. */
    const uint8_t hello_v9[] = {0, 0, 0, 12, 0x03, 0xe8, 0, 9, 0, 0, 0, 42, 0xff, 0xff, 0, 0};
    ssize_t n = raw_exchange(e, hello_v9, sizeof(hello_v9), out, sizeof(out));
    assert_true(n >= 11);
    assert_int_equal(out[4] << 24 | out[5] << 16 | out[6] << 8 | out[7], 42); /* correlation */
    assert_int_equal(out[8], 0);                                              /* no tags */
    assert_int_equal(out[9] << 8 | out[10], KP_ERROR_UNSUPPORTED_VERSION);
    /* An unknown api key closes the connection. */
    const uint8_t unknown[] = {0, 0, 0, 12, 0x07, 0xd0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0};
    assert_int_equal(raw_exchange(e, unknown, sizeof(unknown), out, sizeof(out)), -1);
    /* A negative or huge frame size closes it too. */
    const uint8_t neg[] = {0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0};
    assert_int_equal(raw_exchange(e, neg, sizeof(neg), out, sizeof(out)), -1);
    const uint8_t huge[] = {0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    assert_int_equal(raw_exchange(e, huge, sizeof(huge), out, sizeof(out)), -1);
    /* A truncated Commit body closes the connection and changes nothing. */
    const uint8_t commit_short[] = {0, 0, 0, 14,   0x03, 0xee, 0, 0,   0,
                                    0, 0, 2, 0xff, 0xff, 0,    5, 'a', 'b'};
    assert_int_equal(raw_exchange(e, commit_short, sizeof(commit_short), out, sizeof(out)), -1);
    /* The server still serves well-formed clients. */
    struct kp_meta_hello_request h;
    kp_meta_hello_request_init(&h);
    h.client_name = kp_str_from("test");
    h.client_version = kp_str_from("0");
    assert_int_equal(meta_client_call(e->cli, 1000, &h, on_hello, e), 0);
    run_until(e, &e->done, 1);
    assert_int_equal(e->last_error, 0);
    stop(e, true);
    free(e);
}

int run_test_server(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_due),
        cmocka_unit_test(test_server_roundtrip),
        cmocka_unit_test(test_server_bad_input),
        cmocka_unit_test(test_server_fsync_failure),
    };
    return cmocka_run_group_tests_name("server", tests, NULL, NULL);
}
