/*
 * The file backend's read paths (storage/src/fs.c): the descriptor cache and inline reads on the
 * loop thread with preadv2(RWF_NOWAIT), the fallback to the thread pool when data is not in the
 * page cache (injected EAGAIN, partial reads, a kernel without RWF_NOWAIT, a real page-cache
 * drop), keys deleted or replaced behind a cached descriptor (by the store and by another
 * process), GETs of unknown size (opened on the pool, read on the loop), LRU eviction,
 * cancellation and deadlines on both paths; keys opened on the loop thread with
 * openat2(RESOLVE_CACHED); create-only PUTs through
 * O_TMPFILE and through a named temporary file. The general store contract on file:// is in
 * test_store.c.
 */
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "store_int.h"
#include "store_test_util.h"

struct fstate {
    uv_loop_t loop;  /* test loop */
    struct store *s; /* file store under test */
    char dir[128];   /* temporary directory; the store's root is dir/root */
    uint8_t *data;   /* OBJ_LEN bytes of test data */
};

#define OBJ_LEN (256u * 1024u)

/* ---- preadv2 injection ---- */

static int hook_mode;       /* 0 EAGAIN at once, 1 first 4 KiB then EAGAIN, 2 EOPNOTSUPP */
static int hook_calls;      /* calls since installed */
static uint64_t hook_given; /* bytes returned so far for the current read */

static ssize_t hook_preadv2(int fd, const struct iovec *iov, int iovcnt, off_t off, int flags)
{
    (void)iovcnt;
    (void)flags;
    hook_calls++;
    if (hook_mode == 1 && hook_given == 0) {
        size_t n = iov[0].iov_len < 4096 ? iov[0].iov_len : 4096;
        ssize_t r = pread(fd, iov[0].iov_base, n, off);
        hook_given += r > 0 ? (uint64_t)r : 0;
        return r;
    }
    hook_given = 0;
    errno = hook_mode == 2 ? EOPNOTSUPP : EAGAIN;
    return -1;
}

static void hook_install(int mode)
{
    hook_mode = mode;
    hook_calls = 0;
    hook_given = 0;
    store__fs_preadv2 = hook_preadv2;
}

static void hook_remove(void)
{
    store__fs_preadv2 = preadv2;
}

/* ---- fixtures ---- */

