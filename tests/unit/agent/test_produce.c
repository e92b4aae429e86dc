/*
 * The write path (agent/src/produce.c) on one libuv loop: a real agent listener, an in-process
 * metadata server over loopback, and a mem:// (or faulty+mem://) store. A raw client socket
 * sends Produce and InitProducerId frames built with the generated codec and checks the
 * answers: offsets assigned in order across flushes, every validation error code, acks=0 (no
 * answer, order kept), idempotent duplicates and gaps, LogAppendTime, store failures answered
 * with a retriable error and never acknowledged, backpressure and drain.
 */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "agent.h"
#include "agent_env.h"
#include "runnel/metadata/client.h"
#include "runnel/metadata/server.h"
#include "runnel/protocol/compress.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/records.h"

static struct agent_env *drain_env;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_created(void *arg, int status, const void *resp)
{
    struct agent_env *e = arg;
    assert_int_equal(status, 0);
    const struct kp_meta_create_topics_response *r = resp;
    for (int32_t i = 0; i < r->topics_count; i++) {
        assert_int_equal(r->topics[i].error_code, 0);
    }
    e->done++;
}

static void create_topic(struct agent_env *e, const char *name, int32_t parts, const char *cfg_name,
                         const char *cfg_value)
{
    struct kp_meta_create_topics_request rq;
    kp_meta_create_topics_request_init(&rq);
    struct kp_meta_create_topics_request_meta_creatable_topic t;
    kp_meta_create_topics_request_meta_creatable_topic_init(&t);
    struct kp_meta_create_topics_request_meta_creatable_config c;
    kp_meta_create_topics_request_meta_creatable_config_init(&c);
    t.name = kp_str_from(name);
    t.num_partitions = parts;
    if (cfg_name != NULL) {
        c.name = kp_str_from(cfg_name);
        c.value = kp_str_from(cfg_value);
        t.configs = &c;
        t.configs_count = 1;
    }
    rq.topics = &t;
    rq.topics_count = 1;
    int before = e->done;
    assert_int_equal(meta_client_call(e->a.meta, 1001, &rq, on_created, e), 0);
    agent_env_pump(e, &e->done, before + 1);
}

static void start(struct agent_env *e, const char *store_url, int64_t buffer_max)
{
    agent_env_open(e, "produce");
    struct agent *a = &e->a;
    a->cfg.idle_timeout_ms = 0;
    a->cfg.flush_bytes = 1 << 20;
    a->cfg.buffer_max_bytes = buffer_max;
    a->cfg.zstd_level = 1;
    a->cfg.default_partitions = 1;
    char err[256];
    assert_int_equal(store_open(&e->loop, store_url, NULL, &a->store, err, sizeof(err)), 0);
    assert_int_equal(agent_produce_init(a), 0);
    agent_env_listen(e, 1);
}

static void on_drained(struct agent *a)
{
    (void)a;
    drain_env->drained++;
}

static void stop(struct agent_env *e)
{
    close(e->fd[0]);
    drain_env = e;
    agent_produce_drain(&e->a, on_drained);
    agent_env_pump(e, &e->drained, 1);
    agent_server_stop(&e->a);
    agent_produce_free(&e->a);
    agent_topics_free(&e->a);
    meta_client_close(e->a.meta);
    store_close(e->a.store);
    agent_env_close(e);
}

/* Sends one request (header + body encoded with the generated codec). */
static void send_req(struct agent_env *e, int16_t key, int16_t version, int32_t corr,
                     const void *body)
{
    agent_env_send(e, 0, key, version, corr, "test", body);
}

/* Receives one response frame and decodes it as `key`/`version`; returns the correlation id. */
static int32_t recv_resp(struct agent_env *e, int16_t key, int16_t version, void *out)
{
    return agent_env_recv(e, 0, key, version, 50000, out, NULL);
}

