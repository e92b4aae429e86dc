/*
 * `runnel agent` and `runnel dev`: settings, start-up and orderly shutdown.
 *
 * `runnel agent` is one stateless agent talking to a separate metadata service and an object
 * store. `runnel dev` is the zero-setup default: metadata service, agent and a file:// store in
 * one process, data under ./runnel-data, a short flush interval.
 *
 * SIGTERM/SIGINT: stop accepting, flush what is buffered, answer what is in flight, exit 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <limits.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "agent_cmd.h"
#include "obs.h"
#include "runnel/common/config.h"
#include "runnel/common/log.h"
#include "runnel/common/obs.h"
#include "runnel/metadata/server.h"
#include "runnel/storage/store.h"

#define AGENT__SHUTDOWN_GRACE_MS 15000 /* after SIGTERM, stop waiting for clients after this */
#define AGENT__POOL_THREADS "16"       /* libuv worker threads unless UV_THREADPOOL_SIZE is set */

static struct agent_config agent__cfg;

#define AGENT__COMMON_SETTINGS(listen_def, flush_def)                                              \
    {"listen",                                                                                     \
     RN_SETTING_STRING,                                                                            \
     listen_def,                                                                                   \
     "host:port of the Kafka listener",                                                            \
     &agent__cfg.listen,                                                                           \
     0,                                                                                            \
     0},                                                                                           \
        {"advertise",                                                                              \
         RN_SETTING_STRING,                                                                        \
         "",                                                                                       \
         "host:port clients are told to connect to (a load balancer's address in "                 \
         "load-balancer mode); empty: the listen address",                                         \
         &agent__cfg.advertise,                                                                    \
         0,                                                                                        \
         0},                                                                                       \
        {"cluster.id",                                                                             \
         RN_SETTING_STRING,                                                                        \
         "runnel-cluster",                                                                         \
         "cluster id reported to clients",                                                         \
         &agent__cfg.cluster_id,                                                                   \
         0,                                                                                        \
         0},                                                                                       \
        {"node.id", RN_SETTING_INT, "0", "broker id this agent reports", &agent__cfg.node_id,      \
         0,         INT32_MAX},                                                                    \
        {"max.frame.bytes",           RN_SETTING_INT, "100m",   "largest request frame accepted",  \
         &agent__cfg.max_frame_bytes, 1024,           INT32_MAX},                                  \
        {"max.connections",                                                                        \
         RN_SETTING_INT,                                                                           \
         "10000",                                                                                  \
         "connections beyond this are closed",                                                     \
         &agent__cfg.max_connections,                                                              \
         1,                                                                                        \
         1000000},                                                                                 \
        {"idle.timeout.ms",                                                                        \
         RN_SETTING_INT,                                                                           \
         "600000",                                                                                 \
         "close connections idle this long (connections.max.idle.ms); 0: never",                   \
         &agent__cfg.idle_timeout_ms,                                                              \
         0,                                                                                        \
         INT32_MAX},                                                                               \
        {"flush.interval.ms",                                                                      \
         RN_SETTING_INT,                                                                           \
         flush_def,                                                                                \
         "seal and upload the open object when it is this old",                                    \
         &agent__cfg.flush_interval_ms,                                                            \
         1,                                                                                        \
         60000},                                                                                   \
        {"flush.bytes",                                                                            \
         RN_SETTING_INT,                                                                           \
         "8m",                                                                                     \
         "seal the open object when it holds this much",                                           \
         &agent__cfg.flush_bytes,                                                                  \
         1024,                                                                                     \
         1024LL * 1024 * 1024},                                                                    \
        {"buffer.max.bytes",                                                                       \
         RN_SETTING_INT,                                                                           \
         "256m",                                                                                   \
         "produce bytes buffered or in flight before the agent stops reading from producers",      \
         &agent__cfg.buffer_max_bytes,                                                             \
         1024 * 1024,                                                                              \
         64LL * 1024 * 1024 * 1024},                                                               \
        {"cache.bytes",                                                                            \
         RN_SETTING_INT,                                                                           \
         "256m",                                                                                   \
         "capacity of the chunk cache",                                                            \
         &agent__cfg.cache_bytes,                                                                  \
         0,                                                                                        \
         1024LL * 1024 * 1024 * 1024},                                                             \
        {"cache.block.bytes",                                                                      \
         RN_SETTING_INT,                                                                           \
         "4m",                                                                                     \
         "objects are read from the store in blocks of this size (the same on every agent)",       \
         &agent__cfg.cache_block_bytes,                                                            \
         1024,                                                                                     \
         1024LL * 1024 * 1024},                                                                    \
        {"zstd.level",                                                                             \
         RN_SETTING_INT,                                                                           \
         "1",                                                                                      \
         "zstd level for sealed chunks",                                                           \
         &agent__cfg.zstd_level,                                                                   \
         -7,                                                                                       \
         19},                                                                                      \
        {"auto.create.topics.enable",                                                              \
         RN_SETTING_BOOL,                                                                          \
         "true",                                                                                   \
         "create unknown topics on Metadata requests that allow it",                               \
         &agent__cfg.auto_create_topics,                                                           \
         0,                                                                                        \
         0},                                                                                       \
        {"num.partitions",                                                                         \
         RN_SETTING_INT,                                                                           \
         "1",                                                                                      \
         "partitions of auto-created topics",                                                      \
         &agent__cfg.default_partitions,                                                           \
         1,                                                                                        \
         100000},                                                                                  \
        {"log.level",                                                                              \
         RN_SETTING_STRING,                                                                        \
         "info",                                                                                   \
         "error, warn, info or debug",                                                             \
         &agent__cfg.log_level,                                                                    \
         0,                                                                                        \
         0},                                                                                       \
    {                                                                                              \
        "log.format", RN_SETTING_STRING, "logfmt", "logfmt or json", &agent__cfg.log_format, 0, 0  \
    }

