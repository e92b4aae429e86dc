/*
 * Unit tests of the journal (metadata/src/journal.c) on a temporary directory: records survive
 * a reopen with an identical state, a torn tail is cut, a corrupted record in the middle stops
 * start-up with the file and byte position, snapshots rotate the journal and delete the files
 * they cover, every state a crash can leave between rotation and the deletes recovers to the same
 * state (built here by stopping the sequence at that step and arranging the files as the crash
 * would), torn or corrupted older files and missing files stop start-up, the layout before
 * rotation is taken over, and a failed fdatasync (test hook), also one while switching files, is
 * final and never advances the durable sequence.
 */
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runnel/metadata/journal.h"
#include "runnel/metadata/state.h"
#include "runnel/protocol/crc32c.h"

#define NOW 1700000000000LL

static void wait_durable(struct meta_journal *j, uint64_t seq)
{
    for (int i = 0; i < 5000 && meta_journal_durable_seq(j) < seq && !meta_journal_failed(j); i++) {
        usleep(1000);
    }
}

/* Waits (at most 20 s) for a background snapshot's thread to end, without reaping it. */
static void wait_snapshot_thread(struct meta_journal *j)
{
    for (int i = 0; i < 20000 && meta_journal_snapshot_running(j); i++) {
        usleep(1000);
    }
}

/* Waits for a background snapshot's thread to end, then reaps it: what
 * meta_journal_snapshot_poll said, with the reason of a failure in `why`. */
static int wait_snapshot(struct meta_journal *j, char *why, size_t why_len)
{
    wait_snapshot_thread(j);
    return meta_journal_snapshot_poll(j, why, why_len);
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

/* "journal.<gen>" / "snapshot.<gen>" as the journal names them. */
static const char *gname(const char *kind, unsigned gen)
{
    static char names[4][64];
    static int next;
    char *n = names[next++ % 4];
    snprintf(n, 64, "%s.%020u", kind, gen);
    return n;
}

/* Writes the directory's file names, sorted, separated by spaces, into out. */
static void list_dir(const char *dir, char *out, size_t len)
{
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    assert_true(n >= 0);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (ents[i]->d_name[0] != '.') {
            size_t used = strlen(out);
            snprintf(out + used, len - used, "%s%s", used ? " " : "", ents[i]->d_name);
        }
        free(ents[i]);
    }
    free(ents);
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
    snprintf(path, sizeof(path), "%s/%s", dir, gname("journal", 1));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "a", 10);
    wait_durable(j, seq);
    meta_journal_close(j);
    off_t full = file_size(dir, gname("journal", 1));

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
        off_t after = file_size(dir, gname("journal", 1));
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
    assert_int_equal(file_size(dir, gname("journal", 1)), full);
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
    snprintf(path, sizeof(path), "%s/%s", dir, gname("journal", 1));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "a", 10);
    wait_durable(j, seq);
    meta_journal_close(j);
    off_t full = file_size(dir, gname("journal", 1));
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
    assert_int_equal(file_size(dir, gname("journal", 1)), full);
    meta_state_free(&r);
    meta_state_free(&s);
    rm_dir(dir);
}

