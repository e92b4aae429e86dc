/*
 * Internals shared by metadata/src files: a growable byte buffer with big-endian put helpers
 * (snapshots and journal records are written with it and read back with struct kp_reader), and
 * the clock. Not part of the public interface.
 */
#ifndef RUNNEL_METADATA_INTERNAL_H
#define RUNNEL_METADATA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "runnel/protocol/codec.h"

struct meta__buf {
    uint8_t *p; /* bytes, malloc'd */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
};

void meta__buf_reserve(struct meta__buf *b, size_t more);
void meta__buf_free(struct meta__buf *b);
void meta__put_u8(struct meta__buf *b, uint8_t v);
void meta__put_u16(struct meta__buf *b, uint16_t v);
void meta__put_u32(struct meta__buf *b, uint32_t v);
void meta__put_u64(struct meta__buf *b, uint64_t v);
void meta__put_raw(struct meta__buf *b, const void *src, size_t n);
/* A string as u32 length + bytes; NULL is written as length 0xffffffff. */
void meta__put_str(struct meta__buf *b, const char *s, size_t len);
/* Reads what meta__put_str wrote; *out points into the reader's buffer (NULL for null). */
void meta__get_str(struct kp_reader *r, const char **out, size_t *len);

/* Milliseconds since the epoch (CLOCK_REALTIME). */
int64_t meta__now_ms(void);
/* Monotonic nanoseconds. */
uint64_t meta__mono_ns(void);

/*
 * The toucher (toucher.c): a thread that faults in queued ranges of the large extent arrays
 * ahead of the appends. The loop queues ranges and brackets every move or unmap of an array
 * with forget_begin/_end; meta__toucher_pages counts the pages it has read.
 */
struct meta_toucher;
int meta__toucher_start(struct meta_toucher **out);
void meta__toucher_stop(struct meta_toucher *t);
/* Queues [start, end); false (nothing queued) when the queue is full. */
bool meta__toucher_queue(struct meta_toucher *t, const void *start, const void *end);
/* Drops what is queued in [start, start + len) and holds the toucher off until forget_end;
 * both do nothing for a NULL toucher. */
void meta__toucher_forget_begin(struct meta_toucher *t, const void *start, size_t len);
void meta__toucher_forget_end(struct meta_toucher *t);
uint64_t meta__toucher_pages(const struct meta_toucher *t);
/* madvise(MADV_POPULATE_WRITE) over the pages holding [start, end): 0, or -1 with errno (a
 * kernel before 5.14, or no memory), in which case the caller's accesses fault them in. */
int meta__populate(const void *start, const void *end);

#endif
