/*
 * Fuzzes the Fetch cut (agent/src/fetch.h) with arbitrary bytes as stored batches: the walk must
 * never read or write outside the buffer, must fail cleanly on anything that is not whole
 * batches, and what it selects must be whole batches inside the buffer that start at a batch
 * boundary. Input: 8 bytes fetch offset, 4 bytes limit, 1 byte flags (bit 0: min_one), 2 bytes
 * split point (the buffer is cut into two adjacent extents there), then the bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fetch.h"
#include "runnel/protocol/records.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rd(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 15) {
        return 0;
    }
    int64_t fetch_offset = (int64_t)(rd(data, 8) & 0xffffff);
    size_t limit = (size_t)rd(data + 8, 4);
    bool min_one = (data[12] & 1) != 0;
    size_t split = (size_t)rd(data + 13, 2);
    size_t len = size - 15;
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data + 15, len);
    if (split > len) {
        split = len;
    }
    struct agent_fetch_cut c;
    agent_fetch_cut_init(&c, fetch_offset, limit, min_one, 0);
    const char *why = NULL;
    int rc = agent_fetch_cut_extent(&c, buf, 0, split, 0, &why);
    if (rc == 0 && !c.full) {
        rc = agent_fetch_cut_extent(&c, buf + split, split, len - split, 1000, &why);
    }
    if (rc != 0 && why == NULL) {
        abort();
    }
    if (rc == 0 && c.start != SIZE_MAX) {
        if (c.start > c.end || c.end > len) {
            abort();
        }
        /* The selection is whole batches (their CRCs were not touched by the rewrite). */
        struct kp_batch_iter it;
        kp_batch_iter_init(&it, buf + c.start, c.end - c.start, KP_BATCH_SKIP_CRC);
        struct kp_batch b;
        struct kp_batch_err err;
        int r;
        while ((r = kp_batch_iter_next(&it, &b, &err)) == 1) {
        }
        if (r != 0) {
            abort();
        }
    }
    free(buf);
    return 0;
}
