/*
 * Commit benchmark over the real RPC and journal: a metadata server runs in a child process (its
 * own libuv loop, journal in /tmp or --dir, fdatasync per group commit); the parent drives Commit
 * requests through the client library with 1, 100 and 1,000 partitions per commit and reports
 *   - paced: 200 commits/s for a few seconds, latency p50/p99/max (the target: p99 <= 2 ms),
 *     after a 5 s probe of the disk itself in the same directory (appends of the size of one
 *     commit's journal record, measured over 40 commits just before, each with fdatasync, at
 *     200/s: the floor any journal on this disk has), and the ratio to it;
 *   - saturated: 64 commits in flight, commits/s and latency p50/p99.
 *
 * With --overlap EXTENTS the server first gets EXTENTS extents (1,000-partition commits, 64 in
 * flight) and runs with a 1-byte snapshot threshold, so a background snapshot of the whole state is
 * always in progress: as soon as one is installed the next starts. Then only the paced runs are
 * measured, each of them overlapped by snapshots throughout. The server's log (stderr) shows each
 * snapshot's start and how long it took (meta_snapshot_started, meta_snapshot_written).
 *
 * With --snapshot-bytes N as well, the server snapshots at its usual rule instead (N bytes of
 * journal since the last snapshot, the service's default being 256 MiB, or as many as the state's
 * uncompressed snapshot if that is more; snapshot.state.percent): the paced runs then show the
 * latency at the target rate over a state of EXTENTS extents with the snapshots that rate
 * triggers (at 1,000 partitions per commit, one every few tens of seconds; use long runs).
 *
 * --snapshot-mbps N sets the service's snapshot.write.mbps (0: no limit). --parts N runs only
 * the runs with N partitions per commit (repeatable). --dir DIR puts the data directory (journal,
 * snapshots, disk probe) under DIR instead of /tmp, to measure another disk.
 *
 * usage: bench_metadata_commit [SECONDS_PER_RUN] [--overlap EXTENTS [--snapshot-bytes N]]
 *                              [--snapshot-mbps N] [--parts N]... [--dir DIR]
 *        (default 3 s; 1, 100 and 1,000 partitions)
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "runnel/metadata/client.h"
#include "runnel/metadata/server.h"

#define MAX_SAMPLES 2000000

static uv_loop_t g_loop;
static struct meta_client *g_cli;
static struct kp_uuid g_topic;
static int g_parts;
static int g_seq;
static int g_outstanding;
static int g_done;
static double *g_lat;
static size_t g_n_lat;
static bool g_stop;
static int g_window;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long g_snapshot_mbps = -1; /* --snapshot-mbps: -1 keeps the service's default */

static void server_child(const char *dir, int port, uint64_t snapshot_bytes)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct meta_server_options o;
    meta_server_options_default(&o);
    o.data_dir = dir;
    o.port = port;
    if (snapshot_bytes > 0) {
        o.snapshot_bytes = snapshot_bytes;
    }
    if (snapshot_bytes == 1) {
        o.snapshot_state_pct = 0; /* back to back, whatever the state's size */
    }
    if (g_snapshot_mbps >= 0) {
        o.snapshot_write_rate = (uint64_t)g_snapshot_mbps << 20;
    }
    char err[256];
    struct meta_server *srv;
    if (meta_server_open(&srv, &loop, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "server: %s\n", err);
        _exit(1);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(0);
}

struct req {
    double t0; /* send time */
};

static void send_commit(void);

static void on_commit(void *arg, int status, const void *resp)
{
    struct req *r = arg;
    const struct kp_meta_commit_response *c = resp;
    if (status != 0 || c->error_code != 0) {
        fprintf(stderr, "commit failed: %d %d\n", status, status == 0 ? c->error_code : 0);
        exit(1);
    }
    if (g_n_lat < MAX_SAMPLES) {
        g_lat[g_n_lat++] = now_s() - r->t0;
    }
    free(r);
    g_outstanding--;
    g_done++;
    if (g_window > 0 && !g_stop) {
        send_commit();
    }
}

