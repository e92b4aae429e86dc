/*
 * Benchmark: CRC-32C over 1 MiB (SSE4.2 path and portable path), and the record path a Fetch
 * or a compacted-topic check takes: parse + CRC, decompress and iterate a 1 MiB batch of 1 KiB
 * records for each codec. Prints figures; asserts nothing about speed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runnel/protocol/compress.h"
#include "runnel/protocol/crc32c.h"
#include "runnel/protocol/records.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile uint32_t sink;

static double crc_gbps(uint32_t (*fn)(uint32_t, const void *, size_t), const uint8_t *buf,
                       size_t len, double seconds)
{
    double best = 0;
    for (int round = 0; round < 5; round++) {
        size_t iters = 0;
        double t0 = now(), t;
        do {
            sink ^= fn(0, buf, len);
            iters++;
            t = now();
        } while (t - t0 < seconds / 5);
        double gbps = (double)iters * (double)len / (t - t0) / 1e9;
        best = gbps > best ? gbps : best;
    }
    return best;
}

/* 1 KiB records of log-like text, so codecs see realistic (compressible) data. */
static uint8_t *make_batch(int codec, size_t *len, size_t *raw_bytes)
{
    enum { N = 1024, SZ = 1024 };
    static uint8_t values[N][SZ];
    static uint8_t keys[N][16];
    static struct kp_record_in recs[N];
    static const char *words[] = {
        "GET", "/api/v1/orders", "200",  "user=", "latency_ms=", "region=eu-west-1", "trace=",
        "ok",  "POST",           "retry"};
    uint64_t rng = 42;
    for (int i = 0; i < N; i++) {
        size_t p = 0;
        while (p < SZ) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const char *w = words[(rng >> 33) % 10];
            size_t wl = strlen(w);
            for (size_t k = 0; k < wl && p < SZ; k++) {
                values[i][p++] = (uint8_t)w[k];
            }
            if (p < SZ) {
                values[i][p++] = (uint8_t)('0' + (rng >> 50) % 10);
            }
            if (p < SZ) {
                values[i][p++] = ' ';
            }
        }
        int kl = snprintf((char *)keys[i], sizeof(keys[i]), "k%d", i);
        recs[i] = (struct kp_record_in){
            .key = {keys[i], kl}, .value = {values[i], SZ}, .timestamp = 1700000000000LL + i};
    }
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    spec.attributes = (int16_t)codec;
    uint8_t *out;
    if (kp_batch_build(&spec, recs, N, &out, len) != 0) {
        fprintf(stderr, "build failed\n");
        exit(1);
    }
    *raw_bytes = (size_t)N * SZ;
    return out;
}

static void bench_batch(int codec)
{
    size_t len, raw;
    uint8_t *b = make_batch(codec, &len, &raw);
    size_t iters = 0, records = 0;
    double t0 = now(), t;
    do {
        struct kp_batch batch;
        struct kp_batch_err err;
        struct kp_record_iter it;
        struct kp_record rec;
        if (kp_batch_parse(b, len, KP_BATCH_PRODUCE, &batch, &err) != 0 ||
            kp_record_iter_init(&it, &batch, 64u << 20, &err) != 0) {
            fprintf(stderr, "parse failed: %s\n", err.why);
            exit(1);
        }
        while (kp_record_iter_next(&it, &rec, &err) == 1) {
            sink ^= (uint32_t)rec.value.len;
            records++;
        }
        kp_record_iter_free(&it);
        iters++;
        t = now();
    } while (t - t0 < 1.0);
    double secs = t - t0;
    printf("batch %-6s  %7zu B on the wire (%4.1f%%)  parse+crc+decompress+iterate: %8.1f MB/s "
           "of records, %6.2f Mrecords/s\n",
           kp_codec_name(codec), len, 100.0 * (double)len / (double)raw,
           (double)iters * (double)raw / secs / 1e6, (double)records / secs / 1e6);
    free(b);
}

int main(void)
{
    size_t len = 1 << 20;
    uint8_t *buf = malloc(len + 1);
    for (size_t i = 0; i < len + 1; i++) {
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    }
    printf("crc32c 1 MiB  fast (SSE4.2 if present): %6.2f GB/s\n",
           crc_gbps(kp_crc32c, buf, len, 2.0));
    printf("crc32c 1 MiB  fast, unaligned start:     %6.2f GB/s\n",
           crc_gbps(kp_crc32c, buf + 1, len, 1.0));
    printf("crc32c 1 MiB  portable (slicing-by-8):   %6.2f GB/s\n",
           crc_gbps(kp_crc32c_portable, buf, len, 2.0));
    printf("crc32c 4 KiB  fast:                      %6.2f GB/s\n",
           crc_gbps(kp_crc32c, buf, 4096, 1.0));
    printf("crc32c 256 B  fast:                      %6.2f GB/s\n",
           crc_gbps(kp_crc32c, buf, 256, 1.0));
    free(buf);
    for (int codec = 0; codec <= 4; codec++) {
        bench_batch(codec);
    }
    return 0;
}
