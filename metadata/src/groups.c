/*
 * The classic consumer group coordinator (groups.h): JoinGroup/SyncGroup/Heartbeat/LeaveGroup as
 * Kafka's GroupCoordinator runs them, the timeouts that move groups between states, the checks
 * in front of OffsetCommit/DeleteGroups/OffsetDelete, the persisted part (offsets and each
 * group's stored generation) with its journal ops and its section of the snapshot.
 *
 * Kafka's behaviour followed here (classic protocol, 3.x coordinator):
 *   - a member is validated as Kafka's validateCurrentMember: with a group.instance.id the
 *     instance must map to this member id (else FENCED_INSTANCE_ID, or UNKNOWN_MEMBER_ID when
 *     the instance is unknown), without one the member id must be in the group;
 *   - a join with an empty member id from v4 gets MEMBER_ID_REQUIRED and a pending id
 *     (KIP-394); static members get their id at once and replace an older member with the same
 *     instance id, whose parked answers get FENCED_INSTANCE_ID (KIP-345);
 *   - the join phase ends when every member and no pending id is left to join, or at the
 *     rebalance timeout (the largest of the members'), which removes the members that did not
 *     rejoin; a rebalance started from Empty first waits group.initial.rebalance.delay.ms;
 *   - the protocol is elected among those every member supports, each member voting for its
 *     first such protocol;
 *   - members awaiting a join or sync answer are kept alive; others expire after their session
 *     timeout; members that do not SyncGroup within the rebalance timeout are removed.
 */
#include "runnel/metadata/groups.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "groups_int.h"
#include "internal.h"
#include "runnel/metadata/journal.h"
#include "runnel/metadata/state.h"
#include "runnel/protocol/errors.h"
#include "runnel/protocol/mem.h"

#define META_API_OFFSET_COMMIT 8
#define META_API_JOIN_GROUP 11
#define META_API_SYNC_GROUP 14

enum meta__gop {
    META_GOP_COMMIT = 1,
    META_GOP_OFFSET_DELETE = 2,
    META_GOP_DELETE = 3,
    META_GOP_GENERATION = 4,
    META_GOP_COMMIT_EXPIRE = 5, /* META_GOP_COMMIT with each offset's explicit expiry */
};

/* ---- small helpers ---- */

static uint64_t meta__gmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static char *meta__gdup(struct kp_str s)
{
    if (s.len < 0) {
        return NULL;
    }
    char *p = kp_xmalloc((size_t)s.len + 1);
    if (s.len > 0) {
        memcpy(p, s.ptr, (size_t)s.len);
    }
    p[s.len] = '\0';
    return p;
}

static bool meta__geq(const char *c, struct kp_str s)
{
    if (c == NULL || s.len < 0) {
        return c == NULL && s.len < 0;
    }
    return strlen(c) == (size_t)s.len && memcmp(c, s.ptr, (size_t)s.len) == 0;
}

static bool meta__gnonempty(struct kp_str s)
{
    return s.len > 0;
}

/* A group id we store: not null, at most META_GROUP_ID_MAX bytes, no NUL byte (ids are kept as
 * C strings; two ids differing after a NUL would collide in a snapshot). Empty is allowed (Kafka
 * accepts "" for offset commits and fetches). */
static bool meta__gid_ok(struct kp_str id)
{
    return id.len >= 0 && id.len <= META_GROUP_ID_MAX &&
           (id.len == 0 || memchr(id.ptr, '\0', (size_t)id.len) == NULL);
}

static void meta__gset(char **dst, const char *src)
{
    if (*dst == src) {
        return;
    }
    free(*dst);
    *dst = src != NULL ? kp_xstrdup(src) : NULL;
}

static bool meta__cstr_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

const char *meta_gstate_name(enum meta_gstate st)
{
    switch (st) {
    case META_GROUP_EMPTY:
        return "Empty";
    case META_GROUP_PREPARING_REBALANCE:
        return "PreparingRebalance";
    case META_GROUP_COMPLETING_REBALANCE:
        return "CompletingRebalance";
    case META_GROUP_STABLE:
        return "Stable";
    case META_GROUP_DEAD:
        return "Dead";
    }
    return "Unknown";
}

/* ---- groups and members ---- */

struct meta_groups *meta_groups_of(struct meta_state *s)
{
    if (s->groups == NULL) {
        s->groups = kp_xcalloc(1, sizeof(*s->groups));
        s->groups->initial_delay_ms = META_GROUP_INITIAL_DELAY_MS;
    }
    return s->groups;
}

struct meta_group *meta_group_find(const struct meta_groups *gs, const char *id, size_t len)
{
    for (uint32_t i = 0; i < gs->n_groups; i++) {
        const char *g = gs->groups[i]->id;
        if (strlen(g) == len && memcmp(g, id, len) == 0) {
            return gs->groups[i];
        }
    }
    return NULL;
}

static struct meta_group *meta__gfind(const struct meta_groups *gs, struct kp_str id)
{
    return id.len < 0 ? NULL : meta_group_find(gs, id.ptr, (size_t)id.len);
}

static struct meta_group *meta__gcreate(struct meta_groups *gs, struct kp_str id)
{
    struct meta_group *g = kp_xcalloc(1, sizeof(*g));
    g->id = meta__gdup(id);
    g->state = META_GROUP_EMPTY;
    gs->groups = kp_xrealloc(gs->groups, sizeof(*gs->groups) * (gs->n_groups + 1));
    gs->groups[gs->n_groups++] = g;
    return g;
}

static void meta__gmember_clear_protos(struct meta_gmember *m)
{
    for (uint32_t i = 0; i < m->n_protos; i++) {
        free(m->protos[i].name);
        free(m->protos[i].meta);
    }
    free(m->protos);
    m->protos = NULL;
    m->n_protos = 0;
}

static void meta__gmember_free(struct meta_gmember *m)
{
    meta__gmember_clear_protos(m);
    free(m->id);
    free(m->instance_id);
    free(m->client_id);
    free(m->client_host);
    free(m->assignment);
}

static void meta__group_free(struct meta_group *g)
{
    for (uint32_t i = 0; i < g->n_members; i++) {
        meta__gmember_free(&g->members[i]);
    }
    free(g->members);
    for (uint32_t i = 0; i < g->n_pending; i++) {
        free(g->pending[i].id);
    }
    free(g->pending);
    for (uint32_t i = 0; i < g->n_offsets; i++) {
        free(g->offsets[i].topic);
        free(g->offsets[i].metadata);
    }
    free(g->offsets);
    free(g->id);
    free(g->protocol_type);
    free(g->protocol);
    free(g->leader);
    free(g->stored_protocol_type);
    free(g->stored_protocol);
    free(g->stored_leader);
    free(g);
}

void meta_groups_free(struct meta_groups *gs)
{
    if (gs == NULL) {
        return;
    }
    for (uint32_t i = 0; i < gs->n_groups; i++) {
        meta__group_free(gs->groups[i]);
    }
    free(gs->groups);
    free(gs);
}

static void meta__gremove_group(struct meta_groups *gs, struct meta_group *g)
{
    for (uint32_t i = 0; i < gs->n_groups; i++) {
        if (gs->groups[i] == g) {
            memmove(&gs->groups[i], &gs->groups[i + 1],
                    sizeof(*gs->groups) * (gs->n_groups - i - 1));
            gs->n_groups--;
            break;
        }
    }
    meta__group_free(g);
}

