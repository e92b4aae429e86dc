/*
 * Benchmark: Kafka produce and consume throughput and produce latency through a real librdkafka
 * client, against librdkafka's built-in mock cluster (in-memory, in this process, no durability)
 * as the peer and, in the same run, against a bootstrap address given on the command line
 * (Runnel). Prints figures and the Runnel/mock ratios; asserts nothing about speed.
 *
 *   bench_agent_kafka [--bootstrap HOST:PORT] [--mib N] [--partitions P] [--rounds R]
 *                     [--latency-seconds S] [--rate-mbps M] [--latency-linger-ms L]
 *                     [--mock-only]
 *
 * Per peer: a topic with P partitions (mock: created directly; Runnel: CreateTopics); R rounds,
 * each producing N MiB of 1 KiB values (linger.ms=5, batch.size=1 MiB, acks=all, no
 * compression) and then consuming everything back from the beginning with an assign()ed
 * consumer; the median round is reported. Then a paced producer at M MB/s (default 10) for S
 * seconds records each message's produce-to-acknowledgement latency (p50/p99/max); its
 * linger.ms is L (default 5, as above; 0 measures the broker's own latency without the client's
 * batching delay on top). MB = 10^6
 * bytes of record values. The defaults keep each mock partition under its 5 MiB retention, so
 * both peers serve every byte back.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MSG_SIZE 1024
#define LINGER_MS 5 /* linger.ms of the throughput producers (and the latency run by default) */

struct bench_opts {
    const char *bootstrap; /* Runnel's bootstrap address, NULL = mock only */
    int mib;               /* MiB produced per round */
    int partitions;        /* partitions of the benchmark topic */
    int rounds;            /* throughput rounds per peer (median reported) */
    int latency_seconds;   /* duration of the paced latency run (s) */
    double rate_mbps;      /* paced produce rate for the latency run (MB/s) */
    int latency_linger_ms; /* linger.ms of the latency run's producer */
};

struct bench_result {
    double produce_mbps; /* median produce throughput (MB/s) */
    double consume_mbps; /* median consume throughput (MB/s) */
    double p50_ms;       /* paced produce latency, median (ms) */
    double p99_ms;       /* paced produce latency, 99th percentile (ms) */
    double max_ms;       /* paced produce latency, maximum (ms) */
    long errors;         /* delivery or consume errors seen */
    int ok;              /* 1 when every phase completed */
};

struct dr_state {
    long delivered;  /* acknowledged messages */
    long failed;     /* messages with a delivery error */
    double *sent_at; /* latency run: send time per message index (s), or NULL */
    double *latency; /* latency run: ack latency per delivered message (s) */
    long nlatency;   /* entries in latency */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct dr_state *st = opaque;
    (void)rk;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (st->failed < 5) {
            fprintf(stderr, "bench: delivery failed: %s\n", rd_kafka_err2str(m->err));
        }
        st->failed++;
        return;
    }
    st->delivered++;
    if (st->sent_at != NULL) {
        long idx = (long)(intptr_t)m->_private;
        st->latency[st->nlatency++] = now_s() - st->sent_at[idx];
    }
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "bench: %s=%s: %s\n", k, v, errstr);
        return -1;
    }
    return 0;
}

static rd_kafka_t *make_producer(const char *bootstrap, struct dr_state *st, int linger_ms)
{
    char errstr[256];
    char linger[16];
    snprintf(linger, sizeof(linger), "%d", linger_ms);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", bootstrap) || conf_set(conf, "linger.ms", linger) ||
        conf_set(conf, "batch.size", "1048576") || conf_set(conf, "acks", "all") ||
        conf_set(conf, "compression.codec", "none") ||
        conf_set(conf, "queue.buffering.max.kbytes", "1048576") ||
        conf_set(conf, "queue.buffering.max.messages", "2000000") ||
        conf_set(conf, "message.max.bytes", "2000000") || conf_set(conf, "log_level", "3")) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, st);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "bench: producer: %s\n", errstr);
    }
    return rk;
}

