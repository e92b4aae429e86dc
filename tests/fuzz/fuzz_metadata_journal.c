/*
 * Fuzzes what the metadata service reads back from disk: the first byte selects the target,
 * the rest is either a journal op (meta_op_apply against a state with a topic, a producer and a
 * few extents) or a whole snapshot body (meta_state_deserialize). Both must refuse bad input with
 * an error, never crash, read out of bounds or allocate without bound.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/metadata/journal.h"
#include "runnel/metadata/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    struct meta_state s;
    meta_state_init(&s, NULL);
    const char *why = NULL;
    if (data[0] & 1) {
        (void)meta_state_deserialize(&s, data + 1, size - 1, &why);
    } else {
        struct meta_topic *t = NULL;
        meta_state_create_topic(&s, "t", 1, 2, NULL, 0, false, &t);
        int64_t pid;
        int16_t ep;
        meta_state_init_producer(&s, 0, NULL, 0, -1, -1, &pid, &ep);
        struct meta_commit_range r = {pid, 0, 0, 3, 5, 0, 10};
        struct meta_commit_part p = {.topic_id = t->id,
                                     .partition = 0,
                                     .chunk_off = 0,
                                     .chunk_len = 10,
                                     .n_ranges = 1,
                                     .ranges = &r};
        struct meta_commit c = {"seed", 4, 10, 0, 47, 1, &p};
        struct meta_part_result pr;
        struct meta_range_result rr;
        meta_state_commit(&s, 0, &c, &pr, &rr);
        (void)meta_op_apply(&s, data + 1, size - 1, &why);
        /* Whatever was applied must still serialise and load back. */
        uint8_t *buf = NULL;
        size_t len = 0;
        if (meta_state_serialize(&s, &buf, &len) == 0) {
            struct meta_state b;
            meta_state_init(&b, NULL);
            if (meta_state_deserialize(&b, buf, len, &why) != 0) {
                __builtin_trap();
            }
            meta_state_free(&b);
            free(buf);
        }
    }
    meta_state_free(&s);
    return 0;
}
