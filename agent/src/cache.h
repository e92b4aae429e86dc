/*
 * The agent's chunk cache: decoded partition chunks of objects, keyed by (object key, chunk byte
 * offset), bounded by a byte capacity with least-recently-used eviction.
 *
 * A miss reads the object's footer (once per object; footers are cached too, since the chunk's
 * CRC and codec live there) and then the chunk with one ranged GET, verified against its CRC32C
 * and decompressed with a cap of the chunk's raw length. Concurrent requests for the same chunk
 * (or footer) share one GET. Objects the agent has just flushed are handed in whole with
 * agent_cache_put_object(): their footer and stored chunks go straight into the cache, so
 * consumers at the tail cost no GET; a compressed chunk is decoded the first time it is read.
 *
 * Everything runs on the agent's loop; large chunks are decoded on libuv's thread pool.
 */
#ifndef RUNNEL_AGENT_CACHE_H
#define RUNNEL_AGENT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "runnel/storage/store.h"

struct agent_cache;

/* Counters for tests, logs and benchmarks. */
struct agent_cache_stats {
    uint64_t hits;        /* gets answered from a ready entry */
    uint64_t misses;      /* gets that created a loading entry */
    uint64_t merged;      /* gets that joined a load already in flight */
    uint64_t chunk_gets;  /* chunk GETs issued to the store */
    uint64_t footer_gets; /* footer reads issued to the store */
    uint64_t evictions;   /* entries dropped to stay under the capacity */
    uint64_t put_objects; /* objects handed in with agent_cache_put_object() */
    uint64_t errors;      /* loads that failed */
    size_t bytes;         /* bytes currently charged (raw/stored chunks, footers) */
    size_t entries;       /* entries currently held */
    size_t cap;           /* capacity in bytes */
};

/*
 * The bytes of a decoded chunk, reference-counted: the cache holds one reference while the entry
 * is cached, and a reader that takes one (agent_cbuf_ref) may keep using the bytes after the entry
 * was evicted, e.g. until a response that sends them from there has been written. The memory
 * they use then lies outside the cache's capacity, bounded by the responses being written.
 */
struct agent_cbuf;

/* Takes a reference. */
void agent_cbuf_ref(struct agent_cbuf *b);
/* Drops a reference; the last one frees the bytes. */
void agent_cbuf_unref(struct agent_cbuf *b);

/*
 * Completion of agent_cache_get(): err is 0 with `raw` the whole decoded chunk (record batches
 * as stored, `raw_len` bytes) owned by `buf`, valid during the callback and for as long as the
 * callback's caller holds a reference to `buf`; or a negative errno (a store error, -EBADMSG for
 * a corrupt chunk or footer, -ENOENT when the footer has no chunk at that offset, -ECANCELED
 * when the cache is closing) with raw and buf NULL.
 *
 * Readers may rewrite the base offset and partition leader epoch fields of the batches in place
 * (the read path does): those fields are outside the batch CRC and every reader writes the same
 * values, which the committed extents determine.
 */
typedef void (*agent_cache_cb)(void *arg, int err, const uint8_t *raw, size_t raw_len,
                               struct agent_cbuf *buf);

/* Creates a cache of `cap_bytes` (0: nothing is kept beyond the requests in flight) over `s`. */
struct agent_cache *agent_cache_new(uv_loop_t *loop, struct store *s, size_t cap_bytes);

/*
 * Asks for the chunk at byte `chunk_off` of object `key`. The callback runs exactly once: before
 * this returns on a hit, later otherwise. Returns 0, or -ECANCELED when the cache is closing (the
 * callback does not run then).
 */
int agent_cache_get(struct agent_cache *c, const char *key, uint64_t chunk_off, agent_cache_cb cb,
                    void *arg);

/*
 * Puts a freshly sealed object (`obj`, `len` bytes, copied) into the cache: its footer and every
 * chunk's stored bytes. An object whose footer does not parse is ignored (logged). Existing
 * entries are kept.
 */
void agent_cache_put(struct agent_cache *c, const char *key, const uint8_t *obj, size_t len);

/* The agent's cache (fetch.c owns it), or NULL before agent_fetch_init / after agent_fetch_free. */
struct agent;
struct agent_cache *agent__fetch_cache(struct agent *a);

/* Current counters. */
void agent_cache_get_stats(const struct agent_cache *c, struct agent_cache_stats *out);

/*
 * Closes the cache: loads in flight are cancelled and their waiters called with -ECANCELED
 * (during this call or later on the loop); memory is freed once nothing is in flight.
 */
void agent_cache_free(struct agent_cache *c);

#endif
