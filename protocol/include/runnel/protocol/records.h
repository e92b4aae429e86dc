/*
 * Kafka record batches, format v2 (magic 2): parse and validate batch headers, walk a buffer of
 * concatenated batches (a Produce `records` field, a fetched or stored chunk), iterate the
 * records and headers inside a batch (decompressing first when the batch is compressed), build
 * batches (control markers, tests), and the in-place edits a broker makes: base offset, leader
 * epoch, LogAppendTime.
 *
 * Batch layout (big-endian; offsets in bytes from the start of the batch):
 *    0 baseOffset i64       8 batchLength i32 (bytes after this field)   12 partitionLeaderEpoch
 * i32 16 magic i8 (2)        17 crc u32 (CRC-32C of bytes 21..end)         21 attributes i16 23
 * lastOffsetDelta i32 27 baseTimestamp i64   35 maxTimestamp i64    43 producerId i64 51
 * producerEpoch i16   53 baseSequence i32    57 recordCount i32     61 records... Record: length
 * varint, attributes i8, timestampDelta varlong, offsetDelta varint, keyLength varint (-1 null),
 * key, valueLength varint (-1 null), value, headerCount varint, headers: keyLength varint (>= 0),
 * key, valueLength varint (-1 null), value. All varints here are zigzag-encoded.
 *
 * Zero copy: every key, value and header is a view into the caller's buffer, or into the
 * iterator's decompressed buffer for compressed batches (valid until kp_record_iter_free()).
 * Nothing here allocates except decompression (capped by the caller) and the batch builder.
 *
 * Errors: functions return 0 (or 1 for "got one" from iterators) or a negative errno, and fill a
 * `struct kp_batch_err` with a static description and the Kafka error code to answer with:
 * CORRUPT_MESSAGE for size, CRC and decompression problems of the batch, INVALID_RECORD for
 * problems inside records or with rules Kafka applies to produced batches.
 */
#ifndef RUNNEL_PROTOCOL_RECORDS_H
#define RUNNEL_PROTOCOL_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runnel/protocol/codec.h"

#define KP_BATCH_HEADER_SIZE 61  /* bytes before the first record */
#define KP_BATCH_LOG_OVERHEAD 12 /* baseOffset + batchLength: not counted in batchLength */
#define KP_BATCH_CRC_START 21    /* first byte covered by the CRC (attributes) */
#define KP_BATCH_MAGIC_V2 2

/* Attribute bits. */
#define KP_ATTR_CODEC_MASK 0x07      /* enum kp_codec */
#define KP_ATTR_LOG_APPEND_TIME 0x08 /* timestamps are broker append times */
#define KP_ATTR_TRANSACTIONAL 0x10
#define KP_ATTR_CONTROL 0x20        /* transaction markers */
#define KP_ATTR_DELETE_HORIZON 0x40 /* baseTimestamp holds the delete horizon (compaction) */

/* Control record types (key: int16 version 0, int16 type). */
#define KP_CONTROL_ABORT 0
#define KP_CONTROL_COMMIT 1

/* Flags for kp_batch_parse() and the batch iterator. */
/* Do not verify the CRC (it was checked before). */
#define KP_BATCH_SKIP_CRC 0x01
/*
 * Kafka's rules for batches from producers: recordCount > 0, recordCount == lastOffsetDelta + 1,
 * no control batches. (Kafka also wants exactly one batch per partition in Produce v3+; counting
 * them is the handler's job.)
 */
#define KP_BATCH_PRODUCE 0x02
/* Iterator only: a batch cut off by the end of the buffer ends the walk quietly (fetched data). */
#define KP_BATCH_PARTIAL_TAIL 0x04

/* Flags for kp_batch_validate_records(). */
#define KP_RECORDS_REQUIRE_KEY 0x100 /* every record needs a non-null key (compacted topics) */

/* Why a batch or record was refused. */
struct kp_batch_err {
    int16_t code;    /* Kafka error code to answer with (enum kp_error), 0 when no error */
    const char *why; /* static description, NULL when no error */
    size_t offset;   /* byte offset of the failing batch within the iterated buffer */
};

/* A parsed batch header: the fields, plus views of the batch and its record bytes. */
struct kp_batch {
    const uint8_t *ptr;             /* first byte of the batch (baseOffset) */
    size_t len;                     /* whole batch in bytes: 12 + batchLength */
    int64_t base_offset;            /* offset of the first record (the broker assigns it) */
    int32_t batch_length;           /* bytes after the batchLength field */
    int32_t partition_leader_epoch; /* set by the broker; -1 from producers */
    int8_t magic;                   /* always 2 after a successful parse */
    uint32_t crc;                   /* as stored */
    int16_t attributes;             /* KP_ATTR_* bits */
    int32_t last_offset_delta;      /* last record's offset minus base_offset */
    int64_t base_timestamp;         /* ms since the epoch (or the delete horizon) */
    int64_t max_timestamp;          /* ms since the epoch */
    int64_t producer_id;            /* -1 when not idempotent */
    int16_t producer_epoch;         /* -1 when not idempotent */
    int32_t base_sequence;          /* -1 when not idempotent */
    int32_t record_count;           /* records in the batch */
    const uint8_t *records;         /* record bytes (compressed as a whole when codec != 0) */
    size_t records_len;             /* bytes */
};

