/*
 * The agent's private header: the process-wide state (struct agent), Kafka connections and
 * requests, and the handler table. Everything here runs on the agent's single libuv loop
 * except sealing, which runs on the worker pool.
 *
 * A request's life: the connection reads a whole frame into memory the request owns, parses the
 * header, looks up the handler by api key, decodes the body into the request's arena and calls
 * the handler. The handler answers now or later (produce waits for the flush and commit, fetch
 * long-polls) with agent_req_respond(); responses leave each connection in request order,
 * whatever order handlers finish in.
 */
#ifndef RUNNEL_AGENT_H
#define RUNNEL_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "kp_messages.h"
#include "kp_rpc.h"
#include "runnel/metadata/client.h"
#include "runnel/protocol/codec.h"
#include "runnel/protocol/mem.h"
#include "runnel/storage/store.h"

struct meta_server;

struct agent;
struct agent_conn;
struct agent_req;
struct agent_produce;
struct agent_fetch;
struct agent_topics;
struct agent_obs;
struct agent_peers;

/* Settings of one agent process (see docs/configuration.md). */
struct agent_config {
    char *listen;               /* host:port the Kafka listener binds */
    char *advertise;            /* host:port put in Metadata responses; empty: listen address */
    char *metadata;             /* host:port of the metadata service ("" inside runnel dev) */
    char *bucket;               /* object store URL: s3://..., file:///..., mem:// */
    char *cluster_id;           /* reported in Metadata and DescribeCluster */
    int64_t node_id;            /* broker id this agent reports */
    int64_t max_frame_bytes;    /* largest request frame accepted */
    int64_t max_connections;    /* further connections are closed at accept */
    int64_t idle_timeout_ms;    /* connections idle this long are closed */
    int64_t flush_interval_ms;  /* age at which the open object is sealed */
    int64_t flush_bytes;        /* size at which the open object is sealed */
    int64_t buffer_max_bytes;   /* produce bytes buffered + in flight before reads pause */
    int64_t cache_bytes;        /* chunk cache capacity */
    int64_t cache_block_bytes;  /* objects are read in blocks of this size; 0: the default */
    int64_t zstd_level;         /* compression level of sealed chunks */
    bool auto_create_topics;    /* auto.create.topics.enable */
    int64_t default_partitions; /* num.partitions for auto-created topics */
    char *log_level;            /* error, warn, info, debug */
    char *log_format;           /* logfmt or json */
    char *data_dir;             /* runnel dev only: metadata journal and file store live here */
    bool dev;                   /* runnel dev: metadata service in-process */
    char *cluster_mode;         /* "lb" (one broker: the balancer) or "direct" (see cluster.c) */
    char *zone;                 /* availability zone registered in direct mode; may be empty */
    int64_t heartbeat_ms;       /* direct mode: interval between heartbeats */
    int64_t session_timeout_ms; /* direct mode: forgotten this long after the last heartbeat */
    char *peer_address;         /* lb mode: host:port peers reach this agent at; may be NULL */
    char *http_listen;          /* host:port of /metrics, /healthz, /readyz; empty: none */
};

/* A handler answers one request; see agent_req_respond(). */
typedef void (*agent_handler_fn)(struct agent_req *req);

struct agent_api {
    int16_t key;         /* Kafka api key */
    int16_t min_version; /* lowest advertised version */
    int16_t max_version; /* highest advertised version */
    agent_handler_fn fn; /* NULL: decoded but answered with the generic error */
};

/* A run of response bytes sent from the memory it lives in (agent_req_respond_gather). */
struct agent_run {
    size_t at;          /* sent after the first `at` bytes of the encoded buffer */
    const uint8_t *ptr; /* the bytes, valid until the request's release callback */
    size_t len;         /* count */
};

struct agent_req {
    struct agent_conn *conn;      /* NULL once the connection closed under a pending request */
    struct agent_req *next;       /* next request of the same connection, in arrival order */
    struct kp_arena arena;        /* decoded request and response live here */
    uint8_t *frame;               /* the request bytes (after the size), owned */
    size_t frame_len;             /* bytes */
    struct kp_request_header hdr; /* parsed header; client_id is a view into frame */
    const struct kp_api *api;     /* generated codec entry for hdr.request_api_key */
    void *body;                   /* decoded request body (arena) */
    uint8_t *resp;                /* encoded response frame including the size, owned */
    size_t resp_len;              /* bytes of the frame, claimed runs included */
    size_t resp_claimed;          /* bytes of it in runs, not in resp */
    struct agent_run *runs;       /* claimed runs sent from where they are (malloc), in order */
    size_t n_runs;                /* count */
    size_t cap_runs;              /* allocated */
    void (*release)(void *arg);   /* runs once the frame was written or dropped, or NULL */
    void *release_arg;            /* its argument */
    bool done;                    /* response ready (or none due) */
    bool silent;                  /* no response is sent (Produce acks=0) */
    uint64_t started_ms;          /* loop time when the request was dispatched */
    uint64_t started_ns;          /* uv_hrtime() at dispatch, for the latency metric (obs.c) */
};

