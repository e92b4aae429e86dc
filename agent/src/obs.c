/*
 * The agent's metrics and readiness (obs.h).
 *
 * Request series are looked up once per (api key, version) and kept in a table, so counting a
 * request costs a few relaxed atomic adds. Values the agent already keeps (connections, buffered
 * bytes, the chunk cache's counters) are not duplicated: their series are bound to readers that
 * run when /metrics is scraped, on the loop thread that owns those values.
 *
 * Readiness ("is it useful to send this agent clients?") has three parts: the agent is not
 * shutting down, the metadata service answered the last probe (a MetaHello on its connection)
 * and none has been waiting for AGENT__META_SLOW_MS, and the object store answered the last
 * probe (a HEAD of a key that need not exist; "not found" is an answer). Probes run every
 * AGENT__PROBE_MS, every AGENT__PROBE_RETRY_MS while one of them has not succeeded.
 */
#include "obs.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "cache.h"
#include "runnel/common/log.h"
#include "runnel/common/metrics.h"
#include "runnel/common/obs.h"
#include "runnel/protocol/errors.h"

#define AGENT__PROBE_MS 5000            /* store probe period */
#define AGENT__PROBE_TIMEOUT_MS 4000    /* deadline of one probe */
#define AGENT__PROBE_RETRY_MS 500       /* probe period while a probe has not succeeded */
#define AGENT__META_SLOW_MS 10000       /* a MetaHello unanswered this long: not ready */
#define AGENT__PROBE_KEY "runnel-ready" /* HEADed; it need not exist */
#define AGENT__OBS_KEYS 128             /* api keys 0..127 get their own series */
#define AGENT__OBS_VERSIONS 32          /* versions 0..31 */

/* Per-agent state: the probe and what the bound readers look at. */
struct agent_obs {
    struct agent *a;        /* owner */
    uv_timer_t probe_timer; /* next probe */
    struct store_req probe; /* the HEAD in flight */
    bool probe_running;     /* probe submitted, callback not yet run */
    bool probed;            /* at least one probe finished */
    int probe_err;          /* its result (0 or -ENOENT: the store answered) */
    char probe_msg[160];    /* its message when it failed */
    bool closing;           /* agent_obs_stop() ran */
    bool timer_closed;      /* the timer's close callback ran */
    bool meta_running;      /* a MetaHello probe is in flight */
    bool meta_answered;     /* at least one MetaHello probe finished */
    int meta_err;           /* its status (0: answered) */
    uint64_t meta_sent_ms;  /* loop time the probe in flight was sent */
};

struct agent__req_series {
    struct rn_metric *count;    /* requests */
    struct rn_metric *duration; /* latency */
};

struct agent__obs_metrics {
    struct rn_metric_family *req_f;
    struct rn_metric_family *dur_f;
    struct rn_metric_family *err_f;
    struct rn_metric_family *reqb_f;
    struct rn_metric_family *respb_f;
    struct rn_metric_family *pfail_f;
    struct rn_metric_family *kerr_f;
    struct agent__req_series req[AGENT__OBS_KEYS][AGENT__OBS_VERSIONS];
    struct rn_metric *req_bytes[AGENT__OBS_KEYS];
    struct rn_metric *resp_bytes[AGENT__OBS_KEYS];
    struct rn_metric *accepted;
    struct rn_metric *conns;
    struct rn_metric *pending;
    struct rn_metric *buffered;
    struct rn_metric *paused;
    struct rn_metric *paused_seconds;
    struct rn_metric *meta_up;
    struct rn_metric *peers;
    struct rn_metric *produce_bytes;
    struct rn_metric *fetch_bytes;
    struct rn_metric *objects;
    struct rn_metric *flush_bytes;
    struct rn_metric *flush_stored;
    struct rn_metric *flush_age;
    struct rn_metric *flush_interval;
    struct rn_metric *seal_dur;
    struct rn_metric *put_dur;
    struct rn_metric *commit_wait;
    struct rn_metric *commit_dur;
    struct rn_metric *cache_hits;
    struct rn_metric *cache_misses;
    struct rn_metric *cache_merged;
    struct rn_metric *cache_gets;
    struct rn_metric *cache_get_bytes;
    struct rn_metric *cache_block_hits;
    struct rn_metric *peer_asked;
    struct rn_metric *peer_failovers;
    struct rn_metric *peer_served;
    struct rn_metric *peer_serve_errors;
    struct rn_metric *cache_evictions;
    struct rn_metric *cache_errors;
    struct rn_metric *cache_bytes;
    struct rn_metric *cache_entries;
    uint64_t paused_total_ns; /* completed pauses (loop thread) */
    uint64_t paused_since_ns; /* start of the current pause, 0 when reading */
    uint64_t last_seal_ms;    /* loop time of the previous committed object's seal */
};

