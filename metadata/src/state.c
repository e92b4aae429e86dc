/*
 * The deterministic metadata state machine (see state.h): topic/config validation as Kafka does
 * it, offset assignment and the extent index, the idempotent-producer window, agents, leases,
 * and the canonical serialisation used for snapshots and for comparing states.
 */
#include "runnel/metadata/state.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "groups_int.h"
#include "internal.h"
#include "runnel/metadata/groups.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/mem.h"

/* ---- hashing and the open-addressing index ---- */

static uint64_t meta__hash(const void *p, size_t n, uint64_t seed)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static uint64_t meta__mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef bool (*meta__eq_fn)(const struct meta_state *s, uint32_t idx, const void *key);

static void meta__index_insert_raw(struct meta__index *ix, uint64_t h, uint32_t idx)
{
    uint32_t mask = ix->cap - 1;
    uint32_t top = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        if (ix->slots[i] == 0) {
            ix->slots[i] = ((uint64_t)top << 32) | (uint64_t)(idx + 1);
            ix->n++;
            return;
        }
    }
}

static void meta__index_grow(struct meta__index *ix)
{
    if ((uint64_t)(ix->n + 1) * 4 < (uint64_t)ix->cap * 3) {
        return;
    }
    struct meta__index old = *ix;
    ix->cap = old.cap ? old.cap * 2 : 64;
    ix->slots = kp_xcalloc(ix->cap, sizeof(uint64_t));
    ix->n = 0;
    for (uint32_t i = 0; i < old.cap; i++) {
        if (old.slots[i] != 0) {
            /* The low 32 bits of the original hash are lost; re-derive the position from the
             * stored top half, which is as good a hash. */
            uint64_t top = old.slots[i] >> 32;
            meta__index_insert_raw(ix, (top << 32) | top,
                                   (uint32_t)(old.slots[i] & 0xffffffffu) - 1);
        }
    }
    free(old.slots);
}

/* Hashes are stored as (top, top): both halves of the probing hash come from the top 32 bits. */
static uint64_t meta__ix_hash(uint64_t h)
{
    uint64_t top = h >> 32;
    return (top << 32) | top;
}

static void meta__index_add(struct meta__index *ix, uint64_t h, uint32_t idx)
{
    meta__index_grow(ix);
    meta__index_insert_raw(ix, meta__ix_hash(h), idx);
}

static int64_t meta__index_find(const struct meta_state *s, const struct meta__index *ix,
                                uint64_t h, meta__eq_fn eq, const void *key)
{
    if (ix->cap == 0) {
        return -1;
    }
    h = meta__ix_hash(h);
    uint32_t mask = ix->cap - 1;
    uint32_t top = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        uint64_t v = ix->slots[i];
        if (v == 0) {
            return -1;
        }
        uint32_t idx = (uint32_t)(v & 0xffffffffu) - 1;
        if ((uint32_t)(v >> 32) == top && eq(s, idx, key)) {
            return idx;
        }
    }
}

static void meta__index_free(struct meta__index *ix)
{
    free(ix->slots);
    memset(ix, 0, sizeof(*ix));
}

struct meta__strkey {
    const char *p; /* bytes */
    size_t n;      /* length */
};

static bool meta__topic_eq(const struct meta_state *s, uint32_t idx, const void *key)
{
    const struct meta__strkey *k = key;
    const char *name = s->topics[idx].name;
    return strlen(name) == k->n && memcmp(name, k->p, k->n) == 0;
}

static bool meta__object_eq(const struct meta_state *s, uint32_t idx, const void *key)
{
    const struct meta__strkey *k = key;
    const char *name = s->objects[idx].key;
    return strlen(name) == k->n && memcmp(name, k->p, k->n) == 0;
}

struct meta__pkey {
    int64_t pid;  /* producer id */
    uint32_t gid; /* partition gid */
};

static bool meta__pstate_eq(const struct meta_state *s, uint32_t idx, const void *key)
{
    const struct meta__pkey *k = key;
    return s->pstates[idx].producer_id == k->pid && s->pstates[idx].gid == k->gid;
}

static uint64_t meta__pkey_hash(int64_t pid, uint32_t gid)
{
    return meta__mix((uint64_t)pid * 0x100000001b3ull ^ meta__mix(gid));
}

static char *meta__strndup(const char *p, size_t n)
{
    char *s = kp_xmalloc(n + 1);
    if (n > 0) {
        memcpy(s, p, n);
    }
    s[n] = '\0';
    return s;
}

/* ---- life cycle ---- */

void meta_state_init(struct meta_state *s, const uint8_t *seed)
{
    memset(s, 0, sizeof(*s));
    if (seed != NULL) {
        memcpy(s->cluster_seed, seed, sizeof(s->cluster_seed));
    }
    s->next_agent_id = 1;
    s->commit_deadline_ms = META_DEFAULT_COMMIT_DEADLINE_MS;
}

/* ---- extent arrays ---- */

/*
 * A partition's extents are one contiguous array (binary search by offset and timestamp). Small
 * arrays live on the heap; from META_EXT_MAP_MIN bytes on an array is its own anonymous mapping
 * and grows with mremap, which moves page-table entries instead of copying the extents. With
 * realloc, growing 1,000 partitions of 10,000 extents (which a commit to all of them does in
 * one go, since they fill up together) copied ~560 MB on the loop thread: a 0.3 s stall.
 */
#define META_EXT_MAP_MIN ((size_t)256 << 10)

static size_t meta__ext_bytes(uint32_t cap)
{
    return sizeof(struct meta_extent) * (size_t)cap;
}

static bool meta__ext_mapped(uint32_t cap)
{
    return meta__ext_bytes(cap) >= META_EXT_MAP_MIN;
}

static size_t meta__ext_map_len(uint32_t cap)
{
    return (meta__ext_bytes(cap) + 4095) & ~(size_t)4095;
}

static void meta__ext_oom(size_t n)
{
    fprintf(stderr, "runnel: out of memory mapping %zu bytes of extents\n", n);
    abort();
}

/* Resizes an extent array of capacity `old_cap` (NULL when 0) to `new_cap` > old_cap, keeping
 * its contents; never fails (aborts without memory, like kp_xrealloc). */
static struct meta_extent *meta__ext_resize(struct meta_toucher *tq, struct meta_extent *old,
                                            uint32_t old_cap, uint32_t new_cap)
{
    if (!meta__ext_mapped(new_cap)) {
        return kp_xrealloc(old, meta__ext_bytes(new_cap));
    }
    size_t len = meta__ext_map_len(new_cap);
    void *p;
    if (old != NULL && meta__ext_mapped(old_cap)) {
        meta__toucher_forget_begin(tq, old, meta__ext_map_len(old_cap));
        p = mremap(old, meta__ext_map_len(old_cap), len, MREMAP_MAYMOVE);
        meta__toucher_forget_end(tq);
    } else {
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED && old != NULL) {
            memcpy(p, old, meta__ext_bytes(old_cap));
            free(old);
        }
    }
    if (p == MAP_FAILED) {
        meta__ext_oom(len);
    }
    return p;
}

static void meta__ext_free(struct meta_toucher *tq, struct meta_extent *e, uint32_t cap)
{
    if (e == NULL) {
        return;
    }
    if (meta__ext_mapped(cap)) {
        meta__toucher_forget_begin(tq, e, meta__ext_map_len(cap));
        munmap(e, meta__ext_map_len(cap));
        meta__toucher_forget_end(tq);
    } else {
        free(e);
    }
}

size_t meta_state_mapped_bytes(const struct meta_state *s)
{
    size_t n = 0;
    for (uint32_t i = 0; i < s->n_topics; i++) {
        for (uint32_t p = 0; p < s->topics[i].n_parts; p++) {
            uint32_t cap = s->topics[i].parts[p].cap_ext;
            n += meta__ext_mapped(cap) ? meta__ext_map_len(cap) : 0;
        }
    }
    return n;
}

static void meta__topic_free(struct meta_toucher *tq, struct meta_topic *t)
{
    for (uint32_t i = 0; i < t->n_parts; i++) {
        meta__ext_free(tq, t->parts[i].ext, t->parts[i].cap_ext);
    }
    free(t->parts);
    free(t->name);
    for (int k = 0; k < META_CFG_COUNT; k++) {
        free(t->config[k]);
    }
}

int meta_state_start_toucher(struct meta_state *s)
{
    return s->toucher != NULL ? 0 : meta__toucher_start(&s->toucher);
}

