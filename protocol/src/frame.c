/*
 * Frame splitting, request header parsing and the ApiVersions reply (runnel/protocol/frame.h).
 */
#include "runnel/protocol/frame.h"

#include <errno.h>

#define KP_API_VERSIONS_KEY 18
#define KP_UNSUPPORTED_VERSION 35

ssize_t kp_frame_split(const uint8_t *buf, size_t len, size_t max_frame, struct kp_bytes *frame,
                       const char **why)
{
    if (max_frame == 0) {
        max_frame = KP_MAX_FRAME_DEFAULT;
    }
    if (len < 4) {
        return 0;
    }
    int32_t size = (int32_t)(((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) |
                             ((uint32_t)buf[2] << 8) | (uint32_t)buf[3]);
    if (size < 0) {
        if (why != NULL) {
            *why = "negative frame size";
        }
        return -EBADMSG;
    }
    if ((size_t)size > max_frame) {
        if (why != NULL) {
            *why = "frame larger than the maximum frame size";
        }
        return -EMSGSIZE;
    }
    if (len - 4 < (size_t)size) {
        return 0;
    }
    frame->ptr = buf + 4;
    frame->len = size;
    return (ssize_t)size + 4;
}

int kp_request_header_parse(struct kp_reader *r, struct kp_arena *a, struct kp_request_header *out)
{
    const uint8_t *start = r->p;
    int16_t key = kp_read_i16(r);
    int16_t version = kp_read_i16(r);
    if (r->err != 0) {
        kp_request_header_init(out);
        return r->err;
    }
    r->p = start;
    return kp_request_header_decode(r, kp_request_header_version(key, version), a, out);
}

int kp_api_versions_reply(int32_t correlation_id, int16_t request_version, int16_t error_code,
                          const struct kp_api_range *apis, size_t n, struct kp_arena *a,
                          struct kp_bytes *out)
{
    const struct kp_api *codec = kp_api_find(KP_API_VERSIONS_KEY);
    int16_t min = codec->min_version;
    int16_t max = codec->max_version;
    struct kp_api_versions_response body;
    size_t size = 0;
    int rc;

    if (n > INT32_MAX || (n > 0 && apis == NULL)) {
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (apis[i].api_key == KP_API_VERSIONS_KEY) {
            min = apis[i].min_version > min ? apis[i].min_version : min;
            max = apis[i].max_version < max ? apis[i].max_version : max;
        }
    }
    kp_api_versions_response_init(&body);
    int16_t version = request_version;
    body.error_code = error_code;
    if (request_version < min || request_version > max) {
        version = 0;
        body.error_code = KP_UNSUPPORTED_VERSION;
    }
    body.api_keys_count = (int32_t)n;
    if (n > 0) {
        body.api_keys = kp_arena_calloc(a, n, sizeof(*body.api_keys));
        if (body.api_keys == NULL) {
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        kp_api_versions_response_api_version_init(&body.api_keys[i]);
        body.api_keys[i].api_key = apis[i].api_key;
        body.api_keys[i].min_version = apis[i].min_version;
        body.api_keys[i].max_version = apis[i].max_version;
    }
    rc = kp_api_versions_response_size(&body, version, &size);
    if (rc != 0) {
        return rc;
    }
    uint8_t *buf = kp_arena_alloc(a, size + 4);
    if (buf == NULL) {
        return -ENOMEM;
    }
    struct kp_writer w;
    kp_writer_init(&w, buf, size + 4);
    kp_write_i32(&w, correlation_id); /* response header v0 */
    rc = kp_api_versions_response_encode(&body, version, &w);
    if (rc != 0) {
        return rc;
    }
    out->ptr = buf;
    out->len = (int32_t)kp_writer_len(&w);
    return 0;
}
