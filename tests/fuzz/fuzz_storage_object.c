/*
 * Fuzzes the object format reader: the input is treated as the tail of an object (and as the
 * whole object); a footer that parses is then used to decode every chunk it describes, with a
 * small raw-size cap. Nothing may crash, read out of bounds or allocate without bound.
 */
#include <stdint.h>
#include <stdlib.h>

#include "runnel/storage/object.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct store_footer f;
    size_t need = 0;
    const char *why = NULL;
    if (store_footer_parse(data, size, size, &f, &need, &why) == 0) {
        for (uint32_t i = 0; i < f.nchunks; i++) {
            const struct store_chunk *c = &f.chunks[i];
            uint8_t *out = NULL;
            size_t outlen = 0;
            if (store_chunk_decode(c, data + c->offset, c->stored_len, 1 << 20, &out, &outlen,
                                   &why) == 0) {
                free(out);
            }
        }
        store_footer_free(&f);
    }
    /* The same bytes as the tail of a larger object. */
    if (store_footer_parse(data, size, (uint64_t)size + 1000, &f, &need, &why) == 0) {
        store_footer_free(&f);
    }
    return 0;
}
