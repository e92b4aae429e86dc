/*
 * Internals shared by metadata/src files: a growable byte buffer with big-endian put helpers
 * (snapshots and journal records are written with it and read back with struct kp_reader), and
 * the clock. Not part of the public interface.
 */
#ifndef RUNNEL_METADATA_INTERNAL_H
#define RUNNEL_METADATA_INTERNAL_H

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

#endif