static void test_snapshot(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char files[512];
    char want[512];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "a", 100);
    assert_int_equal(meta_journal_snapshot(j, &s), 0);
    assert_int_equal(meta_journal_generation(j), 2);
    seq = drive(&s, j, "b", 7);
    wait_durable(j, seq);
    meta_journal_close(j);
    /* The snapshot covers journal.1, which is gone; journal.2 holds the 7 later records. */
    list_dir(dir, files, sizeof(files));
    snprintf(want, sizeof(want), "%s %s", gname("journal", 2), gname("snapshot", 2));
    assert_string_equal(files, want);
    assert_true(file_size(dir, gname("journal", 2)) > 0);

    struct meta_state r;
    meta_state_init(&r, NULL);
    assert_int_equal(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(meta_journal_last_seq(j), seq);
    assert_same_state(&s, &r);
    /* A snapshot with nothing after it leaves an empty journal file. */
    assert_int_equal(meta_journal_snapshot(j, &r), 0);
    meta_journal_close(j);
    list_dir(dir, files, sizeof(files));
    snprintf(want, sizeof(want), "%s %s", gname("journal", 3), gname("snapshot", 3));
    assert_string_equal(files, want);
    assert_int_equal(file_size(dir, gname("journal", 3)), 0);
    struct meta_state r2;
    meta_state_init(&r2, NULL);
    assert_int_equal(meta_journal_open(&j, dir, &r2, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(meta_journal_last_seq(j), seq);
    assert_same_state(&s, &r2);
    meta_journal_close(j);
    /* A corrupted snapshot stops start-up with a clear error. */
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, gname("snapshot", 3));
    int fd = open(path, O_RDWR);
    uint8_t b = 0xff;
    assert_int_equal(pwrite(fd, &b, 1, 40), 1);
    close(fd);
    struct meta_state r3;
    meta_state_init(&r3, NULL);
    assert_true(meta_journal_open(&j, dir, &r3, NULL, NULL, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "corrupted"));
    meta_state_free(&r3);
    meta_state_free(&r2);
    meta_state_free(&r);
    meta_state_free(&s);
    rm_dir(dir);
}

/*
 * Obsolete files larger than the deleter's shrink step (8 MiB) are shrunk in steps and then
 * removed: after the install only the new generation is left, and it reopens to the same state.
 */
static void test_large_obsolete_files(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char files[512];
    char want[512];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "big", 150000);
    wait_durable(j, seq);
    assert_true(file_size(dir, gname("journal", 1)) > (off_t)(16 << 20));
    assert_int_equal(meta_journal_snapshot(j, &s), 0);
    seq = drive(&s, j, "after", 5);
    wait_durable(j, seq);
    for (int i = 0; i < 30000 && file_size(dir, gname("journal", 1)) >= 0; i++) {
        usleep(1000);
    }
    assert_int_equal(file_size(dir, gname("journal", 1)), -1);
    meta_journal_close(j);
    list_dir(dir, files, sizeof(files));
    snprintf(want, sizeof(want), "%s %s", gname("journal", 2), gname("snapshot", 2));
    assert_string_equal(files, want);
    struct meta_state r;
    meta_state_init(&r, NULL);
    assert_int_equal(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(meta_journal_last_seq(j), seq);
    assert_same_state(&s, &r);
    /* A second snapshot closed at once: the deleter is told to stop shrinking and unlinks. */
    assert_int_equal(meta_journal_snapshot(j, &r), 0);
    meta_journal_close(j);
    list_dir(dir, files, sizeof(files));
    snprintf(want, sizeof(want), "%s %s", gname("journal", 3), gname("snapshot", 3));
    assert_string_equal(files, want);
    meta_state_free(&r);
    meta_state_free(&s);
    rm_dir(dir);
}

/* A background snapshot rebuilds the state from the files while records keep coming, and is
 * installed with nothing copied. */
static void test_snapshot_background(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char files[512];
    char want[512];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t seq = drive(&s, j, "f", 300);
    assert_int_equal(meta_journal_snapshot_poll(j, err, sizeof(err)), 0); /* none yet */
    assert_int_equal(meta_journal_snapshot_start(j), 0);
    /* One at a time. */
    assert_int_equal(meta_journal_snapshot_start(j), -EBUSY);
    assert_int_equal(meta_journal_snapshot(j, &s), -EBUSY);
    wait_durable(j, seq);
    off_t old_size = file_size(dir, gname("journal", 1));
    /* Records keep flowing while the snapshot is built; they go to journal.2, and the snapshot
     * reflects exactly the records before the switch (checked by the reopen below: replay
     * continues from its sequence). */
    seq = drive(&s, j, "f", 20);
    wait_durable(j, seq);
    off_t new_size = file_size(dir, gname("journal", 2));
    assert_true(old_size > 0 && new_size > 0);
    assert_int_equal(wait_snapshot(j, err, sizeof(err)), 1);
    assert_false(meta_journal_snapshot_running(j));
    assert_int_equal(meta_journal_snapshot_poll(j, err, sizeof(err)), 0); /* reaped */
    seq = drive(&s, j, "f", 5);
    wait_durable(j, seq);
    /* The install happens on the writer thread; wait for journal.1 to go. */
    for (int i = 0; i < 5000 && file_size(dir, gname("journal", 1)) >= 0; i++) {
        usleep(1000);
    }
    meta_journal_close(j);
    list_dir(dir, files, sizeof(files));
    snprintf(want, sizeof(want), "%s %s", gname("journal", 2), gname("snapshot", 2));
    assert_string_equal(files, want);
    /* Nothing was copied: journal.2 only grew by the later records. */
    assert_true(file_size(dir, gname("journal", 2)) > new_size);
    assert_true(file_size(dir, gname("journal", 2)) < new_size + old_size / 10);
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

/* Reopens dir into a fresh state, checks it equals `s` at sequence `seq`, appends one more
 * record (continuing at seq + 1), and checks the files left are exactly `want`. */
static void reopen_check(const char *dir, const struct meta_state *s, uint64_t seq,
                         const char *want)
{
    char err[256];
    char files[512];
    struct meta_state r;
    meta_state_init(&r, NULL);
    struct meta_journal *j = NULL;
    int rc = meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err));
    if (rc != 0) {
        fail_msg("reopen: %s", err);
    }
    assert_int_equal(meta_journal_last_seq(j), seq);
    assert_same_state(s, &r);
    list_dir(dir, files, sizeof(files));
    assert_string_equal(files, want);
    struct meta_op_buf op = {0};
    meta_op_heartbeat(&op, NOW, 1, 1);
    assert_int_equal(meta_journal_append(j, &op), seq + 1);
    wait_durable(j, seq + 1);
    meta_journal_close(j);
    meta_op_buf_free(&op);
    meta_state_free(&r);
}

