/*
 * The four record-batch compression codecs Kafka uses, in both directions, with a hard cap on
 * the decompressed size so that a small hostile input cannot make us allocate much memory.
 *
 *   codec 1 gzip    RFC 1952 (zlib and concatenated gzip members are accepted when reading)
 *   codec 2 snappy  Java clients' xerial framing ("\x82SNAPPY\0", two int32 version words, then
 *                   blocks of [int32 length][raw snappy]); librdkafka's raw snappy is detected by
 *                   the missing magic. Compression writes the xerial framing, which every client
 *                   reads.
 *   codec 3 lz4     the standard LZ4 frame format (concatenated frames accepted)
 *   codec 4 zstd    zstd frames, decoded as a stream (concatenated frames accepted)
 *
 * Memory bounds when decompressing: the output buffer starts small and grows in steps (doubling)
 * that never pass `max_out`; output beyond `max_out` is an error found before any further
 * allocation. The codec libraries' own state is bounded independently of the input: zlib 32 KiB
 * window, LZ4 at most one 4 MiB block, zstd's window limited to max(8 MiB, max_out) up to 128 MiB
 * (a frame asking for more is rejected), snappy none (its claimed length is checked first).
 *
 * Errors are negative errno values with a static description in *why:
 *   -EINVAL   unknown codec or codec 0 (NONE)
 *   -EBADMSG  corrupt or truncated compressed data
 *   -EFBIG    the decompressed data would exceed max_out (a decompression bomb or a low cap)
 */
#ifndef RUNNEL_PROTOCOL_COMPRESS_H
#define RUNNEL_PROTOCOL_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

/* Compression codec ids, as stored in bits 0-2 of a record batch's attributes. */
enum kp_codec {
    KP_CODEC_NONE = 0,
    KP_CODEC_GZIP = 1,
    KP_CODEC_SNAPPY = 2,
    KP_CODEC_LZ4 = 3,
    KP_CODEC_ZSTD = 4,
};

/* Default levels used when `level` is KP_LEVEL_DEFAULT. */
#define KP_LEVEL_DEFAULT (-1000)

/* Returns "none", "gzip", "snappy", "lz4", "zstd", or "unknown" (static strings). */
const char *kp_codec_name(int codec);

/*
 * Output memory for kp_decompress_with(): `resize` behaves like realloc (ptr may be NULL,
 * old_size is the previous size) and returns NULL on failure; `release` frees. Tests use this
 * to count bytes; everything else passes NULL to get malloc-backed buffers.
 */
struct kp_alloc_ops {
    void *(*resize)(void *ctx, void *ptr, size_t old_size, size_t new_size);
    void (*release)(void *ctx, void *ptr, size_t size);
    void *ctx; /* passed back to both functions */
};

/*
 * Decompresses `in_len` bytes of `codec` data into a new buffer of at most `max_out` bytes.
 * On success returns 0 and sets *out (owned by the caller, release with free()) and *out_len;
 * *out may be non-NULL with *out_len 0. On failure returns a negative errno (see above), sets
 * *why, and leaves *out NULL; nothing is left allocated.
 */
int kp_decompress(int codec, const void *in, size_t in_len, size_t max_out, uint8_t **out,
                  size_t *out_len, const char **why);

/*
 * As kp_decompress() with the output buffer allocated through `ops` (NULL: malloc/free). On
 * success the caller releases *out with ops->release(ctx, *out, *out_cap); *out_cap is the size
 * actually allocated (>= *out_len, <= max(max_out, 1)).
 */
int kp_decompress_with(const struct kp_alloc_ops *ops, int codec, const void *in, size_t in_len,
                       size_t max_out, uint8_t **out, size_t *out_len, size_t *out_cap,
                       const char **why);

/*
 * Compresses `in_len` bytes with `codec` (1..4) at `level` (codec-specific; KP_LEVEL_DEFAULT
 * for the library default; ignored by snappy). On success returns 0 and sets *out (free() it)
 * and *out_len. Returns -EINVAL for an unknown codec or level, -EIO if the library fails.
 */
int kp_compress(int codec, int level, const void *in, size_t in_len, uint8_t **out,
                size_t *out_len);

#endif