/* The observability listener (obs.c); off unless asked for, so several agents share a host. */
#define AGENT__HTTP_SETTING                                                                        \
    {                                                                                              \
        "http.listen", RN_SETTING_STRING, "",                                                      \
            "host:port of the HTTP listener for /metrics, /healthz and /readyz; empty: none",      \
            &agent__cfg.http_listen, 0, 0                                                          \
    }

static const struct rn_setting agent__agent_settings[] = {
    AGENT__COMMON_SETTINGS("0.0.0.0:9092", "250"),
    AGENT__HTTP_SETTING,
    {"metadata", RN_SETTING_STRING, "127.0.0.1:9093", "host:port of the metadata service",
     &agent__cfg.metadata, 0, 0},
    {"bucket", RN_SETTING_STRING, NULL,
     "object store URL: s3://bucket/prefix?endpoint=...&region=..., file:///path or mem://",
     &agent__cfg.bucket, 0, 0},
    {"cluster.mode", RN_SETTING_STRING, "lb",
     "lb: every agent is one broker at the advertised (balancer) address; direct: agents "
     "register, and Metadata lists each live agent at its own address",
     &agent__cfg.cluster_mode, 0, 0},
    {"zone", RN_SETTING_STRING, "",
     "availability zone of this agent (direct mode: clients with runnel_az=ZONE in client.id "
     "are sent to agents of their zone)",
     &agent__cfg.zone, 0, 0},
    {"heartbeat.interval.ms", RN_SETTING_INT, "1000",
     "direct mode: interval between heartbeats to the metadata service", &agent__cfg.heartbeat_ms,
     50, 60000},
    {"cluster.peer.address", RN_SETTING_STRING, "",
     "lb mode: host:port at which the other agents reach this agent's listener to share object "
     "blocks; empty: the listen address, or for a wildcard one the local address of the route "
     "to the metadata service with the listen port; none: no sharing",
     &agent__cfg.peer_address, 0, 0},
    {"session.timeout.ms", RN_SETTING_INT, "6000",
     "direct mode: the metadata service drops an agent this long after its last heartbeat",
     &agent__cfg.session_timeout_ms, 200, 600000},
    {NULL, 0, NULL, NULL, NULL, 0, 0},
};

