/*
 * Consumer groups at the agent: FindCoordinator (v0-4, batched keys from v4) answered here, and
 * the group apis (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch,
 * DescribeGroups, ListGroups, DeleteGroups, OffsetDelete) forwarded to the coordinator in the
 * metadata service as one MetaGroup RPC each (see docs/groups.md).
 *
 * Every agent is the coordinator of every group, as far as clients can tell: FindCoordinator
 * names this agent (its advertised address, as Metadata does), and the state lives in the
 * metadata service, so any agent answers for any group and ListGroups lists each group once.
 *
 * A forwarded request carries a ticket. The service answers at once, or with Parked = true for
 * a JoinGroup/SyncGroup that waits for a rebalance; the Kafka answer then arrives as a push
 * (MetaNotifyResponse.GroupReplies) carrying the ticket. The push may overtake the Parked reply,
 * so an operation ends when it has both its RPC reply and its answer. When the metadata
 * connection drops, waiting requests are answered with COORDINATOR_NOT_AVAILABLE where the api
 * has a single error code, and otherwise the client connection is closed (clients treat both as
 * a coordinator failure: they look the coordinator up again and retry). On shutdown, parked
 * requests are failed the same way at once.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "handlers.h"
#include "runnel/common/log.h"
#include "runnel/protocol/errors.h"

#define AGENT__RPC_GROUP 1020 /* MetaGroup (protocol/spec/MetaGroupRequest.json) */
#define AGENT__K_JOIN 11
#define AGENT__K_HEARTBEAT 12
#define AGENT__K_LEAVE 13
#define AGENT__K_SYNC 14
#define AGENT__K_LIST 16

struct agent__gop {
    struct agent *a;         /* owner */
    struct agent_req *req;   /* the Kafka request; NULL once answered */
    int64_t ticket;          /* number sent with the MetaGroup request */
    bool rpc_done;           /* the MetaGroup reply (or its failure) arrived */
    struct agent__gop *prev; /* list of live operations */
    struct agent__gop *next;
};

static struct agent__gop *agent__gops; /* every live operation (the loop is single-threaded) */
static int64_t agent__next_ticket;

static void agent__gop_unlink_free(struct agent__gop *op)
{
    if (op->prev != NULL) {
        op->prev->next = op->next;
    } else {
        agent__gops = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    }
    free(op);
}

/* Frees the operation once both its reply and its answer are in. */
static void agent__gop_maybe_free(struct agent__gop *op)
{
    if (op->rpc_done && op->req == NULL) {
        agent__gop_unlink_free(op);
    }
}

/* Answers the Kafka request from a response body the coordinator encoded at its version. */
static void agent__gop_answer(struct agent__gop *op, const struct kp_bytes *body)
{
    struct agent_req *req = op->req;
    op->req = NULL;
    const struct kp_api *api = req->api;
    void *msg = kp_arena_alloc(&req->arena, api->response->struct_size);
    if (msg == NULL) {
        agent_req_close_conn(req, "group answer too large");
        return;
    }
    api->response->init(msg);
    struct kp_reader r;
    kp_reader_init(&r, body->ptr, body->len > 0 ? (size_t)body->len : 0);
    if (api->response->decode(&r, req->hdr.request_api_version, &req->arena, msg) != 0 ||
        r.err != 0) {
        rn_log(RN_LOG_ERROR, "group_answer_undecodable", "api=%s version=%d", api->name,
               req->hdr.request_api_version);
        agent_req_close_conn(req, "undecodable group answer");
        return;
    }
    agent_req_respond(req, msg);
}

