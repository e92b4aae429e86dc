/*
 * The s3:// backend against a real Ceph RGW (started by tests/integration/lib/rgw.sh, which
 * exports RUNNEL_S3_URL, RUNNEL_S3_ENDPOINT, RUNNEL_S3_BUCKET and the AWS_* credentials):
 * SigV4 with right and wrong secrets, ranged and tail GETs, conditional create (412), multipart,
 * list pagination under a prefix, batch delete beyond 1000 keys, odd key characters, retries
 * through injected faults, cancellation, the object format end to end and `runnel object
 * inspect`. The "down" group points at a closed port and needs no server.
 *
 * usage: test_storage_rgw rgw|down
 */
#include "test_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "s3_int.h"

#include "runnel/storage/cli.h"
#include "runnel/storage/object.h"
#include "store_test_util.h"

static uv_loop_t loop;
static char base_url[512]; /* RUNNEL_S3_URL */
static unsigned run_id;    /* keeps keys of reruns apart */

static struct store *open_url(const char *url, const char *extra, const struct store_config *c)
{
    char full[1024];
    snprintf(full, sizeof(full), "%s%s%s", url, strchr(url, '?') ? "&" : "?", extra);
    struct store *s = NULL;
    char err[256];
    int rc = store_open(&loop, full, c, &s, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "store_open(%s): %s\n", full, err);
    }
    assert_int_equal(rc, 0);
    return s;
}

/* The base URL with a key prefix inserted after the bucket (s3://bucket/PREFIX?...). */
static struct store *open_prefixed(const char *prefix, const char *extra)
{
    char url[1024];
    const char *q = strchr(base_url, '?');
    snprintf(url, sizeof(url), "%.*s/%s%s", (int)(q - base_url), base_url, prefix, q);
    return open_url(url, extra, NULL);
}

static void close_store(struct store *s)
{
    store_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static int do_head(struct store *s, const char *key, struct store_req *r)
{
    struct tstore_wait w = {0};
    memset(r, 0, sizeof(*r));
    r->data = &w;
    assert_int_equal(store_head(s, r, key, tstore_cb), 0);
    return tstore_wait(&loop, r);
}

static int do_delete(struct store *s, const char *key)
{
    struct tstore_wait w = {0};
    struct store_req r = {0};
    r.data = &w;
    assert_int_equal(store_delete(s, &r, key, tstore_cb), 0);
    return tstore_wait(&loop, &r);
}

static void fill(uint8_t *buf, size_t n, unsigned seed)
{
    uint64_t x = 0x9E3779B97F4A7C15ULL * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
}

static void test_basic(void **state)
{
    (void)state;
    struct store *s = open_prefixed("basic", "");
    struct store_req r;
    char key[64];
    snprintf(key, sizeof(key), "obj-%u", run_id);
    uint8_t data[10000];
    fill(data, sizeof(data), 1);
    assert_int_equal(tstore_put(&loop, s, key, data, sizeof(data), 0, &r), 0);
    assert_int_equal(r.http_status, 200);
    assert_true(r.etag[0] != '\0');
    char etag[72];
    memcpy(etag, r.etag, sizeof(etag));
    assert_int_equal(tstore_get(&loop, s, key, 0, 0, &r), 0);
    assert_int_equal(r.body_len, sizeof(data));
    assert_memory_equal(r.body, data, sizeof(data));
    assert_string_equal(r.etag, etag);
    store_req_cleanup(&r);
    assert_int_equal(do_head(s, key, &r), 0);
    assert_int_equal(r.size, sizeof(data));
    assert_string_equal(r.etag, etag);
    /* Sequential requests reuse one keep-alive connection. */
    uint64_t conns = store__s3_connections(s);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(tstore_get(&loop, s, key, (uint64_t)i * 10, 10, &r), 0);
        store_req_cleanup(&r);
    }
    assert_int_equal(store__s3_connections(s), conns);
    assert_true(conns >= 1 && conns <= 2);
    assert_int_equal(do_delete(s, key), 0);
    assert_int_equal(tstore_get(&loop, s, key, 0, 0, &r), -ENOENT);
    assert_int_equal(r.http_status, 404);
    assert_non_null(strstr(r.msg, "NoSuchKey"));
    assert_int_equal(do_head(s, key, &r), -ENOENT);
    assert_int_equal(do_delete(s, key), 0); /* deleting a missing key succeeds */
    /* An empty object. */
    assert_int_equal(tstore_put(&loop, s, "empty", NULL, 0, 0, &r), 0);
    assert_int_equal(tstore_get(&loop, s, "empty", 0, 0, &r), 0);
    assert_int_equal(r.body_len, 0);
    store_req_cleanup(&r);
    /* Signed payloads (x-amz-content-sha256 = SHA-256 of the body, which RGW checks). */
    struct store *signed_s = open_prefixed("basic", "payload_hash=sha256");
    assert_int_equal(tstore_put(&loop, signed_s, "signed", data, sizeof(data), 0, &r), 0);
    assert_int_equal(tstore_get(&loop, signed_s, "signed", 0, 0, &r), 0);
    assert_memory_equal(r.body, data, sizeof(data));
    store_req_cleanup(&r);
    close_store(signed_s);
    close_store(s);
}

