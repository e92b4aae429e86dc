/*
 * The fault-injecting wrapper (faulty+URL): every fault it can inject, and how the store's
 * retry loop, deadlines and the object reader respond to each: injected errors (retried or
 * not by class), responses lost after the operation was applied (including a create-only PUT
 * that then reports -EEXIST with `ambiguous`), truncated and corrupted reads, added latency
 * against a deadline, and outage windows.
 */
#include "test_util.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "runnel/storage/object.h"
#include "store_test_util.h"

struct ftest {
    uv_loop_t loop;      /* test loop */
    struct store *s;     /* faulty store */
    struct store *plain; /* the same directory without faults */
    char dir[64];        /* file:// root */
};

static struct ftest *ftest_open(const char *params)
{
    struct ftest *t = calloc(1, sizeof(*t));
    uv_loop_init(&t->loop);
    snprintf(t->dir, sizeof(t->dir), "/tmp/runnel-faulty.XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    char url[512];
    char err[256];
    snprintf(url, sizeof(url), "faulty+file://%s?%s", t->dir, params);
    int rc = store_open(&t->loop, url, NULL, &t->s, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", url, err);
    }
    assert_int_equal(rc, 0);
    assert_string_equal(store_backend(t->s), "faulty");
    snprintf(url, sizeof(url), "file://%s", t->dir);
    assert_int_equal(store_open(&t->loop, url, NULL, &t->plain, err, sizeof(err)), 0);
    return t;
}

static void ftest_close(struct ftest *t)
{
    store_close(t->plain);
    assert_int_equal(tstore_close_loop(&t->loop, t->s), 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    assert_int_equal(system(cmd), 0);
    free(t);
}

static void test_error_rate_no_retry(void **state)
{
    (void)state;
    struct ftest *t = ftest_open("put_error_rate=1&retries=0&seed=1");
    struct store_req r;
    assert_int_equal(tstore_put(&t->loop, t->s, "k", "v", 1, 0, &r), -EAGAIN);
    assert_non_null(strstr(r.msg, "injected"));
    assert_int_equal(r.attempts, 1);
    /* Nothing reached the inner store. */
    assert_int_equal(tstore_get(&t->loop, t->plain, "k", 0, 0, &r), -ENOENT);
    /* GETs are not affected by put_error_rate. */
    assert_int_equal(tstore_put(&t->loop, t->plain, "k", "v", 1, 0, &r), 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "k", 0, 0, &r), 0);
    store_req_cleanup(&r);
    ftest_close(t);
}

static void test_error_rate_retried(void **state)
{
    (void)state;
    /* Always failing: retried `retries` times, then the last error with the count. */
    struct ftest *t = ftest_open("error_rate=1&retries=3&retry_base_ms=1&retry_cap_ms=2&seed=2");
    struct store_req r;
    assert_int_equal(tstore_get(&t->loop, t->s, "k", 0, 0, &r), -EAGAIN);
    assert_int_equal(r.attempts, 4);
    assert_non_null(strstr(r.msg, "after 4 attempts"));
    ftest_close(t);
    /* Failing half the time: with enough retries every operation succeeds, some after retries. */
    t = ftest_open("error_rate=0.5&retries=30&retry_base_ms=1&retry_cap_ms=2&seed=3");
    int retried = 0;
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(tstore_put(&t->loop, t->s, key, key, strlen(key), 0, &r), 0);
        retried += r.attempts > 1;
        assert_int_equal(tstore_get(&t->loop, t->s, key, 0, 0, &r), 0);
        assert_memory_equal(r.body, key, strlen(key));
        retried += r.attempts > 1;
        store_req_cleanup(&r);
    }
    assert_true(retried > 5);
    ftest_close(t);
}

static void test_error_class_not_retried(void **state)
{
    (void)state;
    struct ftest *t = ftest_open("error_rate=1&error=eacces&retries=5&seed=4");
    struct store_req r;
    assert_int_equal(tstore_get(&t->loop, t->s, "k", 0, 0, &r), -EACCES);
    assert_int_equal(r.attempts, 1);
    ftest_close(t);
    t = ftest_open("error_rate=1&error=eio&retries=5&seed=4");
    assert_int_equal(tstore_put(&t->loop, t->s, "k", "v", 1, 0, &r), -EIO);
    assert_int_equal(r.attempts, 1);
    ftest_close(t);
}

static void test_lost_response(void **state)
{
    (void)state;
    struct ftest *t = ftest_open("lost_response_rate=1&retries=0&seed=5");
    struct store_req r;
    assert_int_equal(tstore_put(&t->loop, t->s, "k", "applied", 7, 0, &r), -EAGAIN);
    assert_non_null(strstr(r.msg, "response lost"));
    assert_true(r.ambiguous);
    /* ...but it was applied. */
    assert_int_equal(tstore_get(&t->loop, t->plain, "k", 0, 0, &r), 0);
    assert_int_equal(r.body_len, 7);
    store_req_cleanup(&r);
    ftest_close(t);
}