static const struct rn_setting agent__dev_settings[] = {
    AGENT__COMMON_SETTINGS("127.0.0.1:9092", "20"),
    AGENT__HTTP_SETTING,
    {"data.dir", RN_SETTING_STRING, "./runnel-data",
     "where runnel dev keeps the metadata journal (meta/) and the objects (objects/)",
     &agent__cfg.data_dir, 0, 0},
    {NULL, 0, NULL, NULL, NULL, 0, 0},
};

static const struct rn_command_spec agent__dev_spec = {
    "dev",
    "Runs the metadata service, one agent and a filesystem object store in one process, with "
    "everything under data.dir: the zero-setup way to try Runnel.",
    agent__dev_settings,
};

static const struct rn_command_spec agent__agent_spec = {
    "agent",
    "Runs one stateless agent: a Kafka listener that buffers produced batches, uploads them to "
    "the object store and sequences them through the metadata service.",
    agent__agent_settings,
};

static void agent__close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static void agent__finish(struct agent *a)
{
    rn_log(RN_LOG_INFO, "stopped", NULL);
    agent_obs_stop(a);
    agent_peers_free(a);
    agent_fetch_free(a);
    agent_produce_free(a);
    agent_topics_free(a);
    agent_cluster_free(a);
    if (a->meta != NULL) {
        meta_client_close(a->meta);
        a->meta = NULL;
    }
    if (a->store != NULL) {
        store_close(a->store);
        a->store = NULL;
    }
    if (a->dev_meta != NULL) {
        meta_server_close(a->dev_meta);
        a->dev_meta = NULL;
    }
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->grace, NULL);
}

static void agent__grace_cb(uv_timer_t *t)
{
    struct agent *a = t->data;
    rn_log(RN_LOG_WARN, "shutdown_grace_expired", "connections=%lld", (long long)a->n_conns);
    uv_walk(a->loop, agent__close_handle, NULL);
}

static void agent__drained(struct agent *a)
{
    rn_log(RN_LOG_INFO, "drained", "connections=%lld", (long long)a->n_conns);
    agent_server_stop(a); /* connections with nothing left to answer close now */
    agent__finish(a);
}

static void agent__signal_cb(uv_signal_t *s, int signum)
{
    struct agent *a = s->data;
    if (a->stopping) {
        return;
    }
    rn_log(RN_LOG_INFO, "stopping", "signal=%d", signum);
    agent_server_stop(a);
    uv_timer_start(&a->grace, agent__grace_cb, AGENT__SHUTDOWN_GRACE_MS, 0);
    uv_unref((uv_handle_t *)&a->grace);
    agent_fetch_drain(a);
    agent_groups_drain(a);
    agent_produce_drain(a, agent__drained);
}

static void agent__meta_push(void *arg, const struct kp_meta_notify_response *n)
{
    agent_fetch_on_notify(arg, n);
    agent_groups_on_notify(arg, n);
}

static void agent__meta_state(void *arg, bool connected)
{
    struct agent *a = arg;
    rn_log(connected ? RN_LOG_INFO : RN_LOG_WARN,
           connected ? "metadata_connected" : "metadata_disconnected", "metadata=%s",
           a->cfg.metadata);
    agent_fetch_on_meta_state(a, connected);
    agent_groups_on_meta_state(a, connected);
}

