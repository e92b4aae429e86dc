/*
 * The read path (agent/src/fetch.c, list_offsets.c) on one libuv loop: a real agent listener
 * with its write path, an in-process metadata server over loopback and a mem:// store. Raw
 * client sockets send Produce, Fetch and ListOffsets frames built with the generated codec and
 * check: base offsets rewritten per batch across objects, the cut at the batch holding
 * fetch_offset, high watermark / last stable offset / log start, aborted_transactions null or
 * empty by isolation level, session_id 0 and incremental sessions refused,
 * OFFSET_OUT_OF_RANGE and UNKNOWN_TOPIC_OR_PARTITION, long polls woken by a produce on another
 * connection and long polls that time out empty, KIP-74 at the response level, fresh objects
 * served from the cache without a GET, and ListOffsets -1/-2/-3/by timestamp.
 */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "agent.h"
#include "agent_env.h"
#include "cache.h"
#include "runnel/metadata/client.h"
#include "runnel/metadata/server.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/records.h"

static struct agent_env *drain_env;

static void on_push(void *arg, const struct kp_meta_notify_response *n)
{
    agent_fetch_on_notify(arg, n);
}

static void on_created(void *arg, int status, const void *resp)
{
    struct agent_env *e = arg;
    assert_int_equal(status, 0);
    const struct kp_meta_create_topics_response *r = resp;
    assert_int_equal(r->topics[0].error_code, 0);
    e->done++;
}

static void create_topic(struct agent_env *e, const char *name, int32_t parts)
{
    struct kp_meta_create_topics_request rq;
    kp_meta_create_topics_request_init(&rq);
    struct kp_meta_create_topics_request_meta_creatable_topic t;
    kp_meta_create_topics_request_meta_creatable_topic_init(&t);
    t.name = kp_str_from(name);
    t.num_partitions = parts;
    rq.topics = &t;
    rq.topics_count = 1;
    int before = e->done;
    assert_int_equal(meta_client_call(e->a.meta, 1001, &rq, on_created, e), 0);
    agent_env_pump(e, &e->done, before + 1);
}

static void start_with_cache(struct agent_env *e, int64_t cache_bytes)
{
    agent_env_open(e, "fetch");
    struct agent *a = &e->a;
    a->cfg.flush_bytes = 1 << 20;
    a->cfg.buffer_max_bytes = 64 << 20;
    a->cfg.cache_bytes = cache_bytes;
    a->cfg.zstd_level = 1;
    a->cfg.default_partitions = 1;
    char err[256];
    assert_int_equal(store_open(&e->loop, "mem://", NULL, &a->store, err, sizeof(err)), 0);
    meta_client_set_push_cb(a->meta, on_push, a);
    assert_int_equal(agent_produce_init(a), 0);
    assert_int_equal(agent_fetch_init(a), 0);
    agent_env_listen(e, 2);
}

static void start(struct agent_env *e)
{
    start_with_cache(e, 64 << 20);
}

static void on_drained(struct agent *a)
{
    (void)a;
    drain_env->drained++;
}

static void stop(struct agent_env *e)
{
    close(e->fd[0]);
    close(e->fd[1]);
    drain_env = e;
    agent_fetch_drain(&e->a);
    agent_produce_drain(&e->a, on_drained);
    agent_env_pump(e, &e->drained, 1);
    agent_server_stop(&e->a);
    agent_fetch_free(&e->a);
    agent_produce_free(&e->a);
    agent_topics_free(&e->a);
    meta_client_close(e->a.meta);
    store_close(e->a.store);
    agent_env_close(e);
}

