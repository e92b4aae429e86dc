/*
 * The admin APIs of the agent: CreateTopics (v2-7), DeleteTopics (v1-6), CreatePartitions (v0-3),
 * DescribeConfigs (v0-4), AlterConfigs (v0-2) and IncrementalAlterConfigs (v0-1).
 *
 * Each request is turned into one or two metadata RPCs (MetaCreateTopics, MetaDeleteTopics,
 * MetaCreatePartitions, MetaDescribeTopics, MetaAlterTopicConfigs). The metadata service owns the
 * validation of topic names, partition counts and config values; the agent checks only what the
 * service cannot see (replication factors and replica assignments, duplicate entries in one
 * request, resource types, the read-modify-write of APPEND/SUBTRACT) and turns the service's
 * error codes into Kafka's per-version fields and error messages. Every change that succeeded
 * drops the topic from the agent's topic cache (agent_topics_invalidate). Decisions are in
 * docs/agent-admin.md; in short, any replication factor >= 1 (or -1) is accepted and reported
 * as 1, since the object store, not replicas, makes data durable.
 *
 * A request's state lives in its arena; the handler keeps the agent pointer itself because the
 * connection may close while the metadata service works (the response is then dropped).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "agent.h"
#include "handlers.h"
#include "runnel/common/log.h"
#include "runnel/metadata/state.h"
#include "runnel/protocol/errors.h"

#define ADMIN__RES_TOPIC 2 /* Kafka ConfigResource types */
#define ADMIN__RES_BROKER 4
#define ADMIN__RES_BROKER_LOGGER 8
#define ADMIN__OP_SET 0 /* IncrementalAlterConfigs operations */
#define ADMIN__OP_DELETE 1
#define ADMIN__OP_APPEND 2
#define ADMIN__OP_SUBTRACT 3
#define ADMIN__MSG_MAX 512     /* longest error message built, bytes */
#define ADMIN__VALUE_MAX 4096  /* longest config value after APPEND, bytes */
#define ADMIN__RPC_CREATE 1001 /* metadata RPC api keys (protocol/spec/Meta*.json) */
#define ADMIN__RPC_DELETE 1002
#define ADMIN__RPC_PARTITIONS 1003
#define ADMIN__RPC_DESCRIBE 1004
#define ADMIN__RPC_ALTER 1005

/* ---- config keys ---- */

static const struct agent__cfg_info agent__cfg_infos[] = {
    {"retention.ms", AGENT__CFG_LONG, "log.retention.ms",
     "How long records are kept before they may be deleted (ms); -1 keeps them forever."},
    {"retention.bytes", AGENT__CFG_LONG, "log.retention.bytes",
     "Size a partition may reach before old records may be deleted (bytes); -1 for no limit."},
    {"cleanup.policy", AGENT__CFG_LIST, "log.cleanup.policy",
     "What happens to old records: a list of delete and compact."},
    {"max.message.bytes", AGENT__CFG_INT, "message.max.bytes",
     "Largest record batch the topic accepts, after compression (bytes)."},
    {"message.timestamp.type", AGENT__CFG_STRING, "log.message.timestamp.type",
     "CreateTime keeps the producer's timestamps; LogAppendTime stamps the append time."},
    {"segment.bytes", AGENT__CFG_INT, "log.segment.bytes",
     "Kafka's segment size; accepted and stored, objects are cut by the agent's flush settings."},
    {"segment.ms", AGENT__CFG_LONG, "log.roll.ms",
     "Kafka's segment roll time; accepted and stored (ms)."},
    {"segment.index.bytes", AGENT__CFG_INT, "log.index.size.max.bytes",
     "Kafka's offset index size; accepted and stored (bytes)."},
    {"segment.jitter.ms", AGENT__CFG_LONG, "log.roll.jitter.ms",
     "Kafka's segment roll jitter; accepted and stored (ms)."},
    {"min.insync.replicas", AGENT__CFG_INT, "min.insync.replicas",
     "Kafka's replica quorum for acks=all; accepted and stored, the object store is the quorum."},
    {"compression.type", AGENT__CFG_STRING, "compression.type",
     "Codec of stored batches: producer keeps the producer's, or uncompressed, gzip, snappy, "
     "lz4, zstd."},
    {"delete.retention.ms", AGENT__CFG_LONG, "log.cleaner.delete.retention.ms",
     "How long delete markers are kept on compacted topics (ms)."},
    {"min.compaction.lag.ms", AGENT__CFG_LONG, "log.cleaner.min.compaction.lag.ms",
     "Minimum age of a record before compaction may remove it (ms)."},
    {"max.compaction.lag.ms", AGENT__CFG_LONG, "log.cleaner.max.compaction.lag.ms",
     "Maximum time a record stays ineligible for compaction (ms)."},
    {"min.cleanable.dirty.ratio", AGENT__CFG_DOUBLE, "log.cleaner.min.cleanable.ratio",
     "Share of uncompacted bytes that triggers compaction (0 to 1)."},
    {"file.delete.delay.ms", AGENT__CFG_LONG, "log.segment.delete.delay.ms",
     "Kafka's delay before deleting files; accepted and stored (ms)."},
    {"flush.messages", AGENT__CFG_LONG, "log.flush.interval.messages",
     "Kafka's fsync interval in records; accepted and stored (data is durable when acknowledged)."},
    {"flush.ms", AGENT__CFG_LONG, "log.flush.interval.ms",
     "Kafka's fsync interval; accepted and stored (data is durable when acknowledged) (ms)."},
    {"index.interval.bytes", AGENT__CFG_INT, "log.index.interval.bytes",
     "Kafka's offset index density; accepted and stored (bytes)."},
    {"preallocate", AGENT__CFG_BOOLEAN, "log.preallocate",
     "Kafka's segment preallocation; accepted and stored."},
    {"unclean.leader.election.enable", AGENT__CFG_BOOLEAN, "unclean.leader.election.enable",
     "Kafka's unclean election; accepted and stored, there are no replicas to elect."},
    {"message.downconversion.enable", AGENT__CFG_BOOLEAN, "log.message.downconversion.enable",
     "Kafka's down-conversion for old consumers; accepted and stored."},
    {"message.timestamp.difference.max.ms", AGENT__CFG_LONG,
     "log.message.timestamp.difference.max.ms",
     "Largest accepted difference between a CreateTime timestamp and the broker's clock (ms)."},
    {"message.timestamp.before.max.ms", AGENT__CFG_LONG, "log.message.timestamp.before.max.ms",
     "How far in the past a CreateTime timestamp may be (ms)."},
    {"message.timestamp.after.max.ms", AGENT__CFG_LONG, "log.message.timestamp.after.max.ms",
     "How far in the future a CreateTime timestamp may be (ms)."},
    {"local.retention.ms", AGENT__CFG_LONG, "log.local.retention.ms",
     "Kafka's tiered-storage local retention; accepted and stored (ms)."},
    {"local.retention.bytes", AGENT__CFG_LONG, "log.local.retention.bytes",
     "Kafka's tiered-storage local retention; accepted and stored (bytes)."},
    {"remote.storage.enable", AGENT__CFG_BOOLEAN, NULL,
     "Kafka's tiered storage switch; accepted and stored (all data lives in object storage)."},
};

const struct agent__cfg_info *agent__cfg_info_find(struct kp_str name)
{
    for (size_t i = 0; i < sizeof(agent__cfg_infos) / sizeof(agent__cfg_infos[0]); i++) {
        if (kp_str_eq_cstr(name, agent__cfg_infos[i].name)) {
            return &agent__cfg_infos[i];
        }
    }
    return NULL;
}

/* Trims spaces around [*a, *b). */
static void admin__trim(const char *s, size_t *a, size_t *b)
{
    while (*a < *b && s[*a] == ' ') {
        (*a)++;
    }
    while (*b > *a && s[*b - 1] == ' ') {
        (*b)--;
    }
}

/* True when the comma-separated list s[0..len) holds item (it[0..ilen)). */
static bool admin__list_has(const char *s, size_t len, const char *it, size_t ilen)
{
    size_t i = 0;
    while (i <= len && len > 0) {
        size_t j = i;
        while (j < len && s[j] != ',') {
            j++;
        }
        size_t a = i;
        size_t b = j;
        admin__trim(s, &a, &b);
        if (b - a == ilen && memcmp(s + a, it, ilen) == 0) {
            return true;
        }
        i = j + 1;
    }
    return false;
}

/* Appends item to out (with a comma when out is not empty). false when it does not fit. */
static bool admin__list_add(char *out, size_t cap, size_t *used, const char *it, size_t ilen)
{
    size_t need = ilen + (*used > 0 ? 1 : 0);
    if (*used + need + 1 > cap) {
        return false;
    }
    if (*used > 0) {
        out[(*used)++] = ',';
    }
    memcpy(out + *used, it, ilen);
    *used += ilen;
    out[*used] = '\0';
    return true;
}

int agent__cfg_list_edit(const char *cur, struct kp_str arg, bool append, char *out, size_t cap)
{
    if (cap == 0) {
        return -ENOSPC;
    }
    out[0] = '\0';
    size_t used = 0;
    const char *al = arg.len > 0 ? arg.ptr : "";
    size_t alen = arg.len > 0 ? (size_t)arg.len : 0;
    size_t clen = cur != NULL ? strlen(cur) : 0;
    /* Keep the current items (less the subtracted ones). */
    for (size_t i = 0; clen > 0 && i <= clen;) {
        size_t j = i;
        while (j < clen && cur[j] != ',') {
            j++;
        }
        size_t a = i;
        size_t b = j;
        admin__trim(cur, &a, &b);
        if (b > a && (append || !admin__list_has(al, alen, cur + a, b - a)) &&
            !admin__list_has(out, used, cur + a, b - a)) {
            if (!admin__list_add(out, cap, &used, cur + a, b - a)) {
                return -ENOSPC;
            }
        }
        i = j + 1;
    }
    if (!append) {
        return 0;
    }
    for (size_t i = 0; alen > 0 && i <= alen;) {
        size_t j = i;
        while (j < alen && al[j] != ',') {
            j++;
        }
        size_t a = i;
        size_t b = j;
        admin__trim(al, &a, &b);
        if (b > a && !admin__list_has(out, used, al + a, b - a)) {
            if (!admin__list_add(out, cap, &used, al + a, b - a)) {
                return -ENOSPC;
            }
        }
        i = j + 1;
    }
    return 0;
}

