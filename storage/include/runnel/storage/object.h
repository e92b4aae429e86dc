/*
 * Runnel object format v1: what the agent writes to the store per flush, and how readers get a
 * partition's data back with one ranged GET.
 *
 *   chunk 0 | chunk 1 | ... | footer | footer_len u32 | "RNL1"
 *
 * A chunk holds one partition's record batches in arrival order, either as one zstd frame
 * (codec 1) or as they are (codec 0: every batch was already compressed by the client, or zstd
 * did not make it smaller). The footer (all integers big-endian):
 *
 *   u16 version (1) | u16 flags (0) | object id [16] | i64 created-at (ms since the epoch)
 *   | u32 chunk count | chunk count x 65-byte entries | u32 CRC32C of the footer bytes before it
 *   entry: topic id [16] | i32 partition | u64 byte offset | u32 stored length | u32 raw length
 *          | u8 codec | u32 record count | u32 batch count | i64 first timestamp
 *          | i64 last timestamp | u32 CRC32C of the chunk's stored bytes
 *
 * footer_len counts the footer including its CRC. The writer half (builder, seal) does no I/O and
 * touches only its own builder, so it is safe to run on any thread, one thread per builder at a
 * time; store_obj_seal_async() runs the seal on libuv's thread pool. The reader half parses
 * footers and decodes chunks from buffers, and fetches them through a struct store.
 */
#ifndef RUNNEL_STORAGE_OBJECT_H
#define RUNNEL_STORAGE_OBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "runnel/storage/store.h"

#define STORE_OBJ_MAGIC "RNL1"
#define STORE_OBJ_VERSION 1
#define STORE_OBJ_ENTRY_SIZE 65                    /* bytes per chunk entry in the footer */
#define STORE_OBJ_FOOTER_FIXED 36                  /* footer bytes besides the entries */
#define STORE_OBJ_TRAILER 8                        /* footer_len + magic */
#define STORE_OBJ_MAX_FOOTER (64u << 20)           /* largest footer a reader accepts */
#define STORE_OBJ_MAX_CHUNK_RAW (1024u << 20)      /* largest raw chunk a writer produces */
#define STORE_OBJ_DECODE_ON_LOOP_MAX (64u * 1024u) /* larger chunks decode on the thread pool */

enum store_codec {
    STORE_CODEC_NONE = 0, /* stored bytes are the batches */
    STORE_CODEC_ZSTD = 1, /* stored bytes are one zstd frame of the batches */
};

/* One chunk's footer entry. */
struct store_chunk {
    uint8_t topic_id[16];  /* topic UUID */
    int32_t partition;     /* partition index */
    uint64_t offset;       /* byte offset of the chunk in the object */
    uint32_t stored_len;   /* bytes stored */
    uint32_t raw_len;      /* bytes after decompression */
    uint8_t codec;         /* enum store_codec */
    uint32_t record_count; /* records in all batches */
    uint32_t batch_count;  /* record batches */
    int64_t first_ts;      /* smallest first timestamp of its batches (ms) */
    int64_t last_ts;       /* largest max timestamp of its batches (ms) */
    uint32_t crc;          /* CRC32C of the stored bytes */
};

struct store_footer {
    uint16_t version;           /* STORE_OBJ_VERSION */
    uint8_t object_id[16];      /* writer-chosen unique id */
    int64_t created_at_ms;      /* ms since the epoch */
    uint32_t nchunks;           /* entries in chunks */
    struct store_chunk *chunks; /* malloc'd; free with store_footer_free() */
    uint64_t footer_offset;     /* where the footer starts (= end of the last chunk) */
    uint64_t object_size;       /* total bytes of the object */
};

/* What the writer needs to know about one record batch. */
struct store_batch_info {
    uint32_t records; /* records in the batch */
    int64_t first_ts; /* base timestamp (ms) */
    int64_t last_ts;  /* max timestamp (ms) */
    bool compressed;  /* the client compressed the records (attributes & 7 != 0) */
};

/*
 * Reads the info from a Kafka record batch v2 header (magic 2). Returns 0, or -EINVAL if `len`
 * is too short for a header or the magic is not 2. Does not check the batch CRC.
 */
int store_batch_info_parse(const void *batch, size_t len, struct store_batch_info *out);

struct store_obj_builder;

/*
 * Creates an empty builder. `zstd_level` 1..19 (0 means 1); `object_id` is copied. The caller
 * owns the builder and frees it with store_obj_builder_free().
 */
struct store_obj_builder *store_obj_builder_new(const uint8_t object_id[16], int64_t created_at_ms,
                                                int zstd_level);

/*
 * Appends one batch (copied) to its partition's chunk. Returns 0, -EINVAL for bad arguments, or
 * -EFBIG if the partition's chunk would exceed STORE_OBJ_MAX_CHUNK_RAW.
 */
int store_obj_builder_add(struct store_obj_builder *b, const uint8_t topic_id[16],
                          int32_t partition, const void *batch, size_t len,
                          const struct store_batch_info *info);