static void copy_file(const char *dir, const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "cp '%s/%s' '%s/%s'", dir, from, dir, to);
    assert_int_equal(system(cmd), 0);
}

static void remove_file(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_int_equal(unlink(path), 0);
}

/*
 * The states a crash leaves between a snapshot's rotation and the end of its deletes. Each is
 * built from a real run: a seed snapshot (generation 2), records, a background snapshot
 * (generation 3, rotation done, its thread finished but the install not asked for), more
 * records, then the journal is closed, which is what the disk holds after a kill at that moment.
 * The files are then arranged as each later step would have left them, and every arrangement must
 * reopen to the same state with the same next sequence, leaving exactly the newest snapshot's
 * files.
 */
static void test_crash_states(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char files[512];
    char want[512];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    drive(&s, j, "c", 50);
    assert_int_equal(meta_journal_snapshot(j, &s), 0);
    wait_durable(j, drive(&s, j, "c", 50)); /* the writer took the first switch */
    /* A snapshot starts only on top of an installed one: busy until snapshot.2 is in place. */
    int rc = -EBUSY;
    for (int i = 0; i < 5000 && (rc = meta_journal_snapshot_start(j)) == -EBUSY; i++) {
        usleep(1000);
    }
    assert_int_equal(rc, 0);
    assert_true(file_size(dir, gname("snapshot", 2)) > 0);
    uint64_t seq = drive(&s, j, "c", 30);
    wait_snapshot_thread(j);
    wait_durable(j, seq);
    meta_journal_close(j);
    /* Killed after the snapshot thread finished, before the rename. */
    list_dir(dir, files, sizeof(files));
    snprintf(want, sizeof(want), "%s %s %s %s.tmp", gname("journal", 2), gname("journal", 3),
             gname("snapshot", 2), gname("snapshot", 3));
    assert_string_equal(files, want);
    char save[128];
    snprintf(save, sizeof(save), "%s.tmp", gname("snapshot", 3));
    copy_file(dir, save, "keep-complete");
    copy_file(dir, gname("journal", 2), "keep-j2");
    copy_file(dir, gname("snapshot", 2), "keep-s2");
    copy_file(dir, gname("journal", 3), "keep-j3");

    /* 1. before the rename: the temporary is deleted, both journal files replayed. Every
     * reopen appends one record, so the expected sequence and state move on by one. */
    snprintf(want, sizeof(want), "%s %s keep-complete keep-j2 keep-j3 keep-s2 %s",
             gname("journal", 2), gname("journal", 3), gname("snapshot", 2));
    reopen_check(dir, &s, seq, want);
    /* The reopen appended a heartbeat (a no-op for the state without that agent). */
    remove_file(dir, gname("journal", 3));
    copy_file(dir, "keep-j3", gname("journal", 3));

    /* 2. a half-written temporary (killed while the snapshot thread wrote it). */
    copy_file(dir, "keep-complete", save);
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, save);
    assert_int_equal(truncate(path, file_size(dir, save) / 2), 0);
    reopen_check(dir, &s, seq, want);
    remove_file(dir, gname("journal", 3));
    copy_file(dir, "keep-j3", gname("journal", 3));

    /* 3. renamed, nothing deleted: snapshot.3 wins, the generation-2 files are deleted. */
    copy_file(dir, "keep-complete", gname("snapshot", 3));
    snprintf(want, sizeof(want), "%s keep-complete keep-j2 keep-j3 keep-s2 %s", gname("journal", 3),
             gname("snapshot", 3));
    reopen_check(dir, &s, seq, want);
    remove_file(dir, gname("journal", 3));
    copy_file(dir, "keep-j3", gname("journal", 3));

    /* 4. killed between the deletes: one of the covered files is gone, the other is not. */
    copy_file(dir, "keep-j2", gname("journal", 2));
    reopen_check(dir, &s, seq, want);
    remove_file(dir, gname("journal", 3));
    copy_file(dir, "keep-j3", gname("journal", 3));
    copy_file(dir, "keep-s2", gname("snapshot", 2));
    reopen_check(dir, &s, seq, want);

    /* 5. a leftover temporary next to a complete install is deleted too. */
    copy_file(dir, "keep-complete", "snapshot.00000000000000000004.tmp");
    remove_file(dir, gname("journal", 3));
    copy_file(dir, "keep-j3", gname("journal", 3));
    reopen_check(dir, &s, seq, want);
    meta_state_free(&s);
    rm_dir(dir);
}