struct agent__pctx; /* produce.c */

struct agent_conn {
    struct agent *agent;     /* owner */
    uv_tcp_t tcp;            /* the socket; the conn is freed in its close callback */
    uv_timer_t idle;         /* closes the connection after idle_timeout_ms */
    struct agent_conn *prev; /* list of live connections */
    struct agent_conn *next;
    uint8_t *stage;                   /* small-read staging buffer */
    size_t stage_len;                 /* bytes held in stage */
    size_t stage_cap;                 /* bytes */
    uint8_t *big;                     /* frame being read directly into its own buffer, or NULL */
    size_t big_len;                   /* bytes of big filled so far */
    size_t big_need;                  /* bytes big will hold */
    struct agent_req *head;           /* oldest request awaiting its response */
    struct agent_req *tail;           /* newest request */
    int pending;                      /* requests not yet answered */
    size_t writing;                   /* response bytes handed to uv_write and not yet written */
    bool reading;                     /* uv_read_start is active */
    bool closing;                     /* uv_close has been called */
    char peer[64];                    /* "ip:port" of the client, for logs */
    struct agent__pctx *produce_last; /* its newest Produce request waiting for a lookup */
    bool dirty;                       /* on agent.dirty */
    struct agent_conn *dirty_next;    /* agent.dirty list */
};

/* One live agent as the metadata service reported it (direct mode). */
struct agent_peer {
    int32_t id;   /* node id */
    char *host;   /* advertised host, owned */
    int32_t port; /* advertised port */
    char *zone;   /* availability zone, owned; "" when none */
};

/* A broker as one client sees it: views into agent_peer or the agent's own settings. */
struct agent_broker {
    int32_t id;       /* node id */
    const char *host; /* NUL-terminated */
    int32_t port;
    const char *zone; /* NULL or "" when none */
};

/* Membership state (cluster.c): direct mode, or load-balancer mode with a peer address (the
 * agent then registers only to find the peers it shares object blocks with); else all zero. */
struct agent_cluster {
    bool direct;         /* cluster.mode=direct */
    bool peers_only;     /* lb mode, registered at peer_host:peer_port for block sharing */
    char peer_host[256]; /* lb mode: the address registered */
    int peer_port;
    bool registered;          /* holds a registration (id, epoch) the service accepted */
    bool in_flight;           /* a register or heartbeat RPC is outstanding */
    bool timer_started;       /* hb is initialised (closed at shutdown) */
    int32_t want_id;          /* id to ask for at the next registration; -1: any */
    int32_t id;               /* registered id */
    int64_t epoch;            /* registration epoch */
    uv_timer_t hb;            /* heartbeat_ms period */
    struct agent_peer *peers; /* live agents from the last heartbeat answer, sorted by id */
    size_t n_peers;
};

struct agent {
    uv_loop_t *loop;               /* the agent's loop */
    struct agent_config cfg;       /* settings */
    uv_tcp_t listener;             /* Kafka listener */
    struct agent_conn *conns;      /* live connections */
    int64_t n_conns;               /* count of conns */
    int cork;                      /* > 0: responses are collected, sent at agent_uncork() */
    struct agent_conn *dirty;      /* connections with responses held by the cork */
    char meta_addr[300];           /* host:port of the metadata service in use */
    char adv_host[256];            /* advertised host */
    int adv_port;                  /* advertised port */
    size_t buffered_bytes;         /* produce bytes held for flushing or awaiting commit */
    bool paused;                   /* reads paused for backpressure */
    bool stopping;                 /* SIGTERM received: no new connections or requests */
    struct agent_produce *produce; /* write path state (produce.c) */
    struct agent_fetch *fetch;     /* read path state (fetch.c) */
    struct agent_topics *topics;   /* topic cache (topics.c) */
    struct meta_client *meta;      /* metadata service connection */
    struct store *store;           /* object store */
    struct meta_server *dev_meta;  /* runnel dev: the in-process metadata service */
    struct agent_obs *obs;         /* metrics and readiness (obs.c) */
    struct agent_peers *peers;     /* object blocks shared with other agents (peer.c) */
    uv_signal_t sigterm;           /* orderly shutdown */
    uv_signal_t sigint;
    uv_timer_t grace;             /* bounds how long shutdown waits for clients */
    struct agent_cluster cluster; /* direct-mode membership (cluster.c) */
};

