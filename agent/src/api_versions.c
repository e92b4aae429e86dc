/*
 * ApiVersions: the advertised table (handlers.c), encoded by the protocol layer's
 * kp_api_versions_reply(), which applies Kafka's rules: the response header is always v0, and a
 * version we do not serve gets a v0 body with UNSUPPORTED_VERSION and the full list (KIP-511).
 */
#include "agent.h"
#include "handlers.h"
#include "runnel/protocol/frame.h"

void agent_handle_api_versions(struct agent_req *req)
{
    size_t n = 0;
    const struct agent_api *all = agent_api_all(&n);
    struct kp_api_range *ranges = kp_arena_calloc(&req->arena, n, sizeof(*ranges));
    struct kp_bytes out;
    if (ranges == NULL) {
        agent_req_close_conn(req, "out of request memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        ranges[i].api_key = all[i].key;
        ranges[i].min_version = all[i].min_version;
        ranges[i].max_version = all[i].max_version;
    }
    if (kp_api_versions_reply(req->hdr.correlation_id, req->hdr.request_api_version, 0, ranges, n,
                              &req->arena, &out) != 0) {
        agent_req_close_conn(req, "ApiVersions encoding failed");
        return;
    }
    agent_req_respond_bytes(req, out);
}
