/*
 * The consumer group coordinator (Kafka's classic group protocol) as a state machine inside the
 * metadata state: groups, their members, generations, protocol selection, the five group states,
 * and committed offsets. Like state.h it does no I/O and reads no clock: every call is given the
 * time it happens at, and timeouts (session, rebalance, the initial join delay, KIP-394 pending
 * member ids) fire from meta_groups_tick().
 *
 * Two kinds of data live here:
 *   - persisted: committed offsets (offset, leader epoch, metadata, commit time) and each
 *     group's last stored generation, protocol type, protocol and leader. They change only
 *     through the meta_groups_apply_* functions, which the journal replays with the same
 *     arguments; they are part of the canonical serialisation (snapshots).
 *   - live: members, their protocols, assignments, deadlines and parked JoinGroup/SyncGroup
 *     answers. They are never journaled: after a restart members rejoin, as after a Kafka
 *     coordinator failover.
 *
 * JoinGroup and SyncGroup often cannot be answered when they arrive. The caller passes a
 * `struct meta_gwait` naming where the answer must go (an opaque connection id and ticket);
 * every answer, immediate or later, is handed to the emit callback of struct meta_groups.
 *
 * Error codes are Kafka's (enum kp_error), returned as int16_t or placed in result structs.
 */
#ifndef RUNNEL_METADATA_GROUPS_H
#define RUNNEL_METADATA_GROUPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runnel/protocol/codec.h"

struct meta_state;

#define META_GROUP_ID_MAX 1024            /* bytes of a group id we accept */
#define META_GROUP_METADATA_MAX 4096      /* offset.metadata.max.bytes */
#define META_GROUP_MAX_MEMBERS 10000      /* group.max.size */
#define META_GROUP_MIN_SESSION_MS 6000    /* group.min.session.timeout.ms */
#define META_GROUP_MAX_SESSION_MS 1800000 /* group.max.session.timeout.ms */
#define META_GROUP_INITIAL_DELAY_MS 3000  /* group.initial.rebalance.delay.ms */
#define META_GROUP_MAX_PROTOCOLS 64       /* protocols one member may offer */

enum meta_gstate {
    META_GROUP_EMPTY = 0,
    META_GROUP_PREPARING_REBALANCE = 1,
    META_GROUP_COMPLETING_REBALANCE = 2,
    META_GROUP_STABLE = 3,
    META_GROUP_DEAD = 4,
};

/* Kafka's name of a state ("Empty", "PreparingRebalance", ...). */
const char *meta_gstate_name(enum meta_gstate st);

/* Where a parked answer goes. */
struct meta_gwait {
    uint64_t conn;   /* opaque connection id of the caller */
    int64_t ticket;  /* the caller's number for the request */
    int16_t version; /* api version the answer is encoded at */
    bool active;     /* a request is parked here */
};

struct meta_gproto {
    char *name;      /* protocol name (e.g. "range") */
    uint8_t *meta;   /* its metadata bytes (malloc'd, may be NULL when len 0) */
    size_t meta_len; /* bytes */
};

struct meta_gmember {
    char *id;                   /* member id */
    char *instance_id;          /* group.instance.id (static member), or NULL */
    char *client_id;            /* client id of its last join */
    char *client_host;          /* client host as the agent saw it */
    int32_t session_ms;         /* session timeout */
    int32_t rebalance_ms;       /* rebalance timeout */
    struct meta_gproto *protos; /* protocols in the member's order of preference */
    uint32_t n_protos;          /* count */
    uint8_t *assignment;        /* assignment of the current generation (malloc'd) or NULL */
    size_t assignment_len;      /* bytes */
    int64_t expires_ms;         /* session deadline: removed when now passes it */
    bool joined;                /* rejoined during the current PreparingRebalance */
    bool synced;                /* sent SyncGroup in the current CompletingRebalance */
    struct meta_gwait join;     /* parked JoinGroup */
    struct meta_gwait sync;     /* parked SyncGroup */
};

struct meta_goffset {
    char *topic;          /* topic name */
    int32_t partition;    /* partition index */
    int64_t offset;       /* committed offset */
    int32_t leader_epoch; /* committed leader epoch, -1 when none */
    char *metadata;       /* committed metadata string, never NULL ("" when none) */
    int64_t commit_ms;    /* when it was committed */
    int64_t expire_ms;    /* explicit expiry asked by the commit (v1-v4), 0 when none */
};

struct meta_gpending {
    char *id;           /* member id handed out with MEMBER_ID_REQUIRED */
    int64_t expires_ms; /* forgotten when not used by then */
};

