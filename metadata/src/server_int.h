/*
 * Internals of the metadata server shared by server.c (connections, framing, durability-ordered
 * replies, pushes) and handlers.c (decode request, run the state machine, journal, encode).
 */
#ifndef RUNNEL_METADATA_SERVER_INT_H
#define RUNNEL_METADATA_SERVER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "internal.h"
#include "runnel/metadata/journal.h"
#include "runnel/metadata/server.h"
#include "runnel/metadata/state.h"
#include "runnel/protocol/mem.h"

#define META_PUSH_CORRELATION_ID (-1) /* correlation id of server-initiated frames */
#define META_MAX_PENDING 4096         /* queued responses per connection before reads pause */
#define META_MAX_UNSENT (64u << 20)   /* bytes in a connection's write queue before reads pause */

struct meta__conn;

/* A response waiting for durability and for the responses before it. */
struct meta__pending {
    struct meta__pending *next; /* next in request order */
    uint64_t needed_seq;        /* journal sequence that must be durable first */
    int16_t api_key;            /* request's api key (for error rewrites) */
    int16_t api_version;        /* request's version */
    int32_t correlation_id;     /* request's correlation id */
    struct meta__buf frame;     /* complete frame: size, header, body */
    uint64_t started_ns;        /* arrival (meta__obs_now_ns), for the latency metric */
};

struct meta__conn {
    uv_tcp_t tcp;               /* the socket; conn is freed in its close callback */
    struct meta_server *srv;    /* owner */
    struct meta__conn *prev;    /* server's connection list */
    struct meta__conn *next;    /* server's connection list */
    struct meta__buf in;        /* received bytes not yet framed */
    struct meta__pending *head; /* oldest unsent response */
    struct meta__pending *tail; /* newest */
    uint32_t n_pending;         /* responses queued */
    uint32_t *watched;          /* partition gids watched */
    uint32_t n_watched;         /* entries in watched */
    bool reading;               /* uv_read_start active */
    bool closing;               /* uv_close called */
    uint64_t serial;            /* unique per server run; parked group answers name it */
};

/* A JoinGroup/SyncGroup answer to push once the journal is durable up to seq (group_rpc.c). */
struct meta__gpush {
    uint64_t conn;         /* meta__conn.serial of the agent */
    uint64_t seq;          /* journal sequence it depends on */
    int64_t ticket;        /* the agent's ticket of the parked request */
    bool sealed;           /* seq is final (the producing call has finished journaling) */
    struct meta__buf body; /* the Kafka response body */
};

/* A high-watermark change waiting for its commit to become durable. */
struct meta__notice {
    uint64_t seq;            /* journal sequence of the commit */
    uint32_t gid;            /* partition gid */
    struct kp_uuid topic_id; /* topic */
    int32_t partition;       /* partition index */
};

struct meta__watchers {
    struct meta__conn **conns; /* connections watching one gid */
    uint32_t n;                /* entries */
};