static inline int kp_batch_codec(const struct kp_batch *b)
{
    return b->attributes & KP_ATTR_CODEC_MASK;
}

static inline bool kp_batch_is_control(const struct kp_batch *b)
{
    return (b->attributes & KP_ATTR_CONTROL) != 0;
}

static inline bool kp_batch_is_transactional(const struct kp_batch *b)
{
    return (b->attributes & KP_ATTR_TRANSACTIONAL) != 0;
}

/* Offset of the last record the batch covers. */
static inline int64_t kp_batch_last_offset(const struct kp_batch *b)
{
    return b->base_offset + b->last_offset_delta;
}

/*
 * Parses and checks the batch at the start of `buf` (which may hold more bytes after it).
 * Checks: at least 61 bytes, batchLength >= 49 and within `len`, magic 2, CRC-32C (unless
 * KP_BATCH_SKIP_CRC), codec 0..4, recordCount >= 0 and lastOffsetDelta >= recordCount - 1, an
 * uncompressed batch has room for recordCount records, and the KP_BATCH_PRODUCE rules.
 * Returns 0 and fills *out (views into buf), or -EBADMSG with *err filled (err->offset 0);
 * -ENODATA when `len` ends before the batch does (err filled as CORRUPT_MESSAGE too).
 */
int kp_batch_parse(const void *buf, size_t len, unsigned flags, struct kp_batch *out,
                   struct kp_batch_err *err);

/* Walks concatenated batches in a buffer. Initialise, then call next until it returns <= 0. */
struct kp_batch_iter {
    const uint8_t *buf; /* the whole buffer */
    size_t len;         /* bytes */
    size_t pos;         /* offset of the next batch */
    unsigned flags;     /* KP_BATCH_* */
    size_t tail;        /* bytes of a partial last batch skipped (KP_BATCH_PARTIAL_TAIL) */
};

void kp_batch_iter_init(struct kp_batch_iter *it, const void *buf, size_t len, unsigned flags);

/*
 * Returns 1 with the next batch in *out, 0 at the end of the buffer, or a negative errno with
 * *err filled (err->offset = the batch's position); after an error the walk is over. With
 * KP_BATCH_PARTIAL_TAIL a batch cut off by the end of the buffer ends the walk with 0 and
 * it->tail set to the bytes left over; without it, that is an error (-ENODATA).
 */
int kp_batch_iter_next(struct kp_batch_iter *it, struct kp_batch *out, struct kp_batch_err *err);

/* One record; key, value and header bytes are views (see the file comment for lifetimes). */
struct kp_record {
    int8_t attributes;       /* unused by Kafka, kept as read */
    int64_t timestamp_delta; /* ms relative to the batch's baseTimestamp */
    int32_t offset_delta;    /* relative to the batch's baseOffset */
    int64_t offset;          /* base_offset + offset_delta */
    int64_t timestamp;       /* ms: base_timestamp + delta, or maxTimestamp for LogAppendTime */
    struct kp_bytes key;     /* len -1 for null */
    struct kp_bytes value;   /* len -1 for null */
    int32_t header_count;
    const uint8_t *headers; /* encoded headers, already validated; walk with kp_header_next */
    size_t headers_len;     /* bytes */
};

/* A record header: key is never null; value len -1 for null. */
struct kp_header {
    struct kp_bytes key;
    struct kp_bytes value;
};

/* Walks the headers of one record: init with the record, then next until it returns 0. */
struct kp_header_iter {
    struct kp_reader r;
    int32_t left; /* headers not yet returned */
};

void kp_header_iter_init(struct kp_header_iter *it, const struct kp_record *rec);

/* Returns 1 with the next header in *out, 0 when there are no more. Never fails on headers
 * produced by kp_record_iter_next() (they were validated there). */
int kp_header_next(struct kp_header_iter *it, struct kp_header *out);

struct kp_record_iter {
    struct kp_reader r;     /* over the (decompressed) record bytes */
    int64_t base_offset;    /* from the batch header */
    int64_t base_timestamp; /* ms */
    int64_t max_timestamp;  /* ms */
    bool log_append_time;   /* record timestamps are max_timestamp */
    int32_t count;          /* recordCount from the header */
    int32_t index;          /* records returned so far */
    uint8_t *owned;         /* decompressed bytes (malloc), or NULL */
    size_t owned_len;       /* bytes */
};

