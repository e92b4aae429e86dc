/*
 * The metadata state machine: topics, partitions and their extent indexes, objects, idempotent
 * producers, agents and leases. It is deterministic and does no I/O: every change comes from one
 * of the meta_state_* operations below, each given the time it happens at (`now_ms`) by the
 * caller, so applying the same operations in the same order to the same starting state always
 * gives the same state and the same answers. The journal (journal.h) records exactly these
 * operations and replays them through the same functions at start-up.
 *
 * Answers are Kafka error codes (enum kp_error values) placed in result structs; C return values
 * are 0 or a negative errno for misuse only. Every mutating operation bumps `mutations`, so a
 * caller can tell whether an operation changed anything (and needs journaling).
 *
 * Memory: an extent is a 56-byte struct in a per-partition array (see meta_extent); objects and
 * producer states are shared tables with hash indexes. Nothing here is thread-safe: one thread
 * (the server's event loop) owns a state.
 */
#ifndef RUNNEL_METADATA_STATE_H
#define RUNNEL_METADATA_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runnel/protocol/codec.h"

#define META_TOPIC_NAME_MAX 249    /* Kafka's limit */
#define META_PARTITIONS_MAX 100000 /* per topic; bounds memory per request */
#define META_PRODUCER_WINDOW 5     /* batches remembered per (producer, partition), as Kafka */
#define META_DEFAULT_COMMIT_DEADLINE_MS 60000

/* One contiguous range of record batches of one partition inside one object's chunk. */
struct meta_extent {
    int64_t base_offset;   /* first offset of the range */
    int64_t max_ts;        /* largest record timestamp in the range, ms */
    int64_t ts_prefix_max; /* max of max_ts over this and all earlier extents (time index) */
    uint64_t chunk_off;    /* byte offset of the chunk in the object */
    uint32_t chunk_len;    /* stored bytes of the chunk */
    uint32_t object;       /* index into meta_state.objects */
    uint32_t record_count; /* offsets covered: base_offset .. base_offset + record_count - 1 */
    uint32_t raw_off;      /* byte offset of the range in the uncompressed chunk */
    uint32_t raw_len;      /* bytes of the range in the uncompressed chunk */
    uint32_t pad_;         /* keeps the size a multiple of 8 explicitly */
};

struct meta_partition {
    int64_t log_start;       /* first readable offset */
    int64_t hwm;             /* high watermark: next offset to assign */
    struct meta_extent *ext; /* extents in offset order */
    uint32_t n_ext;          /* extents in use */
    uint32_t cap_ext;        /* extents allocated */
    uint32_t gid;            /* state-wide partition number (producer state key) */
    int32_t max_ts_ext;      /* index of the first extent holding the largest timestamp, -1 */
    int64_t max_ts;          /* that timestamp (ext[max_ts_ext].max_ts); when n_ext > 0 */
};

/* Kafka topic configs we accept; see state.c for types, ranges and defaults. */
enum meta_config_key {
    META_CFG_RETENTION_MS,
    META_CFG_RETENTION_BYTES,
    META_CFG_CLEANUP_POLICY,
    META_CFG_MAX_MESSAGE_BYTES,
    META_CFG_MESSAGE_TIMESTAMP_TYPE,
    META_CFG_SEGMENT_BYTES,
    META_CFG_SEGMENT_MS,
    META_CFG_SEGMENT_INDEX_BYTES,
    META_CFG_SEGMENT_JITTER_MS,
    META_CFG_MIN_INSYNC_REPLICAS,
    META_CFG_COMPRESSION_TYPE,
    META_CFG_DELETE_RETENTION_MS,
    META_CFG_MIN_COMPACTION_LAG_MS,
    META_CFG_MAX_COMPACTION_LAG_MS,
    META_CFG_MIN_CLEANABLE_DIRTY_RATIO,
    META_CFG_FILE_DELETE_DELAY_MS,
    META_CFG_FLUSH_MESSAGES,
    META_CFG_FLUSH_MS,
    META_CFG_INDEX_INTERVAL_BYTES,
    META_CFG_PREALLOCATE,
    META_CFG_UNCLEAN_LEADER_ELECTION_ENABLE,
    META_CFG_MESSAGE_DOWNCONVERSION_ENABLE,
    META_CFG_MESSAGE_TIMESTAMP_DIFFERENCE_MAX_MS,
    META_CFG_MESSAGE_TIMESTAMP_BEFORE_MAX_MS,
    META_CFG_MESSAGE_TIMESTAMP_AFTER_MAX_MS,
    META_CFG_LOCAL_RETENTION_MS,
    META_CFG_LOCAL_RETENTION_BYTES,
    META_CFG_REMOTE_STORAGE_ENABLE,
    META_CFG_COUNT
};