/* HTTPS with certificate verification: the CA file makes it work, its absence is a clear,
 * permanent error (not retried). */
static void test_tls(void **state)
{
    (void)state;
    const char *tls = getenv("RUNNEL_S3_TLS_ENDPOINT");
    const char *ca = getenv("RUNNEL_S3_CA_FILE");
    if (tls == NULL || ca == NULL) {
        skip();
    }
    char url[1024];
    snprintf(url, sizeof(url), "s3://%s/tls?endpoint=%s&ca_file=%s", getenv("RUNNEL_S3_BUCKET"),
             tls, ca);
    struct store *s = open_url(url, "", NULL);
    struct store_req r;
    assert_int_equal(tstore_put(&loop, s, "t", "secure", 6, 0, &r), 0);
    assert_int_equal(tstore_get(&loop, s, "t", 0, 0, &r), 0);
    assert_memory_equal(r.body, "secure", 6);
    store_req_cleanup(&r);
    close_store(s);
    /* The CA through struct store_config instead of the URL. */
    struct store_config c = {.ca_file = ca, .retries = -1};
    snprintf(url, sizeof(url), "s3://%s/tls?endpoint=%s", getenv("RUNNEL_S3_BUCKET"), tls);
    s = open_url(url, "", &c);
    assert_int_equal(tstore_get(&loop, s, "t", 0, 0, &r), 0);
    store_req_cleanup(&r);
    close_store(s);
    /* Without the CA the self-signed certificate is refused. */
    s = open_url(url, "", NULL);
    assert_int_equal(tstore_get(&loop, s, "t", 0, 0, &r), -EIO);
    assert_int_equal(r.attempts, 1);
    assert_non_null(strstr(r.msg, "certificate"));
    close_store(s);
}

/* Many transfers in flight: cancel half right away, close the store with the rest running.
 * Every callback runs exactly once and the loop ends with no handles left (checked in main). */
static void test_cancel_and_close_in_flight(void **state)
{
    (void)state;
    struct store *s = open_prefixed("inflight", "");
    size_t n = 4u << 20;
    uint8_t *data = malloc(n);
    fill(data, n, 5);
    struct store_req r;
    assert_int_equal(tstore_put(&loop, s, "big", data, n, 0, &r), 0);
    enum { N = 16 };
    struct store_req reqs[N];
    struct tstore_wait waits[N];
    memset(reqs, 0, sizeof(reqs));
    memset(waits, 0, sizeof(waits));
    for (int i = 0; i < N; i++) {
        reqs[i].data = &waits[i];
        if (i % 4 == 3) {
            assert_int_equal(store_put(s, &reqs[i], "big-copy", data, n, 0, tstore_cb), 0);
        } else {
            assert_int_equal(store_get(s, &reqs[i], "big", 0, 0, tstore_cb), 0);
        }
    }
    for (int i = 0; i < N; i += 2) {
        assert_int_equal(store_cancel(&reqs[i]), 0);
    }
    for (int i = 0; i < 5; i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    store_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++) {
        assert_int_equal(waits[i].calls, 1);
        if (i % 2 == 0) {
            assert_int_equal(reqs[i].err, -ECANCELED);
        } else {
            assert_true(reqs[i].err == 0 || reqs[i].err == -ECANCELED);
        }
        if (reqs[i].err == 0 && i % 4 != 3) {
            assert_int_equal(reqs[i].body_len, n);
            assert_memory_equal(reqs[i].body, data, n);
        }
        store_req_cleanup(&reqs[i]);
    }
    free(data);
}