static struct agent__obs_metrics agent__om;
static struct agent_cache *agent__cache; /* the fetch path's cache, or NULL (loop thread) */
static pthread_once_t agent__om_once = PTHREAD_ONCE_INIT;

static struct rn_metric *agent__g(struct rn_metrics *r, const char *name, const char *help)
{
    return rn_metric_get0(rn_metrics_gauge(r, name, help, NULL));
}

static struct rn_metric *agent__c(struct rn_metrics *r, const char *name, const char *help)
{
    return rn_metric_get0(rn_metrics_counter(r, name, help, NULL));
}

static struct rn_metric *agent__h(struct rn_metrics *r, const char *name, const char *help,
                                  bool bytes)
{
    return rn_metric_get0(
        bytes ? rn_metrics_histogram(r, name, help, NULL, 1, rn_metrics_size_bounds,
                                     rn_metrics_size_nbounds)
              : rn_metrics_histogram(r, name, help, NULL, 1e9, rn_metrics_latency_bounds_ns,
                                     rn_metrics_latency_nbounds));
}

static void agent__obs_init(void)
{
    struct rn_metrics *r = rn_metrics_global();
    struct agent__obs_metrics *m = &agent__om;
    m->req_f = rn_metrics_counter(r, "runnel_agent_requests_total",
                                  "Kafka requests answered (or finished without an answer), by "
                                  "api and version.",
                                  "api,version");
    m->dur_f = rn_metrics_histogram(
        r, "runnel_agent_request_duration_seconds",
        "Kafka request latency from dispatch until its response is handed to the socket (in "
        "request order), by api and version.",
        "api,version", 1e9, rn_metrics_latency_bounds_ns, rn_metrics_latency_nbounds);
    m->err_f = rn_metrics_counter(r, "runnel_agent_request_errors_total",
                                  "Kafka requests or frames refused by closing the connection, "
                                  "by api and reason.",
                                  "api,reason");
    m->reqb_f = rn_metrics_counter(r, "runnel_agent_request_bytes_total",
                                   "Bytes of Kafka request frames received, by api.", "api");
    m->respb_f = rn_metrics_counter(r, "runnel_agent_response_bytes_total",
                                    "Bytes of Kafka responses sent, by api.", "api");
    m->pfail_f = rn_metrics_counter(r, "runnel_agent_produce_failed_bytes_total",
                                    "Produced batch bytes answered with an error (nothing "
                                    "acknowledged), by Kafka error.",
                                    "error");
    m->kerr_f = rn_metrics_counter(r, "runnel_agent_response_errors_total",
                                   "Kafka error codes in Produce and Fetch responses (one per "
                                   "partition, plus Fetch's top-level code), by api and error.",
                                   "api,error");
    m->accepted =
        agent__c(r, "runnel_agent_connections_accepted_total", "Kafka connections accepted.");
    m->conns = agent__g(r, "runnel_agent_connections", "Open Kafka connections.");
    m->pending = agent__g(r, "runnel_agent_requests_in_flight",
                          "Kafka requests received and not yet answered (parked produce and "
                          "long-polling fetch included).");
    m->buffered = agent__g(r, "runnel_agent_buffered_bytes",
                           "Produced bytes buffered or awaiting their commit (bounded by "
                           "buffer.max.bytes).");
    m->paused = agent__g(r, "runnel_agent_backpressure_active",
                         "1 while reads from clients are paused because buffered bytes reached "
                         "buffer.max.bytes.");
    m->paused_seconds = rn_metric_get0(rn_metrics_family(
        r, RN_METRIC_COUNTER, "runnel_agent_backpressure_seconds_total",
        "Time reads from clients spent paused for backpressure.", NULL, 1e9, NULL, 0));
    m->peers = agent__g(r, "runnel_agent_peers",
                        "Live agents this agent knows (itself included; 0: not registered), among "
                        "which object blocks have owners.");
    m->meta_up = agent__g(r, "runnel_agent_metadata_connected",
                          "1 while the connection to the metadata service is up.");
    m->produce_bytes = agent__c(r, "runnel_agent_produce_bytes_total",
                                "Produced batch bytes acknowledged (durable in the store and "
                                "committed).");
    m->fetch_bytes =
        agent__c(r, "runnel_agent_fetch_bytes_total", "Record bytes served in Fetch responses.");
    m->objects = agent__c(r, "runnel_agent_objects_committed_total",
                          "Objects flushed, uploaded and committed.");
    m->flush_bytes = agent__h(r, "runnel_agent_flush_bytes",
                              "Batch bytes per flushed object (before compression).", true);
    m->flush_stored = agent__h(r, "runnel_agent_flush_stored_bytes",
                               "Bytes per flushed object as stored (after compression).", true);
    m->flush_age = agent__h(r, "runnel_agent_flush_age_seconds",
                            "Age of an object's first batch when the object was sealed.", false);
    m->flush_interval = agent__h(r, "runnel_agent_flush_interval_seconds",
                                 "Time between the seals of consecutive committed objects.", false);
    m->seal_dur =
        agent__h(r, "runnel_agent_seal_duration_seconds",
                 "Sealing (compression, checksums) of an object on the worker pool.", false);
    m->put_dur = agent__h(r, "runnel_agent_put_duration_seconds",
                          "Upload of an object to the store, retries included.", false);
    m->commit_wait = agent__h(r, "runnel_agent_commit_wait_seconds",
                              "Wait of an uploaded object for older objects' commits.", false);
    m->commit_dur =
        agent__h(r, "runnel_agent_commit_duration_seconds",
                 "Commit latency: commit sent to the metadata service until answered.", false);
    m->cache_hits =
        agent__c(r, "runnel_agent_cache_hits_total", "Chunk cache lookups answered from memory.");
    m->cache_misses = agent__c(r, "runnel_agent_cache_misses_total",
                               "Chunk cache lookups that started a load from the store.");
    m->cache_merged = agent__c(r, "runnel_agent_cache_merged_total",
                               "Chunk cache lookups that joined a load already in flight.");
    m->cache_gets = agent__c(r, "runnel_agent_cache_store_gets_total",
                             "Object block GETs the cache issued to the store.");
    m->cache_get_bytes =
        agent__c(r, "runnel_agent_cache_store_get_bytes_total", "Bytes those block GETs returned.");
    m->cache_block_hits =
        agent__c(r, "runnel_agent_cache_block_hits_total",
                 "Object block lookups answered from memory or joined to a read in flight.");
    m->peer_asked = agent__c(r, "runnel_agent_peer_blocks_asked_total",
                             "Object blocks asked of their owner, another agent.");
    m->peer_failovers =
        agent__c(r, "runnel_agent_peer_failovers_total",
                 "Block reads from an owner that failed (down, timeout, error): read from the "
                 "store instead.");
    m->peer_served = agent__c(r, "runnel_agent_peer_blocks_served_total",
                              "Object blocks this agent served to other agents (AgentReadBlock).");
    m->peer_serve_errors = agent__c(r, "runnel_agent_peer_serve_errors_total",
                                    "AgentReadBlock requests answered with an error.");
    m->cache_evictions = agent__c(r, "runnel_agent_cache_evictions_total",
                                  "Chunk cache entries evicted to stay within cache.bytes.");
    m->cache_errors =
        agent__c(r, "runnel_agent_cache_load_errors_total", "Chunk cache loads that failed.");
    m->cache_bytes = agent__g(r, "runnel_agent_cache_bytes", "Bytes held by the chunk cache.");
    m->cache_entries =
        agent__g(r, "runnel_agent_cache_entries", "Entries held by the chunk cache.");
}

