/*
 * Unit tests of the consumer group coordinator (metadata/src/groups.c): the classic protocol's
 * join/sync/heartbeat/leave flows and every error code Kafka's coordinator answers in them
 * (MEMBER_ID_REQUIRED, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS,
 * FENCED_INSTANCE_ID, INCONSISTENT_GROUP_PROTOCOL, INVALID_SESSION_TIMEOUT, INVALID_GROUP_ID,
 * GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, GROUP_SUBSCRIBED_TO_TOPIC's check), the timeouts, and the
 * persisted part: journal ops replayed into a fresh state and the snapshot section.
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/metadata/groups.h"
#include "runnel/metadata/journal.h"
#include "runnel/metadata/state.h"
#include "runnel/protocol/errors.h"

#define T0 1700000000000LL
#define SESSION 10000
#define REBALANCE 30000

/* What the emit callback saw, latest answer per ticket. */
struct seen {
    int16_t api;
    int16_t error;
    int32_t generation;
    char member_id[128];
    char leader[128];
    char protocol[32];
    int n_members; /* -1 when the answer listed none */
    char assignment[32];
    bool skip;
    bool set;
};

static struct seen answers[64];

static void record(void *arg, const struct meta_greply *r)
{
    (void)arg;
    assert_true(r->to.ticket >= 0 && r->to.ticket < 64);
    struct seen *s = &answers[r->to.ticket];
    memset(s, 0, sizeof(*s));
    s->set = true;
    s->api = r->api_key;
    s->error = r->error;
    s->generation = r->generation;
    snprintf(s->member_id, sizeof(s->member_id), "%s", r->member_id ? r->member_id : "");
    snprintf(s->leader, sizeof(s->leader), "%s", r->leader ? r->leader : "");
    snprintf(s->protocol, sizeof(s->protocol), "%s", r->protocol ? r->protocol : "");
    s->n_members = r->group != NULL ? (int)r->group->n_members : -1;
    if (r->assignment_len > 0 && r->assignment_len < sizeof(s->assignment)) {
        memcpy(s->assignment, r->assignment, r->assignment_len);
    }
    s->skip = r->skip_assignment;
}

static struct kp_str S(const char *s) {
    return kp_str_from(s);
}

static struct meta_groups *
setup(struct meta_state *st)
{
    meta_state_init(st, NULL);
    struct meta_groups *gs = meta_groups_of(st);
    gs->emit = record;
    gs->initial_delay_ms = 0;
    memset(answers, 0, sizeof(answers));
    return gs;
}

/* Subscription metadata naming one topic (ConsumerProtocolSubscription v0). */
static const uint8_t sub_t1[] = {0, 0, 0, 0, 0, 1, 0, 2, 't', '1', 0xff, 0xff, 0xff, 0xff};

static struct kp_str names_range[] = {{"range", 5}};
static struct kp_bytes meta_t1[] = {{sub_t1, sizeof(sub_t1)}};

static void join(struct meta_groups *gs, int64_t now, int64_t ticket, const char *group,
                 const char *member, const char *instance, int16_t version)
{
    struct meta_gjoin j = {
        .group_id = S(group),
        .member_id = S(member),
        .instance_id = instance ? S(instance) : KP_STR_NULL,
        .client_id = S("client"),
        .client_host = S("/127.0.0.1"),
        .protocol_type = S("consumer"),
        .session_ms = SESSION,
        .rebalance_ms = REBALANCE,
        .require_member_id = version >= 4,
        .n_protos = 1,
        .proto_names = names_range,
        .proto_meta = meta_t1,
    };
    struct meta_gwait w = {.conn = 1, .ticket = ticket, .version = version};
    answers[ticket].set = false;
    meta_group_join(gs, now, &j, w);
}

static bool sync_(struct meta_groups *gs, int64_t now, int64_t ticket, const char *group,
                  int32_t gen, const char *member, const char *instance,
                  const struct meta_gsync_assign *a, uint32_t n)
{
    struct meta_gwait w = {.conn = 1, .ticket = ticket, .version = 3};
    bool stored = false;
    answers[ticket].set = false;
    meta_group_sync(gs, now, S(group), gen, S(member), instance ? S(instance) : KP_STR_NULL,
                    KP_STR_NULL, KP_STR_NULL, a, n, w, &stored);
    return stored;
}