/* Formats into out; returns out. */
static char *admin__fmt(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static char *admin__fmt(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    return out;
}

/* Length of a view for printing (%.*s), clamped so a long name cannot fill the message. */
static int admin__plen(struct kp_str s)
{
    return s.len < 0 ? 0 : (s.len > 255 ? 255 : s.len);
}

static const char *admin__pptr(struct kp_str s)
{
    return s.ptr != NULL ? s.ptr : "";
}

/* Why a topic name is refused, in Kafka's words. */
static char *admin__explain_name(struct kp_str t, char *out, size_t cap)
{
    if (t.len <= 0) {
        return admin__fmt(out, cap, "Topic name is illegal, it can't be empty");
    }
    if (t.len > META_TOPIC_NAME_MAX) {
        return admin__fmt(out, cap,
                          "Topic name is illegal, it can't be longer than %d characters, topic "
                          "name: %.*s...",
                          META_TOPIC_NAME_MAX, 64, t.ptr);
    }
    if ((t.len == 1 && t.ptr[0] == '.') || (t.len == 2 && memcmp(t.ptr, "..", 2) == 0)) {
        return admin__fmt(out, cap, "Topic name cannot be \".\" or \"..\"");
    }
    return admin__fmt(out, cap,
                      "Topic name \"%.*s\" is illegal, it contains a character other than ASCII "
                      "alphanumerics, '.', '_' and '-'",
                      admin__plen(t), admin__pptr(t));
}

char *agent__admin_explain(int16_t code, struct kp_str topic, const struct kp_str *cfg_names,
                           const struct kp_str *cfg_values, size_t n, int32_t partitions, char *out,
                           size_t cap)
{
    int tl = admin__plen(topic);
    const char *tp = admin__pptr(topic);
    switch (code) {
    case KP_ERROR_TOPIC_ALREADY_EXISTS:
        return admin__fmt(out, cap, "Topic '%.*s' already exists.", tl, tp);
    case KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION:
        return admin__fmt(out, cap, "Topic '%.*s' does not exist.", tl, tp);
    case KP_ERROR_UNKNOWN_TOPIC_ID:
        return admin__fmt(out, cap, "No topic with this topic id exists.");
    case KP_ERROR_INVALID_TOPIC_EXCEPTION:
        return admin__explain_name(topic, out, cap);
    case KP_ERROR_INVALID_PARTITIONS:
        if (partitions > META_PARTITIONS_MAX) {
            return admin__fmt(out, cap,
                              "Number of partitions %d exceeds the limit of %d partitions per "
                              "topic.",
                              partitions, META_PARTITIONS_MAX);
        }
        if (partitions < 1) {
            return admin__fmt(out, cap,
                              "Number of partitions was set to an invalid non-positive value.");
        }
        return admin__fmt(out, cap, "Invalid number of partitions: %d.", partitions);
    case KP_ERROR_INVALID_CONFIG:
        for (size_t i = 0; i < n; i++) {
            struct kp_str k = cfg_names[i];
            int key = meta_config_key_find(admin__pptr(k), k.len > 0 ? (size_t)k.len : 0);
            if (key < 0) {
                return admin__fmt(out, cap, "Unknown topic config name: %.*s", admin__plen(k),
                                  admin__pptr(k));
            }
            struct kp_str v = cfg_values[i];
            if (v.len < 0) {
                continue; /* a deletion or, at creation, checked below */
            }
            if (meta_config_check(key, admin__pptr(v), (size_t)v.len) != 0) {
                return admin__fmt(out, cap, "Invalid value %.*s for configuration %.*s",
                                  admin__plen(v), admin__pptr(v), admin__plen(k), admin__pptr(k));
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (cfg_values[i].len < 0) {
                return admin__fmt(out, cap, "Null value not supported for topic configs: %.*s",
                                  admin__plen(cfg_names[i]), admin__pptr(cfg_names[i]));
            }
        }
        return admin__fmt(out, cap, "Invalid topic config.");
    default: {
        const struct kp_error_info *e = kp_error_info(code);
        return admin__fmt(out, cap, "%s", e != NULL ? e->message : "Unexpected error.");
    }
    }
}

/* ---- shared helpers ---- */

/* State every admin request keeps while the metadata service works. */
struct admin__base {
    struct agent *a;       /* the agent (the request's connection may be gone) */
    struct agent_req *req; /* the request; its arena holds everything below */
    int16_t version;       /* request version */
    bool oom;              /* an arena allocation failed: the connection is closed */
};

static void admin__base_init(struct admin__base *b, struct agent_req *req)
{
    b->a = req->conn->agent;
    b->req = req;
    b->version = req->hdr.request_api_version;
    b->oom = false;
}

static void *admin__calloc(struct admin__base *b, size_t n, size_t size)
{
    void *p = kp_arena_calloc(&b->req->arena, n ? n : 1, size);
    if (p == NULL) {
        b->oom = true;
    }
    return p;
}

/* A copy of s in the request's arena (the null string stays null). */
static struct kp_str admin__dup(struct admin__base *b, struct kp_str s)
{
    if (s.len < 0) {
        return KP_STR_NULL;
    }
    char *p = kp_arena_alloc(&b->req->arena, (size_t)s.len + 1);
    if (p == NULL) {
        b->oom = true;
        return KP_STR_NULL;
    }
    if (s.len > 0) {
        memcpy(p, s.ptr, (size_t)s.len);
    }
    p[s.len] = '\0';
    return (struct kp_str){p, s.len};
}

static struct kp_str admin__dupc(struct admin__base *b, const char *s)
{
    return admin__dup(b, kp_str_from(s));
}

/* A formatted message in the arena. */
static struct kp_str admin__msg(struct admin__base *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct kp_str admin__msg(struct admin__base *b, const char *fmt, ...)
{
    char buf[ADMIN__MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return admin__dupc(b, buf);
}

/* The message of a metadata-service error for `topic` (see agent__admin_explain). */
static struct kp_str admin__explain(struct admin__base *b, int16_t code, struct kp_str topic,
                                    const struct kp_str *names, const struct kp_str *values,
                                    size_t n, int32_t partitions)
{
    char buf[ADMIN__MSG_MAX];
    return admin__dupc(
        b, agent__admin_explain(code, topic, names, values, n, partitions, buf, sizeof(buf)));
}

/* What an entry gets when the metadata service could not be asked. */
static struct kp_str admin__unavailable(struct admin__base *b, int status)
{
    return admin__msg(b, "The metadata service did not answer (%s); retry.", strerror(-status));
}

/* Finishes the request: the response, or closing the connection after an arena failure. */
static void admin__respond(struct admin__base *b, const void *msg)
{
    if (b->oom) {
        agent_req_close_conn(b->req, "out of request memory");
        return;
    }
    agent_req_respond(b->req, msg);
}

static uint64_t admin__hash(struct kp_str s)
{
    uint64_t h = 1469598103934665603ull;
    for (int32_t i = 0; i < s.len; i++) {
        h = (h ^ (uint8_t)s.ptr[i]) * 1099511628211ull;
    }
    return h ^ (s.len < 0 ? 0x9e3779b97f4a7c15ull : 0);
}

/*
 * Finds repeated keys among keys[0..n): first[i] receives the index of the first entry with the
 * same key (i itself for a first occurrence) and dup[j] is set for every first occurrence j that
 * is repeated later.
 */
static void admin__find_dups(struct admin__base *b, const struct kp_str *keys, size_t n,
                             size_t *first, bool *dup)
{
    size_t cap = 16;
    while (cap < 2 * n) {
        cap *= 2;
    }
    size_t *slot = admin__calloc(b, cap, sizeof(*slot)); /* index + 1, 0 for empty */
    for (size_t i = 0; i < n; i++) {
        first[i] = i;
    }
    if (slot == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t h = (size_t)admin__hash(keys[i]) & (cap - 1);
        while (slot[h] != 0 && !kp_str_eq(keys[slot[h] - 1], keys[i])) {
            h = (h + 1) & (cap - 1);
        }
        if (slot[h] == 0) {
            slot[h] = i + 1;
        } else {
            first[i] = slot[h] - 1;
            dup[first[i]] = true;
        }
    }
}

/* Sends one metadata RPC; on failure the callback is invoked with the error at once. */
static void admin__call(struct admin__base *b, int16_t key, const void *rq, meta_client_cb cb,
                        void *arg)
{
    int rc = b->a->meta != NULL ? meta_client_call(b->a->meta, key, rq, cb, arg) : -ENOTCONN;
    if (rc != 0) {
        rn_log(RN_LOG_WARN, "admin_metadata_call_failed", "rpc=%d rc=%d", key, rc);
        cb(arg, rc, NULL);
    }
}

/* Kafka's ConfigSource and a config entry's value as the metadata service described it. */
struct admin__cfg_val {
    int key;           /* metadata config key */
    struct kp_str val; /* value (arena copy) */
    bool is_default;   /* not set on the topic */
};

/* Copies described configs into the arena, in the metadata service's key order. */
static struct admin__cfg_val *admin__copy_cfgs(struct admin__base *b, const void *cfgs, size_t elem,
                                               int32_t count, int32_t *n_out)
{
    /* Both generated config entry structs (MetaCreatedConfig, MetaDescribedConfig) start with
     * name, value, is_default; read them through the describe layout. */
    int32_t n = count > 0 ? count : 0;
    struct admin__cfg_val *out = admin__calloc(b, (size_t)n, sizeof(*out));
    int32_t k = 0;
    for (int32_t i = 0; out != NULL && i < n; i++) {
        const struct kp_meta_describe_topics_response_meta_described_config *c =
            (const void *)((const uint8_t *)cfgs + elem * (size_t)i);
        int key =
            meta_config_key_find(admin__pptr(c->name), c->name.len > 0 ? (size_t)c->name.len : 0);
        if (key < 0) {
            continue;
        }
        out[k].key = key;
        out[k].val = admin__dup(b, c->value);
        out[k].is_default = c->is_default;
        k++;
    }
    *n_out = k;
    return out;
}

_Static_assert(
    sizeof(struct kp_meta_create_topics_response_meta_created_config) ==
            sizeof(struct kp_meta_describe_topics_response_meta_described_config) &&
        offsetof(struct kp_meta_create_topics_response_meta_created_config, value) ==
            offsetof(struct kp_meta_describe_topics_response_meta_described_config, value) &&
        offsetof(struct kp_meta_create_topics_response_meta_created_config, is_default) ==
            offsetof(struct kp_meta_describe_topics_response_meta_described_config, is_default),
    "config entry layouts differ");

/* ---- CreateTopics ---- */

struct admin__create {
    struct admin__base b;                      /* shared state */
    const struct kp_create_topics_request *rq; /* the decoded request */
    struct kp_create_topics_response rs;       /* the response being filled */
    int32_t *sent;       /* per result: index in the metadata request, or -1 */
    int32_t *src;        /* per result: index of the request topic it answers */
    int32_t *partitions; /* per result: partition count asked of the metadata service */
    int32_t *local;      /* per result: index in the existence check when the agent refused it */
    struct kp_meta_create_topics_request mrq; /* what is asked of the metadata service */
};

/* The effective configs of a topic being validated only: what was given, else the defaults. */
static void admin__create_synth_configs(struct admin__create *op,
                                        const struct kp_create_topics_request_creatable_topic *t,
                                        struct kp_create_topics_response_creatable_topic_result *o)
{
    struct admin__base *b = &op->b;
    o->configs = admin__calloc(b, META_CFG_COUNT, sizeof(*o->configs));
    if (o->configs == NULL) {
        return;
    }
    o->configs_count = META_CFG_COUNT;
    for (int k = 0; k < META_CFG_COUNT; k++) {
        struct kp_create_topics_response_creatable_topic_configs *c = &o->configs[k];
        kp_create_topics_response_creatable_topic_configs_init(c);
        c->name = kp_str_from(meta_config_key_name(k));
        c->value = kp_str_from(meta_config_default(k));
        c->config_source = AGENT__SRC_DEFAULT;
        for (int32_t i = t->configs_count - 1; i >= 0; i--) {
            if (kp_str_eq_cstr(t->configs[i].name, meta_config_key_name(k))) {
                c->value = t->configs[i].value; /* a view into the request frame */
                c->config_source = AGENT__SRC_TOPIC;
                break;
            }
        }
    }
}

static void admin__created_cb(void *arg, int status, const void *response)
{
    struct admin__create *op = arg;
    struct admin__base *b = &op->b;
    const struct kp_meta_create_topics_response *r = response;
    for (int32_t i = 0; i < op->rs.topics_count; i++) {
        int32_t s = op->sent[i];
        if (s < 0) {
            continue;
        }
        struct kp_create_topics_response_creatable_topic_result *o = &op->rs.topics[i];
        const struct kp_create_topics_request_creatable_topic *t = &op->rq->topics[op->src[i]];
        if (status != 0 || r == NULL || s >= r->topics_count) {
            o->error_code = KP_ERROR_REQUEST_TIMED_OUT;
            o->error_message = admin__unavailable(b, status != 0 ? status : -EPROTO);
            continue;
        }
        const struct kp_meta_create_topics_response_meta_created_topic *m = &r->topics[s];
        o->error_code = m->error_code;
        if (m->error_code != 0) {
            int32_t nc = t->configs_count > 0 ? t->configs_count : 0;
            struct kp_str *names = admin__calloc(b, (size_t)nc, sizeof(*names));
            struct kp_str *values = admin__calloc(b, (size_t)nc, sizeof(*values));
            for (int32_t k = 0; names != NULL && values != NULL && k < nc; k++) {
                names[k] = t->configs[k].name;
                values[k] = t->configs[k].value;
            }
            o->error_message =
                admin__explain(b, m->error_code, t->name, names, values,
                               names != NULL && values != NULL ? (size_t)nc : 0, op->partitions[i]);
            continue;
        }
        o->topic_id = m->topic_id;
        o->num_partitions = m->num_partitions;
        o->replication_factor = 1;
        if (!op->rq->validate_only) {
            agent_topics_invalidate(b->a, t->name);
            rn_log(RN_LOG_INFO, "topic_created", "topic=%.*s partitions=%d", admin__plen(t->name),
                   admin__pptr(t->name), m->num_partitions);
        }
        if (m->configs_count <= 0) {
            admin__create_synth_configs(op, t, o);
            continue;
        }
        int32_t n = 0;
        struct admin__cfg_val *v =
            admin__copy_cfgs(b, m->configs, sizeof(*m->configs), m->configs_count, &n);
        o->configs = admin__calloc(b, (size_t)n, sizeof(*o->configs));
        if (v == NULL || o->configs == NULL) {
            continue;
        }
        o->configs_count = n;
        for (int32_t k = 0; k < n; k++) {
            struct kp_create_topics_response_creatable_topic_configs *c = &o->configs[k];
            kp_create_topics_response_creatable_topic_configs_init(c);
            c->name = kp_str_from(meta_config_key_name(v[k].key));
            c->value = v[k].val;
            c->config_source = v[k].is_default ? AGENT__SRC_DEFAULT : AGENT__SRC_TOPIC;
        }
    }
    admin__respond(b, &op->rs);
}

/* Checks a manual replica assignment; returns 0 or an error code with *msg set. */
static int16_t admin__check_assignment(struct admin__base *b,
                                       const struct kp_create_topics_request_creatable_topic *t,
                                       struct kp_str *msg)
{
    if (t->num_partitions != -1 || t->replication_factor != -1) {
        *msg = admin__msg(b, "Both numPartitions or replicationFactor and replicasAssignments "
                             "were set. Both cannot be used at the same time.");
        return KP_ERROR_INVALID_REQUEST;
    }
    int32_t n = t->assignments_count;
    bool *seen = admin__calloc(b, (size_t)n, sizeof(*seen));
    if (seen == NULL) {
        return KP_ERROR_INVALID_REQUEST;
    }
    for (int32_t i = 0; i < n; i++) {
        const struct kp_create_topics_request_creatable_replica_assignment *as = &t->assignments[i];
        int32_t p = as->partition_index;
        if (p < 0 || p >= n || seen[p]) {
            *msg = admin__msg(b, "Partitions should be a consecutive 0-based integer sequence");
            return KP_ERROR_INVALID_REPLICA_ASSIGNMENT;
        }
        seen[p] = true;
        if (as->broker_ids_count <= 0) {
            *msg = admin__msg(b, "Partition %d has an empty replica assignment.", p);
            return KP_ERROR_INVALID_REPLICA_ASSIGNMENT;
        }
        for (int32_t k = 0; k < as->broker_ids_count; k++) {
            if (as->broker_ids[k] < 0) {
                *msg = admin__msg(b,
                                  "Invalid broker id %d in the replica assignment of "
                                  "partition %d.",
                                  as->broker_ids[k], p);
                return KP_ERROR_INVALID_REPLICA_ASSIGNMENT;
            }
        }
    }
    return 0;
}

/* Asks the metadata service to create what passed the agent's checks. */
static void admin__create_send(struct admin__create *op)
{
    if (op->mrq.topics_count == 0) {
        admin__respond(&op->b, &op->rs);
        return;
    }
    admin__call(&op->b, ADMIN__RPC_CREATE, &op->mrq, admin__created_cb, op);
}

/* Topics the agent refused that exist get TOPIC_ALREADY_EXISTS instead. */
static void admin__create_exists_cb(void *arg, int status, const void *response)
{
    struct admin__create *op = arg;
    const struct kp_meta_describe_topics_response *r = response;
    for (int32_t i = 0; status == 0 && r != NULL && i < op->rs.topics_count; i++) {
        int32_t l = op->local[i];
        if (l >= 0 && l < r->topics_count && r->topics[l].error_code == 0) {
            struct kp_create_topics_response_creatable_topic_result *o = &op->rs.topics[i];
            o->error_code = KP_ERROR_TOPIC_ALREADY_EXISTS;
            o->error_message = admin__explain(&op->b, o->error_code, o->name, NULL, NULL, 0, -1);
        }
    }
    admin__create_send(op); /* without an answer the agent's own errors stand */
}

void agent_handle_create_topics(struct agent_req *req)
{
    const struct kp_create_topics_request *rq = req->body;
    struct admin__create *op = kp_arena_calloc(&req->arena, 1, sizeof(*op));
    if (op == NULL) {
        agent_req_close_conn(req, "out of request memory");
        return;
    }
    struct admin__base *b = &op->b;
    admin__base_init(b, req);
    op->rq = rq;
    kp_create_topics_response_init(&op->rs);
    size_t n = rq->topics_count > 0 ? (size_t)rq->topics_count : 0;
    struct kp_str *names = admin__calloc(b, n, sizeof(*names));
    bool *dup = admin__calloc(b, n, sizeof(*dup));
    size_t *first = admin__calloc(b, n, sizeof(*first));
    op->rs.topics = admin__calloc(b, n, sizeof(*op->rs.topics));
    op->sent = admin__calloc(b, n, sizeof(*op->sent));
    op->src = admin__calloc(b, n, sizeof(*op->src));
    op->partitions = admin__calloc(b, n, sizeof(*op->partitions));
    op->local = admin__calloc(b, n, sizeof(*op->local));
    struct kp_meta_create_topics_request *mrq = &op->mrq;
    kp_meta_create_topics_request_init(mrq);
    mrq->topics = admin__calloc(b, n, sizeof(*mrq->topics));
    mrq->validate_only = rq->validate_only;
    if (b->oom) {
        admin__respond(b, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        names[i] = rq->topics[i].name;
    }
    admin__find_dups(b, names, n, first, dup);
    int32_t nr = 0;
    int32_t ns = 0;
    int32_t nl = 0;
    for (size_t i = 0; i < n && !b->oom; i++) {
        const struct kp_create_topics_request_creatable_topic *t = &rq->topics[i];
        if (first[i] != i) {
            continue; /* one result per name, as Kafka answers by name */
        }
        struct kp_create_topics_response_creatable_topic_result *o = &op->rs.topics[nr];
        kp_create_topics_response_creatable_topic_result_init(o);
        o->name = t->name;
        o->num_partitions = -1;
        o->replication_factor = -1;
        op->sent[nr] = -1;
        op->local[nr] = -1;
        op->src[nr] = (int32_t)i;
        nr++;
        if (dup[i]) {
            o->error_code = KP_ERROR_INVALID_REQUEST;
            o->error_message =
                admin__msg(b,
                           "Create topics request from client `%.*s` contains "
                           "multiple entries for the topic %.*s.",
                           admin__plen(req->hdr.client_id), admin__pptr(req->hdr.client_id),
                           admin__plen(t->name), admin__pptr(t->name));
            continue;
        }
        /* An illegal name is reported before what the agent checks, as Kafka orders it. */
        o->error_code =
            meta_topic_name_check(admin__pptr(t->name), t->name.len > 0 ? (size_t)t->name.len : 0);
        if (o->error_code != 0) {
            o->error_message = admin__explain(b, o->error_code, t->name, NULL, NULL, 0, -1);
            continue;
        }
        int32_t parts = t->num_partitions;
        if (t->assignments_count > 0) {
            o->error_code = admin__check_assignment(b, t, &o->error_message);
            if (o->error_code != 0) {
                op->local[nr - 1] = nl++;
                continue;
            }
            parts = t->assignments_count;
        } else {
            if (t->replication_factor == 0 || t->replication_factor < -1) {
                o->error_code = KP_ERROR_INVALID_REPLICATION_FACTOR;
                o->error_message = admin__msg(b, "Replication factor must be larger than 0, or "
                                                 "-1 to use the default value.");
                op->local[nr - 1] = nl++;
                continue;
            }
            if (parts == -1) {
                parts = (int32_t)b->a->cfg.default_partitions;
            }
        }
        struct kp_meta_create_topics_request_meta_creatable_topic *m = &mrq->topics[ns];
        kp_meta_create_topics_request_meta_creatable_topic_init(m);
        m->name = t->name;
        m->num_partitions = parts;
        int32_t nc = t->configs_count > 0 ? t->configs_count : 0;
        m->configs = admin__calloc(b, (size_t)nc, sizeof(*m->configs));
        m->configs_count = nc;
        for (int32_t k = 0; m->configs != NULL && k < nc; k++) {
            kp_meta_create_topics_request_meta_creatable_config_init(&m->configs[k]);
            m->configs[k].name = t->configs[k].name;
            m->configs[k].value = t->configs[k].value;
        }
        op->partitions[nr - 1] = parts;
        op->sent[nr - 1] = ns++;
    }
    op->rs.topics_count = nr;
    mrq->topics_count = ns;
    if (b->oom) {
        admin__respond(b, NULL);
        return;
    }
    if (nl == 0) {
        admin__create_send(op);
        return;
    }
    /* Kafka reports an existing topic before a bad replication factor or assignment. */
    struct kp_meta_describe_topics_request drq;
    kp_meta_describe_topics_request_init(&drq);
    drq.include_configs = false;
    drq.include_partitions = false;
    drq.topics = admin__calloc(b, (size_t)nl, sizeof(*drq.topics));
    if (b->oom) {
        admin__respond(b, NULL);
        return;
    }
    for (int32_t i = 0; i < nr; i++) {
        if (op->local[i] >= 0) {
            kp_meta_describe_topics_request_meta_describable_topic_init(&drq.topics[op->local[i]]);
            drq.topics[op->local[i]].name = op->rs.topics[i].name;
        }
    }
    drq.topics_count = nl;
    admin__call(b, ADMIN__RPC_DESCRIBE, &drq, admin__create_exists_cb, op);
}

/* ---- DeleteTopics ---- */

struct admin__delete {
    struct admin__base b;                /* shared state */
    struct kp_delete_topics_response rs; /* the response being filled */
    bool *by_id;                         /* per result: the topic is named by its id (v6) */
    int32_t *sent; /* per result: index in the metadata delete request, or -1 */
};

static void admin__deleted_cb(void *arg, int status, const void *response)
{
    struct admin__delete *op = arg;
    struct admin__base *b = &op->b;
    const struct kp_meta_delete_topics_response *r = response;
    for (int32_t i = 0; i < op->rs.responses_count; i++) {
        struct kp_delete_topics_response_deletable_topic_result *o = &op->rs.responses[i];
        int32_t s = op->sent[i];
        if (s < 0) {
            continue;
        }
        if (status != 0 || r == NULL || s >= r->topics_count) {
            o->error_code = KP_ERROR_REQUEST_TIMED_OUT;
            o->error_message = admin__unavailable(b, status != 0 ? status : -EPROTO);
            continue;
        }
        const struct kp_meta_delete_topics_response_meta_deleted_topic *m = &r->topics[s];
        o->error_code = m->error_code;
        o->topic_id = m->topic_id;
        if (m->error_code != 0) {
            o->error_message = admin__explain(b, m->error_code, o->name, NULL, NULL, 0, -1);
            continue;
        }
        if (o->name.len >= 0) {
            agent_topics_invalidate(b->a, o->name);
            rn_log(RN_LOG_INFO, "topic_deleted", "topic=%.*s", admin__plen(o->name),
                   admin__pptr(o->name));
        }
    }
    admin__respond(b, &op->rs);
}

/* Sends the deletions of every entry that is still without an error. */
static void admin__delete_send(struct admin__delete *op)
{
    struct admin__base *b = &op->b;
    int32_t n = op->rs.responses_count;
    struct kp_meta_delete_topics_request mrq;
    kp_meta_delete_topics_request_init(&mrq);
    mrq.topics = admin__calloc(b, (size_t)n, sizeof(*mrq.topics));
    int32_t ns = 0;
    for (int32_t i = 0; mrq.topics != NULL && i < n; i++) {
        struct kp_delete_topics_response_deletable_topic_result *o = &op->rs.responses[i];
        op->sent[i] = -1;
        if (o->error_code != 0) {
            continue;
        }
        struct kp_meta_delete_topics_request_meta_deletable_topic *m = &mrq.topics[ns];
        kp_meta_delete_topics_request_meta_deletable_topic_init(m);
        /* By id when the client named the id: the name learned may be a moment old. */
        m->name = op->by_id[i] ? KP_STR_NULL : o->name;
        m->topic_id = o->topic_id;
        op->sent[i] = ns++;
    }
    mrq.topics_count = ns;
    if (ns == 0 || b->oom) {
        admin__respond(b, &op->rs);
        return;
    }
    admin__call(b, ADMIN__RPC_DELETE, &mrq, admin__deleted_cb, op);
}

/* Names of topics given by id (v6), so the response and the topic cache get them. */
static void admin__delete_resolved_cb(void *arg, int status, const void *response)
{
    struct admin__delete *op = arg;
    struct admin__base *b = &op->b;
    const struct kp_meta_describe_topics_response *r = response;
    int32_t s = 0;
    for (int32_t i = 0; i < op->rs.responses_count; i++) {
        struct kp_delete_topics_response_deletable_topic_result *o = &op->rs.responses[i];
        if (!op->by_id[i] || o->error_code != 0) {
            continue;
        }
        if (status != 0 || r == NULL || s >= r->topics_count) {
            o->error_code = KP_ERROR_REQUEST_TIMED_OUT;
            o->error_message = admin__unavailable(b, status != 0 ? status : -EPROTO);
            s++;
            continue;
        }
        const struct kp_meta_describe_topics_response_meta_described_topic *d = &r->topics[s++];
        if (d->error_code != 0) {
            o->error_code = d->error_code;
            o->error_message = admin__explain(b, d->error_code, KP_STR_NULL, NULL, NULL, 0, -1);
            continue;
        }
        o->name = admin__dup(b, d->name);
    }
    admin__delete_send(op);
}

void agent_handle_delete_topics(struct agent_req *req)
{
    const struct kp_delete_topics_request *rq = req->body;
    struct admin__delete *op = kp_arena_calloc(&req->arena, 1, sizeof(*op));
    if (op == NULL) {
        agent_req_close_conn(req, "out of request memory");
        return;
    }
    struct admin__base *b = &op->b;
    admin__base_init(b, req);
    kp_delete_topics_response_init(&op->rs);
    bool v6 = b->version >= 6;
    int32_t cnt = v6 ? rq->topics_count : rq->topic_names_count;
    size_t n = cnt > 0 ? (size_t)cnt : 0;
    op->rs.responses = admin__calloc(b, n, sizeof(*op->rs.responses));
    op->by_id = admin__calloc(b, n, sizeof(*op->by_id));
    op->sent = admin__calloc(b, n, sizeof(*op->sent));
    struct kp_str *keys = admin__calloc(b, n, sizeof(*keys));
    size_t *first = admin__calloc(b, n, sizeof(*first));
    bool *dup = admin__calloc(b, n, sizeof(*dup));
    if (b->oom) {
        admin__respond(b, NULL);
        return;
    }
    int32_t nr = 0;
    for (size_t i = 0; i < n; i++) {
        keys[i] = v6 ? rq->topics[i].name : rq->topic_names[i];
        if (v6 && keys[i].len < 0) {
            /* Ids are keyed as a NUL byte and the 16 id bytes, which no valid name matches. */
            char *k = admin__calloc(b, 17, 1);
            if (k == NULL) {
                admin__respond(b, NULL);
                return;
            }
            memcpy(k + 1, rq->topics[i].topic_id.b, 16);
            keys[i] = (struct kp_str){k, 17};
        }
    }
    admin__find_dups(b, keys, n, first, dup);
    int32_t n_ids = 0;
    static const struct kp_uuid zero;
    for (size_t i = 0; i < n; i++) {
        if (first[i] != i) {
            continue;
        }
        struct kp_delete_topics_response_deletable_topic_result *o = &op->rs.responses[nr];
        kp_delete_topics_response_deletable_topic_result_init(o);
        o->name = v6 ? rq->topics[i].name : rq->topic_names[i];
        bool has_id = v6 && memcmp(rq->topics[i].topic_id.b, zero.b, 16) != 0;
        if (has_id) {
            o->topic_id = rq->topics[i].topic_id;
        }
        nr++;
        if (v6 && o->name.len >= 0 && has_id) {
            o->error_code = KP_ERROR_INVALID_REQUEST;
            o->error_message = admin__msg(b, "You may not specify both topic name and topic id.");
        } else if (v6 && o->name.len < 0 && !has_id) {
            o->error_code = KP_ERROR_INVALID_REQUEST;
            o->error_message = admin__msg(b, "Neither a topic name nor a topic id was given.");
        } else if (dup[i]) {
            o->error_code = KP_ERROR_INVALID_REQUEST;
            o->error_message =
                admin__msg(b, o->name.len >= 0 ? "Duplicate topic name." : "Duplicate topic id.");
        } else if (o->name.len < 0) {
            op->by_id[nr - 1] = true;
            n_ids++;
        }
    }
    op->rs.responses_count = nr;
    if (n_ids == 0) {
        admin__delete_send(op);
        return;
    }
    struct kp_meta_describe_topics_request mrq;
    kp_meta_describe_topics_request_init(&mrq);
    mrq.include_configs = false;
    mrq.include_partitions = false;
    mrq.topics = admin__calloc(b, (size_t)n_ids, sizeof(*mrq.topics));
    if (b->oom) {
        admin__respond(b, NULL);
        return;
    }
    int32_t k = 0;
    for (int32_t i = 0; i < nr; i++) {
        if (op->by_id[i] && op->rs.responses[i].error_code == 0) {
            kp_meta_describe_topics_request_meta_describable_topic_init(&mrq.topics[k]);
            mrq.topics[k].name = KP_STR_NULL;
            mrq.topics[k].topic_id = op->rs.responses[i].topic_id;
            k++;
        }
    }
    mrq.topics_count = k;
    admin__call(b, ADMIN__RPC_DESCRIBE, &mrq, admin__delete_resolved_cb, op);
}

/* ---- CreatePartitions ---- */

struct admin__partitions {
    struct admin__base b;                          /* shared state */
    const struct kp_create_partitions_request *rq; /* the decoded request */
    struct kp_create_partitions_response rs;       /* the response being filled */
    int32_t *src;     /* per result: index of the request topic it answers */
    int32_t *sent;    /* per result: index in the current metadata request, or -1 */
    int32_t *current; /* per result: partition count before the change */
};

static void admin__partitions_done_cb(void *arg, int status, const void *response)
{
    struct admin__partitions *op = arg;
    struct admin__base *b = &op->b;
    const struct kp_meta_create_partitions_response *r = response;
    for (int32_t i = 0; i < op->rs.results_count; i++) {
        struct kp_create_partitions_response_create_partitions_topic_result *o = &op->rs.results[i];
        const struct kp_create_partitions_request_create_partitions_topic *t =
            &op->rq->topics[op->src[i]];
        int32_t s = op->sent[i];
        if (s < 0) {
            continue;
        }
        if (status != 0 || r == NULL || s >= r->topics_count) {
            o->error_code = KP_ERROR_REQUEST_TIMED_OUT;
            o->error_message = admin__unavailable(b, status != 0 ? status : -EPROTO);
            continue;
        }
        o->error_code = r->topics[s].error_code;
        int32_t cur = op->current[i];
        if (o->error_code == KP_ERROR_INVALID_PARTITIONS && t->count == cur) {
            o->error_message = admin__msg(b, "Topic already has %d partitions.", cur);
        } else if (o->error_code == KP_ERROR_INVALID_PARTITIONS && t->count < cur) {
            o->error_message = admin__msg(b,
                                          "Topic currently has %d partitions, which is higher "
                                          "than the requested %d.",
                                          cur, t->count);
        } else if (o->error_code != 0) {
            o->error_message = admin__explain(b, o->error_code, t->name, NULL, NULL, 0, t->count);
        } else if (!op->rq->validate_only) {
            agent_topics_invalidate(b->a, t->name);
            rn_log(RN_LOG_INFO, "partitions_created", "topic=%.*s partitions=%d",
                   admin__plen(t->name), admin__pptr(t->name), t->count);
        }
    }
    admin__respond(b, &op->rs);
}

/* Current counts are known: checks assignments, then asks for the new counts. */
static void admin__partitions_described_cb(void *arg, int status, const void *response)
{
    struct admin__partitions *op = arg;
    struct admin__base *b = &op->b;
    const struct kp_meta_describe_topics_response *r = response;
    int32_t n = op->rs.results_count;
    struct kp_meta_create_partitions_request mrq;
    kp_meta_create_partitions_request_init(&mrq);
    mrq.validate_only = op->rq->validate_only;
    mrq.topics = admin__calloc(b, (size_t)n, sizeof(*mrq.topics));
    int32_t ns = 0;
    for (int32_t i = 0; mrq.topics != NULL && i < n; i++) {
        struct kp_create_partitions_response_create_partitions_topic_result *o = &op->rs.results[i];
        const struct kp_create_partitions_request_create_partitions_topic *t =
            &op->rq->topics[op->src[i]];
        int32_t s = op->sent[i];
        op->sent[i] = -1;
        if (s < 0) {
            continue;
        }
        if (status != 0 || r == NULL || s >= r->topics_count) {
            o->error_code = KP_ERROR_REQUEST_TIMED_OUT;
            o->error_message = admin__unavailable(b, status != 0 ? status : -EPROTO);
            continue;
        }
        const struct kp_meta_describe_topics_response_meta_described_topic *d = &r->topics[s];
        if (d->error_code != 0) {
            o->error_code = d->error_code;
            o->error_message = admin__explain(b, d->error_code, t->name, NULL, NULL, 0, -1);
            continue;
        }
        int32_t cur = d->num_partitions;
        op->current[i] = cur;
        if (t->assignments_count >= 0 && t->count > cur) {
            if (t->assignments_count != t->count - cur) {
                o->error_code = KP_ERROR_INVALID_REPLICA_ASSIGNMENT;
                o->error_message = admin__msg(b,
                                              "Increasing the number of partitions by %d but %d "
                                              "assignments provided.",
                                              t->count - cur, t->assignments_count);
                continue;
            }
            for (int32_t k = 0; k < t->assignments_count && o->error_code == 0; k++) {
                if (t->assignments[k].broker_ids_count <= 0) {
                    o->error_code = KP_ERROR_INVALID_REPLICA_ASSIGNMENT;
                    o->error_message =
                        admin__msg(b, "Partition %d has an empty replica assignment.", cur + k);
                }
            }
            if (o->error_code != 0) {
                continue;
            }
        }
        kp_meta_create_partitions_request_meta_partitions_topic_init(&mrq.topics[ns]);
        mrq.topics[ns].name = t->name;
        mrq.topics[ns].count = t->count;
        op->sent[i] = ns++;
    }
    mrq.topics_count = ns;
    if (ns == 0 || b->oom) {
        admin__respond(b, &op->rs);
        return;
    }
    admin__call(b, ADMIN__RPC_PARTITIONS, &mrq, admin__partitions_done_cb, op);
}

void agent_handle_create_partitions(struct agent_req *req)
{
    const struct kp_create_partitions_request *rq = req->body;
    struct admin__partitions *op = kp_arena_calloc(&req->arena, 1, sizeof(*op));
    if (op == NULL) {
        agent_req_close_conn(req, "out of request memory");
        return;
    }
    struct admin__base *b = &op->b;
    admin__base_init(b, req);
    op->rq = rq;
    kp_create_partitions_response_init(&op->rs);
    size_t n = rq->topics_count > 0 ? (size_t)rq->topics_count : 0;
    op->rs.results = admin__calloc(b, n, sizeof(*op->rs.results));
    op->src = admin__calloc(b, n, sizeof(*op->src));
    op->sent = admin__calloc(b, n, sizeof(*op->sent));
    op->current = admin__calloc(b, n, sizeof(*op->current));
    struct kp_str *names = admin__calloc(b, n, sizeof(*names));
    size_t *first = admin__calloc(b, n, sizeof(*first));
    bool *dup = admin__calloc(b, n, sizeof(*dup));
    struct kp_meta_describe_topics_request mrq;
    kp_meta_describe_topics_request_init(&mrq);
    mrq.include_configs = false;
    mrq.include_partitions = false;
    mrq.topics = admin__calloc(b, n, sizeof(*mrq.topics));
    if (b->oom) {
        admin__respond(b, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        names[i] = rq->topics[i].name;
    }
    admin__find_dups(b, names, n, first, dup);
    int32_t nr = 0;
    int32_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (first[i] != i) {
            continue;
        }
        struct kp_create_partitions_response_create_partitions_topic_result *o =
            &op->rs.results[nr];
        kp_create_partitions_response_create_partitions_topic_result_init(o);
        o->name = rq->topics[i].name;
        op->src[nr] = (int32_t)i;
        op->sent[nr] = -1;
        nr++;
        if (dup[i]) {
            o->error_code = KP_ERROR_INVALID_REQUEST;
            o->error_message = admin__msg(b, "Duplicate topic in request.");
            continue;
        }
        kp_meta_describe_topics_request_meta_describable_topic_init(&mrq.topics[ns]);
        mrq.topics[ns].name = o->name;
        op->sent[nr - 1] = ns++;
    }
    op->rs.results_count = nr;
    mrq.topics_count = ns;
    if (ns == 0 || b->oom) {
        admin__respond(b, &op->rs);
        return;
    }
    admin__call(b, ADMIN__RPC_DESCRIBE, &mrq, admin__partitions_described_cb, op);
}

/* ---- DescribeConfigs ---- */

struct admin__describe {
    struct admin__base b;                         /* shared state */
    const struct kp_describe_configs_request *rq; /* the decoded request */
    struct kp_describe_configs_response rs;       /* the response being filled */
    int32_t *sent; /* per result: index in the metadata describe request, or -1 */
};

/* True when the resource asks for key `name` (a null key list asks for every key). */
static bool
admin__key_wanted(const struct kp_describe_configs_request_describe_configs_resource *res,
                  const char *name)
{
    if (res->configuration_keys_count < 0) {
        return true;
    }
    for (int32_t i = 0; i < res->configuration_keys_count; i++) {
        if (kp_str_eq_cstr(res->configuration_keys[i], name)) {
            return true;
        }
    }
    return false;
}

/* Fills one entry; synonyms are added by the caller. */
static void
admin__describe_entry(struct admin__describe *op,
                      struct kp_describe_configs_response_describe_configs_resource_result *c,
                      const char *name, struct kp_str value, int8_t source, bool read_only,
                      int8_t type, const char *doc)
{
    kp_describe_configs_response_describe_configs_resource_result_init(c);
    c->name = kp_str_from(name);
    c->value = value;
    c->read_only = read_only;
    c->is_default = op->b.version == 0 && source == AGENT__SRC_DEFAULT;
    c->config_source = source;
    c->is_sensitive = false;
    c->config_type = type;
    c->documentation =
        op->rq->include_documentation && doc != NULL ? kp_str_from(doc) : KP_STR_NULL;
    c->synonyms = NULL;
    c->synonyms_count = 0;
}

static void
admin__describe_topic(struct admin__describe *op,
                      const struct kp_describe_configs_request_describe_configs_resource *res,
                      struct kp_describe_configs_response_describe_configs_result *o,
                      const struct kp_meta_describe_topics_response_meta_described_topic *d)
{
    struct admin__base *b = &op->b;
    int32_t n = 0;
    struct admin__cfg_val *v =
        admin__copy_cfgs(b, d->configs, sizeof(*d->configs), d->configs_count, &n);
    o->configs = admin__calloc(b, (size_t)n, sizeof(*o->configs));
    if (v == NULL || o->configs == NULL) {
        return;
    }
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++) {
        const char *name = meta_config_key_name(v[i].key);
        if (!admin__key_wanted(res, name)) {
            continue;
        }
        const struct agent__cfg_info *info = agent__cfg_info_find(kp_str_from(name));
        struct kp_describe_configs_response_describe_configs_resource_result *c = &o->configs[k++];
        int8_t source = v[i].is_default ? AGENT__SRC_DEFAULT : AGENT__SRC_TOPIC;
        admin__describe_entry(op, c, name, v[i].val, source, false,
                              info != NULL ? info->type : AGENT__CFG_UNKNOWN,
                              info != NULL ? info->doc : NULL);
        if (!op->rq->include_synonyms || b->version < 1) {
            continue;
        }
        /* The topic's own value, then the default it overrides (named by its broker key). */
        c->synonyms = admin__calloc(b, 2, sizeof(*c->synonyms));
        if (c->synonyms == NULL) {
            return;
        }
        int32_t ns = 0;
        if (!v[i].is_default) {
            kp_describe_configs_response_describe_configs_synonym_init(&c->synonyms[ns]);
            c->synonyms[ns].name = kp_str_from(name);
            c->synonyms[ns].value = v[i].val;
            c->synonyms[ns].source = AGENT__SRC_TOPIC;
            ns++;
        }
        kp_describe_configs_response_describe_configs_synonym_init(&c->synonyms[ns]);
        c->synonyms[ns].name =
            kp_str_from(info != NULL && info->broker_synonym != NULL ? info->broker_synonym : name);
        c->synonyms[ns].value = kp_str_from(meta_config_default(v[i].key));
        c->synonyms[ns].source = AGENT__SRC_DEFAULT;
        ns++;
        c->synonyms_count = ns;
    }
    o->configs_count = k;
}

/* One broker setting for DescribeConfigs on the agent's own BROKER resource. */
struct admin__broker_cfg {
    const char *name; /* key */
    char value[300];  /* rendered value */
    int8_t type;      /* enum agent__cfg_type */
    int8_t source;    /* enum agent__cfg_source */
    const char *doc;  /* documentation */
};

#define ADMIN__BROKER_MAX 64 /* broker entries at most */

/* The agent's relevant settings, as a Kafka broker would name them where it has a name. */
static size_t admin__broker_cfgs(const struct agent *a, struct admin__broker_cfg *out)
{
    size_t n = 0;
#define ADMIN__B(k, t, s, d, ...)                                                                  \
    do {                                                                                           \
        out[n].name = (k);                                                                         \
        out[n].type = (t);                                                                         \
        out[n].source = (s);                                                                       \
        out[n].doc = (d);                                                                          \
        snprintf(out[n].value, sizeof(out[n].value), __VA_ARGS__);                                 \
        n++;                                                                                       \
    } while (0)
    const struct agent_config *c = &a->cfg;
    const int8_t st = AGENT__SRC_STATIC_BROKER;
    ADMIN__B("broker.id", AGENT__CFG_INT, st, "Id this agent reports (node.id).", "%lld",
             (long long)c->node_id);
    ADMIN__B("node.id", AGENT__CFG_INT, st, "Id this agent reports.", "%lld",
             (long long)c->node_id);
    ADMIN__B("cluster.id", AGENT__CFG_STRING, st, "Cluster id reported to clients.", "%s",
             c->cluster_id != NULL ? c->cluster_id : "");
    ADMIN__B("listeners", AGENT__CFG_LIST, st, "Address the Kafka listener binds.",
             "PLAINTEXT://%s", c->listen != NULL ? c->listen : "");
    ADMIN__B("advertised.listeners", AGENT__CFG_LIST, st, "Address given to clients in Metadata.",
             "PLAINTEXT://%s:%d", a->adv_host, a->adv_port);
    ADMIN__B("num.partitions", AGENT__CFG_INT, st,
             "Partitions of auto-created topics and of CreateTopics with -1.", "%lld",
             (long long)c->default_partitions);
    ADMIN__B("default.replication.factor", AGENT__CFG_SHORT, AGENT__SRC_DEFAULT,
             "Replication factor reported for topics; the object store provides durability.", "1");
    ADMIN__B("auto.create.topics.enable", AGENT__CFG_BOOLEAN, st,
             "Metadata requests may create missing topics.", "%s",
             c->auto_create_topics ? "true" : "false");
    ADMIN__B("socket.request.max.bytes", AGENT__CFG_INT, st, "Largest request frame accepted.",
             "%lld", (long long)c->max_frame_bytes);
    ADMIN__B("max.connections", AGENT__CFG_INT, st, "Connections beyond this are closed.", "%lld",
             (long long)c->max_connections);
    ADMIN__B("connections.max.idle.ms", AGENT__CFG_LONG, st,
             "Idle connections are closed after this long.", "%lld", (long long)c->idle_timeout_ms);
    ADMIN__B("flush.interval.ms", AGENT__CFG_LONG, st,
             "Runnel: age at which buffered produce data is sealed and uploaded.", "%lld",
             (long long)c->flush_interval_ms);
    ADMIN__B("flush.bytes", AGENT__CFG_LONG, st,
             "Runnel: size at which buffered produce data is sealed and uploaded.", "%lld",
             (long long)c->flush_bytes);
    ADMIN__B("buffer.max.bytes", AGENT__CFG_LONG, st,
             "Runnel: produce bytes held before reads pause (backpressure).", "%lld",
             (long long)c->buffer_max_bytes);
    ADMIN__B("cache.bytes", AGENT__CFG_LONG, st, "Runnel: chunk cache capacity of the read path.",
             "%lld", (long long)c->cache_bytes);
    ADMIN__B("zstd.level", AGENT__CFG_INT, st, "Runnel: compression level of sealed chunks.",
             "%lld", (long long)c->zstd_level);
    /* Defaults of topic configs under their broker names. */
    for (int k = 0; k < META_CFG_COUNT && n < ADMIN__BROKER_MAX; k++) {
        const struct agent__cfg_info *info =
            agent__cfg_info_find(kp_str_from(meta_config_key_name(k)));
        if (info == NULL || info->broker_synonym == NULL) {
            continue;
        }
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++) {
            seen = strcmp(out[j].name, info->broker_synonym) == 0;
        }
        if (!seen) {
            ADMIN__B(info->broker_synonym, info->type, AGENT__SRC_DEFAULT, info->doc, "%s",
                     meta_config_default(k));
        }
    }
#undef ADMIN__B
    return n;
}

static void
admin__describe_broker(struct admin__describe *op,
                       const struct kp_describe_configs_request_describe_configs_resource *res,
                       struct kp_describe_configs_response_describe_configs_result *o)
{
    struct admin__base *b = &op->b;
    char id[32];
    snprintf(id, sizeof(id), "%lld", (long long)b->a->cfg.node_id);
    if (res->resource_name.len == 0) {
        o->configs_count = 0; /* no cluster-wide dynamic defaults exist */
        return;
    }
    if (!kp_str_eq_cstr(res->resource_name, id)) {
        o->error_code = KP_ERROR_INVALID_REQUEST;
        o->error_message =
            admin__msg(b,
                       "Unexpected broker id, expected %s or empty string, but "
                       "received %.*s",
                       id, admin__plen(res->resource_name), admin__pptr(res->resource_name));
        return;
    }
    struct admin__broker_cfg *all = admin__calloc(b, ADMIN__BROKER_MAX, sizeof(*all));
    if (all == NULL) {
        return;
    }
    size_t n = admin__broker_cfgs(b->a, all);
    o->configs = admin__calloc(b, n, sizeof(*o->configs));
    if (o->configs == NULL) {
        return;
    }
    int32_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!admin__key_wanted(res, all[i].name)) {
            continue;
        }
        struct kp_describe_configs_response_describe_configs_resource_result *c = &o->configs[k++];
        admin__describe_entry(op, c, all[i].name, kp_str_from(all[i].value), all[i].source, true,
                              all[i].type, all[i].doc);
        if (op->rq->include_synonyms && b->version >= 1) {
            c->synonyms = admin__calloc(b, 1, sizeof(*c->synonyms));
            if (c->synonyms == NULL) {
                return;
            }
            kp_describe_configs_response_describe_configs_synonym_init(&c->synonyms[0]);
            c->synonyms[0].name = c->name;
            c->synonyms[0].value = c->value;
            c->synonyms[0].source = all[i].source;
            c->synonyms_count = 1;
        }
    }
    o->configs_count = k;
}

static void admin__described_cb(void *arg, int status, const void *response)
{
    struct admin__describe *op = arg;
    struct admin__base *b = &op->b;
    const struct kp_meta_describe_topics_response *r = response;
    for (int32_t i = 0; i < op->rs.results_count; i++) {
        struct kp_describe_configs_response_describe_configs_result *o = &op->rs.results[i];
        int32_t s = op->sent[i];
        if (s < 0) {
            continue;
        }
        if (status != 0 || r == NULL || s >= r->topics_count) {
            o->error_code = KP_ERROR_REQUEST_TIMED_OUT;
            o->error_message = admin__unavailable(b, status != 0 ? status : -EPROTO);
            continue;
        }
        const struct kp_meta_describe_topics_response_meta_described_topic *d = &r->topics[s];
        if (d->error_code != 0) {
            o->error_code = d->error_code;
            o->error_message =
                admin__explain(b, d->error_code, o->resource_name, NULL, NULL, 0, -1);
            continue;
        }
        admin__describe_topic(op, &op->rq->resources[i], o, d);
    }
    admin__respond(b, &op->rs);
}

void agent_handle_describe_configs(struct agent_req *req)
{
    const struct kp_describe_configs_request *rq = req->body;
    struct admin__describe *op = kp_arena_calloc(&req->arena, 1, sizeof(*op));
    if (op == NULL) {
        agent_req_close_conn(req, "out of request memory");
        return;
    }
    struct admin__base *b = &op->b;
    admin__base_init(b, req);
    op->rq = rq;
    kp_describe_configs_response_init(&op->rs);
    size_t n = rq->resources_count > 0 ? (size_t)rq->resources_count : 0;
    op->rs.results = admin__calloc(b, n, sizeof(*op->rs.results));
    op->sent = admin__calloc(b, n, sizeof(*op->sent));
    struct kp_meta_describe_topics_request mrq;
    kp_meta_describe_topics_request_init(&mrq);
    mrq.include_configs = true;
    mrq.include_partitions = false;
    mrq.topics = admin__calloc(b, n, sizeof(*mrq.topics));
    if (b->oom) {
        admin__respond(b, NULL);
        return;
    }
    int32_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        const struct kp_describe_configs_request_describe_configs_resource *res = &rq->resources[i];
        struct kp_describe_configs_response_describe_configs_result *o = &op->rs.results[i];
        kp_describe_configs_response_describe_configs_result_init(o);
        o->resource_type = res->resource_type;
        o->resource_name = res->resource_name;
        o->configs_count = 0;
        op->sent[i] = -1;
        if (res->resource_type == ADMIN__RES_TOPIC) {
            struct kp_str nm = res->resource_name;
            int16_t e = meta_topic_name_check(admin__pptr(nm), nm.len > 0 ? (size_t)nm.len : 0);
            if (e != 0) {
                o->error_code = e;
                o->error_message = admin__explain(b, e, nm, NULL, NULL, 0, -1);
                continue;
            }
            kp_meta_describe_topics_request_meta_describable_topic_init(&mrq.topics[ns]);
            mrq.topics[ns].name = nm;
            op->sent[i] = ns++;
        } else if (res->resource_type == ADMIN__RES_BROKER) {
            admin__describe_broker(op, res, o);
        } else {
            o->error_code = KP_ERROR_INVALID_REQUEST;
            o->error_message = admin__msg(b,
                                          "Unsupported resource type %d; Runnel describes "
                                          "TOPIC (2) and BROKER (4) resources.",
                                          res->resource_type);
        }
    }
    op->rs.results_count = (int32_t)n;
    mrq.topics_count = ns;
    if (ns == 0 || b->oom) {
        admin__respond(b, &op->rs);
        return;
    }
    admin__call(b, ADMIN__RPC_DESCRIBE, &mrq, admin__described_cb, op);
}

