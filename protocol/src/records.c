/*
 * Record batch v2: header parsing and validation, record and header iteration, the batch
 * builder and the in-place edits a broker makes (see runnel/protocol/records.h).
 *
 * Everything that comes from the wire is read through struct kp_reader, so a length or varint
 * that runs past its container becomes an error, never an out-of-bounds read. Each record is
 * decoded through a sub-reader bounded by the record's own length, so a record cannot borrow
 * bytes from its neighbour, and a record whose fields do not fill its length exactly is refused.
 */
#include "runnel/protocol/records.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/protocol/compress.h"
#include "runnel/protocol/crc32c.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/mem.h"

/* The smallest encodings: record body = 6 one-byte fields; whole record 7; header 2. */
#define MIN_RECORD_BODY 6
#define MIN_RECORD_SIZE 7
#define MIN_HEADER_SIZE 2

static int fail(struct kp_batch_err *err, int16_t code, const char *why, int rc)
{
    if (err != NULL) {
        err->code = code;
        err->why = why;
    }
    return rc;
}

static void err_clear(struct kp_batch_err *err)
{
    if (err != NULL) {
        err->code = 0;
        err->why = NULL;
        err->offset = 0;
    }
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)(v >> 32));
    wr32(p + 4, (uint32_t)v);
}

int kp_batch_parse(const void *buf, size_t len, unsigned flags, struct kp_batch *out,
                   struct kp_batch_err *err)
{
    const uint8_t *p = buf;
    err_clear(err);
    memset(out, 0, sizeof(*out));
    if (len < 17) {
        return fail(err, KP_ERROR_CORRUPT_MESSAGE, "input ends inside the batch header", -ENODATA);
    }
    int32_t batch_length = (int32_t)rd32(p + 8);
    int8_t magic = (int8_t)p[16];
    if (magic != KP_BATCH_MAGIC_V2) {
        if (magic == 0 || magic == 1) {
            return fail(err, KP_ERROR_INVALID_RECORD,
                        "message format v0/v1 (magic 0 or 1) is not supported", -EBADMSG);
        }
        return fail(err, KP_ERROR_CORRUPT_MESSAGE, "unknown record batch magic", -EBADMSG);
    }
    if (batch_length < KP_BATCH_HEADER_SIZE - KP_BATCH_LOG_OVERHEAD) {
        return fail(err, KP_ERROR_CORRUPT_MESSAGE, "batchLength is smaller than a batch header",
                    -EBADMSG);
    }
    if ((size_t)batch_length > len - KP_BATCH_LOG_OVERHEAD) {
        return fail(err, KP_ERROR_CORRUPT_MESSAGE, "batch extends past the end of the input",
                    -ENODATA);
    }
    out->ptr = p;
    out->len = KP_BATCH_LOG_OVERHEAD + (size_t)batch_length;
    out->base_offset = (int64_t)rd64(p);
    out->batch_length = batch_length;
    out->partition_leader_epoch = (int32_t)rd32(p + 12);
    out->magic = magic;
    out->crc = rd32(p + 17);
    out->attributes = (int16_t)rd16(p + 21);
    out->last_offset_delta = (int32_t)rd32(p + 23);
    out->base_timestamp = (int64_t)rd64(p + 27);
    out->max_timestamp = (int64_t)rd64(p + 35);
    out->producer_id = (int64_t)rd64(p + 43);
    out->producer_epoch = (int16_t)rd16(p + 51);
    out->base_sequence = (int32_t)rd32(p + 53);
    out->record_count = (int32_t)rd32(p + 57);
    out->records = p + KP_BATCH_HEADER_SIZE;
    out->records_len = out->len - KP_BATCH_HEADER_SIZE;