/* True when nothing arrives on the socket within a few loop turns. */
static bool nothing_pending(struct agent_env *e)
{
    uint8_t b;
    for (int i = 0; i < 200; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    return recv(e->fd[0], &b, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno == EAGAIN;
}

static uint8_t *batch(int codec, const char *value, int n, int64_t ts, int64_t pid, int16_t epoch,
                      int32_t seq, size_t *len)
{
    struct kp_record_in recs[8];
    assert_true(n <= 8);
    for (int i = 0; i < n; i++) {
        memset(&recs[i], 0, sizeof(recs[i]));
        recs[i].key = (struct kp_bytes){(const uint8_t *)"k", 1};
        recs[i].value = (struct kp_bytes){(const uint8_t *)value, (int32_t)strlen(value)};
        recs[i].timestamp = ts;
    }
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    spec.attributes = (int16_t)codec;
    spec.producer_id = pid;
    spec.producer_epoch = epoch;
    spec.base_sequence = seq;
    uint8_t *out = NULL;
    assert_int_equal(kp_batch_build(&spec, recs, (size_t)n, &out, len), 0);
    return out;
}

struct part_in {
    int32_t index;          /* partition */
    const uint8_t *records; /* bytes */
    size_t len;             /* bytes */
};

static void produce(struct agent_env *e, int16_t version, int16_t acks, int32_t corr,
                    const char *topic, const struct part_in *parts, int n)
{
    struct kp_produce_request rq;
    kp_produce_request_init(&rq);
    struct kp_produce_request_topic_produce_data td;
    kp_produce_request_topic_produce_data_init(&td);
    struct kp_produce_request_partition_produce_data pd[8];
    for (int i = 0; i < n; i++) {
        kp_produce_request_partition_produce_data_init(&pd[i]);
        pd[i].index = parts[i].index;
        pd[i].records = (struct kp_bytes){parts[i].records, (int32_t)parts[i].len};
    }
    td.name = kp_str_from(topic);
    td.partition_data = pd;
    td.partition_data_count = n;
    rq.acks = acks;
    rq.timeout_ms = 30000;
    rq.topic_data = &td;
    rq.topic_data_count = 1;
    send_req(e, 0, version, corr, &rq);
}

static const struct kp_produce_response_partition_produce_response *
answer(struct agent_env *e, int16_t version, int32_t corr, int nparts)
{
    struct kp_produce_response *r = kp_arena_calloc(&e->arena, 1, sizeof(*r));
    assert_int_equal(recv_resp(e, 0, version, r), corr);
    assert_int_equal(r->responses_count, 1);
    assert_int_equal(r->responses[0].partition_responses_count, nparts);
    return r->responses[0].partition_responses;
}

/* Offsets are assigned in order across flushes, per partition; objects land in the store. */
static void test_produce_offsets(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "mem://", 256 << 20);
    create_topic(&e, "t1", 2, NULL, NULL);
    int64_t ts = now_ms();
    for (int round = 0; round < 3; round++) {
        size_t l0 = 0;
        size_t l1 = 0;
        uint8_t *b0 = batch(0, "v0", 2, ts, -1, -1, -1, &l0);
        uint8_t *b1 = batch(KP_CODEC_GZIP, "v1", 3, ts, -1, -1, -1, &l1);
        struct part_in parts[2] = {{0, b0, l0}, {1, b1, l1}};
        int16_t version = round == 0 ? 3 : (round == 1 ? 7 : 11);
        produce(&e, version, -1, 10 + round, "t1", parts, 2);
        const struct kp_produce_response_partition_produce_response *p =
            answer(&e, version, 10 + round, 2);
        assert_int_equal(p[0].index, 0);
        assert_int_equal(p[0].error_code, 0);
        assert_int_equal(p[0].base_offset, round * 2);
        assert_int_equal(p[0].log_append_time_ms, -1);
        assert_int_equal(p[1].error_code, 0);
        assert_int_equal(p[1].base_offset, round * 3);
        if (version >= 5) {
            assert_int_equal(p[1].log_start_offset, 0);
        }
        free(b0);
        free(b1);
    }
    assert_int_equal(e.a.buffered_bytes, 0);
    stop(&e);
}

/* Every per-partition validation error, beside a good batch that is stored. */
static void test_produce_validation(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "mem://", 256 << 20);
    create_topic(&e, "v", 8, NULL, NULL);
    create_topic(&e, "small", 1, "max.message.bytes", "200");
    int64_t ts = now_ms();
    size_t lg = 0;
    size_t lc = 0;
    size_t lz = 0;
    size_t lf = 0;
    size_t ltwo = 0;
    uint8_t *good = batch(0, "good", 1, ts, -1, -1, -1, &lg);
    uint8_t *crc = batch(0, "bad crc", 1, ts, -1, -1, -1, &lc);
    crc[lc - 1] ^= 0xff;
    uint8_t *zstd = batch(KP_CODEC_ZSTD, "zstd", 1, ts, -1, -1, -1, &lz);
    uint8_t *future = batch(0, "future", 1, ts + 2 * 3600000LL, -1, -1, -1, &lf);
    uint8_t *two = malloc(2 * lg);
    memcpy(two, good, lg);
    memcpy(two + lg, good, lg);
    ltwo = 2 * lg;
    uint8_t trunc[30];
    memcpy(trunc, good, sizeof(trunc));

    struct part_in parts[7] = {
        {0, good, lg},
        {1, crc, lc},
        {2, zstd, lz},
        {3, future, lf},
        {4, two, ltwo},
        {99, good, lg},
        {5, trunc, sizeof(trunc)},
    };
    produce(&e, 3, 1, 20, "v", parts, 7);
    const struct kp_produce_response_partition_produce_response *p = answer(&e, 3, 20, 7);
    assert_int_equal(p[0].error_code, 0);
    assert_int_equal(p[0].base_offset, 0);
    assert_int_equal(p[1].error_code, KP_ERROR_CORRUPT_MESSAGE);
    assert_int_equal(p[2].error_code, KP_ERROR_UNSUPPORTED_COMPRESSION_TYPE);
    assert_int_equal(p[3].error_code, KP_ERROR_INVALID_TIMESTAMP);
    assert_int_equal(p[4].error_code, KP_ERROR_INVALID_RECORD);
    assert_int_equal(p[5].index, 99);
    assert_int_equal(p[5].error_code, KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    assert_int_equal(p[6].error_code, KP_ERROR_CORRUPT_MESSAGE);
    for (int i = 1; i < 7; i++) {
        assert_int_equal(p[i].base_offset, -1);
    }

    /* zstd is fine from v7; v8+ carries an error message. */
    struct part_in zp[1] = {{2, zstd, lz}};
    produce(&e, 7, 1, 21, "v", zp, 1);
    p = answer(&e, 7, 21, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_int_equal(p[0].base_offset, 0);
    struct part_in cp[1] = {{1, crc, lc}};
    produce(&e, 9, 1, 22, "v", cp, 1);
    p = answer(&e, 9, 22, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_CORRUPT_MESSAGE);
    assert_true(p[0].error_message.len > 0);

    /* Too large for the topic; unknown topic; Produce v2 is refused. */
    size_t lb = 0;
    char big[400];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    uint8_t *bigb = batch(0, big, 1, ts, -1, -1, -1, &lb);
    struct part_in bp[1] = {{0, bigb, lb}};
    produce(&e, 8, -1, 23, "small", bp, 1);
    p = answer(&e, 8, 23, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_MESSAGE_TOO_LARGE);
    struct part_in gp[1] = {{0, good, lg}};
    produce(&e, 8, -1, 24, "nope", gp, 1);
    p = answer(&e, 8, 24, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    produce(&e, 2, -1, 25, "v", gp, 1);
    p = answer(&e, 2, 25, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_UNSUPPORTED_VERSION);
    produce(&e, 7, 2, 26, "v", gp, 1);
    p = answer(&e, 7, 26, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_INVALID_REQUIRED_ACKS);
    /* The good partition moved on by exactly one record. */
    produce(&e, 7, -1, 27, "v", gp, 1);
    p = answer(&e, 7, 27, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_int_equal(p[0].base_offset, 1);

    /* Compacted topics need keys; transactional batches and ids are refused. */
    create_topic(&e, "c", 1, "cleanup.policy", "compact");
    struct kp_record_in rec;
    memset(&rec, 0, sizeof(rec));
    rec.key = KP_BYTES_NULL;
    rec.value = (struct kp_bytes){(const uint8_t *)"nokey", 5};
    rec.timestamp = ts;
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    uint8_t *nokey = NULL;
    size_t lk = 0;
    assert_int_equal(kp_batch_build(&spec, &rec, 1, &nokey, &lk), 0);
    struct part_in kp[1] = {{0, nokey, lk}};
    produce(&e, 7, -1, 28, "c", kp, 1);
    p = answer(&e, 7, 28, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_INVALID_RECORD);
    produce(&e, 7, -1, 29, "c", gp, 1); /* keyed: fine */
    p = answer(&e, 7, 29, 1);
    assert_int_equal(p[0].error_code, 0);
    spec.attributes = KP_ATTR_TRANSACTIONAL;
    spec.producer_id = 1;
    spec.producer_epoch = 0;
    spec.base_sequence = 0;
    rec.key = (struct kp_bytes){(const uint8_t *)"k", 1};
    uint8_t *txn = NULL;
    size_t lt = 0;
    assert_int_equal(kp_batch_build(&spec, &rec, 1, &txn, &lt), 0);
    struct part_in tp[1] = {{0, txn, lt}};
    produce(&e, 7, -1, 30, "v", tp, 1);
    p = answer(&e, 7, 30, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_INVALID_TXN_STATE);
    free(nokey);
    free(txn);

    free(good);
    free(crc);
    free(zstd);
    free(future);
    free(two);
    free(bigb);
    stop(&e);
}

/* acks=0 gets no answer and keeps the order of the answers after it; the data is stored. */
static void test_produce_acks0(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "mem://", 256 << 20);
    create_topic(&e, "z", 1, NULL, NULL);
    size_t l = 0;
    uint8_t *b = batch(0, "zero", 1, now_ms(), -1, -1, -1, &l);
    struct part_in parts[1] = {{0, b, l}};
    produce(&e, 7, 0, 30, "z", parts, 1);
    produce(&e, 7, -1, 31, "z", parts, 1);
    const struct kp_produce_response_partition_produce_response *p = answer(&e, 7, 31, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_int_equal(p[0].base_offset, 1); /* the acks=0 record took offset 0 */
    assert_true(nothing_pending(&e));
    free(b);
    stop(&e);
}

/* InitProducerId, then idempotent batches: in order, duplicates answered with the original
 * offset, gaps refused; transactional ids refused. */
static void test_produce_idempotent(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "mem://", 256 << 20);
    create_topic(&e, "i", 1, NULL, NULL);
    struct kp_init_producer_id_request ir;
    kp_init_producer_id_request_init(&ir);
    ir.transactional_id = KP_STR_NULL;
    ir.transaction_timeout_ms = 60000;
    ir.producer_id = -1;
    ir.producer_epoch = -1;
    send_req(&e, 22, 4, 40, &ir);
    struct kp_init_producer_id_response irr;
    assert_int_equal(recv_resp(&e, 22, 4, &irr), 40);
    assert_int_equal(irr.error_code, 0);
    assert_true(irr.producer_id >= 0);
    int64_t pid = irr.producer_id;
    int16_t epoch = irr.producer_epoch;

    int64_t ts = now_ms();
    size_t l0 = 0;
    size_t l1 = 0;
    size_t l3 = 0;
    uint8_t *s0 = batch(0, "s0", 2, ts, pid, epoch, 0, &l0);
    uint8_t *s2 = batch(0, "s2", 1, ts, pid, epoch, 2, &l1);
    uint8_t *s9 = batch(0, "s9", 1, ts, pid, epoch, 9, &l3);
    struct part_in a0[1] = {{0, s0, l0}};
    struct part_in a2[1] = {{0, s2, l1}};
    struct part_in a9[1] = {{0, s9, l3}};
    /* Pipelined: seq 0-1, seq 2, then seq 0-1 again (duplicate), then a gap. */
    produce(&e, 7, -1, 41, "i", a0, 1);
    produce(&e, 7, -1, 42, "i", a2, 1);
    produce(&e, 7, -1, 43, "i", a0, 1);
    produce(&e, 7, -1, 44, "i", a9, 1);
    const struct kp_produce_response_partition_produce_response *p = answer(&e, 7, 41, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_int_equal(p[0].base_offset, 0);
    p = answer(&e, 7, 42, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_int_equal(p[0].base_offset, 2);
    p = answer(&e, 7, 43, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_int_equal(p[0].base_offset, 0);
    p = answer(&e, 7, 44, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER);

    /* KIP-360: the current id and epoch bump the epoch; a stale epoch is refused (v3 gets
     * INVALID_PRODUCER_EPOCH, never v4's PRODUCER_FENCED). */
    ir.producer_id = pid;
    ir.producer_epoch = epoch;
    send_req(&e, 22, 4, 46, &ir);
    assert_int_equal(recv_resp(&e, 22, 4, &irr), 46);
    assert_int_equal(irr.error_code, 0);
    assert_int_equal(irr.producer_id, pid);
    assert_int_equal(irr.producer_epoch, epoch + 1);
    send_req(&e, 22, 3, 47, &ir); /* the old epoch again */
    assert_int_equal(recv_resp(&e, 22, 3, &irr), 47);
    assert_int_equal(irr.error_code, KP_ERROR_INVALID_PRODUCER_EPOCH);
    /* Batches of the old epoch are now fenced. */
    size_t l4 = 0;
    uint8_t *s4 = batch(0, "s4", 1, ts, pid, epoch, 3, &l4);
    struct part_in a4[1] = {{0, s4, l4}};
    produce(&e, 9, -1, 48, "i", a4, 1);
    p = answer(&e, 9, 48, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_INVALID_PRODUCER_EPOCH);
    free(s4);

    ir.producer_id = -1;
    ir.producer_epoch = -1;
    ir.transactional_id = kp_str_from("txn");
    send_req(&e, 22, 3, 45, &ir);
    assert_int_equal(recv_resp(&e, 22, 3, &irr), 45);
    assert_int_equal(irr.error_code, KP_ERROR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    free(s0);
    free(s2);
    free(s9);
    stop(&e);
}

/* LogAppendTime topics: the answer carries the append time. */
static void test_produce_log_append_time(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "mem://", 256 << 20);
    create_topic(&e, "lat", 1, "message.timestamp.type", "LogAppendTime");
    int64_t before = now_ms();
    size_t l = 0;
    uint8_t *b = batch(0, "old", 1, 1000, -1, -1, -1, &l);
    struct part_in parts[1] = {{0, b, l}};
    produce(&e, 8, 1, 50, "lat", parts, 1);
    const struct kp_produce_response_partition_produce_response *p = answer(&e, 8, 50, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_true(p[0].log_append_time_ms >= before);
    assert_true(p[0].log_append_time_ms <= now_ms());
    free(b);
    stop(&e);
}

/* A store that refuses every PUT: a retriable error, never an acknowledgement, and nothing
 * committed (the next good produce on a healthy path would start at 0 again). */
static void test_produce_put_failure(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "faulty+mem://?put_error_rate=1", 256 << 20);
    create_topic(&e, "f", 1, NULL, NULL);
    size_t l = 0;
    uint8_t *b = batch(0, "lost", 1, now_ms(), -1, -1, -1, &l);
    struct part_in parts[1] = {{0, b, l}};
    produce(&e, 7, -1, 60, "f", parts, 1);
    const struct kp_produce_response_partition_produce_response *p = answer(&e, 7, 60, 1);
    assert_int_equal(p[0].error_code, KP_ERROR_KAFKA_STORAGE_ERROR);
    assert_int_equal(p[0].base_offset, -1);
    assert_true(kp_error_retriable(p[0].error_code));
    assert_int_equal(e.a.buffered_bytes, 0);
    free(b);
    stop(&e);
}

/* Past buffer.max.bytes reads pause; commits bring the agent back under and reads resume. */
static void test_produce_backpressure(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "mem://", 1);
    create_topic(&e, "bp", 1, NULL, NULL);
    size_t l = 0;
    uint8_t *b = batch(0, "pressure", 1, now_ms(), -1, -1, -1, &l);
    struct part_in parts[1] = {{0, b, l}};
    produce(&e, 7, -1, 70, "bp", parts, 1);
    int paused = 0;
    for (int i = 0; i < 20000 && !e.a.paused && e.a.buffered_bytes == 0; i++) {
        uv_run(&e.loop, UV_RUN_NOWAIT);
    }
    paused = e.a.paused;
    assert_true(paused);
    const struct kp_produce_response_partition_produce_response *p = answer(&e, 7, 70, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_false(e.a.paused);
    assert_int_equal(e.a.buffered_bytes, 0);
    free(b);
    stop(&e);
}

/*
 * Every request its own object (flush.bytes 1) over a store that fails PUTs at random, so PUTs
 * finish out of order after retries: commits still go in seal order, which the idempotent
 * producer's sequence check would refuse otherwise, and offsets follow the request order.
 */
static void test_produce_seal_order(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "faulty+mem://?put_error_rate=0.3&seed=7", 256 << 20);
    e.a.cfg.flush_bytes = 1;
    create_topic(&e, "o", 1, NULL, NULL);
    struct kp_init_producer_id_request ir;
    kp_init_producer_id_request_init(&ir);
    ir.transactional_id = KP_STR_NULL;
    send_req(&e, 22, 1, 80, &ir);
    struct kp_init_producer_id_response irr;
    assert_int_equal(recv_resp(&e, 22, 1, &irr), 80);
    assert_int_equal(irr.error_code, 0);
    enum { N = 16 };
    uint8_t *bs[N];
    int64_t ts = now_ms();
    for (int i = 0; i < N; i++) {
        size_t l = 0;
        bs[i] = batch(0, "ordered", 1, ts, irr.producer_id, irr.producer_epoch, i, &l);
        struct part_in parts[1] = {{0, bs[i], l}};
        produce(&e, 7, -1, 100 + i, "o", parts, 1);
    }
    for (int i = 0; i < N; i++) {
        const struct kp_produce_response_partition_produce_response *p = answer(&e, 7, 100 + i, 1);
        assert_int_equal(p[0].error_code, 0);
        assert_int_equal(p[0].base_offset, i);
        free(bs[i]);
    }
    stop(&e);
}

/*
 * A connection's Produce requests are appended in the order they came, also when an earlier one
 * waits for a topic lookup (a topic the agent has not seen) and a later one finds its topic in
 * the cache. Before, the later request was appended first: it got the lower offset, and an
 * idempotent producer's next batch reached the metadata service out of sequence.
 */
static void test_produce_conn_order(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "mem://", 256 << 20);
    create_topic(&e, "t", 1, NULL, NULL);
    create_topic(&e, "u", 1, NULL, NULL); /* created behind the agent's back: not cached */
    int64_t ts = now_ms();
    size_t l0 = 0;
    uint8_t *b0 = batch(0, "warm", 1, ts, -1, -1, -1, &l0);
    struct part_in warm[1] = {{0, b0, l0}};
    produce(&e, 7, -1, 10, "t", warm, 1); /* puts "t" in the cache */
    assert_int_equal(answer(&e, 7, 10, 1)[0].base_offset, 0);

    /* A: "u" (a lookup) and "t"; B right behind it: "t" alone (cached). */
    size_t la = 0;
    size_t lu = 0;
    size_t lb = 0;
    uint8_t *ba = batch(0, "A", 1, ts, -1, -1, -1, &la);
    uint8_t *bu = batch(0, "U", 1, ts, -1, -1, -1, &lu);
    uint8_t *bb = batch(0, "B", 1, ts, -1, -1, -1, &lb);
    struct kp_produce_request_partition_produce_data pd[2];
    struct kp_produce_request_topic_produce_data td[2];
    const char *names[2] = {"u", "t"};
    const uint8_t *recs[2] = {bu, ba};
    size_t lens[2] = {lu, la};
    for (int i = 0; i < 2; i++) {
        kp_produce_request_partition_produce_data_init(&pd[i]);
        pd[i].index = 0;
        pd[i].records = (struct kp_bytes){recs[i], (int32_t)lens[i]};
        kp_produce_request_topic_produce_data_init(&td[i]);
        td[i].name = kp_str_from(names[i]);
        td[i].partition_data = &pd[i];
        td[i].partition_data_count = 1;
    }
    struct kp_produce_request rq;
    kp_produce_request_init(&rq);
    rq.acks = -1;
    rq.timeout_ms = 30000;
    rq.topic_data = td;
    rq.topic_data_count = 2;
    send_req(&e, 0, 7, 11, &rq);
    struct part_in pb[1] = {{0, bb, lb}};
    produce(&e, 7, -1, 12, "t", pb, 1);

    struct kp_produce_response *ra = kp_arena_calloc(&e.arena, 1, sizeof(*ra));
    assert_int_equal(recv_resp(&e, 0, 7, ra), 11);
    assert_int_equal(ra->responses_count, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ra->responses[i].partition_responses[0].error_code, 0);
    }
    assert_true(kp_str_eq_cstr(ra->responses[1].name, "t"));
    assert_int_equal(ra->responses[1].partition_responses[0].base_offset, 1);
    assert_int_equal(ra->responses[0].partition_responses[0].base_offset, 0); /* "u" */
    const struct kp_produce_response_partition_produce_response *p = answer(&e, 7, 12, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_int_equal(p[0].base_offset, 2);

    /* Only the connection's own requests wait: a second connection's cached "t" goes ahead of
     * the first connection's request that waits for "v". */
    create_topic(&e, "v", 1, NULL, NULL);
    e.fd[1] = agent_env_connect(&e);
    names[0] = "v";
    td[0].name = kp_str_from(names[0]);
    send_req(&e, 0, 7, 13, &rq);
    struct kp_produce_request rq2;
    kp_produce_request_init(&rq2);
    rq2.acks = -1;
    rq2.timeout_ms = 30000;
    rq2.topic_data = &td[1];
    rq2.topic_data_count = 1;
    agent_env_send(&e, 1, 0, 7, 14, "other", &rq2);
    struct kp_produce_response *rd = kp_arena_calloc(&e.arena, 1, sizeof(*rd));
    assert_int_equal(agent_env_recv(&e, 1, 0, 7, 50000, rd, NULL), 14);
    assert_int_equal(rd->responses[0].partition_responses[0].error_code, 0);
    assert_int_equal(rd->responses[0].partition_responses[0].base_offset, 3);
    struct kp_produce_response *rc = kp_arena_calloc(&e.arena, 1, sizeof(*rc));
    assert_int_equal(recv_resp(&e, 0, 7, rc), 13);
    assert_int_equal(rc->responses[1].partition_responses[0].error_code, 0);
    assert_int_equal(rc->responses[1].partition_responses[0].base_offset, 4);
    close(e.fd[1]);
    free(b0);
    free(ba);
    free(bu);
    free(bb);
    stop(&e);
}

/*
 * An object that answers more requests on one connection than one write gathers
 * (AGENT__WRITE_MAX_FRAMES, 256): all answered, in order, each with its offset.
 */
static void test_produce_many_answers(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "mem://", 256 << 20);
    e.a.cfg.flush_interval_ms = 300;
    create_topic(&e, "m", 1, NULL, NULL);
    enum { N = 600 };
    int64_t ts = now_ms();
    size_t l = 0;
    uint8_t *b = batch(0, "many", 1, ts, -1, -1, -1, &l);
    struct part_in parts[1] = {{0, b, l}};
    for (int i = 0; i < N; i++) {
        produce(&e, 7, -1, 1000 + i, "m", parts, 1);
    }
    for (int i = 0; i < N; i++) {
        const struct kp_produce_response_partition_produce_response *p = answer(&e, 7, 1000 + i, 1);
        assert_int_equal(p[0].error_code, 0);
        assert_int_equal(p[0].base_offset, i);
    }
    free(b);
    stop(&e);
}

/* SIGTERM's drain seals the open object at once (long before the flush interval) and finishes
 * only after the parked request was answered with its offset. */
static void test_produce_drain(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e, "mem://", 256 << 20);
    e.a.cfg.flush_interval_ms = 60000;
    create_topic(&e, "d", 1, NULL, NULL);
    size_t l = 0;
    uint8_t *b = batch(0, "drained", 1, now_ms(), -1, -1, -1, &l);
    struct part_in parts[1] = {{0, b, l}};
    produce(&e, 7, -1, 90, "d", parts, 1);
    for (int i = 0; i < 20000 && e.a.buffered_bytes == 0; i++) {
        uv_run(&e.loop, UV_RUN_NOWAIT);
    }
    assert_true(e.a.buffered_bytes > 0);
    drain_env = &e;
    agent_produce_drain(&e.a, on_drained);
    assert_int_equal(e.drained, 0); /* not before the commit */
    const struct kp_produce_response_partition_produce_response *p = answer(&e, 7, 90, 1);
    assert_int_equal(p[0].error_code, 0);
    assert_int_equal(p[0].base_offset, 0);
    agent_env_pump(&e, &e.drained, 1);
    e.drained = 0;
    free(b);
    stop(&e);
}

int run_test_produce(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_produce_offsets),         cmocka_unit_test(test_produce_validation),
        cmocka_unit_test(test_produce_acks0),           cmocka_unit_test(test_produce_idempotent),
        cmocka_unit_test(test_produce_log_append_time), cmocka_unit_test(test_produce_put_failure),
        cmocka_unit_test(test_produce_backpressure),    cmocka_unit_test(test_produce_seal_order),
        cmocka_unit_test(test_produce_drain),           cmocka_unit_test(test_produce_conn_order),
        cmocka_unit_test(test_produce_many_answers),
    };
    return cmocka_run_group_tests_name("produce", tests, NULL, NULL);
}
