/*
 * The agent's topic cache: name -> id, partition count and the configs the data paths need.
 * Answers from memory when an entry is younger than AGENT__TOPIC_TTL_MS, otherwise asks the
 * metadata service (MetaDescribeTopics) and, for Metadata requests that allow it, creates
 * missing topics (MetaCreateTopics) with num.partitions, as auto.create.topics.enable does.
 *
 * Entries are refreshed in place, so a pointer stays valid until the topic is invalidated or
 * found deleted; callers copy what they need before their next asynchronous step. Topics that do
 * not exist are not cached, so a topic created through another agent is seen at once.
 *
 * A lookup that found some names in the cache and has to ask the metadata service for others
 * does not keep the cached pointers across that round trip: an entry may be invalidated (admin
 * requests) or dropped (found deleted by another lookup) meanwhile. When the answer comes, every
 * name is resolved again from the cache; a name whose entry went away is asked for once more.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "runnel/common/log.h"
#include "runnel/protocol/errors.h"

#define AGENT__TOPIC_TTL_MS 2000 /* cache entries younger than this are used as they are */

struct agent_topics {
    struct agent_topic *list; /* every cached topic */
};

/* One agent_topics_get() in progress. */
struct agent__topics_op {
    struct agent *a;
    agent_topics_cb cb;
    void *arg;
    size_t n;                   /* names asked for */
    char **names;               /* copies, NUL-terminated */
    struct agent_topic **found; /* answers, index-aligned with names */
    int16_t *errors;            /* Kafka error per name when found[i] is NULL */
    bool auto_create;           /* create what is missing */
    bool created;               /* the create step ran already */
    bool all;                   /* agent_topics_get_all */
    bool asked;                 /* the metadata service was asked (found[] may be stale) */
    bool asked_again;           /* names whose entries vanished were described once more */
};

static struct agent_topics *agent__topics(struct agent *a)
{
    if (a->topics == NULL) {
        a->topics = kp_xcalloc(1, sizeof(*a->topics));
    }
    return a->topics;
}

static struct agent_topic *agent__find(struct agent *a, const char *name, size_t len)
{
    for (struct agent_topic *t = agent__topics(a)->list; t != NULL; t = t->next) {
        if (strlen(t->name) == len && memcmp(t->name, name, len) == 0) {
            return t;
        }
    }
    return NULL;
}

struct agent_topic *agent_topic_cached(struct agent *a, struct kp_str name)
{
    if (name.len < 0) {
        return NULL;
    }
    return agent__find(a, name.ptr, (size_t)name.len);
}

struct agent_topic *agent_topic_by_id(struct agent *a, const struct kp_uuid *id)
{
    for (struct agent_topic *t = agent__topics(a)->list; t != NULL; t = t->next) {
        if (memcmp(t->id.b, id->b, 16) == 0) {
            return t;
        }
    }
    return NULL;
}

static void agent__topic_remove(struct agent *a, struct agent_topic *victim)
{
    struct agent_topic **pp = &agent__topics(a)->list;
    while (*pp != NULL) {
        if (*pp == victim) {
            *pp = victim->next;
            free(victim->name);
            free(victim);
            return;
        }
        pp = &(*pp)->next;
    }
}

void agent_topics_invalidate(struct agent *a, struct kp_str name)
{
    struct agent_topic *t = agent_topic_cached(a, name);
    if (t != NULL) {
        agent__topic_remove(a, t);
    }
}

/* Stores one described topic in the cache and returns its entry. */
static struct agent_topic *
agent__topic_store(struct agent *a,
                   const struct kp_meta_describe_topics_response_meta_described_topic *d)
{
    struct agent_topic *t = agent__find(a, d->name.ptr, (size_t)d->name.len);
    if (t == NULL) {
        t = kp_xcalloc(1, sizeof(*t));
        t->name = kp_xmalloc((size_t)d->name.len + 1);
        memcpy(t->name, d->name.ptr, (size_t)d->name.len);
        t->name[d->name.len] = '\0';
        t->next = agent__topics(a)->list;
        agent__topics(a)->list = t;
    }
    t->id = d->topic_id;
    t->partitions = d->num_partitions;
    t->max_message_bytes = 1048588; /* Kafka's default, replaced by the config below */
    t->log_append_time = false;
    t->compact = false;
    for (int32_t i = 0; i < d->configs_count; i++) {
        const struct kp_meta_describe_topics_response_meta_described_config *c = &d->configs[i];
        if (c->value.len < 0) {
            continue;
        }
        char v[64];
        size_t vl = (size_t)c->value.len < sizeof(v) - 1 ? (size_t)c->value.len : sizeof(v) - 1;
        memcpy(v, c->value.ptr, vl);
        v[vl] = '\0';
        if (kp_str_eq_cstr(c->name, "max.message.bytes")) {
            t->max_message_bytes = strtoll(v, NULL, 10);
        } else if (kp_str_eq_cstr(c->name, "message.timestamp.type")) {
            t->log_append_time = strcmp(v, "LogAppendTime") == 0;
        } else if (kp_str_eq_cstr(c->name, "cleanup.policy")) {
            t->compact = strstr(v, "compact") != NULL;
        }
    }
    t->fetched_ms = uv_now(a->loop);
    return t;
}

