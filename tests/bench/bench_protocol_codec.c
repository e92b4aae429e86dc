/*
 * Benchmark: decode + re-encode with the generated codec of (a) a Produce request v9 carrying
 * 1 MiB of record bytes in one partition, (b) the same 1 MiB spread over 16 topics x 64
 * partitions (1 KiB each), and (c, d) a Fetch response v12 in both shapes. Record bytes are
 * views on decode and one memcpy on encode. Prints MB/s of message bytes (best of 5 rounds of
 * ~0.3 s); asserts nothing about speed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kp_messages.h"

#define MIB (1024 * 1024)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t *encode_msg(const struct kp_message_ops *ops, const void *m, int16_t v, size_t *len)
{
    size_t n = 0;
    if (ops->size(m, v, &n) != 0) {
        fprintf(stderr, "%s: size failed\n", ops->name);
        exit(1);
    }
    uint8_t *buf = kp_xmalloc(n);
    struct kp_writer w;
    kp_writer_init(&w, buf, n);
    if (ops->encode(m, v, &w) != 0) {
        fprintf(stderr, "%s: encode failed\n", ops->name);
        exit(1);
    }
    *len = n;
    return buf;
}

static uint8_t *make_produce(const uint8_t *records, int topics, int parts, size_t *len)
{
    struct kp_arena a;
    struct kp_produce_request m;
    size_t chunk = MIB / (size_t)(topics * parts);
    kp_arena_init(&a, 0);
    kp_produce_request_init(&m);
    m.acks = -1;
    m.timeout_ms = 30000;
    m.topic_data_count = topics;
    m.topic_data = kp_arena_calloc(&a, (size_t)topics, sizeof(*m.topic_data));
    for (int t = 0; t < topics; t++) {
        struct kp_produce_request_topic_produce_data *td = &m.topic_data[t];
        kp_produce_request_topic_produce_data_init(td);
        td->name = kp_str_from("benchmark-topic");
        td->partition_data_count = parts;
        td->partition_data = kp_arena_calloc(&a, (size_t)parts, sizeof(*td->partition_data));
        for (int p = 0; p < parts; p++) {
            kp_produce_request_partition_produce_data_init(&td->partition_data[p]);
            td->partition_data[p].index = p;
            td->partition_data[p].records =
                (struct kp_bytes){records + (size_t)(t * parts + p) * chunk, (int32_t)chunk};
        }
    }
    uint8_t *buf = encode_msg(&kp_produce_request_ops, &m, 9, len);
    kp_arena_free(&a);
    return buf;
}

static uint8_t *make_fetch(const uint8_t *records, int topics, int parts, size_t *len)
{
    struct kp_arena a;
    struct kp_fetch_response m;
    size_t chunk = MIB / (size_t)(topics * parts);
    kp_arena_init(&a, 0);
    kp_fetch_response_init(&m);
    m.responses_count = topics;
    m.responses = kp_arena_calloc(&a, (size_t)topics, sizeof(*m.responses));
    for (int t = 0; t < topics; t++) {
        struct kp_fetch_response_fetchable_topic_response *tr = &m.responses[t];
        kp_fetch_response_fetchable_topic_response_init(tr);
        tr->topic = kp_str_from("benchmark-topic");
        tr->partitions_count = parts;
        tr->partitions = kp_arena_calloc(&a, (size_t)parts, sizeof(*tr->partitions));
        for (int p = 0; p < parts; p++) {
            struct kp_fetch_response_partition_data *pd = &tr->partitions[p];
            kp_fetch_response_partition_data_init(pd);
            pd->partition_index = p;
            pd->high_watermark = 1000000;
            pd->last_stable_offset = 1000000;
            pd->log_start_offset = 0;
            pd->records =
                (struct kp_bytes){records + (size_t)(t * parts + p) * chunk, (int32_t)chunk};
        }
    }
    uint8_t *buf = encode_msg(&kp_fetch_response_ops, &m, 12, len);
    kp_arena_free(&a);
    return buf;
}

/* Best-of-5 MB/s for decode (+ size + encode when `reencode`) of `in`. */
static double run(const struct kp_message_ops *ops, int16_t v, const uint8_t *in, size_t len,
                  bool reencode)
{
    struct kp_arena a;
    uint8_t *out = kp_xmalloc(len);
    void *m = kp_xmalloc(ops->struct_size);
    double best = 0;
    kp_arena_init(&a, 0);
    for (int round = 0; round < 5; round++) {
        size_t iters = 0;
        double t0 = now();
        double t1;
        do {
            for (int k = 0; k < 20; k++) {
                struct kp_reader r;
                kp_arena_reset(&a);
                kp_reader_init(&r, in, len);
                if (ops->decode(&r, v, &a, m) != 0) {
                    fprintf(stderr, "%s: decode failed: %s\n", ops->name, r.why);
                    exit(1);
                }
                if (reencode) {
                    size_t n = 0;
                    struct kp_writer w;
                    if (ops->size(m, v, &n) != 0 || n != len) {
                        fprintf(stderr, "%s: size mismatch\n", ops->name);
                        exit(1);
                    }
                    kp_writer_init(&w, out, n);
                    if (ops->encode(m, v, &w) != 0) {
                        fprintf(stderr, "%s: encode failed\n", ops->name);
                        exit(1);
                    }
                }
                iters++;
            }
            t1 = now();
        } while (t1 - t0 < 0.3);
        double mbps = (double)len * (double)iters / (t1 - t0) / 1e6;
        best = mbps > best ? mbps : best;
    }
    if (reencode && memcmp(out, in, len) != 0) {
        fprintf(stderr, "%s: re-encoding differs\n", ops->name);
        exit(1);
    }
    kp_arena_free(&a);
    free(out);
    free(m);
    return best;
}

int main(void)
{
    uint8_t *records = kp_xmalloc(MIB);
    for (size_t i = 0; i < MIB; i++) {
        records[i] = (uint8_t)(i * 2654435761u >> 24);
    }
    static const struct {
        int topics;
        int parts;
    } shapes[] = {{1, 1}, {16, 64}};
    printf("generated codec, 1 MiB of record bytes per message (MB/s of message bytes)\n");
    printf("%-34s %10s %12s %16s\n", "message", "bytes", "decode", "decode+encode");
    for (size_t s = 0; s < 2; s++) {
        size_t len = 0;
        char name[64];
        uint8_t *p = make_produce(records, shapes[s].topics, shapes[s].parts, &len);
        snprintf(name, sizeof(name), "Produce v9 request, %dx%d", shapes[s].topics,
                 shapes[s].parts);
        printf("%-34s %10zu %12.0f %16.0f\n", name, len,
               run(&kp_produce_request_ops, 9, p, len, false),
               run(&kp_produce_request_ops, 9, p, len, true));
        free(p);
        uint8_t *f = make_fetch(records, shapes[s].topics, shapes[s].parts, &len);
        snprintf(name, sizeof(name), "Fetch v12 response, %dx%d", shapes[s].topics,
                 shapes[s].parts);
        printf("%-34s %10zu %12.0f %16.0f\n", name, len,
               run(&kp_fetch_response_ops, 12, f, len, false),
               run(&kp_fetch_response_ops, 12, f, len, true));
        free(f);
    }
    free(records);
    return 0;
}