/* A dynamic member joins a new group alone and becomes Stable; returns its id in `id`. */
static void lone_member(struct meta_groups *gs, const char *group, char *id, size_t id_len)
{
    join(gs, T0, 1, group, "", NULL, 4);
    assert_true(answers[1].set);
    assert_int_equal(answers[1].error, KP_ERROR_MEMBER_ID_REQUIRED);
    snprintf(id, id_len, "%s", answers[1].member_id);
    assert_true(strncmp(id, "client-", 7) == 0);
    join(gs, T0, 2, group, id, NULL, 4);
    assert_true(answers[2].set);
    assert_int_equal(answers[2].error, 0);
    assert_int_equal(answers[2].generation, 1);
    assert_string_equal(answers[2].leader, id);
    assert_string_equal(answers[2].protocol, "range");
    assert_int_equal(answers[2].n_members, 1);
    struct meta_gsync_assign a = {S(id), {(const uint8_t *)"A1", 2}};
    assert_true(sync_(gs, T0, 3, group, 1, id, NULL, &a, 1));
    assert_true(answers[3].set);
    assert_int_equal(answers[3].error, 0);
    assert_string_equal(answers[3].assignment, "A1");
}

static void test_join_sync_heartbeat(void **st_)
{
    (void)st_;
    struct meta_state st;
    struct meta_groups *gs = setup(&st);
    char id[128];
    lone_member(gs, "g", id, sizeof(id));
    struct meta_group *g = meta_group_find(gs, "g", 1);
    assert_int_equal(g->state, META_GROUP_STABLE);
    assert_int_equal(g->stored_generation, 1);
    assert_true(g->persisted);

    assert_int_equal(meta_group_heartbeat(gs, T0 + 1, S("g"), 1, S(id), KP_STR_NULL), 0);
    assert_int_equal(meta_group_heartbeat(gs, T0 + 1, S("g"), 7, S(id), KP_STR_NULL),
                     KP_ERROR_ILLEGAL_GENERATION);
    assert_int_equal(meta_group_heartbeat(gs, T0 + 1, S("g"), 1, S("nobody"), KP_STR_NULL),
                     KP_ERROR_UNKNOWN_MEMBER_ID);
    assert_int_equal(meta_group_heartbeat(gs, T0 + 1, S("nogroup"), 1, S(id), KP_STR_NULL),
                     KP_ERROR_UNKNOWN_MEMBER_ID);
    assert_int_equal(meta_group_heartbeat(gs, T0 + 1, S(""), 1, S(id), KP_STR_NULL),
                     KP_ERROR_INVALID_GROUP_ID);
    /* A Stable follower-less leader resyncing gets its assignment again. */
    sync_(gs, T0 + 2, 4, "g", 1, id, NULL, NULL, 0);
    assert_int_equal(answers[4].error, 0);
    assert_string_equal(answers[4].assignment, "A1");
    sync_(gs, T0 + 2, 5, "g", 2, id, NULL, NULL, 0);
    assert_int_equal(answers[5].error, KP_ERROR_ILLEGAL_GENERATION);
    sync_(gs, T0 + 2, 6, "g", 1, "nobody", NULL, NULL, 0);
    assert_int_equal(answers[6].error, KP_ERROR_UNKNOWN_MEMBER_ID);

    /* Join errors. */
    join(gs, T0, 7, "", "", NULL, 4);
    assert_int_equal(answers[7].error, KP_ERROR_INVALID_GROUP_ID);
    /* Ids are stored as C strings: a NUL byte inside one is refused, never truncated. */
    struct kp_str nul = {"a\0b", 3};
    assert_int_equal(meta_group_commit_check(gs, T0, nul, -1, S(""), KP_STR_NULL),
                     KP_ERROR_INVALID_GROUP_ID);
    assert_int_equal(meta_group_heartbeat(gs, T0, nul, 1, S(id), KP_STR_NULL),
                     KP_ERROR_INVALID_GROUP_ID);
    struct meta_goffset_in bad = {S("t1"), 0, 1, -1, S(""), 0};
    meta_groups_apply_commit(gs, T0, nul, &bad, 1);
    assert_null(meta_group_find(gs, "a", 1));
    assert_null(meta_group_find(gs, "a\0b", 3));
    join(gs, T0, 8, "other", "someone", NULL, 4);
    assert_int_equal(answers[8].error, KP_ERROR_UNKNOWN_MEMBER_ID);
    join(gs, T0, 9, "g", "someone", NULL, 4);
    assert_int_equal(answers[9].error, KP_ERROR_UNKNOWN_MEMBER_ID);
    struct meta_gjoin j = {.group_id = S("g"),
                           .member_id = S(""),
                           .instance_id = KP_STR_NULL,
                           .protocol_type = S("consumer"),
                           .session_ms = 10,
                           .rebalance_ms = REBALANCE,
                           .n_protos = 1,
                           .proto_names = names_range,
                           .proto_meta = meta_t1};
    meta_group_join(gs, T0, &j, (struct meta_gwait){.conn = 1, .ticket = 10});
    assert_int_equal(answers[10].error, KP_ERROR_INVALID_SESSION_TIMEOUT);
    j.session_ms = SESSION;
    struct kp_str other[] = {{"roundrobin", 10}};
    j.proto_names = other;
    meta_group_join(gs, T0, &j, (struct meta_gwait){.conn = 1, .ticket = 11});
    assert_int_equal(answers[11].error, KP_ERROR_INCONSISTENT_GROUP_PROTOCOL);
    j.proto_names = names_range;
    j.protocol_type = S("connect");
    meta_group_join(gs, T0, &j, (struct meta_gwait){.conn = 1, .ticket = 12});
    assert_int_equal(answers[12].error, KP_ERROR_INCONSISTENT_GROUP_PROTOCOL);
    /* A v3 join (no KIP-394) of a new member starts a rebalance at once. */
    j.protocol_type = S("consumer");
    j.client_id = S("old");
    meta_group_join(gs, T0, &j, (struct meta_gwait){.conn = 1, .ticket = 13});
    assert_false(answers[13].set);
    assert_int_equal(g->state, META_GROUP_PREPARING_REBALANCE);
    meta_state_free(&st);
}

