/*
 * Unit tests of the journal (metadata/src/journal.c) on a temporary directory: records survive
 * a reopen with an identical state, a torn tail is cut, a corrupted record in the middle stops
 * start-up with the file and byte position, snapshots truncate the journal, and a failed
 * fdatasync (test hook) is final and never advances the durable sequence.
 */
#include "test_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runnel/metadata/journal.h"
#include "runnel/metadata/state.h"

#define NOW 1700000000000LL

static void wait_durable(struct meta_journal *j, uint64_t seq)
{
    for (int i = 0; i < 5000 && meta_journal_durable_seq(j) < seq && !meta_journal_failed(j); i++) {
        usleep(1000);
    }
}

static void make_dir(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/runnel-test-journal-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static void rm_dir(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Applies and journals one topic plus `n` commits; returns the last sequence. */
static uint64_t drive(struct meta_state *s, struct meta_journal *j, const char *prefix, int n)
{
    struct meta_op_buf op = {0};
    uint64_t seq = 0;
    char name[32];
    snprintf(name, sizeof(name), "%s-topic", prefix);
    if (meta_state_topic_by_name(s, name, strlen(name)) == NULL) {
        meta_op_create_topic(&op, NOW, name, strlen(name), 2, NULL, 0);
        meta_state_create_topic(s, name, strlen(name), 2, NULL, 0, false, NULL);
        seq = meta_journal_append(j, &op);
    }
    struct kp_uuid id = meta_state_topic_by_name(s, name, strlen(name))->id;
    for (int i = 0; i < n; i++) {
        char key[64];
        static int counter;
        snprintf(key, sizeof(key), "%s-%d", prefix, counter++);
        struct meta_commit_range r = {-1, -1, -1, 3, NOW + i, 0, 10};
        struct meta_commit_part p = {.topic_id = id,
                                     .partition = i % 2,
                                     .chunk_off = 0,
                                     .chunk_len = 10,
                                     .n_ranges = 1,
                                     .ranges = &r};
        struct meta_commit c = {key, strlen(key), 10, NOW, 47, 1, &p};
        struct meta_part_result pr;
        struct meta_range_result rr;
        assert_int_equal(meta_state_commit(s, NOW, &c, &pr, &rr), 0);
        meta_op_commit(&op, NOW, &c);
        seq = meta_journal_append(j, &op);
        assert_true(seq > 0);
    }
    meta_op_buf_free(&op);
    return seq;
}

static void assert_same_state(const struct meta_state *a, const struct meta_state *b)
{
    uint8_t *da;
    uint8_t *db;
    size_t la;
    size_t lb;
    assert_int_equal(meta_state_serialize(a, &da, &la), 0);
    assert_int_equal(meta_state_serialize(b, &db, &lb), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(da);
    free(db);
}

static off_t file_size(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct stat st;
    if (stat(path, &st) != 0) {
        return -1;
    }
    return st.st_size;
}

static void test_reopen(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "a", 200);
    wait_durable(j, seq);
    assert_int_equal(meta_journal_durable_seq(j), seq);
    assert_true(meta_journal_syncs(j) >= 1);
    meta_journal_close(j);

    struct meta_state r;
    meta_state_init(&r, NULL);
    assert_int_equal(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(meta_journal_last_seq(j), seq);
    assert_same_state(&s, &r);
    /* Appending continues the sequence. */
    uint64_t seq2 = drive(&r, j, "a", 5);
    assert_int_equal(seq2, seq + 5);
    meta_journal_close(j);
    meta_state_free(&s);
    meta_state_free(&r);
    rm_dir(dir);
}

static void test_torn_tail(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char path[128];
    make_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/journal", dir);
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "a", 10);
    wait_durable(j, seq);
    meta_journal_close(j);
    off_t full = file_size(dir, "journal");

    /* Every cut inside the last record loses exactly that record, and the file is cut. */
    uint8_t *orig = malloc((size_t)full);
    int fd = open(path, O_RDONLY);
    assert_int_equal(read(fd, orig, (size_t)full), (ssize_t)full);
    close(fd);
    struct meta_state nine;
    meta_state_init(&nine, NULL);
    off_t cut_to = -1;
    for (off_t cut = 1; cut < 60; cut += 3) {
        fd = open(path, O_WRONLY | O_TRUNC);
        assert_int_equal(write(fd, orig, (size_t)(full - cut)), (ssize_t)(full - cut));
        close(fd);
        struct meta_state r;
        meta_state_init(&r, NULL);
        assert_int_equal(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)), 0);
        assert_int_equal(meta_journal_last_seq(j), seq - 1);
        assert_int_equal(r.n_extents, 9);
        meta_journal_close(j);
        off_t after = file_size(dir, "journal");
        assert_true(after < full - cut);
        assert_true(cut_to < 0 || after == cut_to);
        cut_to = after;
        meta_state_free(&r);
    }
    free(orig);
    full = cut_to;
    /* Zeros after the last good record (an extended but unwritten tail) are cut too. */
    fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    uint8_t zeros[100] = {0};
    assert_int_equal(write(fd, zeros, sizeof(zeros)), (ssize_t)sizeof(zeros));
    close(fd);
    assert_int_equal(meta_journal_open(&j, dir, &nine, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(meta_journal_last_seq(j), seq - 1);
    meta_journal_close(j);
    assert_int_equal(file_size(dir, "journal"), full);
    meta_state_free(&nine);
    meta_state_free(&s);
    rm_dir(dir);
}

static void test_corruption(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char path[128];
    make_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/journal", dir);
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "a", 10);
    wait_durable(j, seq);
    meta_journal_close(j);
    off_t full = file_size(dir, "journal");
    /* Flip one byte inside the second record's body. */
    uint8_t rec0[8];
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, rec0, 8, 0), 8);
    off_t second = 8 + ((off_t)rec0[0] << 24 | rec0[1] << 16 | rec0[2] << 8 | rec0[3]);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, second + 20), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, second + 20), 1);
    close(fd);
    struct meta_state r;
    meta_state_init(&r, NULL);
    err[0] = '\0';
    assert_true(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)) < 0);
    assert_null(j);
    char expect[64];
    snprintf(expect, sizeof(expect), "byte %lld", (long long)second);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, expect));
    assert_non_null(strstr(err, "corrupt"));
    /* Start-up did not "repair" anything. */
    assert_int_equal(file_size(dir, "journal"), full);
    meta_state_free(&r);
    meta_state_free(&s);
    rm_dir(dir);
}

