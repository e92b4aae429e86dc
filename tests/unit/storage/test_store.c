/*
 * The store contract, run against the mem:// and file:// backends: put/get/range/tail/head,
 * create-only puts, deletes, batch deletes, paginated listing, argument checks, cancellation,
 * deadlines, closing with requests in flight, and opening by URL.
 */
#include "test_util.h"

#include <errno.h>
#include <stdio.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_test_util.h"

struct tstate {
    uv_loop_t loop;  /* test loop */
    struct store *s; /* store under test */
    char dir[128];   /* file:// root, or "" */
};

static void rm_rf(const char *path)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0) {
        fprintf(stderr, "cleanup of %s failed\n", path);
    }
}

static int setup_mem(void **state)
{
    struct tstate *t = calloc(1, sizeof(*t));
    uv_loop_init(&t->loop);
    char err[256];
    if (store_open(&t->loop, "mem://", NULL, &t->s, err, sizeof(err)) != 0) {
        return -1;
    }
    *state = t;
    return 0;
}

static int setup_file(void **state)
{
    struct tstate *t = calloc(1, sizeof(*t));
    uv_loop_init(&t->loop);
    snprintf(t->dir, sizeof(t->dir), "/tmp/runnel-store-test.XXXXXX");
    if (mkdtemp(t->dir) == NULL) {
        return -1;
    }
    char url[256];
    char err[256];
    snprintf(url, sizeof(url), "file://%s/root", t->dir);
    if (store_open(&t->loop, url, NULL, &t->s, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct tstate *t = *state;
    int rc = tstore_close_loop(&t->loop, t->s);
    if (t->dir[0] != '\0') {
        rm_rf(t->dir);
    }
    free(t);
    return rc == 0 ? 0 : -1;
}

static void test_put_get(void **state)
{
    struct tstate *t = *state;
    struct store_req r;
    const char data[] = "hello, object store";
    assert_int_equal(tstore_put(&t->loop, t->s, "a/b/c.obj", data, sizeof(data), 0, &r), 0);
    assert_int_equal(r.size, sizeof(data));
    assert_int_equal(r.attempts, 1);
    assert_int_equal(tstore_get(&t->loop, t->s, "a/b/c.obj", 0, 0, &r), 0);
    assert_int_equal(r.body_len, sizeof(data));
    assert_memory_equal(r.body, data, sizeof(data));
    assert_int_equal(r.size, sizeof(data));
    store_req_cleanup(&r);
    /* Overwrite replaces the whole object. */
    assert_int_equal(tstore_put(&t->loop, t->s, "a/b/c.obj", "xy", 2, 0, &r), 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "a/b/c.obj", 0, 0, &r), 0);
    assert_int_equal(r.body_len, 2);
    assert_memory_equal(r.body, "xy", 2);
    store_req_cleanup(&r);
}

static void test_ranges(void **state)
{
    struct tstate *t = *state;
    struct store_req r;
    uint8_t data[1000];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)(i * 7);
    }
    assert_int_equal(tstore_put(&t->loop, t->s, "r", data, sizeof(data), 0, &r), 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "r", 100, 50, &r), 0);
    assert_int_equal(r.body_len, 50);
    assert_memory_equal(r.body, data + 100, 50);
    assert_int_equal(r.size, 1000);
    store_req_cleanup(&r);
    /* A range past the end is cut at the end. */
    assert_int_equal(tstore_get(&t->loop, t->s, "r", 990, 50, &r), 0);
    assert_int_equal(r.body_len, 10);
    assert_memory_equal(r.body, data + 990, 10);
    store_req_cleanup(&r);
    /* From an offset to the end. */
    assert_int_equal(tstore_get(&t->loop, t->s, "r", 900, 0, &r), 0);
    assert_int_equal(r.body_len, 100);
    store_req_cleanup(&r);
    /* Starting beyond the end is an error. */
    assert_int_equal(tstore_get(&t->loop, t->s, "r", 1000, 10, &r), -ERANGE);
    assert_non_null(strstr(r.msg, "beyond"));
    store_req_cleanup(&r);
    /* Tail reads. */
    struct tstore_wait w = {0};
    memset(&r, 0, sizeof(r));
    r.data = &w;
    assert_int_equal(store_get_tail(t->s, &r, "r", 30, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(r.body_len, 30);
    assert_memory_equal(r.body, data + 970, 30);
    assert_int_equal(r.size, 1000);
    store_req_cleanup(&r);
    w.done = false;
    r.data = &w;
    assert_int_equal(store_get_tail(t->s, &r, "r", 5000, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(r.body_len, 1000);
    store_req_cleanup(&r);
}

static void test_missing_and_head(void **state)
{
    struct tstate *t = *state;
    struct store_req r;
    assert_int_equal(tstore_get(&t->loop, t->s, "nope", 0, 0, &r), -ENOENT);
    assert_non_null(strstr(r.msg, "nope"));
    assert_null(r.body);
    struct tstore_wait w = {0};
    memset(&r, 0, sizeof(r));
    r.data = &w;
    assert_int_equal(store_head(t->s, &r, "nope", tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), -ENOENT);
    assert_int_equal(tstore_put(&t->loop, t->s, "h", "12345", 5, 0, &r), 0);
    w.done = false;
    r.data = &w;
    assert_int_equal(store_head(t->s, &r, "h", tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(r.size, 5);
    assert_true(r.etag[0] != '\0');
}

static void test_create_only(void **state)
{
    struct tstate *t = *state;
    struct store_req r;
    assert_int_equal(tstore_put(&t->loop, t->s, "once", "first", 5, STORE_IF_NONE_MATCH, &r), 0);
    assert_int_equal(tstore_put(&t->loop, t->s, "once", "second", 6, STORE_IF_NONE_MATCH, &r),
                     -EEXIST);
    assert_false(r.ambiguous);
    assert_int_equal(tstore_get(&t->loop, t->s, "once", 0, 0, &r), 0);
    assert_int_equal(r.body_len, 5);
    assert_memory_equal(r.body, "first", 5);
    store_req_cleanup(&r);
}

static void test_empty_object(void **state)
{
    struct tstate *t = *state;
    struct store_req r;
    assert_int_equal(tstore_put(&t->loop, t->s, "empty", NULL, 0, 0, &r), 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "empty", 0, 0, &r), 0);
    assert_int_equal(r.body_len, 0);
    assert_int_equal(r.size, 0);
    store_req_cleanup(&r);
}

static void do_delete(struct tstate *t, const char *key, int want)
{
    struct tstore_wait w = {0};
    struct store_req r = {0};
    r.data = &w;
    assert_int_equal(store_delete(t->s, &r, key, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), want);
}

static void test_delete(void **state)
{
    struct tstate *t = *state;
    struct store_req r;
    assert_int_equal(tstore_put(&t->loop, t->s, "d/1", "x", 1, 0, &r), 0);
    do_delete(t, "d/1", 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "d/1", 0, 0, &r), -ENOENT);
    do_delete(t, "d/1", 0); /* missing: still fine */
    do_delete(t, "never/was", 0);
}

/* Lists everything under prefix with page size `page`; returns the number of keys seen. */
static size_t list_all(struct tstate *t, const char *prefix, size_t page, char keys[][32],
                       size_t max, size_t *pages)
{
    char *token = NULL;
    size_t n = 0;
    *pages = 0;
    do {
        struct tstore_wait w = {0};
        struct store_req r = {0};
        r.data = &w;
        assert_int_equal(store_list(t->s, &r, prefix, token, page, tstore_cb), 0);
        assert_int_equal(tstore_wait(&t->loop, &r), 0);
        free(token);
        token = r.next_token != NULL ? strdup(r.next_token) : NULL;
        assert_true(r.nentries <= page);
        for (size_t i = 0; i < r.nentries && n < max; i++) {
            snprintf(keys[n++], 32, "%s", r.entries[i].key);
        }
        (*pages)++;
        store_req_cleanup(&r);
    } while (token != NULL);
    return n;
}

static void test_list_pagination(void **state)
{
    struct tstate *t = *state;
    struct store_req r;
    char key[32];
    for (int i = 24; i >= 0; i--) {
        snprintf(key, sizeof(key), "p/%03d", i);
        assert_int_equal(tstore_put(&t->loop, t->s, key, key, strlen(key), 0, &r), 0);
    }
    assert_int_equal(tstore_put(&t->loop, t->s, "q/other", "x", 1, 0, &r), 0);
    assert_int_equal(tstore_put(&t->loop, t->s, "p", "x", 1, 0, &r) == 0 ||
                         strcmp(store_backend(t->s), "file") == 0,
                     1);
    char keys[64][32];
    size_t pages = 0;
    size_t n = list_all(t, "p/", 10, keys, 64, &pages);
    assert_int_equal(n, 25);
    assert_int_equal(pages, 3);
    for (int i = 0; i < 25; i++) {
        snprintf(key, sizeof(key), "p/%03d", i);
        assert_string_equal(keys[i], key);
    }
    /* Prefix that is not a directory boundary. */
    n = list_all(t, "p/01", 1000, keys, 64, &pages);
    assert_int_equal(n, 10);
    assert_string_equal(keys[0], "p/010");
    /* No prefix: every key, sorted. */
    n = list_all(t, NULL, 7, keys, 64, &pages);
    assert_true(n >= 26);
    for (size_t i = 1; i < n; i++) {
        assert_true(strcmp(keys[i - 1], keys[i]) < 0);
    }
    /* Empty listing. */
    n = list_all(t, "zzz", 10, keys, 64, &pages);
    assert_int_equal(n, 0);
    assert_int_equal(pages, 1);
}

static void test_delete_many(void **state)
{
    struct tstate *t = *state;
    struct store_req r;
    const char *keys[] = {"m/1", "m/2", "m/3", "m/missing"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tstore_put(&t->loop, t->s, keys[i], "v", 1, 0, &r), 0);
    }
    assert_int_equal(tstore_put(&t->loop, t->s, "m/keep", "v", 1, 0, &r), 0);
    struct tstore_wait w = {0};
    memset(&r, 0, sizeof(r));
    r.data = &w;
    assert_int_equal(store_delete_many(t->s, &r, keys, 4, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(r.nfailed, 0);
    char names[8][32];
    size_t pages;
    assert_int_equal(list_all(t, "m/", 100, names, 8, &pages), 1);
    assert_string_equal(names[0], "m/keep");
}

static void test_bad_arguments(void **state)
{
    struct tstate *t = *state;
    struct store_req r = {0};
    struct tstore_wait w = {0};
    r.data = &w;
    const char *bad[] = {"", "/abs", "a//b", "a/../b", "..", "a/./b", "tab\tkey", "x/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(store_put(t->s, &r, bad[i], "x", 1, 0, tstore_cb), -EINVAL);
        assert_int_equal(store_get(t->s, &r, bad[i], 0, 0, tstore_cb), -EINVAL);
    }
    char longkey[1100];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(store_head(t->s, &r, longkey, tstore_cb), -EINVAL);
    assert_int_equal(store_put(t->s, &r, "k", NULL, 5, 0, tstore_cb), -EINVAL);
    assert_int_equal(store_put(t->s, &r, "k", "x", 1, 0x80, tstore_cb), -EINVAL);
    assert_int_equal(store_get(t->s, &r, "k", UINT64_MAX, 2, tstore_cb), -EINVAL);
    assert_int_equal(store_put(t->s, &r, "k", "x", 1, 0, NULL), -EINVAL);
    /* A request in flight cannot be reused. */
    assert_int_equal(store_put(t->s, &r, "k", "x", 1, 0, tstore_cb), 0);
    assert_int_equal(store_get(t->s, &r, "k", 0, 0, tstore_cb), -EBUSY);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(store_cancel(&r), -EINVAL); /* finished: nothing to cancel */
}

static void test_cancel(void **state)
{
    struct tstate *t = *state;
    struct store_req r = {0};
    struct tstore_wait w = {0};
    r.data = &w;
    assert_int_equal(store_get(t->s, &r, "whatever", 0, 0, tstore_cb), 0);
    assert_int_equal(store_cancel(&r), 0);
    assert_false(w.done); /* never called back from inside store_cancel() */
    assert_int_equal(tstore_wait(&t->loop, &r), -ECANCELED);
    assert_int_equal(w.calls, 1);
    /* Run the loop a bit more: no second callback. */
    uv_run(&t->loop, UV_RUN_NOWAIT);
    assert_int_equal(w.calls, 1);
}

static void test_close_in_flight(void **state)
{
    struct tstate *t = *state;
    struct store_req r[4];
    struct tstore_wait w[4];
    memset(r, 0, sizeof(r));
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 4; i++) {
        r[i].data = &w[i];
        assert_int_equal(store_put(t->s, &r[i], "inflight", "abc", 3, 0, tstore_cb), 0);
    }
    store_close(t->s);
    t->s = NULL;
    uv_run(&t->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(w[i].calls, 1);
        assert_true(r[i].err == -ECANCELED || r[i].err == 0);
    }
}

static void test_open_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[256];
    assert_int_equal(store_open(&loop, "nope", NULL, &s, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "scheme"));
    assert_int_equal(store_open(&loop, "gopher://x", NULL, &s, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "gopher"));
    assert_int_equal(store_open(&loop, "mem://?color=blue", NULL, &s, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "color"));
    assert_int_equal(store_open(&loop, "file://relative/path", NULL, &s, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(store_open(&loop, "mem://?retries=x", NULL, &s, err, sizeof(err)), -EINVAL);
    assert_int_equal(store_open(&loop, "mem://?timeout_ms=-5", NULL, &s, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(
        store_open(&loop, "mem://?timeout_ms=100&retries=2", NULL, &s, err, sizeof(err)), 0);
    assert_string_equal(store_backend(s), "mem");
    assert_int_equal(tstore_close_loop(&loop, s), 0);
}

static void test_file_layout(void **state)
{
    struct tstate *t = *state;
    struct store_req r;
    assert_int_equal(tstore_put(&t->loop, t->s, "x/y/z", "data", 4, 0, &r), 0);
    char path[300];
    snprintf(path, sizeof(path), "%s/root/x/y/z", t->dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 4);
    /* No temporary files are left behind. */
    snprintf(path, sizeof(path), "%s/root/x/y", t->dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.' || strncmp(de->d_name, ".rnltmp.", 8) == 0) {
            files++;
            assert_string_equal(de->d_name, "z");
        }
    }
    closedir(d);
    assert_int_equal(files, 1);
    /* The reserved temporary prefix cannot be used as a key. */
    assert_int_equal(tstore_put(&t->loop, t->s, "x/.rnltmp.1", "d", 1, 0, &r), -EINVAL);
    /* A key below an existing object's path is simply missing. */
    assert_int_equal(tstore_get(&t->loop, t->s, "x/y/z/w", 0, 0, &r), -ENOENT);
    /* Stray temporary files are not listed. */
    snprintf(path, sizeof(path), "%s/root/x/.rnltmp.999.1", t->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    char keys[8][32];
    size_t pages;
    assert_int_equal(list_all(t, "x/", 10, keys, 8, &pages), 1);
    assert_string_equal(keys[0], "x/y/z");
}

static void test_deadline(void **state)
{
    struct tstate *t = *state;
    /* A 1 MiB file PUT with a 1 ms deadline either makes it or times out; never both. */
    size_t n = 1 << 20;
    uint8_t *buf = calloc(1, n);
    struct store_req r = {0};
    struct tstore_wait w = {0};
    r.data = &w;
    r.timeout_ms = 1;
    assert_int_equal(store_put(t->s, &r, "slow", buf, n, 0, tstore_cb), 0);
    int rc = tstore_wait(&t->loop, &r);
    assert_true(rc == 0 || rc == -ETIMEDOUT);
    if (rc == -ETIMEDOUT) {
        assert_non_null(strstr(r.msg, "deadline"));
        assert_true(r.ambiguous || r.attempts == 0);
    }
    assert_int_equal(w.calls, 1);
    free(buf);
}

int run_test_store(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_put_get, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_ranges, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_ranges, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_head, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_head, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_create_only, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_create_only, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_empty_object, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_empty_object, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_list_pagination, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_list_pagination, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_delete_many, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_delete_many, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_close_in_flight, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_close_in_flight, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup_file, teardown),
        cmocka_unit_test_setup_teardown(test_file_layout, setup_file, teardown),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
