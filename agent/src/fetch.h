/*
 * Read-path internals shared with unit tests: the batch cutting a Fetch applies to the bytes of
 * one partition (base offsets, the batch holding fetch_offset, byte limits with KIP-74).
 */
#ifndef RUNNEL_AGENT_FETCH_H
#define RUNNEL_AGENT_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* State of the cut over the consecutive extents of one partition's buffer. */
struct agent_fetch_cut {
    int64_t fetch_offset; /* first offset the client wants */
    size_t limit;         /* bytes the partition may return */
    bool min_one;         /* return the first batch whole even beyond limit (KIP-74) */
    int32_t leader_epoch; /* written into every batch */
    size_t start;         /* first byte served (SIZE_MAX: nothing yet) */
    size_t end;           /* byte after the last batch served */
    bool full;            /* the limit was reached: later extents add nothing */
};

/* Prepares a cut. */
void agent_fetch_cut_init(struct agent_fetch_cut *c, int64_t fetch_offset, size_t limit,
                          bool min_one, int32_t leader_epoch);

/*
 * Walks the batches of one extent, the `len` bytes at `bytes`, whose first batch has offset
 * `base_offset` (each following batch starts after the previous one's last offset delta):
 * writes every batch's base offset and leader epoch in place, skips batches that end before
 * fetch_offset and extends [start, end) with whole batches while they fit in limit. Positions
 * (start, end, pos) count bytes along the partition's extents laid end to end: the extent starts
 * at `pos`, the sum of the lengths of those before it; the extents themselves may live anywhere.
 * Extents must be given in order. Returns 0, or -EBADMSG when the bytes are not whole batches
 * (*why says why).
 */
int agent_fetch_cut_extent(struct agent_fetch_cut *c, uint8_t *bytes, size_t pos, size_t len,
                           int64_t base_offset, const char **why);

#endif
