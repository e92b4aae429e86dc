/*
 * Object format v1 (see runnel/storage/object.h): the builder that groups batches by partition,
 * the seal that compresses and checksums chunks and writes the footer, the footer parser and
 * chunk decoder, and the asynchronous readers that fetch them through a store.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "store_int.h"

#include "runnel/protocol/crc32c.h"
#include "runnel/protocol/mem.h"
#include "runnel/storage/object.h"

#define STORE__OBJ_TAIL_GUESS (64u * 1024u)

/* ---- big-endian helpers ---- */

static void store__be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void store__be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (24 - 8 * i));
    }
}

static void store__be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    }
}

static uint16_t store__rd16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t store__rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t store__rd64(const uint8_t *p)
{
    return ((uint64_t)store__rd32(p) << 32) | store__rd32(p + 4);
}

int store_batch_info_parse(const void *batch, size_t len, struct store_batch_info *out)
{
    const uint8_t *p = batch;
    if (p == NULL || len < 61 || p[16] != 2) {
        return -EINVAL;
    }
    int32_t count = (int32_t)store__rd32(p + 57);
    out->records = count < 0 ? 0 : (uint32_t)count;
    out->first_ts = (int64_t)store__rd64(p + 27);
    out->last_ts = (int64_t)store__rd64(p + 35);
    out->compressed = (store__rd16(p + 21) & 7) != 0;
    return 0;
}

/* ---- builder ---- */

struct store__obj_part {
    uint8_t topic_id[16]; /* topic */
    int32_t partition;    /* partition */
    uint8_t *buf;         /* batches */
    size_t len;           /* bytes used */
    size_t cap;           /* bytes allocated */
    uint32_t records;     /* records */
    uint32_t batches;     /* batches */
    uint32_t compressed;  /* batches the client compressed */
    int64_t first_ts;     /* min first timestamp */
    int64_t last_ts;      /* max last timestamp */
};

struct store_obj_builder {
    uint8_t object_id[16];         /* id */
    int64_t created_at_ms;         /* creation time */
    int level;                     /* zstd level */
    ZSTD_CCtx *cctx;               /* compression context, reused by every seal */
    struct store__obj_part *parts; /* chunks in first-arrival order */
    size_t nparts;                 /* used */
    size_t capparts;               /* allocated */
    uint32_t *index;               /* open-addressing hash: part index + 1, 0 = empty */
    size_t index_cap;              /* power of two */
    size_t bytes;                  /* raw bytes appended */
    struct {
        uint8_t *buf; /* buffer kept by store_obj_builder_reset() */
        size_t cap;   /* its size */
    } * spare;        /* buffers to reuse */
    size_t nspare;    /* used */
    size_t capspare;  /* allocated */
};

struct store_obj_builder *store_obj_builder_new(const uint8_t object_id[16], int64_t created_at_ms,
                                                int zstd_level)
{
    struct store_obj_builder *b = kp_xcalloc(1, sizeof(*b));
    if (object_id != NULL) {
        memcpy(b->object_id, object_id, 16);
    }
    b->created_at_ms = created_at_ms;
    b->level = zstd_level <= 0 ? 1 : (zstd_level > 19 ? 19 : zstd_level);
    b->index_cap = 64;
    b->index = kp_xcalloc(b->index_cap, sizeof(uint32_t));
    b->cctx = ZSTD_createCCtx();
    if (b->cctx == NULL) {
        /* Only an allocation fails here: out of memory, like kp_xmalloc. */
        fprintf(stderr, "runnel: out of memory (ZSTD_createCCtx)\n");
        abort();
    }
    return b;
}

void store_obj_builder_reset(struct store_obj_builder *b, const uint8_t object_id[16],
                             int64_t created_at_ms)
{
    if (object_id != NULL) {
        memcpy(b->object_id, object_id, 16);
    }
    b->created_at_ms = created_at_ms;
    /* Keep the buffers in a spare list; partitions reuse them in arrival order. */
    for (size_t i = 0; i < b->nparts; i++) {
        if (b->nspare == b->capspare) {
            b->capspare = b->capspare == 0 ? 16 : b->capspare * 2;
            b->spare = kp_xrealloc(b->spare, b->capspare * sizeof(*b->spare));
        }
        b->spare[b->nspare].buf = b->parts[i].buf;
        b->spare[b->nspare].cap = b->parts[i].cap;
        b->nspare++;
    }
    b->nparts = 0;
    b->bytes = 0;
    memset(b->index, 0, b->index_cap * sizeof(uint32_t));
}