uint64_t meta_state_toucher_pages(const struct meta_state *s)
{
    return meta__toucher_pages(s->toucher);
}

void meta_state_free(struct meta_state *s)
{
    meta__toucher_stop(s->toucher);
    s->toucher = NULL;
    for (uint32_t i = 0; i < s->n_topics; i++) {
        meta__topic_free(NULL, &s->topics[i]);
    }
    free(s->topics);
    for (uint32_t i = 0; i < s->n_objects; i++) {
        free(s->objects[i].key);
    }
    free(s->objects);
    free(s->pstates);
    for (uint32_t i = 0; i < s->n_producers; i++) {
        free(s->producers[i].txn_id);
    }
    free(s->producers);
    for (uint32_t i = 0; i < s->n_agents; i++) {
        free(s->agents[i].host);
        free(s->agents[i].zone);
    }
    free(s->agents);
    for (uint32_t i = 0; i < s->n_leases; i++) {
        free(s->leases[i].name);
    }
    free(s->leases);
    meta__index_free(&s->topic_by_name);
    meta__index_free(&s->object_by_key);
    meta__index_free(&s->pstate_by_key);
    meta_groups_free(s->groups);
    memset(s, 0, sizeof(*s));
}

/* ---- configs ---- */

enum meta__cfg_kind {
    CFG_LONG,
    CFG_INT,
    CFG_DOUBLE01,
    CFG_BOOL,
    CFG_ENUM,
    CFG_POLICY,
};

struct meta__cfg_def {
    const char *name;           /* Kafka's key */
    enum meta__cfg_kind kind;   /* value type */
    int64_t min;                /* smallest accepted (numbers) */
    const char *def;            /* Kafka's default */
    const char *const *choices; /* CFG_ENUM values, NULL-terminated */
};

static const char *const meta__ts_types[] = {"CreateTime", "LogAppendTime", NULL};
static const char *const meta__codecs[] = {"uncompressed", "zstd",     "lz4", "snappy",
                                           "gzip",         "producer", NULL};

static const struct meta__cfg_def meta__cfg[META_CFG_COUNT] = {
    [META_CFG_RETENTION_MS] = {"retention.ms", CFG_LONG, -1, "604800000", NULL},
    [META_CFG_RETENTION_BYTES] = {"retention.bytes", CFG_LONG, INT64_MIN, "-1", NULL},
    [META_CFG_CLEANUP_POLICY] = {"cleanup.policy", CFG_POLICY, 0, "delete", NULL},
    [META_CFG_MAX_MESSAGE_BYTES] = {"max.message.bytes", CFG_INT, 0, "1048588", NULL},
    [META_CFG_MESSAGE_TIMESTAMP_TYPE] = {"message.timestamp.type", CFG_ENUM, 0, "CreateTime",
                                         meta__ts_types},
    [META_CFG_SEGMENT_BYTES] = {"segment.bytes", CFG_INT, 14, "1073741824", NULL},
    [META_CFG_SEGMENT_MS] = {"segment.ms", CFG_LONG, 1, "604800000", NULL},
    [META_CFG_SEGMENT_INDEX_BYTES] = {"segment.index.bytes", CFG_INT, 4, "10485760", NULL},
    [META_CFG_SEGMENT_JITTER_MS] = {"segment.jitter.ms", CFG_LONG, 0, "0", NULL},
    [META_CFG_MIN_INSYNC_REPLICAS] = {"min.insync.replicas", CFG_INT, 1, "1", NULL},
    [META_CFG_COMPRESSION_TYPE] = {"compression.type", CFG_ENUM, 0, "producer", meta__codecs},
    [META_CFG_DELETE_RETENTION_MS] = {"delete.retention.ms", CFG_LONG, 0, "86400000", NULL},
    [META_CFG_MIN_COMPACTION_LAG_MS] = {"min.compaction.lag.ms", CFG_LONG, 0, "0", NULL},
    [META_CFG_MAX_COMPACTION_LAG_MS] = {"max.compaction.lag.ms", CFG_LONG, 1, "9223372036854775807",
                                        NULL},
    [META_CFG_MIN_CLEANABLE_DIRTY_RATIO] = {"min.cleanable.dirty.ratio", CFG_DOUBLE01, 0, "0.5",
                                            NULL},
    [META_CFG_FILE_DELETE_DELAY_MS] = {"file.delete.delay.ms", CFG_LONG, 0, "60000", NULL},
    [META_CFG_FLUSH_MESSAGES] = {"flush.messages", CFG_LONG, 1, "9223372036854775807", NULL},
    [META_CFG_FLUSH_MS] = {"flush.ms", CFG_LONG, 0, "9223372036854775807", NULL},
    [META_CFG_INDEX_INTERVAL_BYTES] = {"index.interval.bytes", CFG_INT, 0, "4096", NULL},
    [META_CFG_PREALLOCATE] = {"preallocate", CFG_BOOL, 0, "false", NULL},
    [META_CFG_UNCLEAN_LEADER_ELECTION_ENABLE] = {"unclean.leader.election.enable", CFG_BOOL, 0,
                                                 "false", NULL},
    [META_CFG_MESSAGE_DOWNCONVERSION_ENABLE] = {"message.downconversion.enable", CFG_BOOL, 0,
                                                "true", NULL},
    [META_CFG_MESSAGE_TIMESTAMP_DIFFERENCE_MAX_MS] = {"message.timestamp.difference.max.ms",
                                                      CFG_LONG, 0, "9223372036854775807", NULL},
    [META_CFG_MESSAGE_TIMESTAMP_BEFORE_MAX_MS] = {"message.timestamp.before.max.ms", CFG_LONG, 0,
                                                  "9223372036854775807", NULL},
    [META_CFG_MESSAGE_TIMESTAMP_AFTER_MAX_MS] = {"message.timestamp.after.max.ms", CFG_LONG, 0,
                                                 "9223372036854775807", NULL},
    [META_CFG_LOCAL_RETENTION_MS] = {"local.retention.ms", CFG_LONG, -2, "-2", NULL},
    [META_CFG_LOCAL_RETENTION_BYTES] = {"local.retention.bytes", CFG_LONG, -2, "-2", NULL},
    [META_CFG_REMOTE_STORAGE_ENABLE] = {"remote.storage.enable", CFG_BOOL, 0, "false", NULL},
};

int meta_config_key_find(const char *name, size_t len)
{
    for (int k = 0; k < META_CFG_COUNT; k++) {
        if (strlen(meta__cfg[k].name) == len && memcmp(meta__cfg[k].name, name, len) == 0) {
            return k;
        }
    }
    return -1;
}

const char *meta_config_key_name(int key)
{
    return key >= 0 && key < META_CFG_COUNT ? meta__cfg[key].name : NULL;
}

const char *meta_config_default(int key)
{
    return key >= 0 && key < META_CFG_COUNT ? meta__cfg[key].def : NULL;
}

static bool meta__parse_i64(const char *v, size_t len, int64_t *out)
{
    char tmp[32];
    if (len == 0 || len >= sizeof(tmp)) {
        return false;
    }
    memcpy(tmp, v, len);
    tmp[len] = '\0';
    char *end = NULL;
    errno = 0;
    long long x = strtoll(tmp, &end, 10);
    if (errno != 0 || *end != '\0' || tmp[0] == ' ' || tmp[0] == '+') {
        return false;
    }
    *out = x;
    return true;
}

static bool meta__word_eq(const char *p, size_t n, const char *w)
{
    return strlen(w) == n && memcmp(p, w, n) == 0;
}