static void test_rebalance(void **st_)
{
    (void)st_;
    struct meta_state st;
    struct meta_groups *gs = setup(&st);
    char a[128];
    lone_member(gs, "g", a, sizeof(a));
    struct meta_group *g = meta_group_find(gs, "g", 1);
    /* B arrives: MEMBER_ID_REQUIRED, then its join parks and starts a rebalance. */
    join(gs, T0 + 10, 20, "g", "", NULL, 4);
    assert_int_equal(answers[20].error, KP_ERROR_MEMBER_ID_REQUIRED);
    char b[128];
    snprintf(b, sizeof(b), "%s", answers[20].member_id);
    assert_string_not_equal(a, b);
    assert_int_equal(g->state, META_GROUP_STABLE); /* a pending id alone changes nothing */
    join(gs, T0 + 10, 21, "g", b, NULL, 4);
    assert_false(answers[21].set);
    assert_int_equal(g->state, META_GROUP_PREPARING_REBALANCE);
    assert_int_equal(meta_group_heartbeat(gs, T0 + 11, S("g"), 1, S(a), KP_STR_NULL),
                     KP_ERROR_REBALANCE_IN_PROGRESS);
    sync_(gs, T0 + 11, 22, "g", 1, a, NULL, NULL, 0);
    assert_int_equal(answers[22].error, KP_ERROR_REBALANCE_IN_PROGRESS);
    /* Commits of the old generation are still accepted while preparing (onPartitionsRevoked). */
    assert_int_equal(meta_group_commit_check(gs, T0 + 11, S("g"), 1, S(a), KP_STR_NULL), 0);
    /* A rejoins: both answers leave, generation 2, only the leader sees the members. */
    join(gs, T0 + 12, 23, "g", a, NULL, 4);
    assert_true(answers[21].set && answers[23].set);
    assert_int_equal(answers[21].generation, 2);
    assert_int_equal(answers[23].generation, 2);
    assert_string_equal(answers[21].leader, a);
    assert_int_equal(answers[23].n_members, 2);
    assert_int_equal(answers[21].n_members, -1);
    assert_int_equal(g->state, META_GROUP_COMPLETING_REBALANCE);
    assert_int_equal(meta_group_commit_check(gs, T0 + 12, S("g"), 2, S(a), KP_STR_NULL),
                     KP_ERROR_REBALANCE_IN_PROGRESS);
    assert_int_equal(meta_group_commit_check(gs, T0 + 12, S("g"), 1, S(a), KP_STR_NULL),
                     KP_ERROR_ILLEGAL_GENERATION);
    assert_int_equal(meta_group_heartbeat(gs, T0 + 12, S("g"), 2, S(b), KP_STR_NULL), 0);
    /* The follower's sync parks until the leader's assignment arrives. */
    assert_false(sync_(gs, T0 + 13, 24, "g", 2, b, NULL, NULL, 0));
    assert_false(answers[24].set);
    struct meta_gsync_assign as[] = {{S(a), {(const uint8_t *)"PA", 2}},
                                     {S(b), {(const uint8_t *)"PB", 2}}};
    assert_true(sync_(gs, T0 + 14, 25, "g", 2, a, NULL, as, 2));
    assert_string_equal(answers[24].assignment, "PB");
    assert_string_equal(answers[25].assignment, "PA");
    assert_int_equal(g->state, META_GROUP_STABLE);
    assert_int_equal(meta_group_commit_check(gs, T0 + 15, S("g"), 2, S(b), KP_STR_NULL), 0);
    /* A non-member cannot commit into a non-empty group, even as a simple consumer. */
    assert_int_equal(meta_group_commit_check(gs, T0 + 15, S("g"), -1, S(""), KP_STR_NULL),
                     KP_ERROR_UNKNOWN_MEMBER_ID);
    assert_int_equal(meta_group_delete_check(gs, S("g")), KP_ERROR_NON_EMPTY_GROUP);

    /* B leaves: a rebalance; A alone rejoins; then A leaves and the group is Empty. */
    int16_t ge = 0;
    assert_int_equal(meta_group_leave(gs, T0 + 20, S("g"), S(b), KP_STR_NULL, &ge), 0);
    assert_int_equal(ge, 0);
    assert_int_equal(g->state, META_GROUP_PREPARING_REBALANCE);
    assert_int_equal(meta_group_leave(gs, T0 + 20, S("g"), S(b), KP_STR_NULL, &ge),
                     KP_ERROR_UNKNOWN_MEMBER_ID);
    join(gs, T0 + 21, 26, "g", a, NULL, 4);
    assert_int_equal(answers[26].generation, 3);
    assert_int_equal(meta_group_leave(gs, T0 + 22, S("g"), S(a), KP_STR_NULL, &ge), 0);
    assert_int_equal(g->state, META_GROUP_EMPTY);
    assert_int_equal(g->generation, 4);
    assert_int_equal(meta_group_delete_check(gs, S("g")), 0);
    assert_int_equal(meta_group_delete_check(gs, S("nope")), KP_ERROR_GROUP_ID_NOT_FOUND);
    assert_int_equal(meta_group_leave(gs, T0 + 22, S("nope"), S(a), KP_STR_NULL, &ge),
                     KP_ERROR_UNKNOWN_MEMBER_ID);
    meta_state_free(&st);
}

