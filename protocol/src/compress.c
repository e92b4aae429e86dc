/*
 * gzip, snappy, lz4 and zstd for record batches (see runnel/protocol/compress.h).
 *
 * Every decompressor writes into a `struct outbuf` that grows by doubling but never beyond the
 * caller's cap. When the buffer is exactly at the cap and the stream is not known to be
 * finished, the decoder gets a one-byte scratch area instead: if it writes anything there the
 * output is too large (-EFBIG), otherwise it has simply reached its end. So an output of exactly
 * `max_out` bytes is accepted and one byte more is refused, without allocating past the cap.
 */
#include "runnel/protocol/compress.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "runnel/protocol/mem.h"

#define XERIAL_HEADER_LEN 16
#define XERIAL_BLOCK 32768 /* bytes of input per xerial block, as snappy-java writes them */
#define ZSTD_WLOG_MIN 23   /* 8 MiB: enough for frames streamed at the usual levels */
#define ZSTD_WLOG_MAX 27   /* 128 MiB: zstd's own default limit */

static const uint8_t xerial_magic[8] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0};

const char *kp_codec_name(int codec)
{
    switch (codec) {
    case KP_CODEC_NONE:
        return "none";
    case KP_CODEC_GZIP:
        return "gzip";
    case KP_CODEC_SNAPPY:
        return "snappy";
    case KP_CODEC_LZ4:
        return "lz4";
    case KP_CODEC_ZSTD:
        return "zstd";
    default:
        return "unknown";
    }
}

static void *default_resize(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    return kp_xrealloc(ptr, new_size);
}

static void default_release(void *ctx, void *ptr, size_t size)
{
    free(ptr);
}

static const struct kp_alloc_ops default_ops = {default_resize, default_release, NULL};

struct outbuf {
    const struct kp_alloc_ops *ops;
    uint8_t *p;    /* allocated buffer, or NULL */
    size_t len;    /* bytes produced */
    size_t cap;    /* bytes allocated */
    size_t max;    /* the caller's cap on len */
    uint8_t probe; /* scratch byte used once len == max */
    bool probing;  /* the last region handed out was the scratch byte */
    const char *why;
};

static bool outbuf_resize(struct outbuf *ob, size_t cap)
{
    size_t alloc = cap > 0 ? cap : 1;
    uint8_t *p = ob->ops->resize(ob->ops->ctx, ob->p, ob->cap, alloc);
    if (p == NULL) {
        ob->why = "output buffer allocation refused";
        return false;
    }
    ob->p = p;
    ob->cap = alloc;
    return true;
}

/* Makes room for at least `need` more bytes (need <= max - len is checked by the caller). */
static int outbuf_reserve(struct outbuf *ob, size_t need)
{
    if (ob->p != NULL && ob->cap - ob->len >= need) {
        return 0;
    }
    size_t want = ob->len + need;
    size_t cap = ob->cap * 2 > want ? ob->cap * 2 : want;
    if (cap > ob->max) {
        cap = ob->max;
    }
    return outbuf_resize(ob, cap) ? 0 : -ENOMEM;
}

/* Hands out the next writable region; the scratch byte once the cap is reached. */
static int outbuf_region(struct outbuf *ob, uint8_t **ptr, size_t *avail)
{
    if (ob->len >= ob->max) {
        ob->probing = true;
        *ptr = &ob->probe;
        *avail = 1;
        return 0;
    }
    ob->probing = false;
    if (ob->len == ob->cap || ob->p == NULL) {
        size_t cap = ob->cap * 2;
        if (cap < 4096) {
            cap = 4096;
        }
        if (cap > ob->max) {
            cap = ob->max;
        }
        if (!outbuf_resize(ob, cap)) {
            return -ENOMEM;
        }
    }
    *ptr = ob->p + ob->len;
    *avail = (ob->cap < ob->max ? ob->cap : ob->max) - ob->len;
    return 0;
}

/* Records `n` bytes written into the last region; -EFBIG if they went to the scratch byte. */
static int outbuf_commit(struct outbuf *ob, size_t n)
{
    if (ob->probing) {
        if (n > 0) {
            ob->why = "decompressed data exceeds the size cap";
            return -EFBIG;
        }
        return 0;
    }
    ob->len += n;
    return 0;
}

static void outbuf_drop(struct outbuf *ob)
{
    if (ob->p != NULL) {
        ob->ops->release(ob->ops->ctx, ob->p, ob->cap);
    }
    ob->p = NULL;
    ob->cap = 0;
    ob->len = 0;
}

