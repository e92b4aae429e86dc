/*
 * Metrics and readiness of the metadata service (meta_obs.h). Request series are created once
 * per api key and kept in a table, so the per-request cost is two atomic adds and a histogram
 * observation. The request latency runs from the frame's arrival to its response being handed
 * to the socket, which for a mutation includes waiting for its journal record's fdatasync: the
 * MetaCommit series is the commit latency agents see, minus the network.
 */
#include "meta_obs.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "internal.h"
#include "kp_rpc.h"
#include "runnel/common/metrics.h"
#include "runnel/common/obs.h"
#include "runnel/metadata/groups.h"
#include "server_int.h"

#define META__OBS_FIRST_API 1000 /* Runnel's metadata api keys start here */
#define META__OBS_NAPIS 64       /* api keys 1000..1063 get their own series */

struct meta__obs {
    struct rn_metric_family *req_f;             /* requests by api */
    struct rn_metric_family *dur_f;             /* latency by api */
    struct rn_metric_family *err_f;             /* failures by api and reason */
    struct rn_metric *req[META__OBS_NAPIS + 1]; /* [NAPIS]: other keys */
    struct rn_metric *dur[META__OBS_NAPIS + 1];
    struct rn_metric *fsync_dur; /* journal fdatasync latency */
    struct rn_metric *fsync_err; /* failed fdatasyncs */
    struct rn_metric *topics;    /* bound gauges */
    struct rn_metric *partitions;
    struct rn_metric *objects;
    struct rn_metric *agents;
    struct rn_metric *conns;
    struct rn_metric *journal_bytes;
    struct rn_metric *failed;
    struct rn_metric *groups;       /* consumer groups */
    struct rn_metric_family *lag_f; /* consumer lag, collected at scrape time */
    struct rn_metric *snap_dur;     /* snapshot start to written */
    struct rn_metric *snap_written; /* snapshots by result */
    struct rn_metric *snap_failed;  /* snapshot failed */
};

static struct meta__obs meta__o;
static pthread_once_t meta__o_once = PTHREAD_ONCE_INIT;

static void meta__obs_init(void)
{
    struct rn_metrics *r = rn_metrics_global();
    meta__o.req_f = rn_metrics_counter(r, "runnel_meta_requests_total",
                                       "Requests the metadata service answered, by api.", "api");
    meta__o.dur_f = rn_metrics_histogram(
        r, "runnel_meta_request_duration_seconds",
        "Metadata request latency from arrival to response, including the wait for the journal "
        "fdatasync of a change (api=MetaCommit: commit latency).",
        "api", 1e9, rn_metrics_latency_bounds_ns, rn_metrics_latency_nbounds);
    meta__o.err_f = rn_metrics_counter(r, "runnel_meta_request_errors_total",
                                       "Metadata requests that failed: bad_request (connection "
                                       "closed) or storage (journal failed), by api.",
                                       "api,reason");
    meta__o.fsync_dur = rn_metric_get0(
        rn_metrics_histogram(r, "runnel_meta_journal_fsync_duration_seconds",
                             "Latency of the journal's fdatasync (one per group commit).", NULL,
                             1e9, rn_metrics_latency_bounds_ns, rn_metrics_latency_nbounds));
    meta__o.fsync_err = rn_metric_get0(rn_metrics_counter(
        r, "runnel_meta_journal_fsync_errors_total", "Journal fdatasync calls that failed.", NULL));
    meta__o.topics = rn_metric_get0(
        rn_metrics_gauge(r, "runnel_meta_topics", "Topics in the metadata state.", NULL));
    meta__o.partitions = rn_metric_get0(rn_metrics_gauge(
        r, "runnel_meta_partitions", "Partitions of all topics in the metadata state.", NULL));
    meta__o.objects = rn_metric_get0(rn_metrics_gauge(
        r, "runnel_meta_objects", "Objects the metadata state knows (live and unused).", NULL));
    meta__o.agents = rn_metric_get0(
        rn_metrics_gauge(r, "runnel_meta_agents",
                         "Agents registered (direct mode) whose heartbeat has not expired.", NULL));
    meta__o.conns = rn_metric_get0(rn_metrics_gauge(
        r, "runnel_meta_connections", "Open connections to the metadata service.", NULL));
    meta__o.journal_bytes = rn_metric_get0(rn_metrics_gauge(
        r, "runnel_meta_journal_bytes", "Bytes in the journal since the last snapshot.", NULL));
    meta__o.failed = rn_metric_get0(rn_metrics_gauge(
        r, "runnel_meta_journal_failed",
        "1 once a journal write or fdatasync failed (nothing is acknowledged after).", NULL));
    meta__o.groups = rn_metric_get0(
        rn_metrics_gauge(r, "runnel_meta_consumer_groups", "Consumer groups known.", NULL));
    meta__o.lag_f = rn_metrics_gauge(r, "runnel_meta_consumer_group_lag",
                                     "Records between a group's committed offset and the "
                                     "partition's high watermark.",
                                     "group,topic,partition");
    meta__o.snap_dur = rn_metric_get0(
        rn_metrics_histogram(r, "runnel_meta_snapshot_duration_seconds",
                             "Time from a snapshot's start until it was written.", NULL, 1e9,
                             rn_metrics_latency_bounds_ns, rn_metrics_latency_nbounds));
    struct rn_metric_family *snaps =
        rn_metrics_counter(r, "runnel_meta_snapshots_total", "Snapshots by result.", "result");
    meta__o.snap_written = rn_metric_get1(snaps, "written");
    meta__o.snap_failed = rn_metric_get1(snaps, "failed");
}

uint64_t meta__obs_now_ns(void)
{
    return uv_hrtime();
}