/* Starts the in-process metadata service of runnel dev and points cfg at it. */
static int agent__start_dev(struct agent *a, char *bucket, size_t bucket_len, char *meta_addr,
                            size_t meta_len)
{
    char abs[PATH_MAX];
    char meta_dir[PATH_MAX + 8];
    char obj_dir[PATH_MAX + 16];
    mkdir(a->cfg.data_dir, 0755);
    if (realpath(a->cfg.data_dir, abs) == NULL) {
        rn_log(RN_LOG_ERROR, "bad_data_dir", "data_dir=%s error=\"%s\"", a->cfg.data_dir,
               strerror(errno));
        return -errno;
    }
    snprintf(meta_dir, sizeof(meta_dir), "%s/meta", abs);
    snprintf(obj_dir, sizeof(obj_dir), "%s/objects", abs);
    mkdir(obj_dir, 0755);
    snprintf(bucket, bucket_len, "file://%s", obj_dir);
    struct meta_server_options o;
    meta_server_options_default(&o);
    o.data_dir = meta_dir;
    o.host = "127.0.0.1";
    o.port = 0;
    char err[256] = "";
    int rc = meta_server_open(&a->dev_meta, a->loop, &o, err, sizeof(err));
    if (rc != 0) {
        rn_log(RN_LOG_ERROR, "metadata_start_failed", "error=\"%s\"", err);
        return rc;
    }
    snprintf(meta_addr, meta_len, "127.0.0.1:%d", meta_server_port(a->dev_meta));
    return 0;
}

int agent_run(struct agent *a)
{
    char bucket[PATH_MAX + 32];
    char meta_addr[300];
    char host[256];
    int port = 0;
    int rc;

    uv_signal_init(a->loop, &a->sigterm);
    uv_signal_init(a->loop, &a->sigint);
    uv_timer_init(a->loop, &a->grace);
    a->sigterm.data = a->sigint.data = a->grace.data = a;

    if (a->cfg.dev) {
        rc = agent__start_dev(a, bucket, sizeof(bucket), meta_addr, sizeof(meta_addr));
        if (rc != 0) {
            goto out_fail;
        }
    } else {
        if (a->cfg.bucket == NULL || a->cfg.bucket[0] == '\0') {
            rn_log(RN_LOG_ERROR, "missing_setting", "setting=bucket hint=\"--bucket URL\"");
            rc = -EINVAL;
            goto out_fail;
        }
        snprintf(bucket, sizeof(bucket), "%s", a->cfg.bucket);
        snprintf(meta_addr, sizeof(meta_addr), "%s", a->cfg.metadata);
    }

    const char *adv = a->cfg.advertise[0] != '\0' ? a->cfg.advertise : a->cfg.listen;
    if (rn_parse_hostport(adv, a->adv_host, sizeof(a->adv_host), &a->adv_port) != 0) {
        rn_log(RN_LOG_ERROR, "bad_advertise_address", "advertise=%s", adv);
        rc = -EINVAL;
        goto out_fail;
    }
    if (rn_host_is_wildcard(a->adv_host)) {
        /* Clients cannot connect to a wildcard address; name this host instead. */
        if (gethostname(a->adv_host, sizeof(a->adv_host)) != 0) {
            snprintf(a->adv_host, sizeof(a->adv_host), "127.0.0.1");
        }
        rn_log(RN_LOG_WARN, "advertising_hostname", "host=%s hint=\"set --advertise\"",
               a->adv_host);
    }

    char err[256] = "";
    rc = store_open(a->loop, bucket, NULL, &a->store, err, sizeof(err));
    if (rc != 0) {
        rn_log(RN_LOG_ERROR, "store_open_failed", "bucket=\"%s\" error=\"%s\"", bucket, err);
        goto out_fail;
    }
    snprintf(a->meta_addr, sizeof(a->meta_addr), "%s", meta_addr);
    if (rn_parse_hostport(meta_addr, host, sizeof(host), &port) != 0) {
        rn_log(RN_LOG_ERROR, "bad_metadata_address", "metadata=%s", meta_addr);
        rc = -EINVAL;
        goto out_fail;
    }
    rc = meta_client_open(&a->meta, a->loop, host[0] ? host : "127.0.0.1", port);
    if (rc != 0) {
        rn_log(RN_LOG_ERROR, "metadata_client_failed", "metadata=%s", meta_addr);
        goto out_fail;
    }
    meta_client_set_push_cb(a->meta, agent__meta_push, a);
    meta_client_set_state_cb(a->meta, agent__meta_state, a);

    if ((rc = agent_produce_init(a)) != 0 || (rc = agent_fetch_init(a)) != 0 ||
        (rc = agent_peers_init(a)) != 0 || (rc = agent_cluster_init(a)) != 0) {
        goto out_fail;
    }
    if ((rc = agent_obs_start(a)) != 0 || (rc = agent_server_start(a)) != 0) {
        goto out_fail;
    }
    uv_signal_start(&a->sigterm, agent__signal_cb, SIGTERM);
    uv_signal_start(&a->sigint, agent__signal_cb, SIGINT);
    rn_log(RN_LOG_INFO, "started", "listen=%s advertise=%s:%d metadata=%s store=%s cluster_mode=%s",
           a->cfg.listen, a->adv_host, a->adv_port, meta_addr, store_backend(a->store),
           a->cluster.direct ? "direct" : "lb");
    if (a->cfg.dev) {
        printf("Runnel is running. Bootstrap address: %s:%d\n"
               "Try: echo hello | kcat -b %s:%d -P -t demo && kcat -b %s:%d -C -t demo -e\n",
               a->adv_host, a->adv_port, a->adv_host, a->adv_port, a->adv_host, a->adv_port);
        char mhost[256];
        int mport = 0;
        if (rn_obs_port() > 0 &&
            rn_parse_hostport(a->cfg.http_listen, mhost, sizeof(mhost), &mport) == 0) {
            const char *h = rn_host_is_wildcard(mhost) ? a->adv_host : mhost;
            bool v6 = strchr(h, ':') != NULL;
            printf("Metrics: curl http://%s%s%s:%d/metrics (also /healthz, /readyz)\n",
                   v6 ? "[" : "", h, v6 ? "]" : "", rn_obs_port());
        }
        fflush(stdout);
    }
    uv_run(a->loop, UV_RUN_DEFAULT);
    return 0;

out_fail:
    a->stopping = true;
    agent__finish(a);
    uv_run(a->loop, UV_RUN_DEFAULT);
    return rc;
}