static void test_lost_response_create_only(void **state)
{
    (void)state;
    /* The first attempt is applied but its response lost; the retry finds the key and loses.
     * Keys are never reused, so `ambiguous` tells the caller the object is its own. */
    struct ftest *t = ftest_open("lost_response_rate=1&retries=2&retry_base_ms=1&seed=7");
    struct store_req r;
    assert_int_equal(tstore_put(&t->loop, t->s, "once", "x", 1, STORE_IF_NONE_MATCH, &r), -EEXIST);
    assert_true(r.ambiguous);
    assert_int_equal(r.attempts, 2);
    ftest_close(t);
}

/* When only the PUT's response is lost, the store's HEAD shows the object is ours (its ETag is the
 * MD5 of our bytes) and the create-only PUT succeeds. mem:// reports MD5 ETags like S3. */
static void test_lost_response_create_only_verified(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[256];
    assert_int_equal(store_open(&loop,
                                "faulty+mem://?put_lost_response_rate=1&retries=2&"
                                "retry_base_ms=1&seed=16",
                                NULL, &s, err, sizeof(err)),
                     0);
    struct store_req r;
    assert_int_equal(tstore_put(&loop, s, "mine", "payload", 7, STORE_IF_NONE_MATCH, &r), 0);
    assert_true(r.ambiguous);
    assert_int_equal(r.attempts, 2);
    assert_non_null(strstr(r.msg, "ETag verified"));
    assert_int_equal(r.size, 7);
    /* Someone else's object under the key: still -EEXIST. */
    assert_int_equal(tstore_put(&loop, s, "mine", "other bytes", 11, STORE_IF_NONE_MATCH, &r),
                     -EEXIST);
    assert_int_equal(tstore_close_loop(&loop, s), 0);
}

static void test_truncate_and_corrupt(void **state)
{
    (void)state;
    struct ftest *t = ftest_open("truncate_rate=1&seed=8");
    struct store_req r;
    uint8_t data[4096];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)i;
    }
    assert_int_equal(tstore_put(&t->loop, t->s, "k", data, sizeof(data), 0, &r), 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "k", 0, 0, &r), 0);
    assert_true(r.body_len < sizeof(data));
    assert_int_equal(r.size, sizeof(data));
    store_req_cleanup(&r);
    ftest_close(t);

    t = ftest_open("corrupt_rate=1&seed=9");
    assert_int_equal(tstore_put(&t->loop, t->s, "k", data, sizeof(data), 0, &r), 0);
    assert_int_equal(tstore_get(&t->loop, t->s, "k", 0, 0, &r), 0);
    assert_int_equal(r.body_len, sizeof(data));
    assert_memory_not_equal(r.body, data, sizeof(data));
    size_t diff = 0;
    for (size_t i = 0; i < sizeof(data); i++) {
        diff += r.body[i] != data[i];
    }
    assert_int_equal(diff, 1);
    store_req_cleanup(&r);
    ftest_close(t);
}

struct read_wait {
    bool done; /* callback ran */
};

static void read_cb(struct store_obj_read *r)
{
    ((struct read_wait *)r->data)->done = true;
}

/* The object reader catches truncated and corrupted chunk reads. */
static void test_object_reader_detects_faults(void **state)
{
    (void)state;
    static const char *const params[] = {"truncate_rate=1&seed=10", "corrupt_rate=1&seed=11"};
    for (int p = 0; p < 2; p++) {
        struct ftest *t = ftest_open(params[p]);
        uint8_t id[16] = {1};
        uint8_t topic[16] = {2};
        struct store_obj_builder *b = store_obj_builder_new(id, 1000, 1);
        uint8_t batch[2000];
        memset(batch, 'a', sizeof(batch));
        struct store_batch_info info = {.records = 10, .first_ts = 1, .last_ts = 2};
        assert_int_equal(store_obj_builder_add(b, topic, 0, batch, sizeof(batch), &info), 0);
        uint8_t *obj = NULL;
        size_t len = 0;
        struct store_footer f;
        assert_int_equal(store_obj_seal(b, &obj, &len, &f), 0);
        struct store_req r;
        assert_int_equal(tstore_put(&t->loop, t->plain, "obj", obj, len, 0, &r), 0);
        struct store_obj_read rd = {0};
        struct read_wait w = {0};
        rd.data = &w;
        assert_int_equal(store_obj_read_chunk(t->s, &rd, "obj", &f.chunks[0], 1 << 20, read_cb), 0);
        while (!w.done) {
            uv_run(&t->loop, UV_RUN_ONCE);
        }
        assert_int_equal(rd.err, -EBADMSG);
        assert_non_null(strstr(rd.msg, p == 0 ? "length" : "CRC32C"));
        store_obj_read_cleanup(&rd);
        store_footer_free(&f);
        free(obj);
        store_obj_builder_free(b);
        ftest_close(t);
    }
}