    if (!(flags & KP_BATCH_SKIP_CRC) &&
        kp_crc32c(0, p + KP_BATCH_CRC_START, out->len - KP_BATCH_CRC_START) != out->crc) {
        return fail(err, KP_ERROR_CORRUPT_MESSAGE, "record batch CRC-32C mismatch", -EBADMSG);
    }
    if (kp_batch_codec(out) > 4) {
        return fail(err, KP_ERROR_CORRUPT_MESSAGE, "unknown compression codec in attributes",
                    -EBADMSG);
    }
    if (out->record_count < 0) {
        return fail(err, KP_ERROR_INVALID_RECORD, "negative recordCount", -EBADMSG);
    }
    if (out->last_offset_delta < out->record_count - 1) {
        return fail(err, KP_ERROR_INVALID_RECORD, "lastOffsetDelta is below recordCount - 1",
                    -EBADMSG);
    }
    int64_t last;
    if (__builtin_add_overflow(out->base_offset, (int64_t)out->last_offset_delta, &last)) {
        return fail(err, KP_ERROR_CORRUPT_MESSAGE, "baseOffset + lastOffsetDelta overflows",
                    -EBADMSG);
    }
    if (kp_batch_codec(out) == 0 &&
        (size_t)out->record_count > out->records_len / MIN_RECORD_SIZE) {
        return fail(err, KP_ERROR_INVALID_RECORD,
                    "recordCount is larger than the record bytes can hold", -EBADMSG);
    }
    if (flags & KP_BATCH_PRODUCE) {
        if (out->record_count == 0) {
            return fail(err, KP_ERROR_INVALID_RECORD, "produced batch has no records", -EBADMSG);
        }
        if ((int64_t)out->last_offset_delta + 1 != out->record_count) {
            return fail(err, KP_ERROR_INVALID_RECORD,
                        "recordCount does not match lastOffsetDelta + 1", -EBADMSG);
        }
        if (kp_batch_is_control(out)) {
            return fail(err, KP_ERROR_INVALID_RECORD, "producers may not write control batches",
                        -EBADMSG);
        }
    }
    return 0;
}

void kp_batch_iter_init(struct kp_batch_iter *it, const void *buf, size_t len, unsigned flags)
{
    it->buf = buf;
    it->len = buf != NULL ? len : 0;
    it->pos = 0;
    it->flags = flags;
    it->tail = 0;
}

int kp_batch_iter_next(struct kp_batch_iter *it, struct kp_batch *out, struct kp_batch_err *err)
{
    err_clear(err);
    if (it->pos >= it->len) {
        return 0;
    }
    int rc = kp_batch_parse(it->buf + it->pos, it->len - it->pos, it->flags, out, err);
    if (rc == -ENODATA && (it->flags & KP_BATCH_PARTIAL_TAIL)) {
        err_clear(err);
        it->tail = it->len - it->pos;
        it->pos = it->len;
        return 0;
    }
    if (rc != 0) {
        if (err != NULL) {
            err->offset = it->pos;
        }
        it->pos = it->len;
        return rc;
    }
    it->pos += out->len;
    return 1;
}

int kp_record_iter_init(struct kp_record_iter *it, const struct kp_batch *b,
                        size_t max_decompressed, struct kp_batch_err *err)
{
    err_clear(err);
    memset(it, 0, sizeof(*it));
    it->base_offset = b->base_offset;
    it->base_timestamp = b->base_timestamp;
    it->max_timestamp = b->max_timestamp;
    it->log_append_time = (b->attributes & KP_ATTR_LOG_APPEND_TIME) != 0;
    it->count = b->record_count;
    int codec = kp_batch_codec(b);
    if (codec == KP_CODEC_NONE) {
        kp_reader_init(&it->r, b->records, b->records_len);
        return 0;
    }
    const char *why = NULL;
    int rc = kp_decompress(codec, b->records, b->records_len, max_decompressed, &it->owned,
                           &it->owned_len, &why);
    if (rc != 0) {
        return fail(err, KP_ERROR_CORRUPT_MESSAGE, why, rc);
    }
    kp_reader_init(&it->r, it->owned, it->owned_len);
    return 0;
}

void kp_record_iter_free(struct kp_record_iter *it)
{
    free(it->owned);
    it->owned = NULL;
    it->owned_len = 0;
}

static const char *record_why(const struct kp_reader *r)
{
    return r->err == KP_ERR_SHORT ? "a record field runs past the record's length" : r->why;
}

/* Reads a key/value style length: -1 for null, else that many bytes. */
static struct kp_bytes read_blob(struct kp_reader *r, bool nullable)
{
    int32_t n = kp_read_varint(r);
    if (r->err != 0) {
        return KP_BYTES_NULL;
    }
    if (n < 0) {
        if (n == -1 && nullable) {
            return KP_BYTES_NULL;
        }
        kp_reader_fail(r, KP_ERR_INVALID, "negative length in a record");
        return KP_BYTES_NULL;
    }
    const uint8_t *p = kp_read_raw(r, (size_t)n);
    if (p == NULL) {
        return KP_BYTES_NULL;
    }
    return (struct kp_bytes){p, n};
}

