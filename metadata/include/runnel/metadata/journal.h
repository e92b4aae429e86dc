/*
 * Persistence of the metadata state: an append-only journal of the state machine's operations
 * plus snapshots that let the journal be truncated.
 *
 * Files in the data directory:
 *   snapshot   "RNLSNAPF" | u64 last_seq | u32 len | u32 crc32c | meta_state_serialize() bytes
 *   journal    records: u32 body_len | u32 crc32c(body) | body
 *              body = u64 seq | u8 op | i64 now_ms | op payload (big-endian, see journal.c)
 *
 * Start-up (meta_journal_open) loads the snapshot, replays the journal records after it through
 * the same state functions the server uses, and cuts a torn tail (a last record that is short or
 * fails its CRC with nothing but zeros after it). A bad record followed by more data is
 * corruption: start-up stops with an error naming the file and byte position.
 *
 * Writing: operations are encoded on the event-loop thread (meta_journal_append returns the
 * record's sequence number) and written by a dedicated writer thread that issues one fdatasync
 * for everything appended since its last one (group commit). meta_journal_durable_seq() says how
 * far the disk has confirmed; the caller replies to a request only once its sequence is durable.
 * A failed write or fdatasync is final: the journal stops writing, durable_seq never moves again,
 * and meta_journal_failed() returns the error, so nothing later can be acknowledged by accident.
 *
 * Test hook: when the environment variable RUNNEL_META_FAIL_FSYNC_FILE names a path and that
 * file exists at the moment of an fdatasync, the sync is treated as failed with EIO. libfiu's
 * posix preload (fiu-run / fiu-ctrl, failing posix/io/sync/fdatasync) works as well.
 */
#ifndef RUNNEL_METADATA_JOURNAL_H
#define RUNNEL_METADATA_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "runnel/metadata/state.h"

enum meta_op {
    META_OP_CREATE_TOPIC = 1,
    META_OP_DELETE_TOPIC = 2,
    META_OP_CREATE_PARTITIONS = 3,
    META_OP_ALTER_CONFIGS = 4,
    META_OP_COMMIT = 5,
    META_OP_INIT_PRODUCER = 6,
    META_OP_REGISTER_AGENT = 7,
    META_OP_HEARTBEAT = 8,
    META_OP_ACQUIRE_LEASE = 9,
    META_OP_RELEASE_LEASE = 10,
    META_OP_GROUP = 64, /* consumer groups: a sub-op byte follows (groups.c) */
};

/* An encoded operation: the op payload of a journal record (without seq framing). */
struct meta_op_buf {
    uint8_t *p; /* malloc'd bytes */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
};

/* Encoders: each appends one complete op (op byte, now_ms, payload) to `b` (reset first). */
void meta_op_create_topic(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                          int32_t partitions, const struct meta_config_kv *cfg, size_t n_cfg);
void meta_op_delete_topic(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                          const struct kp_uuid *id);
void meta_op_create_partitions(struct meta_op_buf *b, int64_t now_ms, const char *name,
                               size_t name_len, int32_t count);
void meta_op_alter_configs(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                           const struct meta_config_kv *cfg, size_t n_cfg);
void meta_op_commit(struct meta_op_buf *b, int64_t now_ms, const struct meta_commit *c);
void meta_op_init_producer(struct meta_op_buf *b, int64_t now_ms, const char *txn_id,
                           size_t txn_len, int64_t producer_id, int16_t epoch);
void meta_op_register_agent(struct meta_op_buf *b, int64_t now_ms, int32_t id, const char *host,
                            size_t host_len, int32_t port, const char *zone, size_t zone_len,
                            int32_t session_timeout_ms);
void meta_op_heartbeat(struct meta_op_buf *b, int64_t now_ms, int32_t id, int64_t epoch);
void meta_op_acquire_lease(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                           int32_t holder, int32_t duration_ms);
void meta_op_release_lease(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                           int32_t holder, int64_t epoch);
void meta_op_buf_free(struct meta_op_buf *b);

/*
 * Decodes one encoded op and applies it to `s` through the same meta_state_* function the
 * encoder's caller used. Returns 0, or -EINVAL with *why set when the bytes are not a valid op.
 */
int meta_op_apply(struct meta_state *s, const uint8_t *op, size_t len, const char **why);

struct meta_journal;

/* Called on the writer thread after each group commit (success or failure). Must be cheap and
 * thread-safe (the server uses uv_async_send). */
typedef void (*meta_journal_notify_fn)(void *arg);

/*
 * Opens (creating if needed) the data directory `dir`, loads the snapshot and replays the
 * journal into `s` (an initialised, empty state), cuts a torn tail, and starts the writer thread.
 * On error returns a negative errno and writes a message naming the file and byte position into
 * `err` (size `err_len`); `s` may then hold a partial state (free it).
 */
int meta_journal_open(struct meta_journal **out, const char *dir, struct meta_state *s,
                      meta_journal_notify_fn notify, void *arg, char *err, size_t err_len);

/* Appends an encoded op; returns its sequence number (> 0), or 0 when the journal has failed. */
uint64_t meta_journal_append(struct meta_journal *j, const struct meta_op_buf *op);

/* Highest sequence number known to be on disk (thread-safe). */
uint64_t meta_journal_durable_seq(struct meta_journal *j);
/* Highest sequence number appended. */
uint64_t meta_journal_last_seq(const struct meta_journal *j);
/* 0, or the negative errno of the write/fdatasync that failed (thread-safe). */
int meta_journal_failed(struct meta_journal *j);
/* Bytes appended to the journal file since the last snapshot. */
uint64_t meta_journal_bytes(const struct meta_journal *j);

/*
 * Writes a snapshot of `s` (which must reflect every appended record) and truncates the journal
 * once the snapshot is durable. The state is serialised on the calling thread; the I/O happens on
 * the writer thread, in order with the records. Returns 0 or a negative errno.
 */
int meta_journal_snapshot(struct meta_journal *j, const struct meta_state *s);

/*
 * Like meta_journal_snapshot, but the state is serialised and written by a forked child (a
 * copy-on-write image), so the calling thread pauses only for fork(). Returns the child's pid
 * or a negative errno. The caller reaps the child and reports with
 * meta_journal_snapshot_forked_done(ok = exited 0); only then, on the writer thread, is the
 * snapshot renamed into place and the journal rewritten to the records after it.
 */
pid_t meta_journal_snapshot_fork(struct meta_journal *j, const struct meta_state *s);
void meta_journal_snapshot_forked_done(struct meta_journal *j, pid_t pid, bool ok);

/* Number of fdatasync calls made (group commits), for benchmarks. */
uint64_t meta_journal_syncs(struct meta_journal *j);

/* Stops the writer thread after it has written what was appended, and closes the files. */
void meta_journal_close(struct meta_journal *j);

#endif