/* ---- AlterConfigs and IncrementalAlterConfigs ---- */

/* One requested change, in IncrementalAlterConfigs terms. */
struct admin__alt_cfg {
    struct kp_str name;  /* key */
    int8_t op;           /* ADMIN__OP_* */
    struct kp_str value; /* value (SET, APPEND, SUBTRACT) */
};

/* One resource of either request. */
struct admin__alt_res {
    int8_t type;                 /* resource type */
    struct kp_str name;          /* resource name */
    int16_t err;                 /* Kafka error, 0 so far */
    struct kp_str msg;           /* error message */
    int32_t n;                   /* changes */
    struct admin__alt_cfg *cfgs; /* the changes */
    bool need_current;           /* APPEND/SUBTRACT: the current values are read first */
    int32_t sent;                /* index in the current metadata request, or -1 */
    struct kp_str *cur;          /* current values by metadata config key (need_current) */
    struct kp_str *m_names;      /* keys sent to the metadata service */
    struct kp_str *m_values;     /* values sent (null for deletions) */
    int32_t m_n;                 /* entries sent */
};

struct admin__alter {
    struct admin__base b;       /* shared state */
    bool incremental;           /* IncrementalAlterConfigs, else the legacy AlterConfigs */
    bool validate_only;         /* change nothing */
    int32_t n;                  /* resources */
    struct admin__alt_res *res; /* resources in request order */
};