static void send_commit(void)
{
    static struct kp_meta_commit_request_meta_commit_partition *p;
    static struct kp_meta_commit_request_meta_commit_range *rg;
    if (p == NULL) {
        p = calloc(1000, sizeof(*p));
        rg = calloc(1000, sizeof(*rg));
    }
    struct kp_meta_commit_request rq;
    kp_meta_commit_request_init(&rq);
    for (int i = 0; i < g_parts; i++) {
        kp_meta_commit_request_meta_commit_partition_init(&p[i]);
        kp_meta_commit_request_meta_commit_range_init(&rg[i]);
        rg[i].record_count = 10;
        rg[i].max_timestamp = 1000;
        rg[i].raw_length = 4000;
        p[i].topic_id = g_topic;
        p[i].partition_index = i;
        p[i].chunk_offset = 4000LL * i;
        p[i].chunk_length = 4000;
        p[i].ranges = &rg[i];
        p[i].ranges_count = 1;
    }
    char key[64];
    snprintf(key, sizeof(key), "agent-1/bench/%d/%09d.obj", g_parts, g_seq++);
    rq.object_key = kp_str_from(key);
    rq.object_size = 4000LL * g_parts;
    rq.object_created_ms = (int64_t)time(NULL) * 1000;
    rq.partitions = p;
    rq.partitions_count = g_parts;
    struct req *r = malloc(sizeof(*r));
    r->t0 = now_s();
    if (meta_client_call(g_cli, 1006, &rq, on_commit, r) != 0) {
        exit(1);
    }
    g_outstanding++;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double q)
{
    if (g_n_lat == 0) {
        return 0;
    }
    size_t i = (size_t)(q * (double)(g_n_lat - 1));
    return g_lat[i] * 1000;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    if (!g_stop) {
        send_commit();
    }
}

