/*
 * Metadata (v0-12) and DescribeCluster (v0-1).
 *
 * The brokers come from cluster.c: in load-balancer mode (the default) the whole cluster is one
 * broker, this agent's node id at the advertised host:port, leader of every partition; in direct
 * mode the live agents (of the client's zone when it names one), each partition led by its
 * rendezvous choice among them, itself the only replica and ISR member. Any agent serves any
 * request either way, so leadership only steers clients towards a warm cache.
 *
 * Topic lists follow Kafka: v0 with an empty list and v1+ with a null list mean every topic;
 * unknown topics are created when auto.create.topics.enable is on and the request allows it (v4+
 * says so explicitly; before v4 it is always allowed), otherwise answered with
 * UNKNOWN_TOPIC_OR_PARTITION. Topic lookups by id (v10+ with a null name) use the cache.
 */
#include <errno.h>
#include <string.h>

#include "agent.h"
#include "handlers.h"
#include "runnel/protocol/errors.h"

#define AGENT__NO_AUTH_OPS INT32_MIN /* "authorized operations not requested" */

/* The brokers one request's client sees (cluster.c) and the controller among them. */
struct agent__view {
    struct agent_broker *b; /* arena */
    size_t n;
    int32_t controller; /* this agent when it is shown, else the lowest id shown */
};

static int agent__view(struct agent *a, struct agent_req *req, struct agent__view *v)
{
    v->n = agent_cluster_view(a, req->hdr.client_id, &req->arena, &v->b);
    if (v->n == 0) {
        return -ENOMEM;
    }
    v->controller = v->b[0].id;
    for (size_t i = 0; i < v->n; i++) {
        if (v->b[i].id == (int32_t)a->cfg.node_id) {
            v->controller = v->b[i].id;
        }
    }
    return 0;
}

static struct kp_str agent__rack(const char *zone)
{
    return zone != NULL && zone[0] != '\0' ? kp_str_from(zone) : KP_STR_NULL;
}

static void agent__fill_brokers(struct agent *a, struct kp_metadata_response *r,
                                struct agent_req *req, const struct agent__view *v)
{
    r->brokers = kp_arena_calloc(&req->arena, v->n, sizeof(*r->brokers));
    r->brokers_count = r->brokers != NULL ? (int32_t)v->n : 0;
    for (int32_t i = 0; i < r->brokers_count; i++) {
        kp_metadata_response_metadata_response_broker_init(&r->brokers[i]);
        r->brokers[i].node_id = v->b[i].id;
        r->brokers[i].host = kp_str_from(v->b[i].host);
        r->brokers[i].port = v->b[i].port;
        r->brokers[i].rack = agent__rack(v->b[i].zone);
    }
    r->cluster_id = kp_str_from(a->cfg.cluster_id);
    r->controller_id = v->controller;
}

/* Fills one response topic from a cache entry (or an error when t is NULL). Each partition's
 * leader is its rendezvous choice among the brokers shown, its only replica and ISR member. */
static void agent__fill_topic(struct agent_req *req, const struct agent__view *v,
                              struct kp_metadata_response_metadata_response_topic *out,
                              const struct agent_topic *t, struct kp_str name, int16_t error)
{
    kp_metadata_response_metadata_response_topic_init(out);
    out->topic_authorized_operations = AGENT__NO_AUTH_OPS;
    out->partitions_count = 0;
    out->partitions = NULL;
    if (t == NULL) {
        out->error_code = error != 0 ? error : KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
        out->name = name;
        return;
    }
    size_t nlen = strlen(t->name);
    char *copy = kp_arena_memdup(&req->arena, t->name, nlen);
    out->name = (struct kp_str){copy, (int32_t)nlen};
    out->topic_id = t->id;
    out->is_internal = false;
    out->partitions = kp_arena_calloc(&req->arena, (size_t)t->partitions, sizeof(*out->partitions));
    int32_t *leaders = kp_arena_calloc(&req->arena, (size_t)t->partitions + 1, sizeof(int32_t));
    if (out->partitions == NULL || leaders == NULL || copy == NULL) {
        out->error_code = KP_ERROR_UNKNOWN_SERVER_ERROR;
        out->partitions_count = 0;
        return;
    }
    out->partitions_count = t->partitions;
    for (int32_t p = 0; p < t->partitions; p++) {
        struct kp_metadata_response_metadata_response_partition *mp = &out->partitions[p];
        kp_metadata_response_metadata_response_partition_init(mp);
        leaders[p] = v->n == 1 ? v->b[0].id : agent_cluster_leader(v->b, v->n, &t->id, p);
        mp->partition_index = p;
        mp->leader_id = leaders[p];
        mp->leader_epoch = 0;
        mp->replica_nodes = &leaders[p];
        mp->replica_nodes_count = 1;
        mp->isr_nodes = &leaders[p];
        mp->isr_nodes_count = 1;
        mp->offline_replicas = NULL;
        mp->offline_replicas_count = 0;
    }
}