static void admin__alter_respond(struct admin__alter *op)
{
    struct admin__base *b = &op->b;
    if (op->incremental) {
        struct kp_incremental_alter_configs_response rs;
        kp_incremental_alter_configs_response_init(&rs);
        rs.responses = admin__calloc(b, (size_t)op->n, sizeof(*rs.responses));
        for (int32_t i = 0; rs.responses != NULL && i < op->n; i++) {
            struct kp_incremental_alter_configs_response_alter_configs_resource_response *o =
                &rs.responses[i];
            kp_incremental_alter_configs_response_alter_configs_resource_response_init(o);
            o->error_code = op->res[i].err;
            o->error_message = op->res[i].err != 0 ? op->res[i].msg : KP_STR_NULL;
            o->resource_type = op->res[i].type;
            o->resource_name = op->res[i].name;
        }
        rs.responses_count = op->n;
        admin__respond(b, &rs);
        return;
    }
    struct kp_alter_configs_response rs;
    kp_alter_configs_response_init(&rs);
    rs.responses = admin__calloc(b, (size_t)op->n, sizeof(*rs.responses));
    for (int32_t i = 0; rs.responses != NULL && i < op->n; i++) {
        struct kp_alter_configs_response_alter_configs_resource_response *o = &rs.responses[i];
        kp_alter_configs_response_alter_configs_resource_response_init(o);
        o->error_code = op->res[i].err;
        o->error_message = op->res[i].err != 0 ? op->res[i].msg : KP_STR_NULL;
        o->resource_type = op->res[i].type;
        o->resource_name = op->res[i].name;
    }
    rs.responses_count = op->n;
    admin__respond(b, &rs);
}