struct meta_topic {
    struct kp_uuid id;            /* never reused */
    char *name;                   /* NUL-terminated, validated */
    struct meta_partition *parts; /* partitions 0..n_parts-1 */
    uint32_t n_parts;             /* partition count */
    char *config[META_CFG_COUNT]; /* explicitly set values (NULL: Kafka's default) */
};

enum meta_object_state {
    META_OBJECT_LIVE = 1,   /* referenced by at least one extent when committed */
    META_OBJECT_UNUSED = 2, /* committed but no extent references it any more */
};

struct meta_object {
    char *key;          /* store key, NUL-terminated */
    int64_t size;       /* bytes */
    int64_t live_bytes; /* stored bytes still referenced by extents */
    int64_t created_ms; /* creation time the agent reported */
    uint8_t state;      /* enum meta_object_state */
};

/* Idempotence window of one producer on one partition. */
struct meta_pstate {
    int64_t producer_id; /* key part 1 */
    uint32_t gid;        /* key part 2: meta_partition.gid */
    int16_t epoch;       /* epoch of the batches in the window */
    uint8_t n;           /* batches in the window (<= META_PRODUCER_WINDOW) */
    uint8_t head;        /* index of the newest batch */
    struct {
        int32_t first_seq;    /* first sequence of the batch */
        int32_t last_seq;     /* last sequence (wraps at INT32_MAX) */
        int64_t first_offset; /* offset assigned to first_seq */
    } b[META_PRODUCER_WINDOW];
};

/* A producer id handed out by InitProducerId. */
struct meta_producer {
    int64_t id;      /* producer id */
    int16_t epoch;   /* current epoch */
    char *txn_id;    /* transactional id or NULL */
    int64_t last_ms; /* last InitProducerId time */
};

struct meta_agent {
    int32_t id;                 /* agent id */
    int64_t epoch;              /* bumped on every registration */
    char *host;                 /* advertised host */
    int32_t port;               /* advertised port */
    char *zone;                 /* zone or "" */
    int32_t session_timeout_ms; /* expiry after the last heartbeat */
    int64_t last_heartbeat_ms;  /* time of registration or last heartbeat */
};

struct meta_lease {
    char *name;         /* lease name */
    int32_t holder;     /* agent id, -1 none */
    int64_t epoch;      /* bumped when the holder changes */
    int64_t expires_ms; /* holder loses it at this time */
};

/* Open-addressing index from a 64-bit hash to an element index; see state.c. */
struct meta__index {
    uint64_t *slots; /* (hash << 32 | (idx + 1)) packed; 0 = empty */
    uint32_t cap;    /* power of two */
    uint32_t n;      /* used slots */
};

struct meta_state {
    struct meta_topic *topics;        /* in creation order */
    uint32_t n_topics;                /* topics in use */
    uint32_t cap_topics;              /* allocated */
    struct meta__index topic_by_name; /* name hash -> topics[] */
    struct meta_object *objects;      /* in commit order */
    uint32_t n_objects;               /* objects in use */
    uint32_t cap_objects;             /* allocated */
    struct meta__index object_by_key; /* key hash -> objects[] */
    struct meta_pstate *pstates;      /* producer windows */
    uint32_t n_pstates;               /* in use */
    uint32_t cap_pstates;             /* allocated */
    struct meta__index pstate_by_key; /* (producer, gid) hash -> pstates[] */
    struct meta_producer *producers;  /* index = producer id - 1 */
    uint32_t n_producers;             /* allocated ids */
    uint32_t cap_producers;           /* allocated */
    struct meta_agent *agents;        /* registered agents */
    uint32_t n_agents;                /* in use */
    struct meta_lease *leases;        /* known leases */
    uint32_t n_leases;                /* in use */
    uint32_t next_gid;                /* next meta_partition.gid */
    int32_t next_agent_id;            /* next automatically assigned agent id */
    uint64_t uuid_counter;            /* feeds deterministic topic ids */
    uint8_t cluster_seed[16];         /* random per data directory; mixed into topic ids */
    int64_t commit_deadline_ms;       /* commits of older objects are refused */
    uint64_t mutations;               /* bumped by every change */
    uint64_t n_extents;               /* extents in all partitions */
    struct meta_groups *groups;       /* consumer groups (groups.h), NULL until first used */
    struct meta_toucher *toucher;     /* faults extent pages in ahead; NULL: the appends do */
};

/* ---- life cycle ---- */

/* Initialises an empty state. `seed` (16 bytes, may be NULL for zeros) makes topic ids unique
 * per cluster; it is part of the state (snapshots keep it). */
