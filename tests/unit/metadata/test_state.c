/*
 * Unit tests of the metadata state machine (metadata/src/state.c): topic names and configs as
 * Kafka validates them, offset assignment, the idempotent-producer window (duplicates, gaps,
 * epochs, sequence wrap), lookups by offset and timestamp, the commit deadline, producers,
 * agents, leases, and replay determinism through the journal op encoding.
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/metadata/journal.h"
#include "runnel/metadata/state.h"
#include "runnel/protocol/errors.h"

#define NOW 1700000000000LL

static struct kp_uuid make_topic(struct meta_state *s, const char *name, int32_t parts)
{
    struct meta_topic *t = NULL;
    assert_int_equal(meta_state_create_topic(s, name, strlen(name), parts, NULL, 0, false, &t), 0);
    return t->id;
}

/* Commits one object with one range per call to `add`; keeps the request around for replay. */
struct one_commit {
    struct meta_commit c;               /* the request */
    struct meta_commit_part part;       /* its only partition */
    struct meta_commit_range ranges[8]; /* its ranges */
    struct meta_part_result pr;         /* partition result */
    struct meta_range_result rr[8];     /* range results */
    char key[64];                       /* object key */
};

/*
 * meta_state_commit, checking on the way that meta_state_commit_check predicted exactly whether
 * it changes the state (the service journals a commit before applying it on that prediction).
 */
static int16_t commit_checked(struct meta_state *s, int64_t now, const struct meta_commit *c,
                              struct meta_part_result *pr, struct meta_range_result *rr)
{
    int16_t check = meta_state_commit_check(s, now, c);
    uint64_t before = s->mutations;
    int16_t e = meta_state_commit(s, now, c, pr, rr);
    assert_int_equal(check == 0, s->mutations != before);
    if (check != 0) {
        assert_int_equal(e, check);
    }
    return e;
}

static int16_t commit1(struct meta_state *s, struct one_commit *oc, struct kp_uuid id, int32_t p,
                       const char *key, int64_t pid, int16_t epoch, int32_t seq, int32_t count,
                       int64_t max_ts)
{
    memset(oc, 0, sizeof(*oc));
    snprintf(oc->key, sizeof(oc->key), "%s", key);
    oc->ranges[0] = (struct meta_commit_range){pid, epoch, seq, count, max_ts, 0, 100};
    oc->part.topic_id = id;
    oc->part.partition = p;
    oc->part.chunk_off = 0;
    oc->part.chunk_len = 100;
    oc->part.n_ranges = 1;
    oc->part.ranges = oc->ranges;
    oc->c.object_key = oc->key;
    oc->c.object_key_len = strlen(oc->key);
    oc->c.object_size = 1000;
    oc->c.object_created_ms = NOW;
    oc->c.fenced_error = KP_ERROR_INVALID_PRODUCER_EPOCH;
    oc->c.n_parts = 1;
    oc->c.parts = &oc->part;
    int16_t e = commit_checked(s, NOW, &oc->c, &oc->pr, oc->rr);
    return e != 0 ? e : oc->rr[0].error;
}

