/*
 * Object writer throughput: seal objects of ~8 MiB built from record batches of 1 KiB
 * log-like JSON records (16 records per batch, 64 partitions), at zstd level 1 by default, on
 * one thread. Prints MB/s of raw input per core for builder appends + seal, for the seal alone,
 * the compression ratio, and reader throughput (CRC check + decompress of every chunk).
 * Target: >= 400 MB/s per core for the seal.
 *
 * Each figure is given twice: against wall-clock time and against the thread's CPU time (what
 * "per core" means; on a machine shared with other jobs the wall clock also counts time the
 * thread was not running). As a same-run reference, every object's chunks are also compressed
 * the way the seal did before its tuning: ZSTD_compress2 at the same level with zstd's default
 * parameters and a fresh context per object ("reference" line, and the ratio seal/reference).
 * The process uses the allocator settings `runnel agent` runs with (mallopt in
 * agent/src/agent_cmd.c); RUNNEL_BENCH_GLIBC_DEFAULTS=1 measures glibc's defaults.
 *
 * usage: bench_storage_writer [OBJECTS] [LEVEL] [log|kv]
 */
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>
#include <zstd.h>

#include "runnel/storage/object.h"

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds of wall-clock and CPU time. */
struct span {
    double wall; /* wall clock */
    double cpu;  /* this thread's CPU time */
};

static struct span span_now(void)
{
    struct span t = {now_s(), cpu_s()};
    return t;
}

static void span_add(struct span *acc, struct span from, struct span to)
{
    acc->wall += to.wall - from.wall;
    acc->cpu += to.cpu - from.cpu;
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
    if (getenv("RUNNEL_BENCH_GLIBC_DEFAULTS") == NULL) {
        mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
        mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
    }
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
    struct span t_add = {0, 0};
    struct span t_seal = {0, 0};
    struct span t_read = {0, 0};
    struct span t_ref = {0, 0};
    size_t raw = 0;
    size_t stored = 0;
    size_t ref_stored = 0;
    uint8_t id0[16] = {0};
    struct store_obj_builder *b = store_obj_builder_new(id0, 0, level);
    for (int o = 0; o < objects; o++) {
        uint8_t id[16] = {(uint8_t)o};
        struct span t0 = span_now();
        /* A long-lived writer reuses its builder (and its buffers) from object to object. */
        store_obj_builder_reset(b, id, 0);
        for (size_t i = 0; i < nbatches; i++) {
            struct store_batch_info info = {
                .records = (uint32_t)per_batch, .first_ts = 1, .last_ts = 2};
            store_obj_builder_add(b, topic, (int32_t)(i % parts), batches + i * blen, blen, &info);
        }
        struct span t1 = span_now();
        uint8_t *obj = NULL;
        size_t len = 0;
        struct store_footer f;
        if (store_obj_seal(b, &obj, &len, &f) != 0) {
            fprintf(stderr, "seal failed\n");
            return 1;
        }
        struct span t2 = span_now();
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
        struct span t3 = span_now();
        span_add(&t_add, t0, t1);
        span_add(&t_seal, t1, t2);
        span_add(&t_read, t2, t3);
        /* Reference: the same chunks (decoded back from the object, outside the timing) through
         * ZSTD_compress2 with a fresh context and zstd's defaults for the level. */
        uint8_t **chunk_raw = calloc(f.nchunks, sizeof(*chunk_raw));
        size_t *chunk_len = calloc(f.nchunks, sizeof(*chunk_len));
        size_t cap = 0;
        for (uint32_t c = 0; c < f.nchunks; c++) {
            const char *why = NULL;
            store_chunk_decode(&f.chunks[c], obj + f.chunks[c].offset, f.chunks[c].stored_len,
                               1 << 30, &chunk_raw[c], &chunk_len[c], &why);
            cap += ZSTD_compressBound(chunk_len[c]);
        }
        struct span r0 = span_now();
        uint8_t *ref = malloc(cap);
        ZSTD_CCtx *cctx = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
        size_t roff = 0;
        for (uint32_t c = 0; c < f.nchunks; c++) {
            size_t n = ZSTD_compress2(cctx, ref + roff, cap - roff, chunk_raw[c], chunk_len[c]);
            roff += ZSTD_isError(n) ? 0 : n;
        }
        ZSTD_freeCCtx(cctx);
        free(ref);
        struct span r1 = span_now();
        span_add(&t_ref, r0, r1);
        ref_stored += roff;
        for (uint32_t c = 0; c < f.nchunks; c++) {
            free(chunk_raw[c]);
        }
        free(chunk_raw);
        free(chunk_len);
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
    double mb = (double)raw / 1e6;
    printf("                      MB/s (wall)  MB/s (CPU time)\n");
    printf("  seal only            %8.1f     %8.1f\n", mb / t_seal.wall, mb / t_seal.cpu);
    printf("  append + seal        %8.1f     %8.1f\n", mb / (t_add.wall + t_seal.wall),
           mb / (t_add.cpu + t_seal.cpu));
    printf("  read (crc+unzstd)    %8.1f     %8.1f\n", mb / t_read.wall, mb / t_read.cpu);
    printf("  reference (zstd defaults, fresh context, no CRC)\n"
           "                       %8.1f     %8.1f   seal/reference %.2fx (CPU time)\n",
           mb / t_ref.wall, mb / t_ref.cpu, t_ref.cpu / t_seal.cpu);
    printf("  compression ratio  %8.2fx (%zu -> %zu bytes); reference %.2fx\n",
           (double)raw / (double)stored, raw, stored, (double)raw / (double)ref_stored);
    free(batches);
    return 0;
}