void meta_state_init(struct meta_state *s, const uint8_t *seed);
/* Frees everything the state owns. */
void meta_state_free(struct meta_state *s);
/*
 * Starts a thread that faults in the pages of the large extent arrays ahead of the appends,
 * which otherwise do it themselves (a page's first use is expensive on some virtual machines;
 * see toucher.c). It only reads memory: the state stays a function of the operations applied.
 * meta_state_free stops it. Returns 0 or -errno (the appends then keep doing it).
 */
int meta_state_start_toucher(struct meta_state *s);
/* Pages the toucher has read so far (0 without one). */
uint64_t meta_state_toucher_pages(const struct meta_state *s);
/* Bytes of the extent arrays that are mappings of their own (the large ones) rather than heap
 * blocks: what malloc's statistics do not see. */
size_t meta_state_mapped_bytes(const struct meta_state *s);

/* ---- topics ---- */

/* 0 when `name` is a valid Kafka topic name, else KP_ERROR_INVALID_TOPIC_EXCEPTION. */
int16_t meta_topic_name_check(const char *name, size_t len);

/* Looks up a config key by name; returns its index or -1. */
int meta_config_key_find(const char *name, size_t len);
/* The key's name and Kafka's default value as a string. */
const char *meta_config_key_name(int key);
const char *meta_config_default(int key);
/* Validates a value for a key: 0 or KP_ERROR_INVALID_CONFIG. */
int16_t meta_config_check(int key, const char *value, size_t len);
/* The effective value (set or default) of a config of a topic. */
const char *meta_topic_config(const struct meta_topic *t, int key);
/* The effective value parsed as an integer (for numeric keys). */
int64_t meta_topic_config_i64(const struct meta_topic *t, int key);

struct meta_config_kv {
    const char *name;  /* key (need not be NUL-terminated; see name_len) */
    size_t name_len;   /* bytes of name */
    const char *value; /* value, or NULL for "delete / default" */
    size_t value_len;  /* bytes of value */
};

/* Creates a topic. On success *out (if not NULL) points to it; returns a Kafka error:
 * INVALID_TOPIC_EXCEPTION, TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS, INVALID_CONFIG. With
 * validate_only nothing changes. */
int16_t meta_state_create_topic(struct meta_state *s, const char *name, size_t name_len,
                                int32_t partitions, const struct meta_config_kv *configs,
                                size_t n_configs, bool validate_only, struct meta_topic **out);
/* Deletes a topic by name (name != NULL) or id; UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID. */
int16_t meta_state_delete_topic(struct meta_state *s, const char *name, size_t name_len,
                                const struct kp_uuid *id);
/* Grows a topic to `count` partitions (INVALID_PARTITIONS when not larger). */
int16_t meta_state_create_partitions(struct meta_state *s, const char *name, size_t name_len,
                                     int32_t count, bool validate_only);
/* Applies SET (value != NULL) / DELETE (value == NULL) changes atomically: all valid or none. */
int16_t meta_state_alter_configs(struct meta_state *s, const char *name, size_t name_len,
                                 const struct meta_config_kv *changes, size_t n,
                                 bool validate_only);
struct meta_topic *meta_state_topic_by_name(const struct meta_state *s, const char *name,
                                            size_t len);
struct meta_topic *meta_state_topic_by_id(const struct meta_state *s, const struct kp_uuid *id);
/* The partition, or NULL when the topic or partition does not exist. */
struct meta_partition *meta_state_partition(const struct meta_state *s, const struct kp_uuid *id,
                                            int32_t partition);

/* ---- commit ---- */

struct meta_commit_range {
    int64_t producer_id;  /* -1: not idempotent */
    int16_t epoch;        /* producer epoch */
    int32_t base_seq;     /* first sequence */
    int32_t record_count; /* >= 1 */
    int64_t max_ts;       /* largest timestamp, ms */
    uint32_t raw_off;     /* offset in the uncompressed chunk */
    uint32_t raw_len;     /* length in the uncompressed chunk */
};

struct meta_commit_part {
    struct kp_uuid topic_id;          /* all zero: use topic_name */
    const char *topic_name;           /* may be NULL */
    size_t topic_name_len;            /* bytes */
    int32_t partition;                /* index */
    int64_t chunk_off;                /* bytes into the object */
    int32_t chunk_len;                /* stored bytes */
    uint32_t n_ranges;                /* ranges */
    struct meta_commit_range *ranges; /* in order */
};

struct meta_commit {
    const char *object_key;         /* store key */
    size_t object_key_len;          /* bytes */
    int64_t object_size;            /* bytes */
    int64_t object_created_ms;      /* for the commit deadline */
    int16_t fenced_error;           /* 47 or 90 */
    uint32_t n_parts;               /* partitions */
    struct meta_commit_part *parts; /* one chunk each */
};