int16_t meta_config_check(int key, const char *v, size_t len)
{
    if (key < 0 || key >= META_CFG_COUNT || v == NULL) {
        return KP_ERROR_INVALID_CONFIG;
    }
    const struct meta__cfg_def *d = &meta__cfg[key];
    int64_t x;
    switch (d->kind) {
    case CFG_LONG:
    case CFG_INT:
        if (!meta__parse_i64(v, len, &x) || x < d->min) {
            return KP_ERROR_INVALID_CONFIG;
        }
        if (d->kind == CFG_INT && x > INT32_MAX) {
            return KP_ERROR_INVALID_CONFIG;
        }
        return 0;
    case CFG_DOUBLE01: {
        char tmp[32];
        if (len == 0 || len >= sizeof(tmp)) {
            return KP_ERROR_INVALID_CONFIG;
        }
        memcpy(tmp, v, len);
        tmp[len] = '\0';
        char *end = NULL;
        double dv = strtod(tmp, &end);
        if (*end != '\0' || !(dv >= 0.0 && dv <= 1.0)) {
            return KP_ERROR_INVALID_CONFIG;
        }
        return 0;
    }
    case CFG_BOOL:
        return meta__word_eq(v, len, "true") || meta__word_eq(v, len, "false")
                   ? 0
                   : KP_ERROR_INVALID_CONFIG;
    case CFG_ENUM:
        for (const char *const *c = d->choices; *c != NULL; c++) {
            if (meta__word_eq(v, len, *c)) {
                return 0;
            }
        }
        return KP_ERROR_INVALID_CONFIG;
    case CFG_POLICY: {
        /* A comma-separated, non-empty list of "delete" and "compact" (spaces allowed). */
        size_t i = 0;
        int words = 0;
        while (i <= len) {
            size_t j = i;
            while (j < len && v[j] != ',') {
                j++;
            }
            size_t a = i;
            size_t b = j;
            while (a < b && v[a] == ' ') {
                a++;
            }
            while (b > a && v[b - 1] == ' ') {
                b--;
            }
            if (!meta__word_eq(v + a, b - a, "delete") && !meta__word_eq(v + a, b - a, "compact")) {
                return KP_ERROR_INVALID_CONFIG;
            }
            words++;
            i = j + 1;
        }
        return words > 0 ? 0 : KP_ERROR_INVALID_CONFIG;
    }
    }
    return KP_ERROR_INVALID_CONFIG;
}

const char *meta_topic_config(const struct meta_topic *t, int key)
{
    if (key < 0 || key >= META_CFG_COUNT) {
        return NULL;
    }
    return t->config[key] != NULL ? t->config[key] : meta__cfg[key].def;
}

int64_t meta_topic_config_i64(const struct meta_topic *t, int key)
{
    const char *v = meta_topic_config(t, key);
    int64_t x = 0;
    if (v != NULL && !meta__parse_i64(v, strlen(v), &x)) {
        x = 0;
    }
    return x;
}

/* ---- topics ---- */

int16_t meta_topic_name_check(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > META_TOPIC_NAME_MAX) {
        return KP_ERROR_INVALID_TOPIC_EXCEPTION;
    }
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.')) {
        return KP_ERROR_INVALID_TOPIC_EXCEPTION;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) {
            return KP_ERROR_INVALID_TOPIC_EXCEPTION;
        }
    }
    return 0;
}

struct meta_topic *meta_state_topic_by_name(const struct meta_state *s, const char *name,
                                            size_t len)
{
    struct meta__strkey k = {name, len};
    int64_t i =
        meta__index_find(s, &s->topic_by_name, meta__hash(name, len, 1), meta__topic_eq, &k);
    return i < 0 ? NULL : &s->topics[i];
}

struct meta_topic *meta_state_topic_by_id(const struct meta_state *s, const struct kp_uuid *id)
{
    /* Topics are few next to partitions; a scan keeps the state small and deletion simple. */
    for (uint32_t i = 0; i < s->n_topics; i++) {
        if (memcmp(s->topics[i].id.b, id->b, 16) == 0) {
            return &s->topics[i];
        }
    }
    return NULL;
}

static bool meta__uuid_zero(const struct kp_uuid *id)
{
    static const uint8_t zero[16];
    return memcmp(id->b, zero, 16) == 0;
}

struct meta_partition *meta_state_partition(const struct meta_state *s, const struct kp_uuid *id,
                                            int32_t partition)
{
    struct meta_topic *t = meta_state_topic_by_id(s, id);
    if (t == NULL || partition < 0 || (uint32_t)partition >= t->n_parts) {
        return NULL;
    }
    return &t->parts[partition];
}

static void meta__init_parts(struct meta_state *s, struct meta_topic *t, uint32_t from, uint32_t to)
{
    t->parts = kp_xrealloc(t->parts, sizeof(*t->parts) * to);
    for (uint32_t i = from; i < to; i++) {
        memset(&t->parts[i], 0, sizeof(t->parts[i]));
        t->parts[i].gid = s->next_gid++;
        t->parts[i].max_ts_ext = -1;
    }
    t->n_parts = to;
}

static struct kp_uuid meta__new_uuid(struct meta_state *s)
{
    struct kp_uuid id;
    uint64_t seed = meta__hash(s->cluster_seed, sizeof(s->cluster_seed), 7);
    do {
        uint64_t a = meta__mix(seed ^ ++s->uuid_counter);
        uint64_t b = meta__mix(a ^ s->uuid_counter ^ 0x5a5a5a5aull);
        for (int i = 0; i < 8; i++) {
            id.b[i] = (uint8_t)(a >> (56 - 8 * i));
            id.b[8 + i] = (uint8_t)(b >> (56 - 8 * i));
        }
        id.b[6] = (uint8_t)((id.b[6] & 0x0f) | 0x40); /* version 4 layout */
        id.b[8] = (uint8_t)((id.b[8] & 0x3f) | 0x80);
    } while (meta_state_topic_by_id(s, &id) != NULL);
    return id;
}

static int16_t meta__check_configs(const struct meta_config_kv *cfg, size_t n, bool allow_delete)
{
    for (size_t i = 0; i < n; i++) {
        int k = meta_config_key_find(cfg[i].name, cfg[i].name_len);
        if (k < 0) {
            return KP_ERROR_INVALID_CONFIG;
        }
        if (cfg[i].value == NULL) {
            if (!allow_delete) {
                return KP_ERROR_INVALID_CONFIG;
            }
            continue;
        }
        if (meta_config_check(k, cfg[i].value, cfg[i].value_len) != 0) {
            return KP_ERROR_INVALID_CONFIG;
        }
    }
    return 0;
}

static void meta__apply_configs(struct meta_topic *t, const struct meta_config_kv *cfg, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int k = meta_config_key_find(cfg[i].name, cfg[i].name_len);
        free(t->config[k]);
        t->config[k] = cfg[i].value ? meta__strndup(cfg[i].value, cfg[i].value_len) : NULL;
    }
}

int16_t meta_state_create_topic(struct meta_state *s, const char *name, size_t name_len,
                                int32_t partitions, const struct meta_config_kv *configs,
                                size_t n_configs, bool validate_only, struct meta_topic **out)
{
    int16_t err = meta_topic_name_check(name, name_len);
    if (err != 0) {
        return err;
    }
    if (meta_state_topic_by_name(s, name, name_len) != NULL) {
        return KP_ERROR_TOPIC_ALREADY_EXISTS;
    }
    if (partitions < 1 || partitions > META_PARTITIONS_MAX) {
        return KP_ERROR_INVALID_PARTITIONS;
    }
    err = meta__check_configs(configs, n_configs, false);
    if (err != 0 || validate_only) {
        return err;
    }
    if (s->n_topics == s->cap_topics) {
        s->cap_topics = s->cap_topics ? s->cap_topics * 2 : 8;
        s->topics = kp_xrealloc(s->topics, sizeof(*s->topics) * s->cap_topics);
    }
    struct meta_topic *t = &s->topics[s->n_topics];
    memset(t, 0, sizeof(*t));
    t->id = meta__new_uuid(s);
    t->name = meta__strndup(name, name_len);
    meta__init_parts(s, t, 0, (uint32_t)partitions);
    meta__apply_configs(t, configs, n_configs);
    meta__index_add(&s->topic_by_name, meta__hash(name, name_len, 1), s->n_topics);
    s->n_topics++;
    s->mutations++;
    if (out != NULL) {
        *out = t;
    }
    return 0;
}

static void meta__rebuild_topic_index(struct meta_state *s)
{
    meta__index_free(&s->topic_by_name);
    for (uint32_t i = 0; i < s->n_topics; i++) {
        const char *n = s->topics[i].name;
        meta__index_add(&s->topic_by_name, meta__hash(n, strlen(n), 1), i);
    }
}

