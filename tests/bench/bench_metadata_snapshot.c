/*
 * What a forked snapshot costs the metadata service, without the RPC: builds a state of N
 * extents (100 partitions per committed object, as bench_metadata_state does), opens a journal in
 * /tmp, and for several snapshots in a row
 *   - times meta_journal_snapshot_fork(): the loop thread's pause while fork() copies the page
 *     tables (the process's resident size and page-table size, VmPTE, are printed);
 *   - while the child writes and for 2 s after it is installed, journals one commit of P
 *     partitions every 5 ms (200 commits/s) and measures each one's append -> durable latency
 *     (write + fdatasync by the writer thread, which also installs the snapshot): p50, p99 and
 *     max, and the max over the 2 s after the install was asked for.
 * Only the journal's own stalls show here; the machine's scheduling of a client and a server
 * (bench_metadata_commit) does not. At the end, as a reference for the fork pause, it forks a
 * plain anonymous region of the same resident size, once with 4 KiB pages and once advised
 * MADV_HUGEPAGE (what huge-page-backed extent storage would give).
 *
 * usage: bench_metadata_snapshot [EXTENTS] [SNAPSHOTS] [P]   (default 10000000, 3, 1000)
 * Try GLIBC_TUNABLES=glibc.malloc.hugetlb=1 to let malloc back its large blocks with
 * transparent huge pages (fewer page-table entries to copy).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
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

static int cmp_d(const void *a, const void *b);

/* Times fork() of a process holding `bytes` of touched anonymous memory (3 forks, the median). */
static double fork_region_ms(size_t bytes, bool huge, long *huge_kib)
{
    uint8_t *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return -1;
    }
    if (huge) {
        (void)madvise(p, bytes, MADV_HUGEPAGE);
    }
    memset(p, 1, bytes);
    *huge_kib = -1;
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "AnonHugePages:", 14) == 0) {
            *huge_kib = strtol(line + 14, NULL, 10);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    double ms[3];
    for (int i = 0; i < 3; i++) {
        double a = now_s();
        pid_t pid = fork();
        if (pid == 0) {
            _exit(0);
        }
        ms[i] = (now_s() - a) * 1000;
        waitpid(pid, NULL, 0);
    }
    munmap(p, bytes);
    qsort(ms, 3, sizeof(double), cmp_d);
    return ms[1];
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
    snprintf(dir, sizeof(dir), "/tmp/runnel-bench-fork-XXXXXX");
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
    long huge_kib = -1;
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "AnonHugePages:", 14) == 0) {
            huge_kib = strtol(line + 14, NULL, 10);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    printf("metadata snapshot cost: %llu extents built in %.1f s; RSS %ld MiB (%ld MiB in huge "
           "pages), page tables (VmPTE) %ld KiB; GLIBC_TUNABLES=%s\n",
           (unsigned long long)s.n_extents, now_s() - t0, status_kib("VmRSS:") / 1024,
           huge_kib / 1024, status_kib("VmPTE:"),
           getenv("GLIBC_TUNABLES") ? getenv("GLIBC_TUNABLES") : "");
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
    for (int i = 0; i < snaps; i++) {
        double a = now_s();
        pid_t pid = meta_journal_snapshot_fork(j, &s);
        double b = now_s();
        if (pid < 0) {
            fprintf(stderr, "fork failed\n");
            return 1;
        }
        pause[i] = (b - a) * 1000;
        size_t n = 0;
        double install_at = 0;
        double install_max = 0;
        double next = now_s();
        double child_s = 0;
        while (install_at == 0 || now_s() < install_at + 2) {
            if (install_at == 0) {
                int st = 0;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                    child_s = now_s() - b;
                    meta_journal_snapshot_forked_done(j, pid,
                                                      WIFEXITED(st) && WEXITSTATUS(st) == 0);
                    install_at = now_s();
                }
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
        printf("  snapshot %d: fork pause %.1f ms; child %.2f s; %zu commits of %d partitions "
               "at 200/s: latency p50 %.3f ms, p99 %.3f ms, max %.3f ms; max after the install "
               "was asked for %.3f ms\n",
               i + 1, pause[i], child_s, n, parts, g_lat[n / 2], g_lat[(size_t)(0.99 * (n - 1))],
               g_lat[n - 1], install_max);
    }
    qsort(pause, (size_t)snaps, sizeof(double), cmp_d);
    printf("fork pause over %d snapshots: min %.1f ms, median %.1f ms, max %.1f ms\n", snaps,
           pause[0], pause[snaps / 2], pause[snaps - 1]);
    meta_op_buf_free(&op);
    free(cr);
    free(cp);
    meta_journal_close(j);
    size_t rss = (size_t)status_kib("VmRSS:") * 1024;
    meta_state_free(&s);
    long h4k = 0;
    long h2m = 0;
    double plain = fork_region_ms(rss, false, &h4k);
    double huge = fork_region_ms(rss, true, &h2m);
    printf("reference: fork of a plain %zu MiB region: %.1f ms with 4 KiB pages, %.1f ms advised "
           "MADV_HUGEPAGE (%ld MiB in huge pages)\n",
           rss >> 20, plain, huge, h2m / 1024);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