/* Virtual-hosted addressing (bucket.localhost:port; rgw.sh sets rgw dns name = localhost). */
static void test_virtual_hosted(void **state)
{
    (void)state;
    const char *ep = getenv("RUNNEL_S3_ENDPOINT");
    const char *port = strrchr(ep, ':');
    char url[512];
    snprintf(url, sizeof(url), "s3://%s/vhost?endpoint=http://localhost%s&path_style=false",
             getenv("RUNNEL_S3_BUCKET"), port);
    struct store *s = open_url(url, "", NULL);
    struct store_req r;
    assert_int_equal(tstore_put(&loop, s, "v", "virtual", 7, 0, &r), 0);
    assert_int_equal(tstore_get(&loop, s, "v", 0, 0, &r), 0);
    assert_memory_equal(r.body, "virtual", 7);
    store_req_cleanup(&r);
    struct tstore_wait w = {0};
    memset(&r, 0, sizeof(r));
    r.data = &w;
    assert_int_equal(store_list(s, &r, NULL, NULL, 10, tstore_cb), 0);
    assert_int_equal(tstore_wait(&loop, &r), 0);
    assert_int_equal(r.nentries, 1);
    assert_string_equal(r.entries[0].key, "v");
    store_req_cleanup(&r);
    close_store(s);
    /* The same object through path-style addressing. */
    s = open_prefixed("vhost", "");
    assert_int_equal(tstore_get(&loop, s, "v", 0, 0, &r), 0);
    assert_memory_equal(r.body, "virtual", 7);
    store_req_cleanup(&r);
    close_store(s);
}

static void test_odd_keys(void **state)
{
    (void)state;
    struct store *s = open_prefixed("odd keys+%", "");
    const char *keys[] = {"a b/c+d",   "x%20y",  "caf\xc3\xa9/\xe2\x82\xac",
                          "q?x=1&y=2", "t~_-.z", "lt<gt>amp&quot\"apos'"};
    struct store_req r;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        assert_int_equal(tstore_put(&loop, s, keys[i], keys[i], strlen(keys[i]), 0, &r), 0);
        assert_int_equal(tstore_get(&loop, s, keys[i], 0, 0, &r), 0);
        assert_int_equal(r.body_len, strlen(keys[i]));
        assert_memory_equal(r.body, keys[i], r.body_len);
        store_req_cleanup(&r);
    }
    struct tstore_wait w = {0};
    memset(&r, 0, sizeof(r));
    r.data = &w;
    assert_int_equal(store_list(s, &r, NULL, NULL, 100, tstore_cb), 0);
    assert_int_equal(tstore_wait(&loop, &r), 0);
    assert_int_equal(r.nentries, sizeof(keys) / sizeof(keys[0]));
    for (size_t i = 0; i < r.nentries; i++) {
        bool found = false;
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            found |= strcmp(r.entries[i].key, keys[k]) == 0;
        }
        assert_true(found);
    }
    /* Batch delete with XML-special characters. */
    store_req_cleanup(&r);
    w.done = false;
    r.data = &w;
    assert_int_equal(store_delete_many(s, &r, keys, sizeof(keys) / sizeof(keys[0]), tstore_cb), 0);
    assert_int_equal(tstore_wait(&loop, &r), 0);
    assert_int_equal(r.nfailed, 0);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        assert_int_equal(do_head(s, keys[i], &r), -ENOENT);
    }
    close_store(s);
}