int16_t meta_state_delete_topic(struct meta_state *s, const char *name, size_t name_len,
                                const struct kp_uuid *id)
{
    struct meta_topic *t = name != NULL ? meta_state_topic_by_name(s, name, name_len)
                                        : (id != NULL ? meta_state_topic_by_id(s, id) : NULL);
    if (t == NULL) {
        return name != NULL ? KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION : KP_ERROR_UNKNOWN_TOPIC_ID;
    }
    /* Objects lose the bytes this topic referenced; garbage collection finds them unused. */
    for (uint32_t p = 0; p < t->n_parts; p++) {
        struct meta_partition *part = &t->parts[p];
        uint32_t last_obj = UINT32_MAX;
        for (uint32_t e = 0; e < part->n_ext; e++) {
            uint32_t o = part->ext[e].object;
            if (o != last_obj) {
                struct meta_object *obj = &s->objects[o];
                obj->live_bytes -= part->ext[e].chunk_len;
                if (obj->live_bytes <= 0) {
                    obj->live_bytes = 0;
                    obj->state = META_OBJECT_UNUSED;
                }
                last_obj = o;
            }
        }
        s->n_extents -= part->n_ext;
    }
    size_t idx = (size_t)(t - s->topics);
    meta__topic_free(s->toucher, t);
    memmove(&s->topics[idx], &s->topics[idx + 1], sizeof(*t) * (s->n_topics - idx - 1));
    s->n_topics--;
    meta__rebuild_topic_index(s);
    s->mutations++;
    return 0;
}

int16_t meta_state_create_partitions(struct meta_state *s, const char *name, size_t name_len,
                                     int32_t count, bool validate_only)
{
    struct meta_topic *t = meta_state_topic_by_name(s, name, name_len);
    if (t == NULL) {
        return KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
    }
    if (count <= (int32_t)t->n_parts || count > META_PARTITIONS_MAX) {
        return KP_ERROR_INVALID_PARTITIONS;
    }
    if (!validate_only) {
        meta__init_parts(s, t, t->n_parts, (uint32_t)count);
        s->mutations++;
    }
    return 0;
}

int16_t meta_state_alter_configs(struct meta_state *s, const char *name, size_t name_len,
                                 const struct meta_config_kv *changes, size_t n, bool validate_only)
{
    struct meta_topic *t = meta_state_topic_by_name(s, name, name_len);
    if (t == NULL) {
        return KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
    }
    int16_t err = meta__check_configs(changes, n, true);
    if (err != 0 || validate_only) {
        return err;
    }
    meta__apply_configs(t, changes, n);
    s->mutations++;
    return 0;
}

/* ---- commit ---- */

static int32_t meta__last_seq(int32_t base, int32_t count)
{
    int64_t l = (int64_t)base + count - 1;
    if (l > INT32_MAX) {
        l -= (int64_t)INT32_MAX + 1;
    }
    return (int32_t)l;
}

static int32_t meta__next_seq(int32_t last)
{
    return last == INT32_MAX ? 0 : last + 1;
}

static struct meta_pstate *meta__pstate_get(struct meta_state *s, int64_t pid, uint32_t gid,
                                            bool create)
{
    struct meta__pkey k = {pid, gid};
    uint64_t h = meta__pkey_hash(pid, gid);
    int64_t i = meta__index_find(s, &s->pstate_by_key, h, meta__pstate_eq, &k);
    if (i >= 0) {
        return &s->pstates[i];
    }
    if (!create) {
        return NULL;
    }
    if (s->n_pstates == s->cap_pstates) {
        s->cap_pstates = s->cap_pstates ? s->cap_pstates * 2 : 64;
        s->pstates = kp_xrealloc(s->pstates, sizeof(*s->pstates) * s->cap_pstates);
    }
    struct meta_pstate *ps = &s->pstates[s->n_pstates];
    memset(ps, 0, sizeof(*ps));
    ps->producer_id = pid;
    ps->gid = gid;
    meta__index_add(&s->pstate_by_key, h, s->n_pstates);
    s->n_pstates++;
    return ps;
}

static void meta__pstate_push(struct meta_pstate *ps, int32_t first, int32_t last, int64_t off)
{
    uint8_t slot = ps->n == 0 ? 0 : (uint8_t)((ps->head + 1) % META_PRODUCER_WINDOW);
    ps->b[slot].first_seq = first;
    ps->b[slot].last_seq = last;
    ps->b[slot].first_offset = off;
    ps->head = slot;
    if (ps->n < META_PRODUCER_WINDOW) {
        ps->n++;
    }
}

/*
 * Kafka's sequence check for one range. Returns 0 to append, a Kafka error to refuse, or 1 with
 * *dup_offset set for a duplicate. May reset the window for a new epoch (only when appending).
 */
static int meta__check_producer(struct meta_state *s, const struct meta_partition *p,
                                const struct meta_commit_range *r, int16_t fenced,
                                int64_t *dup_offset, bool *reset)
{
    *reset = false;
    if (r->producer_id >= 1 && (uint64_t)r->producer_id <= s->n_producers &&
        r->epoch < s->producers[r->producer_id - 1].epoch) {
        return fenced;
    }
    struct meta_pstate *ps = meta__pstate_get(s, r->producer_id, p->gid, false);
    if (ps == NULL || ps->n == 0) {
        return 0; /* no state: accept any sequence, as current Kafka does */
    }
    if (r->epoch < ps->epoch) {
        return fenced;
    }
    if (r->epoch > ps->epoch) {
        if (r->base_seq != 0) {
            return KP_ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER;
        }
        *reset = true;
        return 0;
    }
    int32_t last = meta__last_seq(r->base_seq, r->record_count);
    for (uint8_t i = 0; i < ps->n; i++) {
        if (ps->b[i].first_seq == r->base_seq && ps->b[i].last_seq == last) {
            *dup_offset = ps->b[i].first_offset;
            return 1;
        }
    }
    if (r->base_seq != meta__next_seq(ps->b[ps->head].last_seq)) {
        return KP_ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER;
    }
    return 0;
}

/*
 * The capacity after `cap` when the array is full: 1.5x plus up to a quarter more, chosen by the
 * partition (`gid`), so that partitions that are committed together (and so fill up together)
 * grow at different commits instead of all in the same one.
 */
static uint32_t meta__ext_next_cap(uint32_t cap, uint32_t gid)
{
    uint64_t next = (uint64_t)cap + cap / 2 + 4 + meta__mix(gid) % ((uint64_t)cap / 4 + 1);
    return next > UINT32_MAX ? UINT32_MAX : (uint32_t)next;
}

/*
 * Keeps the time index of `p` as extent `idx` (the next one, in offset order) with largest
 * timestamp `max_ts` is added: the partition's largest timestamp and the first extent holding
 * it. Returns the new extent's prefix maximum, which is that largest timestamp; it is read from
 * the partition, not from the previous extent, whose cache line is cold at 1,000 partitions.
 */
static int64_t meta__ext_time_index(struct meta_partition *p, uint32_t idx, int64_t max_ts)
{
    if (idx == 0 || max_ts > p->max_ts) {
        p->max_ts_ext = (int32_t)idx;
        p->max_ts = max_ts;
    }
    return p->max_ts;
}

/*
 * Faults in unused extent capacity ahead of the appends, so that the loop does not take page
 * faults in bursts. A partition's array needs a new page every ~73 appends, and partitions
 * committed together fill up together: without this a 1,000-partition commit took 1,000 page
 * faults at once every ~73 commits (~20 ms on this VM). Two steps, both staggered by partition
 * (its gid), so that they spread over the commits in between:
 *   - the pages are allocated 64 KiB at a time with MADV_POPULATE_WRITE, ~0.9 us a page here
 *     against ~11 us for a fault taken by touching (a failed madvise, on a kernel before 5.14,
 *     falls back to touching);
 *   - each page is then touched once from user space, 73-146 slots ahead: on this VM (shadow
 *     page tables) the first user access to a page the kernel populated still traps to the
 *     hypervisor (~6 us), and in lockstep that was 1,000 traps in one commit every ~73 again.
 * Slots past n_ext hold nothing, so the state is unchanged.
 */
#define META_EXT_PER_PAGE (4096 / (uint32_t)sizeof(struct meta_extent))
#define META_PREFAULT_BYTES ((size_t)64 << 10)
#define META_EXT_PER_BLOCK ((uint32_t)(META_PREFAULT_BYTES / sizeof(struct meta_extent)))

/* Allocates the pages holding slots [from, to) of `p` (to <= cap_ext). */
static void meta__ext_populate(struct meta_partition *p, uint32_t from, uint32_t to)
{
    if (from >= to) {
        return;
    }
    uintptr_t end = (uintptr_t)&p->ext[to];
    if (meta__populate(&p->ext[from], &p->ext[to]) != 0) {
        for (uintptr_t a = (uintptr_t)&p->ext[from]; a < end; a = (a & ~(uintptr_t)4095) + 4096) {
            *(volatile uint8_t *)a = 0;
        }
    }
}

