/*
 * The shared test environment of the agent unit tests (test_produce.c, test_fetch.c,
 * test_admin.c): one libuv loop holding an in-process metadata server over loopback, a struct
 * agent wired to it, the agent's listener on 127.0.0.1 and up to two raw non-blocking client
 * sockets. Requests are encoded with the generated codec and written to a client socket; the
 * response frame is read back with recv(MSG_DONTWAIT) while the loop turns, then decoded into
 * an arena. Every wait is bounded by a count of loop turns and fails the test when exhausted.
 * The caller sets the agent's extra configuration, opens its store and initialises the agent
 * parts it tests between agent_env_open() and agent_env_listen().
 */
#ifndef RUNNEL_TEST_AGENT_ENV_H
#define RUNNEL_TEST_AGENT_ENV_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "agent.h"
#include "runnel/metadata/server.h"
#include "runnel/protocol/mem.h"

struct agent_env {
    uv_loop_t loop;          /* test loop */
    struct agent a;          /* agent under test */
    struct meta_server *srv; /* metadata service; NULL once a test closed it */
    char dir[64];            /* the metadata service's data directory */
    int port;                /* agent listener port */
    int fd[2];               /* raw client sockets, -1 when not connected */
    int32_t corr;            /* next correlation id (tests that number requests) */
    int done;                /* completed callbacks, counted by the tests */
    int drained;             /* drain callbacks, counted by the tests */
    struct kp_arena arena;   /* decoded responses */
};

/*
 * Zeroes e, makes a data directory /tmp/runnel-test-<tag>-XXXXXX, initialises the loop, opens
 * the metadata server on 127.0.0.1 (any port), sets the agent configuration every agent test
 * shares (loopback listener, cluster "test", 64 MiB frames, 100 connections, 5 ms flushes,
 * error-level logfmt logs), connects the agent's metadata client and initialises the arena.
 * Fails the test on any error.
 */
void agent_env_open(struct agent_env *e, const char *tag);

/*
 * Starts the agent listener, records its port and connects `clients` (0..2) raw sockets into
 * e->fd[0..]. Fails the test on any error.
 */
void agent_env_listen(struct agent_env *e, int clients);

/* Opens a non-blocking client socket to the agent and turns the loop 50 times; returns it. */
int agent_env_connect(struct agent_env *e);

/* Turns the loop (at most 20000 times, 200 us apart) until *counter >= target; asserts it is. */
void agent_env_pump(struct agent_env *e, int *counter, int target);

/*
 * Encodes a request frame (header with `client_id` and `corr`, then `body` as api `key` at
 * `version`) and writes all of it to e->fd[c], turning the loop between sends (at most 100000
 * attempts). Fails the test unless the whole frame was written.
 */
void agent_env_send(struct agent_env *e, int c, int16_t key, int16_t version, int32_t corr,
                    const char *client_id, const void *body);

/*
 * Reads one response frame from e->fd[c], recv(MSG_DONTWAIT) alternating with loop turns (at
 * most `tries` attempts), and decodes its header and body as api `key` at `version` into `out`
 * (memory in e->arena). Stores the bytes left undecoded in *rest when rest is not NULL. Returns
 * the response's correlation id; fails the test if no whole frame arrived or it doesn't decode.
 */
int32_t agent_env_recv(struct agent_env *e, int c, int16_t key, int16_t version, int tries,
                       void *out, size_t *rest);

/*
 * Closes the metadata server (unless e->srv is NULL), runs the loop until it has nothing left,
 * asserts it closes cleanly, frees the arena and removes the data directory. The caller stops
 * and frees the agent parts, its metadata client and its store first.
 */
void agent_env_close(struct agent_env *e);

#endif
