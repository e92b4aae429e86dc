/*
 * The growable byte buffer and clocks of internal.h, used by the state serialiser and the
 * journal. Big-endian so that struct kp_reader reads the values back.
 */
#include "internal.h"

#include <stdlib.h>
#include <time.h>

#include "runnel/protocol/mem.h"

void meta__buf_reserve(struct meta__buf *b, size_t more)
{
    if (b->cap - b->len >= more) {
        return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < more) {
        cap *= 2;
    }
    b->p = kp_xrealloc(b->p, cap);
    b->cap = cap;
}

void meta__buf_free(struct meta__buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void meta__put_u8(struct meta__buf *b, uint8_t v)
{
    meta__buf_reserve(b, 1);
    b->p[b->len++] = v;
}

void meta__put_u16(struct meta__buf *b, uint16_t v)
{
    meta__buf_reserve(b, 2);
    b->p[b->len++] = (uint8_t)(v >> 8);
    b->p[b->len++] = (uint8_t)v;
}

void meta__put_u32(struct meta__buf *b, uint32_t v)
{
    meta__buf_reserve(b, 4);
    for (int i = 3; i >= 0; i--) {
        b->p[b->len++] = (uint8_t)(v >> (8 * i));
    }
}

void meta__put_u64(struct meta__buf *b, uint64_t v)
{
    meta__buf_reserve(b, 8);
    for (int i = 7; i >= 0; i--) {
        b->p[b->len++] = (uint8_t)(v >> (8 * i));
    }
}

void meta__put_raw(struct meta__buf *b, const void *src, size_t n)
{
    if (n == 0) {
        return;
    }
    meta__buf_reserve(b, n);
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

void meta__put_str(struct meta__buf *b, const char *s, size_t len)
{
    if (s == NULL) {
        meta__put_u32(b, UINT32_MAX);
        return;
    }
    meta__put_u32(b, (uint32_t)len);
    meta__put_raw(b, s, len);
}

void meta__get_str(struct kp_reader *r, const char **out, size_t *len)
{
    uint32_t n = kp_read_u32(r);
    *out = NULL;
    *len = 0;
    if (n == UINT32_MAX || r->err) {
        return;
    }
    const uint8_t *p = kp_read_raw(r, n);
    if (p != NULL) {
        *out = (const char *)p;
        *len = n;
    }
}

int64_t meta__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t meta__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