static void admin__altered_cb(void *arg, int status, const void *response)
{
    struct admin__alter *op = arg;
    struct admin__base *b = &op->b;
    const struct kp_meta_alter_topic_configs_response *r = response;
    for (int32_t i = 0; i < op->n; i++) {
        struct admin__alt_res *x = &op->res[i];
        if (x->sent < 0 || x->err != 0) {
            continue;
        }
        if (status != 0 || r == NULL || x->sent >= r->topics_count) {
            x->err = KP_ERROR_REQUEST_TIMED_OUT;
            x->msg = admin__unavailable(b, status != 0 ? status : -EPROTO);
            continue;
        }
        x->err = r->topics[x->sent].error_code;
        if (x->err != 0) {
            x->msg =
                admin__explain(b, x->err, x->name, x->m_names, x->m_values, (size_t)x->m_n, -1);
        } else if (!op->validate_only) {
            agent_topics_invalidate(b->a, x->name);
            rn_log(RN_LOG_INFO, "topic_configs_altered", "topic=%.*s changes=%d",
                   admin__plen(x->name), admin__pptr(x->name), x->m_n);
        }
    }
    admin__alter_respond(op);
}

/* Builds the metadata changes of one topic resource; false leaves x->err set. */
static bool admin__alter_changes(struct admin__alter *op, struct admin__alt_res *x,
                                 struct kp_meta_alter_topic_configs_request_meta_alterable_topic *m)
{
    struct admin__base *b = &op->b;
    int32_t cap = x->n + (op->incremental ? 0 : META_CFG_COUNT);
    m->configs = admin__calloc(b, (size_t)cap, sizeof(*m->configs));
    x->m_names = admin__calloc(b, (size_t)cap, sizeof(*x->m_names));
    x->m_values = admin__calloc(b, (size_t)cap, sizeof(*x->m_values));
    if (b->oom) {
        return false;
    }
    int32_t k = 0;
    for (int32_t i = 0; i < x->n; i++) {
        const struct admin__alt_cfg *c = &x->cfgs[i];
        struct kp_str value = c->value;
        int8_t mop = c->op == ADMIN__OP_DELETE ? 1 : 0;
        if (c->op == ADMIN__OP_APPEND || c->op == ADMIN__OP_SUBTRACT) {
            int key = meta_config_key_find(admin__pptr(c->name), (size_t)c->name.len);
            char *buf = admin__calloc(b, ADMIN__VALUE_MAX, 1);
            const char *cur = key >= 0 && x->cur != NULL && x->cur[key].ptr != NULL
                                  ? x->cur[key].ptr
                                  : (key >= 0 ? meta_config_default(key) : "");
            if (buf == NULL) {
                return false;
            }
            if (agent__cfg_list_edit(cur, c->value, c->op == ADMIN__OP_APPEND, buf,
                                     ADMIN__VALUE_MAX) != 0) {
                x->err = KP_ERROR_INVALID_CONFIG;
                x->msg = admin__msg(b, "The value of %.*s would be too long.", admin__plen(c->name),
                                    admin__pptr(c->name));
                return false;
            }
            value = kp_str_from(buf);
        }
        kp_meta_alter_topic_configs_request_meta_alterable_config_init(&m->configs[k]);
        m->configs[k].name = c->name;
        m->configs[k].operation = mop;
        m->configs[k].value = mop == 1 ? KP_STR_NULL : value;
        x->m_names[k] = c->name;
        x->m_values[k] = m->configs[k].value;
        k++;
    }
    if (!op->incremental) {
        /* AlterConfigs replaces the whole set: every key not given returns to its default. */
        for (int key = 0; key < META_CFG_COUNT; key++) {
            const char *name = meta_config_key_name(key);
            bool given = false;
            for (int32_t i = 0; i < x->n && !given; i++) {
                given = kp_str_eq_cstr(x->cfgs[i].name, name);
            }
            if (given) {
                continue;
            }
            kp_meta_alter_topic_configs_request_meta_alterable_config_init(&m->configs[k]);
            m->configs[k].name = kp_str_from(name);
            m->configs[k].operation = 1;
            m->configs[k].value = KP_STR_NULL;
            x->m_names[k] = m->configs[k].name;
            x->m_values[k] = KP_STR_NULL;
            k++;
        }
    }
    m->configs_count = k;
    x->m_n = k;
    return true;
}

