/*
 * The observability HTTP server (runnel/common/http.h): a request-head parser and a libuv
 * listener around it.
 *
 * Each connection owns one buffer of max_request_bytes. Reads append to it; every complete head
 * is answered at once (handlers are synchronous, so pipelined requests are answered in order by
 * the order of uv_write calls) and consumed. A head that does not fit, or does not parse, is
 * answered with its 4xx/5xx status and `Connection: close`, after which nothing more is read.
 * One timer per connection bounds both a request's arrival (slow clients sending a byte at a
 * time do not reset it) and keep-alive idleness. Unsent response bytes above
 * RN__HTTP_MAX_UNSENT pause reading, so a client that pipelines without reading costs bounded
 * memory.
 */
#include "runnel/common/http.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runnel/common/config.h"
#include "runnel/common/log.h"

#define RN__HTTP_MAX_UNSENT (8u << 20) /* response bytes queued before reads pause */

struct rn__http_conn {
    struct rn_http_server *srv; /* owner */
    uv_tcp_t tcp;               /* the socket; freed in the close callback */
    uv_timer_t timer;           /* request deadline / keep-alive idleness */
    char *buf;                  /* received bytes not yet consumed (max_request_bytes) */
    size_t len;                 /* bytes in buf */
    size_t unsent;              /* bytes handed to uv_write and not yet written */
    int handles;                /* handles still open (tcp, timer) */
    bool reading;               /* uv_read_start is active */
    bool closing;               /* close started */
    bool close_after;           /* close once everything queued is written */
    bool draining;              /* answered and shut down; reading only to discard */
    struct rn__http_conn *prev; /* server's connections */
    struct rn__http_conn *next;
};

struct rn_http_server {
    uv_loop_t *loop;             /* not owned */
    uv_tcp_t listener;           /* listening socket */
    struct rn_http_options opt;  /* with defaults applied */
    rn_http_handler_fn fn;       /* request handler */
    void *arg;                   /* its argument */
    int port;                    /* bound port */
    struct rn__http_conn *conns; /* open connections */
    int n_conns;                 /* count of conns */
    bool closing;                /* rn_http_server_close() ran */
    bool listener_closed;        /* the listener's close callback ran */
};

struct rn__http_shutdown {
    uv_shutdown_t req;          /* libuv request */
    struct rn__http_conn *conn; /* connection shut down */
};

struct rn__http_write {
    uv_write_t req;             /* first, so the callback can cast */
    struct rn__http_conn *conn; /* connection written to */
    char *buf;                  /* head + body, freed when written */
    size_t len;                 /* bytes */
};

/* ---- parser ---- */

static bool rn__tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static ssize_t rn__fail(struct rn_http_request *req, int status, const char **why, const char *w)
{
    req->error_status = status;
    if (why != NULL) {
        *why = w;
    }
    return -EPROTO;
}

/* True when `value` (n bytes) lists `token` among its comma-separated elements. */
static bool rn__has_token(const char *value, size_t n, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < n) {
        while (i < n && (value[i] == ' ' || value[i] == '\t' || value[i] == ',')) {
            i++;
        }
        size_t start = i;
        while (i < n && value[i] != ',') {
            i++;
        }
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t')) {
            end--;
        }
        if (end - start == tl && strncasecmp(value + start, token, tl) == 0) {
            return true;
        }
    }
    return false;
}

/* Parses the request line [p, p+n) (without its line ending). */
static ssize_t rn__parse_request_line(const char *p, size_t n, struct rn_http_request *req,
                                      const char **why)
{
    size_t i = 0;
    while (i < n && rn__tchar(p[i])) {
        i++;
    }
    if (i == 0 || i >= sizeof(req->method) || i >= n || p[i] != ' ') {
        return rn__fail(req, 400, why, "malformed request method");
    }
    memcpy(req->method, p, i);
    req->method[i] = '\0';
    size_t t = ++i;
    while (i < n && p[i] != ' ') {
        if ((unsigned char)p[i] <= 0x20 || p[i] == 0x7f) {
            return rn__fail(req, 400, why, "control character in request target");
        }
        i++;
    }
    size_t tlen = i - t;
    if (tlen == 0 || i >= n) {
        return rn__fail(req, 400, why, "malformed request line");
    }
    if (p[t] != '/') {
        return rn__fail(req, 400, why, "request target must be an absolute path");
    }
    size_t plen = 0;
    while (plen < tlen && p[t + plen] != '?' && p[t + plen] != '#') {
        plen++;
    }
    if (tlen >= RN_HTTP_MAX_PATH) {
        return rn__fail(req, 414, why, "request target too long");
    }
    memcpy(req->path, p + t, plen);
    req->path[plen] = '\0';
    const char *ver = p + i + 1;
    size_t vlen = n - i - 1;
    if (vlen == 8 && memcmp(ver, "HTTP/1.", 7) == 0 && (ver[7] == '0' || ver[7] == '1')) {
        req->minor = ver[7] - '0';
        return 0;
    }
    if (vlen >= 5 && memcmp(ver, "HTTP/", 5) == 0 && memchr(ver, ' ', vlen) == NULL) {
        return rn__fail(req, 505, why, "only HTTP/1.0 and HTTP/1.1 are served");
    }
    return rn__fail(req, 400, why, "malformed HTTP version");
}