void store_obj_builder_free(struct store_obj_builder *b)
{
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < b->nparts; i++) {
        free(b->parts[i].buf);
    }
    for (size_t i = 0; i < b->nspare; i++) {
        free(b->spare[i].buf);
    }
    free(b->spare);
    free(b->parts);
    free(b->index);
    ZSTD_freeCCtx(b->cctx);
    free(b);
}

size_t store_obj_builder_bytes(const struct store_obj_builder *b)
{
    return b->bytes;
}

size_t store_obj_builder_chunks(const struct store_obj_builder *b)
{
    return b->nparts;
}

static uint64_t store__obj_hash(const uint8_t topic[16], int32_t partition)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < 16; i++) {
        h = (h ^ topic[i]) * 1099511628211ULL;
    }
    h = (h ^ (uint32_t)partition) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static void store__obj_reindex(struct store_obj_builder *b)
{
    free(b->index);
    b->index_cap *= 2;
    b->index = kp_xcalloc(b->index_cap, sizeof(uint32_t));
    for (size_t i = 0; i < b->nparts; i++) {
        size_t at =
            store__obj_hash(b->parts[i].topic_id, b->parts[i].partition) & (b->index_cap - 1);
        while (b->index[at] != 0) {
            at = (at + 1) & (b->index_cap - 1);
        }
        b->index[at] = (uint32_t)i + 1;
    }
}

static struct store__obj_part *store__obj_part_get(struct store_obj_builder *b,
                                                   const uint8_t topic[16], int32_t partition)
{
    size_t at = store__obj_hash(topic, partition) & (b->index_cap - 1);
    while (b->index[at] != 0) {
        struct store__obj_part *p = &b->parts[b->index[at] - 1];
        if (p->partition == partition && memcmp(p->topic_id, topic, 16) == 0) {
            return p;
        }
        at = (at + 1) & (b->index_cap - 1);
    }
    if (b->nparts == b->capparts) {
        b->capparts = b->capparts == 0 ? 16 : b->capparts * 2;
        b->parts = kp_xrealloc(b->parts, b->capparts * sizeof(*b->parts));
    }
    struct store__obj_part *p = &b->parts[b->nparts];
    memset(p, 0, sizeof(*p));
    memcpy(p->topic_id, topic, 16);
    p->partition = partition;
    p->first_ts = INT64_MAX;
    p->last_ts = INT64_MIN;
    if (b->nspare > 0) {
        b->nspare--;
        p->buf = b->spare[b->nspare].buf;
        p->cap = b->spare[b->nspare].cap;
    }
    b->index[at] = (uint32_t)++b->nparts;
    if (b->nparts * 2 > b->index_cap) {
        store__obj_reindex(b);
    }
    return &b->parts[b->nparts - 1];
}

int store_obj_builder_add(struct store_obj_builder *b, const uint8_t topic_id[16],
                          int32_t partition, const void *batch, size_t len,
                          const struct store_batch_info *info)
{
    if (b == NULL || topic_id == NULL || batch == NULL || len == 0 || info == NULL ||
        partition < 0) {
        return -EINVAL;
    }
    struct store__obj_part *p = store__obj_part_get(b, topic_id, partition);
    if (p->len + len > STORE_OBJ_MAX_CHUNK_RAW) {
        return -EFBIG;
    }
    if (p->len + len > p->cap) {
        size_t cap = p->cap == 0 ? 16384 : p->cap;
        while (cap < p->len + len) {
            cap *= 2;
        }
        p->buf = kp_xrealloc(p->buf, cap);
        p->cap = cap;
    }
    memcpy(p->buf + p->len, batch, len);
    p->len += len;
    p->records += info->records;
    p->batches++;
    p->compressed += info->compressed ? 1 : 0;
    if (info->first_ts < p->first_ts) {
        p->first_ts = info->first_ts;
    }
    if (info->last_ts > p->last_ts) {
        p->last_ts = info->last_ts;
    }
    b->bytes += len;
    return 0;
}