/* Only the newest journal file may end torn; a damaged or missing older file stops start-up. */
static void test_rotation_errors(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char path[256];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    /* A failed snapshot: the rotation stays, no snapshot; the next records go to journal.2.
     * It fails to create its temporary (a directory of that name is in the way). */
    wait_durable(j, drive(&s, j, "e", 20));
    char tmp[128];
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, gname("snapshot", 2));
    assert_int_equal(mkdir(tmp, 0755), 0);
    assert_int_equal(meta_journal_snapshot_start(j), 0);
    char why[512];
    assert_int_equal(wait_snapshot(j, why, sizeof(why)), -EISDIR);
    assert_non_null(strstr(why, tmp));
    assert_int_equal(rmdir(tmp), 0);
    assert_int_equal(meta_journal_failed(j), 0);
    assert_int_equal(file_size(dir, gname("snapshot", 2)), -1);
    uint64_t seq = drive(&s, j, "e", 20);
    wait_durable(j, seq);
    meta_journal_close(j);
    char want[512];
    snprintf(want, sizeof(want), "%s %s", gname("journal", 1), gname("journal", 2));
    reopen_check(dir, &s, seq, want);
    seq++; /* reopen_check appended a heartbeat */
    copy_file(dir, gname("journal", 1), "keep-j1");

    /* A torn end of journal.1 with journal.2 after it is not a crash artefact. */
    snprintf(path, sizeof(path), "%s/%s", dir, gname("journal", 1));
    assert_int_equal(truncate(path, file_size(dir, gname("journal", 1)) - 5), 0);
    struct meta_state r;
    meta_state_init(&r, NULL);
    assert_true(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "not the newest"));
    meta_state_free(&r);

    /* A corrupted record in the middle of journal.1. */
    remove_file(dir, gname("journal", 1));
    copy_file(dir, "keep-j1", gname("journal", 1));
    int fd = open(path, O_RDWR);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, 20), 1); /* inside the first record's body */
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, 20), 1);
    close(fd);
    meta_state_init(&r, NULL);
    assert_true(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "byte 0: corrupted journal record"));
    meta_state_free(&r);

    /* journal.1 missing: nothing covers its records. */
    remove_file(dir, gname("journal", 1));
    meta_state_init(&r, NULL);
    assert_true(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, gname("journal", 1)));
    assert_non_null(strstr(err, "missing"));
    meta_state_free(&r);
    /* Nothing was deleted or repaired by the failed starts. */
    assert_true(file_size(dir, gname("journal", 2)) > 0);
    assert_true(file_size(dir, "keep-j1") > 0);
    meta_state_free(&s);
    rm_dir(dir);
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    }
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static void write_parts(const char *path, const uint8_t *a, size_t alen, const uint8_t *b,
                        size_t blen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, a, alen), (ssize_t)alen);
    assert_int_equal(write(fd, b, blen), (ssize_t)blen);
    close(fd);
}