/* Parses one header line [p, p+n); updates req. */
static ssize_t rn__parse_header(const char *p, size_t n, struct rn_http_request *req,
                                bool *keep_alive, const char **why)
{
    size_t i = 0;
    while (i < n && rn__tchar(p[i])) {
        i++;
    }
    if (i == 0 || i >= n || p[i] != ':') {
        return rn__fail(req, 400, why, "malformed header line");
    }
    size_t nl = i;
    const char *v = p + i + 1;
    size_t vl = n - i - 1;
    while (vl > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) {
        vl--;
    }
    for (size_t k = 0; k < vl; k++) {
        unsigned char c = (unsigned char)v[k];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return rn__fail(req, 400, why, "control character in header value");
        }
    }
    if (nl == 14 && strncasecmp(p, "Content-Length", nl) == 0) {
        bool zero = vl > 0;
        for (size_t k = 0; k < vl; k++) {
            if (v[k] < '0' || v[k] > '9') {
                return rn__fail(req, 400, why, "malformed Content-Length");
            }
            zero = zero && v[k] == '0';
        }
        if (!zero) {
            return rn__fail(req, 413, why, "request bodies are not accepted");
        }
    } else if (nl == 17 && strncasecmp(p, "Transfer-Encoding", nl) == 0) {
        return rn__fail(req, 501, why, "Transfer-Encoding is not supported");
    } else if (nl == 10 && strncasecmp(p, "Connection", nl) == 0) {
        if (rn__has_token(v, vl, "close")) {
            req->close = true;
        }
        if (rn__has_token(v, vl, "keep-alive")) {
            *keep_alive = true;
        }
    }
    return 0;
}

ssize_t rn_http_parse(const char *buf, size_t len, size_t max, struct rn_http_request *req,
                      const char **why)
{
    memset(req, 0, sizeof(*req));
    if (why != NULL) {
        *why = NULL;
    }
    size_t scan = len < max ? len : max;
    size_t pos = 0;
    bool first = true;
    bool keep_alive = false;
    /* Robustness (RFC 9112 2.2): empty lines before the request line are skipped. */
    while (pos < scan && (buf[pos] == '\r' || buf[pos] == '\n')) {
        if (buf[pos] == '\r' && (pos + 1 >= scan || buf[pos + 1] != '\n')) {
            break;
        }
        pos += buf[pos] == '\r' ? 2 : 1;
    }
    for (;;) {
        const char *nlp = memchr(buf + pos, '\n', scan - pos);
        if (nlp == NULL) {
            if (len >= max) {
                return rn__fail(req, 431, why, "request head too large");
            }
            return 0;
        }
        size_t end = (size_t)(nlp - buf);
        size_t lend = end;
        if (lend > pos && buf[lend - 1] == '\r') {
            lend--;
        }
        const char *line = buf + pos;
        size_t ll = lend - pos;
        if (memchr(line, '\r', ll) != NULL || memchr(line, '\0', ll) != NULL) {
            return rn__fail(req, 400, why, "stray CR or NUL in request head");
        }
        pos = end + 1;
        ssize_t rc;
        if (first) {
            rc = rn__parse_request_line(line, ll, req, why);
            first = false;
        } else if (ll == 0) {
            if (req->minor == 0 && !keep_alive) {
                req->close = true;
            }
            return (ssize_t)pos;
        } else if (line[0] == ' ' || line[0] == '\t') {
            rc = rn__fail(req, 400, why, "obsolete header line folding");
        } else {
            rc = rn__parse_header(line, ll, req, &keep_alive, why);
        }
        if (rc < 0) {
            return rc;
        }
    }
}

const char *rn_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* ---- server ---- */

static void rn__conn_close(struct rn__http_conn *c);
static void rn__conn_update_reading(struct rn__http_conn *c);

static void rn__server_maybe_free(struct rn_http_server *s)
{
    if (s->closing && s->listener_closed && s->conns == NULL) {
        free(s);
    }
}

static void rn__conn_handle_closed(uv_handle_t *h)
{
    struct rn__http_conn *c = h->data;
    if (--c->handles > 0) {
        return;
    }
    struct rn_http_server *s = c->srv;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    s->n_conns--;
    free(c->buf);
    free(c);
    rn__server_maybe_free(s);
}