static void agent__obs_once(void)
{
    pthread_once(&agent__om_once, agent__obs_init);
}

static const char *agent__api_name(int16_t key)
{
    const struct kp_api *api = key >= 0 ? kp_api_find(key) : NULL;
    return api != NULL ? api->name : "unknown";
}

/* Copies a client id into out[cap] for a quoted logfmt value: quotes, backslashes and control
 * characters become '_' so the line stays parseable whatever the client sent. */
static void agent__log_safe(struct kp_str s, char *out, size_t cap)
{
    size_t n = 0;
    for (int32_t i = 0; i < s.len && n + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        out[n++] = ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\' ? '_' : (char)ch;
    }
    out[n] = '\0';
}

/*
 * The debug-level access log: one line per request, identified like every other per-request
 * line of the agent by peer and correlation_id (together the request id), with the client id.
 */
static void agent__log_request(const struct agent_req *req, uint64_t ns)
{
    char cid[80];
    agent__log_safe(req->hdr.client_id, cid, sizeof(cid));
    rn_log(RN_LOG_DEBUG, "request",
           "peer=%s correlation_id=%d client_id=\"%s\" api=%s version=%d duration_us=%llu "
           "request_bytes=%zu response_bytes=%zu",
           req->conn != NULL ? req->conn->peer : "(closed)", req->hdr.correlation_id, cid,
           req->api->name, req->hdr.request_api_version, (unsigned long long)(ns / 1000),
           req->frame_len + 4, req->silent ? (size_t)0 : req->resp_len);
}