/* ---- Topic cache (topics.c) ---- */

/* What the agent knows of a topic; owned by the cache, valid until the next cache refresh of
 * that topic on the loop (do not keep pointers across callbacks; copy what you need). */
struct agent_topic {
    char *name;                /* NUL-terminated */
    struct kp_uuid id;         /* topic id */
    int32_t partitions;        /* partition count */
    int64_t max_message_bytes; /* max.message.bytes */
    bool log_append_time;      /* message.timestamp.type=LogAppendTime */
    bool compact;              /* cleanup.policy contains compact */
    uint64_t fetched_ms;       /* loop time of the last refresh */
    struct agent_topic *next;  /* hash chain */
};

/*
 * Completion of agent_topics_get(): `topics[i]` answers `names[i]` of the request (NULL when the
 * topic does not exist, or its creation failed: errors[i] holds the Kafka error code then).
 * status is 0 or a negative errno when the metadata service could not be asked (the caller
 * answers with a retriable error then).
 */
typedef void (*agent_topics_cb)(void *arg, int status, struct agent_topic **topics,
                                const int16_t *errors, size_t n);

/*
 * Looks up `n` topics by name, from the cache when fresh (younger than 1 s... see topics.c) or
 * from the metadata service; with `auto_create`, topics that do not exist are created with
 * num.partitions first (Kafka's auto.create.topics.enable). `names` is copied. The callback may
 * run before this returns when everything was cached.
 */
void agent_topics_get(struct agent *a, const struct kp_str *names, size_t n, bool auto_create,
                      agent_topics_cb cb, void *arg);

/* Every topic the metadata service has (Metadata with a null topic list). */
void agent_topics_get_all(struct agent *a, agent_topics_cb cb, void *arg);

/* Cached entry by name or id, or NULL (never asks the metadata service). */
struct agent_topic *agent_topic_cached(struct agent *a, struct kp_str name);
struct agent_topic *agent_topic_by_id(struct agent *a, const struct kp_uuid *id);

/* Frees the cache (shutdown). */
void agent_topics_free(struct agent *a);

/* Drops a cached entry (after CreatePartitions, DeleteTopics, AlterConfigs). */
void agent_topics_invalidate(struct agent *a, struct kp_str name);

/* ---- Many agents (cluster.c) ---- */

/* Validates cluster.mode; in direct mode starts registering and heartbeating. 0 or -EINVAL. */
int agent_cluster_init(struct agent *a);
/* Stops the heartbeat timer and frees the peer list (shutdown). */
void agent_cluster_free(struct agent *a);
/*
 * The numeric local address this host's route to host:port leaves from (no packet is sent):
 * what a load-balancer-mode agent listening on a wildcard registers as its peer address. 0, or a
 * negative errno when host does not resolve or has no route.
 */
int agent_cluster_route_addr(const char *host, int port, char *out, size_t outlen);

/*
 * The brokers a client should see, sorted by id, in an array allocated from `arena`: in
 * load-balancer mode this agent alone at the advertised address; in direct mode the live agents,
 * only those of the client's zone when `client_id` carries runnel_az=ZONE and some live agent is
 * in that zone. Never empty: before the first heartbeat answer it is this agent alone. Returns
 * the count (0 only when the arena is exhausted).
 */
size_t agent_cluster_view(struct agent *a, struct kp_str client_id, struct kp_arena *arena,
                          struct agent_broker **out);

/* The broker of `view` that leads (topic, partition): rendezvous hashing, so each agent keeps a
 * stable share and only the partitions of an agent that leaves or joins move. n >= 1. */
int32_t agent_cluster_leader(const struct agent_broker *view, size_t n, const struct kp_uuid *topic,
                             int32_t partition);

/* The zone named by a runnel_az=ZONE element of a client.id; false when there is none. */
bool agent_cluster_client_zone(struct kp_str client_id, struct kp_str *zone);

/* ---- Object blocks shared between agents (peer.c) ---- */

/* Hooks the fetch path's cache up to the other agents (after agent_fetch_init). 0 or -EINVAL. */
int agent_peers_init(struct agent *a);
/* Fails the requests to peers in flight (their blocks are read from the store) and frees the
 * peer connections once the loop ran their close callbacks. Call before agent_fetch_free. */