static void test_ranges(void **state)
{
    (void)state;
    struct store *s = open_prefixed("ranges", "");
    struct store_req r;
    size_t n = 300000;
    uint8_t *data = malloc(n);
    fill(data, n, 2);
    assert_int_equal(tstore_put(&loop, s, "r", data, n, 0, &r), 0);
    const uint64_t ranges[][2] = {{0, 1}, {1, 100}, {65536, 65536}, {n - 10, 10}, {n - 10, 500}};
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        uint64_t off = ranges[i][0];
        uint64_t len = ranges[i][1];
        assert_int_equal(tstore_get(&loop, s, "r", off, len, &r), 0);
        uint64_t want = off + len > n ? n - off : len;
        assert_int_equal(r.http_status, 206);
        assert_int_equal(r.body_len, want);
        assert_int_equal(r.size, n);
        assert_memory_equal(r.body, data + off, want);
        store_req_cleanup(&r);
    }
    /* From an offset to the end. */
    assert_int_equal(tstore_get(&loop, s, "r", 1000, 0, &r), 0);
    assert_int_equal(r.body_len, n - 1000);
    assert_memory_equal(r.body, data + 1000, n - 1000);
    store_req_cleanup(&r);
    /* Tail. */
    struct tstore_wait w = {0};
    memset(&r, 0, sizeof(r));
    r.data = &w;
    assert_int_equal(store_get_tail(s, &r, "r", 777, tstore_cb), 0);
    assert_int_equal(tstore_wait(&loop, &r), 0);
    assert_int_equal(r.body_len, 777);
    assert_int_equal(r.size, n);
    assert_memory_equal(r.body, data + n - 777, 777);
    store_req_cleanup(&r);
    /* Beyond the end. */
    assert_int_equal(tstore_get(&loop, s, "r", n + 5, 10, &r), -ERANGE);
    assert_int_equal(r.http_status, 416);
    free(data);
    close_store(s);
}

static void test_conditional_create(void **state)
{
    (void)state;
    struct store *s = open_prefixed("cond", "");
    struct store_req r;
    char key[64];
    snprintf(key, sizeof(key), "once-%u", run_id);
    assert_int_equal(tstore_put(&loop, s, key, "first", 5, STORE_IF_NONE_MATCH, &r), 0);
    assert_int_equal(tstore_put(&loop, s, key, "second", 6, STORE_IF_NONE_MATCH, &r), -EEXIST);
    assert_int_equal(r.http_status, 412);
    assert_int_equal(r.attempts, 1);
    assert_false(r.ambiguous);
    assert_int_equal(tstore_get(&loop, s, key, 0, 0, &r), 0);
    assert_memory_equal(r.body, "first", 5);
    store_req_cleanup(&r);
    /* A plain PUT still overwrites. */
    assert_int_equal(tstore_put(&loop, s, key, "third", 5, 0, &r), 0);
    close_store(s);
}

static void test_wrong_secret(void **state)
{
    (void)state;
    struct store_config c = {.access_key = getenv("AWS_ACCESS_KEY_ID"),
                             .secret_key = "definitely-not-the-secret",
                             .retries = -1};
    struct store *s = open_url(base_url, "", &c);
    struct store_req r;
    uint64_t t0 = uv_hrtime();
    assert_int_equal(tstore_put(&loop, s, "auth", "x", 1, 0, &r), -EACCES);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(r.http_status, 403);
    assert_int_equal(r.attempts, 1); /* not retried */
    fprintf(stderr, "wrong secret: %s after %llu ms\n", r.msg, (unsigned long long)ms);
    assert_non_null(strstr(r.msg, "SignatureDoesNotMatch"));
    assert_non_null(strstr(r.msg, "secret"));
    assert_int_equal(tstore_get(&loop, s, "auth", 0, 0, &r), -EACCES);
    close_store(s);
    c.access_key = "NOSUCHKEY";
    s = open_url(base_url, "", &c);
    assert_int_equal(tstore_get(&loop, s, "auth", 0, 0, &r), -EACCES);
    assert_non_null(strstr(r.msg, "InvalidAccessKeyId"));
    close_store(s);
}