static void rn__conn_close(struct rn__http_conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    c->reading = false;
    uv_close((uv_handle_t *)&c->timer, rn__conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, rn__conn_handle_closed);
}

static void rn__timer_cb(uv_timer_t *t);

static void rn__shutdown_cb(uv_shutdown_t *req, int status)
{
    struct rn__http_shutdown *sd = (struct rn__http_shutdown *)req;
    struct rn__http_conn *c = sd->conn;
    free(sd);
    if (status < 0 && !c->closing) {
        rn__conn_close(c);
    }
}

/*
 * Ends a connection after its last answer without losing that answer: closing a socket with
 * unread request bytes makes the kernel send a reset, which can discard the answer at the
 * client. So the write side is shut down and what the client still sends is read and dropped
 * until it closes too, or a short deadline passes.
 */
static void rn__conn_linger(struct rn__http_conn *c)
{
    struct rn__http_shutdown *sd = calloc(1, sizeof(*sd));
    if (sd == NULL) {
        abort();
    }
    sd->conn = c;
    if (uv_shutdown(&sd->req, (uv_stream_t *)&c->tcp, rn__shutdown_cb) != 0) {
        free(sd);
        rn__conn_close(c);
        return;
    }
    c->draining = true;
    c->len = 0;
    uint64_t linger = c->srv->opt.timeout_ms < 2000 ? c->srv->opt.timeout_ms : 2000;
    uv_timer_start(&c->timer, rn__timer_cb, linger, 0);
    rn__conn_update_reading(c);
}

static void rn__write_cb(uv_write_t *w, int status)
{
    struct rn__http_write *wr = (struct rn__http_write *)w;
    struct rn__http_conn *c = wr->conn;
    c->unsent -= wr->len;
    free(wr->buf);
    free(wr);
    if (c->closing) {
        return;
    }
    if (status < 0) {
        rn__conn_close(c);
        return;
    }
    if (c->close_after && c->unsent == 0 && !c->draining) {
        rn__conn_linger(c);
        return;
    }
    rn__conn_update_reading(c);
}

/* Queues one response; `body` (malloc'd or NULL) is consumed. */
static void rn__send(struct rn__http_conn *c, int status, const char *ctype, char *body,
                     size_t body_len, bool head_only, bool close, const char *extra)
{
    char head[512];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\n%s%s\r\n",
                      status, rn_http_reason(status),
                      ctype != NULL ? ctype : "text/plain; charset=utf-8", body_len,
                      close ? "Connection: close\r\n" : "", extra != NULL ? extra : "");
    size_t send_body = head_only ? 0 : body_len;
    struct rn__http_write *wr = calloc(1, sizeof(*wr));
    char *out = malloc((size_t)hn + send_body + 1);
    if (wr == NULL || out == NULL) {
        abort();
    }
    memcpy(out, head, (size_t)hn);
    if (send_body > 0) {
        memcpy(out + hn, body, send_body);
    }
    free(body);
    wr->conn = c;
    wr->buf = out;
    wr->len = (size_t)hn + send_body;
    if (close) {
        c->close_after = true;
    }
    c->unsent += wr->len;
    uv_buf_t b = uv_buf_init(out, (unsigned)wr->len);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, rn__write_cb) != 0) {
        c->unsent -= wr->len;
        free(out);
        free(wr);
        rn__conn_close(c);
    }
}

/* Answers a request that could not be parsed (or timed out) and stops reading. */
static void rn__send_error(struct rn__http_conn *c, int status, const char *why)
{
    char *body = NULL;
    int n = asprintf(&body, "%d %s: %s\n", status, rn_http_reason(status), why ? why : "");
    if (n < 0) {
        abort();
    }
    rn__send(c, status, NULL, body, (size_t)n, false, true, NULL);
    rn__conn_update_reading(c);
}

static void rn__timer_cb(uv_timer_t *t)
{
    struct rn__http_conn *c = t->data;
    if (c->closing) {
        return;
    }
    if (c->len > 0 && !c->close_after && !c->draining) {
        rn__send_error(c, 408, "the request did not arrive in time");
        uv_timer_start(&c->timer, rn__timer_cb, c->srv->opt.timeout_ms, 0); /* then give up */
        return;
    }
    rn__conn_close(c);
}