/* The distance ahead of the append at which partition `p`'s blocks are allocated. */
static uint32_t meta__ext_ahead(const struct meta_partition *p)
{
    return 2 * META_EXT_PER_BLOCK + p->gid * 37 % META_EXT_PER_BLOCK;
}

/* Touches slot `k` (unused capacity) if it is the first slot in its page. */
static void meta__ext_touch(struct meta_partition *p, uint32_t k)
{
    if (k >= p->n_ext && k < p->cap_ext &&
        ((uintptr_t)&p->ext[k] & 4095) < sizeof(struct meta_extent)) {
        *(volatile uint8_t *)&p->ext[k] = 0;
    }
}

/*
 * With a toucher (meta_state_start_toucher), both steps for a mapped array are its job instead:
 * the loop queues each block at the same distance, and the toucher allocates it and reads every
 * page of it, which spares the loop the trap as well (toucher.c). Heap arrays are not queued:
 * malloc may give their memory back to the system. Whatever the queue refuses (full) is done
 * here as without a toucher.
 */
static bool meta__ext_queue(struct meta_state *s, struct meta_partition *p, uint32_t from,
                            uint32_t to)
{
    return s->toucher != NULL && meta__ext_mapped(p->cap_ext) && from < to &&
           meta__toucher_queue(s->toucher, &p->ext[from], &p->ext[to]);
}

static void meta__ext_prefault(struct meta_state *s, struct meta_partition *p)
{
    uint32_t k = p->n_ext + meta__ext_ahead(p);
    if (k < p->cap_ext &&
        ((uintptr_t)&p->ext[k] & (META_PREFAULT_BYTES - 1)) < sizeof(struct meta_extent)) {
        uint32_t end = k + META_EXT_PER_BLOCK < p->cap_ext ? k + META_EXT_PER_BLOCK : p->cap_ext;
        if (!meta__ext_queue(s, p, k, end)) {
            meta__ext_populate(p, k, end);
        }
    }
    if (s->toucher == NULL || !meta__ext_mapped(p->cap_ext)) {
        meta__ext_touch(p, p->n_ext + META_EXT_PER_PAGE + 1 + p->gid * 37 % META_EXT_PER_PAGE);
    }
}

static void meta__append_extent(struct meta_state *s, struct meta_partition *p, uint32_t obj,
                                const struct meta_commit_part *cp,
                                const struct meta_commit_range *r)
{
    if (p->n_ext == p->cap_ext) {
        uint32_t cap = meta__ext_next_cap(p->cap_ext, p->gid);
        p->ext = meta__ext_resize(s->toucher, p->ext, p->cap_ext, cap);
        p->cap_ext = cap;
        /* The blocks ahead were beyond the old capacity: allocate up to the distance and the
         * block after it now (or have the toucher do it past the next two pages), and touch the
         * next two pages. A moved array's pages need their first user access again. */
        uint32_t ahead = p->n_ext + meta__ext_ahead(p) + META_EXT_PER_BLOCK;
        uint32_t next = p->n_ext + 2 * META_EXT_PER_PAGE + 1;
        ahead = ahead < cap ? ahead : cap;
        next = next < ahead ? next : ahead;
        if (!meta__ext_queue(s, p, next, ahead)) {
            next = ahead;
        }
        meta__ext_populate(p, p->n_ext, next);
        for (uint32_t k = p->n_ext; k < cap && k <= p->n_ext + 2 * META_EXT_PER_PAGE; k++) {
            meta__ext_touch(p, k);
        }
    }
    meta__ext_prefault(s, p);
    struct meta_extent *e = &p->ext[p->n_ext];
    e->base_offset = p->hwm;
    e->max_ts = r->max_ts;
    e->ts_prefix_max = meta__ext_time_index(p, p->n_ext, r->max_ts);
    e->chunk_off = (uint64_t)cp->chunk_off;
    e->chunk_len = (uint32_t)cp->chunk_len;
    e->object = obj;
    e->record_count = (uint32_t)r->record_count;
    e->raw_off = r->raw_off;
    e->raw_len = r->raw_len;
    e->pad_ = 0;
    p->n_ext++;
    p->hwm += r->record_count;
    s->n_extents++;
}

static struct meta_topic *meta__commit_topic(const struct meta_state *s,
                                             const struct meta_commit_part *cp)
{
    if (!meta__uuid_zero(&cp->topic_id)) {
        return meta_state_topic_by_id(s, &cp->topic_id);
    }
    if (cp->topic_name != NULL) {
        return meta_state_topic_by_name(s, cp->topic_name, cp->topic_name_len);
    }
    return NULL;
}

int16_t meta_state_commit_check(const struct meta_state *s, int64_t now_ms,
                                const struct meta_commit *c)
{
    if (c->object_key == NULL || c->object_key_len == 0 || c->object_size < 0) {
        return KP_ERROR_INVALID_REQUEST;
    }
    for (uint32_t i = 0; i < c->n_parts; i++) {
        const struct meta_commit_part *cp = &c->parts[i];
        if (cp->chunk_off < 0 || cp->chunk_len < 0 || cp->n_ranges == 0 ||
            cp->chunk_off > c->object_size - cp->chunk_len) {
            return KP_ERROR_INVALID_REQUEST;
        }
        for (uint32_t j = 0; j < cp->n_ranges; j++) {
            if (cp->ranges[j].record_count < 1) {
                return KP_ERROR_INVALID_REQUEST;
            }
        }
    }
    int64_t age;
    if (__builtin_sub_overflow(now_ms, c->object_created_ms, &age) || age > s->commit_deadline_ms) {
        return KP_ERROR_REQUEST_TIMED_OUT;
    }
    struct meta__strkey key = {c->object_key, c->object_key_len};
    uint64_t kh = meta__hash(c->object_key, c->object_key_len, 2);
    if (meta__index_find(s, &s->object_by_key, kh, meta__object_eq, &key) >= 0) {
        return KP_ERROR_DUPLICATE_RESOURCE; /* keys are never reused: already committed */
    }
    if (s->n_objects == UINT32_MAX - 1) {
        return KP_ERROR_KAFKA_STORAGE_ERROR;
    }
    return 0;
}

int16_t meta_state_commit(struct meta_state *s, int64_t now_ms, const struct meta_commit *c,
                          struct meta_part_result *parts, struct meta_range_result *ranges)
{
    return meta_state_commit_checked(s, meta_state_commit_check(s, now_ms, c), c, parts, ranges);
}

int16_t meta_state_commit_checked(struct meta_state *s, int16_t refused,
                                  const struct meta_commit *c, struct meta_part_result *parts,
                                  struct meta_range_result *ranges)
{
    size_t nr = 0;
    for (uint32_t i = 0; i < c->n_parts; i++) {
        memset(&parts[i], 0, sizeof(parts[i]));
        parts[i].error = KP_ERROR_INVALID_REQUEST;
        parts[i].base_offset = -1;
        parts[i].hwm = -1;
        parts[i].log_start = -1;
        for (uint32_t j = 0; j < c->parts[i].n_ranges; j++, nr++) {
            ranges[nr].error = KP_ERROR_INVALID_REQUEST;
            ranges[nr].duplicate = false;
            ranges[nr].base_offset = -1;
        }
    }
    if (refused == KP_ERROR_REQUEST_TIMED_OUT) {
        for (uint32_t i = 0; i < c->n_parts; i++) {
            parts[i].error = KP_ERROR_REQUEST_TIMED_OUT;
        }
        for (size_t k = 0; k < nr; k++) {
            ranges[k].error = KP_ERROR_REQUEST_TIMED_OUT;
        }
    }
    if (refused != 0) {
        return refused;
    }
    uint64_t kh = meta__hash(c->object_key, c->object_key_len, 2);
    if (s->n_objects == s->cap_objects) {
        s->cap_objects = s->cap_objects ? s->cap_objects * 2 : 64;
        s->objects = kp_xrealloc(s->objects, sizeof(*s->objects) * s->cap_objects);
    }
    uint32_t obj = s->n_objects++;
    struct meta_object *o = &s->objects[obj];
    o->key = meta__strndup(c->object_key, c->object_key_len);
    o->size = c->object_size;
    o->live_bytes = 0;
    o->created_ms = c->object_created_ms;
    o->state = META_OBJECT_UNUSED;
    meta__index_add(&s->object_by_key, kh, obj);