/*
 * Prepares to iterate the records of `b`, decompressing first when the batch is compressed
 * (output capped at `max_decompressed` bytes: -EFBIG beyond it, CORRUPT_MESSAGE). Returns 0, or
 * a negative errno with *err filled; the iterator needs kp_record_iter_free() only after 0.
 * `b` and its buffer must outlive the iterator for uncompressed batches.
 */
int kp_record_iter_init(struct kp_record_iter *it, const struct kp_batch *b,
                        size_t max_decompressed, struct kp_batch_err *err);

/*
 * Returns 1 with the next record, 0 after the last one (recordCount reached and no bytes left
 * over), or -EBADMSG with *err filled (INVALID_RECORD: bad varint, a length past the record's
 * end or below -1, negative header count or header key length, record length that does not
 * match its fields, fewer records than recordCount, bytes after the last record).
 */
int kp_record_iter_next(struct kp_record_iter *it, struct kp_record *out, struct kp_batch_err *err);

/* Releases the decompressed buffer; the iterator's records become invalid. Idempotent. */
void kp_record_iter_free(struct kp_record_iter *it);

/*
 * Full validation of a parsed batch: decodes every record (decompressing with the cap) and
 * checks that there are exactly recordCount of them, offset deltas strictly increase within
 * [0, lastOffsetDelta] (with KP_BATCH_PRODUCE: delta == index, as Kafka requires of producers),
 * and keys are present with KP_RECORDS_REQUIRE_KEY. Flags: KP_BATCH_PRODUCE,
 * KP_RECORDS_REQUIRE_KEY. Returns 0 or a negative errno with *err filled.
 */
int kp_batch_validate_records(const struct kp_batch *b, unsigned flags, size_t max_decompressed,
                              struct kp_batch_err *err);

/* A record to put in a batch. Views; copied into the output by the builder. */
struct kp_record_in {
    struct kp_bytes key;             /* len -1 for null */
    struct kp_bytes value;           /* len -1 for null */
    int64_t timestamp;               /* ms since the epoch */
    const struct kp_header *headers; /* header_count entries; keys must not be null */
    int32_t header_count;
};

/* Header fields of a batch to build. */
struct kp_batch_spec {
    int64_t base_offset;            /* usually 0 from producers; the broker rewrites it */
    int32_t partition_leader_epoch; /* -1 unless the broker writes the batch */
    int16_t attributes;             /* codec in bits 0-2 plus KP_ATTR_* flags */
    int64_t producer_id;            /* -1 when not idempotent */
    int16_t producer_epoch;         /* -1 when not idempotent */
    int32_t base_sequence;          /* -1 when not idempotent */
    int level;                      /* compression level, KP_LEVEL_DEFAULT for the codec default */
};

/* Fills `spec` with a plain batch: offset 0, epoch -1, no codec, no producer id. */
void kp_batch_spec_init(struct kp_batch_spec *spec);

/*
 * Builds a batch of `n` (>= 1) records with offset deltas 0..n-1, baseTimestamp = the first
 * record's timestamp, maxTimestamp = the largest, compressed with the codec in spec->attributes,
 * and a correct CRC. On success returns 0 and sets *out (free() it) and *out_len. Returns
 * -EINVAL for n < 1, a null header key, a length over INT32_MAX or an unknown codec; -EIO if
 * compression fails.
 */
int kp_batch_build(const struct kp_batch_spec *spec, const struct kp_record_in *recs, size_t n,
                   uint8_t **out, size_t *out_len);

/*
 * Builds a transaction marker: a transactional control batch with one record whose key is
 * (version 0, KP_CONTROL_COMMIT or KP_CONTROL_ABORT) and whose value is (version 0,
 * coordinator_epoch). baseSequence is -1. Same ownership and errors as kp_batch_build().
 */
int kp_control_batch_build(int64_t base_offset, int64_t producer_id, int16_t producer_epoch,
                           int16_t type, int32_t coordinator_epoch, int64_t timestamp,
                           uint8_t **out, size_t *out_len);

/*
 * Reads a control record's type from its key (4 bytes: version, type). Returns 0 and *type, or
 * -EBADMSG when the key is null or too short.
 */
int kp_control_record_type(const struct kp_record *rec, int16_t *type);

/* Overwrites baseOffset in place (not covered by the CRC). `batch` points at a parsed batch. */
void kp_batch_set_base_offset(uint8_t *batch, int64_t base_offset);

/* Overwrites partitionLeaderEpoch in place (not covered by the CRC). */
void kp_batch_set_leader_epoch(uint8_t *batch, int32_t epoch);

/*
 * Marks the batch as LogAppendTime: sets attribute bit 3 and maxTimestamp = `timestamp` and
 * recomputes the CRC. `len` is the batch's size; returns 0, or -EINVAL when the buffer is too
 * short to be a batch.
 */
int kp_batch_set_log_append_time(uint8_t *batch, size_t len, int64_t timestamp);

#endif