static void test_timeouts(void **st_)
{
    (void)st_;
    struct meta_state st;
    struct meta_groups *gs = setup(&st);
    char a[128];
    lone_member(gs, "g", a, sizeof(a));
    struct meta_group *g = meta_group_find(gs, "g", 1);
    /* A pending member id that is never used expires after the session timeout. */
    join(gs, T0 + 1, 30, "g", "", NULL, 4);
    assert_int_equal(g->n_pending, 1);
    meta_groups_tick(gs, T0 + 1 + SESSION + 1);
    assert_int_equal(g->n_pending, 0);
    /* Without heartbeats the member expires: the group rebalances to Empty. */
    assert_int_equal(g->n_members, 0);
    assert_int_equal(g->state, META_GROUP_EMPTY);
    assert_int_equal(g->generation, 2);

    /* Two members; B stops heartbeating and is expired, A is told to rejoin; A never does and
     * the rebalance timeout removes it. */
    int64_t t = T0 + 100000;
    join(gs, t, 31, "g", "", NULL, 4);
    char x[128];
    snprintf(x, sizeof(x), "%s", answers[31].member_id);
    join(gs, t, 32, "g", x, NULL, 4);
    join(gs, t, 33, "g", "", NULL, 4);
    char y[128];
    snprintf(y, sizeof(y), "%s", answers[33].member_id);
    join(gs, t, 34, "g", y, NULL, 4); /* x already joined this round: completes with both */
    assert_true(answers[32].set || answers[34].set);
    /* If x's join completed alone, y's join started another round: let x rejoin it. */
    if (!answers[34].set) {
        join(gs, t, 35, "g", x, NULL, 4);
    }
    assert_int_equal(g->state, META_GROUP_COMPLETING_REBALANCE);
    assert_int_equal(g->n_members, 2);
    int32_t gen = g->generation;
    struct meta_gsync_assign as[] = {{S(x), {(const uint8_t *)"X", 1}},
                                     {S(y), {(const uint8_t *)"Y", 1}}};
    sync_(gs, t + 1, 36, "g", gen, y, NULL, NULL, 0);
    sync_(gs, t + 1, 37, "g", gen, x, NULL, as, 2);
    sync_(gs, t + 1, 38, "g", gen, y, NULL, NULL, 0);
    assert_int_equal(g->state, META_GROUP_STABLE);
    assert_int_equal(meta_group_heartbeat(gs, t + SESSION, S("g"), gen, S(x), KP_STR_NULL), 0);
    meta_groups_tick(gs, t + SESSION + 2);
    assert_int_equal(g->n_members, 1);
    assert_int_equal(g->state, META_GROUP_PREPARING_REBALANCE);
    assert_int_equal(meta_group_heartbeat(gs, t + SESSION + 3, S("g"), gen, S(y), KP_STR_NULL),
                     KP_ERROR_UNKNOWN_MEMBER_ID);
    assert_int_equal(meta_group_heartbeat(gs, t + SESSION + 3, S("g"), gen, S(x), KP_STR_NULL),
                     KP_ERROR_REBALANCE_IN_PROGRESS);
    meta_groups_tick(gs, t + SESSION + 2 + REBALANCE);
    assert_int_equal(g->n_members, 0);
    assert_int_equal(g->state, META_GROUP_EMPTY);
    meta_state_free(&st);
}