static void test_snapshot(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "a", 100);
    assert_int_equal(meta_journal_snapshot(j, &s), 0);
    seq = drive(&s, j, "b", 7);
    wait_durable(j, seq);
    meta_journal_close(j);
    assert_true(file_size(dir, "snapshot") > 0);
    off_t jsize = file_size(dir, "journal");
    assert_true(jsize > 0);

    struct meta_state r;
    meta_state_init(&r, NULL);
    assert_int_equal(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(meta_journal_last_seq(j), seq);
    assert_same_state(&s, &r);
    /* A snapshot with nothing after it leaves an empty journal. */
    assert_int_equal(meta_journal_snapshot(j, &r), 0);
    meta_journal_close(j);
    assert_int_equal(file_size(dir, "journal"), 0);
    struct meta_state r2;
    meta_state_init(&r2, NULL);
    assert_int_equal(meta_journal_open(&j, dir, &r2, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(meta_journal_last_seq(j), seq);
    assert_same_state(&s, &r2);
    meta_journal_close(j);
    /* A corrupted snapshot stops start-up with a clear error. */
    char path[128];
    snprintf(path, sizeof(path), "%s/snapshot", dir);
    int fd = open(path, O_RDWR);
    uint8_t b = 0xff;
    assert_int_equal(pwrite(fd, &b, 1, 40), 1);
    close(fd);
    struct meta_state r3;
    meta_state_init(&r3, NULL);
    assert_true(meta_journal_open(&j, dir, &r3, NULL, NULL, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "snapshot"));
    meta_state_free(&r3);
    meta_state_free(&r2);
    meta_state_free(&r);
    meta_state_free(&s);
    rm_dir(dir);
}

static void test_snapshot_fork(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "f", 300);
    off_t before = -1;
    pid_t pid = meta_journal_snapshot_fork(j, &s);
    assert_true(pid > 0);
    /* Records keep flowing while the child writes. */
    seq = drive(&s, j, "f", 20);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    wait_durable(j, seq);
    before = file_size(dir, "journal");
    meta_journal_snapshot_forked_done(j, pid, true);
    seq = drive(&s, j, "f", 5);
    wait_durable(j, seq);
    /* The install happens on the writer thread; wait for the journal to shrink. */
    for (int i = 0; i < 5000 && file_size(dir, "journal") >= before; i++) {
        usleep(1000);
    }
    meta_journal_close(j);
    assert_true(file_size(dir, "journal") < before);
    assert_true(file_size(dir, "snapshot") > 0);
    struct meta_state r;
    meta_state_init(&r, NULL);
    assert_int_equal(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(meta_journal_last_seq(j), seq);
    assert_same_state(&s, &r);
    meta_journal_close(j);
    meta_state_free(&r);
    meta_state_free(&s);
    rm_dir(dir);
}

static void test_fsync_failure(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char hook[128];
    make_dir(dir, sizeof(dir));
    snprintf(hook, sizeof(hook), "%s/fail-fsync", dir);
    setenv("RUNNEL_META_FAIL_FSYNC_FILE", hook, 1);
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t ok = drive(&s, j, "a", 3);
    wait_durable(j, ok);
    assert_int_equal(meta_journal_durable_seq(j), ok);
    FILE *f = fopen(hook, "w");
    assert_non_null(f);
    fclose(f);
    uint64_t bad = ok + 1;
    struct meta_op_buf op = {0};
    meta_op_heartbeat(&op, NOW, 1, 1);
    assert_int_equal(meta_journal_append(j, &op), bad);
    for (int i = 0; i < 5000 && meta_journal_failed(j) == 0; i++) {
        usleep(1000);
    }
    assert_int_equal(meta_journal_failed(j), -5 /* -EIO */);
    assert_int_equal(meta_journal_durable_seq(j), ok);
    /* Final: even with the fault gone nothing is appended or acknowledged. */
    unlink(hook);
    assert_int_equal(meta_journal_append(j, &op), 0);
    usleep(20000);
    assert_int_equal(meta_journal_durable_seq(j), ok);
    meta_journal_close(j);
    meta_op_buf_free(&op);
    unsetenv("RUNNEL_META_FAIL_FSYNC_FILE");
    meta_state_free(&s);
    rm_dir(dir);
}

int run_test_journal(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reopen),        cmocka_unit_test(test_torn_tail),
        cmocka_unit_test(test_corruption),    cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_snapshot_fork), cmocka_unit_test(test_fsync_failure),
    };
    return cmocka_run_group_tests_name("journal", tests, NULL, NULL);
}
