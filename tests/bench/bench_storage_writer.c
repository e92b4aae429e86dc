/*
 * Object writer throughput: seal objects of ~8 MiB built from record batches of 1 KiB
 * log-like JSON records (16 records per batch, 64 partitions), at zstd level 1 by default, on
 * one thread. Prints MB/s of raw input per core for builder appends + seal, for the seal alone,
 * the compression ratio, and reader throughput (CRC check + decompress of every chunk).
 * Target: >= 400 MB/s per core for the seal.
 *
 * usage: bench_storage_writer [OBJECTS] [LEVEL] [log|kv]
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "runnel/storage/object.h"

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

static uint64_t rng = 0x853c49e6748fea9bULL;
static bool kv_data; /* hard-to-compress records instead of log lines */

static uint32_t next_rand(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng >> 33);
}

/* One ~1 KiB JSON log line. */
static size_t make_record(char *out, size_t cap, int i)
{
    static const char *const levels[] = {"info", "warn", "error", "debug"};
    static const char *const paths[] = {"/api/v1/orders", "/api/v1/users/profile", "/health",
                                        "/api/v2/search", "/static/app.js"};
    static const char *const agents[] = {"Mozilla/5.0 (X11; Linux x86_64) Firefox/118.0",
                                         "curl/7.88.1", "python-requests/2.28.1",
                                         "Mozilla/5.0 (Macintosh; Intel Mac OS X 13_5) Safari"};
    int n =
        snprintf(out, cap,
                 "{\"ts\":\"2026-11-25T10:%02u:%02u.%03uZ\",\"level\":\"%s\",\"service\":"
                 "\"checkout-%u\",\"trace_id\":\"%08x%08x%08x%08x\",\"span_id\":\"%08x\","
                 "\"method\":\"GET\",\"path\":\"%s\",\"status\":%u,\"duration_ms\":%u,"
                 "\"bytes\":%u,\"client_ip\":\"10.%u.%u.%u\",\"user_agent\":\"%s\","
                 "\"user_id\":%u,\"region\":\"eu-west-%u\",\"msg\":\"request completed",
                 next_rand() % 60, next_rand() % 60, next_rand() % 1000, levels[next_rand() % 4],
                 next_rand() % 8, next_rand(), next_rand(), next_rand(), next_rand(), next_rand(),
                 paths[next_rand() % 5], 200 + (next_rand() % 4) * 100, next_rand() % 2000,
                 next_rand() % 100000, next_rand() % 256, next_rand() % 256, next_rand() % 256,
                 agents[next_rand() % 4], next_rand() % 1000000, 1 + next_rand() % 3);
    size_t len = (size_t)n;
    /* Pad to 1024 bytes. "kv" data: random key=value words (hard to compress, ~3x);
     * "log" data: log sentences from a small vocabulary with a few numbers (~6x, typical of
     * application logs). */
    static const char *const words[] = {"sku",   "cart",  "total", "item",    "price", "qty",
                                        "promo", "store", "order", "ship",    "zone",  "retry",
                                        "cache", "miss",  "hit",   "latency", "db",    "shard"};
    static const char *const sentences[] = {
        " upstream responded after retry;", " cache lookup missed, loading from database;",
        " user session refreshed;",         " payment authorised by provider;",
        " inventory reserved for order;",   " rate limiter allowed request;",
        " feature flag evaluated to true;", " slow query detected on orders table;",
        " connection returned to pool;",    " request validated against schema v3;"};
    while (len < 1022) {
        char w[64];
        int k;
        if (kv_data) {
            k = snprintf(w, sizeof(w), " %s_%u=%u", words[next_rand() % 18], next_rand() % 64,
                         next_rand() % 100000);
        } else if (next_rand() % 4 == 0) {
            k = snprintf(w, sizeof(w), " attempt=%u elapsed_ms=%u", next_rand() % 4,
                         next_rand() % 500);
        } else {
            k = snprintf(w, sizeof(w), "%s", sentences[next_rand() % 10]);
        }
        size_t kk = (size_t)k;
        if (kk > 1022 - len) {
            kk = 1022 - len;
        }
        memcpy(out + len, w, kk);
        len += kk;
    }
    memcpy(out + len, "\"}", 2);
    (void)i;
    return 1024;
}