/* ---- seal ---- */

static void store__obj_entry_write(uint8_t *e, const struct store_chunk *c)
{
    memcpy(e, c->topic_id, 16);
    store__be32(e + 16, (uint32_t)c->partition);
    store__be64(e + 20, c->offset);
    store__be32(e + 28, c->stored_len);
    store__be32(e + 32, c->raw_len);
    e[36] = c->codec;
    store__be32(e + 37, c->record_count);
    store__be32(e + 41, c->batch_count);
    store__be64(e + 45, (uint64_t)c->first_ts);
    store__be64(e + 53, (uint64_t)c->last_ts);
    store__be32(e + 61, c->crc);
}

static void store__obj_entry_read(const uint8_t *e, struct store_chunk *c)
{
    memcpy(c->topic_id, e, 16);
    c->partition = (int32_t)store__rd32(e + 16);
    c->offset = store__rd64(e + 20);
    c->stored_len = store__rd32(e + 28);
    c->raw_len = store__rd32(e + 32);
    c->codec = e[36];
    c->record_count = store__rd32(e + 37);
    c->batch_count = store__rd32(e + 41);
    c->first_ts = (int64_t)store__rd64(e + 45);
    c->last_ts = (int64_t)store__rd64(e + 53);
    c->crc = store__rd32(e + 61);
}

int store_obj_seal(const struct store_obj_builder *b, uint8_t **out, size_t *out_len,
                   struct store_footer *footer)
{
    size_t bound = 0;
    for (size_t i = 0; i < b->nparts; i++) {
        bound += ZSTD_compressBound(b->parts[i].len);
    }
    size_t flen = STORE_OBJ_FOOTER_FIXED + b->nparts * STORE_OBJ_ENTRY_SIZE;
    uint8_t *buf = kp_xmalloc(bound + flen + STORE_OBJ_TRAILER);
    struct store_chunk *chunks = kp_xcalloc(b->nparts == 0 ? 1 : b->nparts, sizeof(*chunks));
    /* The builder's context keeps its tables and buffers from seal to seal (a fresh context
     * allocates and faults in its workspace every time). */
    ZSTD_CCtx *cctx = b->cctx;
    int rc = 0;
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, b->level);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0);
    size_t off = 0;
    for (size_t i = 0; i < b->nparts; i++) {
        const struct store__obj_part *p = &b->parts[i];
        struct store_chunk *c = &chunks[i];
        memcpy(c->topic_id, p->topic_id, 16);
        c->partition = p->partition;
        c->offset = off;
        c->raw_len = (uint32_t)p->len;
        c->record_count = p->records;
        c->batch_count = p->batches;
        c->first_ts = p->first_ts;
        c->last_ts = p->last_ts;
        size_t stored = 0;
        c->codec = STORE_CODEC_NONE;
        if (p->compressed < p->batches) {
            if (b->level == 1) {
                /* Level 1 sizes its match table for the chunk (16K entries, 64 KiB, at 128 KiB
                 * to 16 MiB). A 4K-entry table (16 KiB, L1-resident) for chunks up to 256 KiB
                 * and 8K above cost ~1-5 % of ratio and gain ~15-30 % of speed on
                 * hard-to-compress records (docs/storage.md). */
                ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, p->len <= (256u << 10) ? 12 : 13);
            }
            size_t n = ZSTD_compress2(cctx, buf + off, bound + flen - off, p->buf, p->len);
            if (ZSTD_isError(n)) {
                rc = -EIO;
                goto out_free;
            }
            if (n < p->len) {
                c->codec = STORE_CODEC_ZSTD;
                stored = n;
            }
        }
        if (c->codec == STORE_CODEC_NONE) {
            memcpy(buf + off, p->buf, p->len);
            stored = p->len;
        }
        c->stored_len = (uint32_t)stored;
        c->crc = kp_crc32c(0, buf + off, stored);
        off += stored;
    }
    uint8_t *f = buf + off;
    store__be16(f, STORE_OBJ_VERSION);
    store__be16(f + 2, 0);
    memcpy(f + 4, b->object_id, 16);
    store__be64(f + 20, (uint64_t)b->created_at_ms);
    store__be32(f + 28, (uint32_t)b->nparts);
    for (size_t i = 0; i < b->nparts; i++) {
        store__obj_entry_write(f + 32 + i * STORE_OBJ_ENTRY_SIZE, &chunks[i]);
    }
    store__be32(f + flen - 4, kp_crc32c(0, f, flen - 4));
    store__be32(f + flen, (uint32_t)flen);
    memcpy(f + flen + 4, STORE_OBJ_MAGIC, 4);
    *out = buf;
    *out_len = off + flen + STORE_OBJ_TRAILER;
    if (footer != NULL) {
        footer->version = STORE_OBJ_VERSION;
        memcpy(footer->object_id, b->object_id, 16);
        footer->created_at_ms = b->created_at_ms;
        footer->nchunks = (uint32_t)b->nparts;
        footer->chunks = chunks;
        footer->footer_offset = off;
        footer->object_size = *out_len;
        chunks = NULL;
    }
    buf = NULL;