/* Creates the topic through the admin API (Runnel); an existing topic is fine. */
static int create_topic(const char *bootstrap, const char *topic, int partitions)
{
    char errstr[256];
    int rc = -1;
    struct dr_state st = {0};
    rd_kafka_t *rk = make_producer(bootstrap, &st, LINGER_MS);
    if (rk == NULL) {
        return -1;
    }
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, -1, errstr, sizeof(errstr));
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, 30000, errstr, sizeof(errstr));
    rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
    if (ev == NULL) {
        fprintf(stderr, "bench: CreateTopics timed out\n");
        goto out;
    }
    if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "bench: CreateTopics: %s\n", rd_kafka_event_error_string(ev));
        goto out_ev;
    }
    size_t n = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    rc = 0;
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            fprintf(stderr, "bench: CreateTopics %s: %s\n", topic, rd_kafka_err2str(err));
            rc = -1;
        }
    }
out_ev:
    rd_kafka_event_destroy(ev);
out:
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

/* Produces `count` 1 KiB values round-robin over the partitions; returns MB/s or -1. */
static double produce_run(const char *bootstrap, const char *topic, int partitions, long count,
                          long *errors)
{
    static char payload[MSG_SIZE];
    struct dr_state st = {0};
    memset(payload, 'r', sizeof(payload));
    rd_kafka_t *rk = make_producer(bootstrap, &st, LINGER_MS);
    if (rk == NULL) {
        return -1;
    }
    /* Warm up: metadata and connections, outside the timed part. */
    rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                      RD_KAFKA_V_VALUE(payload, sizeof(payload)), RD_KAFKA_V_END);
    rd_kafka_flush(rk, 30000);
    long base = st.delivered + st.failed;
    double t0 = now_s();
    for (long i = 0; i < count; i++) {
        for (;;) {
            rd_kafka_resp_err_t err = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION((int32_t)(i % partitions)),
                RD_KAFKA_V_VALUE(payload, sizeof(payload)),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                break;
            }
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "bench: produce: %s\n", rd_kafka_err2str(err));
                rd_kafka_destroy(rk);
                return -1;
            }
            rd_kafka_poll(rk, 1);
        }
        if ((i & 1023) == 0) {
            rd_kafka_poll(rk, 0);
        }
    }
    if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "bench: flush timed out\n");
    }
    double t = now_s() - t0;
    long done = st.delivered + st.failed - base;
    *errors += st.failed;
    rd_kafka_destroy(rk);
    if (done != count || st.failed > 0) {
        fprintf(stderr, "bench: %ld of %ld acknowledged, %ld failed\n", done, count, st.failed);
        return -1;
    }
    return (double)count * MSG_SIZE / t / 1e6;
}

/* Reads every partition from the beginning to its high watermark; returns MB/s or -1. */
static double consume_run(const char *bootstrap, const char *topic, int partitions, long *errors)
{
    char errstr[256];
    double mbps = -1;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", bootstrap) || conf_set(conf, "group.id", "bench") ||
        conf_set(conf, "enable.auto.commit", "false") ||
        conf_set(conf, "enable.partition.eof", "false") ||
        conf_set(conf, "isolation.level", "read_uncommitted") ||
        conf_set(conf, "fetch.message.max.bytes", "1048576") || conf_set(conf, "log_level", "3")) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "bench: consumer: %s\n", errstr);
        return -1;
    }
    int64_t *hwm = calloc((size_t)partitions, sizeof(*hwm));
    int64_t *next = calloc((size_t)partitions, sizeof(*next));
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(partitions);
    if (hwm == NULL || next == NULL || tp == NULL) {
        goto out;
    }
    int remaining = 0;
    for (int p = 0; p < partitions; p++) {
        int64_t lo = 0;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hwm[p], 30000);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "bench: watermarks %s/%d: %s\n", topic, p, rd_kafka_err2str(err));
            goto out;
        }
        next[p] = lo;
        if (lo < hwm[p]) {
            remaining++;
        }
        rd_kafka_topic_partition_list_add(tp, topic, p)->offset = lo;
    }
    rd_kafka_assign(rk, tp);
    size_t bytes = 0;
    double t0 = now_s();
    double deadline = t0 + 300;
    while (remaining > 0 && now_s() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL) {
            continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "bench: consume: %s\n", rd_kafka_message_errstr(m));
            (*errors)++;
        } else if (m->partition >= 0 && m->partition < partitions) {
            bytes += m->len;
            int p = m->partition;
            if (next[p] < hwm[p] && m->offset + 1 >= hwm[p]) {
                remaining--;
            }
            next[p] = m->offset + 1;
        }
        rd_kafka_message_destroy(m);
    }
    double t = now_s() - t0;
    if (remaining > 0) {
        fprintf(stderr, "bench: consume did not reach the end of %d partitions\n", remaining);
    } else {
        mbps = (double)bytes / t / 1e6;
    }
    rd_kafka_assign(rk, NULL);
