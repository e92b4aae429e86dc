/*
 * The primitives every Kafka message is made of: a bounds-checked reader with a sticky error
 * and a writer over a buffer sized beforehand. Generated message code and hand-written decoders
 * (headers, record batches) are built from these. No I/O and no allocation happen here.
 *
 * The reader's error is sticky, as in franz-go's kbin.Reader: after the first failure every read
 * returns zero/empty and the error stays, so a decoder reads everything and checks once. Strings
 * and byte fields come back as views into the input buffer, never copies.
 *
 * The writer is used in two passes: compute the exact size, allocate, write. Writing past the end
 * sets a sticky error instead of overflowing (a size bug, never a wire condition).
 */
#ifndef RUNNEL_PROTOCOL_CODEC_H
#define RUNNEL_PROTOCOL_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A string field: a view into the frame. ptr == NULL and len == -1 for a null string. */
struct kp_str {
    const char *ptr; /* not NUL-terminated */
    int32_t len;     /* bytes; -1 for null */
};

/* A bytes or records field: a view into the frame. ptr == NULL and len == -1 for null. */
struct kp_bytes {
    const uint8_t *ptr;
    int32_t len; /* bytes; -1 for null */
};

struct kp_uuid {
    uint8_t b[16]; /* big-endian as on the wire */
};

#define KP_STR_NULL ((struct kp_str){NULL, -1})
#define KP_BYTES_NULL ((struct kp_bytes){NULL, -1})

/* A view of a C string (NULL gives the null string). */
struct kp_str kp_str_from(const char *s);
/* True when both are null or both hold the same bytes. */
bool kp_str_eq(struct kp_str a, struct kp_str b);
bool kp_str_eq_cstr(struct kp_str a, const char *s);

/* Reader error codes (negative, in the errno style of the project). */
#define KP_ERR_SHORT (-1)   /* input ended before the value did */
#define KP_ERR_INVALID (-2) /* a value out of its range: negative length, overlong varint, ... */
#define KP_ERR_NOMEM (-3)   /* the arena limit refused an allocation */

struct kp_reader {
    const uint8_t *start; /* first byte of the input */
    const uint8_t *p;     /* next byte to read */
    const uint8_t *end;   /* one past the last byte */
    int err;              /* 0, or the first KP_ERR_* seen; sticky */
    const char *why;      /* static description of the first error, or NULL */
};

void kp_reader_init(struct kp_reader *r, const void *buf, size_t len);

/* Records the first error only; returns err. `why` must be a static string. */
int kp_reader_fail(struct kp_reader *r, int err, const char *why);

static inline size_t kp_reader_remaining(const struct kp_reader *r)
{
    return (size_t)(r->end - r->p);
}

static inline size_t kp_reader_offset(const struct kp_reader *r)
{
    return (size_t)(r->p - r->start);
}

int8_t kp_read_i8(struct kp_reader *r);
int16_t kp_read_i16(struct kp_reader *r);
int32_t kp_read_i32(struct kp_reader *r);
int64_t kp_read_i64(struct kp_reader *r);
uint16_t kp_read_u16(struct kp_reader *r);
uint32_t kp_read_u32(struct kp_reader *r);
double kp_read_f64(struct kp_reader *r);
bool kp_read_bool(struct kp_reader *r); /* any non-zero byte is true, as Kafka reads it */
void kp_read_uuid(struct kp_reader *r, struct kp_uuid *out);

/* Protocol varints: unsigned LEB128, at most 5 (32-bit) or 10 (64-bit) bytes. */
uint32_t kp_read_uvarint(struct kp_reader *r);
uint64_t kp_read_uvarlong(struct kp_reader *r);
/* Record-format varints: zigzag-encoded signed LEB128. */
int32_t kp_read_varint(struct kp_reader *r);
int64_t kp_read_varlong(struct kp_reader *r);