static int open_store(struct fstate *t, const char *params)
{
    char url[300];
    char err[256];
    snprintf(url, sizeof(url), "file://%s/root%s", t->dir, params);
    if (store_open(&t->loop, url, NULL, &t->s, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int setup_params(void **state, const char *params)
{
    struct fstate *t = calloc(1, sizeof(*t));
    uv_loop_init(&t->loop);
    snprintf(t->dir, sizeof(t->dir), "/tmp/runnel-fs-test.XXXXXX");
    if (mkdtemp(t->dir) == NULL || open_store(t, params) != 0) {
        return -1;
    }
    t->data = malloc(OBJ_LEN);
    for (size_t i = 0; i < OBJ_LEN; i++) {
        t->data[i] = (uint8_t)(i * 31 + (i >> 8));
    }
    *state = t;
    return 0;
}

/* The tests of the pool path open keys there: cached opens (below) are off for them. */
static int setup(void **state)
{
    return setup_params(state, "?cached_open=false");
}

static int setup_small(void **state)
{
    return setup_params(state, "?fd_cache=2&inline_max=1000&cached_open=false");
}

static int setup_named_tmp(void **state)
{
    return setup_params(state, "?tmpfile=false&cached_open=false");
}

static int setup_cached_open(void **state)
{
    return setup_params(state, "");
}

static int setup_nocache(void **state)
{
    return setup_params(state, "?fd_cache=0");
}

static int teardown(void **state)
{
    struct fstate *t = *state;
    hook_remove();
    int rc = tstore_close_loop(&t->loop, t->s);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cleanup of %s failed\n", t->dir);
    }
    free(t->data);
    free(t);
    return rc == 0 ? 0 : -1;
}

static struct store__fs_stats stats(struct fstate *t)
{
    struct store__fs_stats st;
    assert_int_equal(store__fs_get_stats(t->s, &st), 0);
    return st;
}

/* GETs [off, off + len) and checks the bytes against t->data. */
static void get_check(struct fstate *t, const char *key, uint64_t off, uint64_t len)
{
    struct store_req r;
    assert_int_equal(tstore_get(&t->loop, t->s, key, off, len, &r), 0);
    assert_int_equal(r.body_len, len);
    assert_memory_equal(r.body, t->data + off, len);
    assert_int_equal(r.size, OBJ_LEN);
    store_req_cleanup(&r);
}

static void put(struct fstate *t, const char *key, const void *buf, size_t len)
{
    struct store_req r;
    assert_int_equal(tstore_put(&t->loop, t->s, key, buf, len, 0, &r), 0);
}

/* ---- tests ---- */

static void test_inline_hit(void **state)
{
    struct fstate *t = *state;
    put(t, "p/obj", t->data, OBJ_LEN);
    /* The first read opens the file on the pool and caches its descriptor. */
    get_check(t, "p/obj", 1000, 65536);
    struct store__fs_stats st = stats(t);
    assert_int_equal(st.pool_reads, 1);
    assert_int_equal(st.inline_reads, 0);
    assert_int_equal(st.cached, 1);
    /* The next ones are answered on the loop thread, but never from inside store_get(). */
    struct store_req r = {0};
    struct tstore_wait w = {0};
    r.data = &w;
    assert_int_equal(store_get(t->s, &r, "p/obj", 70000, 65536, tstore_cb), 0);
    assert_false(w.done);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(r.body_len, 65536);
    assert_memory_equal(r.body, t->data + 70000, 65536);
    store_req_cleanup(&r);
    get_check(t, "p/obj", 0, OBJ_LEN);
    /* Whole object, tail, head and a range cut at the end, all inline. */
    assert_int_equal(tstore_get(&t->loop, t->s, "p/obj", 0, 0, &r), 0);
    assert_int_equal(r.body_len, OBJ_LEN);
    assert_memory_equal(r.body, t->data, OBJ_LEN);
    store_req_cleanup(&r);
    memset(&w, 0, sizeof(w));
    r.data = &w;
    assert_int_equal(store_get_tail(t->s, &r, "p/obj", 100, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(r.body_len, 100);
    assert_memory_equal(r.body, t->data + OBJ_LEN - 100, 100);
    store_req_cleanup(&r);
    memset(&w, 0, sizeof(w));
    r.data = &w;
    assert_int_equal(store_head(t->s, &r, "p/obj", tstore_cb), 0);
    assert_false(w.done);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(r.size, OBJ_LEN);
    assert_true(strlen(r.etag) > 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "p/obj", OBJ_LEN - 10, 50, &r), 0);
    assert_int_equal(r.body_len, 10);
    store_req_cleanup(&r);
    /* Range errors are the same as on the pool path. */
    assert_int_equal(tstore_get(&t->loop, t->s, "p/obj", OBJ_LEN, 10, &r), -ERANGE);
    assert_non_null(strstr(r.msg, "beyond"));
    st = stats(t);
    assert_int_equal(st.pool_reads, 1);
    assert_int_equal(st.inline_reads, 7);
    assert_int_equal(st.fallbacks, 0);
}

static void test_fallback_eagain(void **state)
{
    struct fstate *t = *state;
    put(t, "obj", t->data, OBJ_LEN);
    get_check(t, "obj", 0, 100); /* caches the descriptor */
    /* Nothing in the page cache: the whole read goes to the pool. */
    hook_install(0);
    get_check(t, "obj", 5000, 100000);
    assert_int_equal(hook_calls, 1);
    assert_int_equal(stats(t).fallbacks, 1);
    /* Only the first 4 KiB cached: the pool reads the rest into the same buffer. */
    hook_install(1);
    get_check(t, "obj", 3, 200000);
    assert_int_equal(hook_calls, 2);
    assert_int_equal(stats(t).fallbacks, 2);
    /* A kernel without RWF_NOWAIT: pool reads from then on, without asking again. */
    hook_install(2);
    get_check(t, "obj", 17, 1000);
    assert_int_equal(hook_calls, 1);
    get_check(t, "obj", 18, 1000);
    assert_int_equal(hook_calls, 1);
    struct store__fs_stats st = stats(t);
    assert_int_equal(st.fallbacks, 4);
    assert_int_equal(st.inline_reads, 0);
    assert_int_equal(st.pool_reads, 1);
}

static void test_fallback_page_cache(void **state)
{
    struct fstate *t = *state;
    put(t, "cold", t->data, OBJ_LEN);
    get_check(t, "cold", 0, 10);
    /* Drop the object's clean pages, as memory pressure would: the read must still be right. */
    char path[300];
    snprintf(path, sizeof(path), "%s/root/cold", t->dir);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fdatasync(fd), 0);
    assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    close(fd);
    get_check(t, "cold", 1234, 100000);
    get_check(t, "cold", 0, OBJ_LEN);
    struct store__fs_stats st = stats(t);
    assert_int_equal(st.inline_reads + st.fallbacks, 2);
}

static void test_deleted_and_replaced(void **state)
{
    struct fstate *t = *state;
    struct store_req r;
    char path[300];
    char other[300];
    put(t, "d/a", t->data, OBJ_LEN);
    get_check(t, "d/a", 0, 10);
    assert_int_equal(stats(t).cached, 1);
    /* Deleted through the store: the descriptor is dropped and the key is gone. */
    assert_int_equal(tstore_put(&t->loop, t->s, "d/b", "x", 1, 0, &r), 0);
    struct store_req d = {0};
    struct tstore_wait w = {0};
    d.data = &w;
    assert_int_equal(store_delete(t->s, &d, "d/a", tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &d), 0);
    assert_int_equal(stats(t).cached, 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "d/a", 0, 10, &r), -ENOENT);
    /* Deleted by another process behind the cached descriptor (st_nlink drops to 0). */
    put(t, "d/a", t->data, OBJ_LEN);
    get_check(t, "d/a", 0, 10);
    assert_int_equal(stats(t).cached, 1);
    snprintf(path, sizeof(path), "%s/root/d/a", t->dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "d/a", 0, 10, &r), -ENOENT);
    assert_int_equal(tstore_get(&t->loop, t->s, "d/a", 0, 10, &r), -ENOENT);
    struct store_req h = {0};
    memset(&w, 0, sizeof(w));
    h.data = &w;
    assert_int_equal(store_head(t->s, &h, "d/a", tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &h), -ENOENT);
    /* Replaced by another process (a new file renamed over it): the new bytes are read. */
    put(t, "d/a", t->data, OBJ_LEN);
    get_check(t, "d/a", 0, 10);
    snprintf(other, sizeof(other), "%s/root/d/new", t->dir);
    FILE *f = fopen(other, "w");
    assert_non_null(f);
    fputs("replaced", f);
    fclose(f);
    assert_int_equal(rename(other, path), 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "d/a", 0, 0, &r), 0);
    assert_int_equal(r.body_len, 8);
    assert_memory_equal(r.body, "replaced", 8);
    store_req_cleanup(&r);
    /* Overwritten through the store, then read inline again. */
    put(t, "d/a", "second", 6);
    assert_int_equal(tstore_get(&t->loop, t->s, "d/a", 0, 0, &r), 0);
    assert_int_equal(r.body_len, 6);
    assert_memory_equal(r.body, "second", 6);
    store_req_cleanup(&r);
    uint64_t inl = stats(t).inline_reads;
    assert_int_equal(tstore_get(&t->loop, t->s, "d/a", 1, 3, &r), 0);
    assert_memory_equal(r.body, "eco", 3);
    store_req_cleanup(&r);
    assert_int_equal(stats(t).inline_reads, inl + 1);
    /* A batch delete drops cached descriptors too. */
    assert_int_equal(tstore_get(&t->loop, t->s, "d/b", 0, 0, &r), 0);
    store_req_cleanup(&r);
    const char *keys[] = {"d/a", "d/b"};
    struct store_req dm = {0};
    memset(&w, 0, sizeof(w));
    dm.data = &w;
    assert_int_equal(store_delete_many(t->s, &dm, keys, 2, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &dm), 0);
    store_req_cleanup(&dm);
    assert_int_equal(stats(t).cached, 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "d/b", 0, 0, &r), -ENOENT);
}

