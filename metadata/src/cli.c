/*
 * `runnel metadata`: settings (common/config.h), start-up with a clear error on a bad data
 * directory, and a clean stop on SIGINT/SIGTERM (the journal writer finishes what it has).
 */
#include "runnel/metadata/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "runnel/common/config.h"
#include "runnel/common/log.h"
#include "runnel/common/obs.h"
#include "runnel/metadata/server.h"

static char *meta__cli_data_dir;
static char *meta__cli_listen;
static char *meta__cli_log_level;
static char *meta__cli_log_format;
static char *meta__cli_http_listen;
static int64_t meta__cli_snapshot_bytes;
static int64_t meta__cli_snapshot_state_pct;
static int64_t meta__cli_snapshot_mbps;
static int64_t meta__cli_group_delay_ms;
static int64_t meta__cli_offsets_retention_min;

static const struct rn_setting meta__cli_settings[] = {
    {"data.dir", RN_SETTING_STRING, "runnel-metadata", "journal and snapshot directory",
     &meta__cli_data_dir, 0, 0},
    {"listen", RN_SETTING_STRING, "127.0.0.1:9093", "HOST:PORT to accept agents on",
     &meta__cli_listen, 0, 0},
    {"snapshot.bytes", RN_SETTING_INT, "256m",
     "write a snapshot and truncate the journal after it grew this much", &meta__cli_snapshot_bytes,
     1024, INT64_MAX},
    {"snapshot.state.percent", RN_SETTING_INT, "100",
     "wait also until the journal grew by this percentage of the state's uncompressed snapshot "
     "(44 bytes per extent), so snapshots of a large state come less often; 0: snapshot.bytes "
     "alone",
     &meta__cli_snapshot_state_pct, 0, 10000},
    {"snapshot.write.mbps", RN_SETTING_INT, "32",
     "MiB/s of compressed snapshot written at most, in 1 MiB slices, so that it leaves the disk "
     "to the journal's fdatasync; 0: no limit",
     &meta__cli_snapshot_mbps, 0, 1048576},
    {"log.level", RN_SETTING_STRING, "info", "error, warn, info or debug", &meta__cli_log_level, 0,
     0},
    {"log.format", RN_SETTING_STRING, "logfmt", "logfmt or json", &meta__cli_log_format, 0, 0},
    {"http.listen", RN_SETTING_STRING, "",
     "host:port of the HTTP listener for /metrics, /healthz and /readyz; empty: none",
     &meta__cli_http_listen, 0, 0},
    {"group.initial.rebalance.delay.ms", RN_SETTING_INT, "3000",
     "how long the first rebalance of an empty consumer group waits for more members",
     &meta__cli_group_delay_ms, 0, 300000},
    {"offsets.retention.minutes", RN_SETTING_INT, "10080",
     "committed offsets of an empty consumer group expire this long after the later of their "
     "commit and the group becoming empty; 0: never",
     &meta__cli_offsets_retention_min, 0, 5256000},
    {NULL, 0, NULL, NULL, NULL, 0, 0},
};

static const struct rn_command_spec meta__cli_spec = {
    "metadata",
    "Runs the metadata service: the sequencer agents commit objects to. It acknowledges a "
    "change only after its journal record is on disk (fdatasync).",
    meta__cli_settings,
};

static uv_signal_t meta__cli_signals[2]; /* SIGINT, SIGTERM */

static void meta__on_signal(uv_signal_t *h, int signum)
{
    struct meta_server *srv = h->data;
    rn_log(RN_LOG_INFO, "meta_stopping", "signal=%d", signum);
    meta_server_close(srv);
    rn_obs_stop();
    for (int i = 0; i < 2; i++) {
        uv_close((uv_handle_t *)&meta__cli_signals[i], NULL);
    }
}

static int meta__split_listen(const char *s, char *host, size_t host_len, int *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= host_len) {
        return -EINVAL;
    }
    const char *h = s;
    size_t n = (size_t)(colon - s);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    char *end = NULL;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p < 0 || p > 65535 || n == 0) {
        return -EINVAL;
    }
    *port = (int)p;
    return 0;
}

int meta_cmd_metadata(int argc, char **argv)
{
    int rc = rn_config_load(&meta__cli_spec, argc, argv, NULL, 0, NULL);
    if (rc == 1) {
        rn_config_free(&meta__cli_spec);
        return 0;
    }
    if (rc != 0) {
        rn_config_free(&meta__cli_spec);
        return 2;
    }
    int status = 0;
    if (rn_log_configure(meta__cli_log_level, meta__cli_log_format) != 0) {
        fprintf(stderr, "runnel metadata: bad log.level or log.format\n");
        status = 2;
        goto out;
    }
    char host[256];
    struct meta_server_options o;
    meta_server_options_default(&o);
    if (meta__split_listen(meta__cli_listen, host, sizeof(host), &o.port) != 0) {
        fprintf(stderr, "runnel metadata: --listen wants HOST:PORT, got '%s'\n", meta__cli_listen);
        status = 2;
        goto out;
    }
    o.host = host;
    o.data_dir = meta__cli_data_dir;
    o.snapshot_bytes = (uint64_t)meta__cli_snapshot_bytes;
    o.snapshot_state_pct = (uint32_t)meta__cli_snapshot_state_pct;
    o.snapshot_write_rate = (uint64_t)meta__cli_snapshot_mbps << 20;
    o.group_initial_delay_ms = (int32_t)meta__cli_group_delay_ms;
    o.offsets_retention_ms = meta__cli_offsets_retention_min * 60000;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct meta_server *srv = NULL;
    char err[512] = "";
    rc = meta_server_open(&srv, &loop, &o, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "runnel metadata: cannot start: %s\n", err);
        rn_log(RN_LOG_ERROR, "meta_start_failed", "error=\"%s\"", err);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        status = 1;
        goto out;
    }
    rc = rn_obs_start(&loop, meta__cli_http_listen, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "runnel metadata: --http.listen: %s\n", err);
        rn_log(RN_LOG_ERROR, "http_start_failed", "error=\"%s\"", err);
        meta_server_close(srv);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        status = 1;
        goto out;
    }
    rn_log(RN_LOG_INFO, "meta_listening", "addr=%s port=%d data_dir=%s startup_ms=%.1f", host,
           meta_server_port(srv), o.data_dir, meta_server_startup_ms(srv));
    static const int signums[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        uv_signal_init(&loop, &meta__cli_signals[i]);
        meta__cli_signals[i].data = srv;
        uv_signal_start(&meta__cli_signals[i], meta__on_signal, signums[i]);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
out:
    rn_config_free(&meta__cli_spec);
    return status;
}
