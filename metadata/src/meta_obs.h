/*
 * The metadata service's metrics and readiness (obs.c): request counts and latency by api,
 * journal fdatasync latency, state sizes (topics, partitions, objects, agents) read at scrape
 * time, and the "metadata_journal" readiness check. Hooks are one call each in server.c and
 * journal.c; everything is listed in docs/observability.md.
 */
#ifndef RUNNEL_METADATA_META_OBS_H
#define RUNNEL_METADATA_META_OBS_H

#include <stdbool.h>
#include <stdint.h>

struct meta_server;

/* Monotonic nanoseconds (uv_hrtime). */
uint64_t meta__obs_now_ns(void);

/* One journal fdatasync that took `ns` and returned `rc`; any thread. */
void meta__obs_fsync(uint64_t ns, int rc);

/* Binds the state gauges to `srv` and registers its readiness check; undone by _close. */
void meta__obs_open(struct meta_server *srv);
void meta__obs_close(struct meta_server *srv);

/* A request of `api_key` that arrived at `started_ns` is answered now; `error` is NULL or the
 * reason it failed ("bad_request": connection closed; "storage": journal failed). */
void meta__obs_request(int16_t api_key, uint64_t started_ns, const char *error);

/* A background snapshot ended `ns` after it started, written or failed (0: failed to start). */
void meta__obs_snapshot_done(uint64_t ns, bool ok);

#endif
