/*
 * The metadata service's RPC server: a libuv TCP listener speaking Runnel's agent<->metadata
 * protocol (Kafka framing: int32 size, request header v2 with api key, version, correlation id
 * and client id; response header v1), with many agents connected at once and pipelined requests
 * on each connection.
 *
 * Every request is executed on the loop thread against the state machine as soon as it arrives
 * (so a connection's requests apply in order); a request that changed the state is journaled.
 * A response leaves only when every journal record it may depend on is durable (its "needed"
 * sequence is the last sequence appended when it ran), and responses leave each connection in
 * request order. Pushes for watched partitions are frames with correlation id -1 (see
 * docs/metadata.md) sent after the commit that moved the high watermark is durable.
 *
 * After a journal write or fdatasync error the server acknowledges nothing any more: requests
 * waiting for durability get KAFKA_STORAGE_ERROR (56) where their response has a top-level error
 * code, otherwise their connection is closed; new requests are refused the same way.
 */
#ifndef RUNNEL_METADATA_SERVER_H
#define RUNNEL_METADATA_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* Default of snapshot.write.mbps: MiB/s a snapshot is written at most (see metadata.md). */
#define META_SNAPSHOT_WRITE_MBPS_DEFAULT 32

/* Uncompressed snapshot bytes per extent, as snapshot.state.percent estimates a state's size. */
#define META_SNAPSHOT_EXTENT_BYTES 44

struct meta_server_options {
    const char *data_dir;           /* journal and snapshot directory (created if missing) */
    const char *host;               /* listen address, e.g. "127.0.0.1" */
    int port;                       /* listen port; 0 picks a free one (see meta_server_port) */
    uint64_t snapshot_bytes;        /* write a snapshot once the journal grew by this much */
    uint32_t snapshot_state_pct;    /* ... and by this % of the state's raw size (0: ignore) */
    uint64_t snapshot_write_rate;   /* bytes/s a snapshot is written at most; 0: no limit */
    size_t max_frame;               /* largest accepted request frame, bytes */
    int32_t group_initial_delay_ms; /* group.initial.rebalance.delay.ms (default 3000) */
    int64_t offsets_retention_ms;   /* offsets.retention.minutes in ms (default 7 days); 0: keep */
};

struct meta_server;

/* Journal bytes since the last snapshot after which the next one is due, for a state of
 * `n_extents`: snapshot_bytes, or snapshot_state_pct % of the state's uncompressed snapshot
 * (META_SNAPSHOT_EXTENT_BYTES per extent) if that is more. */
uint64_t meta_snapshot_due_bytes(uint64_t n_extents, const struct meta_server_options *o);

/* Default options (port 9093, 256 MiB snapshots, 64 MiB frames, 3 s initial group delay). */
void meta_server_options_default(struct meta_server_options *o);

/*
 * Loads the state from o->data_dir and starts listening on `loop`. On error returns a negative
 * errno and a message in `err`. The server belongs to the caller until meta_server_close().
 */
int meta_server_open(struct meta_server **out, uv_loop_t *loop, const struct meta_server_options *o,
                     char *err, size_t err_len);

/* The port actually listened on. */
int meta_server_port(const struct meta_server *s);

/* Milliseconds spent loading the snapshot and replaying the journal at open. */
double meta_server_startup_ms(const struct meta_server *s);

/* Stops listening, closes connections and the journal (after it wrote what it has). The loop
 * must run afterwards for the handles' close callbacks; the memory is freed in the last one. */
void meta_server_close(struct meta_server *s);

#endif