out_free:
    free(chunks);
    free(buf);
    return rc;
}

static void store__obj_seal_work(uv_work_t *w)
{
    struct store_obj_seal_req *req = w->data;
    req->err = store_obj_seal(req->b, &req->out, &req->out_len, &req->footer);
}

static void store__obj_seal_after(uv_work_t *w, int status)
{
    struct store_obj_seal_req *req = w->data;
    if (status < 0 && req->err == 0 && req->out == NULL) {
        req->err = status;
    }
    req->cb(req);
}

int store_obj_seal_async(uv_loop_t *loop, struct store_obj_seal_req *req,
                         const struct store_obj_builder *b, store_obj_seal_cb cb)
{
    req->b = b;
    req->cb = cb;
    req->err = 0;
    req->out = NULL;
    req->out_len = 0;
    memset(&req->footer, 0, sizeof(req->footer));
    req->work.data = req;
    return uv_queue_work(loop, &req->work, store__obj_seal_work, store__obj_seal_after);
}

void store_footer_free(struct store_footer *f)
{
    free(f->chunks);
    memset(f, 0, sizeof(*f));
}

/* ---- reading ---- */

int store_footer_parse(const uint8_t *tail, size_t tail_len, uint64_t object_size,
                       struct store_footer *out, size_t *need, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (tail_len > object_size) {
        *why = "tail longer than the object";
        return -EINVAL;
    }
    if (object_size < STORE_OBJ_TRAILER + STORE_OBJ_FOOTER_FIXED) {
        *why = "object too short to be a Runnel object (truncated?)";
        return -EBADMSG;
    }
    if (tail_len < STORE_OBJ_TRAILER) {
        *need = STORE_OBJ_TRAILER;
        *why = "need the trailer";
        return -ENOBUFS;
    }
    const uint8_t *tr = tail + tail_len - STORE_OBJ_TRAILER;
    if (memcmp(tr + 4, STORE_OBJ_MAGIC, 4) != 0) {
        *why = "no RNL1 magic at the end (truncated or not a Runnel object)";
        return -EBADMSG;
    }
    uint32_t flen = store__rd32(tr);
    if (flen < STORE_OBJ_FOOTER_FIXED || flen > STORE_OBJ_MAX_FOOTER ||
        flen > object_size - STORE_OBJ_TRAILER ||
        (flen - STORE_OBJ_FOOTER_FIXED) % STORE_OBJ_ENTRY_SIZE != 0) {
        *why = "footer length is impossible";
        return -EBADMSG;
    }
    if (tail_len < (size_t)flen + STORE_OBJ_TRAILER) {
        *need = (size_t)flen + STORE_OBJ_TRAILER;
        *why = "need the whole footer";
        return -ENOBUFS;
    }
    const uint8_t *f = tr - flen;
    if (kp_crc32c(0, f, flen - 4) != store__rd32(f + flen - 4)) {
        *why = "footer CRC32C mismatch";
        return -EBADMSG;
    }
    uint16_t version = store__rd16(f);
    if (version != STORE_OBJ_VERSION) {
        *why = "unsupported object format version";
        return -EBADMSG;
    }
    uint32_t n = store__rd32(f + 28);
    if ((uint64_t)n * STORE_OBJ_ENTRY_SIZE != flen - STORE_OBJ_FOOTER_FIXED) {
        *why = "chunk count does not match the footer length";
        return -EBADMSG;
    }
    uint64_t footer_offset = object_size - STORE_OBJ_TRAILER - flen;
    struct store_chunk *chunks = kp_xcalloc(n == 0 ? 1 : n, sizeof(*chunks));
    uint64_t expect = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct store_chunk *c = &chunks[i];
        store__obj_entry_read(f + 32 + (size_t)i * STORE_OBJ_ENTRY_SIZE, c);
        if (c->offset != expect || c->offset + c->stored_len > footer_offset) {
            *why = "chunk entry points outside the object (truncated?)";
            goto out_bad;
        }
        if (c->codec > STORE_CODEC_ZSTD || c->partition < 0 ||
            c->raw_len > STORE_OBJ_MAX_CHUNK_RAW ||
            (c->codec == STORE_CODEC_NONE && c->raw_len != c->stored_len)) {
            *why = "chunk entry has an invalid codec, partition or length";
            goto out_bad;
        }
        expect = c->offset + c->stored_len;
    }
    if (expect != footer_offset) {
        *why = "chunks do not end where the footer starts (truncated or padded object)";
        goto out_bad;
    }
    out->version = version;
    memcpy(out->object_id, f + 4, 16);
    out->created_at_ms = (int64_t)store__rd64(f + 20);
    out->nchunks = n;
    out->chunks = chunks;
    out->footer_offset = footer_offset;
    out->object_size = object_size;
    return 0;