void agent_obs_request_done(const struct agent_req *req)
{
    if (req->api == NULL) {
        return; /* never dispatched: counted by agent_obs_request_error() */
    }
    agent__obs_once();
    struct agent__obs_metrics *m = &agent__om;
    int16_t key = req->hdr.request_api_key;
    int16_t ver = req->hdr.request_api_version;
    if (key < 0 || key >= AGENT__OBS_KEYS || ver < 0 || ver >= AGENT__OBS_VERSIONS) {
        return; /* not served: the connection was closed and the error counted */
    }
    struct agent__req_series *s = &m->req[key][ver];
    if (s->count == NULL) {
        char v[8];
        snprintf(v, sizeof(v), "%d", ver);
        s->count = rn_metric_get2(m->req_f, req->api->name, v);
        s->duration = rn_metric_get2(m->dur_f, req->api->name, v);
    }
    if (m->req_bytes[key] == NULL) {
        m->req_bytes[key] = rn_metric_get1(m->reqb_f, req->api->name);
        m->resp_bytes[key] = rn_metric_get1(m->respb_f, req->api->name);
    }
    uint64_t ns = uv_hrtime() - req->started_ns;
    rn_counter_add(s->count, 1);
    rn_histogram_observe(s->duration, ns);
    if (rn_log_enabled(RN_LOG_DEBUG)) {
        agent__log_request(req, ns);
    }
    rn_counter_add(m->req_bytes[key], 4 + req->frame_len);
    if (!req->silent) {
        rn_counter_add(m->resp_bytes[key], req->resp_len);
    }
}

static void agent__count_kafka_error(const char *api, int16_t code)
{
    if (code != 0) {
        rn_counter_add(rn_metric_get2(agent__om.kerr_f, api, kp_error_name(code)), 1);
    }
}

void agent_obs_response(const struct agent_req *req, const void *msg)
{
    int16_t key = req->hdr.request_api_key;
    if (msg == NULL || (key != 0 && key != 1)) {
        return;
    }
    agent__obs_once();
    if (key == 0) {
        const struct kp_produce_response *r = msg;
        for (int32_t t = 0; t < r->responses_count; t++) {
            const struct kp_produce_response_topic_produce_response *tr = &r->responses[t];
            for (int32_t p = 0; p < tr->partition_responses_count; p++) {
                agent__count_kafka_error("Produce", tr->partition_responses[p].error_code);
            }
        }
        return;
    }
    const struct kp_fetch_response *r = msg;
    agent__count_kafka_error("Fetch", r->error_code);
    for (int32_t t = 0; t < r->responses_count; t++) {
        const struct kp_fetch_response_fetchable_topic_response *tr = &r->responses[t];
        for (int32_t p = 0; p < tr->partitions_count; p++) {
            agent__count_kafka_error("Fetch", tr->partitions[p].error_code);
        }
    }
}

void agent_obs_request_error(int16_t api_key, const char *reason)
{
    agent__obs_once();
    rn_counter_add(rn_metric_get2(agent__om.err_f, agent__api_name(api_key), reason), 1);
}

void agent_obs_conn_accepted(void)
{
    agent__obs_once();
    rn_counter_add(agent__om.accepted, 1);
}

