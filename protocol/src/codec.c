/*
 * Reader and writer primitives for Kafka's wire encoding (see runnel/protocol/codec.h).
 * Integers are big-endian; varints are LEB128 (zigzag for the record format's signed ones).
 */
#include "runnel/protocol/codec.h"

#include <string.h>

struct kp_str kp_str_from(const char *s)
{
    if (s == NULL) {
        return KP_STR_NULL;
    }
    return (struct kp_str){s, (int32_t)strlen(s)};
}

bool kp_str_eq(struct kp_str a, struct kp_str b)
{
    if (a.len != b.len) {
        return false;
    }
    return a.len <= 0 || memcmp(a.ptr, b.ptr, (size_t)a.len) == 0;
}

bool kp_str_eq_cstr(struct kp_str a, const char *s)
{
    return kp_str_eq(a, kp_str_from(s));
}

void kp_reader_init(struct kp_reader *r, const void *buf, size_t len)
{
    r->start = buf;
    r->p = buf;
    r->end = r->p + len;
    r->err = 0;
    r->why = NULL;
}

int kp_reader_fail(struct kp_reader *r, int err, const char *why)
{
    if (r->err == 0) {
        r->err = err;
        r->why = why;
        r->p = r->end; /* nothing more is read after an error */
    }
    return r->err;
}