/* Answers every complete request head in the buffer. */
static void rn__process(struct rn__http_conn *c)
{
    struct rn_http_server *s = c->srv;
    while (!c->closing && !c->close_after && c->len > 0) {
        struct rn_http_request req;
        const char *why = NULL;
        ssize_t n = rn_http_parse(c->buf, c->len, s->opt.max_request_bytes, &req, &why);
        if (n == 0) {
            return;
        }
        if (n < 0) {
            rn_log(RN_LOG_DEBUG, "http_bad_request", "status=%d why=\"%s\"", req.error_status,
                   why ? why : "?");
            c->len = 0;
            rn__send_error(c, req.error_status, why);
            return;
        }
        memmove(c->buf, c->buf + n, c->len - (size_t)n);
        c->len -= (size_t)n;
        /* The next request gets a fresh deadline (keep-alive idleness until its first byte). */
        uv_timer_start(&c->timer, rn__timer_cb, s->opt.timeout_ms, 0);
        bool head = strcmp(req.method, "HEAD") == 0;
        if (!head && strcmp(req.method, "GET") != 0) {
            char *body = strdup("405 Method Not Allowed: only GET and HEAD are served\n");
            if (body == NULL) {
                abort();
            }
            rn__send(c, 405, NULL, body, strlen(body), false, req.close, "Allow: GET, HEAD\r\n");
            continue;
        }
        struct rn_http_response resp = {.status = 200};
        s->fn(s->arg, &req, &resp);
        rn__send(c, resp.status, resp.content_type, resp.body, resp.body_len, head, req.close,
                 NULL);
    }
}

static void rn__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct rn__http_conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->srv->opt.max_request_bytes - c->len));
}

static void rn__read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct rn__http_conn *c = st->data;
    (void)buf;
    if (c->closing) {
        return;
    }
    if (nread < 0) {
        rn__conn_close(c);
        return;
    }
    if (c->draining) {
        return; /* dropped; the buffer is reused */
    }
    c->len += (size_t)nread;
    rn__process(c);
    rn__conn_update_reading(c);
}

static void rn__conn_update_reading(struct rn__http_conn *c)
{
    if (c->closing) {
        return;
    }
    bool want =
        c->draining || (!c->close_after && !c->srv->closing && c->unsent < RN__HTTP_MAX_UNSENT &&
                        c->len < c->srv->opt.max_request_bytes);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, rn__alloc_cb, rn__read_cb) == 0) {
            c->reading = true;
        }
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void rn__on_connection(uv_stream_t *server, int status)
{
    struct rn_http_server *s = server->data;
    if (status < 0 || s->closing) {
        return;
    }
    struct rn__http_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        abort();
    }
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        rn__conn_close(c);
        return;
    }
    if (s->n_conns > s->opt.max_connections) {
        rn_log(RN_LOG_WARN, "http_conn_refused", "connections=%d", s->n_conns);
        rn__conn_close(c);
        return;
    }
    c->buf = malloc(s->opt.max_request_bytes);
    if (c->buf == NULL) {
        abort();
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, rn__timer_cb, s->opt.timeout_ms, 0);
    rn__conn_update_reading(c);
}

int rn_http_server_start(struct rn_http_server **out, uv_loop_t *loop, const char *hostport,
                         const struct rn_http_options *o, rn_http_handler_fn fn, void *arg,
                         char *err, size_t errlen)
{
    char host[256];
    int port = 0;
    if (hostport == NULL || rn_parse_hostport(hostport, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "bad listen address '%s' (want host:port)", hostport ? hostport : "");
        return -EINVAL;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", hostport, gai_strerror(gai));
        return -EINVAL;
    }
    struct rn_http_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        abort();
    }
    s->loop = loop;
    s->fn = fn;
    s->arg = arg;
    if (o != NULL) {
        s->opt = *o;
    }
    if (s->opt.max_request_bytes == 0) {
        s->opt.max_request_bytes = 8192;
    }
    if (s->opt.max_request_bytes < 64) {
        s->opt.max_request_bytes = 64;
    }
    if (s->opt.timeout_ms == 0) {
        s->opt.timeout_ms = 10000;
    }
    if (s->opt.max_connections <= 0) {
        s->opt.max_connections = 64;
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    int rc = uv_tcp_bind(&s->listener, res->ai_addr, 0);
    freeaddrinfo(res);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)&s->listener, 128, rn__on_connection);
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", hostport, uv_strerror(rc));
        rn_http_server_close(s); /* frees s from the listener's close callback */
        return rc;
    }
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &sl) == 0) {
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    }
    *out = s;
    return 0;
}

int rn_http_server_port(const struct rn_http_server *s)
{
    return s->port;
}

static void rn__listener_closed(uv_handle_t *h)
{
    struct rn_http_server *s = h->data;
    s->listener_closed = true;
    rn__server_maybe_free(s);
}

void rn_http_server_close(struct rn_http_server *s)
{
    if (s == NULL || uv_is_closing((uv_handle_t *)&s->listener)) {
        return;
    }
    s->closing = true;
    uv_close((uv_handle_t *)&s->listener, rn__listener_closed);
    struct rn__http_conn *c = s->conns;
    while (c != NULL) {
        struct rn__http_conn *next = c->next;
        rn__conn_close(c);
        c = next;
    }
}
