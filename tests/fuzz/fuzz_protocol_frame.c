/*
 * libFuzzer target for frame splitting and request header parsing: the first input byte sets
 * the maximum frame size (1 << (byte % 28) bytes); the rest is a byte stream split into frames
 * the way a connection would, each frame's request header parsed (and the ApiVersions reply
 * built for its version when the api key is 18).
 */
#include <stdint.h>
#include <stdlib.h>

#include "runnel/protocol/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t max = (size_t)1 << (data[0] % 28);
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    static const struct kp_api_range apis[] = {{0, 3, 11}, {1, 4, 12}, {18, 0, 4}};
    for (;;) {
        struct kp_bytes frame;
        const char *why = NULL;
        ssize_t n = kp_frame_split(p, left, max, &frame, &why);
        if (n < 0 && why == NULL) {
            abort();
        }
        if (n <= 0) {
            break;
        }
        if ((size_t)n > left || (size_t)frame.len + 4 != (size_t)n) {
            abort();
        }
        struct kp_arena a;
        struct kp_reader r;
        struct kp_request_header h;
        kp_arena_init(&a, 1u << 16);
        kp_reader_init(&r, frame.ptr, (size_t)frame.len);
        if (kp_request_header_parse(&r, &a, &h) == 0 && h.request_api_key == 18) {
            struct kp_bytes out;
            if (kp_api_versions_reply(h.correlation_id, h.request_api_version, 0, apis, 3, &a,
                                      &out) != 0) {
                abort();
            }
        } else if (r.err != 0 && r.why == NULL) {
            abort();
        }
        kp_arena_free(&a);
        p += n;
        left -= (size_t)n;
    }
    return 0;
}