static void test_initial_delay(void **st_)
{
    (void)st_;
    struct meta_state st;
    struct meta_groups *gs = setup(&st);
    gs->initial_delay_ms = 3000;
    join(gs, T0, 1, "g", "", NULL, 4);
    char a[128];
    snprintf(a, sizeof(a), "%s", answers[1].member_id);
    join(gs, T0, 2, "g", a, NULL, 4);
    assert_false(answers[2].set); /* waits for more members first */
    meta_groups_tick(gs, T0 + 2999);
    assert_false(answers[2].set);
    meta_groups_tick(gs, T0 + 3000);
    assert_true(answers[2].set);
    assert_int_equal(answers[2].generation, 1);
    meta_state_free(&st);
}

static void test_static_members(void **st_)
{
    (void)st_;
    struct meta_state st;
    struct meta_groups *gs = setup(&st);
    /* Static members get their id at once (no MEMBER_ID_REQUIRED). */
    join(gs, T0, 1, "s", "", "i1", 5);
    char a[128];
    snprintf(a, sizeof(a), "%s", answers[1].member_id);
    assert_int_equal(answers[1].error, 0);
    assert_int_equal(answers[1].generation, 1);
    struct meta_group *g = meta_group_find(gs, "s", 1);
    join(gs, T0, 2, "s", "", "i2", 5);
    assert_int_equal(g->state, META_GROUP_PREPARING_REBALANCE);
    char b[128];
    join(gs, T0, 3, "s", a, "i1", 5);
    snprintf(b, sizeof(b), "%s", answers[2].member_id);
    assert_int_equal(answers[2].generation, 2);
    struct meta_gsync_assign as[] = {{S(a), {(const uint8_t *)"SA", 2}},
                                     {S(b), {(const uint8_t *)"SB", 2}}};
    sync_(gs, T0, 4, "s", 2, a, "i1", as, 2);
    sync_(gs, T0, 5, "s", 2, b, "i2", NULL, 0);
    assert_string_equal(answers[5].assignment, "SB");
    /* i2 restarts: a new member id, the same generation and assignment, no rebalance. */
    join(gs, T0 + 100, 6, "s", "", "i2", 5);
    assert_int_equal(answers[6].error, 0);
    assert_int_equal(answers[6].generation, 2);
    char b2[128];
    snprintf(b2, sizeof(b2), "%s", answers[6].member_id);
    assert_string_not_equal(b, b2);
    assert_int_equal(g->state, META_GROUP_STABLE);
    sync_(gs, T0 + 101, 7, "s", 2, b2, "i2", NULL, 0);
    assert_int_equal(answers[7].error, 0);
    assert_string_equal(answers[7].assignment, "SB");
    /* The old incarnation is fenced everywhere. */
    assert_int_equal(meta_group_heartbeat(gs, T0 + 102, S("s"), 2, S(b), S("i2")),
                     KP_ERROR_FENCED_INSTANCE_ID);
    assert_int_equal(meta_group_commit_check(gs, T0 + 102, S("s"), 2, S(b), S("i2")),
                     KP_ERROR_FENCED_INSTANCE_ID);
    sync_(gs, T0 + 102, 8, "s", 2, b, "i2", NULL, 0);
    assert_int_equal(answers[8].error, KP_ERROR_FENCED_INSTANCE_ID);
    join(gs, T0 + 102, 9, "s", b, "i2", 5);
    assert_int_equal(answers[9].error, KP_ERROR_FENCED_INSTANCE_ID);
    int16_t ge;
    assert_int_equal(meta_group_leave(gs, T0 + 103, S("s"), S(b), S("i2"), &ge),
                     KP_ERROR_FENCED_INSTANCE_ID);
    assert_int_equal(meta_group_leave(gs, T0 + 103, S("s"), S(""), S("i9"), &ge),
                     KP_ERROR_UNKNOWN_MEMBER_ID);
    assert_int_equal(meta_group_heartbeat(gs, T0 + 102, S("s"), 2, S(b2), S("i9")),
                     KP_ERROR_UNKNOWN_MEMBER_ID);
    /* The static leader restarting before v9: no rebalance, the answer names the old leader id
     * so that it does not assign (it then syncs and gets its assignment). */
    join(gs, T0 + 103, 11, "s", "", "i1", 5);
    assert_int_equal(answers[11].error, 0);
    assert_string_equal(answers[11].leader, a);
    assert_string_not_equal(answers[11].member_id, a);
    assert_int_equal(answers[11].n_members, -1);
    assert_int_equal(g->state, META_GROUP_STABLE);
    snprintf(a, sizeof(a), "%s", answers[11].member_id);
    sync_(gs, T0 + 103, 12, "s", 2, a, "i1", NULL, 0);
    assert_string_equal(answers[12].assignment, "SA");
    /* The static leader restarting with v9 keeps the assignment (KIP-814 SkipAssignment). */
    join(gs, T0 + 104, 10, "s", "", "i1", 9);
    assert_int_equal(answers[10].error, 0);
    assert_true(answers[10].skip);
    assert_int_equal(answers[10].n_members, 2);
    assert_int_equal(g->state, META_GROUP_STABLE);
    /* A batch leave by instance id with member id "" removes the member. */
    assert_int_equal(meta_group_leave(gs, T0 + 105, S("s"), S(""), S("i2"), &ge), 0);
    assert_int_equal(g->state, META_GROUP_PREPARING_REBALANCE);
    meta_state_free(&st);
}