/* The coordinator cannot be reached: a retriable error, or a closed connection. */
static void agent__gop_fail(struct agent__gop *op, const char *why)
{
    struct agent_req *req = op->req;
    op->req = NULL;
    int16_t v = req->hdr.request_api_version;
    switch (req->hdr.request_api_key) {
    case AGENT__K_JOIN: {
        struct kp_join_group_response rs;
        kp_join_group_response_init(&rs);
        rs.error_code = KP_ERROR_COORDINATOR_NOT_AVAILABLE;
        rs.generation_id = -1;
        rs.protocol_name = v >= 7 ? KP_STR_NULL : kp_str_from("");
        rs.leader = kp_str_from("");
        rs.member_id = kp_str_from("");
        agent_req_respond(req, &rs);
        return;
    }
    case AGENT__K_SYNC: {
        struct kp_sync_group_response rs;
        kp_sync_group_response_init(&rs);
        rs.error_code = KP_ERROR_COORDINATOR_NOT_AVAILABLE;
        agent_req_respond(req, &rs);
        return;
    }
    case AGENT__K_HEARTBEAT: {
        struct kp_heartbeat_response rs;
        kp_heartbeat_response_init(&rs);
        rs.error_code = KP_ERROR_COORDINATOR_NOT_AVAILABLE;
        agent_req_respond(req, &rs);
        return;
    }
    case AGENT__K_LEAVE: {
        struct kp_leave_group_response rs;
        kp_leave_group_response_init(&rs);
        rs.error_code = KP_ERROR_COORDINATOR_NOT_AVAILABLE;
        agent_req_respond(req, &rs);
        return;
    }
    case AGENT__K_LIST: {
        struct kp_list_groups_response rs;
        kp_list_groups_response_init(&rs);
        rs.error_code = KP_ERROR_COORDINATOR_NOT_AVAILABLE;
        agent_req_respond(req, &rs);
        return;
    }
    default:
        agent_req_close_conn(req, why);
        return;
    }
}

static void agent__gop_rpc_cb(void *arg, int status, const void *response)
{
    struct agent__gop *op = arg;
    const struct kp_meta_group_response *rs = response;
    op->rpc_done = true;
    if (op->req != NULL) {
        if (status != 0) {
            agent__gop_fail(op, "metadata service unavailable");
        } else if (rs->error_code != 0) {
            rn_log(RN_LOG_WARN, "group_rpc_refused", "error=%d", rs->error_code);
            agent__gop_fail(op, "group request refused by the metadata service");
        } else if (!rs->parked) {
            agent__gop_answer(op, &rs->body);
        }
    }
    agent__gop_maybe_free(op);
}

void agent_groups_on_notify(struct agent *a, const struct kp_meta_notify_response *n)
{
    for (int32_t i = 0; i < n->group_replies_count; i++) {
        const struct kp_meta_notify_response_meta_group_reply *g = &n->group_replies[i];
        for (struct agent__gop *op = agent__gops; op != NULL; op = op->next) {
            if (op->a == a && op->ticket == g->ticket) {
                if (op->req != NULL) {
                    agent__gop_answer(op, &g->body);
                }
                agent__gop_maybe_free(op);
                break;
            }
        }
    }
}

void agent_groups_on_meta_state(struct agent *a, bool connected)
{
    if (connected) {
        return;
    }
    /* Parked answers would have come over the lost connection: give up on them. */
    for (struct agent__gop *op = agent__gops, *next; op != NULL; op = next) {
        next = op->next;
        if (op->a != a) {
            continue;
        }
        if (op->req != NULL && op->rpc_done) {
            agent__gop_fail(op, "metadata service connection lost");
        }
        agent__gop_maybe_free(op);
    }
}

void agent_groups_drain(struct agent *a)
{
    for (struct agent__gop *op = agent__gops, *next; op != NULL; op = next) {
        next = op->next;
        if (op->a != a) {
            continue;
        }
        if (op->req != NULL && op->rpc_done) { /* parked; the others are answered soon */
            agent__gop_fail(op, "agent stopping");
        }
        agent__gop_maybe_free(op);
    }
}