struct meta_group {
    char *id;                      /* group id */
    enum meta_gstate state;        /* live state */
    int32_t generation;            /* live generation */
    char *protocol_type;           /* live, NULL when none */
    char *protocol;                /* selected protocol, NULL when none */
    char *leader;                  /* leader's member id, NULL when none */
    int32_t stored_generation;     /* persisted: generation of the last completed sync */
    char *stored_protocol_type;    /* persisted, NULL when none */
    char *stored_protocol;         /* persisted, NULL when none */
    char *stored_leader;           /* persisted, NULL when none */
    struct meta_gmember *members;  /* in join order */
    uint32_t n_members;            /* count */
    struct meta_gpending *pending; /* KIP-394 member ids not yet used */
    uint32_t n_pending;            /* count */
    int64_t phase_deadline_ms;     /* end of the join (Preparing) or sync (Completing) phase */
    int64_t delay_until_ms;        /* initial join delay of a rebalance started from Empty */
    int64_t delay_limit_ms;        /* the delay never extends past this */
    struct meta_goffset *offsets;  /* committed offsets, in first-commit order */
    uint32_t n_offsets;            /* count */
    uint32_t cap_offsets;          /* allocated */
    bool persisted;                /* has journaled data (offsets or a stored generation) */
    int64_t empty_since_ms;        /* live: when it last became Empty (0: not yet seen) */
};

/* One JoinGroup or SyncGroup answer for the emit callback; pointers valid during the call. */
struct meta_greply {
    int16_t api_key;                /* 11 JoinGroup or 14 SyncGroup */
    struct meta_gwait to;           /* where it goes */
    int16_t error;                  /* Kafka error code */
    int32_t generation;             /* JoinGroup: generation (-1 on error) */
    const char *protocol_type;      /* protocol type or NULL */
    const char *protocol;           /* selected protocol or NULL */
    const char *leader;             /* JoinGroup: leader id ("" on error) */
    const char *member_id;          /* JoinGroup: the member's id ("" when none) */
    const struct meta_group *group; /* JoinGroup to the leader: list its members, else NULL */
    bool skip_assignment;           /* JoinGroup v9: the leader keeps the current assignment */
    const uint8_t *assignment;      /* SyncGroup: the member's assignment */
    size_t assignment_len;          /* bytes */
};

typedef void (*meta_groups_emit_fn)(void *arg, const struct meta_greply *r);

struct meta_groups {
    struct meta_group **groups; /* every group, in creation order */
    uint32_t n_groups;          /* count */
    uint64_t id_seed;           /* mixed into member ids (random per process) */
    uint64_t id_counter;        /* member ids handed out */
    int32_t initial_delay_ms;   /* group.initial.rebalance.delay.ms */
    meta_groups_emit_fn emit;   /* receives every JoinGroup/SyncGroup answer */
    void *emit_arg;             /* its argument */
};

/* The groups of a state, created on first use (never NULL). */
struct meta_groups *meta_groups_of(struct meta_state *s);
/* The group named (id, len) or NULL. */
struct meta_group *meta_group_find(const struct meta_groups *gs, const char *id, size_t len);
/* Frees every group (called by meta_state_free). */
void meta_groups_free(struct meta_groups *gs);

/* ---- the classic protocol (live) ---- */

struct meta_gjoin {
    struct kp_str group_id;
    struct kp_str member_id;   /* "" for a first join */
    struct kp_str instance_id; /* null for dynamic members */
    struct kp_str client_id;
    struct kp_str client_host;
    struct kp_str protocol_type;
    int32_t session_ms;
    int32_t rebalance_ms;   /* v0: equal to session_ms */
    bool require_member_id; /* v4+: KIP-394 */
    uint32_t n_protos;
    const struct kp_str *proto_names;  /* n_protos names */
    const struct kp_bytes *proto_meta; /* n_protos metadata */
};

/* JoinGroup. Answers through gs->emit to `w` (now or later). */
void meta_group_join(struct meta_groups *gs, int64_t now, const struct meta_gjoin *j,
                     struct meta_gwait w);

struct meta_gsync_assign {
    struct kp_str member_id;
    struct kp_bytes assignment;
};

/*
 * SyncGroup. Answers through gs->emit to `w` (now or later). When the leader's assignment
 * completes the generation, the group's generation record is stored (meta_groups_apply_generation)
 * and *stored is set: the caller journals it and must not deliver the answers before it is durable.
 */