struct meta_server {
    uv_loop_t *loop;                 /* not owned */
    uv_tcp_t listener;               /* listening socket */
    uv_async_t durable_async;        /* woken by the journal writer */
    struct meta_state state;         /* the state machine */
    struct meta_journal *journal;    /* its persistence */
    struct meta_server_options opt;  /* copy of the options */
    char *data_dir;                  /* owned copy of opt.data_dir */
    char *host;                      /* owned copy of opt.host */
    int port;                        /* bound port */
    struct meta__conn *conns;        /* open connections */
    struct meta__watchers *watchers; /* indexed by partition gid */
    uint32_t n_watchers;             /* allocated entries of watchers */
    struct meta__notice *notices;    /* pending pushes, in sequence order */
    size_t n_notices;                /* entries */
    size_t cap_notices;              /* allocated */
    struct meta_op_buf op;           /* scratch buffer for journal ops */
    struct kp_arena arena;           /* per-request decode memory */
    bool failed;                     /* journal failed: acknowledge nothing */
    int handles_open;                /* listener, async, timer still to close */
    double startup_ms;               /* snapshot load + replay time */
    uint64_t snap_started_ns;        /* when the running snapshot started (monotonic) */
    uint64_t snap_retry_ns;          /* no snapshot starts before this (after a failed start) */
    char cluster_id[40];             /* derived from the cluster seed */
    uint64_t next_serial;            /* last meta__conn.serial handed out */
    uv_timer_t group_timer;          /* drives the group coordinator's clock (group_rpc.c) */
    struct meta__gpush *gpush;       /* pushes of parked group answers, oldest first */
    size_t n_gpush;                  /* entries */
    size_t cap_gpush;                /* allocated */
    struct kp_arena garena;          /* scratch for encoding group answers */
    struct meta__buf gcur_body;      /* the answer of the group request being executed */
    uint64_t gcur_conn;              /* its connection serial */
    int64_t gcur_ticket;             /* its ticket */
    bool gcur_active;                /* a group request is being executed */
    bool gcur_answered;              /* gcur_body holds its answer */
    int64_t gexpired_ms;             /* last offset-retention pass (once a second) */
};

struct meta__request {
    int16_t api_key;        /* from the header */
    int16_t api_version;    /* from the header */
    int32_t correlation_id; /* from the header */
    const uint8_t *body;    /* bytes after the header */
    size_t body_len;        /* their length */
};

/*
 * Executes one request: decodes it, runs the state machine (journaling changes through
 * meta__journal_op), and encodes the response body into `body`. Returns 0, or a negative errno
 * when the connection should be closed (undecodable request, unknown api or version).
 */
int meta__dispatch(struct meta_server *srv, struct meta__conn *c, const struct meta__request *req,
                   struct meta__buf *body);

/* Encodes a response body carrying only `error` for apis whose response starts with a top-level
 * ErrorCode; -ENOTSUP for the others. */
int meta__encode_error(int16_t api_key, int16_t api_version, int16_t error, struct meta__buf *body);

/* Appends srv->op to the journal; false when the journal has failed. */
bool meta__journal_op(struct meta_server *srv);

/* Records that partition (topic, index, gid) changed at the op just journaled. */
void meta__notice(struct meta_server *srv, const struct kp_uuid *topic, int32_t partition,
                  uint32_t gid);

/* Adds / removes a watch of gid by c. */
void meta__watch(struct meta_server *srv, struct meta__conn *c, uint32_t gid);
void meta__unwatch(struct meta_server *srv, struct meta__conn *c, uint32_t gid);

/* Encodes a push (MetaNotifyResponse body) for the given partitions into `body`. */
int meta__encode_notify(struct meta_server *srv, const struct meta__notice *n, size_t count,
                        struct meta__buf *body);

/* Frames: begin writes size placeholder and response header v1, end patches the size. */
void meta__frame_begin(struct meta__buf *f, int32_t correlation_id);
void meta__frame_end(struct meta__buf *f);
/* Writes a complete frame to c (takes ownership of `frame`). */
void meta__send(struct meta__conn *c, struct meta__buf *frame);

/* Consumer groups (group_rpc.c): the MetaGroup api, the coordinator's timer and pushes. */
struct kp_meta_group_request;
struct kp_meta_group_response;
int meta__group_call(struct meta_server *srv, struct meta__conn *c,
                     const struct kp_meta_group_request *rq, int64_t now, struct kp_arena *a,
                     struct kp_meta_group_response *rs);
void meta__groups_open(struct meta_server *srv);  /* before the loop runs: timer, emit hook */
void meta__groups_start(struct meta_server *srv); /* starts the timer */
void meta__groups_flush(struct meta_server *srv); /* sends pushes that are durable */
void meta__groups_conn_closed(struct meta_server *srv, struct meta__conn *c);
void meta__groups_free(struct meta_server *srv); /* after the timer handle closed */

#endif