/* Initial allocation: a guess from the input size, bounded by the cap. */
static int outbuf_start(struct outbuf *ob, size_t in_len)
{
    size_t guess = in_len > SIZE_MAX / 4 ? SIZE_MAX : in_len * 4;
    if (guess < 4096) {
        guess = 4096;
    }
    if (guess > (size_t)64 << 20) {
        guess = (size_t)64 << 20;
    }
    if (guess > ob->max) {
        guess = ob->max;
    }
    return outbuf_resize(ob, guess) ? 0 : -ENOMEM;
}

static int gunzip(struct outbuf *ob, const uint8_t *in, size_t in_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, 15 + 32) != Z_OK) { /* 32: accept gzip or zlib headers */
        ob->why = "zlib initialisation failed";
        return -ENOMEM;
    }
    int rc = 0;
    size_t pos = 0;
    for (;;) {
        uint8_t *dst;
        size_t avail;
        if ((rc = outbuf_region(ob, &dst, &avail)) != 0) {
            break;
        }
        size_t in_step = in_len - pos > UINT_MAX ? UINT_MAX : in_len - pos;
        zs.next_in = (Bytef *)(uintptr_t)(in + pos);
        zs.avail_in = (uInt)in_step;
        size_t out_step = avail > UINT_MAX ? UINT_MAX : avail;
        zs.next_out = dst;
        zs.avail_out = (uInt)out_step;
        int zr = inflate(&zs, Z_NO_FLUSH);
        pos += in_step - zs.avail_in;
        size_t produced = out_step - zs.avail_out;
        if ((rc = outbuf_commit(ob, produced)) != 0) {
            break;
        }
        if (zr == Z_STREAM_END) {
            if (pos == in_len) {
                break;
            }
            if (in_len - pos >= 2 && in[pos] == 0x1f && in[pos + 1] == 0x8b) {
                inflateReset(&zs); /* another gzip member follows */
                continue;
            }
            ob->why = "trailing bytes after the gzip stream";
            rc = -EBADMSG;
            break;
        }
        if (zr == Z_OK || (zr == Z_BUF_ERROR && zs.avail_out == 0)) {
            if (produced == 0 && pos == in_len && zs.avail_out != 0) {
                ob->why = "gzip stream is truncated";
                rc = -EBADMSG;
                break;
            }
            continue;
        }
        if (zr == Z_BUF_ERROR) {
            ob->why = "gzip stream is truncated";
        } else if (zr == Z_MEM_ERROR) {
            ob->why = "zlib ran out of memory";
        } else {
            ob->why = "gzip data is corrupt";
        }
        rc = -EBADMSG;
        break;
    }
    inflateEnd(&zs);
    return rc;
}

static unsigned zstd_window_log_max(size_t max_out)
{
    unsigned wlog = ZSTD_WLOG_MIN;
    while (wlog < ZSTD_WLOG_MAX && ((size_t)1 << wlog) < max_out) {
        wlog++;
    }
    return wlog;
}

static int unzstd(struct outbuf *ob, const uint8_t *in, size_t in_len)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (dctx == NULL) {
        ob->why = "zstd initialisation failed";
        return -ENOMEM;
    }
    int rc = 0;
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, (int)zstd_window_log_max(ob->max));
    ZSTD_inBuffer src = {in, in_len, 0};
    for (;;) {
        uint8_t *dst;
        size_t avail;
        if ((rc = outbuf_region(ob, &dst, &avail)) != 0) {
            break;
        }
        ZSTD_outBuffer out = {dst, avail, 0};
        size_t zr = ZSTD_decompressStream(dctx, &out, &src);
        if (ZSTD_isError(zr)) {
            if (ZSTD_getErrorCode(zr) == ZSTD_error_frameParameter_windowTooLarge) {
                ob->why = "zstd frame needs a window larger than allowed";
                rc = -EFBIG;
            } else {
                ob->why = "zstd data is corrupt";
                rc = -EBADMSG;
            }
            break;
        }
        if ((rc = outbuf_commit(ob, out.pos)) != 0) {
            break;
        }
        if (zr == 0 && src.pos == src.size) {
            break; /* last frame complete */
        }
        if (src.pos == src.size && out.pos < out.size) {
            ob->why = "zstd stream is truncated";
            rc = -EBADMSG;
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return rc;
}

static int unlz4(struct outbuf *ob, const uint8_t *in, size_t in_len)
{
    LZ4F_dctx *dctx = NULL;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
        ob->why = "lz4 initialisation failed";
        return -ENOMEM;
    }
    int rc = 0;
    size_t pos = 0;
    for (;;) {
        uint8_t *dst;
        size_t avail;
        if ((rc = outbuf_region(ob, &dst, &avail)) != 0) {
            break;
        }
        size_t dst_size = avail;
        size_t src_size = in_len - pos;
        size_t lr = LZ4F_decompress(dctx, dst, &dst_size, in + pos, &src_size, NULL);
        if (LZ4F_isError(lr)) {
            ob->why = "lz4 data is corrupt";
            rc = -EBADMSG;
            break;
        }
        pos += src_size;
        if ((rc = outbuf_commit(ob, dst_size)) != 0) {
            break;
        }
        if (lr == 0 && pos == in_len) {
            break; /* last frame complete */
        }
        if (pos == in_len && dst_size < avail) {
            ob->why = "lz4 stream is truncated";
            rc = -EBADMSG;
            break;
        }
    }
    LZ4F_freeDecompressionContext(dctx);
    return rc;
}