static void agent__metadata_answer(void *arg, int status, struct agent_topic **topics,
                                   const int16_t *errors, size_t n)
{
    struct agent_req *req = arg;
    if (req->conn == NULL) {
        agent_req_respond(req, NULL); /* frees it */
        return;
    }
    struct agent *a = req->conn->agent;
    const struct kp_metadata_request *q = req->body;
    struct kp_metadata_response r;
    kp_metadata_response_init(&r);
    struct agent__view v;
    if (agent__view(a, req, &v) != 0) {
        agent_req_close_conn(req, "out of request memory");
        return;
    }
    agent__fill_brokers(a, &r, req, &v);
    r.cluster_authorized_operations = AGENT__NO_AUTH_OPS;
    r.topics = kp_arena_calloc(&req->arena, n ? n : 1, sizeof(*r.topics));
    r.topics_count = (int32_t)n;
    for (size_t i = 0; i < n; i++) {
        struct kp_str name = KP_STR_NULL;
        if (q->topics_count > 0 && i < (size_t)q->topics_count) {
            name = q->topics[i].name;
        }
        int16_t err = status != 0 ? KP_ERROR_LEADER_NOT_AVAILABLE : errors[i];
        agent__fill_topic(req, &v, &r.topics[i], status != 0 ? NULL : topics[i], name, err);
    }
    agent_req_respond(req, &r);
}

void agent_handle_metadata(struct agent_req *req)
{
    struct agent *a = req->conn->agent;
    const struct kp_metadata_request *q = req->body;
    int16_t version = req->hdr.request_api_version;
    bool all = q->topics_count < 0 || (version == 0 && q->topics_count == 0);
    if (all) {
        agent_topics_get_all(a, agent__metadata_answer, req);
        return;
    }
    size_t n = (size_t)q->topics_count;
    struct kp_str *names = kp_arena_calloc(&req->arena, n ? n : 1, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        names[i] = q->topics[i].name;
        if (names[i].len < 0) { /* v10+: by topic id */
            struct agent_topic *t = agent_topic_by_id(a, &q->topics[i].topic_id);
            names[i] = t != NULL ? kp_str_from(t->name) : kp_str_from("");
        }
    }
    bool allow = version < 4 || q->allow_auto_topic_creation;
    agent_topics_get(a, names, n, allow, agent__metadata_answer, req);
}

void agent_handle_describe_cluster(struct agent_req *req)
{
    struct agent *a = req->conn->agent;
    const struct kp_describe_cluster_request *q = req->body;
    struct kp_describe_cluster_response r;
    kp_describe_cluster_response_init(&r);
    r.endpoint_type = q->endpoint_type;
    if (req->hdr.request_api_version >= 1 && q->endpoint_type != 1) {
        /* Only the broker endpoint type (1) exists here; controllers are not exposed. */
        r.error_code = KP_ERROR_UNSUPPORTED_ENDPOINT_TYPE;
        r.error_message = kp_str_from("only broker endpoints (type 1) are served");
    }
    struct agent__view v;
    if (agent__view(a, req, &v) != 0) {
        agent_req_close_conn(req, "out of request memory");
        return;
    }
    r.cluster_id = kp_str_from(a->cfg.cluster_id);
    r.controller_id = v.controller;
    r.brokers = kp_arena_calloc(&req->arena, v.n, sizeof(*r.brokers));
    r.brokers_count = r.brokers != NULL ? (int32_t)v.n : 0;
    for (int32_t i = 0; i < r.brokers_count; i++) {
        kp_describe_cluster_response_describe_cluster_broker_init(&r.brokers[i]);
        r.brokers[i].broker_id = v.b[i].id;
        r.brokers[i].host = kp_str_from(v.b[i].host);
        r.brokers[i].port = v.b[i].port;
        r.brokers[i].rack = agent__rack(v.b[i].zone);
    }
    r.cluster_authorized_operations = AGENT__NO_AUTH_OPS;
    agent_req_respond(req, &r);
}
