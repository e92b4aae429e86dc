/*
 * Metadata state machine and journal benchmarks (no network): extent appends per second through
 * meta_state_commit alone and with journaling + group commit, start-up time (journal replay and
 * snapshot load) with 1M extents, and resident memory per extent and per partition.
 *
 * usage: bench_metadata_state [EXTENTS]   (default 1000000; data in /tmp, removed afterwards)
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runnel/metadata/journal.h"
#include "runnel/metadata/state.h"

#define PARTS_PER_COMMIT 100
#define NOW 1700000000000LL

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Heap bytes in use (glibc) plus the extent arrays `s` (may be NULL) keeps in mappings of their
 * own, in KiB like rss_kib. */
static long heap_kib(const struct meta_state *s)
{
    struct mallinfo2 m = mallinfo2();
    return (long)((m.uordblks + m.hblkhd + (s != NULL ? meta_state_mapped_bytes(s) : 0)) / 1024);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            v = strtol(line + 6, NULL, 10);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return v;
}

/* Commits `n_commits` objects of PARTS_PER_COMMIT partitions (one range each) into topic "t",
 * optionally journaling each. */
static void drive_n(struct meta_state *s, struct meta_journal *j, int n_commits, int first,
                    int parts)
{
    struct kp_uuid id = meta_state_topic_by_name(s, "t", 1)->id;
    struct meta_commit_range r[PARTS_PER_COMMIT];
    struct meta_commit_part p[PARTS_PER_COMMIT];
    struct meta_part_result pr[PARTS_PER_COMMIT];
    struct meta_range_result rr[PARTS_PER_COMMIT];
    struct meta_op_buf op = {0};
    for (int c = 0; c < n_commits; c++) {
        char key[48];
        snprintf(key, sizeof(key), "agent-1/2026/11/25/%08d.obj", first + c);
        for (int i = 0; i < parts; i++) {
            r[i] = (struct meta_commit_range){-1, -1, -1, 10, NOW + c, 0, 4000};
            p[i] = (struct meta_commit_part){.topic_id = id,
                                             .partition = (c + i) % 1000,
                                             .chunk_off = 4000 * i,
                                             .chunk_len = 4000,
                                             .n_ranges = 1,
                                             .ranges = &r[i]};
        }
        struct meta_commit cm = {key, strlen(key), 4000 * parts, NOW, 47, (uint32_t)parts, p};
        if (meta_state_commit(s, NOW, &cm, pr, rr) != 0) {
            fprintf(stderr, "commit failed\n");
            exit(1);
        }
        if (j != NULL) {
            meta_op_commit(&op, NOW, &cm);
            meta_journal_append(j, &op);
        }
    }
    meta_op_buf_free(&op);
}

static void drive(struct meta_state *s, struct meta_journal *j, int n_commits, int first)
{
    drive_n(s, j, n_commits, first, PARTS_PER_COMMIT);
}

int main(int argc, char **argv)
{
    long extents = argc > 1 ? atol(argv[1]) : 1000000;
    int commits = (int)(extents / PARTS_PER_COMMIT);
    char err[256];
    printf("metadata state benchmarks: %d commits x %d partitions = %ld extents\n", commits,
           PARTS_PER_COMMIT, (long)commits * PARTS_PER_COMMIT);
    printf("sizeof(struct meta_extent) = %zu bytes\n", sizeof(struct meta_extent));

    /* 1. state machine only, and memory. */
    long real0 = rss_kib();
    struct meta_state s;
    meta_state_init(&s, NULL);
    meta_state_create_topic(&s, "t", 1, 1000, NULL, 0, false, NULL);
    long rss1 = heap_kib(&s);
    double t0 = now_s();
    drive(&s, NULL, commits, 0);
    double t1 = now_s();
    long rss2 = heap_kib(&s);
    long real2 = rss_kib();
    printf("extent appends (state machine only): %.0f extents/s (%.2f s)\n",
           (double)s.n_extents / (t1 - t0), t1 - t0);
    printf("memory: %.0f heap bytes per extent incl. its share of objects (%d extents per "
           "object); process RSS grew %.0f bytes per extent\n",
           (double)(rss2 - rss1) * 1024 / (double)s.n_extents, PARTS_PER_COMMIT,
           (double)(real2 - real0) * 1024 / (double)s.n_extents);
    meta_state_free(&s);

    /* Worst case for memory: one extent per object (each carries its own object key). */
    meta_state_init(&s, NULL);
    meta_state_create_topic(&s, "t", 1, 1000, NULL, 0, false, NULL);
    long h0 = heap_kib(&s);
    drive_n(&s, NULL, 200000, 0, 1);
    long h1 = heap_kib(&s);
    printf("memory: %.0f heap bytes per extent when every object holds a single extent\n",
           (double)(h1 - h0) * 1024 / (double)s.n_extents);
    meta_state_free(&s);

    /* Memory with many partitions. */
    long rss3 = heap_kib(NULL);
    meta_state_init(&s, NULL);
    for (int i = 0; i < 100; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", i);
        meta_state_create_topic(&s, name, strlen(name), 1000, NULL, 0, false, NULL);
    }
    long rss4 = heap_kib(&s);
    printf("memory: %.0f heap bytes per empty partition (100 topics x 1000 partitions)\n",
           (double)(rss4 - rss3) * 1024 / 100000);
    meta_state_free(&s);

    /* 2. with the journal (group commit on the writer thread). */
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/runnel-bench-meta-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return 1;
    }
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    if (meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct meta_op_buf op = {0};
    meta_op_create_topic(&op, NOW, "t", 1, 1000, NULL, 0);
    meta_state_create_topic(&s, "t", 1, 1000, NULL, 0, false, NULL);
    meta_journal_append(j, &op);
    meta_op_buf_free(&op);
    t0 = now_s();
    drive(&s, j, commits, 0);
    uint64_t last = meta_journal_last_seq(j);
    while (meta_journal_durable_seq(j) < last && meta_journal_failed(j) == 0) {
        usleep(100);
    }
    t1 = now_s();
    printf("extent appends (state machine + journal + fdatasync): %.0f extents/s "
           "(%.2f s, %llu fdatasyncs)\n",
           (double)s.n_extents / (t1 - t0), t1 - t0, (unsigned long long)meta_journal_syncs(j));
    meta_journal_close(j);

    /* 3. start-up: replay the journal of 1M extents. */
    struct meta_state r;
    meta_state_init(&r, NULL);
    t0 = now_s();
    if (meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    t1 = now_s();
    printf("start-up, journal replay of %llu extents: %.3f s\n", (unsigned long long)r.n_extents,
           t1 - t0);
    /* 4. snapshot, then start-up from the snapshot. */
    meta_journal_snapshot(j, &r);
    meta_journal_close(j);
    meta_state_free(&r);
    meta_state_init(&r, NULL);
    t0 = now_s();
    if (meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    t1 = now_s();
    printf("start-up, snapshot load of %llu extents: %.3f s\n", (unsigned long long)r.n_extents,
           t1 - t0);
    meta_journal_close(j);
    meta_state_free(&r);
    meta_state_free(&s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