int kp_record_iter_next(struct kp_record_iter *it, struct kp_record *out, struct kp_batch_err *err)
{
    struct kp_reader *r = &it->r;
    err_clear(err);
    if (r->err != 0) {
        return fail(err, KP_ERROR_INVALID_RECORD, r->why, -EBADMSG);
    }
    if (it->index >= it->count) {
        if (kp_reader_remaining(r) != 0) {
            kp_reader_fail(r, KP_ERR_INVALID, "bytes left after recordCount records");
            return fail(err, KP_ERROR_INVALID_RECORD, r->why, -EBADMSG);
        }
        return 0;
    }
    if (kp_reader_remaining(r) == 0) {
        kp_reader_fail(r, KP_ERR_SHORT, "fewer records than recordCount");
        return fail(err, KP_ERROR_INVALID_RECORD, r->why, -EBADMSG);
    }
    int32_t length = kp_read_varint(r);
    if (r->err != 0) {
        return fail(err, KP_ERROR_INVALID_RECORD, "bad record length varint", -EBADMSG);
    }
    if (length < MIN_RECORD_BODY || (size_t)length > kp_reader_remaining(r)) {
        kp_reader_fail(r, KP_ERR_INVALID, "record length is out of range");
        return fail(err, KP_ERROR_INVALID_RECORD, r->why, -EBADMSG);
    }
    struct kp_reader sub;
    kp_reader_init(&sub, kp_read_raw(r, (size_t)length), (size_t)length);

    memset(out, 0, sizeof(*out));
    out->attributes = kp_read_i8(&sub);
    out->timestamp_delta = kp_read_varlong(&sub);
    out->offset_delta = kp_read_varint(&sub);
    out->key = read_blob(&sub, true);
    out->value = read_blob(&sub, true);
    out->header_count = kp_read_varint(&sub);
    if (sub.err == 0 && (out->header_count < 0 ||
                         (size_t)out->header_count > kp_reader_remaining(&sub) / MIN_HEADER_SIZE)) {
        kp_reader_fail(&sub, KP_ERR_INVALID, "header count is out of range");
    }
    out->headers = sub.p;
    for (int32_t i = 0; i < out->header_count && sub.err == 0; i++) {
        read_blob(&sub, false);
        read_blob(&sub, true);
    }
    if (sub.err == 0) {
        out->headers_len = (size_t)(sub.p - out->headers);
        if (kp_reader_remaining(&sub) != 0) {
            kp_reader_fail(&sub, KP_ERR_INVALID, "record length does not match its fields");
        }
    }
    if (sub.err == 0 &&
        __builtin_add_overflow(it->base_offset, (int64_t)out->offset_delta, &out->offset)) {
        kp_reader_fail(&sub, KP_ERR_INVALID, "record offset overflows");
    }
    if (sub.err == 0) {
        if (it->log_append_time) {
            out->timestamp = it->max_timestamp;
        } else if (__builtin_add_overflow(it->base_timestamp, out->timestamp_delta,
                                          &out->timestamp)) {
            kp_reader_fail(&sub, KP_ERR_INVALID, "record timestamp overflows");
        }
    }
    if (sub.err != 0) {
        const char *why = record_why(&sub);
        kp_reader_fail(r, KP_ERR_INVALID, why);
        memset(out, 0, sizeof(*out));
        return fail(err, KP_ERROR_INVALID_RECORD, why, -EBADMSG);
    }
    it->index++;
    return 1;
}

void kp_header_iter_init(struct kp_header_iter *it, const struct kp_record *rec)
{
    kp_reader_init(&it->r, rec->headers, rec->headers != NULL ? rec->headers_len : 0);
    it->left = rec->header_count > 0 ? rec->header_count : 0;
}

int kp_header_next(struct kp_header_iter *it, struct kp_header *out)
{
    if (it->left <= 0) {
        return 0;
    }
    out->key = read_blob(&it->r, false);
    out->value = read_blob(&it->r, true);
    if (it->r.err != 0) {
        it->left = 0;
        return -EBADMSG;
    }
    it->left--;
    return 1;
}