static void test_offsets(void **st_)
{
    (void)st_;
    struct meta_state st;
    struct meta_groups *gs = setup(&st);
    /* Simple consumers (generation -1) commit into a group that does not exist yet. */
    assert_int_equal(meta_group_commit_check(gs, T0, S("simple"), -1, S(""), KP_STR_NULL), 0);
    assert_int_equal(meta_group_commit_check(gs, T0, S("simple"), 3, S("m"), KP_STR_NULL),
                     KP_ERROR_ILLEGAL_GENERATION);
    struct meta_goffset_in o[] = {{S("t1"), 0, 42, 3, S("meta"), 0},
                                  {S("t1"), 1, 7, -1, KP_STR_NULL, 0}};
    meta_groups_apply_commit(gs, T0, S("simple"), o, 2);
    struct meta_group *g = meta_group_find(gs, "simple", 6);
    assert_non_null(g);
    const struct meta_goffset *x = meta_group_offset(g, S("t1"), 0);
    assert_non_null(x);
    assert_int_equal(x->offset, 42);
    assert_int_equal(x->leader_epoch, 3);
    assert_string_equal(x->metadata, "meta");
    assert_string_equal(meta_group_offset(g, S("t1"), 1)->metadata, "");
    assert_null(meta_group_offset(g, S("t1"), 2));
    o[0].offset = 50;
    meta_groups_apply_commit(gs, T0 + 1, S("simple"), o, 1);
    assert_int_equal(meta_group_offset(g, S("t1"), 0)->offset, 50);
    assert_int_equal(g->n_offsets, 2);
    assert_int_equal(meta_group_offset_delete_check(gs, S("simple")), 0);
    assert_int_equal(meta_group_offset_delete_check(gs, S("none")), KP_ERROR_GROUP_ID_NOT_FOUND);
    /* A consumer group subscribed to t1 protects t1's offsets, not t2's. */
    char id[128];
    lone_member(gs, "c", id, sizeof(id));
    struct meta_group *c = meta_group_find(gs, "c", 1);
    assert_int_equal(meta_group_offset_delete_check(gs, S("c")), 0);
    assert_true(meta_group_topic_subscribed(c, S("t1")));
    assert_false(meta_group_topic_subscribed(c, S("t2")));
    meta_state_free(&st);
}