static void test_missing_bucket(void **state)
{
    (void)state;
    char url[600];
    const char *q = strchr(base_url, '?');
    snprintf(url, sizeof(url), "s3://no-such-bucket-here%s", q);
    struct store *s = open_url(url, "", NULL);
    struct store_req r;
    assert_int_equal(tstore_put(&loop, s, "k", "x", 1, 0, &r), -EIO);
    assert_non_null(strstr(r.msg, "NoSuchBucket"));
    close_store(s);
}

static void test_multipart(void **state)
{
    (void)state;
    struct store *s = open_prefixed("mp", "multipart_threshold=5242880&part_size=5242880");
    size_t n = 11u * 1024 * 1024 + 12345;
    uint8_t *data = malloc(n);
    fill(data, n, 3);
    struct store_req r;
    char key[64];
    snprintf(key, sizeof(key), "big-%u", run_id);
    assert_int_equal(tstore_put(&loop, s, key, data, n, 0, &r), 0);
    assert_int_equal(r.size, n);
    assert_int_equal(do_head(s, key, &r), 0);
    assert_int_equal(r.size, n);
    assert_non_null(strchr(r.etag, '-')); /* multipart ETags end in -<parts> */
    assert_int_equal(tstore_get(&loop, s, key, 0, 0, &r), 0);
    assert_int_equal(r.body_len, n);
    assert_memory_equal(r.body, data, n);
    store_req_cleanup(&r);
    /* Create-only multipart: first wins, second is -EEXIST (RGW 16 ignores If-None-Match on
     * CompleteMultipartUpload, so the store checks with HEAD first). */
    char ckey[80];
    snprintf(ckey, sizeof(ckey), "big-once-%u", run_id);
    assert_int_equal(tstore_put(&loop, s, ckey, data, n, STORE_IF_NONE_MATCH, &r), 0);
    assert_int_equal(tstore_put(&loop, s, ckey, data + 1, n - 1, STORE_IF_NONE_MATCH, &r), -EEXIST);
    assert_int_equal(do_head(s, ckey, &r), 0);
    assert_int_equal(r.size, n);
    /* A range across the first part boundary. */
    assert_int_equal(tstore_get(&loop, s, key, 5242880 - 100, 200, &r), 0);
    assert_memory_equal(r.body, data + 5242880 - 100, 200);
    store_req_cleanup(&r);
    /* Cancelling a multipart upload in flight ends it with -ECANCELED. */
    struct tstore_wait w = {0};
    memset(&r, 0, sizeof(r));
    r.data = &w;
    assert_int_equal(store_put(s, &r, "cancelled", data, n, 0, tstore_cb), 0);
    for (int i = 0; i < 3; i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    if (!w.done) {
        assert_int_equal(store_cancel(&r), 0);
    }
    int rc = tstore_wait(&loop, &r);
    assert_true(rc == -ECANCELED || rc == 0);
    free(data);
    close_store(s);
}

struct list_page {
    size_t entries; /* keys on the page */
    bool more;      /* next_token set */
};

static void test_list_and_batch_delete(void **state)
{
    (void)state;
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "list-%u", run_id);
    struct store *s = open_prefixed(prefix, "");
    /* 1005 small objects, 32 in flight at a time. */
    size_t nkeys = 1005;
    char **keys = calloc(nkeys, sizeof(char *));
    for (size_t i = 0; i < nkeys; i++) {
        keys[i] = malloc(32);
        snprintf(keys[i], 32, "%s/%05zu", i < 25 ? "few" : "many", i);
    }
    struct store_req reqs[32];
    struct tstore_wait waits[32];
    size_t next = 0;
    size_t done = 0;
    memset(reqs, 0, sizeof(reqs));
    while (done < nkeys) {
        for (int i = 0; i < 32; i++) {
            if (reqs[i].data == NULL && next < nkeys) {
                memset(&waits[i], 0, sizeof(waits[i]));
                reqs[i].data = &waits[i];
                assert_int_equal(store_put(s, &reqs[i], keys[next], keys[next], strlen(keys[next]),
                                           0, tstore_cb),
                                 0);
                next++;
            }
        }
        uv_run(&loop, UV_RUN_ONCE);
        for (int i = 0; i < 32; i++) {
            if (reqs[i].data != NULL && waits[i].done) {
                assert_int_equal(reqs[i].err, 0);
                reqs[i].data = NULL;
                done++;
            }
        }
    }
    /* Paginate "few/" 10 at a time: 10 + 10 + 5, in order, with store-relative keys. */
    char *token = NULL;
    size_t seen = 0;
    int pages = 0;
    do {
        struct tstore_wait w = {0};
        struct store_req r = {0};
        r.data = &w;
        assert_int_equal(store_list(s, &r, "few/", token, 10, tstore_cb), 0);
        assert_int_equal(tstore_wait(&loop, &r), 0);
        for (size_t i = 0; i < r.nentries; i++) {
            assert_string_equal(r.entries[i].key, keys[seen]);
            assert_int_equal(r.entries[i].size, strlen(keys[seen]));
            seen++;
        }
        pages++;
        free(token);
        token = r.next_token != NULL ? strdup(r.next_token) : NULL;
        store_req_cleanup(&r);
    } while (token != NULL);
    assert_int_equal(seen, 25);
    assert_int_equal(pages, 3);
    /* Everything, default page size (1000): two pages. */
    size_t total = 0;
    pages = 0;
    do {
        struct tstore_wait w = {0};
        struct store_req r = {0};
        r.data = &w;
        assert_int_equal(store_list(s, &r, NULL, token, 0, tstore_cb), 0);
        assert_int_equal(tstore_wait(&loop, &r), 0);
        total += r.nentries;
        pages++;
        free(token);
        token = r.next_token != NULL ? strdup(r.next_token) : NULL;
        store_req_cleanup(&r);
    } while (token != NULL);
    assert_int_equal(total, nkeys);
    assert_int_equal(pages, 2);
    /* Batch delete of all of them (two DeleteObjects requests), plus a missing key. */
    char **dkeys = calloc(nkeys + 1, sizeof(char *));
    memcpy(dkeys, keys, nkeys * sizeof(char *));
    dkeys[nkeys] = "never/existed";
    struct tstore_wait w = {0};
    struct store_req r = {0};
    r.data = &w;
    assert_int_equal(store_delete_many(s, &r, (const char *const *)dkeys, nkeys + 1, tstore_cb), 0);
    assert_int_equal(tstore_wait(&loop, &r), 0);
    assert_int_equal(r.nfailed, 0);
    w.done = false;
    r.data = &w;
    assert_int_equal(store_list(s, &r, NULL, NULL, 0, tstore_cb), 0);
    assert_int_equal(tstore_wait(&loop, &r), 0);
    assert_int_equal(r.nentries, 0);
    assert_null(r.next_token);
    store_req_cleanup(&r);
    free(dkeys);
    for (size_t i = 0; i < nkeys; i++) {
        free(keys[i]);
    }
    free(keys);
    close_store(s);
}