/* True when a whole response is waiting on connection c after a few loop turns. */
static bool response_ready(struct agent_env *e, int c, int turns)
{
    uint8_t b;
    for (int i = 0; i < turns; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    return recv(e->fd[c], &b, 1, MSG_DONTWAIT | MSG_PEEK) == 1;
}

/* Produces one batch of n records (values of vlen bytes, timestamps ts, ts+1...) and waits. */
static int64_t produce(struct agent_env *e, const char *topic, int32_t partition, int n,
                       size_t vlen, int64_t ts)
{
    struct kp_record_in recs[16];
    uint8_t *val = malloc(vlen + 1);
    memset(val, 'x', vlen);
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        memset(&recs[i], 0, sizeof(recs[i]));
        recs[i].key = (struct kp_bytes){(const uint8_t *)"k", 1};
        recs[i].value = (struct kp_bytes){val, (int32_t)vlen};
        recs[i].timestamp = ts + i;
    }
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    uint8_t *b = NULL;
    size_t blen = 0;
    assert_int_equal(kp_batch_build(&spec, recs, (size_t)n, &b, &blen), 0);
    free(val);
    struct kp_produce_request rq;
    kp_produce_request_init(&rq);
    struct kp_produce_request_topic_produce_data td;
    kp_produce_request_topic_produce_data_init(&td);
    struct kp_produce_request_partition_produce_data pd;
    kp_produce_request_partition_produce_data_init(&pd);
    pd.index = partition;
    pd.records = (struct kp_bytes){b, (int32_t)blen};
    td.name = kp_str_from(topic);
    td.partition_data = &pd;
    td.partition_data_count = 1;
    rq.acks = -1;
    rq.timeout_ms = 30000;
    rq.topic_data = &td;
    rq.topic_data_count = 1;
    agent_env_send(e, 1, 0, 9, 77, "test", &rq);
    free(b);
    struct kp_produce_response *r = kp_arena_calloc(&e->arena, 1, sizeof(*r));
    assert_int_equal(agent_env_recv(e, 1, 0, 9, 100000, r, NULL), 77);
    assert_int_equal(r->responses[0].partition_responses[0].error_code, 0);
    return r->responses[0].partition_responses[0].base_offset;
}

struct fpart {
    int32_t partition;
    int64_t offset;
    int32_t max_bytes;
};

static void send_fetch(struct agent_env *e, int c, int16_t version, int32_t corr, const char *topic,
                       const struct fpart *parts, int n, int32_t max_wait, int32_t max_bytes,
                       int8_t isolation, int32_t session_id)
{
    struct kp_fetch_request rq;
    kp_fetch_request_init(&rq);
    struct kp_fetch_request_fetch_topic ft;
    kp_fetch_request_fetch_topic_init(&ft);
    struct kp_fetch_request_fetch_partition fp[4];
    for (int i = 0; i < n; i++) {
        kp_fetch_request_fetch_partition_init(&fp[i]);
        fp[i].partition = parts[i].partition;
        fp[i].fetch_offset = parts[i].offset;
        fp[i].partition_max_bytes = parts[i].max_bytes;
        fp[i].current_leader_epoch = -1;
    }
    ft.topic = kp_str_from(topic);
    ft.partitions = fp;
    ft.partitions_count = n;
    rq.replica_id = -1;
    rq.max_wait_ms = max_wait;
    rq.min_bytes = 1;
    rq.max_bytes = max_bytes;
    rq.isolation_level = isolation;
    rq.session_id = session_id;
    rq.session_epoch = -1;
    rq.topics = &ft;
    rq.topics_count = 1;
    rq.forgotten_topics_data = NULL;
    rq.forgotten_topics_data_count = 0;
    rq.rack_id = kp_str_from("");
    agent_env_send(e, c, 1, version, corr, "test", &rq);
}

static struct kp_fetch_response *recv_fetch(struct agent_env *e, int c, int16_t version,
                                            int32_t corr)
{
    struct kp_fetch_response *r = kp_arena_calloc(&e->arena, 1, sizeof(*r));
    assert_int_equal(agent_env_recv(e, c, 1, version, 100000, r, NULL), corr);
    return r;
}