out_bad:
    free(chunks);
    return -EBADMSG;
}

int store_chunk_decode(const struct store_chunk *c, const uint8_t *stored, size_t len,
                       size_t max_raw, uint8_t **out, size_t *out_len, const char **why)
{
    if (len != c->stored_len) {
        *why = "chunk has the wrong length (truncated read?)";
        return -EBADMSG;
    }
    if (kp_crc32c(0, stored, len) != c->crc) {
        *why = "chunk CRC32C mismatch (corrupted)";
        return -EBADMSG;
    }
    if (c->raw_len > max_raw) {
        *why = "chunk is larger than the caller's limit";
        return -EFBIG;
    }
    uint8_t *buf = kp_xmalloc(c->raw_len == 0 ? 1 : c->raw_len);
    if (c->codec == STORE_CODEC_NONE) {
        memcpy(buf, stored, len);
    } else if (c->codec == STORE_CODEC_ZSTD) {
        unsigned long long fsz = ZSTD_getFrameContentSize(stored, len);
        if (fsz != c->raw_len) {
            free(buf);
            *why = "zstd frame size does not match the raw length";
            return -EBADMSG;
        }
        size_t n = ZSTD_decompress(buf, c->raw_len, stored, len);
        if (ZSTD_isError(n) || n != c->raw_len) {
            free(buf);
            *why = "zstd frame does not decode to the raw length";
            return -EBADMSG;
        }
    } else {
        free(buf);
        *why = "unknown codec";
        return -EBADMSG;
    }
    *out = buf;
    *out_len = c->raw_len;
    return 0;
}

static void store__obj_read_done(struct store_obj_read *r, int err, const char *prefix,
                                 const char *detail)
{
    r->err = err;
    if (err != 0) {
        snprintf(r->msg, sizeof(r->msg), "%.40s%.200s", prefix, detail);
    }
    free(r->key_);
    r->key_ = NULL;
    r->cb(r);
}

