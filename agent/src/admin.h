/*
 * Pieces of the admin APIs (admin.c) shared with their unit tests: the agent's table of topic
 * config keys (type, documentation, broker synonym), the list edit behind IncrementalAlterConfigs
 * APPEND/SUBTRACT, and the Kafka-style error messages built from the metadata service's error
 * codes. Validation itself stays in the metadata service; these only explain its answers.
 */
#ifndef RUNNEL_AGENT_ADMIN_H
#define RUNNEL_AGENT_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runnel/protocol/codec.h"

/* Kafka's DescribeConfigs ConfigType values. */
enum agent__cfg_type {
    AGENT__CFG_UNKNOWN = 0,
    AGENT__CFG_BOOLEAN = 1,
    AGENT__CFG_STRING = 2,
    AGENT__CFG_INT = 3,
    AGENT__CFG_SHORT = 4,
    AGENT__CFG_LONG = 5,
    AGENT__CFG_DOUBLE = 6,
    AGENT__CFG_LIST = 7,
};

/* Kafka's ConfigSource values. */
enum agent__cfg_source {
    AGENT__SRC_UNKNOWN = 0,
    AGENT__SRC_TOPIC = 1,
    AGENT__SRC_STATIC_BROKER = 4,
    AGENT__SRC_DEFAULT = 5,
};

/* What the agent knows about one topic config key besides what the metadata service checks. */
struct agent__cfg_info {
    const char *name;           /* Kafka's topic config key */
    int8_t type;                /* enum agent__cfg_type */
    const char *broker_synonym; /* the broker setting that supplies the default, or NULL */
    const char *doc;            /* one-line documentation (DescribeConfigs v3+) */
};

/* The entry for topic config `name`, or NULL when the agent has none for it. */
const struct agent__cfg_info *agent__cfg_info_find(struct kp_str name);

/*
 * Applies APPEND (`append` true) or SUBTRACT of the comma-separated items in `arg` to the
 * comma-separated list `cur` (spaces around items ignored; APPEND skips items already present,
 * SUBTRACT removes every occurrence). Writes the NUL-terminated result to out (cap bytes).
 * Returns 0, or -ENOSPC when the result does not fit.
 */
int agent__cfg_list_edit(const char *cur, struct kp_str arg, bool append, char *out, size_t cap);

/*
 * Writes into out (cap bytes, NUL-terminated) a Kafka-style message for error `code` that the
 * metadata service returned for topic `topic`, using the configs that were sent (names/values,
 * n of them; values may be null strings) to say which one was refused. partitions is the count
 * that was asked for (-1 when none). Returns out.
 */
char *agent__admin_explain(int16_t code, struct kp_str topic, const struct kp_str *cfg_names,
                           const struct kp_str *cfg_values, size_t n, int32_t partitions, char *out,
                           size_t cap);

#endif