    int16_t fenced = c->fenced_error == KP_ERROR_PRODUCER_FENCED ? KP_ERROR_PRODUCER_FENCED
                                                                 : KP_ERROR_INVALID_PRODUCER_EPOCH;
    nr = 0;
    for (uint32_t i = 0; i < c->n_parts; i++) {
        const struct meta_commit_part *cp = &c->parts[i];
        struct meta_part_result *pr = &parts[i];
        struct meta_topic *t = meta__commit_topic(s, cp);
        struct meta_partition *p = NULL;
        if (t != NULL && cp->partition >= 0 && (uint32_t)cp->partition < t->n_parts) {
            p = &t->parts[cp->partition];
            pr->topic_id = t->id;
        }
        if (p == NULL) {
            int16_t e = t == NULL && !meta__uuid_zero(&cp->topic_id)
                            ? KP_ERROR_UNKNOWN_TOPIC_ID
                            : KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            pr->error = e;
            for (uint32_t j = 0; j < cp->n_ranges; j++, nr++) {
                ranges[nr].error = e;
            }
            continue;
        }
        pr->error = 0;
        bool appended = false;
        for (uint32_t j = 0; j < cp->n_ranges; j++, nr++) {
            const struct meta_commit_range *r = &cp->ranges[j];
            struct meta_range_result *rr = &ranges[nr];
            int64_t dup = -1;
            bool reset = false;
            int rc = r->producer_id >= 0 ? meta__check_producer(s, p, r, fenced, &dup, &reset) : 0;
            if (rc == 1) {
                rr->error = 0;
                rr->duplicate = true;
                rr->base_offset = dup;
            } else if (rc != 0) {
                rr->error = (int16_t)rc;
            } else if (p->hwm > INT64_MAX - r->record_count || p->n_ext == UINT32_MAX) {
                rr->error = KP_ERROR_KAFKA_STORAGE_ERROR; /* offset space exhausted */
            } else {
                rr->error = 0;
                rr->base_offset = p->hwm;
                if (r->producer_id >= 0) {
                    struct meta_pstate *ps = meta__pstate_get(s, r->producer_id, p->gid, true);
                    if (reset || ps->n == 0) {
                        ps->n = 0;
                        ps->head = 0;
                        ps->epoch = r->epoch;
                    }
                    meta__pstate_push(ps, r->base_seq, meta__last_seq(r->base_seq, r->record_count),
                                      p->hwm);
                }
                meta__append_extent(s, p, obj, cp, r);
                appended = true;
            }
            if (pr->base_offset < 0 && rr->error == 0) {
                pr->base_offset = rr->base_offset;
            }
        }
        if (appended) {
            o->live_bytes += cp->chunk_len;
            o->state = META_OBJECT_LIVE;
        }
        pr->hwm = p->hwm;
        pr->log_start = p->log_start;
    }
    s->mutations++;
    return 0;
}

/* ---- queries ---- */

int64_t meta_partition_find_offset(const struct meta_partition *p, int64_t offset)
{
    if (offset < p->log_start || offset >= p->hwm || p->n_ext == 0) {
        return -1;
    }
    uint32_t lo = 0;
    uint32_t hi = p->n_ext; /* first extent with base_offset > offset */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p->ext[mid].base_offset <= offset) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return -1;
    }
    const struct meta_extent *e = &p->ext[lo - 1];
    return offset < e->base_offset + (int64_t)e->record_count ? (int64_t)(lo - 1) : -1;
}

int64_t meta_partition_find_timestamp(const struct meta_partition *p, int64_t ts)
{
    uint32_t lo = 0;
    uint32_t hi = p->n_ext;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p->ext[mid].ts_prefix_max < ts) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < p->n_ext ? (int64_t)lo : -1;
}

/* ---- producers ---- */

static struct meta_producer *meta__new_producer(struct meta_state *s, int64_t now_ms)
{
    if (s->n_producers == s->cap_producers) {
        s->cap_producers = s->cap_producers ? s->cap_producers * 2 : 16;
        s->producers = kp_xrealloc(s->producers, sizeof(*s->producers) * s->cap_producers);
    }
    struct meta_producer *p = &s->producers[s->n_producers++];
    p->id = s->n_producers;
    p->epoch = 0;
    p->txn_id = NULL;
    p->last_ms = now_ms;
    return p;
}

int16_t meta_state_init_producer(struct meta_state *s, int64_t now_ms, const char *txn_id,
                                 size_t txn_len, int64_t producer_id, int16_t epoch,
                                 int64_t *out_id, int16_t *out_epoch)
{
    *out_id = -1;
    *out_epoch = -1;
    if ((producer_id < 0) != (epoch < 0)) {
        return KP_ERROR_INVALID_REQUEST;
    }
    if (s->n_producers >= INT32_MAX) {
        return KP_ERROR_KAFKA_STORAGE_ERROR;
    }
    struct meta_producer *p = NULL;
    if (txn_id != NULL) {
        for (uint32_t i = 0; i < s->n_producers; i++) {
            const char *t = s->producers[i].txn_id;
            if (t != NULL && strlen(t) == txn_len && memcmp(t, txn_id, txn_len) == 0) {
                p = &s->producers[i];
                break;
            }
        }
    } else if (producer_id >= 1 && (uint64_t)producer_id <= s->n_producers) {
        p = &s->producers[producer_id - 1];
    }
    if (p != NULL && producer_id >= 0) {
        /* KIP-360 bump: the caller must present the current id and epoch. */
        if (p->id != producer_id || epoch != p->epoch) {
            return p->id == producer_id && epoch < p->epoch ? KP_ERROR_PRODUCER_FENCED
                                                            : KP_ERROR_INVALID_PRODUCER_EPOCH;
        }
    } else if (p == NULL && producer_id >= 0 && txn_id != NULL) {
        return KP_ERROR_INVALID_PRODUCER_EPOCH;
    }
    if (p == NULL) {
        p = meta__new_producer(s, now_ms);
        if (txn_id != NULL) {
            p->txn_id = meta__strndup(txn_id, txn_len);
        }
    } else if (p->epoch >= INT16_MAX - 1) {
        /* Epoch exhausted: a fresh id takes over the transactional id. */
        char *t = p->txn_id;
        p->txn_id = NULL;
        p = meta__new_producer(s, now_ms);
        p->txn_id = t;
    } else {
        p->epoch++;
        p->last_ms = now_ms;
    }
    s->mutations++;
    *out_id = p->id;
    *out_epoch = p->epoch;
    return 0;
}

/* ---- agents and leases ---- */

bool meta_agent_live(const struct meta_agent *a, int64_t now_ms)
{
    int64_t idle;
    return !__builtin_sub_overflow(now_ms, a->last_heartbeat_ms, &idle) &&
           idle <= a->session_timeout_ms;
}

int16_t meta_state_register_agent(struct meta_state *s, int64_t now_ms, int32_t id,
                                  const char *host, size_t host_len, int32_t port, const char *zone,
                                  size_t zone_len, int32_t session_timeout_ms, int32_t *out_id,
                                  int64_t *out_epoch)
{
    if (host == NULL || host_len == 0 || port <= 0 || port > 65535 || session_timeout_ms <= 0 ||
        id < -1 || (id == -1 && s->next_agent_id == INT32_MAX) || s->n_agents >= 65536) {
        return KP_ERROR_INVALID_REQUEST;
    }
    struct meta_agent *a = NULL;
    if (id >= 0) {
        for (uint32_t i = 0; i < s->n_agents; i++) {
            if (s->agents[i].id == id) {
                a = &s->agents[i];
            }
        }
    } else {
        id = s->next_agent_id;
    }
    if (a == NULL) {
        s->agents = kp_xrealloc(s->agents, sizeof(*s->agents) * (s->n_agents + 1));
        a = &s->agents[s->n_agents++];
        memset(a, 0, sizeof(*a));
        a->id = id;
    }
    if (id >= s->next_agent_id && id < INT32_MAX) {
        s->next_agent_id = id + 1;
    }
    /* Another registration at the same address is a previous incarnation (restarted with a
     * new id): forget it now, since clients misbehave when two ids share one address. */
    for (uint32_t i = 0; i < s->n_agents; i++) {
        struct meta_agent *o = &s->agents[i];
        if (o != a && o->port == port && o->host != NULL && strlen(o->host) == host_len &&
            memcmp(o->host, host, host_len) == 0) {
            o->last_heartbeat_ms = INT64_MIN;
        }
    }
    free(a->host);
    free(a->zone);
    a->host = meta__strndup(host, host_len);
    a->zone = meta__strndup(zone != NULL ? zone : "", zone != NULL ? zone_len : 0);
    a->port = port;
    a->epoch++;
    a->session_timeout_ms = session_timeout_ms;
    a->last_heartbeat_ms = now_ms;
    s->mutations++;
    *out_id = a->id;
    *out_epoch = a->epoch;
    return 0;
}

