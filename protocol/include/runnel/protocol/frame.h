/*
 * Kafka framing and request headers: split a byte stream into size-prefixed frames, parse the
 * request header (v0, v1 or v2, chosen by api key and version), and build the ApiVersions
 * response, whose rules (v0 response header always, a v0 body with UNSUPPORTED_VERSION for a
 * version we do not serve) every client relies on before it knows anything else. No I/O.
 */
#ifndef RUNNEL_PROTOCOL_FRAME_H
#define RUNNEL_PROTOCOL_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kp_messages.h"
#include "runnel/protocol/codec.h"
#include "runnel/protocol/mem.h"

#define KP_MAX_FRAME_DEFAULT (100 * 1024 * 1024) /* bytes, without the 4-byte size */

/*
 * Looks for one frame at the start of buf[0..len): an int32 big-endian size, then that many
 * bytes. Returns the bytes consumed (4 + size) and sets `frame` to the payload (a view into
 * buf); 0 when more bytes are needed; -EBADMSG for a negative size or -EMSGSIZE for a size over
 * `max_frame` (0 means KP_MAX_FRAME_DEFAULT), with `*why` (if why != NULL) a static reason.
 * A size error is known from the first 4 bytes, before the payload arrives.
 */
ssize_t kp_frame_split(const uint8_t *buf, size_t len, size_t max_frame, struct kp_bytes *frame,
                       const char **why);

/*
 * Parses a request header from r: reads api key and version, picks the header version with
 * kp_request_header_version() (unknown keys get v1), rewinds and decodes the header. On
 * return r is positioned at the request body. Returns 0 or a KP_ERR_* (r->why says what).
 */
int kp_request_header_parse(struct kp_reader *r, struct kp_arena *a, struct kp_request_header *out);

/* One API as advertised in ApiVersions. */
struct kp_api_range {
    int16_t api_key;     /* Kafka api key */
    int16_t min_version; /* lowest version served */
    int16_t max_version; /* highest version served */
};

/*
 * Encodes a whole ApiVersions response for a request at `request_version`: the v0 response
 * header (correlation id) and the body, without the 4-byte frame size. `apis` lists what we
 * serve (n entries); the ApiVersions entry in it (key 18) decides which ApiVersions versions
 * are supported (the codec's range if absent). For a supported version the body carries
 * `error_code` (normally 0) at that version; for an unsupported one it is a v0 body with
 * UNSUPPORTED_VERSION (35) and the full list, so any client can read it (KIP-511). The bytes
 * are allocated from `a`. Returns 0, -ENOMEM when the arena refuses, or -EINVAL.
 */
int kp_api_versions_reply(int32_t correlation_id, int16_t request_version, int16_t error_code,
                          const struct kp_api_range *apis, size_t n, struct kp_arena *a,
                          struct kp_bytes *out);

#endif