static struct meta_gmember *meta__gmember(const struct meta_group *g, struct kp_str id)
{
    for (uint32_t i = 0; i < g->n_members; i++) {
        if (meta__geq(g->members[i].id, id)) {
            return &g->members[i];
        }
    }
    return NULL;
}

static struct meta_gmember *meta__gstatic(const struct meta_group *g, struct kp_str instance)
{
    if (instance.len < 0) {
        return NULL;
    }
    for (uint32_t i = 0; i < g->n_members; i++) {
        if (g->members[i].instance_id != NULL && meta__geq(g->members[i].instance_id, instance)) {
            return &g->members[i];
        }
    }
    return NULL;
}

static int64_t meta__gpending_find(const struct meta_group *g, struct kp_str id)
{
    for (uint32_t i = 0; i < g->n_pending; i++) {
        if (meta__geq(g->pending[i].id, id)) {
            return i;
        }
    }
    return -1;
}

static void meta__gpending_remove(struct meta_group *g, uint32_t i)
{
    free(g->pending[i].id);
    g->pending[i] = g->pending[--g->n_pending];
}

/* Kafka's validateCurrentMember. */
static int16_t meta__gvalidate(const struct meta_group *g, struct kp_str member_id,
                               struct kp_str instance_id, struct meta_gmember **out)
{
    *out = NULL;
    if (instance_id.len >= 0) {
        struct meta_gmember *s = meta__gstatic(g, instance_id);
        if (s == NULL) {
            return KP_ERROR_UNKNOWN_MEMBER_ID;
        }
        if (!meta__geq(s->id, member_id)) {
            return KP_ERROR_FENCED_INSTANCE_ID;
        }
        *out = s;
        return 0;
    }
    *out = meta__gmember(g, member_id);
    return *out != NULL ? 0 : KP_ERROR_UNKNOWN_MEMBER_ID;
}

/* A fresh member id: client id, '-', and a UUID-shaped suffix unique per process. */
static char *meta__gnew_id(struct meta_groups *gs, struct kp_str client_id)
{
    uint64_t a = meta__gmix(gs->id_seed ^ ++gs->id_counter);
    uint64_t b = meta__gmix(a ^ gs->id_counter * 0x9e3779b97f4a7c15ull);
    char suffix[40];
    snprintf(suffix, sizeof(suffix), "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffffu, (unsigned)a & 0xffffu, (unsigned)(b >> 48),
             (unsigned long long)(b & 0xffffffffffffull));
    size_t cl = client_id.len > 0 ? (size_t)client_id.len : 0;
    if (cl > 200) {
        cl = 200;
    }
    char *id = kp_xmalloc(cl + 1 + strlen(suffix) + 1);
    if (cl > 0) {
        memcpy(id, client_id.ptr, cl);
    }
    id[cl] = '-';
    strcpy(id + cl + 1, suffix);
    return id;
}

static void meta__gemit(struct meta_groups *gs, struct meta_greply *r)
{
    if (r->to.active && gs->emit != NULL) {
        gs->emit(gs->emit_arg, r);
    }
}

static void meta__gjoin_error(struct meta_groups *gs, struct meta_gwait w, int16_t error,
                              const char *member_id)
{
    struct meta_greply r = {.api_key = META_API_JOIN_GROUP,
                            .to = w,
                            .error = error,
                            .generation = -1,
                            .leader = "",
                            .member_id = member_id != NULL ? member_id : ""};
    meta__gemit(gs, &r);
}

static void meta__gsync_answer(struct meta_groups *gs, struct meta_gwait w, int16_t error,
                               const struct meta_group *g, const struct meta_gmember *m)
{
    struct meta_greply r = {.api_key = META_API_SYNC_GROUP, .to = w, .error = error};
    if (error == 0 && g != NULL) {
        r.protocol_type = g->protocol_type;
        r.protocol = g->protocol;
    }
    if (error == 0 && m != NULL) {
        r.assignment = m->assignment;
        r.assignment_len = m->assignment_len;
    }
    meta__gemit(gs, &r);
}

/* Answers a member's parked requests with `error` (fenced, removed). */
static void meta__gfail_waits(struct meta_groups *gs, struct meta_gmember *m, int16_t error)
{
    if (m->join.active) {
        meta__gjoin_error(gs, m->join, error, m->id);
        m->join.active = false;
    }
    if (m->sync.active) {
        meta__gsync_answer(gs, m->sync, error, NULL, NULL);
        m->sync.active = false;
    }
}

static void meta__gset_protos(struct meta_gmember *m, const struct meta_gjoin *j)
{
    meta__gmember_clear_protos(m);
    m->protos = kp_xcalloc(j->n_protos ? j->n_protos : 1, sizeof(*m->protos));
    m->n_protos = j->n_protos;
    for (uint32_t i = 0; i < j->n_protos; i++) {
        m->protos[i].name =
            meta__gdup(j->proto_names[i].len >= 0 ? j->proto_names[i] : kp_str_from(""));
        size_t n = j->proto_meta[i].len > 0 ? (size_t)j->proto_meta[i].len : 0;
        m->protos[i].meta = n ? kp_xmalloc(n) : NULL;
        if (n) {
            memcpy(m->protos[i].meta, j->proto_meta[i].ptr, n);
        }
        m->protos[i].meta_len = n;
    }
}