/* Base offsets and record counts of the batches in a records field. */
static int batches(struct kp_bytes rec, int64_t *base, int32_t *count, int max)
{
    struct kp_batch_iter it;
    kp_batch_iter_init(&it, rec.ptr, rec.len > 0 ? (size_t)rec.len : 0, 0);
    struct kp_batch b;
    struct kp_batch_err err;
    int n = 0;
    int rc;
    while ((rc = kp_batch_iter_next(&it, &b, &err)) == 1) {
        assert_true(n < max);
        base[n] = b.base_offset;
        count[n] = b.record_count;
        assert_int_equal(b.partition_leader_epoch, 0);
        n++;
    }
    assert_int_equal(rc, 0); /* whole batches with valid CRCs */
    return n;
}

static void test_fetch_offsets_and_cut(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    create_topic(&e, "t", 2);
    assert_int_equal(produce(&e, "t", 0, 3, 10, 1000), 0);
    assert_int_equal(produce(&e, "t", 0, 2, 10, 2000), 3);
    assert_int_equal(produce(&e, "t", 0, 4, 10, 3000), 5);
    assert_int_equal(produce(&e, "t", 1, 1, 10, 4000), 0);

    struct fpart ps[2] = {{0, 0, 1 << 20}, {1, 0, 1 << 20}};
    send_fetch(&e, 0, 12, 1, "t", ps, 2, 500, 50 << 20, 0, 0);
    struct kp_fetch_response *r = recv_fetch(&e, 0, 12, 1);
    assert_int_equal(r->error_code, 0);
    assert_int_equal(r->session_id, 0);
    assert_int_equal(r->responses_count, 1);
    assert_int_equal(r->responses[0].partitions_count, 2);
    struct kp_fetch_response_partition_data *p0 = &r->responses[0].partitions[0];
    assert_int_equal(p0->error_code, 0);
    assert_int_equal(p0->high_watermark, 9);
    assert_int_equal(p0->last_stable_offset, 9);
    assert_int_equal(p0->log_start_offset, 0);
    assert_int_equal(p0->aborted_transactions_count, -1); /* read_uncommitted: null */
    assert_int_equal(p0->preferred_read_replica, -1);
    int64_t base[8];
    int32_t cnt[8];
    assert_int_equal(batches(p0->records, base, cnt, 8), 3);
    assert_int_equal(base[0], 0);
    assert_int_equal(base[1], 3);
    assert_int_equal(base[2], 5);
    assert_int_equal(cnt[2], 4);
    struct kp_fetch_response_partition_data *p1 = &r->responses[0].partitions[1];
    assert_int_equal(p1->high_watermark, 1);
    assert_int_equal(batches(p1->records, base, cnt, 8), 1);

    /* From inside the second batch, read_committed: starts with that batch, aborted empty. */
    struct fpart mid = {0, 4, 1 << 20};
    send_fetch(&e, 0, 12, 2, "t", &mid, 1, 500, 50 << 20, 1, 0);
    r = recv_fetch(&e, 0, 12, 2);
    p0 = &r->responses[0].partitions[0];
    assert_int_equal(p0->aborted_transactions_count, 0);
    assert_int_equal(batches(p0->records, base, cnt, 8), 2);
    assert_int_equal(base[0], 3);
    assert_int_equal(base[1], 5);

    /* The same at v4 (kafka-python) and v17 is not needed here; v4 has no log start. */
    send_fetch(&e, 0, 4, 3, "t", &mid, 1, 500, 50 << 20, 0, 0);
    r = recv_fetch(&e, 0, 4, 3);
    assert_int_equal(batches(r->responses[0].partitions[0].records, base, cnt, 8), 2);

    /* Fresh objects came from the cache: no GET at all. */
    struct agent_cache_stats st;
    agent_cache_get_stats(agent__fetch_cache(&e.a), &st);
    assert_int_equal(st.store_gets, 0);
    assert_true(st.put_objects >= 4);
    stop(&e);
}

/* With a cache that keeps nothing every fetch reads the store (one block GET per chunk: these
 * objects are one block). */