int16_t meta_state_heartbeat(struct meta_state *s, int64_t now_ms, int32_t id, int64_t epoch)
{
    for (uint32_t i = 0; i < s->n_agents; i++) {
        struct meta_agent *a = &s->agents[i];
        if (a->id != id) {
            continue;
        }
        if (a->epoch != epoch) {
            return KP_ERROR_FENCED_INSTANCE_ID;
        }
        if (!meta_agent_live(a, now_ms)) {
            return KP_ERROR_UNKNOWN_MEMBER_ID;
        }
        a->last_heartbeat_ms = now_ms;
        s->mutations++;
        return 0;
    }
    return KP_ERROR_UNKNOWN_MEMBER_ID;
}

static struct meta_lease *meta__lease(struct meta_state *s, const char *name, size_t len)
{
    for (uint32_t i = 0; i < s->n_leases; i++) {
        if (strlen(s->leases[i].name) == len && memcmp(s->leases[i].name, name, len) == 0) {
            return &s->leases[i];
        }
    }
    return NULL;
}

int16_t meta_state_acquire_lease(struct meta_state *s, int64_t now_ms, const char *name,
                                 size_t name_len, int32_t holder, int32_t duration_ms,
                                 int32_t *out_holder, int64_t *out_epoch, int64_t *out_expires)
{
    if (name == NULL || name_len == 0 || name_len > 1024 || holder < 0 || duration_ms <= 0 ||
        s->n_leases >= 65536) {
        return KP_ERROR_INVALID_REQUEST;
    }
    struct meta_lease *l = meta__lease(s, name, name_len);
    if (l == NULL) {
        s->leases = kp_xrealloc(s->leases, sizeof(*s->leases) * (s->n_leases + 1));
        l = &s->leases[s->n_leases++];
        l->name = meta__strndup(name, name_len);
        l->holder = -1;
        l->epoch = 0;
        l->expires_ms = 0;
    }
    bool held = l->holder >= 0 && now_ms < l->expires_ms;
    if (!held || l->holder == holder) {
        if (!held || l->holder != holder) {
            l->epoch++;
        }
        l->holder = holder;
        if (__builtin_add_overflow(now_ms, (int64_t)duration_ms, &l->expires_ms)) {
            l->expires_ms = INT64_MAX;
        }
        s->mutations++;
    }
    *out_holder = l->holder;
    *out_epoch = l->epoch;
    *out_expires = l->expires_ms;
    return 0;
}

int16_t meta_state_release_lease(struct meta_state *s, const char *name, size_t name_len,
                                 int32_t holder, int64_t epoch)
{
    struct meta_lease *l = name != NULL ? meta__lease(s, name, name_len) : NULL;
    if (l == NULL || l->holder != holder || l->epoch != epoch) {
        return KP_ERROR_FENCED_INSTANCE_ID;
    }
    l->holder = -1;
    l->expires_ms = 0;
    s->mutations++;
    return 0;
}

/* ---- serialisation ---- */

#define META_SNAP_MAGIC 0x524e4c53u /* "RNLS" */
#define META_SNAP_VERSION 1

static void meta__put_cstr(struct meta__buf *b, const char *s)
{
    meta__put_str(b, s, s != NULL ? strlen(s) : 0);
}

int meta_state_serialize(const struct meta_state *s, uint8_t **out, size_t *out_len)
{
    struct meta__buf b = {0};
    meta__buf_reserve(&b, 64 + (size_t)s->n_extents * 52);
    meta__put_u32(&b, META_SNAP_MAGIC);
    meta__put_u32(&b, META_SNAP_VERSION);
    meta__put_raw(&b, s->cluster_seed, 16);
    meta__put_u32(&b, s->next_gid);
    meta__put_u32(&b, (uint32_t)s->next_agent_id);
    meta__put_u64(&b, s->uuid_counter);
    meta__put_u64(&b, (uint64_t)s->commit_deadline_ms);
    meta__put_u32(&b, s->n_objects);
    for (uint32_t i = 0; i < s->n_objects; i++) {
        const struct meta_object *o = &s->objects[i];
        meta__put_cstr(&b, o->key);
        meta__put_u64(&b, (uint64_t)o->size);
        meta__put_u64(&b, (uint64_t)o->live_bytes);
        meta__put_u64(&b, (uint64_t)o->created_ms);
        meta__put_u8(&b, o->state);
    }
    meta__put_u32(&b, s->n_topics);
    for (uint32_t i = 0; i < s->n_topics; i++) {
        const struct meta_topic *t = &s->topics[i];
        meta__put_raw(&b, t->id.b, 16);
        meta__put_cstr(&b, t->name);
        for (int k = 0; k < META_CFG_COUNT; k++) {
            meta__put_cstr(&b, t->config[k]);
        }
        meta__put_u32(&b, t->n_parts);
        for (uint32_t p = 0; p < t->n_parts; p++) {
            const struct meta_partition *part = &t->parts[p];
            meta__put_u64(&b, (uint64_t)part->log_start);
            meta__put_u64(&b, (uint64_t)part->hwm);
            meta__put_u32(&b, part->gid);
            meta__put_u32(&b, part->n_ext);
            meta__buf_reserve(&b, (size_t)part->n_ext * 52);
            for (uint32_t e = 0; e < part->n_ext; e++) {
                const struct meta_extent *x = &part->ext[e];
                meta__put_u64(&b, (uint64_t)x->base_offset);
                meta__put_u64(&b, (uint64_t)x->max_ts);
                meta__put_u64(&b, x->chunk_off);
                meta__put_u32(&b, x->chunk_len);
                meta__put_u32(&b, x->object);
                meta__put_u32(&b, x->record_count);
                meta__put_u32(&b, x->raw_off);
                meta__put_u32(&b, x->raw_len);
            }
        }
    }
    meta__put_u32(&b, s->n_producers);
    for (uint32_t i = 0; i < s->n_producers; i++) {
        meta__put_u16(&b, (uint16_t)s->producers[i].epoch);
        meta__put_cstr(&b, s->producers[i].txn_id);
        meta__put_u64(&b, (uint64_t)s->producers[i].last_ms);
    }
    meta__put_u32(&b, s->n_pstates);
    for (uint32_t i = 0; i < s->n_pstates; i++) {
        const struct meta_pstate *ps = &s->pstates[i];
        meta__put_u64(&b, (uint64_t)ps->producer_id);
        meta__put_u32(&b, ps->gid);
        meta__put_u16(&b, (uint16_t)ps->epoch);
        meta__put_u8(&b, ps->n);
        /* Oldest first, so equal windows serialise equally whatever their ring position. */
        for (uint8_t k = 0; k < ps->n; k++) {
            uint8_t slot =
                (uint8_t)((ps->head + META_PRODUCER_WINDOW - ps->n + 1 + k) % META_PRODUCER_WINDOW);
            meta__put_u32(&b, (uint32_t)ps->b[slot].first_seq);
            meta__put_u32(&b, (uint32_t)ps->b[slot].last_seq);
            meta__put_u64(&b, (uint64_t)ps->b[slot].first_offset);
        }
    }
    meta__put_u32(&b, s->n_agents);
    for (uint32_t i = 0; i < s->n_agents; i++) {
        const struct meta_agent *a = &s->agents[i];
        meta__put_u32(&b, (uint32_t)a->id);
        meta__put_u64(&b, (uint64_t)a->epoch);
        meta__put_cstr(&b, a->host);
        meta__put_u32(&b, (uint32_t)a->port);
        meta__put_cstr(&b, a->zone);
        meta__put_u32(&b, (uint32_t)a->session_timeout_ms);
        meta__put_u64(&b, (uint64_t)a->last_heartbeat_ms);
    }
    meta__put_u32(&b, s->n_leases);
    for (uint32_t i = 0; i < s->n_leases; i++) {
        const struct meta_lease *l = &s->leases[i];
        meta__put_cstr(&b, l->name);
        meta__put_u32(&b, (uint32_t)l->holder);
        meta__put_u64(&b, (uint64_t)l->epoch);
        meta__put_u64(&b, (uint64_t)l->expires_ms);
    }
    meta__groups_serialize(s, &b); /* a trailing section: older snapshots end before it */
    *out = b.p;
    *out_len = b.len;
    return 0;
}