/* Forwards the decoded request (re-encoded at its version) as a MetaGroup RPC. */
void agent_handle_group_api(struct agent_req *req)
{
    struct agent *a = req->conn->agent;
    const struct kp_api *api = req->api;
    int16_t v = req->hdr.request_api_version;
    size_t size = 0;
    if (api->request->size(req->body, v, &size) != 0) {
        agent_req_close_conn(req, "group request cannot be re-encoded");
        return;
    }
    uint8_t *buf = kp_arena_alloc(&req->arena, size + 1);
    if (buf == NULL) {
        agent_req_close_conn(req, "group request too large");
        return;
    }
    struct kp_writer w;
    kp_writer_init(&w, buf, size);
    if (api->request->encode(req->body, v, &w) != 0 || w.err != 0) {
        agent_req_close_conn(req, "group request cannot be re-encoded");
        return;
    }
    /* Kafka reports a member's host as "/ip". */
    char host[80];
    snprintf(host, sizeof(host), "/%s", req->conn->peer);
    char *colon = strrchr(host, ':');
    if (colon != NULL) {
        *colon = '\0';
    }
    struct kp_meta_group_request rq;
    kp_meta_group_request_init(&rq);
    struct agent__gop *op = kp_xcalloc(1, sizeof(*op));
    op->a = a;
    op->req = req;
    op->ticket = ++agent__next_ticket;
    rq.ticket = op->ticket;
    rq.api_key = req->hdr.request_api_key;
    rq.api_version = v;
    rq.client_id = req->hdr.client_id;
    rq.client_host = kp_str_from(host);
    rq.body = (struct kp_bytes){buf, (int32_t)kp_writer_len(&w)};
    op->next = agent__gops;
    if (agent__gops != NULL) {
        agent__gops->prev = op;
    }
    agent__gops = op;
    int rc = a->meta != NULL
                 ? meta_client_call(a->meta, AGENT__RPC_GROUP, &rq, agent__gop_rpc_cb, op)
                 : -ENOTCONN;
    if (rc != 0) {
        op->rpc_done = true;
        agent__gop_fail(op, "metadata service unavailable");
        agent__gop_maybe_free(op);
    }
}

void agent_handle_find_coordinator(struct agent_req *req)
{
    struct agent *a = req->conn->agent;
    const struct kp_find_coordinator_request *q = req->body;
    int16_t v = req->hdr.request_api_version;
    struct kp_find_coordinator_response rs;
    kp_find_coordinator_response_init(&rs);
    /* Groups (0) and transactions (1): this agent answers for every key. */
    int16_t err = (v >= 1 && q->key_type != 0 && q->key_type != 1) ? KP_ERROR_INVALID_REQUEST : 0;
    if (v < 4) {
        rs.error_code = err;
        rs.error_message = err != 0 ? kp_str_from("unknown key type") : KP_STR_NULL;
        rs.node_id = err != 0 ? -1 : (int32_t)a->cfg.node_id;
        rs.host = kp_str_from(err != 0 ? "" : a->adv_host);
        rs.port = err != 0 ? -1 : a->adv_port;
        agent_req_respond(req, &rs);
        return;
    }
    int32_t n = q->coordinator_keys_count > 0 ? q->coordinator_keys_count : 0;
    rs.coordinators = kp_arena_calloc(&req->arena, (size_t)n + 1, sizeof(*rs.coordinators));
    if (rs.coordinators == NULL) {
        agent_req_close_conn(req, "too many coordinator keys");
        return;
    }
    rs.coordinators_count = n;
    for (int32_t i = 0; i < n; i++) {
        struct kp_find_coordinator_response_coordinator *c = &rs.coordinators[i];
        kp_find_coordinator_response_coordinator_init(c);
        c->key = q->coordinator_keys[i];
        c->error_code = err;
        c->error_message = err != 0 ? kp_str_from("unknown key type") : KP_STR_NULL;
        c->node_id = err != 0 ? -1 : (int32_t)a->cfg.node_id;
        c->host = kp_str_from(err != 0 ? "" : a->adv_host);
        c->port = err != 0 ? -1 : a->adv_port;
    }
    agent_req_respond(req, &rs);
}
