/*
 * The client library agents use to talk to the metadata service: asynchronous on a libuv loop,
 * pipelined (any number of requests in flight on one connection, answered in order), one
 * callback per request, push notifications for watched partitions, and reconnection.
 *
 * Requests are the generated structs of kp_rpc.h (e.g. struct kp_meta_commit_request) sent at
 * version 0. A request made while disconnected waits in a queue and is sent once connected.
 * When the connection drops, every request already sent fails with -ECONNRESET and is NOT
 * resent: a Commit may or may not have been applied (the object key tells: committing the same
 * key again answers DUPLICATE_RESOURCE). The client then reconnects with backoff (100 ms doubling
 * to 2 s); watches are per connection, so the state callback tells the owner to re-Watch.
 */
#ifndef RUNNEL_METADATA_CLIENT_H
#define RUNNEL_METADATA_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "kp_rpc.h"

struct meta_client;

/*
 * Completion of one request. status is 0 with `response` pointing to the decoded generated
 * response struct (valid only during the callback), or a negative errno (-ECONNRESET: the
 * connection dropped; -EPROTO: undecodable response; -ECANCELED: the client was closed) with
 * response NULL.
 */
typedef void (*meta_client_cb)(void *arg, int status, const void *response);

/* A high-watermark push for watched partitions (valid only during the callback). */
typedef void (*meta_client_push_cb)(void *arg, const struct kp_meta_notify_response *n);

/* Connection state changes: connected true after every (re)connect, false after a drop. */
typedef void (*meta_client_state_cb)(void *arg, bool connected);

/* Creates a client for host:port on `loop` and starts connecting. 0 or a negative errno. */
int meta_client_open(struct meta_client **out, uv_loop_t *loop, const char *host, int port);

void meta_client_set_push_cb(struct meta_client *c, meta_client_push_cb cb, void *arg);
void meta_client_set_state_cb(struct meta_client *c, meta_client_state_cb cb, void *arg);

/*
 * Sends `request` (a generated request struct of api `api_key`, encoded now, so it may be freed
 * after the call). Returns 0 (cb will be called exactly once) or a negative errno (-EINVAL: an
 * unknown api or an unencodable request; -ECANCELED: closing); cb is then not called.
 */
int meta_client_call(struct meta_client *c, int16_t api_key, const void *request, meta_client_cb cb,
                     void *arg);

/* Requests sent or queued and not yet answered. */
uint32_t meta_client_in_flight(const struct meta_client *c);

/* True while connected. */
bool meta_client_connected(const struct meta_client *c);

/* Fails every outstanding request with -ECANCELED, closes the connection; memory is freed once
 * the loop has run the close callbacks. */
void meta_client_close(struct meta_client *c);

#endif
