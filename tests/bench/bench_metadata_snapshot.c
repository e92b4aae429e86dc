/*
 * What a background snapshot costs the metadata service, without the RPC: builds a state of N
 * extents (100 partitions per committed object, as bench_metadata_state does), writes it as the
 * journal's base snapshot, and then for several snapshots in a row
 *   - times meta_journal_snapshot_start(): the loop thread's pause (asking for the switch to a
 *     new journal file and starting the thread);
 *   - while the snapshot thread rebuilds the state from the files and writes it, and for 2 s
 *     after its install was asked for, journals one commit of P partitions every 5 ms (200
 *     commits/s) and measures each one's append -> durable latency (write + fdatasync by the
 *     writer thread, which also installs the snapshot): p50, p99 and max, and the max over the
 *     2 s after the install was asked for.
 * Only the journal's own stalls show here; the machine's scheduling of a client and a server
 * (bench_metadata_commit) does not. The process's resident size is printed before and at the
 * end (the snapshot thread holds a second copy of the state while it runs).
 *
 * usage: bench_metadata_snapshot [EXTENTS] [SNAPSHOTS] [P]   (default 10000000, 3, 1000)
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runnel/metadata/journal.h"
#include "runnel/metadata/state.h"

#define PARTS 100
#define NOW 1700000000000LL
#define MAX_LAT 100000

static double *g_lat;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, n) == 0) {
            v = strtol(line + n, NULL, 10);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return v;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long extents = argc > 1 ? atol(argv[1]) : 10000000;
    int snaps = argc > 2 ? atoi(argv[2]) : 3;
    int parts = argc > 3 ? atoi(argv[3]) : 1000;
    g_lat = malloc(sizeof(double) * MAX_LAT);
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/runnel-bench-snapshot-XXXXXX");
    if (mkdtemp(dir) == NULL || snaps < 1 || snaps > 100 || parts < 1 || parts > 1000) {
        return 1;
    }
    struct meta_state s;
    meta_state_init(&s, NULL);
    char err[256];
    struct meta_journal *j;
    if (meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    meta_state_create_topic(&s, "t", 1, 1000, NULL, 0, false, NULL);
    struct kp_uuid id = meta_state_topic_by_name(&s, "t", 1)->id;
    struct meta_commit_range r[PARTS];
    struct meta_commit_part p[PARTS];
    struct meta_part_result pr[PARTS];
    struct meta_range_result rr[PARTS];
    double t0 = now_s();
    for (long c = 0; c < extents / PARTS; c++) {
        char key[48];
        snprintf(key, sizeof(key), "agent-1/2026/11/25/%08ld.obj", c);
        for (int i = 0; i < PARTS; i++) {
            r[i] = (struct meta_commit_range){-1, -1, -1, 10, NOW + c, 0, 4000};
            p[i] = (struct meta_commit_part){.topic_id = id,
                                             .partition = (int32_t)((c + i) % 1000),
                                             .chunk_off = 4000 * i,
                                             .chunk_len = 4000,
                                             .n_ranges = 1,
                                             .ranges = &r[i]};
        }
        struct meta_commit cm = {key, strlen(key), 4000 * PARTS, NOW, 47, PARTS, p};
        if (meta_state_commit(&s, NOW, &cm, pr, rr) != 0) {
            return 1;
        }
    }
    printf("metadata snapshot cost: %llu extents built in %.1f s; RSS %ld MiB\n",
           (unsigned long long)s.n_extents, now_s() - t0, status_kib("VmRSS:") / 1024);
    /* The state so far is the journal's base snapshot, as a running service's would be. */
    t0 = now_s();
    if (meta_journal_snapshot(j, &s) != 0) {
        fprintf(stderr, "base snapshot failed\n");
        return 1;
    }
    char base[128];
    snprintf(base, sizeof(base), "%s/snapshot.%020llu", dir,
             (unsigned long long)meta_journal_generation(j));
    while (access(base, F_OK) != 0 && meta_journal_failed(j) == 0) {
        usleep(1000);
    }
    printf("base snapshot written in %.1f s\n", now_s() - t0);
    /* One commit of `parts` partitions, encoded once, journaled again and again. */
    struct meta_commit_range *cr = calloc((size_t)parts, sizeof(*cr));
    struct meta_commit_part *cp = calloc((size_t)parts, sizeof(*cp));
    for (int i = 0; i < parts; i++) {
        cr[i] = (struct meta_commit_range){-1, -1, -1, 10, NOW, 0, 4000};
        cp[i] = (struct meta_commit_part){.topic_id = id,
                                          .partition = i % 1000,
                                          .chunk_off = 4000 * i,
                                          .chunk_len = 4000,
                                          .n_ranges = 1,
                                          .ranges = &cr[i]};
    }
    struct meta_commit one = {"agent-1/bench/paced.obj", 23, 4000 * parts, NOW, 47,
                              (uint32_t)parts,           cp};
    struct meta_op_buf op = {0};
    meta_op_commit(&op, NOW, &one);
    double pause[100];
    long rss_max = 0;
    for (int i = 0; i < snaps; i++) {
        double a = now_s();
        int rc = meta_journal_snapshot_start(j);
        double b = now_s();
        if (rc != 0) {
            fprintf(stderr, "snapshot start failed: %d\n", rc);
            return 1;
        }
        pause[i] = (b - a) * 1000;
        size_t n = 0;
        double install_at = 0;
        double install_max = 0;
        double next = now_s();
        double thread_s = 0;
        while (install_at == 0 || now_s() < install_at + 2) {
            if (install_at == 0 && !meta_journal_snapshot_running(j)) {
                thread_s = now_s() - b;
                if (meta_journal_snapshot_poll(j, err, sizeof(err)) != 1) {
                    fprintf(stderr, "snapshot failed: %s\n", err);
                    return 1;
                }
                install_at = now_s();
            }
            if (install_at == 0 && (n & 63) == 0) {
                long rss = status_kib("VmRSS:");
                rss_max = rss > rss_max ? rss : rss_max;
            }
            double t = now_s();
            uint64_t seq = meta_journal_append(j, &op);
            while (meta_journal_durable_seq(j) < seq && meta_journal_failed(j) == 0) {
                usleep(20);
            }
            double l = (now_s() - t) * 1000;
            if (n < MAX_LAT) {
                g_lat[n++] = l;
            }
            if (install_at != 0 && l > install_max) {
                install_max = l;
            }
            next += 0.005;
            double wait = next - now_s();
            if (wait > 0) {
                usleep((useconds_t)(wait * 1e6));
            }
        }
        qsort(g_lat, n, sizeof(double), cmp_d);
        printf("  snapshot %d: start pause %.3f ms; thread %.2f s; %zu commits of %d partitions "
               "at 200/s: latency p50 %.3f ms, p99 %.3f ms, max %.3f ms; max after the install "
               "was asked for %.3f ms\n",
               i + 1, pause[i], thread_s, n, parts, g_lat[n / 2], g_lat[(size_t)(0.99 * (n - 1))],
               g_lat[n - 1], install_max);
    }
    qsort(pause, (size_t)snaps, sizeof(double), cmp_d);
    printf("start pause over %d snapshots: min %.3f ms, median %.3f ms, max %.3f ms; peak RSS "
           "while a snapshot was built %ld MiB\n",
           snaps, pause[0], pause[snaps / 2], pause[snaps - 1], rss_max / 1024);
    meta_op_buf_free(&op);
    free(cr);
    free(cp);
    meta_journal_close(j);
    meta_state_free(&s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