/* Opens the directory into a fresh state; on success checks it equals `s` at `seq`. */
static int open_check(const char *dir, const struct meta_state *s, uint64_t seq, char *err,
                      size_t err_len)
{
    struct meta_state r;
    meta_state_init(&r, NULL);
    struct meta_journal *j = NULL;
    int rc = meta_journal_open(&j, dir, &r, NULL, NULL, err, err_len);
    if (rc == 0) {
        assert_int_equal(meta_journal_last_seq(j), seq);
        assert_same_state(s, &r);
        meta_journal_close(j);
    }
    meta_state_free(&r);
    return rc;
}

/*
 * Snapshots are written zstd-compressed ("RNLSNAP3"); the uncompressed "RNLSNAP2" files of
 * earlier versions still load; a damaged header field or a body that is not what the header
 * says stops start-up with the file named.
 */
static void test_snapshot_formats(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char path[256];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    drive(&s, j, "f", 300);
    assert_int_equal(meta_journal_snapshot(j, &s), 0);
    uint64_t seq = meta_journal_last_seq(j);
    wait_durable(j, seq);
    meta_journal_close(j);
    uint8_t *plain;
    size_t plain_len;
    assert_int_equal(meta_state_serialize(&s, &plain, &plain_len), 0);

    snprintf(path, sizeof(path), "%s/%s", dir, gname("snapshot", 2));
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t v3[1 << 20];
    size_t v3_len = fread(v3, 1, sizeof(v3), f);
    fclose(f);
    assert_true(v3_len > 40 && v3_len < sizeof(v3));
    assert_memory_equal(v3, "RNLSNAP3", 8);
    assert_int_equal(get_be(v3 + 8, 8), seq);
    assert_int_equal(get_be(v3 + 16, 8), v3_len - 40);
    assert_int_equal(get_be(v3 + 24, 8), plain_len);
    assert_true(v3_len - 40 < plain_len / 2); /* 300 similar commits compress well */
    assert_int_equal(open_check(dir, &s, seq, err, sizeof(err)), 0);

    /* The same state as an uncompressed "RNLSNAP2" file. */
    uint8_t h2[32] = {0};
    memcpy(h2, "RNLSNAP2", 8);
    put_be(h2 + 8, seq, 8);
    put_be(h2 + 16, plain_len, 8);
    put_be(h2 + 24, kp_crc32c(0, plain, plain_len), 4);
    write_parts(path, h2, sizeof(h2), plain, plain_len);
    if (open_check(dir, &s, seq, err, sizeof(err)) != 0) {
        fail_msg("RNLSNAP2: %s", err);
    }

    /* A damaged raw length in the header (the body's CRC alone would not see it). */
    uint8_t h3[40];
    memcpy(h3, v3, 40);
    h3[31] ^= 1;
    write_parts(path, h3, 40, v3 + 40, v3_len - 40);
    assert_true(open_check(dir, &s, seq, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "header CRC mismatch (corrupted)"));

    /* Both CRCs right, but the body is the plain state, not a zstd frame. */
    memcpy(h3, v3, 40);
    put_be(h3 + 16, plain_len, 8);
    put_be(h3 + 32, kp_crc32c(0, plain, plain_len), 4);
    put_be(h3 + 36, kp_crc32c(0, h3 + 8, 28), 4);
    write_parts(path, h3, 40, plain, plain_len);
    assert_true(open_check(dir, &s, seq, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "does not decompress"));

    /* The written file again: it loads. */
    write_parts(path, v3, 40, v3 + 40, v3_len - 40);
    assert_int_equal(open_check(dir, &s, seq, err, sizeof(err)), 0);
    free(plain);
    meta_state_free(&s);
    rm_dir(dir);
}

/* A directory of the layout before rotation (journal, snapshot with a u32 length) is taken
 * over as generation 0, including records the snapshot already covers. */