static void test_inline_cancel(void **state)
{
    struct fstate *t = *state;
    put(t, "c", t->data, OBJ_LEN);
    get_check(t, "c", 0, 10);
    /* Answered inline but not yet delivered: the cancel wins, once, after store_cancel(). */
    struct store_req r = {0};
    struct tstore_wait w = {0};
    r.data = &w;
    assert_int_equal(store_get(t->s, &r, "c", 0, 65536, tstore_cb), 0);
    assert_int_equal(store_cancel(&r), 0);
    assert_false(w.done);
    assert_int_equal(tstore_wait(&t->loop, &r), -ECANCELED);
    assert_null(r.body);
    uv_run(&t->loop, UV_RUN_NOWAIT);
    assert_int_equal(w.calls, 1);
    /* Cancelled while the fallback read is queued or running on the pool. */
    hook_install(0);
    memset(&w, 0, sizeof(w));
    assert_int_equal(store_get(t->s, &r, "c", 10, 65536, tstore_cb), 0);
    assert_int_equal(stats(t).fallbacks, 1);
    assert_int_equal(store_cancel(&r), 0);
    assert_false(w.done);
    assert_int_equal(tstore_wait(&t->loop, &r), -ECANCELED);
    assert_null(r.body);
    uv_run(&t->loop, UV_RUN_DEFAULT); /* the pool work ends and frees the operation */
    assert_int_equal(w.calls, 1);
    hook_remove();
    get_check(t, "c", 10, 65536);
}