int kp_batch_validate_records(const struct kp_batch *b, unsigned flags, size_t max_decompressed,
                              struct kp_batch_err *err)
{
    struct kp_record_iter it;
    struct kp_record rec;
    int rc = kp_record_iter_init(&it, b, max_decompressed, err);
    if (rc != 0) {
        return rc;
    }
    int64_t prev = -1;
    int32_t index = 0;
    while ((rc = kp_record_iter_next(&it, &rec, err)) == 1) {
        if (flags & KP_BATCH_PRODUCE) {
            if (rec.offset_delta != index) {
                rc = fail(err, KP_ERROR_INVALID_RECORD, "record offset deltas are not 0..n-1",
                          -EBADMSG);
                break;
            }
        } else if (rec.offset_delta <= prev || rec.offset_delta > b->last_offset_delta) {
            rc = fail(err, KP_ERROR_INVALID_RECORD,
                      "record offset deltas do not increase within lastOffsetDelta", -EBADMSG);
            break;
        }
        if ((flags & KP_RECORDS_REQUIRE_KEY) && rec.key.len < 0) {
            rc = fail(err, KP_ERROR_INVALID_RECORD, "a record has no key (compacted topic)",
                      -EBADMSG);
            break;
        }
        prev = rec.offset_delta;
        index++;
    }
    if (rc == 0 && (flags & KP_BATCH_PRODUCE) && prev != b->last_offset_delta) {
        rc = fail(err, KP_ERROR_INVALID_RECORD, "last record's offset delta is not lastOffsetDelta",
                  -EBADMSG);
    }
    kp_record_iter_free(&it);
    return rc;
}

void kp_batch_spec_init(struct kp_batch_spec *spec)
{
    memset(spec, 0, sizeof(*spec));
    spec->partition_leader_epoch = -1;
    spec->producer_id = -1;
    spec->producer_epoch = -1;
    spec->base_sequence = -1;
    spec->level = KP_LEVEL_DEFAULT;
}

static size_t blob_size(struct kp_bytes b)
{
    return b.len < 0 ? kp_varint_size(-1) : kp_varint_size(b.len) + (size_t)b.len;
}

static void write_blob(struct kp_writer *w, struct kp_bytes b)
{
    if (b.len < 0) {
        kp_write_varint(w, -1);
        return;
    }
    kp_write_varint(w, b.len);
    kp_write_raw(w, b.ptr, (size_t)b.len);
}

/* Size of one record's body (everything after its length varint); 0 when not encodable. */
static size_t record_body_size(const struct kp_record_in *rec, int64_t ts_delta, int32_t index)
{
    size_t n = 1 + kp_varlong_size(ts_delta) + kp_varint_size(index) + blob_size(rec->key) +
               blob_size(rec->value) + kp_varint_size(rec->header_count);
    if (rec->header_count < 0 || (rec->header_count > 0 && rec->headers == NULL)) {
        return 0;
    }
    for (int32_t h = 0; h < rec->header_count; h++) {
        if (rec->headers[h].key.len < 0) {
            return 0; /* header keys cannot be null */
        }
        n += blob_size(rec->headers[h].key) + blob_size(rec->headers[h].value);
    }
    return n <= INT32_MAX ? n : 0;
}

