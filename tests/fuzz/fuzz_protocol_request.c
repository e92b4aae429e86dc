/*
 * libFuzzer target for the generated decoders. The first input byte picks the mode:
 *   bit 0 clear: bytes 1 and 2 pick an API (index into the Kafka table, or the Runnel RPC
 *     table when bit 1 is set) and a version inside its range; bit 2 selects the response
 *     instead of the request; the rest is the message body.
 *   bit 0 set: the rest is a request (header + body) as found in a frame; the header is
 *     parsed and the body decoded by api key and version.
 * Every decode runs under a 1 MiB arena. A message that decodes must encode again with
 * size() == bytes written, and encoding must be a fixed point: decode(encode(m)) encodes to the
 * same bytes. Anything else aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kp_messages.h"
#include "kp_rpc.h"
#include "runnel/protocol/frame.h"

#define ARENA_LIMIT (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *encode_or_die(const struct kp_message_ops *ops, const void *m, int16_t v,
                              size_t *len)
{
    size_t n = 0;
    if (ops->size(m, v, &n) != 0) {
        abort();
    }
    uint8_t *buf = malloc(n > 0 ? n : 1);
    struct kp_writer w;
    kp_writer_init(&w, buf, n);
    if (ops->encode(m, v, &w) != 0 || kp_writer_len(&w) != n) {
        abort();
    }
    *len = n;
    return buf;
}

static void run(const struct kp_message_ops *ops, int16_t v, const uint8_t *p, size_t n)
{
    struct kp_arena a;
    struct kp_reader r;
    kp_arena_init(&a, ARENA_LIMIT);
    void *m = kp_arena_alloc(&a, ops->struct_size);
    void *m2 = kp_arena_alloc(&a, ops->struct_size);
    if (m == NULL || m2 == NULL) {
        abort();
    }
    kp_reader_init(&r, p, n);
    if (ops->decode(&r, v, &a, m) != 0) {
        if (r.why == NULL) {
            abort(); /* every failure carries a reason */
        }
        goto out;
    }
    size_t n1 = 0;
    size_t n2 = 0;
    uint8_t *b1 = encode_or_die(ops, m, v, &n1);
    kp_reader_init(&r, b1, n1);
    if (ops->decode(&r, v, &a, m2) != 0 || kp_reader_remaining(&r) != 0) {
        if (r.err != KP_ERR_NOMEM) {
            abort();
        }
        free(b1);
        goto out;
    }
    uint8_t *b2 = encode_or_die(ops, m2, v, &n2);
    if (n1 != n2 || memcmp(b1, b2, n1) != 0) {
        abort();
    }
    free(b1);
    free(b2);
out:
    kp_arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if (data[0] & 1) {
        struct kp_arena a;
        struct kp_reader r;
        struct kp_request_header h;
        kp_arena_init(&a, ARENA_LIMIT);
        kp_reader_init(&r, data + 1, size - 1);
        if (kp_request_header_parse(&r, &a, &h) == 0) {
            const struct kp_api *api = kp_api_find(h.request_api_key);
            if (api != NULL && h.request_api_version >= api->min_version &&
                h.request_api_version <= api->max_version) {
                run(api->request, h.request_api_version, r.p, kp_reader_remaining(&r));
            }
        }
        kp_arena_free(&a);
        return 0;
    }
    if (size < 3) {
        return 0;
    }
    bool rpc = (data[0] & 2) != 0;
    size_t count = rpc ? kp_rpc_api_count() : kp_api_count();
    if (count == 0) {
        return 0;
    }
    const struct kp_api *api = rpc ? kp_rpc_api_at(data[1] % count) : kp_api_at(data[1] % count);
    int span = api->max_version - api->min_version + 1;
    int16_t v = (int16_t)(api->min_version + data[2] % span);
    run((data[0] & 4) ? api->response : api->request, v, data + 3, size - 3);
    return 0;
}