static void test_latency_and_deadline(void **state)
{
    (void)state;
    struct ftest *t = ftest_open("latency_ms=200&seed=12");
    struct store_req r = {0};
    struct tstore_wait w = {0};
    r.data = &w;
    r.timeout_ms = 20;
    assert_int_equal(store_put(t->s, &r, "k", "v", 1, 0, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), -ETIMEDOUT);
    assert_non_null(strstr(r.msg, "deadline of 20 ms"));
    /* Not applied: the latency sits before the inner store. */
    assert_int_equal(tstore_get(&t->loop, t->plain, "k", 0, 0, &r), -ENOENT);
    /* With room, the operation completes after the latency. */
    assert_int_equal(tstore_put(&t->loop, t->s, "k", "v", 1, 0, &r), 0);
    ftest_close(t);
}

static void sleep_loop(uv_loop_t *loop, uint64_t ms)
{
    uv_update_time(loop);
    uint64_t until = uv_now(loop) + ms;
    while (uv_now(loop) < until) {
        usleep(5000);
        uv_update_time(loop);
        uv_run(loop, UV_RUN_NOWAIT);
    }
}

static void test_outage(void **state)
{
    (void)state;
    struct ftest *t = ftest_open("outage=0-300&retries=0&seed=13");
    struct store_req r;
    assert_int_equal(tstore_put(&t->loop, t->s, "k", "v", 1, 0, &r), -EAGAIN);
    assert_non_null(strstr(r.msg, "outage"));
    sleep_loop(&t->loop, 350);
    assert_int_equal(tstore_put(&t->loop, t->s, "k", "v", 1, 0, &r), 0);
    ftest_close(t);
    /* With retries and a long enough deadline, an operation rides out the outage. */
    t = ftest_open("outage=0-300&retries=50&retry_base_ms=20&retry_cap_ms=50&seed=14");
    memset(&r, 0, sizeof(r));
    struct tstore_wait w = {0};
    r.data = &w;
    r.timeout_ms = 5000;
    assert_int_equal(store_put(t->s, &r, "k2", "v", 1, 0, tstore_cb), 0);
    assert_int_equal(tstore_wait(&t->loop, &r), 0);
    assert_true(r.attempts > 1);
    ftest_close(t);
    /* A deadline inside the outage ends with -ETIMEDOUT naming the last error. */
    t = ftest_open("outage=0-10000&retries=50&retry_base_ms=5&retry_cap_ms=10&seed=15");
    memset(&r, 0, sizeof(r));
    memset(&w, 0, sizeof(w));
    r.data = &w;
    r.timeout_ms = 100;
    assert_int_equal(store_get(t->s, &r, "k", 0, 0, tstore_cb), 0);
    int rc = tstore_wait(&t->loop, &r);
    assert_true(rc == -ETIMEDOUT || rc == -EAGAIN);
    assert_non_null(strstr(r.msg, "outage"));
    ftest_close(t);
}

static void test_bad_parameters(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[256];
    assert_int_equal(store_open(&loop, "faulty+mem://?error_rate=2", NULL, &s, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "error_rate"));
    assert_int_equal(store_open(&loop, "faulty+mem://?outage=5-1", NULL, &s, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(store_open(&loop, "faulty+mem://?error=bogus", NULL, &s, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(store_open(&loop, "faulty+mem://?nonsense=1", NULL, &s, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "nonsense"));
    assert_int_equal(store_open(&loop, "faulty+faulty+mem://", NULL, &s, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int run_test_faulty(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_rate_no_retry),
        cmocka_unit_test(test_error_rate_retried),
        cmocka_unit_test(test_error_class_not_retried),
        cmocka_unit_test(test_lost_response),
        cmocka_unit_test(test_lost_response_create_only),
        cmocka_unit_test(test_lost_response_create_only_verified),
        cmocka_unit_test(test_truncate_and_corrupt),
        cmocka_unit_test(test_object_reader_detects_faults),
        cmocka_unit_test(test_latency_and_deadline),
        cmocka_unit_test(test_outage),
        cmocka_unit_test(test_bad_parameters),
    };
    return cmocka_run_group_tests_name("faulty", tests, NULL, NULL);
}