static void test_fetch_from_store(void **state)
{
    (void)state;
    struct agent_env e;
    start_with_cache(&e, 0);
    create_topic(&e, "t", 2);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(produce(&e, "t", i % 2, 3, 2000, 1000), (i / 2) * 3);
    }
    int64_t base[8];
    int32_t cnt[8];
    for (int round = 0; round < 2; round++) {
        struct fpart ps[2] = {{0, 1, 1 << 20}, {1, 3, 1 << 20}};
        send_fetch(&e, 0, 11, 1 + round, "t", ps, 2, 500, 50 << 20, 0, 0);
        struct kp_fetch_response *r = recv_fetch(&e, 0, 11, 1 + round);
        assert_int_equal(batches(r->responses[0].partitions[0].records, base, cnt, 8), 2);
        assert_int_equal(base[0], 0);
        assert_int_equal(base[1], 3);
        assert_int_equal(batches(r->responses[0].partitions[1].records, base, cnt, 8), 1);
        assert_int_equal(base[0], 3);
    }
    struct agent_cache_stats st;
    agent_cache_get_stats(agent__fetch_cache(&e.a), &st);
    assert_int_equal(st.store_gets, 6); /* 3 extents' chunks per round, nothing kept */
    assert_int_equal(st.bytes, 0);
    /* A tiny response limit reads only the one extent it serves (memory stays bounded). */
    struct fpart ps[2] = {{0, 0, 1 << 20}, {1, 0, 1 << 20}};
    send_fetch(&e, 0, 11, 9, "t", ps, 2, 500, 10, 0, 0);
    struct kp_fetch_response *r = recv_fetch(&e, 0, 11, 9);
    assert_int_equal(batches(r->responses[0].partitions[0].records, base, cnt, 8), 1);
    assert_int_equal(r->responses[0].partitions[1].records.len, 0);
    agent_cache_get_stats(agent__fetch_cache(&e.a), &st);
    assert_int_equal(st.store_gets, 7);
    stop(&e);
}

