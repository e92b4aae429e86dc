/*
 * Object store I/O benchmark: PUT and GET of 1, 4 and 8 MiB objects and 64 KiB ranged GETs,
 * through Runnel's store (one request at a time on a libuv loop) and through libcurl's easy
 * interface doing the same requests in the same run (SigV4 via CURLOPT_AWS_SIGV4 for s3://,
 * file:// URLs for file://), as the peer. Prints throughput, p50 and p99 per case and the ratio
 * Runnel/curl (target: throughput >= 0.9x, p99 no worse).
 *
 * Requests alternate between the two clients (A B B A ...), one at a time (durable file PUTs:
 * see run_case).
 *
 * For file:// PUTs a second peer does what Runnel's PUT does, with curl writing the bytes: curl
 * uploads to a temporary file:// name, then a helper opens it, fdatasync()s it, renames it over
 * the target and fsync()s the directory ("curl+sync"); with nosync=true it only renames it
 * ("curl+rename": an object appears whole or not at all, which an overwrite in place does not
 * give). Both ratios are printed: against plain curl (which overwrites in place and never
 * syncs) and against the second peer (like for like).
 *
 * usage: bench_storage_io URL [ROUNDS]
 *   URL   s3://bucket?endpoint=...  (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)
 *         file:///dir[?nosync=true] (plain curl peer: file:// uploads without fsync; second
 *                                    peer: see above)
 *   ROUNDS requests per case and client (default 20; ranged GETs use 10x)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>

#include "runnel/storage/store.h"

struct bench_wait {
    bool done; /* callback ran */
};

static uv_loop_t loop;
static struct store *store;
static char base[512];     /* URL without parameters */
static char params[512];   /* its parameters */
static bool is_s3;         /* s3:// URL */
static char endpoint[256]; /* s3: http://host:port */
static char bucket[128];   /* s3: bucket */
static char dir[512];      /* file: directory */

static double now_ms(void)
{
    return (double)uv_hrtime() / 1e6;
}