/*
 * Strings and bytes. `compact` selects the flexible encoding (uvarint length + 1, 0 = null)
 * over the classic one (int16 length for strings, int32 for bytes, -1 = null). A null value
 * is accepted here; the generated code rejects it where the field is not nullable.
 */
void kp_read_string(struct kp_reader *r, bool compact, struct kp_str *out);
void kp_read_bytes(struct kp_reader *r, bool compact, struct kp_bytes *out);

/*
 * Array length: int32 (-1 = null) or compact uvarint (0 = null). Returns the count, or -1 for
 * null. A count that cannot fit in the remaining input at `min_elem_size` bytes per element
 * (at least 1) is an error, so callers can allocate `count` elements safely.
 */
int32_t kp_read_array_len(struct kp_reader *r, bool compact, size_t min_elem_size);

/* Returns a view of the next `n` bytes and advances, or NULL (with the error set). */
const uint8_t *kp_read_raw(struct kp_reader *r, size_t n);

/*
 * Gather output, for a writer whose owner sends some long byte runs from where they already are
 * instead of copying them into the buffer (a Fetch response's records). For every raw run of at
 * least `min` bytes the writer asks `claim`: returning true means the owner takes the run and will
 * send its `n` bytes itself, right after the first `at` bytes of the buffer (the writer then
 * leaves no room for them and adds `n` to `claimed`); false has the run copied as usual. The owner
 * embeds this struct in its own state and keeps whatever it needs there.
 */
struct kp_gather {
    bool (*claim)(struct kp_gather *g, size_t at, const uint8_t *ptr, size_t n);
    size_t min;     /* runs shorter than this are always copied */
    size_t claimed; /* bytes taken by claim so far */
};

struct kp_writer {
    uint8_t *start;           /* first byte of the buffer */
    uint8_t *p;               /* next byte to write */
    uint8_t *end;             /* one past the buffer */
    int err;                  /* 0, or KP_ERR_SHORT after an attempted overflow; sticky */
    struct kp_gather *gather; /* NULL (the default), or who may take long byte runs */
};

void kp_writer_init(struct kp_writer *w, void *buf, size_t cap);

static inline size_t kp_writer_len(const struct kp_writer *w)
{
    return (size_t)(w->p - w->start);
}

void kp_write_i8(struct kp_writer *w, int8_t v);
void kp_write_i16(struct kp_writer *w, int16_t v);
void kp_write_i32(struct kp_writer *w, int32_t v);
void kp_write_i64(struct kp_writer *w, int64_t v);
void kp_write_u16(struct kp_writer *w, uint16_t v);
void kp_write_u32(struct kp_writer *w, uint32_t v);
void kp_write_f64(struct kp_writer *w, double v);
void kp_write_bool(struct kp_writer *w, bool v);
void kp_write_uuid(struct kp_writer *w, const struct kp_uuid *v);
void kp_write_uvarint(struct kp_writer *w, uint32_t v);
void kp_write_uvarlong(struct kp_writer *w, uint64_t v);
void kp_write_varint(struct kp_writer *w, int32_t v);
void kp_write_varlong(struct kp_writer *w, int64_t v);
void kp_write_string(struct kp_writer *w, bool compact, struct kp_str s);
void kp_write_bytes(struct kp_writer *w, bool compact, struct kp_bytes b);
/* Array length; count -1 writes null. */
void kp_write_array_len(struct kp_writer *w, bool compact, int32_t count);
void kp_write_raw(struct kp_writer *w, const void *src, size_t n);

/* Encoded sizes, for the first pass. */
size_t kp_uvarint_size(uint32_t v);
size_t kp_uvarlong_size(uint64_t v);
size_t kp_varint_size(int32_t v);
size_t kp_varlong_size(int64_t v);
size_t kp_string_size(bool compact, struct kp_str s);
size_t kp_bytes_size(bool compact, struct kp_bytes b);
size_t kp_array_len_size(bool compact, int32_t count);

#endif