void agent_obs_paused(struct agent *a, bool paused)
{
    (void)a;
    agent__obs_once();
    struct agent__obs_metrics *m = &agent__om;
    uint64_t now = uv_hrtime();
    if (paused && m->paused_since_ns == 0) {
        m->paused_since_ns = now;
    } else if (!paused && m->paused_since_ns != 0) {
        m->paused_total_ns += now - m->paused_since_ns;
        m->paused_since_ns = 0;
    }
}

static uint64_t agent__ms_to_ns(uint64_t later, uint64_t earlier)
{
    return later >= earlier ? (later - earlier) * 1000000ULL : 0;
}

void agent_obs_object_committed(struct agent *a, size_t bytes, size_t stored, uint64_t opened,
                                uint64_t sealed, uint64_t put, uint64_t put_done,
                                uint64_t committed, uint64_t answered)
{
    (void)a;
    agent__obs_once();
    struct agent__obs_metrics *m = &agent__om;
    rn_counter_add(m->objects, 1);
    rn_counter_add(m->produce_bytes, bytes);
    rn_histogram_observe(m->flush_bytes, bytes);
    rn_histogram_observe(m->flush_stored, stored);
    rn_histogram_observe(m->flush_age, agent__ms_to_ns(sealed, opened));
    if (m->last_seal_ms != 0) {
        rn_histogram_observe(m->flush_interval, agent__ms_to_ns(sealed, m->last_seal_ms));
    }
    m->last_seal_ms = sealed;
    rn_histogram_observe(m->seal_dur, agent__ms_to_ns(put, sealed));
    rn_histogram_observe(m->put_dur, agent__ms_to_ns(put_done, put));
    rn_histogram_observe(m->commit_wait, agent__ms_to_ns(committed, put_done));
    rn_histogram_observe(m->commit_dur, agent__ms_to_ns(answered, committed));
}

void agent_obs_produce_failed(int16_t error, size_t bytes)
{
    agent__obs_once();
    rn_counter_add(rn_metric_get1(agent__om.pfail_f, kp_error_name(error)), bytes);
}

void agent_obs_fetch_bytes(size_t bytes)
{
    agent__obs_once();
    rn_counter_add(agent__om.fetch_bytes, bytes);
}

void agent_obs_peer_served(bool ok)
{
    agent__obs_once();
    rn_counter_add(ok ? agent__om.peer_served : agent__om.peer_serve_errors, 1);
}

void agent_obs_cache(struct agent *a, struct agent_cache *cache)
{
    (void)a;
    agent__cache = cache;
}

/* ---- bound readers (run at scrape time on the loop thread) ---- */

static int64_t agent__r_conns(void *arg)
{
    return ((struct agent_obs *)arg)->a->n_conns;
}

static int64_t agent__r_pending(void *arg)
{
    int64_t n = 0;
    for (const struct agent_conn *c = ((struct agent_obs *)arg)->a->conns; c != NULL; c = c->next) {
        n += c->pending;
    }
    return n;
}

static int64_t agent__r_buffered(void *arg)
{
    return (int64_t)((struct agent_obs *)arg)->a->buffered_bytes;
}

static int64_t agent__r_paused(void *arg)
{
    return ((struct agent_obs *)arg)->a->paused ? 1 : 0;
}

static int64_t agent__r_paused_ns(void *arg)
{
    (void)arg;
    const struct agent__obs_metrics *m = &agent__om;
    uint64_t ns = m->paused_total_ns;
    if (m->paused_since_ns != 0) {
        ns += uv_hrtime() - m->paused_since_ns;
    }
    return (int64_t)ns;
}

static int64_t agent__r_peers(void *arg)
{
    const struct agent *a = ((struct agent_obs *)arg)->a;
    return a->cluster.registered ? (int64_t)a->cluster.n_peers : 0;
}

static int64_t agent__r_meta_up(void *arg)
{
    const struct agent *a = ((struct agent_obs *)arg)->a;
    return a->meta != NULL && meta_client_connected(a->meta) ? 1 : 0;
}

static struct agent_cache_stats agent__cache_stats(void *arg)
{
    (void)arg;
    struct agent_cache_stats st;
    memset(&st, 0, sizeof(st));
    if (agent__cache != NULL) {
        agent_cache_get_stats(agent__cache, &st);
    }
    return st;
}

static int64_t agent__r_hits(void *arg)
{
    return (int64_t)agent__cache_stats(arg).hits;
}

static int64_t agent__r_misses(void *arg)
{
    return (int64_t)agent__cache_stats(arg).misses;
}