static void done_cb(struct store_req *r)
{
    ((struct bench_wait *)r->data)->done = true;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct stats {
    double mbps; /* MB/s (10^6 bytes) over the whole case */
    double p50;  /* ms */
    double p99;  /* ms */
};

static struct stats summarize(double *lat, int n, size_t bytes)
{
    double total = 0;
    for (int i = 0; i < n; i++) {
        total += lat[i];
    }
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    struct stats s;
    s.mbps = (double)bytes * n / 1e6 / (total / 1e3);
    s.p50 = lat[n / 2];
    int i99 = (int)(0.99 * (n - 1) + 0.5);
    s.p99 = lat[i99];
    return s;
}

/* ---- Runnel ---- */

static double runnel_op(int kind, const char *key, const uint8_t *buf, size_t len, uint64_t off)
{
    struct bench_wait w = {0};
    struct store_req r = {0};
    r.data = &w;
    double t0 = now_ms();
    int rc = kind == 0 ? store_put(store, &r, key, buf, len, 0, done_cb)
                       : store_get(store, &r, key, off, kind == 2 ? len : 0, done_cb);
    if (rc < 0) {
        fprintf(stderr, "submit failed: %d\n", rc);
        exit(1);
    }
    while (!w.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    double t = now_ms() - t0;
    if (r.err != 0 || (kind != 0 && r.body_len != (kind == 2 ? len : r.size))) {
        fprintf(stderr, "runnel %s %s: %s (%zu bytes)\n", kind == 0 ? "PUT" : "GET", key, r.msg,
                r.body_len);
        exit(1);
    }
    store_req_cleanup(&r);
    return t;
}

/* ---- curl peer ---- */

struct sink {
    uint8_t *buf; /* received bytes */
    size_t len;   /* used */
    size_t cap;   /* allocated */
};

static size_t sink_write(char *p, size_t size, size_t n, void *u)
{
    struct sink *s = u;
    size_t k = size * n;
    if (s->len + k > s->cap) {
        s->cap = (s->len + k) * 2;
        s->buf = realloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, p, k);
    s->len += k;
    return k;
}

struct source {
    const uint8_t *buf; /* bytes to send */
    size_t len;         /* total */
    size_t off;         /* sent */
};

static size_t source_read(char *p, size_t size, size_t n, void *u)
{
    struct source *s = u;
    size_t k = size * n;
    if (k > s->len - s->off) {
        k = s->len - s->off;
    }
    memcpy(p, s->buf + s->off, k);
    s->off += k;
    return k;
}

static CURL *peer;

/*
 * The file a key maps to for a curl peer ("curl-" for plain curl, "curlsync-" for curl+sync,
 * ".curltmp-" for the latter's temporary), and its URL. The two peers keep separate files so
 * that neither replaces or truncates a file the other has just written.
 */
static void curl_file_names(const char *key, const char *kind, char *path, size_t pathlen,
                            char *url, size_t urllen)
{
    /* curl's file:// uploads do not create directories: flatten the key. */
    int n = snprintf(path, pathlen, "%s/%s", dir, kind);
    for (const char *k = key; *k != '\0' && (size_t)n + 1 < pathlen; k++) {
        path[n++] = *k == '/' ? '_' : *k;
    }
    path[n] = '\0';
    snprintf(url, urllen, "file://%s", path);
}

static double curl_op_url(int kind, const char *key, const char *url_override, const uint8_t *buf,
                          size_t len, uint64_t off);

static bool file_sync; /* file store that syncs: the second peer is curl+sync, else curl+rename */

/*
 * The like-for-like peer of a file PUT: curl writes a temporary file, then the same syscalls as
 * Runnel's file backend make it visible (rename) and, when the store syncs, durable (fdatasync
 * before the rename, fsync of the directory after). Returns the latency in ms.
 */
static double curl_sync_put(const char *key, const uint8_t *buf, size_t len)
{
    char tmp[1024];
    char url[1100];
    char path[1024];
    char tmpurl[1100];
    curl_file_names(key, "curlsync-", path, sizeof(path), url, sizeof(url));
    curl_file_names(key, ".curltmp-", tmp, sizeof(tmp), tmpurl, sizeof(tmpurl));
    double t0 = now_ms();
    curl_op_url(0, key, tmpurl, buf, len, 0);
    if (!file_sync) {
        if (rename(tmp, path) < 0) {
            fprintf(stderr, "curl+rename PUT %s: %s\n", tmp, strerror(errno));
            exit(1);
        }
        return now_ms() - t0;
    }
    int fd = open(tmp, O_WRONLY | O_CLOEXEC);
    int dfd = -1;
    if (fd < 0 || fdatasync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0 ||
        (dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fsync(dfd) < 0 ||
        close(dfd) < 0) {
        fprintf(stderr, "curl+sync PUT %s: %s\n", tmp, strerror(errno));
        exit(1);
    }
    return now_ms() - t0;
}

static double curl_op(int kind, const char *key, const uint8_t *buf, size_t len, uint64_t off)
{
    return curl_op_url(kind, key, NULL, buf, len, off);
}

static double curl_op_url(int kind, const char *key, const char *url_override, const uint8_t *buf,
                          size_t len, uint64_t off)
{
    char url[1100];
    if (url_override != NULL) {
        snprintf(url, sizeof(url), "%s", url_override);
    } else if (is_s3) {
        snprintf(url, sizeof(url), "%s/%s/%s", endpoint, bucket, key);
    } else {
        char path[1024];
        curl_file_names(key, "curl-", path, sizeof(path), url, sizeof(url));
    }
    curl_easy_reset(peer);
    curl_easy_setopt(peer, CURLOPT_URL, url);
    struct curl_slist *h = NULL;
    char userpwd[512];
    if (is_s3) {
        snprintf(userpwd, sizeof(userpwd), "%s:%s", getenv("AWS_ACCESS_KEY_ID"),
                 getenv("AWS_SECRET_ACCESS_KEY"));
        curl_easy_setopt(peer, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:s3");
        curl_easy_setopt(peer, CURLOPT_USERPWD, userpwd);
        /* An empty "Expect:" would be signed by curl 7.88 but not sent: keep curl's default. */
        h = curl_slist_append(h, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    }
    char range[64];
    if (kind == 2) {
        snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)off,
                 (unsigned long long)(off + len - 1));
        curl_easy_setopt(peer, CURLOPT_RANGE, range);
    }
    curl_easy_setopt(peer, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(peer, CURLOPT_TCP_NODELAY, 1L);
    struct sink sk = {0};
    struct source src = {buf, len, 0};
    if (kind == 0) {
        curl_easy_setopt(peer, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(peer, CURLOPT_READFUNCTION, source_read);
        curl_easy_setopt(peer, CURLOPT_READDATA, &src);
        curl_easy_setopt(peer, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(peer, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024L);
    }
    curl_easy_setopt(peer, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(peer, CURLOPT_WRITEDATA, &sk);
    curl_easy_setopt(peer, CURLOPT_BUFFERSIZE, 512L * 1024L);
    double t0 = now_ms();
    CURLcode rc = curl_easy_perform(peer);
    double t = now_ms() - t0;
    long status = 0;
    curl_easy_getinfo(peer, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK || (is_s3 && status >= 300) || (kind != 0 && kind == 2 && sk.len != len)) {
        fprintf(stderr, "curl %s %s: %s status %ld (%zu bytes)\n", kind == 0 ? "PUT" : "GET", url,
                curl_easy_strerror(rc), status, sk.len);
        exit(1);
    }
    free(sk.buf);
    curl_slist_free_all(h);
    return t;
}

/* Writes back everything dirty on the store directory's file system: a pass starts clean. */
static void settle_fs(void)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        syncfs(fd);
        close(fd);
    }
}

/*
 * Runs `n` requests of one kind through both clients, alternating request by request so that
 * drift in the server or the machine (other processes, the OSD growing) hits both alike.
 *
 * File PUTs also run the second peer (`synced`: curl+sync or curl+rename). Durable file PUTs
 * are the exception to the alternation: plain curl never syncs, so the kernel
 * writes its dirty pages back whenever it likes, and on this VM's rate-limited disk that
 * writeback lands inside whichever durable PUT's fdatasync happens to run next, adding tens of
 * milliseconds to a random few of them (the p99s of both durable clients doubled). So Runnel and
 * curl+sync alternate in one pass, and plain curl runs its PUTs in a second pass, with the file
 * system written back (syncfs) before each pass and after the second.
 */
static void run_case(int kind, size_t size, size_t obj_size, int n, const uint8_t *buf,
                     struct stats *runnel, struct stats *curl, struct stats *synced)
{
    double *lr = calloc((size_t)n, sizeof(double));
    double *lc = calloc((size_t)n, sizeof(double));
    double *ls = calloc((size_t)n, sizeof(double));
    bool split = synced != NULL && file_sync;
    char key[64];
    uint64_t x = 12345;
    if (kind == 0 && synced != NULL) {
        /* Unmeasured: create every key once for each client first. Runnel's store puts a key's
         * segments in directories it creates (and syncs) on first use, the peers write into the
         * existing root; the first writes into a new directory cost 2x for a while on ext4, and
         * those 8 of the first ~10 requests were the p99 of a 300-request run. */
        for (int i = 0; i < 8; i++) {
            snprintf(key, sizeof(key), "bench/%zu/%d", size, i);
            runnel_op(kind, key, buf, size, 0);
            curl_sync_put(key, buf, size);
            curl_op(kind, key, buf, size, 0);
        }
    }
    if (split) {
        settle_fs();
    }
    for (int pass = 0; pass < (split ? 2 : 1); pass++) {
        for (int i = 0; i < n; i++) {
            uint64_t off = 0;
            if (kind == 0) {
                snprintf(key, sizeof(key), "bench/%zu/%d", size, i % 8);
            } else if (kind == 1) {
                snprintf(key, sizeof(key), "bench/%zu/%d", size, i % 4);
            } else {
                snprintf(key, sizeof(key), "bench/%zu/0", obj_size);
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                off = (x >> 20) % (obj_size - size);
            }
            if (split && pass == 1) {
                lc[i] = curl_op(kind, key, buf, size, off);
            } else if (synced != NULL && !split) {
                /* curl+rename: no syncs to disturb; all three alternate. */
                if (i % 2 == 0) {
                    lr[i] = runnel_op(kind, key, buf, size, off);
                    lc[i] = curl_op(kind, key, buf, size, off);
                    ls[i] = curl_sync_put(key, buf, size);
                } else {
                    ls[i] = curl_sync_put(key, buf, size);
                    lc[i] = curl_op(kind, key, buf, size, off);
                    lr[i] = runnel_op(kind, key, buf, size, off);
                }
            } else if (split) {
                if (i % 2 == 0) {
                    lr[i] = runnel_op(kind, key, buf, size, off);
                    ls[i] = curl_sync_put(key, buf, size);
                } else {
                    ls[i] = curl_sync_put(key, buf, size);
                    lr[i] = runnel_op(kind, key, buf, size, off);
                }
            } else if (i % 2 == 0) {
                lr[i] = runnel_op(kind, key, buf, size, off);
                lc[i] = curl_op(kind, key, buf, size, off);
            } else {
                lc[i] = curl_op(kind, key, buf, size, off);
                lr[i] = runnel_op(kind, key, buf, size, off);
            }
        }
        if (split) {
            settle_fs();
        }
    }
    *runnel = summarize(lr, n, size);
    *curl = summarize(lc, n, size);
    if (synced != NULL) {
        *synced = summarize(ls, n, size);
    }
    free(lr);
    free(lc);
    free(ls);
}

static void report(const char *name, struct stats r, struct stats c)
{
    printf("%-14s runnel %8.1f MB/s p50 %7.2f ms p99 %7.2f ms | curl %8.1f MB/s p50 %7.2f ms "
           "p99 %7.2f ms | ratio %.2fx p99 %.2fx\n",
           name, r.mbps, r.p50, r.p99, c.mbps, c.p50, c.p99, r.mbps / c.mbps, r.p99 / c.p99);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_storage_io URL [ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 20;
    /*
     * The allocator settings `runnel agent` runs with (agent/src/agent_cmd.c): GET bodies of
     * 1-8 MiB come from the heap instead of a fresh mmap per request, as the peer's reused sink
     * buffer does. RUNNEL_BENCH_GLIBC_DEFAULTS=1 measures glibc's defaults instead.
     */
    if (getenv("RUNNEL_BENCH_GLIBC_DEFAULTS") == NULL) {
        mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
        mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
    }
    if (rounds < 2) {
        rounds = 2;
    }
    const char *url = argv[1];
    const char *q = strchr(url, '?');
    snprintf(base, sizeof(base), "%.*s", q ? (int)(q - url) : (int)strlen(url), url);
    snprintf(params, sizeof(params), "%s", q ? q + 1 : "");
    is_s3 = strncmp(url, "s3://", 5) == 0;
    /* The second peer: curl+sync against a file store that syncs, else curl+rename. */
    file_sync = !is_s3 && strstr(params, "nosync=true") == NULL &&
                strstr(params, "nosync=1") == NULL && strstr(params, "nosync&") == NULL;
    if (is_s3) {
        const char *ep = strstr(url, "endpoint=");
        if (ep == NULL) {
            fprintf(stderr, "need endpoint= in the s3 URL\n");
            return 2;
        }
        snprintf(endpoint, sizeof(endpoint), "%.*s", (int)strcspn(ep + 9, "&"), ep + 9);
        snprintf(bucket, sizeof(bucket), "%.*s", (int)strcspn(base + 5, "/"), base + 5);
    } else {
        snprintf(dir, sizeof(dir), "%s", base + 7);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    peer = curl_easy_init();
    uv_loop_init(&loop);
    char err[256];
    if (store_open(&loop, url, NULL, &store, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    size_t max = 8u << 20;
    uint8_t *buf = malloc(max);
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < max; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    printf("store %s (%s), %d requests per case, one at a time\n", base, store_backend(store),
           rounds);
    /* Warm up connections on both sides. */
    runnel_op(0, "bench/warm", buf, 1024, 0);
    curl_op(0, "bench/warm", buf, 1024, 0);
    const size_t sizes[] = {1u << 20, 4u << 20, 8u << 20};
    struct stats r;
    struct stats c;
    for (size_t i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "PUT %zu MiB", sizes[i] >> 20);
        struct stats sy;
        run_case(0, sizes[i], 0, rounds, buf, &r, &c, is_s3 ? NULL : &sy);
        report(name, r, c);
        if (!is_s3) {
            printf("%-14s         %11s %8.1f MB/s p50 %7.2f ms p99 %7.2f ms | ratio %.2fx "
                   "p99 %.2fx\n",
                   "", file_sync ? "curl+sync" : "curl+rename", sy.mbps, sy.p50, sy.p99,
                   r.mbps / sy.mbps, r.p99 / sy.p99);
            fflush(stdout);
        }
    }
    for (size_t i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "GET %zu MiB", sizes[i] >> 20);
        run_case(1, sizes[i], 0, rounds, buf, &r, &c, NULL);
        report(name, r, c);
    }
    run_case(2, 64u << 10, 8u << 20, rounds * 10, buf, &r, &c, NULL);
    report("GET 64 KiB rng", r, c);
    store_close(store);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    curl_easy_cleanup(peer);
    curl_global_cleanup();
    free(buf);
    return 0;
}