static int expired_calls;
static uint32_t expired_n;
static bool expired_drop;

static void on_expired(void *arg, const struct meta_group *g, const struct kp_str *topics,
                       const int32_t *partitions, uint32_t n, bool delete_group)
{
    (void)arg;
    (void)g;
    (void)topics;
    (void)partitions;
    expired_calls++;
    expired_n = n;
    expired_drop = delete_group;
}

static void test_retention(void **st_)
{
    (void)st_;
    struct meta_state st;
    struct meta_groups *gs = setup(&st);
    expired_calls = 0;
    meta_groups_expire(gs, T0, 1000, on_expired, NULL); /* no groups at all */
    assert_int_equal(expired_calls, 0);
    struct meta_goffset_in o[] = {{S("t1"), 0, 1, -1, S(""), 0}, {S("t1"), 1, 1, -1, S(""), 0}};
    meta_groups_apply_commit(gs, T0, S("e"), o, 1);
    meta_groups_apply_commit(gs, T0 + 500, S("e"), o + 1, 1);
    char id[128];
    lone_member(gs, "busy", id, sizeof(id));
    meta_groups_apply_commit(gs, T0, S("busy"), o, 1);
    expired_calls = 0;
    meta_groups_expire(gs, T0 + 10, 1000, on_expired, NULL); /* Empty since now: nothing yet */
    assert_int_equal(expired_calls, 0);
    meta_groups_expire(gs, T0 + 1010, 1000, on_expired, NULL);
    assert_int_equal(expired_calls, 1); /* the older offset only; the group keeps the newer */
    assert_int_equal(expired_n, 1);
    assert_false(expired_drop);
    meta_groups_expire(gs, T0 + 1600, 1000, on_expired, NULL);
    assert_int_equal(expired_calls, 2);
    assert_int_equal(expired_n, 2);
    assert_true(expired_drop);
    /* A group with members never expires; retention 0 keeps everything. */
    meta_groups_expire(gs, T0 + 1000000, 0, on_expired, NULL);
    assert_int_equal(expired_calls, 2);
    meta_state_free(&st);
}

/* OffsetCommit v1-v4 may name an expiry: it replaces the retention rule for that offset. */
static void test_explicit_expiry(void **st_)
{
    (void)st_;
    struct meta_state st;
    struct meta_groups *gs = setup(&st);
    struct meta_goffset_in o[] = {{S("t1"), 0, 1, -1, S(""), T0 + 100},
                                  {S("t1"), 1, 1, -1, S(""), 0}};
    meta_groups_apply_commit(gs, T0, S("x"), o, 2);
    expired_calls = 0;
    meta_groups_expire(gs, T0 + 50, 1000, on_expired, NULL);
    assert_int_equal(expired_calls, 0);
    meta_groups_expire(gs, T0 + 100, 1000, on_expired, NULL); /* long before the retention */
    assert_int_equal(expired_calls, 1);
    assert_int_equal(expired_n, 1);
    assert_false(expired_drop);
    meta_state_free(&st);
}

