/*
 * The shared agent test environment (see agent_env.h): setup and teardown of the loop, the
 * in-process metadata server and the agent listener, raw loopback client sockets, and the
 * request-frame writer and response-frame reader the agent unit tests talk through.
 */
#include "test_util.h"

#include "agent_env.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runnel/metadata/client.h"
#include "runnel/protocol/codec.h"

void agent_env_open(struct agent_env *e, const char *tag)
{
    memset(e, 0, sizeof(*e));
    e->fd[0] = -1;
    e->fd[1] = -1;
    snprintf(e->dir, sizeof(e->dir), "/tmp/runnel-test-%s-XXXXXX", tag);
    assert_non_null(mkdtemp(e->dir));
    assert_int_equal(uv_loop_init(&e->loop), 0);
    struct meta_server_options o;
    meta_server_options_default(&o);
    o.data_dir = e->dir;
    o.host = "127.0.0.1";
    o.port = 0;
    char err[256];
    assert_int_equal(meta_server_open(&e->srv, &e->loop, &o, err, sizeof(err)), 0);
    struct agent *a = &e->a;
    a->loop = &e->loop;
    a->cfg.listen = "127.0.0.1:0";
    a->cfg.advertise = "";
    a->cfg.cluster_id = "test";
    a->cfg.max_frame_bytes = 64 << 20;
    a->cfg.max_connections = 100;
    a->cfg.flush_interval_ms = 5;
    a->cfg.log_level = "error";
    a->cfg.log_format = "logfmt";
    assert_int_equal(meta_client_open(&a->meta, &e->loop, "127.0.0.1", meta_server_port(e->srv)),
                     0);
    kp_arena_init(&e->arena, 0);
}

int agent_env_connect(struct agent_env *e)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(0x7f000001);
    sin.sin_port = htons((uint16_t)e->port);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
    assert_true(rc == 0 || errno == EINPROGRESS);
    for (int i = 0; i < 50; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
    }
    return fd;
}

void agent_env_listen(struct agent_env *e, int clients)
{
    assert_true(clients >= 0 && clients <= 2);
    assert_int_equal(agent_server_start(&e->a), 0);
    struct sockaddr_in sin;
    int len = sizeof(sin);
    assert_int_equal(uv_tcp_getsockname(&e->a.listener, (struct sockaddr *)&sin, &len), 0);
    e->port = ntohs(sin.sin_port);
    for (int c = 0; c < clients; c++) {
        e->fd[c] = agent_env_connect(e);
    }
}

void agent_env_pump(struct agent_env *e, int *counter, int target)
{
    for (int i = 0; i < 20000 && *counter < target; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    assert_true(*counter >= target);
}

void agent_env_send(struct agent_env *e, int c, int16_t key, int16_t version, int32_t corr,
                    const char *client_id, const void *body)
{
    const struct kp_api *api = kp_api_find(key);
    assert_non_null(api);
    struct kp_request_header h;
    kp_request_header_init(&h);
    h.request_api_key = key;
    h.request_api_version = version;
    h.correlation_id = corr;
    h.client_id = kp_str_from(client_id);
    int16_t hv = kp_request_header_version(key, version);
    size_t hl = 0;
    size_t bl = 0;
    assert_int_equal(kp_request_header_size(&h, hv, &hl), 0);
    assert_int_equal(api->request->size(body, version, &bl), 0);
    size_t n = 4 + hl + bl;
    uint8_t *buf = malloc(n);
    struct kp_writer w;
    kp_writer_init(&w, buf, n);
    kp_write_i32(&w, (int32_t)(hl + bl));
    assert_int_equal(kp_request_header_encode(&h, hv, &w), 0);
    assert_int_equal(api->request->encode(body, version, &w), 0);
    size_t off = 0;
    for (int i = 0; i < 100000 && off < n; i++) {
        ssize_t k = send(e->fd[c], buf + off, n - off, MSG_NOSIGNAL);
        if (k > 0) {
            off += (size_t)k;
        }
        uv_run(&e->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(off, n);
    free(buf);
}

int32_t agent_env_recv(struct agent_env *e, int c, int16_t key, int16_t version, int tries,
                       void *out, size_t *rest)
{
    uint8_t szb[4];
    size_t got = 0;
    uint8_t *frame = NULL;
    size_t need = 4;
    for (int i = 0; i < tries; i++) {
        uint8_t *dst = frame == NULL ? szb + got : frame + (got - 4);
        ssize_t k = recv(e->fd[c], dst, need - got, MSG_DONTWAIT);
        if (k > 0) {
            got += (size_t)k;
        }
        if (got == need && frame == NULL) {
            need = 4 + (((size_t)szb[0] << 24) | ((size_t)szb[1] << 16) | ((size_t)szb[2] << 8) |
                        szb[3]);
            frame = malloc(need - 4);
        }
        if (frame != NULL && got == need) {
            break;
        }
        if (k <= 0) {
            uv_run(&e->loop, UV_RUN_NOWAIT);
            usleep(100);
        }
    }
    assert_non_null(frame);
    assert_int_equal(got, need);
    struct kp_reader r;
    kp_reader_init(&r, kp_arena_memdup(&e->arena, frame, need - 4), need - 4);
    free(frame);
    struct kp_response_header h;
    kp_response_header_init(&h);
    assert_int_equal(
        kp_response_header_decode(&r, kp_response_header_version(key, version), &e->arena, &h), 0);
    const struct kp_api *api = kp_api_find(key);
    api->response->init(out);
    assert_int_equal(api->response->decode(&r, version, &e->arena, out), 0);
    if (rest != NULL) {
        *rest = kp_reader_remaining(&r);
    }
    return h.correlation_id;
}

void agent_env_close(struct agent_env *e)
{
    if (e->srv != NULL) {
        meta_server_close(e->srv);
        e->srv = NULL;
    }
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    kp_arena_free(&e->arena);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
    assert_int_equal(system(cmd), 0);
}
