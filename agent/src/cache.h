/*
 * The agent's chunk cache: decoded partition chunks of objects, keyed by (object key, chunk byte
 * offset), over a cache of the objects' raw bytes in blocks; everything bounded by one byte
 * capacity with least-recently-used eviction.
 *
 * Objects are read from the store in blocks of `block bytes` (4 MiB by default) aligned to the
 * object's END: block 0 is the last block_bytes of the object and holds the footer, block j ends
 * j * block_bytes before the end, and the first block of the object is the shorter one, unless
 * it is at most a quarter block: then the next block absorbs it (no tiny GET). Block 0 can thus
 * be read without knowing the object's size (a suffix GET of 1.25 blocks), and it tells the size,
 * so every further block has a known range. A chunk miss reads block 0 (footer and size) and
 * then the blocks the chunk spans, verifies the chunk's CRC32C and decompresses it with a cap of
 * its raw length. Concurrent requests for the same chunk or block share one read. Objects the
 * agent has just flushed are handed in whole with agent_cache_put(): their footer and stored
 * chunks go straight into the cache, so consumers at the tail cost no GET.
 *
 * With a remote source set (peer.c: each block has one owner among the live agents), a block
 * this agent does not own is asked of its owner; if that fails the block is read from the store.
 * agent_cache_get_block() is what the owner answers with: memory or the store, never another
 * agent.
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

#define AGENT_CACHE_BLOCK_BYTES (4u << 20) /* default block size */
#define AGENT_CACHE_BLOCK_MIN 1024u        /* smallest block size accepted */

/* Counters for tests, logs and benchmarks. */
struct agent_cache_stats {
    uint64_t hits;          /* chunk gets answered from a ready entry */
    uint64_t misses;        /* chunk gets that created a loading entry */
    uint64_t merged;        /* chunk gets that joined a load already in flight */
    uint64_t store_gets;    /* block GETs issued to the store */
    uint64_t store_bytes;   /* bytes those GETs returned */
    uint64_t block_hits;    /* block gets answered from memory or joined to a load */
    uint64_t remote_reads;  /* blocks asked of their owner (another agent) */
    uint64_t remote_failed; /* of those, failed: read from the store instead */
    uint64_t evictions;     /* entries dropped to stay under the capacity */
    uint64_t put_objects;   /* objects handed in with agent_cache_put_object() */
    uint64_t errors;        /* loads that failed */
    size_t bytes;           /* bytes currently charged (chunks, blocks, footers) */
    size_t entries;         /* entries currently held */
    size_t cap;             /* capacity in bytes */
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
 * a corrupt chunk or footer (the blocks it came from are dropped, so a retry reads them again),
 * -ENOENT when the footer has no chunk at that offset, -ECANCELED when the cache is closing)
 * with raw and buf NULL.
 *
 * Readers may rewrite the base offset and partition leader epoch fields of the batches in place
 * (the read path does): those fields are outside the batch CRC and every reader writes the same
 * values, which the committed extents determine.
 */
typedef void (*agent_cache_cb)(void *arg, int err, const uint8_t *raw, size_t raw_len,
                               struct agent_cbuf *buf);

/* Creates a cache of `cap_bytes` (0: nothing is kept beyond the requests in flight) over `s`. */
struct agent_cache *agent_cache_new(uv_loop_t *loop, struct store *s, size_t cap_bytes);

/* Sets the block size (>= AGENT_CACHE_BLOCK_MIN, <= 1 GiB); only before the first get. 0 or
 * -EINVAL. */
int agent_cache_set_block_bytes(struct agent_cache *c, size_t block_bytes);

/* The block size in use. */
size_t agent_cache_block_bytes(const struct agent_cache *c);

/*
 * Completion of a block read: err 0 with the block's bytes (`len`, owned by `buf`: valid during
 * the callback, longer with a reference) and the object's size; or a negative errno with data
 * and buf NULL.
 */
typedef void (*agent_block_cb)(void *arg, int err, uint64_t obj_size, const uint8_t *data,
                               size_t len, struct agent_cbuf *buf);

/*
 * A remote block source (peer.c). Returns false when this agent owns block `index` of `key`
 * (the cache then reads the store), or true when it took the request: cb then runs exactly once,
 * later, with the block (its length is checked against obj_size) or an error (the cache then
 * reads the store itself). obj_size is 0 when not known yet (only for block 0).
 */
typedef bool (*agent_cache_remote_fn)(void *ctx, const char *key, uint32_t index, uint64_t obj_size,
                                      agent_block_cb cb, void *arg);

/* Whether this agent owns block `index` of `key` among two or more live agents (peer.c). */
typedef bool (*agent_cache_owns_fn)(void *ctx, const char *key, uint32_t index);

/* Sets (or with fn NULL clears) the remote block source; `owns` (may be NULL) tells which blocks
 * of a freshly flushed object to keep as blocks (agent_cache_put), to serve the other agents. */
void agent_cache_set_remote(struct agent_cache *c, agent_cache_remote_fn fn,
                            agent_cache_owns_fn owns, void *ctx);

/*
 * Gets block `index` of `key` from memory or the store, never from the remote source (what an
 * owner answers its peers with). obj_size is the size when the caller knows it, else 0 (then
 * only block 0 can be asked for). cb runs exactly once, before this returns on a hit. Returns 0,
 * -EINVAL (index needs a size, or lies beyond the object) or -ECANCELED (closing); cb does not
 * run then.
 */
int agent_cache_get_block(struct agent_cache *c, const char *key, uint32_t index, uint64_t obj_size,
                          agent_block_cb cb, void *arg);

/* The byte range [*start, *end) of block `index` of an object of `size` bytes with blocks of
 * `block_bytes`; false when the object has no such block. */
bool agent_cache_block_range(size_t block_bytes, uint64_t size, uint32_t index, uint64_t *start,
                             uint64_t *end);

/*
 * Asks for the chunk at byte `chunk_off` of object `key`. The callback runs exactly once: before
 * this returns on a hit, later otherwise. Returns 0, or -ECANCELED when the cache is closing (the
 * callback does not run then).
 */
int agent_cache_get(struct agent_cache *c, const char *key, uint64_t chunk_off, agent_cache_cb cb,
                    void *arg);

/*
 * Puts a freshly sealed object (`obj`, `len` bytes, copied) into the cache: its footer, every
 * chunk's stored bytes and the blocks this agent owns among others (see agent_cache_set_remote),
 * which the other agents will ask it for. An object whose footer does not parse is ignored
 * (logged). Existing entries are kept.
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