static void test_retries_through_faults(void **state)
{
    (void)state;
    char url[1024];
    snprintf(url, sizeof(url), "faulty+%s", base_url);
    struct store *s = open_url(url,
                               "error_rate=0.3&lost_response_rate=0.2&retries=30&"
                               "retry_base_ms=5&retry_cap_ms=50&seed=42",
                               NULL);
    struct store_req r;
    int retried = 0;
    int ambiguous = 0;
    for (int i = 0; i < 20; i++) {
        char key[64];
        uint8_t data[3000];
        fill(data, sizeof(data), (unsigned)i);
        snprintf(key, sizeof(key), "faulty/%u/%d", run_id, i);
        int rc = tstore_put(&loop, s, key, data, sizeof(data), STORE_IF_NONE_MATCH, &r);
        /* A lost response to the first attempt turns the retry into a lost create: the key is
         * fresh, so ambiguous -EEXIST means the object is ours. */
        assert_true(rc == 0 || (rc == -EEXIST && r.ambiguous));
        retried += r.attempts > 1;
        ambiguous += r.ambiguous;
        assert_int_equal(tstore_get(&loop, s, key, 0, 0, &r), 0);
        assert_int_equal(r.body_len, sizeof(data));
        assert_memory_equal(r.body, data, sizeof(data));
        retried += r.attempts > 1;
        store_req_cleanup(&r);
    }
    assert_true(retried > 5);
    assert_true(ambiguous > 0);
    close_store(s);
    /* Only the PUT's response lost: the retry gets 412, the store HEADs the key, finds RGW's
     * ETag equal to the MD5 of our bytes, and reports success. */
    s = open_url(url, "put_lost_response_rate=1&retries=3&retry_base_ms=5&seed=43", NULL);
    char vkey[64];
    snprintf(vkey, sizeof(vkey), "faulty/%u/verified", run_id);
    uint8_t vdata[5000];
    fill(vdata, sizeof(vdata), 99);
    assert_int_equal(tstore_put(&loop, s, vkey, vdata, sizeof(vdata), STORE_IF_NONE_MATCH, &r), 0);
    assert_true(r.ambiguous);
    assert_int_equal(r.attempts, 2);
    assert_non_null(strstr(r.msg, "ETag verified"));
    close_store(s);
    /* Latency past the deadline. */
    s = open_url(url, "latency_ms=500", NULL);
    memset(&r, 0, sizeof(r));
    struct tstore_wait w = {0};
    r.data = &w;
    r.timeout_ms = 100;
    assert_int_equal(store_get(s, &r, "faulty/none", 0, 0, tstore_cb), 0);
    assert_int_equal(tstore_wait(&loop, &r), -ETIMEDOUT);
    close_store(s);
}