struct meta_range_result {
    int16_t error;       /* Kafka error */
    bool duplicate;      /* duplicate of a batch in the window */
    int64_t base_offset; /* assigned or original offset; -1 on error */
};

struct meta_part_result {
    struct kp_uuid topic_id; /* resolved topic id (zeros if unknown) */
    int16_t error;           /* partition-level Kafka error */
    int64_t base_offset;     /* first range's offset, -1 if none */
    int64_t hwm;             /* high watermark after the commit */
    int64_t log_start;       /* log start offset */
};

/*
 * Commits one object: every range of every partition is checked (idempotence), assigned
 * offsets and indexed, all in one step. `parts` must have c->n_parts entries and `ranges` one
 * per range of all partitions in order. Returns the commit-level Kafka error: REQUEST_TIMED_OUT
 * when the object is older than the commit deadline, DUPLICATE_RESOURCE when that object key
 * was already committed, INVALID_REQUEST for a malformed object or malformed ranges; then
 * nothing changes.
 */
int16_t meta_state_commit(struct meta_state *s, int64_t now_ms, const struct meta_commit *c,
                          struct meta_part_result *parts, struct meta_range_result *ranges);

/*
 * The commit-level refusal meta_state_commit would return for `c`, without changing anything:
 * 0 when it would record the object (and so change the state, whatever happens to each
 * partition). The service journals a commit before applying it when this is 0.
 */
int16_t meta_state_commit_check(const struct meta_state *s, int64_t now_ms,
                                const struct meta_commit *c);
/*
 * meta_state_commit for a commit whose meta_state_commit_check, on this same state, returned
 * `refused`: the checks are not run twice.
 */
int16_t meta_state_commit_checked(struct meta_state *s, int16_t refused,
                                  const struct meta_commit *c, struct meta_part_result *parts,
                                  struct meta_range_result *ranges);

/* ---- queries ---- */

/* Index of the extent holding `offset`, or -1 when outside [log_start, hwm). */
int64_t meta_partition_find_offset(const struct meta_partition *p, int64_t offset);
/* Index of the first extent whose max timestamp >= ts, or -1. */
int64_t meta_partition_find_timestamp(const struct meta_partition *p, int64_t ts);

/* ---- producers ---- */

/*
 * InitProducerId for idempotent (txn_id NULL) and transactional producers. With producer_id -1
 * a new id (epoch 0) is allocated, or for a known transactional id its epoch is bumped. With a
 * producer id and epoch (KIP-360) the epoch is bumped when they match the current ones, else
 * INVALID_PRODUCER_EPOCH / PRODUCER_FENCED; an epoch at its limit gets a fresh id.
 */
int16_t meta_state_init_producer(struct meta_state *s, int64_t now_ms, const char *txn_id,
                                 size_t txn_len, int64_t producer_id, int16_t epoch,
                                 int64_t *out_id, int16_t *out_epoch);

/* ---- agents and leases ---- */

int16_t meta_state_register_agent(struct meta_state *s, int64_t now_ms, int32_t id,
                                  const char *host, size_t host_len, int32_t port, const char *zone,
                                  size_t zone_len, int32_t session_timeout_ms, int32_t *out_id,
                                  int64_t *out_epoch);
/* UNKNOWN_MEMBER_ID (25) for an unknown or expired agent, FENCED_INSTANCE_ID (82) for an old
 * epoch. */
int16_t meta_state_heartbeat(struct meta_state *s, int64_t now_ms, int32_t id, int64_t epoch);
bool meta_agent_live(const struct meta_agent *a, int64_t now_ms);
/* Acquires or renews a lease; another live holder gets error 0 with *holder set to that holder
 * (the caller sees it does not hold it). */
int16_t meta_state_acquire_lease(struct meta_state *s, int64_t now_ms, const char *name,
                                 size_t name_len, int32_t holder, int32_t duration_ms,
                                 int32_t *out_holder, int64_t *out_epoch, int64_t *out_expires);
int16_t meta_state_release_lease(struct meta_state *s, const char *name, size_t name_len,
                                 int32_t holder, int64_t epoch);

/* ---- snapshots and comparison ---- */

/*
 * Serialises the whole state canonically (equal states give equal bytes). *out is malloc'd and
 * owned by the caller. Returns 0 or -ENOMEM.
 */
int meta_state_serialize(const struct meta_state *s, uint8_t **out, size_t *out_len);
/* Loads a serialisation into an initialised empty state. 0 or -EINVAL (with *why set). */
int meta_state_deserialize(struct meta_state *s, const uint8_t *buf, size_t len, const char **why);

#endif