static int agent__start(const struct rn_command_spec *spec, int argc, char **argv)
{
    int rc = rn_config_load(spec, argc, argv, NULL, 0, NULL);
    if (rc != 0) {
        return rc == 1 ? 0 : 2;
    }
    if (rn_log_configure(agent__cfg.log_level, agent__cfg.log_format) != 0) {
        fprintf(stderr, "runnel %s: bad log.level or log.format\n", spec->name);
        rn_config_free(spec);
        return 2;
    }
    /*
     * Produce requests, fetched chunks and responses are buffers of 64 KiB to several MiB. With
     * glibc's defaults each one past 128 KiB is a fresh mmap whose pages fault in on first touch
     * (measured: page faults and zeroing were a fifth of the consume path's time). Serving them
     * from the heap and trimming it lazily trades some resident memory after a burst for speed;
     * buffer.max.bytes and cache.bytes still bound what is held.
     */
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
    /*
     * libuv's worker pool (4 threads by default) runs seals, file-store writes with their fsyncs,
     * pool reads and large chunk decodes. A seal queued behind four fsyncs waits for the disk:
     * with more threads, threads blocked in fsync no longer delay CPU work (produce latency).
     * Must be set before the pool's first use; a value the user set is kept.
     */
    setenv("UV_THREADPOOL_SIZE", AGENT__POOL_THREADS, 0);
    struct agent a;
    memset(&a, 0, sizeof(a));
    a.cfg = agent__cfg;
    a.loop = uv_default_loop();
    rc = agent_run(&a);
    rn_config_free(spec);
    return rc == 0 ? 0 : 1;
}

int agent_cmd_agent(int argc, char **argv)
{
    return agent__start(&agent__agent_spec, argc, argv);
}

int agent_cmd_dev(int argc, char **argv)
{
    agent__cfg.dev = true;
    return agent__start(&agent__dev_spec, argc, argv);
}
