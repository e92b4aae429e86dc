/*
 * Memory for the protocol layer and everything above it: allocation wrappers that abort on
 * out-of-memory (bounded buffers and backpressure keep us from getting there, so running out is
 * a bug, not a condition to handle), and the per-request arena that decoded messages live in.
 *
 * An arena hands out memory that is released all at once with kp_arena_free() or reused with
 * kp_arena_reset(). It has a byte limit: an allocation past the limit returns NULL, which
 * decoders turn into an error, so a peer cannot make us allocate without bound.
 */
#ifndef RUNNEL_PROTOCOL_MEM_H
#define RUNNEL_PROTOCOL_MEM_H

#include <stddef.h>

/* malloc/calloc/realloc/strdup that abort with a message when memory is exhausted. */
void *kp_xmalloc(size_t size);
void *kp_xcalloc(size_t n, size_t size);
void *kp_xrealloc(void *ptr, size_t size);
char *kp_xstrdup(const char *s);

struct kp_arena_block;

struct kp_arena {
    struct kp_arena_block *head; /* newest block; allocations come from here */
    size_t used;                 /* bytes handed out since init/reset */
    size_t limit;                /* max bytes handed out; 0 means no limit */
    size_t keep;                 /* block bytes a reset may keep (kp_arena_keep); 0: one small */
};

/* Prepares an empty arena that will hand out at most `limit` bytes (0: unlimited). */
void kp_arena_init(struct kp_arena *a, size_t limit);

/*
 * Lets kp_arena_reset() keep up to `bytes` of block memory instead of one small block: after a
 * round that needed several blocks, the reset replaces them by one block as large as the
 * round's use (at most `bytes`), so that rounds of the same size take no malloc and touch no
 * fresh pages. For arenas reused by one busy caller (a server's per-request arena); the memory
 * stays allocated until kp_arena_free().
 */
void kp_arena_keep(struct kp_arena *a, size_t bytes);

/* Bytes of block memory the arena holds (what a reset kept plus what came since). */
size_t kp_arena_held(const struct kp_arena *a);

/*
 * Returns `size` bytes aligned for any type, zero-filled, valid until the next reset or free.
 * Returns NULL only when the arena's limit would be exceeded.
 */
void *kp_arena_alloc(struct kp_arena *a, size_t size);

/* Like kp_arena_alloc() for `n` elements of `size` bytes; NULL also on multiplication overflow. */
void *kp_arena_calloc(struct kp_arena *a, size_t n, size_t size);

/* Copies `len` bytes into the arena; NULL when over the limit. */
void *kp_arena_memdup(struct kp_arena *a, const void *src, size_t len);

/* Forgets every allocation but keeps one block for reuse (see kp_arena_keep). */
void kp_arena_reset(struct kp_arena *a);

/* Releases every block. The arena may be initialised again afterwards. */
void kp_arena_free(struct kp_arena *a);

#endif