static void admin__alter_send(struct admin__alter *op)
{
    struct admin__base *b = &op->b;
    struct kp_meta_alter_topic_configs_request mrq;
    kp_meta_alter_topic_configs_request_init(&mrq);
    mrq.validate_only = op->validate_only;
    mrq.topics = admin__calloc(b, (size_t)op->n, sizeof(*mrq.topics));
    int32_t ns = 0;
    for (int32_t i = 0; mrq.topics != NULL && i < op->n; i++) {
        struct admin__alt_res *x = &op->res[i];
        x->sent = -1;
        if (x->err != 0 || x->type != ADMIN__RES_TOPIC) {
            continue;
        }
        struct kp_meta_alter_topic_configs_request_meta_alterable_topic *m = &mrq.topics[ns];
        kp_meta_alter_topic_configs_request_meta_alterable_topic_init(m);
        m->name = x->name;
        if (!admin__alter_changes(op, x, m)) {
            continue;
        }
        x->sent = ns++;
    }
    mrq.topics_count = ns;
    if (ns == 0 || b->oom) {
        admin__alter_respond(op);
        return;
    }
    admin__call(b, ADMIN__RPC_ALTER, &mrq, admin__altered_cb, op);
}

/* Current values arrived for the resources with APPEND/SUBTRACT. */
static void admin__alter_current_cb(void *arg, int status, const void *response)
{
    struct admin__alter *op = arg;
    struct admin__base *b = &op->b;
    const struct kp_meta_describe_topics_response *r = response;
    for (int32_t i = 0; i < op->n; i++) {
        struct admin__alt_res *x = &op->res[i];
        if (x->sent < 0 || x->err != 0) {
            continue;
        }
        if (status != 0 || r == NULL || x->sent >= r->topics_count) {
            x->err = KP_ERROR_REQUEST_TIMED_OUT;
            x->msg = admin__unavailable(b, status != 0 ? status : -EPROTO);
            continue;
        }
        const struct kp_meta_describe_topics_response_meta_described_topic *d = &r->topics[x->sent];
        if (d->error_code != 0) {
            x->err = d->error_code;
            x->msg = admin__explain(b, d->error_code, x->name, NULL, NULL, 0, -1);
            continue;
        }
        x->cur = admin__calloc(b, META_CFG_COUNT, sizeof(*x->cur));
        for (int32_t k = 0; x->cur != NULL && k < d->configs_count; k++) {
            struct kp_str nm = d->configs[k].name;
            int key = meta_config_key_find(admin__pptr(nm), nm.len > 0 ? (size_t)nm.len : 0);
            if (key >= 0 && d->configs[k].value.len >= 0) {
                x->cur[key] = admin__dup(b, d->configs[k].value);
            }
        }
    }
    admin__alter_send(op);
}