static void test_fetch_errors(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    create_topic(&e, "t", 1);
    produce(&e, "t", 0, 2, 10, 1000);
    struct fpart ps[3] = {{0, 3, 1 << 20}, {0, -1, 1 << 20}, {5, 0, 1 << 20}};
    send_fetch(&e, 0, 12, 1, "t", ps, 3, 5000, 50 << 20, 0, 0);
    struct kp_fetch_response *r = recv_fetch(&e, 0, 12, 1);
    assert_int_equal(r->responses[0].partitions[0].error_code, KP_ERROR_OFFSET_OUT_OF_RANGE);
    assert_int_equal(r->responses[0].partitions[0].high_watermark, 2);
    assert_int_equal(r->responses[0].partitions[1].error_code, KP_ERROR_OFFSET_OUT_OF_RANGE);
    assert_int_equal(r->responses[0].partitions[2].error_code, KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    struct fpart one = {0, 0, 1 << 20};
    send_fetch(&e, 0, 12, 2, "nope", &one, 1, 100, 50 << 20, 0, 0);
    r = recv_fetch(&e, 0, 12, 2);
    assert_int_equal(r->responses[0].partitions[0].error_code, KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    /* An incremental fetch session we never created. */
    send_fetch(&e, 0, 12, 3, "t", &one, 1, 100, 50 << 20, 0, 12345);
    r = recv_fetch(&e, 0, 12, 3);
    assert_int_equal(r->error_code, KP_ERROR_FETCH_SESSION_ID_NOT_FOUND);
    assert_int_equal(r->session_id, 0);
    stop(&e);
}

static void test_long_poll(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    create_topic(&e, "t", 1);
    produce(&e, "t", 0, 2, 10, 1000);
    /* At the high watermark with a long wait: parked until data arrives. */
    struct fpart at_end = {0, 2, 1 << 20};
    send_fetch(&e, 0, 12, 1, "t", &at_end, 1, 30000, 50 << 20, 0, 0);
    assert_false(response_ready(&e, 0, 300));
    produce(&e, "t", 0, 3, 10, 2000); /* on the other connection */
    struct kp_fetch_response *r = recv_fetch(&e, 0, 12, 1);
    int64_t base[4];
    int32_t cnt[4];
    assert_int_equal(batches(r->responses[0].partitions[0].records, base, cnt, 4), 1);
    assert_int_equal(base[0], 2);
    assert_int_equal(cnt[0], 3);
    assert_int_equal(r->responses[0].partitions[0].high_watermark, 5);
    /* A short wait with nothing new: answered empty, no error. */
    struct fpart end2 = {0, 5, 1 << 20};
    send_fetch(&e, 0, 12, 2, "t", &end2, 1, 30, 50 << 20, 0, 0);
    r = recv_fetch(&e, 0, 12, 2);
    assert_int_equal(r->responses[0].partitions[0].error_code, 0);
    assert_int_equal(r->responses[0].partitions[0].records.len, 0);
    /* Shutdown answers a parked fetch. */
    send_fetch(&e, 0, 12, 3, "t", &end2, 1, 30000, 50 << 20, 0, 0);
    assert_false(response_ready(&e, 0, 100));
    agent_fetch_drain(&e.a);
    r = recv_fetch(&e, 0, 12, 3);
    assert_int_equal(r->responses[0].partitions[0].records.len, 0);
    stop(&e);
}

static void test_kip74(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    create_topic(&e, "t", 2);
    produce(&e, "t", 0, 2, 3000, 1000);
    produce(&e, "t", 0, 2, 3000, 1000);
    produce(&e, "t", 1, 2, 3000, 1000);
    int64_t base[4];
    int32_t cnt[4];
    /* Partition limit below one batch: the first batch anyway, only it. */
    struct fpart ps[2] = {{0, 0, 100}, {1, 0, 100}};
    send_fetch(&e, 0, 12, 1, "t", ps, 2, 500, 50 << 20, 0, 0);
    struct kp_fetch_response *r = recv_fetch(&e, 0, 12, 1);
    assert_int_equal(batches(r->responses[0].partitions[0].records, base, cnt, 4), 1);
    /* Partition 1 is not the first with data: its over-limit batch is not returned. */
    assert_int_equal(r->responses[0].partitions[1].records.len, 0);
    assert_int_equal(r->responses[0].partitions[1].error_code, 0);
    /* Response limit: one batch in all, whatever the partition limits. */
    struct fpart big[2] = {{0, 0, 1 << 20}, {1, 0, 1 << 20}};
    send_fetch(&e, 0, 12, 2, "t", big, 2, 500, 10, 0, 0);
    r = recv_fetch(&e, 0, 12, 2);
    assert_int_equal(batches(r->responses[0].partitions[0].records, base, cnt, 4), 1);
    assert_int_equal(r->responses[0].partitions[1].records.len, 0);
    /* Enough room: everything. */
    send_fetch(&e, 0, 12, 3, "t", big, 2, 500, 50 << 20, 0, 0);
    r = recv_fetch(&e, 0, 12, 3);
    assert_int_equal(batches(r->responses[0].partitions[0].records, base, cnt, 4), 2);
    assert_int_equal(base[1], 2);
    assert_int_equal(batches(r->responses[0].partitions[1].records, base, cnt, 4), 1);
    stop(&e);
}

/* With the metadata service gone, a Fetch is still answered (late, with a retriable error). */
static void test_meta_outage(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    create_topic(&e, "t", 2);
    produce(&e, "t", 1, 1, 10, 1000);
    meta_server_close(e.srv);
    e.srv = NULL;
    for (int i = 0; i < 200; i++) {
        uv_run(&e.loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    struct fpart p0 = {0, 0, 1 << 20};
    send_fetch(&e, 0, 12, 1, "t", &p0, 1, 100, 50 << 20, 0, 0);
    struct kp_fetch_response *r = recv_fetch(&e, 0, 12, 1);
    assert_int_equal(r->responses_count, 1);
    assert_int_equal(r->responses[0].partitions[0].partition_index, 0);
    assert_int_equal(r->responses[0].partitions[0].error_code, KP_ERROR_LEADER_NOT_AVAILABLE);
    assert_int_equal(r->responses[0].partitions[0].records.len, 0);
    stop(&e); /* the fetch's queued RPC is cancelled at close; nothing leaks */
}

static void list_offsets(struct agent_env *e, int16_t version, int32_t corr, int64_t ts,
                         int64_t *offset, int64_t *timestamp, int16_t *err)
{
    struct kp_list_offsets_request rq;
    kp_list_offsets_request_init(&rq);
    struct kp_list_offsets_request_list_offsets_topic t;
    kp_list_offsets_request_list_offsets_topic_init(&t);
    struct kp_list_offsets_request_list_offsets_partition p;
    kp_list_offsets_request_list_offsets_partition_init(&p);
    p.partition_index = 0;
    p.timestamp = ts;
    p.current_leader_epoch = -1;
    t.name = kp_str_from("t");
    t.partitions = &p;
    t.partitions_count = 1;
    rq.replica_id = -1;
    rq.topics = &t;
    rq.topics_count = 1;
    agent_env_send(e, 0, 2, version, corr, "test", &rq);
    struct kp_list_offsets_response *r = kp_arena_calloc(&e->arena, 1, sizeof(*r));
    assert_int_equal(agent_env_recv(e, 0, 2, version, 100000, r, NULL), corr);
    assert_int_equal(r->topics_count, 1);
    assert_int_equal(r->topics[0].partitions_count, 1);
    *offset = r->topics[0].partitions[0].offset;
    *timestamp = r->topics[0].partitions[0].timestamp;
    *err = r->topics[0].partitions[0].error_code;
}

static void test_list_offsets(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    create_topic(&e, "t", 1);
    produce(&e, "t", 0, 3, 10, 1000); /* offsets 0-2, ts 1000-1002 */
    produce(&e, "t", 0, 3, 10, 5000); /* offsets 3-5, ts 5000-5002 */
    produce(&e, "t", 0, 2, 10, 2000); /* offsets 6-7, ts 2000-2001 */
    int64_t off;
    int64_t ts;
    int16_t err;
    list_offsets(&e, 7, 1, -1, &off, &ts, &err);
    assert_int_equal(err, 0);
    assert_int_equal(off, 8);
    list_offsets(&e, 1, 2, -2, &off, &ts, &err);
    assert_int_equal(off, 0);
    list_offsets(&e, 7, 3, -3, &off, &ts, &err);
    assert_int_equal(off, 5);
    assert_int_equal(ts, 5002);
    list_offsets(&e, 5, 4, 1001, &off, &ts, &err);
    assert_int_equal(off, 1);
    assert_int_equal(ts, 1001);
    list_offsets(&e, 1, 5, 1500, &off, &ts, &err); /* first record with ts >= 1500 */
    assert_int_equal(off, 3);
    assert_int_equal(ts, 5000);
    list_offsets(&e, 1, 6, 9999, &off, &ts, &err);
    assert_int_equal(err, 0);
    assert_int_equal(off, -1);
    assert_int_equal(ts, -1);
    /* MAX_TIMESTAMP needs v7. */
    list_offsets(&e, 6, 7, -3, &off, &ts, &err);
    assert_int_equal(err, KP_ERROR_UNSUPPORTED_VERSION);
    stop(&e);
}

int run_test_fetch(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fetch_offsets_and_cut),
        cmocka_unit_test(test_fetch_from_store),
        cmocka_unit_test(test_fetch_errors),
        cmocka_unit_test(test_long_poll),
        cmocka_unit_test(test_kip74),
        cmocka_unit_test(test_meta_outage),
        cmocka_unit_test(test_list_offsets),
    };
    return cmocka_run_group_tests_name("fetch", tests, NULL, NULL);
}