out:
    if (tp != NULL) {
        rd_kafka_topic_partition_list_destroy(tp);
    }
    free(hwm);
    free(next);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return mbps;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Paced producer at rate_mbps for `seconds`; fills p50/p99/max. */
static int latency_run(const char *bootstrap, const char *topic, int partitions, double rate_mbps,
                       int seconds, int linger_ms, struct bench_result *res)
{
    static char payload[MSG_SIZE];
    long total = (long)(rate_mbps * 1e6 / MSG_SIZE * seconds);
    struct dr_state st = {0};
    int rc = -1;
    memset(payload, 'l', sizeof(payload));
    st.sent_at = calloc((size_t)total + 1, sizeof(double));
    st.latency = calloc((size_t)total + 1, sizeof(double));
    if (st.sent_at == NULL || st.latency == NULL) {
        goto out_free;
    }
    double *keep_sent = st.sent_at;
    st.sent_at = NULL; /* the warm-up message is not timed */
    rd_kafka_t *rk = make_producer(bootstrap, &st, linger_ms);
    if (rk == NULL) {
        goto out_free;
    }
    rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                      RD_KAFKA_V_VALUE(payload, sizeof(payload)), RD_KAFKA_V_END);
    rd_kafka_flush(rk, 30000);
    st.sent_at = keep_sent;
    double per_msg = MSG_SIZE / (rate_mbps * 1e6);
    double t0 = now_s();
    for (long i = 0; i < total; i++) {
        /* Wait for the message's due time in rd_kafka_poll, which returns at once when a
         * delivery report arrives (so acknowledgements are timed when they come), and sleep
         * out the last sub-millisecond rest. Never spin: a spinning client takes a core from
         * the broker under test on a small machine. */
        double due = t0 + (double)i * per_msg;
        double t;
        while ((t = now_s()) < due) {
            int ms = (int)((due - t) * 1e3);
            if (ms >= 1) {
                rd_kafka_poll(rk, ms);
            } else {
                rd_kafka_poll(rk, 0);
                long ns = (long)((due - t) * 1e9);
                struct timespec ts = {0, ns > 0 ? ns : 0};
                nanosleep(&ts, NULL);
            }
        }
        st.sent_at[i] = now_s();
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION((int32_t)(i % partitions)),
            RD_KAFKA_V_VALUE(payload, sizeof(payload)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE((void *)(intptr_t)i), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "bench: paced produce: %s\n", rd_kafka_err2str(err));
            res->errors++;
        }
    }
    rd_kafka_flush(rk, 60000);
    res->errors += st.failed;
    rd_kafka_destroy(rk);
    if (st.nlatency == 0) {
        goto out_free;
    }
    qsort(st.latency, (size_t)st.nlatency, sizeof(double), cmp_double);
    res->p50_ms = st.latency[st.nlatency / 2] * 1e3;
    res->p99_ms = st.latency[(long)((double)st.nlatency * 0.99)] * 1e3;
    res->max_ms = st.latency[st.nlatency - 1] * 1e3;
    rc = st.nlatency == total ? 0 : -1;
out_free:
    free(st.sent_at);
    free(st.latency);
    return rc;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

static int run_peer(const char *label, const char *bootstrap, rd_kafka_mock_cluster_t *mc,
                    const struct bench_opts *o, struct bench_result *res)
{
    double prod[16], cons[16];
    long count = (long)o->mib * 1024L * 1024L / MSG_SIZE;
    char topic[128];
    res->ok = 0;
    for (int r = 0; r < o->rounds; r++) {
        snprintf(topic, sizeof(topic), "bench-tput-%d-%d", (int)getpid(), r);
        if (mc != NULL) {
            if (rd_kafka_mock_topic_create(mc, topic, o->partitions, 1) != 0) {
                return -1;
            }
        } else if (create_topic(bootstrap, topic, o->partitions) != 0) {
            return -1;
        }
        prod[r] = produce_run(bootstrap, topic, o->partitions, count, &res->errors);
        cons[r] = consume_run(bootstrap, topic, o->partitions, &res->errors);
        printf("%-7s round %d: produce %8.1f MB/s  consume %8.1f MB/s\n", label, r + 1, prod[r],
               cons[r]);
        fflush(stdout);
        if (prod[r] < 0 || cons[r] < 0) {
            return -1;
        }
    }
    res->produce_mbps = median(prod, o->rounds);
    res->consume_mbps = median(cons, o->rounds);
    snprintf(topic, sizeof(topic), "bench-lat-%d", (int)getpid());
    if (mc != NULL) {
        rd_kafka_mock_topic_create(mc, topic, o->partitions, 1);
    } else if (create_topic(bootstrap, topic, o->partitions) != 0) {
        return -1;
    }
    if (latency_run(bootstrap, topic, o->partitions, o->rate_mbps, o->latency_seconds,
                    o->latency_linger_ms, res) != 0) {
        fprintf(stderr, "bench: %s: latency run incomplete\n", label);
        return -1;
    }
    res->ok = 1;
    return 0;
}