/*
 * Names answered from the cache before a round trip to the metadata service point into the
 * cache, and the entry may have been invalidated or dropped meanwhile (the pointer would
 * dangle): looks every such name up again. Returns true if one is no longer cached (its answer
 * becomes NULL with UNKNOWN_TOPIC_OR_PARTITION).
 */
static bool agent__op_resolve_again(struct agent__topics_op *op)
{
    bool vanished = false;
    for (size_t i = 0; i < op->n; i++) {
        if (op->found[i] == NULL) {
            continue;
        }
        op->found[i] = agent__find(op->a, op->names[i], strlen(op->names[i]));
        if (op->found[i] == NULL) {
            op->errors[i] = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            vanished = true;
        }
    }
    return vanished;
}

static void agent__op_finish(struct agent__topics_op *op, int status)
{
    if (op->asked && !op->all) {
        if (status != 0) {
            memset(op->found, 0, op->n * sizeof(*op->found)); /* callers ignore them then */
        } else {
            (void)agent__op_resolve_again(op);
        }
    }
    op->cb(op->arg, status, op->found, op->errors, op->n);
    for (size_t i = 0; i < op->n; i++) {
        free(op->names[i]);
    }
    free(op->names);
    free(op->found);
    free(op->errors);
    free(op);
}

static void agent__op_describe(struct agent__topics_op *op);

static void agent__created_cb(void *arg, int status, const void *response)
{
    struct agent__topics_op *op = arg;
    if (status != 0) {
        agent__op_finish(op, status);
        return;
    }
    const struct kp_meta_create_topics_response *r = response;
    for (int32_t i = 0; i < r->topics_count; i++) {
        const struct kp_meta_create_topics_response_meta_created_topic *t = &r->topics[i];
        if (t->error_code == 0 || t->error_code == KP_ERROR_TOPIC_ALREADY_EXISTS) {
            rn_log(RN_LOG_INFO, "topic_auto_created", "topic=%.*s partitions=%d", t->name.len,
                   t->name.ptr, t->num_partitions);
            continue;
        }
        for (size_t j = 0; j < op->n; j++) {
            if (op->found[j] == NULL && kp_str_eq_cstr(t->name, op->names[j])) {
                op->errors[j] = t->error_code;
            }
        }
    }
    op->created = true;
    agent__op_describe(op); /* read back ids, partitions and configs */
}

static void agent__create_missing(struct agent__topics_op *op)
{
    struct agent *a = op->a;
    struct kp_meta_create_topics_request req;
    kp_meta_create_topics_request_init(&req);
    struct kp_meta_create_topics_request_meta_creatable_topic *ts = kp_xcalloc(op->n, sizeof(*ts));
    int32_t k = 0;
    for (size_t i = 0; i < op->n; i++) {
        if (op->found[i] != NULL || op->errors[i] != KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION) {
            continue;
        }
        kp_meta_create_topics_request_meta_creatable_topic_init(&ts[k]);
        ts[k].name = kp_str_from(op->names[i]);
        ts[k].num_partitions = (int32_t)a->cfg.default_partitions;
        ts[k].configs_count = 0;
        k++;
    }
    req.topics = ts;
    req.topics_count = k;
    int rc = k == 0 ? 0 : meta_client_call(a->meta, 1001, &req, agent__created_cb, op);
    free(ts);
    if (k == 0) {
        agent__op_finish(op, 0);
    } else if (rc != 0) {
        agent__op_finish(op, rc);
    }
}