/* One raw snappy block appended to the output, its claimed length checked against the cap. */
static int unsnappy_block(struct outbuf *ob, const uint8_t *in, size_t in_len)
{
    size_t ulen;
    if (snappy_uncompressed_length((const char *)in, in_len, &ulen) != SNAPPY_OK) {
        ob->why = "snappy block header is corrupt";
        return -EBADMSG;
    }
    if (ulen > ob->max - ob->len) {
        ob->why = "decompressed data exceeds the size cap";
        return -EFBIG;
    }
    int rc = outbuf_reserve(ob, ulen);
    if (rc != 0) {
        return rc;
    }
    size_t got = ulen;
    if (snappy_uncompress((const char *)in, in_len, (char *)ob->p + ob->len, &got) != SNAPPY_OK ||
        got != ulen) {
        ob->why = "snappy data is corrupt";
        return -EBADMSG;
    }
    ob->len += got;
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static int unsnappy(struct outbuf *ob, const uint8_t *in, size_t in_len)
{
    if (in_len < sizeof(xerial_magic) || memcmp(in, xerial_magic, sizeof(xerial_magic)) != 0) {
        return unsnappy_block(ob, in, in_len);
    }
    if (in_len < XERIAL_HEADER_LEN) {
        ob->why = "xerial snappy header is truncated";
        return -EBADMSG;
    }
    size_t pos = XERIAL_HEADER_LEN;
    while (pos < in_len) {
        if (in_len - pos < 4) {
            ob->why = "xerial snappy block length is truncated";
            return -EBADMSG;
        }
        uint32_t blen = be32(in + pos);
        pos += 4;
        if (blen > in_len - pos) {
            ob->why = "xerial snappy block is truncated";
            return -EBADMSG;
        }
        int rc = unsnappy_block(ob, in + pos, blen);
        if (rc != 0) {
            return rc;
        }
        pos += blen;
    }
    return 0;
}

int kp_decompress_with(const struct kp_alloc_ops *ops, int codec, const void *in, size_t in_len,
                       size_t max_out, uint8_t **out, size_t *out_len, size_t *out_cap,
                       const char **why)
{
    struct outbuf ob = {.ops = ops != NULL ? ops : &default_ops, .max = max_out};
    int rc;
    *out = NULL;
    *out_len = 0;
    if (out_cap != NULL) {
        *out_cap = 0;
    }
    if (codec < KP_CODEC_GZIP || codec > KP_CODEC_ZSTD) {
        *why = "unknown compression codec";
        return -EINVAL;
    }
    if (in == NULL && in_len > 0) {
        *why = "no input";
        return -EINVAL;
    }
    if (codec != KP_CODEC_SNAPPY && (rc = outbuf_start(&ob, in_len)) != 0) {
        *why = ob.why;
        return rc;
    }
    switch (codec) {
    case KP_CODEC_GZIP:
        rc = gunzip(&ob, in, in_len);
        break;
    case KP_CODEC_SNAPPY:
        rc = unsnappy(&ob, in, in_len);
        break;
    case KP_CODEC_LZ4:
        rc = unlz4(&ob, in, in_len);
        break;
    default:
        rc = unzstd(&ob, in, in_len);
        break;
    }
    if (rc != 0) {
        *why = ob.why != NULL ? ob.why : "decompression failed";
        outbuf_drop(&ob);
        return rc;
    }
    if (ob.p == NULL && !outbuf_resize(&ob, 0)) { /* empty snappy output: still hand out a buffer */
        *why = ob.why;
        return -ENOMEM;
    }
    *out = ob.p;
    *out_len = ob.len;
    if (out_cap != NULL) {
        *out_cap = ob.cap;
    }
    return 0;
}

int kp_decompress(int codec, const void *in, size_t in_len, size_t max_out, uint8_t **out,
                  size_t *out_len, const char **why)
{
    return kp_decompress_with(NULL, codec, in, in_len, max_out, out, out_len, NULL, why);
}

static int gzip_compress(int level, const uint8_t *in, size_t in_len, uint8_t **out,
                         size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (level == KP_LEVEL_DEFAULT) {
        level = Z_DEFAULT_COMPRESSION;
    }
    if (level < -1 || level > 9) {
        return -EINVAL;
    }
    if (deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        return -EIO;
    }
    size_t bound = deflateBound(&zs, (uLong)in_len) + 32;
    uint8_t *buf = kp_xmalloc(bound);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.next_out = buf;
    int zr = Z_OK;
    size_t in_left = in_len, out_left = bound;
    while (zr == Z_OK) {
        uInt in_step = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
        uInt out_step = out_left > UINT_MAX ? UINT_MAX : (uInt)out_left;
        zs.avail_in = in_step;
        zs.avail_out = out_step;
        zr = deflate(&zs, in_left == in_step ? Z_FINISH : Z_NO_FLUSH);
        in_left -= in_step - zs.avail_in;
        out_left -= out_step - zs.avail_out;
    }
    deflateEnd(&zs);
    if (zr != Z_STREAM_END) {
        free(buf);
        return -EIO;
    }
    *out = buf;
    *out_len = bound - out_left;
    return 0;
}

static int snappy_xerial_compress(const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len)
{
    size_t blocks = (in_len + XERIAL_BLOCK - 1) / XERIAL_BLOCK;
    size_t cap = XERIAL_HEADER_LEN + blocks * (4 + snappy_max_compressed_length(XERIAL_BLOCK));
    uint8_t *buf = kp_xmalloc(cap);
    memcpy(buf, xerial_magic, sizeof(xerial_magic));
    put_be32(buf + 8, 1);  /* version */
    put_be32(buf + 12, 1); /* minimum compatible version */
    size_t pos = XERIAL_HEADER_LEN;
    for (size_t off = 0; off < in_len; off += XERIAL_BLOCK) {
        size_t n = in_len - off < XERIAL_BLOCK ? in_len - off : XERIAL_BLOCK;
        size_t clen = cap - pos - 4;
        if (snappy_compress((const char *)in + off, n, (char *)buf + pos + 4, &clen) != SNAPPY_OK) {
            free(buf);
            return -EIO;
        }
        put_be32(buf + pos, (uint32_t)clen);
        pos += 4 + clen;
    }
    *out = buf;
    *out_len = pos;
    return 0;
}

static int lz4_compress(int level, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len)
{
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof(prefs));
    prefs.frameInfo.blockSizeID = LZ4F_max64KB;
    prefs.frameInfo.blockMode = LZ4F_blockIndependent; /* Kafka's Java reader wants these */
    prefs.compressionLevel = level == KP_LEVEL_DEFAULT ? 0 : level;
    size_t bound = LZ4F_compressFrameBound(in_len, &prefs);
    uint8_t *buf = kp_xmalloc(bound);
    size_t n = LZ4F_compressFrame(buf, bound, in, in_len, &prefs);
    if (LZ4F_isError(n)) {
        free(buf);
        return -EIO;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

static int zstd_compress(int level, const uint8_t *in, size_t in_len, uint8_t **out,
                         size_t *out_len)
{
    if (level == KP_LEVEL_DEFAULT) {
        level = ZSTD_CLEVEL_DEFAULT;
    }
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
        return -EINVAL;
    }
    size_t bound = ZSTD_compressBound(in_len);
    uint8_t *buf = kp_xmalloc(bound);
    size_t n = ZSTD_compress(buf, bound, in, in_len, level);
    if (ZSTD_isError(n)) {
        free(buf);
        return -EIO;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

int kp_compress(int codec, int level, const void *in, size_t in_len, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (in == NULL && in_len > 0) {
        return -EINVAL;
    }
    switch (codec) {
    case KP_CODEC_GZIP:
        return gzip_compress(level, in, in_len, out, out_len);
    case KP_CODEC_SNAPPY:
        return snappy_xerial_compress(in, in_len, out, out_len);
    case KP_CODEC_LZ4:
        return lz4_compress(level, in, in_len, out, out_len);
    case KP_CODEC_ZSTD:
        return zstd_compress(level, in, in_len, out, out_len);
    default:
        return -EINVAL;
    }
}