static void print_result(const char *label, const struct bench_result *r)
{
    if (!r->ok) {
        printf("%-7s FAILED (see errors above)\n", label);
        return;
    }
    printf("%-7s produce %8.1f MB/s  consume %8.1f MB/s  latency p50 %6.2f ms  p99 %6.2f ms  "
           "max %6.2f ms  errors %ld\n",
           label, r->produce_mbps, r->consume_mbps, r->p50_ms, r->p99_ms, r->max_ms, r->errors);
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_agent_kafka [--bootstrap HOST:PORT] [--mib N] [--partitions P]\n"
                    "         [--rounds R] [--latency-seconds S] [--rate-mbps M]\n"
                    "         [--latency-linger-ms L] [--mock-only]\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct bench_opts o = {NULL, 256, 64, 3, 10, 10.0, LINGER_MS};
    int mock_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--mock-only") == 0) {
            mock_only = 1;
            continue;
        }
        if (v == NULL) {
            return usage();
        }
        i++;
        if (strcmp(a, "--bootstrap") == 0) {
            o.bootstrap = v;
        } else if (strcmp(a, "--mib") == 0) {
            o.mib = atoi(v);
        } else if (strcmp(a, "--partitions") == 0) {
            o.partitions = atoi(v);
        } else if (strcmp(a, "--rounds") == 0) {
            o.rounds = atoi(v);
        } else if (strcmp(a, "--latency-seconds") == 0) {
            o.latency_seconds = atoi(v);
        } else if (strcmp(a, "--rate-mbps") == 0) {
            o.rate_mbps = atof(v);
        } else if (strcmp(a, "--latency-linger-ms") == 0) {
            o.latency_linger_ms = atoi(v);
        } else {
            return usage();
        }
    }
    if (o.mib < 1 || o.partitions < 1 || o.rounds < 1 || o.rounds > 16 || o.latency_seconds < 1 ||
        o.rate_mbps <= 0 || o.latency_linger_ms < 0 || (o.bootstrap == NULL && !mock_only)) {
        return usage();
    }
    printf("bench_agent_kafka: librdkafka %s, %d-byte values, linger.ms=%d batch.size=1MiB "
           "acks=all, %d MiB x %d rounds over %d partitions, latency at %.1f MB/s for %d s "
           "with linger.ms=%d\n",
           rd_kafka_version_str(), MSG_SIZE, LINGER_MS, o.mib, o.rounds, o.partitions, o.rate_mbps,
           o.latency_seconds, o.latency_linger_ms);

    char errstr[256];
    rd_kafka_conf_t *mconf = rd_kafka_conf_new();
    conf_set(mconf, "log_level", "3");
    rd_kafka_t *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, mconf, errstr, sizeof(errstr));
    if (mrk == NULL) {
        fprintf(stderr, "bench: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mrk, 1);
    if (mc == NULL) {
        fprintf(stderr, "bench: cannot start the mock cluster\n");
        rd_kafka_destroy(mrk);
        return 1;
    }
    struct bench_result mock = {0}, runnel = {0};
    int rc = 0;
    if (run_peer("mock", rd_kafka_mock_cluster_bootstraps(mc), mc, &o, &mock) != 0) {
        rc = 1;
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
    if (!mock_only && run_peer("runnel", o.bootstrap, NULL, &o, &runnel) != 0) {
        rc = 1;
    }
    printf("\n");
    print_result("mock", &mock);
    if (!mock_only) {
        print_result("runnel", &runnel);
        if (mock.ok && runnel.ok) {
            printf("ratio   runnel/mock: produce %.2fx  consume %.2fx  p99 latency %.2fx\n",
                   runnel.produce_mbps / mock.produce_mbps, runnel.consume_mbps / mock.consume_mbps,
                   runnel.p99_ms / mock.p99_ms);
        }
    }
    return rc;
}