int kp_batch_build(const struct kp_batch_spec *spec, const struct kp_record_in *recs, size_t n,
                   uint8_t **out, size_t *out_len)
{
    int codec = spec->attributes & KP_ATTR_CODEC_MASK;
    *out = NULL;
    *out_len = 0;
    if (n < 1 || n > INT32_MAX || codec > KP_CODEC_ZSTD) {
        return -EINVAL;
    }
    int64_t base_ts = recs[0].timestamp;
    int64_t max_ts = base_ts;
    size_t raw_len = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t delta;
        if (__builtin_sub_overflow(recs[i].timestamp, base_ts, &delta)) {
            return -EINVAL;
        }
        size_t body = record_body_size(&recs[i], delta, (int32_t)i);
        if (body == 0) {
            return -EINVAL;
        }
        raw_len += kp_varint_size((int32_t)body) + body;
        if (raw_len > INT32_MAX) {
            return -EINVAL;
        }
        if (recs[i].timestamp > max_ts) {
            max_ts = recs[i].timestamp;
        }
    }
    uint8_t *raw = kp_xmalloc(raw_len > 0 ? raw_len : 1);
    struct kp_writer w;
    kp_writer_init(&w, raw, raw_len);
    for (size_t i = 0; i < n; i++) {
        const struct kp_record_in *rec = &recs[i];
        int64_t delta = rec->timestamp - base_ts;
        kp_write_varint(&w, (int32_t)record_body_size(rec, delta, (int32_t)i));
        kp_write_i8(&w, 0);
        kp_write_varlong(&w, delta);
        kp_write_varint(&w, (int32_t)i);
        write_blob(&w, rec->key);
        write_blob(&w, rec->value);
        kp_write_varint(&w, rec->header_count);
        for (int32_t h = 0; h < rec->header_count; h++) {
            write_blob(&w, rec->headers[h].key);
            write_blob(&w, rec->headers[h].value);
        }
    }
    if (w.err != 0 || kp_writer_len(&w) != raw_len) {
        free(raw);
        return -EIO; /* a size computation bug, not an input condition */
    }
    const uint8_t *payload = raw;
    size_t payload_len = raw_len;
    uint8_t *packed = NULL;
    if (codec != KP_CODEC_NONE) {
        int rc = kp_compress(codec, spec->level, raw, raw_len, &packed, &payload_len);
        if (rc != 0) {
            free(raw);
            return rc;
        }
        payload = packed;
    }
    int rc = 0;
    if (payload_len > (size_t)INT32_MAX - (KP_BATCH_HEADER_SIZE - KP_BATCH_LOG_OVERHEAD)) {
        rc = -EINVAL;
        goto out_free;
    }
    size_t total = KP_BATCH_HEADER_SIZE + payload_len;
    uint8_t *batch = kp_xmalloc(total);
    wr64(batch, (uint64_t)spec->base_offset);
    wr32(batch + 8, (uint32_t)(total - KP_BATCH_LOG_OVERHEAD));
    wr32(batch + 12, (uint32_t)spec->partition_leader_epoch);
    batch[16] = KP_BATCH_MAGIC_V2;
    wr16(batch + 21, (uint16_t)spec->attributes);
    wr32(batch + 23, (uint32_t)(n - 1));
    wr64(batch + 27, (uint64_t)base_ts);
    wr64(batch + 35, (uint64_t)max_ts);
    wr64(batch + 43, (uint64_t)spec->producer_id);
    wr16(batch + 51, (uint16_t)spec->producer_epoch);
    wr32(batch + 53, (uint32_t)spec->base_sequence);
    wr32(batch + 57, (uint32_t)n);
    memcpy(batch + KP_BATCH_HEADER_SIZE, payload, payload_len);
    wr32(batch + 17, kp_crc32c(0, batch + KP_BATCH_CRC_START, total - KP_BATCH_CRC_START));
    *out = batch;
    *out_len = total;
out_free:
    free(packed);
    free(raw);
    return rc;
}

int kp_control_batch_build(int64_t base_offset, int64_t producer_id, int16_t producer_epoch,
                           int16_t type, int32_t coordinator_epoch, int64_t timestamp,
                           uint8_t **out, size_t *out_len)
{
    uint8_t key[4];
    uint8_t value[6];
    wr16(key, 0);
    wr16(key + 2, (uint16_t)type);
    wr16(value, 0);
    wr32(value + 2, (uint32_t)coordinator_epoch);
    struct kp_record_in rec = {
        .key = {key, sizeof(key)},
        .value = {value, sizeof(value)},
        .timestamp = timestamp,
    };
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    spec.base_offset = base_offset;
    spec.attributes = KP_ATTR_TRANSACTIONAL | KP_ATTR_CONTROL;
    spec.producer_id = producer_id;
    spec.producer_epoch = producer_epoch;
    return kp_batch_build(&spec, &rec, 1, out, out_len);
}

int kp_control_record_type(const struct kp_record *rec, int16_t *type)
{
    if (rec->key.len < 4 || rec->key.ptr == NULL) {
        return -EBADMSG;
    }
    *type = (int16_t)rd16(rec->key.ptr + 2);
    return 0;
}

void kp_batch_set_base_offset(uint8_t *batch, int64_t base_offset)
{
    wr64(batch, (uint64_t)base_offset);
}

void kp_batch_set_leader_epoch(uint8_t *batch, int32_t epoch)
{
    wr32(batch + 12, (uint32_t)epoch);
}

int kp_batch_set_log_append_time(uint8_t *batch, size_t len, int64_t timestamp)
{
    if (len < KP_BATCH_HEADER_SIZE) {
        return -EINVAL;
    }
    int32_t batch_length = (int32_t)rd32(batch + 8);
    if (batch_length < KP_BATCH_HEADER_SIZE - KP_BATCH_LOG_OVERHEAD ||
        (size_t)batch_length > len - KP_BATCH_LOG_OVERHEAD) {
        return -EINVAL;
    }
    size_t total = KP_BATCH_LOG_OVERHEAD + (size_t)batch_length;
    wr16(batch + 21, (uint16_t)(rd16(batch + 21) | KP_ATTR_LOG_APPEND_TIME));
    wr64(batch + 35, (uint64_t)timestamp);
    wr32(batch + 17, kp_crc32c(0, batch + KP_BATCH_CRC_START, total - KP_BATCH_CRC_START));
    return 0;
}