static void on_create(void *arg, int status, const void *resp)
{
    (void)arg;
    if (status == 0) {
        const struct kp_meta_create_topics_response *r = resp;
        g_topic = r->topics[0].topic_id;
        g_done = 1;
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    *(bool *)h->data = true;
}

/*
 * The disk's own floor, measured just before a paced run in the same directory: what the
 * journal does for one commit (an append of the size of one commit's journal record, and
 * fdatasync), at the same 200 per second, without RPC or service. Its p99 is the peer the run's
 * p99 is compared with.
 */
static double g_floor_p99;

/* Bytes in the data directory's journal files. */
static long long journal_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    long long n = 0;
    for (struct dirent *e = d ? readdir(d) : NULL; e != NULL; e = readdir(d)) {
        char path[512];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (strncmp(e->d_name, "journal.", 8) == 0 && stat(path, &st) == 0) {
            n += st.st_size;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static void run_paced(double seconds, int rate, bool report);

/* The size of one commit's journal record at the current partition count: 40 paced commits. */
static size_t record_bytes(const char *dir)
{
    long long before = journal_bytes(dir);
    run_paced(0.2, 200, false);
    long long grew = journal_bytes(dir) - before;
    return g_n_lat > 0 && grew > 0 ? (size_t)(grew / (long long)g_n_lat) : 200;
}

static void probe_disk(const char *dir, int n, size_t rec_len)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/disk-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror("probe");
        exit(1);
    }
    char *rec = malloc(rec_len);
    memset(rec, 'p', rec_len);
    g_n_lat = 0;
    double next = now_s();
    for (int i = 0; i < n; i++) {
        double t = now_s();
        if (next > t) {
            usleep((useconds_t)((next - t) * 1e6));
        }
        next += 1.0 / 200;
        t = now_s();
        if (write(fd, rec, rec_len) != (ssize_t)rec_len || fdatasync(fd) != 0) {
            perror("probe");
            exit(1);
        }
        g_lat[g_n_lat++] = now_s() - t;
    }
    close(fd);
    unlink(path);
    free(rec);
    qsort(g_lat, g_n_lat, sizeof(double), cmp_d);
    g_floor_p99 = pct(0.99);
    printf("  disk floor, %zu-byte append + fdatasync at 200/s: p50 %.3f ms, p99 %.3f ms, "
           "max %.3f ms\n",
           rec_len, pct(0.5), pct(0.99), pct(1.0));
}

static void run_paced(double seconds, int rate, bool report)
{
    g_n_lat = 0;
    g_stop = false;
    g_window = 0;
    uv_timer_t timer; /* closed (callback run) before this frame ends */
    bool closed = false;
    uv_timer_init(&g_loop, &timer);
    uv_timer_start(&timer, on_tick, 1000 / (uint64_t)rate, 1000 / (uint64_t)rate);
    double end = now_s() + seconds;
    while (now_s() < end) {
        uv_run(&g_loop, UV_RUN_ONCE);
    }
    g_stop = true;
    uv_timer_stop(&timer);
    timer.data = &closed;
    uv_close((uv_handle_t *)&timer, on_timer_closed);
    while (g_outstanding > 0 || !closed) {
        uv_run(&g_loop, UV_RUN_ONCE);
    }
    qsort(g_lat, g_n_lat, sizeof(double), cmp_d);
    if (!report) {
        return;
    }
    printf("  paced %d commits/s x %4d partitions: %zu commits, latency p50 %.3f ms, p99 %.3f ms, "
           "max %.3f ms; p99 %.2fx the disk floor's (p90 %.3f ms)\n",
           rate, g_parts, g_n_lat, pct(0.5), pct(0.99), pct(1.0), pct(0.99) / g_floor_p99,
           pct(0.9));
}

static void run_saturated(double seconds, int window)
{
    g_n_lat = 0;
    g_stop = false;
    g_window = window;
    g_done = 0;
    double t0 = now_s();
    for (int i = 0; i < window; i++) {
        send_commit();
    }
    double end = t0 + seconds;
    while (now_s() < end) {
        uv_run(&g_loop, UV_RUN_ONCE);
    }
    g_stop = true;
    while (g_outstanding > 0) {
        uv_run(&g_loop, UV_RUN_ONCE);
    }
    double el = now_s() - t0;
    qsort(g_lat, g_n_lat, sizeof(double), cmp_d);
    printf("  saturated (%d in flight) x %4d partitions: %.0f commits/s (%.0f extents/s), "
           "latency p50 %.3f ms, p99 %.3f ms\n",
           window, g_parts, g_done / el, g_done * (double)g_parts / el, pct(0.5), pct(0.99));
}

/* Commits 1,000-partition objects, 64 in flight, until the server holds `extents` extents. */
static void preload(long extents)
{
    g_parts = 1000;
    g_n_lat = 0;
    g_stop = false;
    g_window = 64;
    g_done = 0;
    double t0 = now_s();
    for (int i = 0; i < g_window; i++) {
        send_commit();
    }
    while ((long)g_done * g_parts < extents) {
        uv_run(&g_loop, UV_RUN_ONCE);
    }
    g_stop = true;
    while (g_outstanding > 0) {
        uv_run(&g_loop, UV_RUN_ONCE);
    }
    printf("  preloaded %ld extents in %.1f s\n", (long)g_done * g_parts, now_s() - t0);
}

int main(int argc, char **argv)
{
    double seconds = 3;
    long overlap = 0;
    uint64_t snap_bytes = 1;
    int parts[8] = {1, 100, 1000};
    int n_parts = 0;
    const char *base = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--parts") == 0 && i + 1 < argc && n_parts < 8) {
            parts[n_parts++] = atoi(argv[++i]);
            if (parts[n_parts - 1] < 1 || parts[n_parts - 1] > 1000) {
                fprintf(stderr, "--parts: 1 to 1000\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--overlap") == 0 && i + 1 < argc) {
            overlap = atol(argv[++i]);
        } else if (strcmp(argv[i], "--snapshot-mbps") == 0 && i + 1 < argc) {
            g_snapshot_mbps = atol(argv[++i]);
        } else if (strcmp(argv[i], "--snapshot-bytes") == 0 && i + 1 < argc) {
            snap_bytes = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            base = argv[++i];
        } else {
            seconds = atof(argv[i]);
        }
    }
    char dir[512];
    if (snprintf(dir, sizeof(dir), "%s/runnel-bench-commit-XXXXXX", base) >= (int)sizeof(dir)) {
        fprintf(stderr, "--dir: path too long\n");
        return 2;
    }
    if (mkdtemp(dir) == NULL) {
        perror(dir);
        return 1;
    }
    int port = 20000 + getpid() % 20000;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
        server_child(dir, port, overlap > 0 ? snap_bytes : 0);
    }
    g_lat = malloc(sizeof(double) * MAX_SAMPLES);
    uv_loop_init(&g_loop);
    meta_client_open(&g_cli, &g_loop, "127.0.0.1", port);
    struct kp_meta_create_topics_request ct;
    kp_meta_create_topics_request_init(&ct);
    struct kp_meta_create_topics_request_meta_creatable_topic t;
    kp_meta_create_topics_request_meta_creatable_topic_init(&t);
    t.name = kp_str_from("bench");
    t.num_partitions = 1000;
    ct.topics = &t;
    ct.topics_count = 1;
    while (g_done == 0) {
        meta_client_call(g_cli, 1001, &ct, on_create, NULL);
        while (meta_client_in_flight(g_cli) > 0) {
            uv_run(&g_loop, UV_RUN_ONCE);
        }
        if (g_done == 0) {
            usleep(50000);
        }
    }
    printf("metadata commit benchmark (real RPC over loopback + journal with fdatasync, %s)\n",
           dir);
    if (overlap > 0) {
        printf("%lld extents preloaded; snapshot threshold %llu bytes%s\n", (long long)overlap,
               (unsigned long long)snap_bytes,
               snap_bytes == 1 ? " (snapshots overlapping every paced run)" : "");
        preload(overlap);
    }
    for (int i = 0; i < (n_parts > 0 ? n_parts : 3); i++) {
        g_parts = parts[i];
        probe_disk(dir, 1000, record_bytes(dir));
        run_paced(seconds, 200, true);
        if (overlap == 0) {
            run_saturated(seconds, 64);
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    meta_client_close(g_cli);
    uv_run(&g_loop, UV_RUN_DEFAULT);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
