/*
 * Allocation wrappers and the request arena (see runnel/protocol/mem.h).
 *
 * The arena is a list of blocks; small allocations share a block, a large one gets a block of
 * its own. Blocks are never returned to the system before kp_arena_reset()/kp_arena_free().
 */
#include "runnel/protocol/mem.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KP__ARENA_BLOCK 8192 /* default block payload, bytes */
#define KP__ALIGN 16         /* alignment of every arena allocation, bytes */
#define KP__ARENA_GROW 65536 /* a kept block's size is a multiple of this, bytes */

struct kp_arena_block {
    struct kp_arena_block *next; /* older block */
    size_t size;                 /* payload capacity, bytes */
    size_t used;                 /* payload bytes handed out */
    _Alignas(KP__ALIGN) unsigned char data[];
};

static void kp__oom(size_t size)
{
    fprintf(stderr, "runnel: out of memory allocating %zu bytes\n", size);
    abort();
}

void *kp_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL) {
        kp__oom(size);
    }
    return p;
}

void *kp_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        kp__oom(n * size);
    }
    return p;
}

void *kp_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL) {
        kp__oom(size);
    }
    return p;
}

char *kp_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = kp_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

void kp_arena_init(struct kp_arena *a, size_t limit)
{
    a->head = NULL;
    a->used = 0;
    a->limit = limit;
    a->keep = 0;
}

void kp_arena_keep(struct kp_arena *a, size_t bytes)
{
    a->keep = bytes;
}

void *kp_arena_alloc(struct kp_arena *a, size_t size)
{
    size_t need = (size + KP__ALIGN - 1) & ~(size_t)(KP__ALIGN - 1);
    if (need < size) {
        return NULL;
    }
    if (a->limit != 0 && (need > a->limit || a->used > a->limit - need)) {
        return NULL;
    }
    struct kp_arena_block *b = a->head;
    if (b == NULL || b->size - b->used < need) {
        size_t cap = need > KP__ARENA_BLOCK ? need : KP__ARENA_BLOCK;
        b = kp_xmalloc(sizeof(*b) + cap);
        b->size = cap;
        b->used = 0;
        if (need > KP__ARENA_BLOCK && a->head != NULL) {
            /* A big block goes behind the current one so small allocations keep using it. */
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += need;
    a->used += need;
    memset(p, 0, size);
    return p;
}

void *kp_arena_calloc(struct kp_arena *a, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) {
        return NULL;
    }
    return kp_arena_alloc(a, n * size);
}

void *kp_arena_memdup(struct kp_arena *a, const void *src, size_t len)
{
    void *p = kp_arena_alloc(a, len);
    if (p != NULL && len > 0) {
        memcpy(p, src, len);
    }
    return p;
}

void kp_arena_reset(struct kp_arena *a)
{
    struct kp_arena_block *keep = NULL;
    struct kp_arena_block *b = a->head;
    bool one = b != NULL && b->next == NULL;
    if (a->keep > 0 && one && b->size <= a->keep) {
        keep = b; /* the round fitted in the kept block */
    } else {
        while (b != NULL) {
            struct kp_arena_block *next = b->next;
            if (keep == NULL && b->size == KP__ARENA_BLOCK) {
                keep = b;
            } else {
                free(b);
            }
            b = next;
        }
        /* Several blocks: the next round of this size gets one block of the whole use. */
        size_t want = (a->used + KP__ARENA_GROW - 1) & ~(size_t)(KP__ARENA_GROW - 1);
        if (a->keep > 0 && !one && want > KP__ARENA_BLOCK && want <= a->keep) {
            free(keep);
            keep = kp_xmalloc(sizeof(*keep) + want);
            keep->size = want;
        }
    }
    if (keep != NULL) {
        keep->next = NULL;
        keep->used = 0;
    }
    a->head = keep;
    a->used = 0;
}

size_t kp_arena_held(const struct kp_arena *a)
{
    size_t n = 0;
    for (const struct kp_arena_block *b = a->head; b != NULL; b = b->next) {
        n += b->size;
    }
    return n;
}

void kp_arena_free(struct kp_arena *a)
{
    struct kp_arena_block *b = a->head;
    while (b != NULL) {
        struct kp_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->used = 0;
}