static int64_t agent__r_merged(void *arg)
{
    return (int64_t)agent__cache_stats(arg).merged;
}

static int64_t agent__r_gets(void *arg)
{
    struct agent_cache_stats st = agent__cache_stats(arg);
    return (int64_t)st.store_gets;
}

static int64_t agent__r_get_bytes(void *arg)
{
    return (int64_t)agent__cache_stats(arg).store_bytes;
}

static int64_t agent__r_block_hits(void *arg)
{
    return (int64_t)agent__cache_stats(arg).block_hits;
}

static int64_t agent__r_peer_asked(void *arg)
{
    return (int64_t)agent__cache_stats(arg).remote_reads;
}

static int64_t agent__r_peer_failovers(void *arg)
{
    return (int64_t)agent__cache_stats(arg).remote_failed;
}

static int64_t agent__r_evictions(void *arg)
{
    return (int64_t)agent__cache_stats(arg).evictions;
}

static int64_t agent__r_cache_errors(void *arg)
{
    return (int64_t)agent__cache_stats(arg).errors;
}

static int64_t agent__r_cache_bytes(void *arg)
{
    return (int64_t)agent__cache_stats(arg).bytes;
}

static int64_t agent__r_cache_entries(void *arg)
{
    return (int64_t)agent__cache_stats(arg).entries;
}

/* ---- readiness ---- */

static bool agent__ready_store(void *arg, char *why, size_t why_len)
{
    const struct agent_obs *o = arg;
    if (!o->probed) {
        snprintf(why, why_len, "object store not probed yet");
        return false;
    }
    if (o->probe_err != 0 && o->probe_err != -ENOENT) {
        snprintf(why, why_len, "object store: %s: %s", store_strerror(o->probe_err), o->probe_msg);
        return false;
    }
    return true;
}

static bool agent__ready_meta(void *arg, char *why, size_t why_len)
{
    const struct agent_obs *o = arg;
    const struct agent *a = o->a;
    if (a->stopping) {
        snprintf(why, why_len, "agent is shutting down");
        return false;
    }
    if (a->meta == NULL || !meta_client_connected(a->meta)) {
        snprintf(why, why_len, "metadata service %s not connected", a->meta_addr);
        return false;
    }
    uint64_t now = uv_now(a->loop);
    if (o->meta_running && now - o->meta_sent_ms > AGENT__META_SLOW_MS) {
        snprintf(why, why_len, "metadata service %s has not answered for %llu ms", a->meta_addr,
                 (unsigned long long)(now - o->meta_sent_ms));
        return false;
    }
    if (!o->meta_answered) {
        snprintf(why, why_len, "metadata service %s not probed yet", a->meta_addr);
        return false;
    }
    if (o->meta_err != 0) {
        snprintf(why, why_len, "metadata service %s: last probe failed: %s", a->meta_addr,
                 strerror(-o->meta_err));
        return false;
    }
    return true;
}

static void agent__obs_maybe_free(struct agent_obs *o)
{
    if (o->closing && o->timer_closed && !o->probe_running && !o->meta_running) {
        free(o);
    }
}

static void agent__store_probe_cb(struct store_req *req)
{
    struct agent_obs *o = req->data;
    o->probe_running = false;
    if (o->closing) {
        store_req_cleanup(req);
        agent__obs_maybe_free(o);
        return;
    }
    if (req->err != -ECANCELED) {
        if (req->err != 0 && req->err != -ENOENT && (o->probe_err == 0 || !o->probed)) {
            rn_log(RN_LOG_WARN, "store_probe_failed", "error=\"%s\" msg=\"%s\"",
                   store_strerror(req->err), req->msg);
        }
        o->probed = true;
        o->probe_err = req->err;
        snprintf(o->probe_msg, sizeof(o->probe_msg), "%.150s", req->msg);
    }
    store_req_cleanup(req);
}

static void agent__meta_probe_cb(void *arg, int status, const void *response)
{
    struct agent_obs *o = arg;
    (void)response;
    o->meta_running = false;
    if (o->closing) {
        agent__obs_maybe_free(o);
        return;
    }
    o->meta_answered = true;
    o->meta_err = status;
}

