/*
 * libFuzzer target for record batches: walks the input as concatenated batches, iterates every
 * record and header (decompressing with a 1 MiB cap), runs full validation and the in-place
 * LogAppendTime edit; also feeds the raw input to each decompressor. The first input byte picks
 * options (bit 0 skip the CRC so mutations reach the records, bit 1 Produce rules, bits 2-4 the
 * codec for the raw decompression pass); the rest is the data.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/protocol/compress.h"
#include "runnel/protocol/records.h"

#define CAP (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk_records(const struct kp_batch *b)
{
    struct kp_record_iter it;
    struct kp_record rec;
    struct kp_batch_err err;
    if (kp_record_iter_init(&it, b, CAP, &err) != 0) {
        return;
    }
    while (kp_record_iter_next(&it, &rec, &err) == 1) {
        struct kp_header_iter hi;
        struct kp_header h;
        int16_t type;
        kp_header_iter_init(&hi, &rec);
        while (kp_header_next(&hi, &h) == 1) {
            if (h.key.len < 0) {
                abort(); /* header keys are never null */
            }
        }
        if (kp_batch_is_control(b)) {
            kp_control_record_type(&rec, &type);
        }
        if (rec.key.len > 0 && (rec.key.ptr == NULL)) {
            abort();
        }
    }
    kp_record_iter_free(&it);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t opts = data[0];
    data++;
    size--;
    unsigned flags = KP_BATCH_PARTIAL_TAIL;
    if (opts & 1) {
        flags |= KP_BATCH_SKIP_CRC;
    }
    if (opts & 2) {
        flags |= KP_BATCH_PRODUCE;
    }

    struct kp_batch_iter it;
    struct kp_batch b;
    struct kp_batch_err err;
    kp_batch_iter_init(&it, data, size, flags);
    while (kp_batch_iter_next(&it, &b, &err) == 1) {
        walk_records(&b);
        kp_batch_validate_records(&b, (flags & KP_BATCH_PRODUCE) | KP_RECORDS_REQUIRE_KEY, CAP,
                                  &err);
        /* The LogAppendTime edit must leave a batch that parses with its CRC. */
        uint8_t *copy = malloc(b.len);
        memcpy(copy, b.ptr, b.len);
        if (kp_batch_set_log_append_time(copy, b.len, 1700000000000LL) != 0) {
            abort();
        }
        struct kp_batch again;
        if (kp_batch_parse(copy, b.len, flags & ~KP_BATCH_SKIP_CRC, &again, &err) != 0) {
            abort();
        }
        free(copy);
    }

    int codec = (opts >> 2) & 7;
    if (codec >= KP_CODEC_GZIP && codec <= KP_CODEC_ZSTD) {
        uint8_t *out;
        size_t out_len;
        const char *why;
        if (kp_decompress(codec, data, size, CAP, &out, &out_len, &why) == 0) {
            if (out_len > CAP) {
                abort();
            }
            free(out);
        }
    }
    return 0;
}