static void test_persistence(void **st_)
{
    (void)st_;
    struct meta_state live;
    struct meta_groups *gs = setup(&live);
    struct meta_op_buf ops[8];
    memset(ops, 0, sizeof(ops));
    struct meta_goffset_in o[] = {{S("t1"), 0, 42, 3, S("m"), T0 + 5000},
                                  {S("t2"), 5, 9, -1, S(""), 0}};
    meta_groups_apply_commit(gs, T0, S("g1"), o, 2);
    meta_op_group_commit(&ops[0], T0, S("g1"), o, 2);
    meta_groups_apply_generation(gs, S("g2"), 5, S("consumer"), S("range"), S("leader-1"));
    meta_op_group_generation(&ops[1], T0, S("g2"), 5, S("consumer"), S("range"), S("leader-1"));
    meta_groups_apply_commit(gs, T0 + 1, S("g2"), o, 1);
    meta_op_group_commit(&ops[2], T0 + 1, S("g2"), o, 1);
    struct kp_str dt[] = {S("t2")};
    int32_t dp[] = {5};
    meta_groups_apply_offset_delete(gs, S("g1"), dt, dp, 1);
    meta_op_group_offset_delete(&ops[3], T0 + 2, S("g1"), dt, dp, 1);
    meta_groups_apply_commit(gs, T0 + 3, S("g3"), o, 1);
    meta_op_group_commit(&ops[4], T0 + 3, S("g3"), o, 1);
    meta_groups_apply_delete(gs, S("g3"));
    meta_op_group_delete(&ops[5], T0 + 4, S("g3"));
    /* A live-only group (members, nothing committed) is not part of the persisted state. */
    join(gs, T0, 1, "live-only", "", "inst", 5);

    struct meta_state replayed;
    meta_state_init(&replayed, NULL);
    for (int i = 0; i < 6; i++) {
        const char *why = NULL;
        assert_int_equal(meta_op_apply(&replayed, ops[i].p, ops[i].len, &why), 0);
    }
    uint8_t *a = NULL;
    uint8_t *b = NULL;
    size_t al = 0;
    size_t bl = 0;
    assert_int_equal(meta_state_serialize(&live, &a, &al), 0);
    assert_int_equal(meta_state_serialize(&replayed, &b, &bl), 0);
    assert_int_equal(al, bl);
    assert_memory_equal(a, b, al);
    /* The explicit expiry survives the journal and a snapshot. */
    const struct meta_goffset *ex =
        meta_group_offset(meta_group_find(replayed.groups, "g1", 2), S("t1"), 0);
    assert_non_null(ex);
    assert_int_equal(ex->expire_ms, T0 + 5000);
    struct meta_group *g2 = meta_group_find(replayed.groups, "g2", 2);
    assert_non_null(g2);
    assert_int_equal(g2->generation, 5); /* a restarted group continues its generations */
    assert_string_equal(g2->protocol_type, "consumer");
    assert_null(meta_group_find(replayed.groups, "g3", 2));
    assert_int_equal(meta_group_find(replayed.groups, "g1", 2)->n_offsets, 1);

    /* The snapshot section round-trips. */
    struct meta_state loaded;
    meta_state_init(&loaded, NULL);
    const char *why = NULL;
    assert_int_equal(meta_state_deserialize(&loaded, a, al, &why), 0);
    uint8_t *c = NULL;
    size_t cl = 0;
    assert_int_equal(meta_state_serialize(&loaded, &c, &cl), 0);
    assert_int_equal(cl, al);
    assert_memory_equal(a, c, al);
    ex = meta_group_offset(meta_group_find(loaded.groups, "g1", 2), S("t1"), 0);
    assert_non_null(ex);
    assert_int_equal(ex->expire_ms, T0 + 5000);
    /* A truncated op is refused, not applied. */
    assert_int_not_equal(meta_op_apply(&loaded, ops[0].p, ops[0].len - 3, &why), 0);
    free(a);
    free(b);
    free(c);
    for (int i = 0; i < 8; i++) {
        meta_op_buf_free(&ops[i]);
    }
    meta_state_free(&live);
    meta_state_free(&replayed);
    meta_state_free(&loaded);
}

int run_test_groups(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_sync_heartbeat),
        cmocka_unit_test(test_rebalance),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_initial_delay),
        cmocka_unit_test(test_static_members),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_persistence),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_explicit_expiry),
    };
    return cmocka_run_group_tests_name("groups", tests, NULL, NULL);
}
