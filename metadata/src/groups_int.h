/*
 * Internals of the group coordinator shared with state.c (snapshot section) and journal.c
 * (replay of META_OP_GROUP records). Not part of the public interface.
 */
#ifndef RUNNEL_METADATA_GROUPS_INT_H
#define RUNNEL_METADATA_GROUPS_INT_H

#include <stdint.h>

#include "internal.h"
#include "runnel/protocol/codec.h"

struct meta_state;

/* Replays the payload of a META_OP_GROUP record (after op byte and time). 0 or the reader's
 * error. */
int meta__groups_apply_op(struct meta_state *s, int64_t now, struct kp_reader *r);

/* Appends the persisted group data (canonical: groups sorted by id) to a snapshot. */
void meta__groups_serialize(const struct meta_state *s, struct meta__buf *b);
/* Reads what meta__groups_serialize wrote. 0 or the reader's error. */
int meta__groups_deserialize(struct meta_state *s, struct kp_reader *r);

#endif