int main(int argc, char **argv)
{
    int objects = argc > 1 ? atoi(argv[1]) : 20;
    int level = argc > 2 ? atoi(argv[2]) : 1;
    kv_data = argc > 3 && strcmp(argv[3], "kv") == 0;
    const int parts = 64;
    const int per_batch = 16;
    const size_t target = 8u << 20;
    /* Pre-generate batches so record generation is not measured. */
    size_t nbatches = target / (per_batch * 1024 + 61) + 1;
    size_t blen = 61 + (size_t)per_batch * 1024;
    uint8_t *batches = malloc(nbatches * blen);
    for (size_t b = 0; b < nbatches; b++) {
        uint8_t *p = batches + b * blen;
        memset(p, 0, 61);
        p[16] = 2;
        p[60] = (uint8_t)per_batch;
        for (int r = 0; r < per_batch; r++) {
            make_record((char *)p + 61 + (size_t)r * 1024, 1100, r);
        }
    }
    uint8_t topic[16] = {0x42};
    double t_add = 0;
    double t_seal = 0;
    double t_read = 0;
    size_t raw = 0;
    size_t stored = 0;
    uint8_t id0[16] = {0};
    struct store_obj_builder *b = store_obj_builder_new(id0, 0, level);
    for (int o = 0; o < objects; o++) {
        uint8_t id[16] = {(uint8_t)o};
        double t0 = now_s();
        /* A long-lived writer reuses its builder (and its buffers) from object to object. */
        store_obj_builder_reset(b, id, 0);
        for (size_t i = 0; i < nbatches; i++) {
            struct store_batch_info info = {
                .records = (uint32_t)per_batch, .first_ts = 1, .last_ts = 2};
            store_obj_builder_add(b, topic, (int32_t)(i % parts), batches + i * blen, blen, &info);
        }
        double t1 = now_s();
        uint8_t *obj = NULL;
        size_t len = 0;
        struct store_footer f;
        if (store_obj_seal(b, &obj, &len, &f) != 0) {
            fprintf(stderr, "seal failed\n");
            return 1;
        }
        double t2 = now_s();
        for (uint32_t c = 0; c < f.nchunks; c++) {
            uint8_t *out = NULL;
            size_t outlen = 0;
            const char *why = NULL;
            if (store_chunk_decode(&f.chunks[c], obj + f.chunks[c].offset, f.chunks[c].stored_len,
                                   1 << 30, &out, &outlen, &why) != 0) {
                fprintf(stderr, "decode failed: %s\n", why);
                return 1;
            }
            free(out);
        }
        double t3 = now_s();
        t_add += t1 - t0;
        t_seal += t2 - t1;
        t_read += t3 - t2;
        raw += store_obj_builder_bytes(b);
        stored += len;
        store_footer_free(&f);
        free(obj);
    }
    store_obj_builder_free(b);
    printf("writer: %d objects of %.1f MiB raw, %d partitions, 1 KiB JSON records x%d per batch, "
           "zstd level %d, %s data\n",
           objects, (double)raw / objects / 1048576.0, parts, per_batch, level,
           kv_data ? "key=value" : "log-line");
    printf("  seal only          %8.1f MB/s per core\n", (double)raw / 1e6 / t_seal);
    printf("  append + seal      %8.1f MB/s per core\n", (double)raw / 1e6 / (t_add + t_seal));
    printf("  read (crc+unzstd)  %8.1f MB/s per core\n", (double)raw / 1e6 / t_read);
    printf("  compression ratio  %8.2fx (%zu -> %zu bytes)\n", (double)raw / (double)stored, raw,
           stored);
    free(batches);
    return 0;
}