static char *meta__get_cstr(struct kp_reader *r, bool nullable)
{
    const char *p;
    size_t n;
    meta__get_str(r, &p, &n);
    if (r->err) {
        return NULL;
    }
    if (p == NULL) {
        if (!nullable) {
            kp_reader_fail(r, KP_ERR_INVALID, "null string where one is required");
        }
        return NULL;
    }
    if (memchr(p, '\0', n) != NULL) {
        kp_reader_fail(r, KP_ERR_INVALID, "NUL byte inside a string");
        return NULL;
    }
    return meta__strndup(p, n);
}

static uint32_t meta__get_count(struct kp_reader *r, size_t min_size)
{
    uint32_t n = kp_read_u32(r);
    if (!r->err && (uint64_t)n * min_size > kp_reader_remaining(r)) {
        kp_reader_fail(r, KP_ERR_SHORT, "count larger than the remaining bytes");
        return 0;
    }
    return r->err ? 0 : n;
}

int meta_state_deserialize(struct meta_state *s, const uint8_t *buf, size_t len, const char **why)
{
    struct kp_reader r;
    kp_reader_init(&r, buf, len);
    if (kp_read_u32(&r) != META_SNAP_MAGIC || kp_read_u32(&r) != META_SNAP_VERSION) {
        *why = "not a version 1 snapshot";
        return -EINVAL;
    }
    const uint8_t *seed = kp_read_raw(&r, 16);
    if (seed != NULL) {
        memcpy(s->cluster_seed, seed, 16);
    }
    s->next_gid = kp_read_u32(&r);
    s->next_agent_id = (int32_t)kp_read_u32(&r);
    s->uuid_counter = (uint64_t)kp_read_i64(&r);
    s->commit_deadline_ms = kp_read_i64(&r);
    uint32_t n = meta__get_count(&r, 29);
    s->objects = n ? kp_xcalloc(n, sizeof(*s->objects)) : NULL;
    s->cap_objects = n;
    for (uint32_t i = 0; i < n && !r.err; i++) {
        struct meta_object *o = &s->objects[i];
        o->key = meta__get_cstr(&r, false);
        o->size = kp_read_i64(&r);
        o->live_bytes = kp_read_i64(&r);
        o->created_ms = kp_read_i64(&r);
        o->state = (uint8_t)kp_read_i8(&r);
        if (r.err) {
            free(o->key);
            break;
        }
        s->n_objects++;
        meta__index_add(&s->object_by_key, meta__hash(o->key, strlen(o->key), 2), i);
    }
    n = meta__get_count(&r, 16 + 4 + 4 * META_CFG_COUNT + 4);
    s->topics = n ? kp_xcalloc(n, sizeof(*s->topics)) : NULL;
    s->cap_topics = n;
    for (uint32_t i = 0; i < n && !r.err; i++) {
        struct meta_topic *t = &s->topics[i];
        kp_read_uuid(&r, &t->id);
        t->name = meta__get_cstr(&r, false);
        s->n_topics++;
        for (int k = 0; k < META_CFG_COUNT; k++) {
            t->config[k] = meta__get_cstr(&r, true);
        }
        uint32_t np = meta__get_count(&r, 24);
        if (r.err || t->name == NULL || meta_topic_name_check(t->name, strlen(t->name)) != 0 ||
            np > META_PARTITIONS_MAX) {
            kp_reader_fail(&r, KP_ERR_INVALID, "bad topic");
            break;
        }
        meta__index_add(&s->topic_by_name, meta__hash(t->name, strlen(t->name), 1), i);
        t->parts = np ? kp_xcalloc(np, sizeof(*t->parts)) : NULL;
        t->n_parts = np;
        for (uint32_t p = 0; p < np && !r.err; p++) {
            struct meta_partition *part = &t->parts[p];
            part->log_start = kp_read_i64(&r);
            part->hwm = kp_read_i64(&r);
            part->gid = kp_read_u32(&r);
            part->max_ts_ext = -1;
            uint32_t ne = meta__get_count(&r, 44);
            /* Room to grow, different per partition (see meta__ext_next_cap). */
            uint64_t room = ne ? (uint64_t)ne + meta__mix(part->gid) % ((uint64_t)ne / 4 + 1) : 0;
            uint32_t cap = room > UINT32_MAX ? UINT32_MAX : (uint32_t)room;
            part->ext = ne ? meta__ext_resize(s->toucher, NULL, 0, cap) : NULL;
            part->cap_ext = cap;
            for (uint32_t e = 0; e < ne && !r.err; e++) {
                struct meta_extent *x = &part->ext[e];
                x->base_offset = kp_read_i64(&r);
                x->max_ts = kp_read_i64(&r);
                x->chunk_off = (uint64_t)kp_read_i64(&r);
                x->chunk_len = kp_read_u32(&r);
                x->object = kp_read_u32(&r);
                x->record_count = kp_read_u32(&r);
                x->raw_off = kp_read_u32(&r);
                x->raw_len = kp_read_u32(&r);
                x->pad_ = 0;
                if (!r.err && (x->object >= s->n_objects || x->record_count == 0)) {
                    kp_reader_fail(&r, KP_ERR_INVALID, "extent refers to no object");
                }
                x->ts_prefix_max = meta__ext_time_index(part, e, x->max_ts);
                part->n_ext++;
            }
            s->n_extents += part->n_ext;
        }
    }
    n = meta__get_count(&r, 14);
    s->producers = n ? kp_xcalloc(n, sizeof(*s->producers)) : NULL;
    s->cap_producers = n;
    for (uint32_t i = 0; i < n && !r.err; i++) {
        struct meta_producer *p = &s->producers[i];
        p->id = (int64_t)i + 1;
        p->epoch = kp_read_i16(&r);
        p->txn_id = meta__get_cstr(&r, true);
        p->last_ms = kp_read_i64(&r);
        s->n_producers++;
    }
    n = meta__get_count(&r, 15);
    s->pstates = n ? kp_xcalloc(n, sizeof(*s->pstates)) : NULL;
    s->cap_pstates = n;
    for (uint32_t i = 0; i < n && !r.err; i++) {
        struct meta_pstate *ps = &s->pstates[i];
        ps->producer_id = kp_read_i64(&r);
        ps->gid = kp_read_u32(&r);
        ps->epoch = kp_read_i16(&r);
        uint8_t nb = (uint8_t)kp_read_i8(&r);
        if (nb > META_PRODUCER_WINDOW) {
            kp_reader_fail(&r, KP_ERR_INVALID, "producer window too large");
            break;
        }
        ps->n = 0;
        for (uint8_t k = 0; k < nb; k++) {
            int32_t f = kp_read_i32(&r);
            int32_t l = kp_read_i32(&r);
            int64_t o = kp_read_i64(&r);
            meta__pstate_push(ps, f, l, o);
        }
        s->n_pstates++;
        meta__index_add(&s->pstate_by_key, meta__pkey_hash(ps->producer_id, ps->gid), i);
    }
    n = meta__get_count(&r, 36);
    s->agents = n ? kp_xcalloc(n, sizeof(*s->agents)) : NULL;
    for (uint32_t i = 0; i < n && !r.err; i++) {
        struct meta_agent *a = &s->agents[i];
        a->id = kp_read_i32(&r);
        a->epoch = kp_read_i64(&r);
        a->host = meta__get_cstr(&r, false);
        a->port = kp_read_i32(&r);
        a->zone = meta__get_cstr(&r, false);
        a->session_timeout_ms = kp_read_i32(&r);
        a->last_heartbeat_ms = kp_read_i64(&r);
        s->n_agents++;
    }
    n = meta__get_count(&r, 24);
    s->leases = n ? kp_xcalloc(n, sizeof(*s->leases)) : NULL;
    for (uint32_t i = 0; i < n && !r.err; i++) {
        struct meta_lease *l = &s->leases[i];
        l->name = meta__get_cstr(&r, false);
        l->holder = kp_read_i32(&r);
        l->epoch = kp_read_i64(&r);
        l->expires_ms = kp_read_i64(&r);
        s->n_leases++;
    }
    if (!r.err && kp_reader_remaining(&r) != 0) {
        meta__groups_deserialize(s, &r);
    }
    if (!r.err && kp_reader_remaining(&r) != 0) {
        kp_reader_fail(&r, KP_ERR_INVALID, "trailing bytes after the state");
    }
    if (r.err) {
        *why = r.why != NULL ? r.why : "truncated state";
        return -EINVAL;
    }
    return 0;
}