static uv_sem_t blocker_sem; /* blocks the pool's threads */

static void blocker_work(uv_work_t *req)
{
    (void)req;
    uv_sem_wait(&blocker_sem);
}

static void blocker_after(uv_work_t *req, int status)
{
    (void)status;
    free(req);
}

static void test_deadline(void **state)
{
    struct fstate *t = *state;
    put(t, "dl", t->data, OBJ_LEN);
    get_check(t, "dl", 0, 10);
    /* Inline answers beat any deadline: they are ready before the call returns. */
    struct store_req r = {0};
    struct tstore_wait w = {0};
    r.data = &w;
    r.timeout_ms = 1;
    assert_int_equal(store_get(t->s, &r, "dl", 0, 65536, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(w.calls, 1);
    store_req_cleanup(&r);
    /* A fallback stuck behind a busy thread pool times out with a clear message. */
    enum { BLOCKERS = 64 };
    uv_sem_init(&blocker_sem, 0);
    for (int i = 0; i < BLOCKERS; i++) {
        uv_work_t *b = calloc(1, sizeof(*b));
        assert_int_equal(uv_queue_work(&t->loop, b, blocker_work, blocker_after), 0);
    }
    hook_install(0);
    memset(&r, 0, sizeof(r));
    memset(&w, 0, sizeof(w));
    r.data = &w;
    r.timeout_ms = 30;
    assert_int_equal(store_get(t->s, &r, "dl", 0, 65536, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), -ETIMEDOUT);
    assert_non_null(strstr(r.msg, "deadline"));
    assert_null(r.body);
    for (int i = 0; i < BLOCKERS; i++) {
        uv_sem_post(&blocker_sem);
    }
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(w.calls, 1);
    uv_sem_destroy(&blocker_sem);
    hook_remove();
    get_check(t, "dl", 0, 65536);
}

/* A GET of unknown size (whole object, tail) opens on the pool and reads on the loop. */
static void test_cold_whole_get(void **state)
{
    struct fstate *t = *state;
    struct store_req r;
    put(t, "w1", t->data, OBJ_LEN);
    put(t, "w2", t->data, OBJ_LEN);
    assert_int_equal(tstore_get(&t->loop, t->s, "w1", 0, 0, &r), 0);
    assert_int_equal(r.body_len, OBJ_LEN);
    assert_memory_equal(r.body, t->data, OBJ_LEN);
    store_req_cleanup(&r);
    struct store__fs_stats st = stats(t);
    assert_int_equal(st.pool_reads, 1);
    assert_int_equal(st.inline_reads, 1);
    assert_int_equal(st.cached, 1);
    struct tstore_wait w = {0};
    r.data = &w;
    assert_int_equal(store_get_tail(t->s, &r, "w2", 1000, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(r.body_len, 1000);
    assert_memory_equal(r.body, t->data + OBJ_LEN - 1000, 1000);
    store_req_cleanup(&r);
    /* Not in the page cache after the open: the second trip to the pool reads it. */
    put(t, "w3", t->data, OBJ_LEN);
    hook_install(0);
    assert_int_equal(tstore_get(&t->loop, t->s, "w3", 0, 0, &r), 0);
    assert_int_equal(r.body_len, OBJ_LEN);
    assert_memory_equal(r.body, t->data, OBJ_LEN);
    store_req_cleanup(&r);
    hook_remove();
    st = stats(t);
    assert_int_equal(st.pool_reads, 3);
    assert_int_equal(st.inline_reads, 2);
    assert_int_equal(st.fallbacks, 1);
    /* Missing keys and range errors come back from the worker as before. */
    assert_int_equal(tstore_get(&t->loop, t->s, "nope", 0, 0, &r), -ENOENT);
    /* Timed out while the open waits behind a busy pool: answered, and the late open is
     * cached without reading. */
    put(t, "w4", t->data, OBJ_LEN);
    enum { BLOCKERS = 64 };
    uv_sem_init(&blocker_sem, 0);
    for (int i = 0; i < BLOCKERS; i++) {
        uv_work_t *b = calloc(1, sizeof(*b));
        assert_int_equal(uv_queue_work(&t->loop, b, blocker_work, blocker_after), 0);
    }
    memset(&r, 0, sizeof(r));
    memset(&w, 0, sizeof(w));
    r.data = &w;
    r.timeout_ms = 30;
    assert_int_equal(store_get(t->s, &r, "w4", 0, 0, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), -ETIMEDOUT);
    for (int i = 0; i < BLOCKERS; i++) {
        uv_sem_post(&blocker_sem);
    }
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_sem_destroy(&blocker_sem);
    assert_int_equal(w.calls, 1);
    assert_int_equal(tstore_get(&t->loop, t->s, "w4", 0, 0, &r), 0);
    assert_int_equal(r.body_len, OBJ_LEN);
    store_req_cleanup(&r);
}

static void test_lru_and_inline_max(void **state)
{
    struct fstate *t = *state; /* fd_cache=2, inline_max=1000 */
    put(t, "k1", t->data, OBJ_LEN);
    put(t, "k2", t->data, OBJ_LEN);
    put(t, "k3", t->data, OBJ_LEN);
    get_check(t, "k1", 0, 10);
    get_check(t, "k2", 0, 10);
    get_check(t, "k1", 0, 10); /* k1 is now the most recently used */
    get_check(t, "k3", 0, 10); /* evicts k2 */
    struct store__fs_stats st = stats(t);
    assert_int_equal(st.cached, 2);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.pool_reads, 3);
    get_check(t, "k1", 0, 10);
    get_check(t, "k3", 0, 10);
    get_check(t, "k2", 0, 10);
    st = stats(t);
    assert_int_equal(st.pool_reads, 4);
    assert_int_equal(st.inline_reads, 3);
    /* Above inline_max the read goes to the pool from the cached descriptor. */
    get_check(t, "k2", 100, 5000);
    st = stats(t);
    assert_int_equal(st.fallbacks, 1);
    assert_int_equal(st.inline_reads, 3);
}

static void test_no_cache(void **state)
{
    struct fstate *t = *state; /* fd_cache=0 */
    put(t, "n", t->data, OBJ_LEN);
    get_check(t, "n", 0, 10);
    get_check(t, "n", 5, 10);
    struct store__fs_stats st = stats(t);
    assert_int_equal(st.pool_reads, 2);
    assert_int_equal(st.inline_reads, 0);
    assert_int_equal(st.cached, 0);
}

/* Counts the entries of dir (other than . and ..); -1 if it cannot be read. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -1;
    }
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

/* Create-only PUTs (O_TMPFILE + linkat, or a named temporary with tmpfile=false): new nested
 * directories, the key's bytes, a lost race as -EEXIST, and nothing left behind. */
static void create_only_checks(struct fstate *t)
{
    struct store_req r;
    char dir[300];
    assert_int_equal(
        tstore_put(&t->loop, t->s, "n/e/w/k", t->data, OBJ_LEN, STORE_IF_NONE_MATCH, &r), 0);
    assert_int_equal(r.size, OBJ_LEN);
    assert_int_equal(tstore_put(&t->loop, t->s, "n/e/w/k", "other", 5, STORE_IF_NONE_MATCH, &r),
                     -EEXIST);
    assert_non_null(strstr(r.msg, "already exists"));
    get_check(t, "n/e/w/k", 0, 5000);
    assert_int_equal(tstore_put(&t->loop, t->s, "n/e/w/k2", "", 0, STORE_IF_NONE_MATCH, &r), 0);
    snprintf(dir, sizeof(dir), "%s/root/n/e/w", t->dir);
    assert_int_equal(count_entries(dir), 2);
    /* An ordinary PUT still replaces. */
    put(t, "n/e/w/k", "new", 3);
    assert_int_equal(tstore_get(&t->loop, t->s, "n/e/w/k", 0, 0, &r), 0);
    assert_int_equal(r.body_len, 3);
    store_req_cleanup(&r);
    assert_int_equal(count_entries(dir), 2);
}

static void test_create_only(void **state)
{
    create_only_checks(*state);
}

/* Whether this kernel opens with RESOLVE_CACHED (openat2, Linux 5.12+) here. */
static bool cached_open_supported(const char *dir)
{
    struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_CACHED};
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, dir, &how, sizeof(how));
    if (fd < 0) {
        return errno == EAGAIN; /* supported, the directory just was not cached */
    }
    close(fd);
    return true;
}

/* Keys not in the descriptor cache are opened on the loop thread when the lookup is cached. */
static void test_cached_open(void **state)
{
    struct fstate *t = *state;
    struct store_req r;
    if (!cached_open_supported(t->dir)) {
        skip();
    }
    put(t, "c/obj", t->data, OBJ_LEN);
    /* Just written, so its path is in the kernel's lookup cache: no trip to the pool. */
    get_check(t, "c/obj", 1000, 65536);
    struct store__fs_stats st = stats(t);
    assert_int_equal(st.cached_opens, 1);
    assert_int_equal(st.pool_reads, 0);
    assert_int_equal(st.inline_reads, 1);
    assert_int_equal(st.cached, 1);
    get_check(t, "c/obj", 0, OBJ_LEN);
    assert_int_equal(stats(t).cached_opens, 1);
    /* A missing key and a key that names a directory go to the pool, which says what is wrong. */
    assert_int_equal(tstore_get(&t->loop, t->s, "c/none", 0, 10, &r), -ENOENT);
    put(t, "c/dir/x", "x", 1);
    assert_true(tstore_get(&t->loop, t->s, "c/dir", 0, 0, &r) < 0);
    st = stats(t);
    assert_int_equal(st.pool_reads, 2);
    /* HEAD opens the same way. */
    put(t, "c/h", t->data, 10);
    struct store_req h = {0};
    struct tstore_wait w = {0};
    h.data = &w;
    assert_int_equal(store_head(t->s, &h, "c/h", tstore_cb), 0);
    assert_false(w.done);
    assert_int_equal(tstore_wait(&t->loop, &h), 0);
    assert_int_equal(h.size, 10);
    assert_int_equal(stats(t).cached_opens, st.cached_opens + 1);
    assert_int_equal(stats(t).pool_reads, 2);
}

static void test_params(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[256];
    assert_int_equal(
        store_open(&loop, "file:///tmp/runnel-fs-param?fd_cache=5000", NULL, &s, err, sizeof(err)),
        -EINVAL);
    assert_non_null(strstr(err, "fd_cache"));
    assert_int_equal(
        store_open(&loop, "file:///tmp/runnel-fs-param?inline_max=x", NULL, &s, err, sizeof(err)),
        -EINVAL);
    assert_int_equal(store_open(&loop, "mem://", NULL, &s, err, sizeof(err)), 0);
    struct store__fs_stats st;
    assert_int_equal(store__fs_get_stats(s, &st), -EINVAL);
    assert_int_equal(tstore_close_loop(&loop, s), 0);
    rmdir("/tmp/runnel-fs-param");
}

int run_test_fs(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_inline_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback_eagain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback_page_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_and_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cold_whole_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lru_and_inline_max, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_no_cache, setup_nocache, teardown),
        cmocka_unit_test_setup_teardown(test_create_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_only, setup_named_tmp, teardown),
        cmocka_unit_test_setup_teardown(test_cached_open, setup_cached_open, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_and_replaced, setup_cached_open, teardown),
        cmocka_unit_test_setup_teardown(test_create_only, setup_cached_open, teardown),
        cmocka_unit_test(test_params),
    };
    return cmocka_run_group_tests_name("storage/fs", tests, NULL, NULL);
}