static void store__obj_footer_cb(struct store_req *req)
{
    struct store_obj_read *r = req->data;
    if (req->err != 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "%s", req->msg);
        int err = req->err;
        store_req_cleanup(req);
        store__obj_read_done(r, err, "reading the footer: ", msg);
        return;
    }
    size_t need = 0;
    const char *why = NULL;
    int rc = store_footer_parse(req->body, req->body_len, req->size, &r->footer, &need, &why);
    store_req_cleanup(req);
    if (rc == -ENOBUFS && need <= req->size) {
        req->data = r;
        req->timeout_ms = r->timeout_ms;
        rc = store_get_tail(r->store_, req, r->key_, need, store__obj_footer_cb);
        if (rc == 0) {
            return;
        }
        why = "could not request the footer";
    }
    if (rc == -ENOBUFS) {
        rc = -EBADMSG;
    }
    store__obj_read_done(r, rc, "", rc == 0 ? "" : why);
}

int store_obj_read_footer(struct store *s, struct store_obj_read *r, const char *key,
                          store_obj_read_cb cb)
{
    r->cb = cb;
    r->err = 0;
    r->msg[0] = '\0';
    memset(&r->footer, 0, sizeof(r->footer));
    r->raw = NULL;
    r->raw_len = 0;
    r->store_ = s;
    memset(&r->req_, 0, sizeof(r->req_));
    r->req_.data = r;
    r->req_.timeout_ms = r->timeout_ms;
    r->key_ = kp_xstrdup(key);
    int rc = store_get_tail(s, &r->req_, key, STORE__OBJ_TAIL_GUESS, store__obj_footer_cb);
    if (rc < 0) {
        free(r->key_);
        r->key_ = NULL;
    }
    return rc;
}

static uv_loop_t *store__obj_loop(struct store *s)
{
    return s->loop;
}

static void store__obj_decode_work(uv_work_t *w)
{
    struct store_obj_read *r = w->data;
    r->why_ = NULL;
    r->decode_rc_ = store_chunk_decode(&r->chunk_, r->req_.body, r->req_.body_len, r->max_raw_,
                                       &r->raw, &r->raw_len, &r->why_);
}

static void store__obj_decode_after(uv_work_t *w, int status)
{
    struct store_obj_read *r = w->data;
    store_req_cleanup(&r->req_);
    int rc = status < 0 ? status : r->decode_rc_;
    store__obj_read_done(r, rc, "", rc == 0 ? "" : (r->why_ != NULL ? r->why_ : "cancelled"));
}

static void store__obj_chunk_cb(struct store_req *req)
{
    struct store_obj_read *r = req->data;
    if (req->err != 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "%s", req->msg);
        int err = req->err;
        store_req_cleanup(req);
        store__obj_read_done(r, err, "reading a chunk: ", msg);
        return;
    }
    if (req->body_len > STORE_OBJ_DECODE_ON_LOOP_MAX) {
        r->work_.data = r;
        if (uv_queue_work(store__obj_loop(r->store_), &r->work_, store__obj_decode_work,
                          store__obj_decode_after) == 0) {
            return;
        }
    }
    const char *why = NULL;
    int rc = store_chunk_decode(&r->chunk_, req->body, req->body_len, r->max_raw_, &r->raw,
                                &r->raw_len, &why);
    store_req_cleanup(req);
    store__obj_read_done(r, rc, "", rc == 0 ? "" : why);
}

int store_obj_read_chunk(struct store *s, struct store_obj_read *r, const char *key,
                         const struct store_chunk *c, size_t max_raw, store_obj_read_cb cb)
{
    if (c->stored_len == 0) {
        return -EINVAL;
    }
    r->cb = cb;
    r->err = 0;
    r->msg[0] = '\0';
    memset(&r->footer, 0, sizeof(r->footer));
    r->raw = NULL;
    r->raw_len = 0;
    r->store_ = s;
    r->chunk_ = *c;
    r->max_raw_ = max_raw;
    memset(&r->req_, 0, sizeof(r->req_));
    r->req_.data = r;
    r->req_.timeout_ms = r->timeout_ms;
    r->key_ = kp_xstrdup(key);
    int rc = store_get(s, &r->req_, key, c->offset, c->stored_len, store__obj_chunk_cb);
    if (rc < 0) {
        free(r->key_);
        r->key_ = NULL;
    }
    return rc;
}

void store_obj_read_cleanup(struct store_obj_read *r)
{
    store_footer_free(&r->footer);
    free(r->raw);
    r->raw = NULL;
    r->raw_len = 0;
}
