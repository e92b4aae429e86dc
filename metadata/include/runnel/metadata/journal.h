/*
 * Persistence of the metadata state: an append-only journal of the state machine's operations,
 * in numbered files, plus snapshots after which the older files are deleted.
 *
 * Files in the data directory (<G> is a generation, 20 decimal digits, so names sort by it):
 *   journal.<G>   records: u32 body_len | u32 crc32c(body) | body
 *                 body = u64 seq | u8 op | i64 now_ms | op payload (big-endian, see journal.c)
 *   snapshot.<G>  "RNLSNAP3" | u64 last_seq | u64 stored len | u64 raw len | u32 crc32c(stored)
 *                 | u32 crc32c(header bytes 8-35) | zstd frame of the state bytes
 *                 (meta_state_serialize); it reflects exactly the records of journal files of
 *                 generations below G, and journal.<G> starts with record last_seq + 1.
 *                 ("RNLSNAP2", uncompressed, and "RNLSNAPF" files still load.)
 * Sequence numbers run on across files. Taking a snapshot rotates: appends switch to a new
 * journal file at the point the snapshot reflects; once the snapshot is durable (written to
 * snapshot.<G>.tmp, fdatasynced, renamed, directory fsynced) the older files are deleted.
 *
 * Start-up (meta_journal_open) deletes temporaries, loads the newest snapshot, replays the
 * journal files from its generation on (they must have consecutive generations and sequence
 * numbers) through the same state functions the server uses, and deletes the older files a crash
 * left. Only the newest file may end in a torn record (short, or failing its CRC with nothing but
 * zeros after it); it is cut. Anything else (a bad record followed by more data, a torn end of an
 * older file, a missing file) stops start-up with an error naming the file and byte position.
 * A data directory of the layout before rotation (`journal`, `snapshot`) becomes generation 0.
 *
 * Writing: operations are encoded on the event-loop thread (meta_journal_append returns the
 * record's sequence number) and written by a dedicated writer thread that issues one fdatasync
 * for everything appended since its last one (group commit). meta_journal_durable_seq() says how
 * far the disk has confirmed; the caller replies to a request only once its sequence is durable.
 * A failed write or fdatasync is final: the journal stops writing, durable_seq never moves again,
 * and meta_journal_failed() returns the error, so nothing later can be acknowledged by accident.
 *
 * Test hooks: when the environment variable RUNNEL_META_FAIL_FSYNC_FILE names a path and that
 * file exists at the moment of an fdatasync, the sync is treated as failed with EIO. libfiu's
 * posix preload (fiu-run / fiu-ctrl, failing posix/io/sync/fdatasync) works as well. When
 * RUNNEL_META_CRASH_AT (read at open) names a crash point, the process SIGKILLs itself there:
 * "rotated" (a new journal file was created and its directory entry synced), "snapshot-partial"
 * (on the background snapshot thread, after writing half of the temporary),
 * "before-rename" (a complete temporary, not yet renamed), "renamed" (snapshot in place, nothing
 * deleted), "mid-delete" (after the first of the covered files was deleted).
 */
#ifndef RUNNEL_METADATA_JOURNAL_H
#define RUNNEL_METADATA_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
/*
 * Limits how fast a background snapshot (meta_journal_snapshot_start) writes its file: at most
 * `bytes_per_s` of compressed bytes, in 1 MiB slices each written back before the next; 0 (the
 * default) writes as fast as the disk takes it. Loop thread; applies to snapshots started
 * afterwards.
 */
void meta_journal_set_snapshot_rate(struct meta_journal *j, uint64_t bytes_per_s);

/* Bytes appended since the last snapshot started (the last rotation). */
uint64_t meta_journal_bytes(const struct meta_journal *j);

/*
 * Writes a snapshot of `s` (which must reflect every appended record): the state is serialised
 * on the calling thread; the writer thread switches to a new journal file after the records
 * appended so far, writes the snapshot and deletes the files it covers. Returns 0, -EBUSY while
 * a background snapshot runs or a switch is not yet taken, or a negative errno.
 */
int meta_journal_snapshot(struct meta_journal *j, const struct meta_state *s);

/*
 * Starts a snapshot that never stops the calling thread: appends switch to a new journal file
 * right after the records appended so far, and a background thread rebuilds the state those
 * records reflect from the files on disk (the newest snapshot, then the journal files up to the
 * switch, as start-up does), serialises it and writes snapshot.<gen>.tmp at the snapshot rate.
 * The caller's state is not read. Returns 0, -EBUSY while an earlier snapshot runs or is not yet
 * installed, or a negative errno. Loop thread. The thread calls the journal's notify function
 * when it is done.
 */
int meta_journal_snapshot_start(struct meta_journal *j);
/* Whether the thread of a snapshot started with meta_journal_snapshot_start still works. */
bool meta_journal_snapshot_running(struct meta_journal *j);
/*
 * Reports a background snapshot: 0 when none ran or it still runs; 1 when it was written (the
 * writer thread then renames it into place between group commits and deletes the files it
 * covers); a negative errno when it failed, with the reason in `err` (the rotation stays; the
 * next snapshot covers both files). Loop thread.
 */
int meta_journal_snapshot_poll(struct meta_journal *j, char *err, size_t err_len);

/* Generation of the newest journal file asked for (grows by one per snapshot). */
uint64_t meta_journal_generation(const struct meta_journal *j);

/* Number of fdatasync calls made (group commits), for benchmarks. */
uint64_t meta_journal_syncs(struct meta_journal *j);

/* Stops the writer thread after it has written what was appended, and closes the files. */
void meta_journal_close(struct meta_journal *j);

#endif