static void test_topic_names(void **state)
{
    (void)state;
    char longname[251];
    memset(longname, 'a', sizeof(longname));
    assert_int_equal(meta_topic_name_check("orders.v1_x-y", 13), 0);
    assert_int_equal(meta_topic_name_check(longname, 249), 0);
    assert_int_equal(meta_topic_name_check(longname, 250), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(meta_topic_name_check(".", 1), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(meta_topic_name_check("..", 2), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(meta_topic_name_check("...", 3), 0);
    assert_int_equal(meta_topic_name_check("", 0), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(meta_topic_name_check("a b", 3), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(meta_topic_name_check("a/b", 3), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(meta_topic_name_check("a\0b", 3), KP_ERROR_INVALID_TOPIC_EXCEPTION);
}

static void test_topics(void **state)
{
    (void)state;
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct kp_uuid a = make_topic(&s, "a", 3);
    struct kp_uuid b = make_topic(&s, "b", 1);
    assert_memory_not_equal(a.b, b.b, 16);
    assert_int_equal(meta_state_create_topic(&s, "a", 1, 1, NULL, 0, false, NULL),
                     KP_ERROR_TOPIC_ALREADY_EXISTS);
    assert_int_equal(meta_state_create_topic(&s, "c", 1, 0, NULL, 0, false, NULL),
                     KP_ERROR_INVALID_PARTITIONS);
    assert_int_equal(meta_state_create_topic(&s, "c", 1, 1, NULL, 0, true, NULL), 0);
    assert_null(meta_state_topic_by_name(&s, "c", 1)); /* validate_only */
    assert_non_null(meta_state_partition(&s, &a, 2));
    assert_null(meta_state_partition(&s, &a, 3));
    assert_int_equal(meta_state_create_partitions(&s, "a", 1, 3, false),
                     KP_ERROR_INVALID_PARTITIONS);
    assert_int_equal(meta_state_create_partitions(&s, "a", 1, 5, false), 0);
    assert_non_null(meta_state_partition(&s, &a, 4));
    assert_int_equal(meta_state_delete_topic(&s, "a", 1, NULL), 0);
    assert_null(meta_state_partition(&s, &a, 0));
    assert_int_equal(meta_state_delete_topic(&s, "a", 1, NULL),
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    assert_int_equal(meta_state_delete_topic(&s, NULL, 0, &a), KP_ERROR_UNKNOWN_TOPIC_ID);
    assert_non_null(meta_state_topic_by_name(&s, "b", 1));
    assert_int_equal(meta_state_delete_topic(&s, NULL, 0, &b), 0);
    assert_int_equal(s.n_topics, 0);
    meta_state_free(&s);
}

#define KV(n, v)                                                                                   \
    {                                                                                              \
        n, sizeof(n) - 1, v, (v) ? strlen(v) : 0                                                   \
    }

static void test_configs(void **state)
{
    (void)state;
    struct {
        const char *k;
        const char *v;
        bool ok;
    } cases[] = {
        {"retention.ms", "-1", true},
        {"retention.ms", "-2", false},
        {"retention.ms", "12x", false},
        {"retention.ms", "", false},
        {"retention.bytes", "-1", true},
        {"retention.bytes", "1073741824", true},
        {"cleanup.policy", "compact", true},
        {"cleanup.policy", "compact,delete", true},
        {"cleanup.policy", "delete, compact", true},
        {"cleanup.policy", "", false},
        {"cleanup.policy", "purge", false},
        {"cleanup.policy", "delete,", false},
        {"max.message.bytes", "0", true},
        {"max.message.bytes", "-1", false},
        {"max.message.bytes", "3000000000", false},
        {"message.timestamp.type", "LogAppendTime", true},
        {"message.timestamp.type", "logappendtime", false},
        {"segment.bytes", "14", true},
        {"segment.bytes", "13", false},
        {"segment.ms", "0", false},
        {"min.insync.replicas", "2", true},
        {"compression.type", "zstd", true},
        {"compression.type", "brotli", false},
        {"min.cleanable.dirty.ratio", "0.7", true},
        {"min.cleanable.dirty.ratio", "1.5", false},
        {"preallocate", "true", true},
        {"preallocate", "yes", false},
        {"no.such.key", "1", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int k = meta_config_key_find(cases[i].k, strlen(cases[i].k));
        int16_t e =
            k < 0 ? KP_ERROR_INVALID_CONFIG : meta_config_check(k, cases[i].v, strlen(cases[i].v));
        if ((e == 0) != cases[i].ok) {
            fail_msg("%s=%s: expected %s", cases[i].k, cases[i].v, cases[i].ok ? "ok" : "error");
        }
    }
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct meta_config_kv bad[] = {KV("retention.ms", "100"), KV("cleanup.policy", "nope")};
    assert_int_equal(meta_state_create_topic(&s, "t", 1, 1, bad, 2, false, NULL),
                     KP_ERROR_INVALID_CONFIG);
    struct meta_config_kv good[] = {KV("retention.ms", "100"), KV("segment.bytes", "1048576")};
    struct meta_topic *t = NULL;
    assert_int_equal(meta_state_create_topic(&s, "t", 1, 1, good, 2, false, &t), 0);
    assert_int_equal(meta_topic_config_i64(t, META_CFG_RETENTION_MS), 100);
    assert_string_equal(meta_topic_config(t, META_CFG_SEGMENT_BYTES), "1048576");
    assert_string_equal(meta_topic_config(t, META_CFG_CLEANUP_POLICY), "delete");
    assert_int_equal(meta_topic_config_i64(t, META_CFG_MAX_MESSAGE_BYTES), 1048588);
    assert_int_equal(meta_topic_config_i64(t, META_CFG_RETENTION_BYTES), -1);
    assert_string_equal(meta_topic_config(t, META_CFG_MESSAGE_TIMESTAMP_TYPE), "CreateTime");
    /* Alter is all-or-nothing. */
    struct meta_config_kv alter_bad[] = {KV("retention.ms", "5"), KV("max.message.bytes", "x")};
    assert_int_equal(meta_state_alter_configs(&s, "t", 1, alter_bad, 2, false),
                     KP_ERROR_INVALID_CONFIG);
    assert_int_equal(meta_topic_config_i64(t, META_CFG_RETENTION_MS), 100);
    struct meta_config_kv alter[] = {{"retention.ms", 12, NULL, 0},
                                     KV("cleanup.policy", "compact")};
    assert_int_equal(meta_state_alter_configs(&s, "t", 1, alter, 2, false), 0);
    assert_int_equal(meta_topic_config_i64(t, META_CFG_RETENTION_MS), 604800000);
    assert_string_equal(meta_topic_config(t, META_CFG_CLEANUP_POLICY), "compact");
    assert_int_equal(meta_state_alter_configs(&s, "zz", 2, alter, 2, false),
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    meta_state_free(&s);
}

static void test_commit_offsets(void **state)
{
    (void)state;
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct kp_uuid id = make_topic(&s, "t", 2);
    struct one_commit oc;
    assert_int_equal(commit1(&s, &oc, id, 0, "o1", -1, -1, -1, 10, 100), 0);
    assert_int_equal(oc.rr[0].base_offset, 0);
    assert_int_equal(oc.pr.hwm, 10);
    assert_int_equal(commit1(&s, &oc, id, 0, "o2", -1, -1, -1, 5, 200), 0);
    assert_int_equal(oc.rr[0].base_offset, 10);
    assert_int_equal(oc.pr.base_offset, 10);
    assert_int_equal(oc.pr.hwm, 15);
    assert_int_equal(commit1(&s, &oc, id, 1, "o3", -1, -1, -1, 1, 300), 0);
    assert_int_equal(oc.rr[0].base_offset, 0);
    /* Unknown partition, unknown topic id, reused key, malformed range. */
    assert_int_equal(commit1(&s, &oc, id, 2, "o4", -1, -1, -1, 1, 0),
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    struct kp_uuid nope = {{1}};
    assert_int_equal(commit1(&s, &oc, nope, 0, "o5", -1, -1, -1, 1, 0), KP_ERROR_UNKNOWN_TOPIC_ID);
    uint64_t before = s.n_extents;
    assert_int_equal(commit1(&s, &oc, id, 0, "o1", -1, -1, -1, 1, 0), KP_ERROR_DUPLICATE_RESOURCE);
    assert_int_equal(commit1(&s, &oc, id, 0, "o6", -1, -1, -1, 0, 0), KP_ERROR_INVALID_REQUEST);
    assert_int_equal(s.n_extents, before);
    assert_int_equal(meta_state_partition(&s, &id, 0)->hwm, 15);
    /* Multi-partition commit by name, atomically in one object. */
    struct meta_commit_range r0[2] = {{-1, -1, -1, 3, 10, 0, 30}, {-1, -1, -1, 2, 20, 30, 20}};
    struct meta_commit_range r1[1] = {{-1, -1, -1, 4, 30, 0, 40}};
    struct meta_commit_part parts[3] = {
        {.topic_name = "t",
         .topic_name_len = 1,
         .partition = 0,
         .chunk_off = 0,
         .chunk_len = 50,
         .n_ranges = 2,
         .ranges = r0},
        {.topic_id = id,
         .partition = 1,
         .chunk_off = 50,
         .chunk_len = 40,
         .n_ranges = 1,
         .ranges = r1},
        {.topic_name = "missing",
         .topic_name_len = 7,
         .partition = 0,
         .chunk_off = 90,
         .chunk_len = 1,
         .n_ranges = 1,
         .ranges = r1},
    };
    struct meta_commit c = {"multi", 5, 100, NOW, 47, 3, parts};
    struct meta_part_result pr[3];
    struct meta_range_result rr[4];
    assert_int_equal(commit_checked(&s, NOW, &c, pr, rr), 0);
    assert_int_equal(pr[0].error, 0);
    assert_int_equal(rr[0].base_offset, 15);
    assert_int_equal(rr[1].base_offset, 18);
    assert_int_equal(pr[0].hwm, 20);
    assert_int_equal(pr[1].error, 0);
    assert_int_equal(rr[2].base_offset, 1);
    assert_int_equal(pr[2].error, KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    assert_int_equal(rr[3].error, KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    assert_int_equal(s.objects[s.n_objects - 1].live_bytes, 90);
    /* A chunk outside the object is malformed. */
    parts[0].chunk_len = 1000;
    c.object_key = "multi2";
    c.object_key_len = 6;
    assert_int_equal(commit_checked(&s, NOW, &c, pr, rr), KP_ERROR_INVALID_REQUEST);
    meta_state_free(&s);
}

static void test_commit_deadline(void **state)
{
    (void)state;
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct kp_uuid id = make_topic(&s, "t", 1);
    struct one_commit oc;
    memset(&oc, 0, sizeof(oc));
    assert_int_equal(commit1(&s, &oc, id, 0, "ok", -1, -1, -1, 1, 0), 0);
    oc.c.object_key = "late";
    oc.c.object_key_len = 4;
    oc.c.object_created_ms = NOW - META_DEFAULT_COMMIT_DEADLINE_MS - 1;
    uint64_t m = s.mutations;
    assert_int_equal(commit_checked(&s, NOW, &oc.c, &oc.pr, oc.rr), KP_ERROR_REQUEST_TIMED_OUT);
    assert_int_equal(oc.rr[0].error, KP_ERROR_REQUEST_TIMED_OUT);
    assert_int_equal(s.mutations, m);
    assert_int_equal(s.n_objects, 1);
    oc.c.object_created_ms = NOW - META_DEFAULT_COMMIT_DEADLINE_MS;
    assert_int_equal(commit_checked(&s, NOW, &oc.c, &oc.pr, oc.rr), 0);
    meta_state_free(&s);
}

static void test_idempotence(void **state)
{
    (void)state;
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct kp_uuid id = make_topic(&s, "t", 1);
    struct one_commit oc;
    int64_t pid;
    int16_t ep;
    assert_int_equal(meta_state_init_producer(&s, NOW, NULL, 0, -1, -1, &pid, &ep), 0);
    assert_int_equal(ep, 0);
    /* Unknown state: any first sequence is accepted. */
    assert_int_equal(commit1(&s, &oc, id, 0, "a", pid, 0, 7, 3, 0), 0);  /* seq 7..9 @0 */
    assert_int_equal(commit1(&s, &oc, id, 0, "b", pid, 0, 10, 2, 0), 0); /* 10..11 @3 */
    assert_int_equal(oc.rr[0].base_offset, 3);
    /* Duplicate: original offset, nothing added. */
    assert_int_equal(commit1(&s, &oc, id, 0, "c", pid, 0, 7, 3, 0), 0);
    assert_true(oc.rr[0].duplicate);
    assert_int_equal(oc.rr[0].base_offset, 0);
    assert_int_equal(oc.pr.hwm, 5);
    /* Gap. */
    assert_int_equal(commit1(&s, &oc, id, 0, "d", pid, 0, 13, 1, 0),
                     KP_ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    /* Fill the window: after 5 more batches the first two are forgotten. */
    for (int i = 0; i < 5; i++) {
        char key[16];
        snprintf(key, sizeof(key), "w%d", i);
        assert_int_equal(commit1(&s, &oc, id, 0, key, pid, 0, 12 + i, 1, 0), 0);
    }
    assert_int_equal(commit1(&s, &oc, id, 0, "e", pid, 0, 10, 2, 0),
                     KP_ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_int_equal(commit1(&s, &oc, id, 0, "f", pid, 0, 12, 1, 0), 0);
    assert_true(oc.rr[0].duplicate);
    assert_int_equal(oc.rr[0].base_offset, 5);
    /* KIP-360 bump: new epoch must start at 0; old epoch is fenced. */
    int64_t pid2;
    int16_t ep2;
    assert_int_equal(meta_state_init_producer(&s, NOW, NULL, 0, pid, 0, &pid2, &ep2), 0);
    assert_int_equal(pid2, pid);
    assert_int_equal(ep2, 1);
    assert_int_equal(meta_state_init_producer(&s, NOW, NULL, 0, pid, 0, &pid2, &ep2),
                     KP_ERROR_PRODUCER_FENCED);
    assert_int_equal(commit1(&s, &oc, id, 0, "g", pid, 0, 17, 1, 0),
                     KP_ERROR_INVALID_PRODUCER_EPOCH);
    oc.c.fenced_error = KP_ERROR_PRODUCER_FENCED;
    oc.c.object_key = "g2";
    oc.c.object_key_len = 2;
    commit_checked(&s, NOW, &oc.c, &oc.pr, oc.rr);
    assert_int_equal(oc.rr[0].error, KP_ERROR_PRODUCER_FENCED);
    assert_int_equal(commit1(&s, &oc, id, 0, "h", pid, 1, 5, 1, 0),
                     KP_ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_int_equal(commit1(&s, &oc, id, 0, "i", pid, 1, 0, 1, 0), 0);
    /* Sequence wrap at INT32_MAX. */
    int64_t p3;
    int16_t e3;
    assert_int_equal(meta_state_init_producer(&s, NOW, NULL, 0, -1, -1, &p3, &e3), 0);
    assert_true(p3 != pid);
    assert_int_equal(commit1(&s, &oc, id, 0, "j", p3, 0, INT32_MAX - 1, 2, 0), 0);
    assert_int_equal(commit1(&s, &oc, id, 0, "k", p3, 0, 1, 1, 0),
                     KP_ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_int_equal(commit1(&s, &oc, id, 0, "l", p3, 0, 0, 3, 0), 0);
    assert_int_equal(commit1(&s, &oc, id, 0, "m", p3, 0, INT32_MAX - 1, 2, 0), 0);
    assert_true(oc.rr[0].duplicate);
    /* A range that itself wraps. */
    assert_int_equal(commit1(&s, &oc, id, 0, "n", p3, 0, 3, 5, 0), 0);
    meta_state_free(&s);
}

/* Loads into `out` (not initialised) the snapshot of `s`, as start-up would. */
static void via_snapshot(const struct meta_state *s, struct meta_state *out)
{
    uint8_t *d;
    size_t len;
    assert_int_equal(meta_state_serialize(s, &d, &len), 0);
    meta_state_init(out, NULL);
    const char *why = NULL;
    assert_int_equal(meta_state_deserialize(out, d, len, &why), 0);
    free(d);
}

static void test_lookups(void **state)
{
    (void)state;
    struct meta_state s;
    meta_state_init(&s, NULL);
    struct kp_uuid id = make_topic(&s, "t", 1);
    struct one_commit oc;
    int64_t ts[] = {100, 300, 200, 500, 400};
    for (int i = 0; i < 5; i++) {
        char key[8];
        snprintf(key, sizeof(key), "o%d", i);
        assert_int_equal(commit1(&s, &oc, id, 0, key, -1, -1, -1, 10, ts[i]), 0);
    }
    struct meta_partition *p = meta_state_partition(&s, &id, 0);
    assert_int_equal(p->n_ext, 5);
    assert_int_equal(meta_partition_find_offset(p, 0), 0);
    assert_int_equal(meta_partition_find_offset(p, 9), 0);
    assert_int_equal(meta_partition_find_offset(p, 10), 1);
    assert_int_equal(meta_partition_find_offset(p, 49), 4);
    assert_int_equal(meta_partition_find_offset(p, 50), -1);
    assert_int_equal(meta_partition_find_offset(p, -1), -1);
    assert_int_equal(meta_partition_find_timestamp(p, 0), 0);
    assert_int_equal(meta_partition_find_timestamp(p, 100), 0);
    assert_int_equal(meta_partition_find_timestamp(p, 101), 1);
    assert_int_equal(meta_partition_find_timestamp(p, 250), 1); /* first with max_ts >= 250 */
    assert_int_equal(meta_partition_find_timestamp(p, 301), 3);
    assert_int_equal(meta_partition_find_timestamp(p, 450), 3);
    assert_int_equal(meta_partition_find_timestamp(p, 501), -1);
    assert_int_equal(p->max_ts_ext, 3);
    assert_int_equal(p->max_ts, 500);
    assert_int_equal(p->ext[2].ts_prefix_max, 300);
    assert_int_equal(p->ext[4].ts_prefix_max, 500);
    assert_string_equal(s.objects[p->ext[2].object].key, "o2");
    /* A tie keeps the first extent holding the maximum; a larger one takes over. */
    assert_int_equal(commit1(&s, &oc, id, 0, "o5", -1, -1, -1, 10, 500), 0);
    assert_int_equal(p->max_ts_ext, 3);
    assert_int_equal(p->ext[5].ts_prefix_max, 500);
    assert_int_equal(commit1(&s, &oc, id, 0, "o6", -1, -1, -1, 10, 600), 0);
    assert_int_equal(p->max_ts_ext, 6);
    assert_int_equal(p->max_ts, 600);
    /* A snapshot's state derives the same index. */
    struct meta_state c;
    via_snapshot(&s, &c);
    const struct meta_partition *q = meta_state_partition(&c, &id, 0);
    assert_int_equal(q->max_ts_ext, 6);
    assert_int_equal(q->max_ts, 600);
    assert_int_equal(q->ext[2].ts_prefix_max, 300);
    assert_int_equal(q->ext[5].ts_prefix_max, 500);
    meta_state_free(&c);
    meta_state_free(&s);
}

static void test_agents_leases(void **state)
{
    (void)state;
    struct meta_state s;
    meta_state_init(&s, NULL);
    int32_t id;
    int64_t ep;
    assert_int_equal(meta_state_register_agent(&s, NOW, -1, "h", 1, 9092, "az1", 3, 1000, &id, &ep),
                     0);
    assert_int_equal(id, 1);
    assert_int_equal(ep, 1);
    assert_int_equal(meta_state_heartbeat(&s, NOW + 500, id, ep), 0);
    assert_int_equal(meta_state_heartbeat(&s, NOW + 500, id, ep + 1), KP_ERROR_FENCED_INSTANCE_ID);
    assert_int_equal(meta_state_heartbeat(&s, NOW + 1501, id, ep), KP_ERROR_UNKNOWN_MEMBER_ID);
    assert_int_equal(meta_state_heartbeat(&s, NOW, 77, 1), KP_ERROR_UNKNOWN_MEMBER_ID);
    assert_int_equal(meta_state_register_agent(&s, NOW, 1, "h2", 2, 9093, "", 0, 1000, &id, &ep),
                     0);
    assert_int_equal(ep, 2);
    assert_int_equal(meta_state_register_agent(&s, NOW, -1, "", 0, 1, "", 0, 1, &id, &ep),
                     KP_ERROR_INVALID_REQUEST);

    /* A new registration at the address of a live agent (a restart with a fresh id) retires the
     * old one at once: two ids must never share an address. */
    int32_t id2;
    int32_t id3;
    assert_int_equal(meta_state_register_agent(&s, NOW, -1, "h3", 2, 9094, "", 0, 1000, &id2, &ep),
                     0);
    assert_true(meta_agent_live(&s.agents[s.n_agents - 1], NOW + 10));
    assert_int_equal(
        meta_state_register_agent(&s, NOW + 10, -1, "h3", 2, 9094, "", 0, 1000, &id3, &ep), 0);
    assert_true(id3 != id2);
    assert_int_equal(meta_state_heartbeat(&s, NOW + 20, id2, 1), KP_ERROR_UNKNOWN_MEMBER_ID);
    assert_int_equal(meta_state_heartbeat(&s, NOW + 20, id3, ep), 0);
    assert_int_equal(meta_state_heartbeat(&s, NOW + 20, id, 2), 0); /* other addresses kept */

    int32_t holder;
    int64_t lep;
    int64_t exp;
    assert_int_equal(meta_state_acquire_lease(&s, NOW, "gc", 2, 1, 1000, &holder, &lep, &exp), 0);
    assert_int_equal(holder, 1);
    assert_int_equal(exp, NOW + 1000);
    assert_int_equal(meta_state_acquire_lease(&s, NOW + 10, "gc", 2, 2, 1000, &holder, &lep, &exp),
                     0);
    assert_int_equal(holder, 1); /* still held by 1 */
    assert_int_equal(meta_state_acquire_lease(&s, NOW + 20, "gc", 2, 1, 1000, &holder, &lep, &exp),
                     0);
    assert_int_equal(exp, NOW + 1020); /* renewed */
    assert_int_equal(lep, 1);
    assert_int_equal(
        meta_state_acquire_lease(&s, NOW + 1020, "gc", 2, 2, 1000, &holder, &lep, &exp), 0);
    assert_int_equal(holder, 2); /* expired: taken over */
    assert_int_equal(lep, 2);
    assert_int_equal(meta_state_release_lease(&s, "gc", 2, 1, 1), KP_ERROR_FENCED_INSTANCE_ID);
    assert_int_equal(meta_state_release_lease(&s, "gc", 2, 2, 2), 0);
    assert_int_equal(
        meta_state_acquire_lease(&s, NOW + 1030, "gc", 2, 1, 1000, &holder, &lep, &exp), 0);
    assert_int_equal(holder, 1);
    meta_state_free(&s);
}

/* Applies a mixed workload to `s` and records each op; returns the ops' encodings. */
static size_t workload(struct meta_state *s, struct meta_op_buf *ops, size_t max)
{
    size_t n = 0;
    struct meta_config_kv cfg[] = {KV("retention.ms", "1000")};
    meta_op_create_topic(&ops[n++], NOW, "t", 1, 4, cfg, 1);
    meta_state_create_topic(s, "t", 1, 4, cfg, 1, false, NULL);
    meta_op_create_topic(&ops[n++], NOW, "u", 1, 1, NULL, 0);
    meta_state_create_topic(s, "u", 1, 1, NULL, 0, false, NULL);
    int64_t pid;
    int16_t ep;
    meta_op_init_producer(&ops[n++], NOW, NULL, 0, -1, -1);
    meta_state_init_producer(s, NOW, NULL, 0, -1, -1, &pid, &ep);
    struct kp_uuid id = meta_state_topic_by_name(s, "t", 1)->id;
    for (int i = 0; i < 40 && n < max - 8; i++) {
        struct one_commit oc;
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        /* Includes duplicates and gaps on purpose. */
        int32_t seq = (i % 7 == 3) ? i - 1 : (i % 11 == 5 ? i + 3 : i);
        commit1(s, &oc, id, i % 4, key, i % 2 ? pid : -1, 0, seq, 1 + i % 3, 1000 + i);
        meta_op_commit(&ops[n++], NOW, &oc.c);
    }
    struct meta_config_kv alter[] = {KV("cleanup.policy", "compact")};
    meta_op_alter_configs(&ops[n++], NOW, "t", 1, alter, 1);
    meta_state_alter_configs(s, "t", 1, alter, 1, false);
    meta_op_create_partitions(&ops[n++], NOW, "t", 1, 6);
    meta_state_create_partitions(s, "t", 1, 6, false);
    meta_op_delete_topic(&ops[n++], NOW, "u", 1, NULL);
    meta_state_delete_topic(s, "u", 1, NULL);
    int32_t aid;
    int64_t aep;
    meta_op_register_agent(&ops[n++], NOW, -1, "h", 1, 1, "z", 1, 100);
    meta_state_register_agent(s, NOW, -1, "h", 1, 1, "z", 1, 100, &aid, &aep);
    meta_op_heartbeat(&ops[n++], NOW + 5, aid, aep);
    meta_state_heartbeat(s, NOW + 5, aid, aep);
    int32_t h;
    int64_t le;
    int64_t lx;
    meta_op_acquire_lease(&ops[n++], NOW, "gc", 2, aid, 100);
    meta_state_acquire_lease(s, NOW, "gc", 2, aid, 100, &h, &le, &lx);
    meta_op_release_lease(&ops[n++], NOW, "gc", 2, aid, le);
    meta_state_release_lease(s, "gc", 2, aid, le);
    return n;
}

static void test_replay_determinism(void **state)
{
    (void)state;
    uint8_t seed[16] = {9, 8, 7};
    struct meta_state a;
    struct meta_state b;
    meta_state_init(&a, seed);
    meta_state_init(&b, seed);
    struct meta_op_buf ops[64];
    memset(ops, 0, sizeof(ops));
    size_t n = workload(&a, ops, 64);
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        if (meta_op_apply(&b, ops[i].p, ops[i].len, &why) != 0) {
            fail_msg("op %zu: %s", i, why);
        }
    }
    uint8_t *da;
    uint8_t *db;
    size_t la;
    size_t lb;
    assert_int_equal(meta_state_serialize(&a, &da, &la), 0);
    assert_int_equal(meta_state_serialize(&b, &db, &lb), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    assert_true(a.n_extents > 20);
    assert_int_equal(a.n_extents, b.n_extents);
    /* Round trip through deserialize gives the same bytes and answers the same queries. */
    struct meta_state c;
    meta_state_init(&c, NULL);
    const char *why = NULL;
    assert_int_equal(meta_state_deserialize(&c, da, la, &why), 0);
    uint8_t *dc;
    size_t lc;
    assert_int_equal(meta_state_serialize(&c, &dc, &lc), 0);
    assert_int_equal(la, lc);
    assert_memory_equal(da, dc, la);
    struct kp_uuid id = meta_state_topic_by_name(&c, "t", 1)->id;
    struct one_commit oc1;
    struct one_commit oc2;
    commit1(&a, &oc1, id, 1, "after", 1, 0, 1000, 1, 0);
    commit1(&c, &oc2, id, 1, "after", 1, 0, 1000, 1, 0);
    assert_int_equal(oc1.rr[0].error, oc2.rr[0].error);
    assert_int_equal(oc1.rr[0].base_offset, oc2.rr[0].base_offset);
    /* Every truncation of a serialisation is refused cleanly. */
    for (size_t cut = 0; cut < la; cut += 1 + cut / 8) {
        struct meta_state d;
        meta_state_init(&d, NULL);
        assert_int_not_equal(meta_state_deserialize(&d, da, cut, &why), 0);
        meta_state_free(&d);
    }
    /* Every truncation of an op is refused cleanly. */
    for (size_t i = 0; i < n; i++) {
        for (size_t cut = 0; cut < ops[i].len; cut++) {
            struct meta_state d;
            meta_state_init(&d, NULL);
            assert_int_not_equal(meta_op_apply(&d, ops[i].p, cut, &why), 0);
            meta_state_free(&d);
        }
        meta_op_buf_free(&ops[i]);
    }
    free(da);
    free(db);
    free(dc);
    meta_state_free(&a);
    meta_state_free(&b);
    meta_state_free(&c);
}

/* Checks that partition `p` holds `n` extents of 2 records each, with max timestamp == index. */
static void check_big_partition(struct meta_partition *p, uint32_t n)
{
    assert_int_equal(p->n_ext, n);
    assert_true(p->cap_ext >= n);
    assert_int_equal(p->hwm, 2 * (int64_t)n);
    for (uint32_t i = 0; i < n; i += 997) {
        assert_int_equal(p->ext[i].base_offset, 2 * (int64_t)i);
        assert_int_equal(meta_partition_find_offset(p, 2 * (int64_t)i + 1), i);
        assert_int_equal(meta_partition_find_timestamp(p, i), i);
    }
    assert_int_equal(meta_partition_find_offset(p, 2 * (int64_t)n - 1), n - 1);
}

/*
 * Extent arrays past 256 KiB live in their own mappings and grow with mremap, by a factor that
 * differs per partition: extents stay in order through many growths (heap to mapping, mapping
 * to mapping), survive a snapshot round trip (which sizes the arrays anew) and keep growing
 * after it; deleting the topic releases them (ASan checks the heap side). With `toucher`, both
 * states run the thread that faults pages in ahead, concurrently with the growths (moves) and
 * the deletion (unmaps), and it must have read pages.
 */
static void big_partitions(bool toucher)
{
    struct meta_state s;
    meta_state_init(&s, NULL);
    if (toucher) {
        assert_int_equal(meta_state_start_toucher(&s), 0);
    }
    struct kp_uuid id = make_topic(&s, "big", 3);
    struct one_commit oc;
    const uint32_t n = 12000; /* 12,000 x 56 bytes: past the 256 KiB mapping threshold */
    for (uint32_t i = 0; i < n; i++) {
        for (int32_t p = 0; p < 2; p++) {
            char key[32];
            snprintf(key, sizeof(key), "o%u-%d", i, p);
            assert_int_equal(commit1(&s, &oc, id, p, key, -1, -1, -1, 2, i), 0);
        }
    }
    for (int32_t p = 0; p < 2; p++) {
        check_big_partition(meta_state_partition(&s, &id, p), n);
    }
    struct meta_state c;
    via_snapshot(&s, &c);
    if (toucher) {
        assert_true(meta_state_toucher_pages(&s) > 0);
        assert_int_equal(meta_state_start_toucher(&c), 0);
    }
    for (uint32_t i = n; i < n + 6000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "o%u-0", i);
        assert_int_equal(commit1(&c, &oc, id, 0, key, -1, -1, -1, 2, i), 0);
    }
    check_big_partition(meta_state_partition(&c, &id, 0), n + 6000);
    check_big_partition(meta_state_partition(&c, &id, 1), n);
    assert_int_equal(meta_state_delete_topic(&c, "big", 3, NULL), 0);
    assert_int_equal(c.n_extents, 0);
    meta_state_free(&s);
    meta_state_free(&c);
}

static void test_big_partitions(void **state)
{
    (void)state;
    big_partitions(false);
}

static void test_big_partitions_toucher(void **state)
{
    (void)state;
    big_partitions(true);
}

static void test_extent_size(void **state)
{
    (void)state;
    assert_true(sizeof(struct meta_extent) <= 64);
    assert_true(sizeof(struct meta_pstate) <= 128);
}

int run_test_state(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_names),
        cmocka_unit_test(test_topics),
        cmocka_unit_test(test_configs),
        cmocka_unit_test(test_commit_offsets),
        cmocka_unit_test(test_commit_deadline),
        cmocka_unit_test(test_idempotence),
        cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_agents_leases),
        cmocka_unit_test(test_replay_determinism),
        cmocka_unit_test(test_big_partitions),
        cmocka_unit_test(test_big_partitions_toucher),
        cmocka_unit_test(test_extent_size),
    };
    return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