void agent_peers_free(struct agent *a);
/* The owner of block `index` of `key` among `peers` (rendezvous hashing): among the peers of
 * `zone` when it is not NULL or "" and some peer is in it (each zone reads a block from the store
 * once, and blocks do not cross zones), else among all. NULL when n is 0. */
const struct agent_peer *agent_block_owner(const struct agent_peer *peers, size_t n,
                                           const char *zone, const char *key, uint32_t index);

/* ---- Hooks of the write and read paths, called by agent_run() ---- */

int agent_produce_init(struct agent *a); /* produce.c */
/* Seals and uploads what is buffered and waits for every commit; then calls done(a). */
void agent_produce_drain(struct agent *a, void (*done)(struct agent *a));
void agent_produce_free(struct agent *a);

int agent_fetch_init(struct agent *a); /* fetch.c */
/* A high-watermark push from the metadata service. */
void agent_fetch_on_notify(struct agent *a, const struct kp_meta_notify_response *n);
/* The metadata connection came up (re-watch) or went down. */
void agent_fetch_on_meta_state(struct agent *a, bool connected);
/*
 * Hands a freshly sealed object (`len` bytes, copied) to the read path's chunk cache so that
 * consumers at the tail are served from memory (fetch.c). Call after the PUT succeeded.
 */
void agent_cache_put_object(struct agent *a, const char *key, const uint8_t *obj, size_t len);
/* Answers every parked fetch now (shutdown). */
void agent_fetch_drain(struct agent *a);
void agent_fetch_free(struct agent *a);

/* ---- Consumer groups (groups.c) ---- */

/* Parked group answers pushed by the metadata service. */
void agent_groups_on_notify(struct agent *a, const struct kp_meta_notify_response *n);
/* The metadata connection went down: parked group requests are failed. */
void agent_groups_on_meta_state(struct agent *a, bool connected);
/* Shutdown: group requests still waiting (a JoinGroup may wait minutes) are failed now, with
 * COORDINATOR_NOT_AVAILABLE, so their clients move to another agent. */
void agent_groups_drain(struct agent *a);

/* Runs the agent until SIGTERM/SIGINT: store, metadata, listener, loop. 0 on a clean stop. */
int agent_run(struct agent *a);

/* Handler table (handlers.c). Returns the entry for `key` or NULL when not served. */
const struct agent_api *agent_api_find(int16_t key);
/* Every served api in key order, for ApiVersions; *n receives the count. */
const struct agent_api *agent_api_all(size_t *n);
/* Runnel's own apis served on the Kafka listener to other agents (never advertised), or NULL. */
const struct agent_api *agent_api_internal_find(int16_t key);

/* Starts the listener on cfg.listen. 0 or a negative errno (logged). */
int agent_server_start(struct agent *a);
/* Stops accepting and closes idle connections; pending requests are still answered. */
void agent_server_stop(struct agent *a);

/*
 * Encodes `msg` (a response struct of req->api) at the request's version with the response
 * header, marks the request done and sends every response that is now first in line. On an
 * encoding failure the connection is closed (a bug, logged). The request is freed once sent.
 */
void agent_req_respond(struct agent_req *req, const void *msg);
/*
 * Like agent_req_respond(), but long byte runs of `msg` that `g` claims are not copied: g's claim
 * records each with agent_req_add_run() and those bytes are written to the socket from where they
 * are. They must stay valid and unchanged until release(arg) runs, which happens exactly once,
 * after the frame was written or dropped (also when this call fails or the client is gone).
 */
void agent_req_respond_gather(struct agent_req *req, const void *msg, struct kp_gather *g,
                              void (*release)(void *arg), void *arg);
/* Records a claimed run (for a kp_gather claim callback during agent_req_respond_gather()). */
void agent_req_add_run(struct agent_req *req, size_t at, const uint8_t *ptr, size_t len);
/* Like agent_req_respond() with header and body already encoded (without the size field). */
void agent_req_respond_bytes(struct agent_req *req, struct kp_bytes hdr_and_body);
/* Marks the request done without a response (acks=0). */
void agent_req_finish_silent(struct agent_req *req);
/* Closes the request's connection (Kafka's answer to some malformed requests). */
void agent_req_close_conn(struct agent_req *req, const char *why);

/*
 * Between agent_cork() and the matching agent_uncork(), responses are not written as they are
 * made but collected per connection; the uncork writes each connection's with one write (one
 * writev) instead of one per response. For code that answers many requests at once (a commit
 * answers every request in its object). Nests.
 */
void agent_cork(struct agent *a);
void agent_uncork(struct agent *a);

/* Pauses or resumes reading on every connection (backpressure). */
void agent_server_set_paused(struct agent *a, bool paused);

#endif
