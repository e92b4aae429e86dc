/* Unit tests for common/src/http.c: the request-head parser on good and bad input, and the
 * server on a real loop with a blocking client thread (keep-alive, pipelining, HEAD, 405,
 * oversize heads, garbage, a slow client, the connection limit, clean shutdown). */
#include "test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <uv.h>

#include "runnel/common/http.h"

/* ---- parser ---- */

static ssize_t parse(const char *s, size_t max, struct rn_http_request *req)
{
    const char *why = NULL;
    ssize_t n = rn_http_parse(s, strlen(s), max, req, &why);
    if (n < 0) {
        assert_non_null(why);
    }
    return n;
}

static void test_parse_good(void **state)
{
    struct rn_http_request req;
    const char *s = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\nGET /next";
    ssize_t n = parse(s, 8192, &req);
    assert_int_equal(n, (ssize_t)(strstr(s, "GET /next") - s));
    assert_string_equal(req.method, "GET");
    assert_string_equal(req.path, "/metrics");
    assert_int_equal(req.minor, 1);
    assert_false(req.close);

    assert_true(parse("HEAD /readyz HTTP/1.1\nConnection: keep-alive, Close\n\n", 8192, &req) > 0);
    assert_string_equal(req.method, "HEAD");
    assert_true(req.close);

    assert_true(parse("GET / HTTP/1.0\r\n\r\n", 8192, &req) > 0);
    assert_true(req.close); /* HTTP/1.0 closes unless keep-alive */
    assert_true(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 8192, &req) > 0);
    assert_false(req.close);
    assert_true(parse("\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 8192, &req) > 0);
}

static void test_parse_incomplete(void **state)
{
    struct rn_http_request req;
    const char *full = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    for (size_t i = 0; i < strlen(full); i++) {
        const char *why = NULL;
        assert_int_equal(rn_http_parse(full, i, 8192, &req, &why), 0);
    }
    assert_int_equal(rn_http_parse(full, strlen(full), 8192, &req, NULL), (ssize_t)strlen(full));
}

static void expect_status(const char *s, size_t max, int status)
{
    struct rn_http_request req;
    const char *why = NULL;
    ssize_t n = rn_http_parse(s, strlen(s), max, &req, &why);
    if (n != -EPROTO || req.error_status != status) {
        fail_msg("'%s': got %zd status %d, want %d", s, n, req.error_status, status);
    }
    assert_non_null(why);
}

static void test_parse_bad(void **state)
{
    expect_status("GARBAGE\r\n\r\n", 8192, 400);
    expect_status(" GET / HTTP/1.1\r\n\r\n", 8192, 400);
    expect_status("GET  / HTTP/1.1\r\n\r\n", 8192, 400);
    expect_status("GET / HTTP/1.1 extra\r\n\r\n", 8192, 400);
    expect_status("GET http://x/ HTTP/1.1\r\n\r\n", 8192, 400);
    expect_status("GET /a\x01 HTTP/1.1\r\n\r\n", 8192, 400);
    expect_status("GET / HTTP/2.0\r\n\r\n", 8192, 505);
    expect_status("GET / FTP/1.0\r\n\r\n", 8192, 400);
    expect_status("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 8192, 400);
    expect_status("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 8192, 400);
    expect_status("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 8192, 400);
    expect_status("GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n", 8192, 400);
    expect_status("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 8192, 400);
    expect_status("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 8192, 413);
    expect_status("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 8192, 400);
    expect_status("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 8192, 501);
    expect_status("VERYLONGMETHODNAMEXYZ / HTTP/1.1\r\n\r\n", 8192, 400);
    char big[600];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    snprintf(big + 400, sizeof(big) - 400, " HTTP/1.1\r\n\r\n");
    expect_status(big, 8192, 414);
    /* A head longer than the limit, complete or not. */
    expect_status("GET / HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 32, 431);
    expect_status("GET / HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 32, 431);
    /* A NUL inside the head. */
    struct rn_http_request req;
    const char nul[] = "GET /\0 HTTP/1.1\r\n\r\n";
    assert_int_equal(rn_http_parse(nul, sizeof(nul) - 1, 8192, &req, NULL), -EPROTO);
}

/* ---- server ---- */

struct scenario {
    uv_loop_t loop;
    uv_async_t done;                     /* the client thread finished */
    struct rn_http_server *srv;          /* under test */
    int port;                            /* its port */
    void (*client)(struct scenario *sc); /* runs on the client thread */
    int handled;                         /* requests the handler saw (loop thread) */
    char out[8][4096];                   /* what each client connection read */
    int results[8];                      /* scenario-specific results */
};

static void handler(void *arg, const struct rn_http_request *req, struct rn_http_response *resp)
{
    struct scenario *sc = arg;
    sc->handled++;
    if (strcmp(req->path, "/hello") == 0) {
        resp->body = strdup("hello\n");
        resp->body_len = 6;
    } else {
        resp->status = 404;
    }
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) {
            return; /* the server may close first; what was read tells */
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Reads until EOF (or the buffer is full, or 10 s pass); returns bytes read. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t r = recv(fd, buf + got, cap - 1 - got, 0);
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    buf[got] = '\0';
    return got;
}

/* Reads until `needle` has been seen `count` times. */
static void read_until(int fd, char *buf, size_t cap, const char *needle, int count)
{
    size_t got = 0;
    for (;;) {
        int seen = 0;
        for (const char *p = buf; got > 0 && (p = strstr(p, needle)) != NULL; p++) {
            seen++;
        }
        if (seen >= count || got + 1 >= cap) {
            return;
        }
        ssize_t r = recv(fd, buf + got, cap - 1 - got, 0);
        if (r <= 0) {
            return;
        }
        got += (size_t)r;
        buf[got] = '\0';
    }
}

static void *client_main(void *arg)
{
    struct scenario *sc = arg;
    sc->client(sc);
    uv_async_send(&sc->done);
    return NULL;
}

static void on_done(uv_async_t *a)
{
    struct scenario *sc = a->data;
    rn_http_server_close(sc->srv);
    uv_close((uv_handle_t *)a, NULL);
}

static void run_scenario(struct scenario *sc, const struct rn_http_options *o)
{
    char err[256] = "";
    assert_int_equal(uv_loop_init(&sc->loop), 0);
    assert_int_equal(
        rn_http_server_start(&sc->srv, &sc->loop, "127.0.0.1:0", o, handler, sc, err, sizeof(err)),
        0);
    sc->port = rn_http_server_port(sc->srv);
    assert_true(sc->port > 0);
    uv_async_init(&sc->loop, &sc->done, on_done);
    sc->done.data = sc;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, client_main, sc), 0);
    uv_run(&sc->loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    /* Every handle closed: the server freed itself and the loop closes cleanly. */
    assert_int_equal(uv_loop_close(&sc->loop), 0);
}

static void client_keepalive(struct scenario *sc)
{
    int fd = connect_to(sc->port);
    /* Two pipelined requests, then HEAD, then a 404, on one connection. */
    const char *reqs = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\n\r\n";
    send_all(fd, reqs, strlen(reqs));
    read_until(fd, sc->out[0], sizeof(sc->out[0]), "hello\n", 2);
    const char *more =
        "HEAD /hello HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n";
    send_all(fd, more, strlen(more));
    read_all(fd, sc->out[1], sizeof(sc->out[1]));
    close(fd);
    /* POST is refused with 405 and the connection stays usable. */
    fd = connect_to(sc->port);
    const char *post = "POST /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
                       "GET /hello HTTP/1.0\r\n\r\n";
    send_all(fd, post, strlen(post));
    read_all(fd, sc->out[2], sizeof(sc->out[2]));
    close(fd);
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p++) {
        n++;
    }
    return n;
}

static void test_server_keepalive(void **state)
{
    struct scenario *sc = calloc(1, sizeof(*sc));
    sc->client = client_keepalive;
    run_scenario(sc, NULL);
    assert_int_equal(count(sc->out[0], "HTTP/1.1 200 OK\r\n"), 2);
    assert_int_equal(count(sc->out[0], "Content-Length: 6\r\n"), 2);
    /* HEAD: the headers of a 200 with its length, no body; then the 404 closes. */
    assert_non_null(strstr(sc->out[1], "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(sc->out[1], "Content-Length: 6\r\n"));
    assert_null(strstr(sc->out[1], "hello\n"));
    assert_non_null(strstr(sc->out[1], "HTTP/1.1 404 Not Found\r\n"));
    assert_non_null(strstr(sc->out[1], "Connection: close\r\n"));
    assert_non_null(strstr(sc->out[2], "HTTP/1.1 405 Method Not Allowed\r\n"));
    assert_non_null(strstr(sc->out[2], "Allow: GET, HEAD\r\n"));
    assert_non_null(strstr(sc->out[2], "hello\n"));
    assert_int_equal(sc->handled, 5);
    free(sc);
}

static void client_bad(struct scenario *sc)
{
    /* Garbage: 400 and the connection closes (read_all returns at EOF). */
    int fd = connect_to(sc->port);
    const char *garbage = "\x16\x03\x01 binary\r\n\r\n";
    send_all(fd, garbage, strlen(garbage));
    read_all(fd, sc->out[0], sizeof(sc->out[0]));
    close(fd);
    /* A head larger than max_request_bytes, never terminated: 431, closed. */
    fd = connect_to(sc->port);
    char big[2000];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\nX-Pad: ", 23);
    send_all(fd, big, sizeof(big));
    read_all(fd, sc->out[1], sizeof(sc->out[1]));
    close(fd);
    /* A request body: 413. */
    fd = connect_to(sc->port);
    const char *body = "GET /hello HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    send_all(fd, body, strlen(body));
    read_all(fd, sc->out[2], sizeof(sc->out[2]));
    close(fd);
    /* A slow client: half a request, then silence; 408 after the timeout, closed. */
    fd = connect_to(sc->port);
    send_all(fd, "GET /hel", 8);
    read_all(fd, sc->out[3], sizeof(sc->out[3]));
    close(fd);
    /* A silent client is closed without an answer. */
    fd = connect_to(sc->port);
    sc->results[0] = (int)read_all(fd, sc->out[4], sizeof(sc->out[4]));
    close(fd);
}

static void test_server_bad_clients(void **state)
{
    struct scenario *sc = calloc(1, sizeof(*sc));
    sc->client = client_bad;
    struct rn_http_options o = {.max_request_bytes = 1024, .timeout_ms = 300};
    run_scenario(sc, &o);
    assert_non_null(strstr(sc->out[0], "HTTP/1.1 400 Bad Request\r\n"));
    assert_non_null(strstr(sc->out[0], "Connection: close\r\n"));
    assert_non_null(strstr(sc->out[1], "HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    assert_non_null(strstr(sc->out[2], "HTTP/1.1 413 Content Too Large\r\n"));
    assert_non_null(strstr(sc->out[3], "HTTP/1.1 408 Request Timeout\r\n"));
    assert_int_equal(sc->results[0], 0);
    assert_int_equal(sc->handled, 0);
    free(sc);
}

static void client_limit(struct scenario *sc)
{
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = connect_to(sc->port);
    }
    usleep(200000); /* let the server accept all three before the first one finishes */
    /* Two are served; the third is closed at accept. */
    for (int i = 0; i < 3; i++) {
        send_all(fds[i], "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n", 42);
        read_all(fds[i], sc->out[i], sizeof(sc->out[i]));
        close(fds[i]);
    }
}

static void test_server_connection_limit(void **state)
{
    struct scenario *sc = calloc(1, sizeof(*sc));
    sc->client = client_limit;
    struct rn_http_options o = {.max_connections = 2};
    run_scenario(sc, &o);
    int served = 0;
    for (int i = 0; i < 3; i++) {
        served += strstr(sc->out[i], "hello\n") != NULL;
    }
    assert_int_equal(served, 2);
    free(sc);
}

static void test_server_bad_address(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rn_http_server *s = NULL;
    char err[256] = "";
    assert_int_equal(
        rn_http_server_start(&s, &loop, "nonsense", NULL, handler, NULL, err, sizeof(err)),
        -EINVAL);
    assert_non_null(strstr(err, "bad listen address"));
    /* Port in use: the second bind fails with a message; the loop still closes cleanly. */
    struct rn_http_server *a = NULL;
    assert_int_equal(
        rn_http_server_start(&a, &loop, "127.0.0.1:0", NULL, handler, NULL, err, sizeof(err)), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", rn_http_server_port(a));
    assert_true(rn_http_server_start(&s, &loop, addr, NULL, handler, NULL, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "cannot listen"));
    rn_http_server_close(a);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int run_test_http(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),         cmocka_unit_test(test_parse_incomplete),
        cmocka_unit_test(test_parse_bad),          cmocka_unit_test(test_server_keepalive),
        cmocka_unit_test(test_server_bad_clients), cmocka_unit_test(test_server_connection_limit),
        cmocka_unit_test(test_server_bad_address),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
