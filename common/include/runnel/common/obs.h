/*
 * A process's observability endpoint: one HTTP listener (runnel/common/http.h) serving
 *
 *   GET /metrics   the process-wide registry (rn_metrics_global()) in Prometheus text format
 *   GET /healthz   200 "ok" while the process's loop answers
 *   GET /readyz    200 when every registered readiness check passes, else 503 naming the
 *                  failing checks
 *
 * Modules register readiness checks (the agent: store and metadata service answer; the metadata
 * service: its journal is open and healthy) whether or not a listener runs, so `runnel dev`,
 * which holds both in one process, serves both sets of checks and metrics on one listener.
 * Everything here belongs to the loop thread that started the listener.
 */
#ifndef RUNNEL_COMMON_OBS_H
#define RUNNEL_COMMON_OBS_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

/* Fills why[why_len] with a short reason and returns false when not ready. */
typedef bool (*rn_obs_ready_fn)(void *arg, char *why, size_t why_len);

#define RN_OBS_MAX_CHECKS 8 /* readiness checks per process */

/*
 * Starts the listener on `hostport` on `loop`. An empty string or "off" disables it (returns 0).
 * Returns 0 or a negative errno with a message in err[errlen] (bad address, port in use, or
 * already started).
 */
int rn_obs_start(uv_loop_t *loop, const char *hostport, char *err, size_t errlen);

/* The bound port, or 0 when no listener runs. */
int rn_obs_port(void);

/* Closes the listener (the loop must run for its handles to close). */
void rn_obs_stop(void);

/* Adds a check named `name` (static string). Returns 0 or -ENOSPC. */
int rn_obs_add_check(const char *name, rn_obs_ready_fn fn, void *arg);

/* Removes every check registered with `arg`. */
void rn_obs_remove_checks(void *arg);

/* Runs every check; true when all pass. The report ("name: ok|reason" lines) goes to
 * out[out_len] when out is not NULL. */
bool rn_obs_ready(char *out, size_t out_len);

#endif