static void test_legacy_layout(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char path[256];
    make_dir(dir, sizeof(dir));
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t covered = drive(&s, j, "l", 10);
    /* The old snapshot header: magic, u64 seq, u32 len, u32 crc32c. */
    uint8_t *data;
    size_t len;
    assert_int_equal(meta_state_serialize(&s, &data, &len), 0);
    uint64_t seq = drive(&s, j, "l", 10);
    wait_durable(j, seq);
    meta_journal_close(j);
    uint8_t head[24];
    memcpy(head, "RNLSNAPF", 8);
    for (int i = 0; i < 8; i++) {
        head[8 + i] = (uint8_t)(covered >> (56 - 8 * i));
    }
    uint32_t crc = kp_crc32c(0, data, len);
    for (int i = 0; i < 4; i++) {
        head[16 + i] = (uint8_t)((uint32_t)len >> (24 - 8 * i));
        head[20 + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
    snprintf(path, sizeof(path), "%s/snapshot", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_int_equal(write(fd, head, sizeof(head)), (ssize_t)sizeof(head));
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    free(data);
    char from[256];
    snprintf(from, sizeof(from), "%s/%s", dir, gname("journal", 1));
    snprintf(path, sizeof(path), "%s/journal", dir);
    assert_int_equal(rename(from, path), 0);
    char want[512];
    snprintf(want, sizeof(want), "%s %s", gname("journal", 0), gname("snapshot", 0));
    reopen_check(dir, &s, seq, want);
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

/* A failed fdatasync while switching files is final like any other: the switch does not
 * happen, the finished snapshot is never installed, and a restart recovers the acknowledged
 * records from the old file. */
static void test_rotation_fsync_failure(void **state)
{
    (void)state;
    char dir[64];
    char err[256];
    char hook[128];
    char files[512];
    make_dir(dir, sizeof(dir));
    snprintf(hook, sizeof(hook), "%s/fail-fsync", dir);
    setenv("RUNNEL_META_FAIL_FSYNC_FILE", hook, 1);
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_journal *j = NULL;
    assert_int_equal(meta_journal_open(&j, dir, &s, NULL, NULL, err, sizeof(err)), 0);
    uint64_t ok = drive(&s, j, "r", 20);
    wait_durable(j, ok);
    assert_int_equal(meta_journal_durable_seq(j), ok);
    FILE *f = fopen(hook, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(meta_journal_snapshot_start(j), 0);
    struct meta_op_buf op = {0};
    meta_op_heartbeat(&op, NOW, 1, 1);
    /* The writer may fail the switch before or after this append arrives: taken (and never
     * acknowledged) or refused (0), never anything else. */
    uint64_t seq = meta_journal_append(j, &op);
    assert_true(seq == ok + 1 || seq == 0);
    for (int i = 0; i < 5000 && meta_journal_failed(j) == 0; i++) {
        usleep(1000);
    }
    assert_int_equal(meta_journal_failed(j), -5 /* -EIO */);
    char why[512];
    assert_true(wait_snapshot(j, why, sizeof(why)) < 0); /* it never saw its records durable */
    usleep(50000);
    assert_int_equal(meta_journal_durable_seq(j), ok);
    meta_journal_close(j);
    meta_op_buf_free(&op);
    assert_int_equal(file_size(dir, gname("snapshot", 2)), -1); /* never installed */
    assert_int_equal(file_size(dir, gname("journal", 2)), -1);  /* never created */
    unlink(hook);
    unsetenv("RUNNEL_META_FAIL_FSYNC_FILE");
    struct meta_state r;
    meta_state_init(&r, NULL);
    assert_int_equal(meta_journal_open(&j, dir, &r, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(meta_journal_last_seq(j), ok);
    assert_same_state(&s, &r);
    meta_journal_close(j);
    list_dir(dir, files, sizeof(files));
    assert_string_equal(files, gname("journal", 1));
    meta_state_free(&r);
    meta_state_free(&s);
    rm_dir(dir);
}

int run_test_journal(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reopen),
        cmocka_unit_test(test_torn_tail),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_large_obsolete_files),
        cmocka_unit_test(test_snapshot_background),
        cmocka_unit_test(test_crash_states),
        cmocka_unit_test(test_rotation_errors),
        cmocka_unit_test(test_legacy_layout),
        cmocka_unit_test(test_snapshot_formats),
        cmocka_unit_test(test_rotation_fsync_failure),
        cmocka_unit_test(test_fsync_failure),
    };
    return cmocka_run_group_tests_name("journal", tests, NULL, NULL);
}
