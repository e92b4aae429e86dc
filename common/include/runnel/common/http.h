/*
 * A minimal HTTP/1.1 server on a libuv loop, for the observability endpoints (/metrics,
 * /healthz, /readyz) and nothing else: GET and HEAD only, no request bodies, small bounded
 * request heads, keep-alive and pipelining answered in order, and deadlines so that a slow or
 * silent client cannot hold a connection. Handlers answer synchronously.
 *
 * The request-head parser is a pure function (no I/O) so tests can feed it any bytes.
 */
#ifndef RUNNEL_COMMON_HTTP_H
#define RUNNEL_COMMON_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#define RN_HTTP_MAX_PATH 256 /* longest request target accepted, bytes (longer: 414) */

/* One parsed request head. */
struct rn_http_request {
    char method[16];             /* e.g. "GET" */
    char path[RN_HTTP_MAX_PATH]; /* target up to '?', NUL-terminated, begins with '/' */
    int minor;                   /* HTTP/1.<minor>: 0 or 1 */
    bool close;                  /* the client wants the connection closed after the answer */
    int error_status;            /* when the parse failed: the status to answer (400, 431, ...) */
};

/*
 * Parses the request head at buf[0, len). Returns the head's length in bytes (through the empty
 * line) when it is complete and valid; 0 when more bytes are needed (only while len < max); or
 * -EPROTO with req->error_status set (400 malformed, 413 a request body, 414 target too long,
 * 431 head longer than `max`, 501 Transfer-Encoding, 505 not HTTP/1.x) and *why a static
 * description.
 */
ssize_t rn_http_parse(const char *buf, size_t len, size_t max, struct rn_http_request *req,
                      const char **why);

/* What a handler answers. */
struct rn_http_response {
    int status;               /* 200, 404, 503, ... */
    const char *content_type; /* static string; NULL: text/plain; charset=utf-8 */
    char *body;               /* malloc'd; the server frees it; may be NULL */
    size_t body_len;          /* bytes */
};

/* Called on the loop for each valid GET or HEAD request; fills *resp (status 200 preset). */
typedef void (*rn_http_handler_fn)(void *arg, const struct rn_http_request *req,
                                   struct rn_http_response *resp);

struct rn_http_options {
    size_t max_request_bytes; /* largest request head; 0: 8192 */
    uint32_t timeout_ms;      /* a request must arrive whole within this, and idle keep-alive
                                 connections close after it; 0: 10000 */
    int max_connections;      /* more are closed at accept; 0: 64 */
};

struct rn_http_server;

/* A short reason phrase for a status ("OK", "Not Found", ...). */
const char *rn_http_reason(int status);

/*
 * Listens on `hostport` ("host:port", "[v6]:port", ":port"; port 0 picks a free one) on `loop`
 * and serves requests with fn(arg, ...). `o` may be NULL for the defaults. On success stores the
 * server in *out and returns 0; otherwise a negative errno with a message in err[errlen].
 */
int rn_http_server_start(struct rn_http_server **out, uv_loop_t *loop, const char *hostport,
                         const struct rn_http_options *o, rn_http_handler_fn fn, void *arg,
                         char *err, size_t errlen);

/* The port actually bound. */
int rn_http_server_port(const struct rn_http_server *s);

/* Stops listening and closes every connection; the memory is freed once the handles are closed,
 * so the loop must run afterwards. */
void rn_http_server_close(struct rn_http_server *s);

#endif