void meta__obs_fsync(uint64_t ns, int rc)
{
    pthread_once(&meta__o_once, meta__obs_init);
    rn_histogram_observe(meta__o.fsync_dur, ns);
    if (rc != 0) {
        rn_counter_add(meta__o.fsync_err, 1);
    }
}

void meta__obs_snapshot_done(uint64_t ns, bool ok)
{
    pthread_once(&meta__o_once, meta__obs_init);
    rn_histogram_observe(meta__o.snap_dur, ns);
    rn_counter_add(ok ? meta__o.snap_written : meta__o.snap_failed, 1);
}

static const char *meta__obs_api_name(int16_t key)
{
    const struct kp_api *api = kp_rpc_api_find(key);
    return api != NULL ? api->name : "unknown";
}

void meta__obs_request(int16_t api_key, uint64_t started_ns, const char *error)
{
    pthread_once(&meta__o_once, meta__obs_init);
    int i = api_key - META__OBS_FIRST_API;
    if (i < 0 || i >= META__OBS_NAPIS || kp_rpc_api_find(api_key) == NULL) {
        i = META__OBS_NAPIS;
    }
    if (meta__o.req[i] == NULL) {
        const char *name = meta__obs_api_name(api_key);
        meta__o.req[i] = rn_metric_get1(meta__o.req_f, name);
        meta__o.dur[i] = rn_metric_get1(meta__o.dur_f, name);
    }
    rn_counter_add(meta__o.req[i], 1);
    rn_histogram_observe(meta__o.dur[i], uv_hrtime() - started_ns);
    if (error != NULL) {
        rn_counter_add(rn_metric_get2(meta__o.err_f, meta__obs_api_name(api_key), error), 1);
    }
}

static int64_t meta__obs_topics(void *arg)
{
    return ((struct meta_server *)arg)->state.n_topics;
}

static int64_t meta__obs_partitions(void *arg)
{
    const struct meta_state *st = &((struct meta_server *)arg)->state;
    int64_t n = 0;
    for (uint32_t i = 0; i < st->n_topics; i++) {
        n += st->topics[i].n_parts;
    }
    return n;
}

static int64_t meta__obs_objects(void *arg)
{
    return ((struct meta_server *)arg)->state.n_objects;
}

static int64_t meta__obs_agents(void *arg)
{
    const struct meta_state *st = &((struct meta_server *)arg)->state;
    int64_t now = meta__now_ms();
    int64_t n = 0;
    for (uint32_t i = 0; i < st->n_agents; i++) {
        n += meta_agent_live(&st->agents[i], now) ? 1 : 0;
    }
    return n;
}

static int64_t meta__obs_conns(void *arg)
{
    int64_t n = 0;
    for (struct meta__conn *c = ((struct meta_server *)arg)->conns; c != NULL; c = c->next) {
        n++;
    }
    return n;
}

static int64_t meta__obs_journal_bytes(void *arg)
{
    return (int64_t)meta_journal_bytes(((struct meta_server *)arg)->journal);
}

static int64_t meta__obs_failed(void *arg)
{
    return ((struct meta_server *)arg)->failed ? 1 : 0;
}

static int64_t meta__obs_groups(void *arg)
{
    const struct meta_groups *gs = ((struct meta_server *)arg)->state.groups;
    return gs != NULL ? gs->n_groups : 0;
}

/* One sample per committed offset of every group whose partition exists. */
static void meta__obs_collect_lag(void *arg, struct rn_metric_emitter *e)
{
    struct meta_server *srv = arg;
    const struct meta_groups *gs = srv->state.groups;
    for (uint32_t g = 0; gs != NULL && g < gs->n_groups; g++) {
        const struct meta_group *grp = gs->groups[g];
        for (uint32_t k = 0; k < grp->n_offsets; k++) {
            const struct meta_goffset *o = &grp->offsets[k];
            const struct meta_topic *t =
                meta_state_topic_by_name(&srv->state, o->topic, strlen(o->topic));
            if (t == NULL || o->partition < 0 || (uint32_t)o->partition >= t->n_parts ||
                o->offset < 0) {
                continue;
            }
            int64_t lag = t->parts[o->partition].hwm - o->offset;
            char part[16];
            snprintf(part, sizeof(part), "%d", o->partition);
            const char *v[3] = {grp->id, o->topic, part};
            rn_metric_emit(e, v, lag > 0 ? lag : 0);
        }
    }
}

static bool meta__obs_ready(void *arg, char *why, size_t why_len)
{
    struct meta_server *srv = arg;
    if (srv->journal == NULL) {
        snprintf(why, why_len, "journal not open");
        return false;
    }
    if (srv->failed) {
        snprintf(why, why_len, "journal failed; nothing is acknowledged");
        return false;
    }
    return true;
}

void meta__obs_open(struct meta_server *srv)
{
    pthread_once(&meta__o_once, meta__obs_init);
    rn_metric_bind(meta__o.topics, meta__obs_topics, srv);
    rn_metric_bind(meta__o.partitions, meta__obs_partitions, srv);
    rn_metric_bind(meta__o.objects, meta__obs_objects, srv);
    rn_metric_bind(meta__o.agents, meta__obs_agents, srv);
    rn_metric_bind(meta__o.conns, meta__obs_conns, srv);
    rn_metric_bind(meta__o.journal_bytes, meta__obs_journal_bytes, srv);
    rn_metric_bind(meta__o.failed, meta__obs_failed, srv);
    rn_metric_bind(meta__o.groups, meta__obs_groups, srv);
    rn_metrics_collect(meta__o.lag_f, meta__obs_collect_lag, srv);
    rn_obs_add_check("metadata_journal", meta__obs_ready, srv);
}

void meta__obs_close(struct meta_server *srv)
{
    rn_metrics_unbind(rn_metrics_global(), srv);
    rn_obs_remove_checks(srv);
}