/* Checks what the metadata service cannot see, then reads current values or sends. */
static void admin__alter_start(struct admin__alter *op)
{
    struct admin__base *b = &op->b;
    struct agent_req *req = b->req;
    size_t n = (size_t)op->n;
    struct kp_str *keys = admin__calloc(b, n, sizeof(*keys));
    size_t *first = admin__calloc(b, n, sizeof(*first));
    bool *dup = admin__calloc(b, n, sizeof(*dup));
    if (b->oom) {
        admin__respond(b, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        /* Resources are keyed by type byte and name. */
        struct kp_str nm = op->res[i].name;
        size_t len = nm.len > 0 ? (size_t)nm.len : 0;
        char *k = admin__calloc(b, len + 2, 1);
        if (k == NULL) {
            admin__respond(b, NULL);
            return;
        }
        k[0] = (char)op->res[i].type;
        k[1] = nm.len < 0 ? 0 : 1;
        if (len > 0) {
            memcpy(k + 2, nm.ptr, len);
        }
        keys[i] = (struct kp_str){k, (int32_t)(len + 2)};
    }
    admin__find_dups(b, keys, n, first, dup);
    int32_t n_current = 0;
    for (size_t i = 0; i < n; i++) {
        struct admin__alt_res *x = &op->res[i];
        x->sent = -1;
        if (dup[i] || first[i] != i) {
            x->err = KP_ERROR_INVALID_REQUEST;
            x->msg = admin__msg(b, "Duplicate resource in request.");
            continue;
        }
        if (x->type == ADMIN__RES_BROKER || x->type == ADMIN__RES_BROKER_LOGGER) {
            x->err = KP_ERROR_INVALID_REQUEST;
            x->msg = admin__msg(b, "Cannot update these configs dynamically: agent settings come "
                                   "from the configuration file, RUNNEL_* variables and flags.");
            continue;
        }
        if (x->type != ADMIN__RES_TOPIC) {
            x->err = KP_ERROR_INVALID_REQUEST;
            x->msg = admin__msg(b,
                                "Unsupported resource type %d; only TOPIC (2) configs can be "
                                "altered.",
                                x->type);
            continue;
        }
        struct kp_str *cn = admin__calloc(b, (size_t)x->n, sizeof(*cn));
        size_t *cf = admin__calloc(b, (size_t)x->n, sizeof(*cf));
        bool *cd = admin__calloc(b, (size_t)x->n, sizeof(*cd));
        if (b->oom) {
            admin__respond(b, NULL);
            return;
        }
        for (int32_t k = 0; k < x->n; k++) {
            cn[k] = x->cfgs[k].name;
        }
        admin__find_dups(b, cn, (size_t)x->n, cf, cd);
        for (int32_t k = 0; k < x->n && x->err == 0; k++) {
            const struct admin__alt_cfg *c = &x->cfgs[k];
            if (cd[k] || cf[k] != (size_t)k) {
                x->err = KP_ERROR_INVALID_REQUEST;
                x->msg = admin__msg(b, "Error due to duplicate config keys");
            } else if (c->op < ADMIN__OP_SET || c->op > ADMIN__OP_SUBTRACT) {
                x->err = KP_ERROR_INVALID_REQUEST;
                x->msg = admin__msg(b, "Unknown config operation %d for %.*s", c->op,
                                    admin__plen(c->name), admin__pptr(c->name));
            } else if (c->op != ADMIN__OP_DELETE && c->value.len < 0) {
                x->err = op->incremental ? KP_ERROR_INVALID_REQUEST : KP_ERROR_INVALID_CONFIG;
                x->msg = admin__msg(b, "Null value not supported for : %.*s", admin__plen(c->name),
                                    admin__pptr(c->name));
            } else if (c->op == ADMIN__OP_APPEND || c->op == ADMIN__OP_SUBTRACT) {
                const struct agent__cfg_info *info = agent__cfg_info_find(c->name);
                int key = meta_config_key_find(admin__pptr(c->name), (size_t)c->name.len);
                if (key < 0) {
                    x->err = KP_ERROR_INVALID_CONFIG;
                    x->msg = admin__msg(b, "Unknown topic config name: %.*s", admin__plen(c->name),
                                        admin__pptr(c->name));
                } else if (info == NULL || info->type != AGENT__CFG_LIST) {
                    x->err = KP_ERROR_INVALID_CONFIG;
                    x->msg = admin__msg(b, "Config value %s is not allowed for config key: %.*s",
                                        c->op == ADMIN__OP_APPEND ? "append" : "subtract",
                                        admin__plen(c->name), admin__pptr(c->name));
                } else {
                    x->need_current = true;
                }
            }
        }
        if (x->err == 0 && x->need_current) {
            n_current++;
        }
    }
    (void)req;
    if (n_current == 0) {
        admin__alter_send(op);
        return;
    }
    struct kp_meta_describe_topics_request mrq;
    kp_meta_describe_topics_request_init(&mrq);
    mrq.include_configs = true;
    mrq.include_partitions = false;
    mrq.topics = admin__calloc(b, (size_t)n_current, sizeof(*mrq.topics));
    if (b->oom) {
        admin__respond(b, NULL);
        return;
    }
    int32_t ns = 0;
    for (int32_t i = 0; i < op->n; i++) {
        struct admin__alt_res *x = &op->res[i];
        if (x->err == 0 && x->need_current) {
            kp_meta_describe_topics_request_meta_describable_topic_init(&mrq.topics[ns]);
            mrq.topics[ns].name = x->name;
            x->sent = ns++;
        }
    }
    mrq.topics_count = ns;
    admin__call(b, ADMIN__RPC_DESCRIBE, &mrq, admin__alter_current_cb, op);
}

static struct admin__alter *admin__alter_new(struct agent_req *req, int32_t count)
{
    struct admin__alter *op = kp_arena_calloc(&req->arena, 1, sizeof(*op));
    if (op == NULL) {
        agent_req_close_conn(req, "out of request memory");
        return NULL;
    }
    admin__base_init(&op->b, req);
    op->n = count > 0 ? count : 0;
    op->res = admin__calloc(&op->b, (size_t)op->n, sizeof(*op->res));
    if (op->b.oom) {
        admin__respond(&op->b, NULL);
        return NULL;
    }
    return op;
}

void agent_handle_alter_configs(struct agent_req *req)
{
    const struct kp_alter_configs_request *rq = req->body;
    struct admin__alter *op = admin__alter_new(req, rq->resources_count);
    if (op == NULL) {
        return;
    }
    op->validate_only = rq->validate_only;
    for (int32_t i = 0; i < op->n; i++) {
        const struct kp_alter_configs_request_alter_configs_resource *r = &rq->resources[i];
        struct admin__alt_res *x = &op->res[i];
        x->type = r->resource_type;
        x->name = r->resource_name;
        x->n = r->configs_count > 0 ? r->configs_count : 0;
        x->cfgs = admin__calloc(&op->b, (size_t)x->n, sizeof(*x->cfgs));
        for (int32_t k = 0; x->cfgs != NULL && k < x->n; k++) {
            x->cfgs[k].name = r->configs[k].name;
            x->cfgs[k].op = ADMIN__OP_SET;
            x->cfgs[k].value = r->configs[k].value;
        }
    }
    admin__alter_start(op);
}

void agent_handle_incremental_alter_configs(struct agent_req *req)
{
    const struct kp_incremental_alter_configs_request *rq = req->body;
    struct admin__alter *op = admin__alter_new(req, rq->resources_count);
    if (op == NULL) {
        return;
    }
    op->incremental = true;
    op->validate_only = rq->validate_only;
    for (int32_t i = 0; i < op->n; i++) {
        const struct kp_incremental_alter_configs_request_alter_configs_resource *r =
            &rq->resources[i];
        struct admin__alt_res *x = &op->res[i];
        x->type = r->resource_type;
        x->name = r->resource_name;
        x->n = r->configs_count > 0 ? r->configs_count : 0;
        x->cfgs = admin__calloc(&op->b, (size_t)x->n, sizeof(*x->cfgs));
        for (int32_t k = 0; x->cfgs != NULL && k < x->n; k++) {
            x->cfgs[k].name = r->configs[k].name;
            x->cfgs[k].op = r->configs[k].config_operation;
            x->cfgs[k].value = r->configs[k].value;
        }
    }
    admin__alter_start(op);
}