const uint8_t *kp_read_raw(struct kp_reader *r, size_t n)
{
    if (r->err != 0) {
        return NULL;
    }
    if (kp_reader_remaining(r) < n) {
        kp_reader_fail(r, KP_ERR_SHORT, "input ends inside a field");
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

static uint64_t kp__read_be(struct kp_reader *r, size_t n)
{
    const uint8_t *p = kp_read_raw(r, n);
    uint64_t v = 0;
    if (p == NULL) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

int8_t kp_read_i8(struct kp_reader *r)
{
    return (int8_t)kp__read_be(r, 1);
}

int16_t kp_read_i16(struct kp_reader *r)
{
    return (int16_t)kp__read_be(r, 2);
}

int32_t kp_read_i32(struct kp_reader *r)
{
    return (int32_t)kp__read_be(r, 4);
}

int64_t kp_read_i64(struct kp_reader *r)
{
    return (int64_t)kp__read_be(r, 8);
}

uint16_t kp_read_u16(struct kp_reader *r)
{
    return (uint16_t)kp__read_be(r, 2);
}

uint32_t kp_read_u32(struct kp_reader *r)
{
    return (uint32_t)kp__read_be(r, 4);
}

double kp_read_f64(struct kp_reader *r)
{
    uint64_t bits = kp__read_be(r, 8);
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

bool kp_read_bool(struct kp_reader *r)
{
    return kp__read_be(r, 1) != 0;
}

void kp_read_uuid(struct kp_reader *r, struct kp_uuid *out)
{
    const uint8_t *p = kp_read_raw(r, 16);
    if (p == NULL) {
        memset(out->b, 0, 16);
        return;
    }
    memcpy(out->b, p, 16);
}

static uint64_t kp__read_leb(struct kp_reader *r, unsigned max_bytes)
{
    uint64_t v = 0;
    if (r->err != 0) {
        return 0;
    }
    for (unsigned i = 0; i < max_bytes; i++) {
        if (r->p == r->end) {
            kp_reader_fail(r, KP_ERR_SHORT, "input ends inside a varint");
            return 0;
        }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            return v;
        }
    }
    kp_reader_fail(r, KP_ERR_INVALID, "varint is too long");
    return 0;
}

uint32_t kp_read_uvarint(struct kp_reader *r)
{
    uint64_t v = kp__read_leb(r, 5);
    if (v > UINT32_MAX) {
        kp_reader_fail(r, KP_ERR_INVALID, "varint overflows 32 bits");
        return 0;
    }
    return (uint32_t)v;
}

uint64_t kp_read_uvarlong(struct kp_reader *r)
{
    return kp__read_leb(r, 10);
}

int32_t kp_read_varint(struct kp_reader *r)
{
    uint32_t u = kp_read_uvarint(r);
    return (int32_t)((u >> 1) ^ (~(u & 1) + 1));
}

int64_t kp_read_varlong(struct kp_reader *r)
{
    uint64_t u = kp_read_uvarlong(r);
    return (int64_t)((u >> 1) ^ (~(u & 1) + 1));
}

/* Reads a length prefix: returns -1 for null, or a length that is known to be present. */
static int32_t kp__read_len(struct kp_reader *r, bool compact, bool wide)
{
    int64_t len;
    if (compact) {
        uint32_t u = kp_read_uvarint(r);
        len = (int64_t)u - 1;
    } else {
        len = wide ? kp_read_i32(r) : kp_read_i16(r);
    }
    if (r->err != 0) {
        return -1;
    }
    if (len < -1 || len > INT32_MAX) {
        kp_reader_fail(r, KP_ERR_INVALID, "negative length");
        return -1;
    }
    if (len > (int64_t)kp_reader_remaining(r)) {
        kp_reader_fail(r, KP_ERR_SHORT, "length exceeds the input");
        return -1;
    }
    return (int32_t)len;
}

void kp_read_string(struct kp_reader *r, bool compact, struct kp_str *out)
{
    int32_t len = kp__read_len(r, compact, false);
    if (len < 0) {
        *out = KP_STR_NULL;
        return;
    }
    out->ptr = (const char *)kp_read_raw(r, (size_t)len);
    out->len = len;
}

void kp_read_bytes(struct kp_reader *r, bool compact, struct kp_bytes *out)
{
    int32_t len = kp__read_len(r, compact, true);
    if (len < 0) {
        *out = KP_BYTES_NULL;
        return;
    }
    out->ptr = kp_read_raw(r, (size_t)len);
    out->len = len;
}

int32_t kp_read_array_len(struct kp_reader *r, bool compact, size_t min_elem_size)
{
    int64_t n;
    if (compact) {
        n = (int64_t)kp_read_uvarint(r) - 1;
    } else {
        n = kp_read_i32(r);
    }
    if (r->err != 0) {
        return -1;
    }
    if (n < -1 || n > INT32_MAX) {
        kp_reader_fail(r, KP_ERR_INVALID, "negative array length");
        return -1;
    }
    if (min_elem_size == 0) {
        min_elem_size = 1;
    }
    if (n > 0 && (uint64_t)n > kp_reader_remaining(r) / min_elem_size) {
        kp_reader_fail(r, KP_ERR_SHORT, "array count exceeds the input");
        return -1;
    }
    return (int32_t)n;
}

void kp_writer_init(struct kp_writer *w, void *buf, size_t cap)
{
    w->start = buf;
    w->p = buf;
    w->end = w->p + cap;
    w->err = 0;
    w->gather = NULL;
}

/* Copies n bytes in (fixed-size fields: never offered to the gather). */
static void kp__write_copy(struct kp_writer *w, const void *src, size_t n)
{
    if (w->err != 0) {
        return;
    }
    if ((size_t)(w->end - w->p) < n) {
        w->err = KP_ERR_SHORT;
        return;
    }
    memcpy(w->p, src, n);
    w->p += n;
}

void kp_write_raw(struct kp_writer *w, const void *src, size_t n)
{
    if (w->err != 0) {
        return;
    }
    if (w->gather != NULL && n > 0 && n >= w->gather->min &&
        w->gather->claim(w->gather, (size_t)(w->p - w->start), src, n)) {
        w->gather->claimed += n;
        return;
    }
    if ((size_t)(w->end - w->p) < n) {
        w->err = KP_ERR_SHORT;
        return;
    }
    if (n > 0) {
        memcpy(w->p, src, n);
    }
    w->p += n;
}

static void kp__write_be(struct kp_writer *w, uint64_t v, size_t n)
{
    uint8_t buf[8];
    for (size_t i = 0; i < n; i++) {
        buf[n - 1 - i] = (uint8_t)(v >> (8 * i));
    }
    kp__write_copy(w, buf, n);
}

void kp_write_i8(struct kp_writer *w, int8_t v)
{
    kp__write_be(w, (uint8_t)v, 1);
}

void kp_write_i16(struct kp_writer *w, int16_t v)
{
    kp__write_be(w, (uint16_t)v, 2);
}

void kp_write_i32(struct kp_writer *w, int32_t v)
{
    kp__write_be(w, (uint32_t)v, 4);
}

void kp_write_i64(struct kp_writer *w, int64_t v)
{
    kp__write_be(w, (uint64_t)v, 8);
}

void kp_write_u16(struct kp_writer *w, uint16_t v)
{
    kp__write_be(w, v, 2);
}

void kp_write_u32(struct kp_writer *w, uint32_t v)
{
    kp__write_be(w, v, 4);
}

void kp_write_f64(struct kp_writer *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    kp__write_be(w, bits, 8);
}

void kp_write_bool(struct kp_writer *w, bool v)
{
    kp__write_be(w, v ? 1 : 0, 1);
}

void kp_write_uuid(struct kp_writer *w, const struct kp_uuid *v)
{
    kp__write_copy(w, v->b, 16);
}

void kp_write_uvarlong(struct kp_writer *w, uint64_t v)
{
    uint8_t buf[10];
    size_t n = 0;
    while (v >= 0x80) {
        buf[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    buf[n++] = (uint8_t)v;
    kp__write_copy(w, buf, n);
}

void kp_write_uvarint(struct kp_writer *w, uint32_t v)
{
    kp_write_uvarlong(w, v);
}

void kp_write_varint(struct kp_writer *w, int32_t v)
{
    kp_write_uvarlong(w, (uint32_t)(((uint32_t)v << 1) ^ (uint32_t)(v >> 31)));
}

void kp_write_varlong(struct kp_writer *w, int64_t v)
{
    kp_write_uvarlong(w, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

void kp_write_string(struct kp_writer *w, bool compact, struct kp_str s)
{
    if (s.ptr == NULL || s.len < 0) {
        if (compact) {
            kp_write_uvarint(w, 0);
        } else {
            kp_write_i16(w, -1);
        }
        return;
    }
    if (compact) {
        kp_write_uvarint(w, (uint32_t)s.len + 1);
    } else {
        kp_write_i16(w, (int16_t)s.len);
    }
    kp_write_raw(w, s.ptr, (size_t)s.len);
}

void kp_write_bytes(struct kp_writer *w, bool compact, struct kp_bytes b)
{
    if (b.ptr == NULL || b.len < 0) {
        if (compact) {
            kp_write_uvarint(w, 0);
        } else {
            kp_write_i32(w, -1);
        }
        return;
    }
    if (compact) {
        kp_write_uvarint(w, (uint32_t)b.len + 1);
    } else {
        kp_write_i32(w, b.len);
    }
    kp_write_raw(w, b.ptr, (size_t)b.len);
}

void kp_write_array_len(struct kp_writer *w, bool compact, int32_t count)
{
    if (compact) {
        kp_write_uvarint(w, count < 0 ? 0 : (uint32_t)count + 1);
    } else {
        kp_write_i32(w, count < 0 ? -1 : count);
    }
}

size_t kp_uvarlong_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t kp_uvarint_size(uint32_t v)
{
    return kp_uvarlong_size(v);
}

size_t kp_varint_size(int32_t v)
{
    return kp_uvarlong_size((uint32_t)(((uint32_t)v << 1) ^ (uint32_t)(v >> 31)));
}

size_t kp_varlong_size(int64_t v)
{
    return kp_uvarlong_size(((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

size_t kp_string_size(bool compact, struct kp_str s)
{
    if (s.ptr == NULL || s.len < 0) {
        return compact ? 1 : 2;
    }
    return (compact ? kp_uvarint_size((uint32_t)s.len + 1) : 2) + (size_t)s.len;
}

size_t kp_bytes_size(bool compact, struct kp_bytes b)
{
    if (b.ptr == NULL || b.len < 0) {
        return compact ? 1 : 4;
    }
    return (compact ? kp_uvarint_size((uint32_t)b.len + 1) : 4) + (size_t)b.len;
}

size_t kp_array_len_size(bool compact, int32_t count)
{
    if (!compact) {
        return 4;
    }
    return kp_uvarint_size(count < 0 ? 0 : (uint32_t)count + 1);
}