/* Starts whichever probe is not running; probes again soon until both are fine. */
static void agent__probe_tick(uv_timer_t *t)
{
    struct agent_obs *o = t->data;
    struct agent *a = o->a;
    if (o->closing) {
        return;
    }
    if (!o->probe_running && a->store != NULL) {
        o->probe.data = o;
        o->probe.timeout_ms = AGENT__PROBE_TIMEOUT_MS;
        if (store_head(a->store, &o->probe, AGENT__PROBE_KEY, agent__store_probe_cb) == 0) {
            o->probe_running = true;
        }
    }
    if (!o->meta_running && a->meta != NULL && meta_client_connected(a->meta)) {
        struct kp_meta_hello_request rq;
        kp_meta_hello_request_init(&rq);
        rq.client_name = (struct kp_str){"runnel-agent-probe", 18};
        rq.client_version = (struct kp_str){"0.1.0", 5};
        if (meta_client_call(a->meta, 1000, &rq, agent__meta_probe_cb, o) == 0) {
            o->meta_running = true;
            o->meta_sent_ms = uv_now(a->loop);
        }
    }
    bool fine = o->probed && (o->probe_err == 0 || o->probe_err == -ENOENT) && o->meta_answered &&
                o->meta_err == 0;
    uv_timer_start(&o->probe_timer, agent__probe_tick,
                   fine ? AGENT__PROBE_MS : AGENT__PROBE_RETRY_MS, 0);
}

static void agent__probe_timer_closed(uv_handle_t *h)
{
    struct agent_obs *o = h->data;
    o->timer_closed = true;
    agent__obs_maybe_free(o);
}

int agent_obs_start(struct agent *a)
{
    agent__obs_once();
    struct agent__obs_metrics *m = &agent__om;
    struct agent_obs *o = kp_xcalloc(1, sizeof(*o));
    o->a = a;
    a->obs = o;
    rn_metric_bind(m->conns, agent__r_conns, o);
    rn_metric_bind(m->pending, agent__r_pending, o);
    rn_metric_bind(m->buffered, agent__r_buffered, o);
    rn_metric_bind(m->paused, agent__r_paused, o);
    rn_metric_bind(m->paused_seconds, agent__r_paused_ns, o);
    rn_metric_bind(m->meta_up, agent__r_meta_up, o);
    rn_metric_bind(m->peers, agent__r_peers, o);
    rn_metric_bind(m->cache_hits, agent__r_hits, o);
    rn_metric_bind(m->cache_misses, agent__r_misses, o);
    rn_metric_bind(m->cache_merged, agent__r_merged, o);
    rn_metric_bind(m->cache_gets, agent__r_gets, o);
    rn_metric_bind(m->cache_get_bytes, agent__r_get_bytes, o);
    rn_metric_bind(m->cache_block_hits, agent__r_block_hits, o);
    rn_metric_bind(m->peer_asked, agent__r_peer_asked, o);
    rn_metric_bind(m->peer_failovers, agent__r_peer_failovers, o);
    rn_metric_bind(m->cache_evictions, agent__r_evictions, o);
    rn_metric_bind(m->cache_errors, agent__r_cache_errors, o);
    rn_metric_bind(m->cache_bytes, agent__r_cache_bytes, o);
    rn_metric_bind(m->cache_entries, agent__r_cache_entries, o);
    rn_obs_add_check("store", agent__ready_store, o);
    rn_obs_add_check("metadata", agent__ready_meta, o);
    uv_timer_init(a->loop, &o->probe_timer);
    o->probe_timer.data = o;
    uv_timer_start(&o->probe_timer, agent__probe_tick, 0, 0);
    uv_unref((uv_handle_t *)&o->probe_timer);
    char err[256] = "";
    int rc = rn_obs_start(a->loop, a->cfg.http_listen, err, sizeof(err));
    if (rc != 0) {
        rn_log(RN_LOG_ERROR, "http_start_failed", "listen=%s error=\"%s\"", a->cfg.http_listen,
               err);
    }
    return rc;
}

void agent_obs_stop(struct agent *a)
{
    struct agent_obs *o = a->obs;
    rn_obs_stop();
    if (o == NULL) {
        return;
    }
    a->obs = NULL;
    o->closing = true;
    rn_metrics_unbind(rn_metrics_global(), o);
    rn_obs_remove_checks(o);
    if (o->probe_running) {
        store_cancel(&o->probe);
    }
    uv_close((uv_handle_t *)&o->probe_timer, agent__probe_timer_closed);
}