/* Raw bytes appended so far. */
size_t store_obj_builder_bytes(const struct store_obj_builder *b);

/* Number of chunks (distinct topic/partition pairs) so far. */
size_t store_obj_builder_chunks(const struct store_obj_builder *b);

/*
 * Empties the builder for the next object (new id and time) but keeps its partition buffers, so
 * a long-lived writer does not pay for fresh memory (page faults) on every object.
 */
void store_obj_builder_reset(struct store_obj_builder *b, const uint8_t object_id[16],
                             int64_t created_at_ms);

void store_obj_builder_free(struct store_obj_builder *b);

/*
 * Produces the object: compresses each chunk, checksums it, appends the footer. On success
 * stores a malloc'd buffer in *out (caller frees) and its length in *out_len, and, if footer is
 * not NULL, the footer (free with store_footer_free()). Returns 0 or -ENOMEM/-EIO (zstd failed).
 * Thread-safe with respect to other builders; the builder is unchanged and may be sealed again.
 */
int store_obj_seal(const struct store_obj_builder *b, uint8_t **out, size_t *out_len,
                   struct store_footer *footer);

struct store_obj_seal_req;
typedef void (*store_obj_seal_cb)(struct store_obj_seal_req *req);

/* A seal running on libuv's thread pool. */
struct store_obj_seal_req {
    uv_work_t work;                    /* private */
    const struct store_obj_builder *b; /* the builder (must stay alive until the callback) */
    store_obj_seal_cb cb;              /* runs on the loop thread */
    void *data;                        /* free for the caller */
    int err;                           /* result of store_obj_seal() */
    uint8_t *out;                      /* the object (caller frees) */
    size_t out_len;                    /* its bytes */
    struct store_footer footer;        /* its footer (store_footer_free) */
};

/* Starts store_obj_seal() on the thread pool; the callback runs on `loop`. Returns 0 or the
 * negative error of uv_queue_work (then the callback will not run). */
int store_obj_seal_async(uv_loop_t *loop, struct store_obj_seal_req *req,
                         const struct store_obj_builder *b, store_obj_seal_cb cb);

void store_footer_free(struct store_footer *f);

/*
 * Parses the footer from the last `tail_len` bytes of an object of `object_size` bytes.
 * Returns 0; -ENOBUFS when the tail is too short (then *need says how many tail bytes are
 * needed); -EBADMSG when the bytes are not a valid v1 object (truncated, bad magic, bad CRC,
 * inconsistent entries), with *why describing it.
 */
int store_footer_parse(const uint8_t *tail, size_t tail_len, uint64_t object_size,
                       struct store_footer *out, size_t *need, const char **why);

/*
 * Verifies and decodes one chunk's stored bytes: length and CRC32C must match the entry, and the
 * raw size must be at most `max_raw`. On success stores a malloc'd buffer with the record batches
 * in *out (caller frees) and returns 0; otherwise -EBADMSG (corrupt) or -EFBIG (over max_raw),
 * with *why set.
 */
int store_chunk_decode(const struct store_chunk *c, const uint8_t *stored, size_t len,
                       size_t max_raw, uint8_t **out, size_t *out_len, const char **why);

struct store_obj_read;
typedef void (*store_obj_read_cb)(struct store_obj_read *r);

/* An asynchronous footer or chunk read. */
struct store_obj_read {
    store_obj_read_cb cb;       /* completion, on the loop thread */
    void *data;                 /* free for the caller */
    uint32_t timeout_ms;        /* per store request; 0 = the store's default */
    int err;                    /* 0, a store error, -EBADMSG (corrupt), -EFBIG */
    char msg[256];              /* detail */
    struct store_footer footer; /* footer reads: the footer */
    uint8_t *raw;               /* chunk reads: decoded batches (malloc) */
    size_t raw_len;             /* bytes in raw */

    struct store *store_;      /* private */
    struct store_req req_;     /* private */
    char *key_;                /* private */
    struct store_chunk chunk_; /* private */
    size_t max_raw_;           /* private */
    uv_work_t work_;           /* private: off-loop decode of large chunks */
    int decode_rc_;            /* private */
    const char *why_;          /* private */
};

/* Fetches and parses the footer of `key` (one GET of the tail; two if the footer is large). */
int store_obj_read_footer(struct store *s, struct store_obj_read *r, const char *key,
                          store_obj_read_cb cb);

/*
 * Fetches one chunk with one ranged GET, verifies its CRC and decompresses it (<= max_raw).
 * Chunks of more than STORE_OBJ_DECODE_ON_LOOP_MAX stored bytes are verified and decompressed on
 * libuv's thread pool so the loop is not held for milliseconds.
 */
int store_obj_read_chunk(struct store *s, struct store_obj_read *r, const char *key,
                         const struct store_chunk *c, size_t max_raw, store_obj_read_cb cb);

/* Frees what a read returned (footer, raw). */
void store_obj_read_cleanup(struct store_obj_read *r);

#endif
