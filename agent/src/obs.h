/*
 * The agent's metrics, readiness and observability listener (obs.c). The rest of the agent calls
 * these as one-line hooks; each is cheap (a table lookup and a few relaxed atomic adds) and safe
 * to call before agent_obs_start() or after agent_obs_stop() (it then only counts).
 * Every series is listed in docs/observability.md.
 */
#ifndef RUNNEL_AGENT_OBS_H
#define RUNNEL_AGENT_OBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent;
struct agent_req;
struct agent_cache;

/*
 * Binds the agent's gauges, registers the "store" and "metadata" readiness checks, starts the
 * store probe (a HEAD every few seconds) and, when cfg.http_listen is set, the HTTP listener.
 * Returns 0 or a negative errno (logged) when the listener cannot start.
 */
int agent_obs_start(struct agent *a);

/* Undoes agent_obs_start(): unbinds, removes the checks, stops the probe and the listener. */
void agent_obs_stop(struct agent *a);

/* A request is being freed: counts it by api and version with its latency and sizes. */
void agent_obs_request_done(const struct agent_req *req);

/* A request (or a frame that never became one: api_key -1) failed; `reason` is a static label
 * value such as "closed", "bad_header", "unsupported_api". */
void agent_obs_request_error(int16_t api_key, const char *reason);

/* A response struct `msg` of req's api is about to be encoded: counts the Kafka error codes of
 * Produce and Fetch responses (per partition, and Fetch's top-level code). */
void agent_obs_response(const struct agent_req *req, const void *msg);

/* A connection was accepted. */
void agent_obs_conn_accepted(void);

/* Reads were paused (true) or resumed (false) for produce backpressure. */
void agent_obs_paused(struct agent *a, bool paused);

/*
 * An object was committed: `bytes` of batches (`stored` after sealing), and the loop times (ms)
 * it was opened, sealed, PUT, its PUT finished, its commit sent and answered.
 */
void agent_obs_object_committed(struct agent *a, size_t bytes, size_t stored, uint64_t opened,
                                uint64_t sealed, uint64_t put, uint64_t put_done,
                                uint64_t committed, uint64_t answered);

/* Every batch of an object (`bytes` in all) was answered with Kafka error `error`. */
void agent_obs_produce_failed(int16_t error, size_t bytes);

/* Record bytes placed in a Fetch response. */
void agent_obs_fetch_bytes(size_t bytes);

/* An AgentReadBlock request from another agent was answered with a block (ok) or an error. */
void agent_obs_peer_served(bool ok);

/* The fetch path's chunk cache came (cache) or went (NULL). */
void agent_obs_cache(struct agent *a, struct agent_cache *cache);

#endif