static void agent__described_cb(void *arg, int status, const void *response)
{
    struct agent__topics_op *op = arg;
    struct agent *a = op->a;
    if (status != 0) {
        agent__op_finish(op, status);
        return;
    }
    const struct kp_meta_describe_topics_response *r = response;
    if (op->all) {
        free(op->names);
        free(op->found);
        free(op->errors);
        op->n = r->topics_count > 0 ? (size_t)r->topics_count : 0;
        op->found = kp_xcalloc(op->n ? op->n : 1, sizeof(*op->found));
        op->errors = kp_xcalloc(op->n ? op->n : 1, sizeof(*op->errors));
        op->names = kp_xcalloc(op->n ? op->n : 1, sizeof(*op->names));
        for (size_t i = 0; i < op->n; i++) {
            op->names[i] = kp_xcalloc(1, 1);
            if (r->topics[i].error_code == 0) {
                op->found[i] = agent__topic_store(a, &r->topics[i]);
            } else {
                op->errors[i] = r->topics[i].error_code;
            }
        }
        agent__op_finish(op, 0);
        return;
    }
    bool missing = false;
    for (int32_t i = 0; i < r->topics_count; i++) {
        const struct kp_meta_describe_topics_response_meta_described_topic *d = &r->topics[i];
        for (size_t j = 0; j < op->n; j++) {
            if (op->found[j] != NULL || !kp_str_eq_cstr(d->name, op->names[j])) {
                continue;
            }
            if (d->error_code == 0) {
                op->found[j] = agent__topic_store(a, d);
                op->errors[j] = 0;
            } else {
                if (d->error_code == KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION) {
                    struct agent_topic *stale = agent__find(a, op->names[j], strlen(op->names[j]));
                    if (stale != NULL) {
                        agent__topic_remove(a, stale);
                    }
                    missing = true;
                }
                if (op->errors[j] == 0 || !op->created) {
                    op->errors[j] = d->error_code;
                }
            }
        }
    }
    if (missing && op->auto_create && !op->created) {
        agent__create_missing(op);
        return;
    }
    if (!op->asked_again && agent__op_resolve_again(op)) {
        op->asked_again = true; /* an entry went away meanwhile: ask for that name once more */
        agent__op_describe(op);
        return;
    }
    agent__op_finish(op, 0);
}

static void agent__op_describe(struct agent__topics_op *op)
{
    struct agent *a = op->a;
    op->asked = true;
    struct kp_meta_describe_topics_request req;
    kp_meta_describe_topics_request_init(&req);
    req.include_configs = true;
    req.include_partitions = false;
    struct kp_meta_describe_topics_request_meta_describable_topic *ts = NULL;
    if (op->all) {
        req.topics = NULL;
        req.topics_count = -1;
    } else {
        ts = kp_xcalloc(op->n ? op->n : 1, sizeof(*ts));
        int32_t k = 0;
        for (size_t i = 0; i < op->n; i++) {
            if (op->found[i] != NULL) {
                continue;
            }
            kp_meta_describe_topics_request_meta_describable_topic_init(&ts[k]);
            ts[k].name = kp_str_from(op->names[i]);
            k++;
        }
        req.topics = ts;
        req.topics_count = k;
    }
    int rc = meta_client_call(a->meta, 1004, &req, agent__described_cb, op);
    free(ts);
    if (rc != 0) {
        agent__op_finish(op, rc);
    }
}

void agent_topics_get(struct agent *a, const struct kp_str *names, size_t n, bool auto_create,
                      agent_topics_cb cb, void *arg)
{
    struct agent__topics_op *op = kp_xcalloc(1, sizeof(*op));
    op->a = a;
    op->cb = cb;
    op->arg = arg;
    op->n = n;
    op->auto_create = auto_create && a->cfg.auto_create_topics;
    op->names = kp_xcalloc(n ? n : 1, sizeof(*op->names));
    op->found = kp_xcalloc(n ? n : 1, sizeof(*op->found));
    op->errors = kp_xcalloc(n ? n : 1, sizeof(*op->errors));
    uint64_t now = uv_now(a->loop);
    size_t misses = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = names[i].len > 0 ? (size_t)names[i].len : 0;
        op->names[i] = kp_xmalloc(len + 1);
        if (len > 0) {
            memcpy(op->names[i], names[i].ptr, len);
        }
        op->names[i][len] = '\0';
        struct agent_topic *t = agent__find(a, op->names[i], len);
        if (t != NULL && now - t->fetched_ms < AGENT__TOPIC_TTL_MS) {
            op->found[i] = t;
        } else {
            op->errors[i] = KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION;
            misses++;
        }
    }
    if (misses == 0) {
        agent__op_finish(op, 0);
        return;
    }
    agent__op_describe(op);
}

void agent_topics_get_all(struct agent *a, agent_topics_cb cb, void *arg)
{
    struct agent__topics_op *op = kp_xcalloc(1, sizeof(*op));
    op->a = a;
    op->cb = cb;
    op->arg = arg;
    op->all = true;
    op->names = kp_xcalloc(1, sizeof(*op->names));
    op->found = kp_xcalloc(1, sizeof(*op->found));
    op->errors = kp_xcalloc(1, sizeof(*op->errors));
    agent__op_describe(op);
}

void agent_topics_free(struct agent *a)
{
    if (a->topics == NULL) {
        return;
    }
    struct agent_topic *t = a->topics->list;
    while (t != NULL) {
        struct agent_topic *next = t->next;
        free(t->name);
        free(t);
        t = next;
    }
    free(a->topics);
    a->topics = NULL;
}