static bool meta__gmember_supports(const struct meta_gmember *m, const char *name)
{
    for (uint32_t i = 0; i < m->n_protos; i++) {
        if (strcmp(m->protos[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

/* Same protocols with the same metadata, in the same order (Kafka's MemberMetadata.matches). */
static bool meta__gmember_matches(const struct meta_gmember *m, const struct meta_gjoin *j)
{
    if (m->n_protos != j->n_protos) {
        return false;
    }
    for (uint32_t i = 0; i < j->n_protos; i++) {
        const struct meta_gproto *p = &m->protos[i];
        size_t n = j->proto_meta[i].len > 0 ? (size_t)j->proto_meta[i].len : 0;
        if (!meta__geq(p->name, j->proto_names[i]) || p->meta_len != n ||
            (n > 0 && memcmp(p->meta, j->proto_meta[i].ptr, n) != 0)) {
            return false;
        }
    }
    return true;
}

/* Kafka's supportsProtocols: the type matches and some offered protocol every other member
 * supports too. `self` (may be NULL) is the joining member, whose old protocols do not count. */
static bool meta__gsupports(const struct meta_group *g, const struct meta_gjoin *j,
                            const struct meta_gmember *self)
{
    if (!meta__gnonempty(j->protocol_type) || j->n_protos == 0) {
        return false;
    }
    uint32_t others = 0;
    for (uint32_t i = 0; i < g->n_members; i++) {
        others += &g->members[i] != self;
    }
    if (others == 0) {
        return true;
    }
    if (!meta__geq(g->protocol_type, j->protocol_type)) {
        return false;
    }
    for (uint32_t p = 0; p < j->n_protos; p++) {
        char *name = meta__gdup(j->proto_names[p]);
        bool all = name != NULL;
        for (uint32_t i = 0; i < g->n_members && all; i++) {
            if (&g->members[i] != self && !meta__gmember_supports(&g->members[i], name)) {
                all = false;
            }
        }
        free(name);
        if (all) {
            return true;
        }
    }
    return false;
}

/* Protocols every member supports; each member votes for its first one; most votes wins, ties
 * go to the first member's preference order. */
static const char *meta__gselect_protocol(const struct meta_group *g)
{
    const struct meta_gmember *first = &g->members[0];
    const char *best = NULL;
    uint32_t best_votes = 0;
    for (uint32_t p = 0; p < first->n_protos; p++) {
        const char *cand = first->protos[p].name;
        bool all = true;
        for (uint32_t i = 1; i < g->n_members && all; i++) {
            all = meta__gmember_supports(&g->members[i], cand);
        }
        if (!all) {
            continue;
        }
        uint32_t votes = 0;
        for (uint32_t i = 0; i < g->n_members; i++) {
            const struct meta_gmember *m = &g->members[i];
            for (uint32_t k = 0; k < m->n_protos; k++) {
                const char *name = m->protos[k].name;
                bool common = true;
                for (uint32_t x = 0; x < g->n_members && common; x++) {
                    common = meta__gmember_supports(&g->members[x], name);
                }
                if (common) {
                    votes += strcmp(name, cand) == 0;
                    break;
                }
            }
        }
        if (best == NULL || votes > best_votes) {
            best = cand;
            best_votes = votes;
        }
    }
    return best;
}

static int32_t meta__grebalance_timeout(const struct meta_group *g)
{
    int32_t t = 0;
    for (uint32_t i = 0; i < g->n_members; i++) {
        if (g->members[i].rebalance_ms > t) {
            t = g->members[i].rebalance_ms;
        }
    }
    return t;
}

static struct meta_gmember *meta__gadd_member(struct meta_group *g, char *id,
                                              const struct meta_gjoin *j, int64_t now)
{
    g->members = kp_xrealloc(g->members, sizeof(*g->members) * (g->n_members + 1));
    struct meta_gmember *m = &g->members[g->n_members++];
    memset(m, 0, sizeof(*m));
    m->id = id;
    m->instance_id = meta__gdup(j->instance_id);
    if (g->n_members == 1) {
        meta__gset(&g->protocol_type, NULL);
        g->protocol_type = meta__gdup(j->protocol_type);
    }
    m->expires_ms = now + j->session_ms;
    return m;
}

static void meta__gupdate_member(struct meta_gmember *m, const struct meta_gjoin *j)
{
    free(m->client_id);
    free(m->client_host);
    m->client_id = meta__gdup(j->client_id.len >= 0 ? j->client_id : kp_str_from(""));
    m->client_host = meta__gdup(j->client_host.len >= 0 ? j->client_host : kp_str_from(""));
    m->session_ms = j->session_ms;
    m->rebalance_ms = j->rebalance_ms;
    meta__gset_protos(m, j);
}

static void meta__gcheck_join(struct meta_groups *gs, struct meta_group *g, int64_t now);

/* Removes member index i (its parked answers get `error`) without changing the group state. */
static void meta__gdrop_member(struct meta_groups *gs, struct meta_group *g, uint32_t i,
                               int16_t error)
{
    struct meta_gmember *m = &g->members[i];
    meta__gfail_waits(gs, m, error);
    if (g->leader != NULL && strcmp(g->leader, m->id) == 0) {
        meta__gset(&g->leader, NULL);
    }
    meta__gmember_free(m);
    memmove(&g->members[i], &g->members[i + 1], sizeof(*g->members) * (g->n_members - i - 1));
    g->n_members--;
}

/* Kafka's prepareRebalance. */
static void meta__gprepare(struct meta_groups *gs, struct meta_group *g, int64_t now)
{
    if (g->state == META_GROUP_COMPLETING_REBALANCE) {
        /* Parked SyncGroups learn that this generation is over. */
        for (uint32_t i = 0; i < g->n_members; i++) {
            struct meta_gmember *m = &g->members[i];
            if (m->sync.active) {
                meta__gsync_answer(gs, m->sync, KP_ERROR_REBALANCE_IN_PROGRESS, NULL, NULL);
                m->sync.active = false;
            }
            free(m->assignment);
            m->assignment = NULL;
            m->assignment_len = 0;
        }
    }
    bool from_empty = g->state == META_GROUP_EMPTY;
    int32_t timeout = meta__grebalance_timeout(g);
    g->state = META_GROUP_PREPARING_REBALANCE;
    g->phase_deadline_ms = now + timeout;
    for (uint32_t i = 0; i < g->n_members; i++) {
        g->members[i].joined = false;
    }
    if (from_empty && gs->initial_delay_ms > 0) {
        int64_t d = gs->initial_delay_ms < timeout ? gs->initial_delay_ms : timeout;
        g->delay_until_ms = now + d;
        g->delay_limit_ms = now + timeout;
    } else {
        g->delay_until_ms = 0;
        g->delay_limit_ms = 0;
    }
}

/* Kafka's initNextGeneration and the answers to every parked JoinGroup. */
static void meta__gcomplete_join(struct meta_groups *gs, struct meta_group *g, int64_t now)
{
    for (uint32_t i = 0; i < g->n_members;) {
        if (!g->members[i].joined) {
            meta__gdrop_member(gs, g, i, KP_ERROR_UNKNOWN_MEMBER_ID);
        } else {
            i++;
        }
    }
    g->generation++;
    g->delay_until_ms = 0;
    if (g->n_members == 0) {
        meta__gset(&g->protocol, NULL);
        meta__gset(&g->leader, NULL);
        g->state = META_GROUP_EMPTY;
        g->empty_since_ms = now;
        return;
    }
    meta__gset(&g->protocol, meta__gselect_protocol(g));
    if (g->leader == NULL) {
        meta__gset(&g->leader, g->members[0].id);
    }
    g->state = META_GROUP_COMPLETING_REBALANCE;
    g->phase_deadline_ms = now + meta__grebalance_timeout(g);
    for (uint32_t i = 0; i < g->n_members; i++) {
        struct meta_gmember *m = &g->members[i];
        m->synced = false;
        m->expires_ms = now + m->session_ms;
        if (!m->join.active) {
            continue;
        }
        bool leader = strcmp(m->id, g->leader) == 0;
        struct meta_greply r = {.api_key = META_API_JOIN_GROUP,
                                .to = m->join,
                                .generation = g->generation,
                                .protocol_type = g->protocol_type,
                                .protocol = g->protocol,
                                .leader = g->leader,
                                .member_id = m->id,
                                .group = leader ? g : NULL};
        m->join.active = false;
        meta__gemit(gs, &r);
    }
}

static void meta__gcheck_join(struct meta_groups *gs, struct meta_group *g, int64_t now)
{
    if (g->state != META_GROUP_PREPARING_REBALANCE) {
        return;
    }
    bool all = g->n_pending == 0;
    for (uint32_t i = 0; i < g->n_members && all; i++) {
        all = g->members[i].joined;
    }
    if ((all && now >= g->delay_until_ms) || now >= g->phase_deadline_ms) {
        meta__gcomplete_join(gs, g, now);
    }
}

/* Removes a member that left or expired, as Kafka's removeMemberAndUpdateGroup. */
static void meta__gremove_member(struct meta_groups *gs, struct meta_group *g, uint32_t i,
                                 int64_t now)
{
    meta__gdrop_member(gs, g, i, KP_ERROR_UNKNOWN_MEMBER_ID);
    switch (g->state) {
    case META_GROUP_STABLE:
    case META_GROUP_COMPLETING_REBALANCE:
        meta__gprepare(gs, g, now);
        meta__gcheck_join(gs, g, now);
        break;
    case META_GROUP_PREPARING_REBALANCE:
        meta__gcheck_join(gs, g, now);
        break;
    default:
        break;
    }
}

/* A member (re)joins with a parked answer: Kafka's updateMemberAndRebalance / addMemberAnd... */
static void meta__gjoin_and_rebalance(struct meta_groups *gs, struct meta_group *g,
                                      struct meta_gmember *m, const struct meta_gjoin *j,
                                      struct meta_gwait w, int64_t now)
{
    meta__gupdate_member(m, j);
    if (m->join.active) {
        meta__gjoin_error(gs, m->join, KP_ERROR_REBALANCE_IN_PROGRESS, m->id);
    }
    m->join = w;
    m->join.active = true;
    if (g->state != META_GROUP_PREPARING_REBALANCE) {
        meta__gprepare(gs, g, now);
    } else if (g->delay_until_ms > now) {
        int64_t d = now + gs->initial_delay_ms;
        g->delay_until_ms = d < g->delay_limit_ms ? d : g->delay_limit_ms;
    }
    m->joined = true; /* preparing never moves members */
    meta__gcheck_join(gs, g, now);
}

/* Answers a join with the current generation without rebalancing. */
static void meta__gjoin_current(struct meta_groups *gs, struct meta_group *g,
                                struct meta_gmember *m, struct meta_gwait w, bool with_members,
                                bool skip, const char *leader_override)
{
    struct meta_greply r = {.api_key = META_API_JOIN_GROUP,
                            .to = w,
                            .generation = g->generation,
                            .protocol_type = g->protocol_type,
                            .protocol = g->protocol,
                            .leader = leader_override != NULL ? leader_override
                                      : g->leader != NULL     ? g->leader
                                                              : "",
                            .member_id = m->id,
                            .group = with_members ? g : NULL,
                            .skip_assignment = skip};
    meta__gemit(gs, &r);
}

void meta_group_join(struct meta_groups *gs, int64_t now, const struct meta_gjoin *j,
                     struct meta_gwait w)
{
    w.active = true;
    if (!meta__gnonempty(j->group_id) || !meta__gid_ok(j->group_id)) {
        meta__gjoin_error(gs, w, KP_ERROR_INVALID_GROUP_ID, NULL);
        return;
    }
    if (j->session_ms < META_GROUP_MIN_SESSION_MS || j->session_ms > META_GROUP_MAX_SESSION_MS) {
        meta__gjoin_error(gs, w, KP_ERROR_INVALID_SESSION_TIMEOUT, NULL);
        return;
    }
    if (j->rebalance_ms <= 0 || j->n_protos > META_GROUP_MAX_PROTOCOLS) {
        meta__gjoin_error(gs, w, KP_ERROR_INVALID_REQUEST, NULL);
        return;
    }
    bool unknown = j->member_id.len <= 0;
    struct meta_group *g = meta__gfind(gs, j->group_id);
    if (g == NULL) {
        if (!unknown) {
            meta__gjoin_error(gs, w, KP_ERROR_UNKNOWN_MEMBER_ID, NULL);
            return;
        }
        g = meta__gcreate(gs, j->group_id);
    }
    if (g->state == META_GROUP_DEAD) {
        meta__gjoin_error(gs, w, KP_ERROR_COORDINATOR_NOT_AVAILABLE, NULL);
        return;
    }
    struct meta_gmember *self =
        unknown ? meta__gstatic(g, j->instance_id) : meta__gmember(g, j->member_id);
    if (!meta__gsupports(g, j, self)) {
        meta__gjoin_error(gs, w, KP_ERROR_INCONSISTENT_GROUP_PROTOCOL, NULL);
        return;
    }
    if (unknown) {
        struct meta_gmember *old = self;
        if (old == NULL && g->n_members + g->n_pending >= META_GROUP_MAX_MEMBERS) {
            meta__gjoin_error(gs, w, KP_ERROR_GROUP_MAX_SIZE_REACHED, NULL);
            return;
        }
        char *id = meta__gnew_id(gs, j->client_id);
        if (old != NULL) {
            /* KIP-345: the new instance replaces the old member id; the old one is fenced. */
            meta__gfail_waits(gs, old, KP_ERROR_FENCED_INSTANCE_ID);
            char *old_id = old->id;
            bool leader = g->leader != NULL && strcmp(g->leader, old_id) == 0;
            if (leader) {
                meta__gset(&g->leader, id);
            }
            old->id = id;
            old->expires_ms = now + j->session_ms;
            if (g->state == META_GROUP_STABLE && meta__gmember_matches(old, j)) {
                /* No rebalance: the member gets the current generation and, with SyncGroup, its
                 * stored assignment. A returning leader is told to skip the assignment (v9,
                 * KIP-814); before v9 the answer names the old leader id, so the member does not
                 * see itself as leader and does not assign (Kafka's behaviour before KIP-814). */
                meta__gupdate_member(old, j);
                old->synced = true;
                meta__gjoin_current(gs, g, old, w, leader && w.version >= 9,
                                    leader && w.version >= 9,
                                    leader && w.version < 9 ? old_id : NULL);
                free(old_id);
                return;
            }
            free(old_id);
            meta__gjoin_and_rebalance(gs, g, old, j, w, now);
            return;
        }
        if (j->instance_id.len < 0 && j->require_member_id) {
            g->pending = kp_xrealloc(g->pending, sizeof(*g->pending) * (g->n_pending + 1));
            g->pending[g->n_pending].id = id;
            g->pending[g->n_pending].expires_ms = now + j->session_ms;
            g->n_pending++;
            meta__gjoin_error(gs, w, KP_ERROR_MEMBER_ID_REQUIRED, id);
            return;
        }
        struct meta_gmember *m = meta__gadd_member(g, id, j, now);
        meta__gjoin_and_rebalance(gs, g, m, j, w, now);
        return;
    }
    int64_t p = meta__gpending_find(g, j->member_id);
    if (p >= 0 && j->instance_id.len < 0) {
        meta__gpending_remove(g, (uint32_t)p);
        struct meta_gmember *m = meta__gadd_member(g, meta__gdup(j->member_id), j, now);
        meta__gjoin_and_rebalance(gs, g, m, j, w, now);
        return;
    }
    struct meta_gmember *m = NULL;
    int16_t err = meta__gvalidate(g, j->member_id, j->instance_id, &m);
    if (err != 0) {
        meta__gjoin_error(gs, w, err, NULL);
        return;
    }
    m->expires_ms = now + j->session_ms;
    bool leader = g->leader != NULL && strcmp(g->leader, m->id) == 0;
    switch (g->state) {
    case META_GROUP_COMPLETING_REBALANCE:
        if (meta__gmember_matches(m, j)) {
            meta__gjoin_current(gs, g, m, w, leader, false, NULL);
            return;
        }
        break;
    case META_GROUP_STABLE:
        if (!leader && meta__gmember_matches(m, j)) {
            meta__gjoin_current(gs, g, m, w, false, false, NULL);
            return;
        }
        break;
    default:
        break;
    }
    meta__gjoin_and_rebalance(gs, g, m, j, w, now);
}

void meta_group_sync(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                     int32_t generation, struct kp_str member_id, struct kp_str instance_id,
                     struct kp_str protocol_type, struct kp_str protocol,
                     const struct meta_gsync_assign *assign, uint32_t n_assign, struct meta_gwait w,
                     bool *stored)
{
    w.active = true;
    *stored = false;
    if (!meta__gnonempty(group_id) || !meta__gid_ok(group_id)) {
        meta__gsync_answer(gs, w, KP_ERROR_INVALID_GROUP_ID, NULL, NULL);
        return;
    }
    struct meta_group *g = meta__gfind(gs, group_id);
    if (g == NULL) {
        meta__gsync_answer(gs, w, KP_ERROR_UNKNOWN_MEMBER_ID, NULL, NULL);
        return;
    }
    if (g->state == META_GROUP_DEAD) {
        meta__gsync_answer(gs, w, KP_ERROR_COORDINATOR_NOT_AVAILABLE, NULL, NULL);
        return;
    }
    struct meta_gmember *m = NULL;
    int16_t err = meta__gvalidate(g, member_id, instance_id, &m);
    if (err != 0) {
        meta__gsync_answer(gs, w, err, NULL, NULL);
        return;
    }
    if (generation != g->generation) {
        meta__gsync_answer(gs, w, KP_ERROR_ILLEGAL_GENERATION, NULL, NULL);
        return;
    }
    if ((protocol_type.len >= 0 && !meta__geq(g->protocol_type, protocol_type)) ||
        (protocol.len >= 0 && !meta__geq(g->protocol, protocol))) {
        meta__gsync_answer(gs, w, KP_ERROR_INCONSISTENT_GROUP_PROTOCOL, NULL, NULL);
        return;
    }
    switch (g->state) {
    case META_GROUP_EMPTY:
        meta__gsync_answer(gs, w, KP_ERROR_UNKNOWN_MEMBER_ID, NULL, NULL);
        return;
    case META_GROUP_PREPARING_REBALANCE:
        meta__gsync_answer(gs, w, KP_ERROR_REBALANCE_IN_PROGRESS, NULL, NULL);
        return;
    case META_GROUP_STABLE:
        m->expires_ms = now + m->session_ms;
        m->synced = true;
        meta__gsync_answer(gs, w, 0, g, m);
        return;
    case META_GROUP_COMPLETING_REBALANCE:
        break;
    case META_GROUP_DEAD:
        return;
    }
    m->expires_ms = now + m->session_ms;
    m->synced = true;
    if (m->sync.active) {
        meta__gsync_answer(gs, m->sync, KP_ERROR_REBALANCE_IN_PROGRESS, NULL, NULL);
    }
    m->sync = w;
    if (g->leader == NULL || strcmp(g->leader, m->id) != 0) {
        return;
    }
    for (uint32_t i = 0; i < g->n_members; i++) {
        struct meta_gmember *x = &g->members[i];
        free(x->assignment);
        x->assignment = NULL;
        x->assignment_len = 0;
        for (uint32_t k = 0; k < n_assign; k++) {
            if (meta__geq(x->id, assign[k].member_id) && assign[k].assignment.len > 0) {
                x->assignment_len = (size_t)assign[k].assignment.len;
                x->assignment = kp_xmalloc(x->assignment_len);
                memcpy(x->assignment, assign[k].assignment.ptr, x->assignment_len);
                break;
            }
        }
    }
    meta_groups_apply_generation(gs, group_id, g->generation, kp_str_from(g->protocol_type),
                                 kp_str_from(g->protocol), kp_str_from(g->leader));
    *stored = true;
    g->state = META_GROUP_STABLE;
    for (uint32_t i = 0; i < g->n_members; i++) {
        struct meta_gmember *x = &g->members[i];
        if (x->sync.active) {
            meta__gsync_answer(gs, x->sync, 0, g, x);
            x->sync.active = false;
        }
    }
}

int16_t meta_group_heartbeat(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                             int32_t generation, struct kp_str member_id, struct kp_str instance_id)
{
    if (!meta__gnonempty(group_id) || !meta__gid_ok(group_id)) {
        return KP_ERROR_INVALID_GROUP_ID;
    }
    struct meta_group *g = meta__gfind(gs, group_id);
    if (g == NULL) {
        return KP_ERROR_UNKNOWN_MEMBER_ID;
    }
    if (g->state == META_GROUP_DEAD) {
        return KP_ERROR_COORDINATOR_NOT_AVAILABLE;
    }
    struct meta_gmember *m = NULL;
    int16_t err = meta__gvalidate(g, member_id, instance_id, &m);
    if (err != 0) {
        return err;
    }
    if (generation != g->generation) {
        return KP_ERROR_ILLEGAL_GENERATION;
    }
    switch (g->state) {
    case META_GROUP_EMPTY:
        return KP_ERROR_UNKNOWN_MEMBER_ID;
    case META_GROUP_PREPARING_REBALANCE:
        m->expires_ms = now + m->session_ms;
        return KP_ERROR_REBALANCE_IN_PROGRESS;
    default:
        m->expires_ms = now + m->session_ms;
        return 0;
    }
}

int16_t meta_group_leave(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                         struct kp_str member_id, struct kp_str instance_id, int16_t *group_error)
{
    *group_error = 0;
    if (!meta__gnonempty(group_id) || !meta__gid_ok(group_id)) {
        *group_error = KP_ERROR_INVALID_GROUP_ID;
        return KP_ERROR_INVALID_GROUP_ID;
    }
    struct meta_group *g = meta__gfind(gs, group_id);
    if (g == NULL) {
        return KP_ERROR_UNKNOWN_MEMBER_ID;
    }
    if (g->state == META_GROUP_DEAD) {
        *group_error = KP_ERROR_COORDINATOR_NOT_AVAILABLE;
        return KP_ERROR_COORDINATOR_NOT_AVAILABLE;
    }
    struct meta_gmember *m = NULL;
    if (instance_id.len >= 0) {
        m = meta__gstatic(g, instance_id);
        if (m == NULL) {
            return KP_ERROR_UNKNOWN_MEMBER_ID;
        }
        if (member_id.len > 0 && !meta__geq(m->id, member_id)) {
            return KP_ERROR_FENCED_INSTANCE_ID;
        }
    } else {
        int64_t p = meta__gpending_find(g, member_id);
        if (p >= 0) {
            meta__gpending_remove(g, (uint32_t)p);
            meta__gcheck_join(gs, g, now);
            return 0;
        }
        m = meta__gmember(g, member_id);
        if (m == NULL) {
            return KP_ERROR_UNKNOWN_MEMBER_ID;
        }
    }
    meta__gremove_member(gs, g, (uint32_t)(m - g->members), now);
    return 0;
}

void meta_groups_tick(struct meta_groups *gs, int64_t now)
{
    for (uint32_t gi = 0; gi < gs->n_groups; gi++) {
        struct meta_group *g = gs->groups[gi];
        bool changed = false;
        for (uint32_t i = 0; i < g->n_pending;) {
            if (now > g->pending[i].expires_ms) {
                meta__gpending_remove(g, i);
                changed = true;
            } else {
                i++;
            }
        }
        if (changed) {
            meta__gcheck_join(gs, g, now);
        }
        for (uint32_t i = 0; i < g->n_members;) {
            struct meta_gmember *m = &g->members[i];
            if (!m->join.active && !m->sync.active && now > m->expires_ms) {
                meta__gremove_member(gs, g, i, now);
                i = 0; /* the array changed; the check is idempotent */
            } else {
                i++;
            }
        }
        if (g->state == META_GROUP_PREPARING_REBALANCE) {
            meta__gcheck_join(gs, g, now);
        } else if ((g->state == META_GROUP_COMPLETING_REBALANCE || g->state == META_GROUP_STABLE) &&
                   now >= g->phase_deadline_ms) {
            bool removed = false;
            for (uint32_t i = 0; i < g->n_members;) {
                if (!g->members[i].synced) {
                    meta__gdrop_member(gs, g, i, KP_ERROR_UNKNOWN_MEMBER_ID);
                    removed = true;
                } else {
                    i++;
                }
            }
            if (removed) {
                meta__gprepare(gs, g, now);
                meta__gcheck_join(gs, g, now);
            }
        }
    }
}

void meta_groups_conn_closed(struct meta_groups *gs, uint64_t conn)
{
    for (uint32_t gi = 0; gi < gs->n_groups; gi++) {
        struct meta_group *g = gs->groups[gi];
        for (uint32_t i = 0; i < g->n_members; i++) {
            struct meta_gmember *m = &g->members[i];
            if (m->join.active && m->join.conn == conn) {
                m->join.active = false;
            }
            if (m->sync.active && m->sync.conn == conn) {
                m->sync.active = false;
            }
        }
    }
}

/* ---- checks for the offset and admin apis ---- */

int16_t meta_group_commit_check(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                                int32_t generation, struct kp_str member_id,
                                struct kp_str instance_id)
{
    if (!meta__gid_ok(group_id)) {
        return KP_ERROR_INVALID_GROUP_ID;
    }
    struct meta_group *g = meta__gfind(gs, group_id);
    if (g == NULL) {
        return generation < 0 ? 0 : KP_ERROR_ILLEGAL_GENERATION;
    }
    if (g->state == META_GROUP_DEAD) {
        return KP_ERROR_COORDINATOR_NOT_AVAILABLE;
    }
    if (generation >= 0 || member_id.len > 0 || instance_id.len >= 0) {
        struct meta_gmember *m = NULL;
        int16_t err = meta__gvalidate(g, member_id, instance_id, &m);
        if (err != 0) {
            return err;
        }
        if (generation != g->generation) {
            return KP_ERROR_ILLEGAL_GENERATION;
        }
        if (g->state == META_GROUP_COMPLETING_REBALANCE) {
            return KP_ERROR_REBALANCE_IN_PROGRESS;
        }
        m->expires_ms = now + m->session_ms;
        return 0;
    }
    return g->state == META_GROUP_EMPTY ? 0 : KP_ERROR_UNKNOWN_MEMBER_ID;
}

int16_t meta_group_delete_check(const struct meta_groups *gs, struct kp_str group_id)
{
    if (!meta__gid_ok(group_id)) {
        return KP_ERROR_INVALID_GROUP_ID;
    }
    const struct meta_group *g = meta__gfind(gs, group_id);
    if (g == NULL || g->state == META_GROUP_DEAD) {
        return KP_ERROR_GROUP_ID_NOT_FOUND;
    }
    return g->state == META_GROUP_EMPTY ? 0 : KP_ERROR_NON_EMPTY_GROUP;
}

int16_t meta_group_offset_delete_check(const struct meta_groups *gs, struct kp_str group_id)
{
    if (!meta__gid_ok(group_id)) {
        return KP_ERROR_INVALID_GROUP_ID;
    }
    const struct meta_group *g = meta__gfind(gs, group_id);
    if (g == NULL || g->state == META_GROUP_DEAD) {
        return KP_ERROR_GROUP_ID_NOT_FOUND;
    }
    if (g->state == META_GROUP_EMPTY || meta__cstr_eq(g->protocol_type, "consumer")) {
        return 0;
    }
    return KP_ERROR_NON_EMPTY_GROUP;
}

/* Whether consumer protocol metadata (ConsumerProtocolSubscription: int16 version, then an
 * array of int16-length topic names) names `topic`. */
static bool meta__gsubscription_has(const uint8_t *p, size_t len, struct kp_str topic)
{
    struct kp_reader r;
    kp_reader_init(&r, p, len);
    (void)kp_read_i16(&r);
    int32_t n = kp_read_i32(&r);
    for (int32_t i = 0; i < n && !r.err; i++) {
        int16_t l = kp_read_i16(&r);
        if (l < 0) {
            return false;
        }
        const uint8_t *t = kp_read_raw(&r, (size_t)l);
        if (t != NULL && topic.len == l && memcmp(t, topic.ptr, (size_t)l) == 0) {
            return true;
        }
    }
    return false;
}

bool meta_group_topic_subscribed(const struct meta_group *g, struct kp_str topic)
{
    if (g->state == META_GROUP_EMPTY || g->protocol == NULL ||
        !meta__cstr_eq(g->protocol_type, "consumer")) {
        return false;
    }
    for (uint32_t i = 0; i < g->n_members; i++) {
        const struct meta_gmember *m = &g->members[i];
        for (uint32_t k = 0; k < m->n_protos; k++) {
            if (strcmp(m->protos[k].name, g->protocol) == 0 &&
                meta__gsubscription_has(m->protos[k].meta, m->protos[k].meta_len, topic)) {
                return true;
            }
        }
    }
    return false;
}

void meta_groups_expire(struct meta_groups *gs, int64_t now, int64_t retention_ms,
                        meta_groups_expire_fn fn, void *arg)
{
    uint32_t n = gs->n_groups;
    if (retention_ms <= 0 || n == 0) {
        return;
    }
    /* fn may delete the group: walk a snapshot of the group pointers. */
    struct meta_group **v = kp_xmalloc(sizeof(*v) * n);
    memcpy(v, gs->groups, sizeof(*v) * n);
    struct kp_str *topics = NULL;
    int32_t *parts = NULL;
    uint32_t cap = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct meta_group *g = v[i];
        /* Live-only groups (members came and went, nothing committed) go the same way. */
        if (g->state != META_GROUP_EMPTY || g->n_members > 0 || g->n_pending > 0) {
            continue;
        }
        if (g->empty_since_ms == 0) {
            g->empty_since_ms = now; /* Empty since it was loaded or created */
        }
        if (g->n_offsets > cap) {
            cap = g->n_offsets;
            topics = kp_xrealloc(topics, sizeof(*topics) * cap);
            parts = kp_xrealloc(parts, sizeof(*parts) * cap);
        }
        uint32_t k = 0;
        for (uint32_t o = 0; o < g->n_offsets; o++) {
            const struct meta_goffset *x = &g->offsets[o];
            int64_t since = x->commit_ms > g->empty_since_ms ? x->commit_ms : g->empty_since_ms;
            /* An expiry the commit asked for (OffsetCommit v1-v4) replaces the retention rule. */
            if (x->expire_ms > 0 ? now >= x->expire_ms : now - since >= retention_ms) {
                topics[k] = kp_str_from(x->topic);
                parts[k++] = x->partition;
            }
        }
        bool drop = k == g->n_offsets && now - g->empty_since_ms >= retention_ms;
        if (k > 0 || drop) {
            fn(arg, g, topics, parts, k, drop);
        }
    }
    free(topics);
    free(parts);
    free(v);
}

const struct meta_goffset *meta_group_offset(const struct meta_group *g, struct kp_str topic,
                                             int32_t partition)
{
    for (uint32_t i = 0; i < g->n_offsets; i++) {
        if (g->offsets[i].partition == partition && meta__geq(g->offsets[i].topic, topic)) {
            return &g->offsets[i];
        }
    }
    return NULL;
}

/* ---- persisted changes ---- */

static struct meta_group *meta__gpersisted(struct meta_groups *gs, struct kp_str id)
{
    struct meta_group *g = meta__gfind(gs, id);
    if (g == NULL) {
        g = meta__gcreate(gs, id);
    }
    g->persisted = true;
    return g;
}

void meta_groups_apply_commit(struct meta_groups *gs, int64_t now, struct kp_str group_id,
                              const struct meta_goffset_in *o, uint32_t n)
{
    if (!meta__gid_ok(group_id)) {
        return;
    }
    struct meta_group *g = meta__gpersisted(gs, group_id);
    for (uint32_t i = 0; i < n; i++) {
        struct meta_goffset *x =
            (struct meta_goffset *)meta_group_offset(g, o[i].topic, o[i].partition);
        if (x == NULL) {
            if (g->n_offsets == g->cap_offsets) {
                g->cap_offsets = g->cap_offsets ? g->cap_offsets * 2 : 8;
                g->offsets = kp_xrealloc(g->offsets, sizeof(*g->offsets) * g->cap_offsets);
            }
            x = &g->offsets[g->n_offsets++];
            x->topic = meta__gdup(o[i].topic.len >= 0 ? o[i].topic : kp_str_from(""));
            x->partition = o[i].partition;
            x->metadata = NULL;
        }
        x->offset = o[i].offset;
        x->leader_epoch = o[i].leader_epoch;
        x->expire_ms = o[i].expire_ms;
        free(x->metadata);
        x->metadata = meta__gdup(o[i].metadata.len >= 0 ? o[i].metadata : kp_str_from(""));
        x->commit_ms = now;
    }
}

void meta_groups_apply_offset_delete(struct meta_groups *gs, struct kp_str group_id,
                                     const struct kp_str *topics, const int32_t *partitions,
                                     uint32_t n)
{
    struct meta_group *g = meta__gfind(gs, group_id);
    if (g == NULL) {
        return;
    }
    for (uint32_t k = 0; k < n; k++) {
        for (uint32_t i = 0; i < g->n_offsets; i++) {
            struct meta_goffset *x = &g->offsets[i];
            if (x->partition == partitions[k] && meta__geq(x->topic, topics[k])) {
                free(x->topic);
                free(x->metadata);
                memmove(x, x + 1, sizeof(*x) * (g->n_offsets - i - 1));
                g->n_offsets--;
                break;
            }
        }
    }
}

void meta_groups_apply_delete(struct meta_groups *gs, struct kp_str group_id)
{
    struct meta_group *g = meta__gfind(gs, group_id);
    if (g != NULL) {
        meta__gremove_group(gs, g);
    }
}

void meta_groups_apply_generation(struct meta_groups *gs, struct kp_str group_id,
                                  int32_t generation, struct kp_str protocol_type,
                                  struct kp_str protocol, struct kp_str leader)
{
    if (!meta__gid_ok(group_id)) {
        return;
    }
    struct meta_group *g = meta__gpersisted(gs, group_id);
    char *t = meta__gdup(protocol_type);
    char *p = meta__gdup(protocol);
    char *l = meta__gdup(leader);
    free(g->stored_protocol_type);
    free(g->stored_protocol);
    free(g->stored_leader);
    g->stored_generation = generation;
    g->stored_protocol_type = t;
    g->stored_protocol = p;
    g->stored_leader = l;
    if (g->n_members == 0 && g->state == META_GROUP_EMPTY) {
        /* Replay (or a group without live members): continue from the stored generation. */
        if (g->generation < generation) {
            g->generation = generation;
        }
        meta__gset(&g->protocol_type, t);
    }
}

/* ---- journal ops ---- */

static struct meta__buf meta__gop_open(struct meta_op_buf *b, enum meta__gop op, int64_t now,
                                       struct kp_str group_id)
{
    struct meta__buf m = {b->p, 0, b->cap};
    meta__put_u8(&m, (uint8_t)META_OP_GROUP);
    meta__put_u64(&m, (uint64_t)now);
    meta__put_u8(&m, (uint8_t)op);
    meta__put_str(&m, group_id.ptr, group_id.len > 0 ? (size_t)group_id.len : 0);
    return m;
}

static void meta__gop_close(struct meta_op_buf *b, struct meta__buf *m)
{
    b->p = m->p;
    b->len = m->len;
    b->cap = m->cap;
}

static void meta__gput(struct meta__buf *m, struct kp_str s)
{
    if (s.len < 0) {
        meta__put_str(m, NULL, 0);
    } else {
        meta__put_str(m, s.ptr, (size_t)s.len);
    }
}

static struct kp_str meta__gget(struct kp_reader *r)
{
    const char *p;
    size_t n;
    meta__get_str(r, &p, &n);
    if (p == NULL) {
        return KP_STR_NULL;
    }
    if (n > INT32_MAX) {
        kp_reader_fail(r, KP_ERR_INVALID, "string too long");
        return KP_STR_NULL;
    }
    return (struct kp_str){p, (int32_t)n};
}

void meta_op_group_commit(struct meta_op_buf *b, int64_t now, struct kp_str group_id,
                          const struct meta_goffset_in *o, uint32_t n)
{
    struct meta__buf m = meta__gop_open(b, META_GOP_COMMIT_EXPIRE, now, group_id);
    meta__put_u32(&m, n);
    for (uint32_t i = 0; i < n; i++) {
        meta__gput(&m, o[i].topic);
        meta__put_u32(&m, (uint32_t)o[i].partition);
        meta__put_u64(&m, (uint64_t)o[i].offset);
        meta__put_u32(&m, (uint32_t)o[i].leader_epoch);
        meta__gput(&m, o[i].metadata);
        meta__put_u64(&m, (uint64_t)o[i].expire_ms);
    }
    meta__gop_close(b, &m);
}

void meta_op_group_offset_delete(struct meta_op_buf *b, int64_t now, struct kp_str group_id,
                                 const struct kp_str *topics, const int32_t *partitions, uint32_t n)
{
    struct meta__buf m = meta__gop_open(b, META_GOP_OFFSET_DELETE, now, group_id);
    meta__put_u32(&m, n);
    for (uint32_t i = 0; i < n; i++) {
        meta__gput(&m, topics[i]);
        meta__put_u32(&m, (uint32_t)partitions[i]);
    }
    meta__gop_close(b, &m);
}

void meta_op_group_delete(struct meta_op_buf *b, int64_t now, struct kp_str group_id)
{
    struct meta__buf m = meta__gop_open(b, META_GOP_DELETE, now, group_id);
    meta__gop_close(b, &m);
}

void meta_op_group_generation(struct meta_op_buf *b, int64_t now, struct kp_str group_id,
                              int32_t generation, struct kp_str protocol_type,
                              struct kp_str protocol, struct kp_str leader)
{
    struct meta__buf m = meta__gop_open(b, META_GOP_GENERATION, now, group_id);
    meta__put_u32(&m, (uint32_t)generation);
    meta__gput(&m, protocol_type);
    meta__gput(&m, protocol);
    meta__gput(&m, leader);
    meta__gop_close(b, &m);
}

int meta__groups_apply_op(struct meta_state *s, int64_t now, struct kp_reader *r)
{
    struct meta_groups *gs = meta_groups_of(s);
    uint8_t op = (uint8_t)kp_read_i8(r);
    struct kp_str group = meta__gget(r);
    if (r->err == 0 && group.len < 0) {
        return kp_reader_fail(r, KP_ERR_INVALID, "group op without a group id");
    }
    switch (op) {
    case META_GOP_COMMIT:
    case META_GOP_COMMIT_EXPIRE: {
        uint32_t n = kp_read_u32(r);
        if (r->err || (uint64_t)n * 24 > kp_reader_remaining(r)) {
            return kp_reader_fail(r, KP_ERR_SHORT, "offset count larger than the record");
        }
        struct meta_goffset_in *o = kp_xcalloc(n ? n : 1, sizeof(*o));
        for (uint32_t i = 0; i < n && !r->err; i++) {
            o[i].topic = meta__gget(r);
            o[i].partition = kp_read_i32(r);
            o[i].offset = kp_read_i64(r);
            o[i].leader_epoch = kp_read_i32(r);
            o[i].metadata = meta__gget(r);
            o[i].expire_ms = op == META_GOP_COMMIT_EXPIRE ? kp_read_i64(r) : 0;
        }
        if (!r->err) {
            meta_groups_apply_commit(gs, now, group, o, n);
        }
        free(o);
        break;
    }
    case META_GOP_OFFSET_DELETE: {
        uint32_t n = kp_read_u32(r);
        if (r->err || (uint64_t)n * 8 > kp_reader_remaining(r)) {
            return kp_reader_fail(r, KP_ERR_SHORT, "offset count larger than the record");
        }
        struct kp_str *t = kp_xcalloc(n ? n : 1, sizeof(*t));
        int32_t *p = kp_xcalloc(n ? n : 1, sizeof(*p));
        for (uint32_t i = 0; i < n && !r->err; i++) {
            t[i] = meta__gget(r);
            p[i] = kp_read_i32(r);
        }
        if (!r->err) {
            meta_groups_apply_offset_delete(gs, group, t, p, n);
        }
        free(t);
        free(p);
        break;
    }
    case META_GOP_DELETE:
        if (!r->err) {
            meta_groups_apply_delete(gs, group);
        }
        break;
    case META_GOP_GENERATION: {
        int32_t gen = kp_read_i32(r);
        struct kp_str t = meta__gget(r);
        struct kp_str p = meta__gget(r);
        struct kp_str l = meta__gget(r);
        if (!r->err) {
            meta_groups_apply_generation(gs, group, gen, t, p, l);
        }
        break;
    }
    default:
        return kp_reader_fail(r, KP_ERR_INVALID, "unknown group op");
    }
    return r->err;
}

/* ---- snapshot section ---- */

static int meta__gcmp(const void *a, const void *b)
{
    const struct meta_group *x = *(const struct meta_group *const *)a;
    const struct meta_group *y = *(const struct meta_group *const *)b;
    return strcmp(x->id, y->id);
}

void meta__groups_serialize(const struct meta_state *s, struct meta__buf *b)
{
    const struct meta_groups *gs = s->groups;
    uint32_t n = 0;
    for (uint32_t i = 0; gs != NULL && i < gs->n_groups; i++) {
        n += gs->groups[i]->persisted;
    }
    meta__put_u32(b, n);
    if (n == 0) {
        return;
    }
    /* Sorted by id: live-only groups interleave differently in a replayed state. */
    struct meta_group **v = kp_xmalloc(sizeof(*v) * n);
    n = 0;
    for (uint32_t i = 0; i < gs->n_groups; i++) {
        if (gs->groups[i]->persisted) {
            v[n++] = gs->groups[i];
        }
    }
    qsort(v, n, sizeof(*v), meta__gcmp);
    for (uint32_t i = 0; i < n; i++) {
        const struct meta_group *g = v[i];
        meta__put_str(b, g->id, strlen(g->id));
        meta__put_u32(b, (uint32_t)g->stored_generation);
        meta__put_str(b, g->stored_protocol_type,
                      g->stored_protocol_type ? strlen(g->stored_protocol_type) : 0);
        meta__put_str(b, g->stored_protocol, g->stored_protocol ? strlen(g->stored_protocol) : 0);
        meta__put_str(b, g->stored_leader, g->stored_leader ? strlen(g->stored_leader) : 0);
        meta__put_u32(b, g->n_offsets);
        for (uint32_t k = 0; k < g->n_offsets; k++) {
            const struct meta_goffset *o = &g->offsets[k];
            meta__put_str(b, o->topic, strlen(o->topic));
            meta__put_u32(b, (uint32_t)o->partition);
            meta__put_u64(b, (uint64_t)o->offset);
            meta__put_u32(b, (uint32_t)o->leader_epoch);
            meta__put_str(b, o->metadata, strlen(o->metadata));
            meta__put_u64(b, (uint64_t)o->commit_ms);
            meta__put_u64(b, (uint64_t)o->expire_ms);
        }
    }
    free(v);
}

int meta__groups_deserialize(struct meta_state *s, struct kp_reader *r)
{
    struct meta_groups *gs = meta_groups_of(s);
    uint32_t n = kp_read_u32(r);
    if (r->err || (uint64_t)n * 24 > kp_reader_remaining(r)) {
        return kp_reader_fail(r, KP_ERR_SHORT, "group count larger than the snapshot");
    }
    for (uint32_t i = 0; i < n && !r->err; i++) {
        struct kp_str id = meta__gget(r);
        int32_t gen = kp_read_i32(r);
        struct kp_str t = meta__gget(r);
        struct kp_str p = meta__gget(r);
        struct kp_str l = meta__gget(r);
        uint32_t no = kp_read_u32(r);
        if (r->err || id.len < 0 || meta__gfind(gs, id) != NULL ||
            (uint64_t)no * 32 > kp_reader_remaining(r)) {
            return kp_reader_fail(r, KP_ERR_INVALID, "bad group in the snapshot");
        }
        meta_groups_apply_generation(gs, id, gen, t, p, l);
        struct meta_group *g = meta__gfind(gs, id);
        for (uint32_t k = 0; k < no && !r->err; k++) {
            struct meta_goffset_in o;
            o.topic = meta__gget(r);
            o.partition = kp_read_i32(r);
            o.offset = kp_read_i64(r);
            o.leader_epoch = kp_read_i32(r);
            o.metadata = meta__gget(r);
            int64_t at = kp_read_i64(r);
            o.expire_ms = kp_read_i64(r);
            if (!r->err) {
                meta_groups_apply_commit(gs, at, id, &o, 1);
            }
        }
        (void)g;
    }
    return r->err;
}