void meta_group_sync(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                     int32_t generation, struct kp_str member_id, struct kp_str instance_id,
                     struct kp_str protocol_type, struct kp_str protocol,
                     const struct meta_gsync_assign *assign, uint32_t n_assign, struct meta_gwait w,
                     bool *stored);

int16_t meta_group_heartbeat(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                             int32_t generation, struct kp_str member_id,
                             struct kp_str instance_id);

/* LeaveGroup of one member: returns its error (top-level group errors through *group_error). */
int16_t meta_group_leave(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                         struct kp_str member_id, struct kp_str instance_id, int16_t *group_error);

/* Expires sessions, pending member ids, join and sync phases; emits parked answers. */
void meta_groups_tick(struct meta_groups *gs, int64_t now);

/* Forgets the parked answers that go to connection `conn` (it closed). */
void meta_groups_conn_closed(struct meta_groups *gs, uint64_t conn);

/*
 * OffsetCommit checks for the group (before any partition): 0 when the commit may proceed. A
 * missing group is created for a commit with generation < 0 (simple consumers). A valid commit
 * also counts as the member's heartbeat.
 */
int16_t meta_group_commit_check(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                                int32_t generation, struct kp_str member_id,
                                struct kp_str instance_id);

/* DeleteGroups check of one group: 0 when it may be deleted. */
int16_t meta_group_delete_check(const struct meta_groups *gs, struct kp_str group_id);

/*
 * OffsetDelete checks: the group error (GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, ...) or 0; then
 * meta_group_topic_subscribed() tells per topic whether GROUP_SUBSCRIBED_TO_TOPIC applies.
 */
int16_t meta_group_offset_delete_check(const struct meta_groups *gs, struct kp_str group_id);
bool meta_group_topic_subscribed(const struct meta_group *g, struct kp_str topic);

/*
 * Offset retention (offsets.retention.ms, KIP-211): calls fn once per Empty group whose offsets
 * expired, i.e. retention_ms passed since both the commit and the group becoming Empty, with the
 * expired (topic, partition) pairs (views valid during the call) and whether nothing else is
 * left of the group so that it should be deleted (Kafka then drops the group). fn applies and
 * journals the deletion (meta_groups_apply_offset_delete / _delete); nothing is changed here.
 */
typedef void (*meta_groups_expire_fn)(void *arg, const struct meta_group *g,
                                      const struct kp_str *topics, const int32_t *partitions,
                                      uint32_t n, bool delete_group);
void meta_groups_expire(struct meta_groups *gs, int64_t now, int64_t retention_ms,
                        meta_groups_expire_fn fn, void *arg);

/* The committed offset of (topic, partition), or NULL. */
const struct meta_goffset *meta_group_offset(const struct meta_group *g, struct kp_str topic,
                                             int32_t partition);

/* ---- persisted changes (also replayed by the journal) ---- */

struct meta_goffset_in {
    struct kp_str topic;
    int32_t partition;
    int64_t offset;
    int32_t leader_epoch;
    struct kp_str metadata; /* null is stored as "" */
    int64_t expire_ms;      /* explicit expiry (OffsetCommit v1-v4), 0 when none */
};

void meta_groups_apply_commit(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                              const struct meta_goffset_in *o, uint32_t n);
void meta_groups_apply_offset_delete(struct meta_groups *gs, struct kp_str group_id,
                                     const struct kp_str *topics, const int32_t *partitions,
                                     uint32_t n);
void meta_groups_apply_delete(struct meta_groups *gs, struct kp_str group_id);
void meta_groups_apply_generation(struct meta_groups *gs, struct kp_str group_id,
                                  int32_t generation, struct kp_str protocol_type,
                                  struct kp_str protocol, struct kp_str leader);

/* ---- journal ops (one journal record type, META_OP_GROUP, with a sub-op) ---- */

struct meta_op_buf;
void meta_op_group_commit(struct meta_op_buf *b, int64_t now, struct kp_str group_id,
                          const struct meta_goffset_in *o, uint32_t n);
void meta_op_group_offset_delete(struct meta_op_buf *b, int64_t now, struct kp_str group_id,
                                 const struct kp_str *topics, const int32_t *partitions,
                                 uint32_t n);
void meta_op_group_delete(struct meta_op_buf *b, int64_t now, struct kp_str group_id);
void meta_op_group_generation(struct meta_op_buf *b, int64_t now, struct kp_str group_id,
                              int32_t generation, struct kp_str protocol_type,
                              struct kp_str protocol, struct kp_str leader);

#endif