struct read_wait {
    bool done; /* callback ran */
};

static void read_cb(struct store_obj_read *rd)
{
    ((struct read_wait *)rd->data)->done = true;
}

static void test_object_format(void **state)
{
    (void)state;
    struct store *s = open_prefixed("objects", "");
    uint8_t id[16] = {7, 7, 7};
    struct store_obj_builder *b = store_obj_builder_new(id, 1700000000000, 1);
    uint8_t batch[1024];
    for (int i = 0; i < 300; i++) {
        uint8_t topic[16] = {(uint8_t)(i % 2)};
        memset(batch, 'a' + i % 26, sizeof(batch));
        struct store_batch_info info = {.records = 1, .first_ts = i, .last_ts = i};
        assert_int_equal(store_obj_builder_add(b, topic, i % 5, batch, sizeof(batch), &info), 0);
    }
    uint8_t *obj;
    size_t len;
    assert_int_equal(store_obj_seal(b, &obj, &len, NULL), 0);
    char key[64];
    snprintf(key, sizeof(key), "o-%u", run_id);
    struct store_req r;
    assert_int_equal(tstore_put(&loop, s, key, obj, len, STORE_IF_NONE_MATCH, &r), 0);
    struct store_obj_read rd = {0};
    struct read_wait w = {0};
    rd.data = &w;
    assert_int_equal(store_obj_read_footer(s, &rd, key, read_cb), 0);
    while (!w.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(rd.err, 0);
    struct store_footer f = rd.footer;
    memset(&rd.footer, 0, sizeof(rd.footer));
    assert_int_equal(f.nchunks, 10);
    for (uint32_t i = 0; i < f.nchunks; i++) {
        w.done = false;
        assert_int_equal(store_obj_read_chunk(s, &rd, key, &f.chunks[i], 1 << 20, read_cb), 0);
        while (!w.done) {
            uv_run(&loop, UV_RUN_ONCE);
        }
        assert_int_equal(rd.err, 0);
        assert_int_equal(rd.raw_len, 30 * 1024);
        store_obj_read_cleanup(&rd);
    }
    /* `runnel object inspect` passes on the intact object and fails on a damaged copy. */
    char url[1024];
    const char *q = strchr(base_url, '?');
    snprintf(url, sizeof(url), "%.*s/objects%s", (int)(q - base_url), base_url, q);
    char *argv[] = {"object", "inspect", url, key, NULL};
    assert_int_equal(store_cmd_object(4, argv), 0);
    obj[f.chunks[3].offset + 5] ^= 0xff;
    char bad[80];
    snprintf(bad, sizeof(bad), "%s-bad", key);
    assert_int_equal(tstore_put(&loop, s, bad, obj, len, 0, &r), 0);
    char *argv2[] = {"object", "inspect", url, bad, NULL};
    assert_int_equal(store_cmd_object(4, argv2), 1);
    /* Truncated object. */
    snprintf(bad, sizeof(bad), "%s-cut", key);
    assert_int_equal(tstore_put(&loop, s, bad, obj, len - 100, 0, &r), 0);
    assert_int_equal(store_cmd_object(4, argv2), 1);
    store_footer_free(&f);
    free(obj);
    store_obj_builder_free(b);
    close_store(s);
}

/* Nothing listens: a clear error within the deadline, after retries. */
static void test_server_down(void **state)
{
    (void)state;
    /* A port that was free a moment ago. */
    uv_tcp_t tcp;
    uv_tcp_init(&loop, &tcp);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&tcp, (const struct sockaddr *)&addr, 0), 0);
    int alen = sizeof(addr);
    uv_tcp_getsockname(&tcp, (struct sockaddr *)&addr, &alen);
    int port = ntohs(addr.sin_port);
    uv_close((uv_handle_t *)&tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    char url[256];
    snprintf(url, sizeof(url), "s3://down-bucket?endpoint=http://127.0.0.1:%d&retry_base_ms=20",
             port);
    struct store_config c = {.access_key = "k", .secret_key = "s", .retries = -1};
    struct store *s = open_url(url, "timeout_ms=1500", &c);
    struct store_req r;
    uint64_t t0 = uv_hrtime();
    int rc = tstore_put(&loop, s, "k", "x", 1, 0, &r);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    fprintf(stderr, "server down: %d after %llu ms, %d attempts: %s\n", rc, (unsigned long long)ms,
            r.attempts, r.msg);
    assert_true(rc == -ETIMEDOUT || rc == -EAGAIN);
    assert_true(r.attempts >= 2);
    assert_non_null(strstr(r.msg, "onnect"));
    close_store(s);
}

int main(int argc, char **argv)
{
    uv_loop_init(&loop);
    run_id = (unsigned)getpid();
    int failed = 0;
    if (argc > 1 && strcmp(argv[1], "down") == 0) {
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_server_down)};
        failed = cmocka_run_group_tests_name("storage_down", tests, NULL, NULL);
    } else {
        const char *u = getenv("RUNNEL_S3_URL");
        if (u == NULL || getenv("AWS_ACCESS_KEY_ID") == NULL) {
            fprintf(stderr, "RUNNEL_S3_URL and AWS_* must be set (run under rgw.sh run)\n");
            return 2;
        }
        snprintf(base_url, sizeof(base_url), "%s", u);
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_basic),
            cmocka_unit_test(test_cancel_and_close_in_flight),
            cmocka_unit_test(test_virtual_hosted),
            cmocka_unit_test(test_tls),
            cmocka_unit_test(test_odd_keys),
            cmocka_unit_test(test_ranges),
            cmocka_unit_test(test_conditional_create),
            cmocka_unit_test(test_wrong_secret),
            cmocka_unit_test(test_missing_bucket),
            cmocka_unit_test(test_multipart),
            cmocka_unit_test(test_list_and_batch_delete),
            cmocka_unit_test(test_retries_through_faults),
            cmocka_unit_test(test_object_format),
            cmocka_unit_test(test_server_down),
        };
        failed = cmocka_run_group_tests_name("storage_rgw", tests, NULL, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "loop did not close cleanly\n");
        failed++;
    }
    return failed == 0 ? 0 : 1;
}
