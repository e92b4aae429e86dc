/*
 * The admin APIs (agent/src/admin.c) on one libuv loop: a real agent listener and an in-process
 * metadata server over loopback. A raw client socket sends CreateTopics, DeleteTopics,
 * CreatePartitions, DescribeConfigs, AlterConfigs and IncrementalAlterConfigs frames built with
 * the generated codec, at several versions, and checks error codes, messages, the per-version
 * fields and that the topic cache forgets changed topics. The pure helpers (list edits for
 * APPEND/SUBTRACT, error explanations, the config key table) are tested directly.
 */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "admin.h"
#include "agent.h"
#include "agent_env.h"
#include "runnel/metadata/client.h"
#include "runnel/metadata/server.h"
#include "runnel/metadata/state.h"
#include "runnel/protocol/errors.h"

static void start(struct agent_env *e)
{
    agent_env_open(e, "admin");
    e->a.cfg.node_id = 7;
    e->a.cfg.default_partitions = 2;
    agent_env_listen(e, 1);
}

static void stop(struct agent_env *e)
{
    close(e->fd[0]);
    for (int i = 0; i < 50; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
    }
    agent_server_stop(&e->a);
    agent_topics_free(&e->a);
    if (e->a.meta != NULL) {
        meta_client_close(e->a.meta);
    }
    agent_env_close(e);
}

/* Sends one request and decodes its response into out (memory in e->arena). */
static void call(struct agent_env *e, int16_t key, int16_t version, const void *body, void *out)
{
    size_t rest = 0;
    agent_env_send(e, 0, key, version, ++e->corr, "test-admin", body);
    assert_int_equal(agent_env_recv(e, 0, key, version, 100000, out, &rest), e->corr);
    assert_int_equal(rest, 0);
}

static bool str_has(struct kp_str s, const char *needle)
{
    if (s.len < 0) {
        return false;
    }
    char buf[1024];
    size_t n = (size_t)s.len < sizeof(buf) - 1 ? (size_t)s.len : sizeof(buf) - 1;
    memcpy(buf, s.ptr, n);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* ---- request builders ---- */

struct topic_spec {
    const char *name;
    int32_t partitions;
    int16_t rf;
    const char *cfg_name; /* one config or NULL */
    const char *cfg_value;
};

static const struct kp_create_topics_response_creatable_topic_result *
create(struct agent_env *e, int16_t version, const struct topic_spec *specs, int n,
       bool validate_only, struct kp_create_topics_response *rs)
{
    struct kp_create_topics_request rq;
    kp_create_topics_request_init(&rq);
    struct kp_create_topics_request_creatable_topic ts[8];
    struct kp_create_topics_request_creatable_topic_config cs[8];
    for (int i = 0; i < n; i++) {
        kp_create_topics_request_creatable_topic_init(&ts[i]);
        ts[i].name = kp_str_from(specs[i].name);
        ts[i].num_partitions = specs[i].partitions;
        ts[i].replication_factor = specs[i].rf;
        ts[i].assignments_count = 0;
        ts[i].configs_count = 0;
        if (specs[i].cfg_name != NULL) {
            kp_create_topics_request_creatable_topic_config_init(&cs[i]);
            cs[i].name = kp_str_from(specs[i].cfg_name);
            cs[i].value = kp_str_from(specs[i].cfg_value);
            ts[i].configs = &cs[i];
            ts[i].configs_count = 1;
        }
    }
    rq.topics = ts;
    rq.topics_count = n;
    rq.timeout_ms = 5000;
    rq.validate_only = validate_only;
    call(e, 19, version, &rq, rs);
    return rs->topics_count > 0 ? &rs->topics[0] : NULL;
}

static int16_t create1(struct agent_env *e, const char *name, int32_t parts, int16_t rf)
{
    struct topic_spec s = {name, parts, rf, NULL, NULL};
    struct kp_create_topics_response rs;
    const struct kp_create_topics_response_creatable_topic_result *r =
        create(e, 7, &s, 1, false, &rs);
    assert_non_null(r);
    return r->error_code;
}

static int16_t create_partitions(struct agent_env *e, int16_t version, const char *name,
                                 int32_t count, bool validate_only, struct kp_str *msg)
{
    struct kp_create_partitions_request rq;
    kp_create_partitions_request_init(&rq);
    struct kp_create_partitions_request_create_partitions_topic t;
    kp_create_partitions_request_create_partitions_topic_init(&t);
    t.name = kp_str_from(name);
    t.count = count;
    t.assignments = NULL;
    t.assignments_count = -1;
    rq.topics = &t;
    rq.topics_count = 1;
    rq.timeout_ms = 5000;
    rq.validate_only = validate_only;
    struct kp_create_partitions_response rs;
    call(e, 37, version, &rq, &rs);
    assert_int_equal(rs.results_count, 1);
    assert_true(kp_str_eq_cstr(rs.results[0].name, name));
    if (msg != NULL) {
        *msg = rs.results[0].error_message;
    }
    return rs.results[0].error_code;
}

/* DescribeConfigs of one resource; returns its result. */
static const struct kp_describe_configs_response_describe_configs_result *
describe(struct agent_env *e, int16_t version, int8_t type, const char *name, const char *only_key,
         bool synonyms, bool docs)
{
    struct kp_describe_configs_request rq;
    kp_describe_configs_request_init(&rq);
    struct kp_describe_configs_request_describe_configs_resource res;
    kp_describe_configs_request_describe_configs_resource_init(&res);
    struct kp_str key = kp_str_from(only_key);
    res.resource_type = type;
    res.resource_name = kp_str_from(name);
    res.configuration_keys = only_key != NULL ? &key : NULL;
    res.configuration_keys_count = only_key != NULL ? 1 : -1;
    rq.resources = &res;
    rq.resources_count = 1;
    rq.include_synonyms = synonyms;
    rq.include_documentation = docs;
    struct kp_describe_configs_response *rs = kp_arena_calloc(&e->arena, 1, sizeof(*rs));
    call(e, 32, version, &rq, rs);
    assert_int_equal(rs->results_count, 1);
    return &rs->results[0];
}

static const struct kp_describe_configs_response_describe_configs_resource_result *
find_cfg(const struct kp_describe_configs_response_describe_configs_result *r, const char *name)
{
    for (int32_t i = 0; i < r->configs_count; i++) {
        if (kp_str_eq_cstr(r->configs[i].name, name)) {
            return &r->configs[i];
        }
    }
    return NULL;
}

/* The topic's current value of `key` through DescribeConfigs v4. */
static bool topic_value_is(struct agent_env *e, const char *topic, const char *key,
                           const char *want)
{
    const struct kp_describe_configs_response_describe_configs_result *r =
        describe(e, 4, 2, topic, key, false, false);
    assert_int_equal(r->error_code, 0);
    const struct kp_describe_configs_response_describe_configs_resource_result *c =
        find_cfg(r, key);
    assert_non_null(c);
    return kp_str_eq_cstr(c->value, want);
}

struct alter_cfg {
    const char *name;
    int8_t op;
    const char *value;
};

static int16_t incremental(struct agent_env *e, int16_t version, int8_t type, const char *name,
                           const struct alter_cfg *cfgs, int n, bool validate_only,
                           struct kp_str *msg)
{
    struct kp_incremental_alter_configs_request rq;
    kp_incremental_alter_configs_request_init(&rq);
    struct kp_incremental_alter_configs_request_alter_configs_resource res;
    kp_incremental_alter_configs_request_alter_configs_resource_init(&res);
    struct kp_incremental_alter_configs_request_alterable_config cs[8];
    for (int i = 0; i < n; i++) {
        kp_incremental_alter_configs_request_alterable_config_init(&cs[i]);
        cs[i].name = kp_str_from(cfgs[i].name);
        cs[i].config_operation = cfgs[i].op;
        cs[i].value = kp_str_from(cfgs[i].value);
    }
    res.resource_type = type;
    res.resource_name = kp_str_from(name);
    res.configs = cs;
    res.configs_count = n;
    rq.resources = &res;
    rq.resources_count = 1;
    rq.validate_only = validate_only;
    struct kp_incremental_alter_configs_response rs;
    call(e, 44, version, &rq, &rs);
    assert_int_equal(rs.responses_count, 1);
    assert_true(kp_str_eq_cstr(rs.responses[0].resource_name, name));
    if (msg != NULL) {
        *msg = rs.responses[0].error_message;
    }
    return rs.responses[0].error_code;
}

static int16_t alter_legacy(struct agent_env *e, int16_t version, const char *topic,
                            const char *key, const char *value, bool validate_only,
                            struct kp_str *msg)
{
    struct kp_alter_configs_request rq;
    kp_alter_configs_request_init(&rq);
    struct kp_alter_configs_request_alter_configs_resource res;
    kp_alter_configs_request_alter_configs_resource_init(&res);
    struct kp_alter_configs_request_alterable_config c;
    kp_alter_configs_request_alterable_config_init(&c);
    c.name = kp_str_from(key);
    c.value = kp_str_from(value);
    res.resource_type = 2;
    res.resource_name = kp_str_from(topic);
    res.configs = &c;
    res.configs_count = 1;
    rq.resources = &res;
    rq.resources_count = 1;
    rq.validate_only = validate_only;
    struct kp_alter_configs_response rs;
    call(e, 33, version, &rq, &rs);
    assert_int_equal(rs.responses_count, 1);
    if (msg != NULL) {
        *msg = rs.responses[0].error_message;
    }
    return rs.responses[0].error_code;
}

/* ---- pure helpers ---- */

static bool edit_is(const char *cur, const char *arg, bool append, const char *want)
{
    char out[64];
    if (agent__cfg_list_edit(cur, kp_str_from(arg), append, out, sizeof(out)) != 0) {
        return false;
    }
    return strcmp(out, want) == 0;
}

static void test_admin_list_edit(void **state)
{
    (void)state;
    assert_true(edit_is("delete", "compact", true, "delete,compact"));
    assert_true(edit_is("delete", "delete", true, "delete"));
    assert_true(edit_is("delete, compact", " compact ,delete", true, "delete,compact"));
    assert_true(edit_is("delete,compact", "delete", false, "compact"));
    assert_true(edit_is("delete", "delete", false, ""));
    assert_true(edit_is("", "compact", true, "compact"));
    assert_true(edit_is("a,b,a", "x", false, "a,b"));
    char small[8];
    assert_int_equal(
        agent__cfg_list_edit("delete", kp_str_from("compact"), true, small, sizeof(small)),
        -ENOSPC);
}

static void test_admin_config_table(void **state)
{
    (void)state;
    /* Every key the metadata service stores has a type and documentation here. */
    for (int k = 0; k < META_CFG_COUNT; k++) {
        const struct agent__cfg_info *i =
            agent__cfg_info_find(kp_str_from(meta_config_key_name(k)));
        assert_non_null(i);
        assert_true(i->type != AGENT__CFG_UNKNOWN);
        assert_non_null(i->doc);
    }
    assert_int_equal(agent__cfg_info_find(kp_str_from("cleanup.policy"))->type, AGENT__CFG_LIST);
    assert_null(agent__cfg_info_find(kp_str_from("no.such.key")));
}

static void test_admin_explain(void **state)
{
    (void)state;
    char out[256];
    struct kp_str names[2] = {kp_str_from("retention.ms"), kp_str_from("bogus.key")};
    struct kp_str values[2] = {kp_str_from("100"), kp_str_from("1")};
    agent__admin_explain(KP_ERROR_INVALID_CONFIG, kp_str_from("t"), names, values, 2, -1, out,
                         sizeof(out));
    assert_string_equal(out, "Unknown topic config name: bogus.key");
    values[0] = kp_str_from("soon");
    agent__admin_explain(KP_ERROR_INVALID_CONFIG, kp_str_from("t"), names, values, 1, -1, out,
                         sizeof(out));
    assert_string_equal(out, "Invalid value soon for configuration retention.ms");
    values[0] = KP_STR_NULL;
    agent__admin_explain(KP_ERROR_INVALID_CONFIG, kp_str_from("t"), names, values, 1, -1, out,
                         sizeof(out));
    assert_string_equal(out, "Null value not supported for topic configs: retention.ms");
    agent__admin_explain(KP_ERROR_TOPIC_ALREADY_EXISTS, kp_str_from("t1"), NULL, NULL, 0, -1, out,
                         sizeof(out));
    assert_string_equal(out, "Topic 't1' already exists.");
    agent__admin_explain(KP_ERROR_INVALID_TOPIC_EXCEPTION, kp_str_from("a b"), NULL, NULL, 0, -1,
                         out, sizeof(out));
    assert_non_null(strstr(out, "illegal"));
    agent__admin_explain(KP_ERROR_INVALID_PARTITIONS, kp_str_from("t"), NULL, NULL, 0, 0, out,
                         sizeof(out));
    assert_string_equal(out, "Number of partitions was set to an invalid non-positive value.");
    /* Tiny buffers are still NUL-terminated. */
    agent__admin_explain(KP_ERROR_TOPIC_ALREADY_EXISTS, kp_str_from("t1"), NULL, NULL, 0, -1, out,
                         5);
    assert_int_equal(strlen(out), 4);
}

/* ---- through the listener ---- */

static void test_admin_create_topics(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    struct kp_create_topics_response rs;
    struct topic_spec s = {"orders", 3, -1, "retention.ms", "1000"};
    const struct kp_create_topics_response_creatable_topic_result *r =
        create(&e, 7, &s, 1, false, &rs);
    assert_int_equal(r->error_code, 0);
    assert_int_equal(r->num_partitions, 3);
    assert_int_equal(r->replication_factor, 1);
    static const struct kp_uuid zero;
    assert_true(memcmp(r->topic_id.b, zero.b, 16) != 0);
    bool seen = false;
    for (int32_t i = 0; i < r->configs_count; i++) {
        if (kp_str_eq_cstr(r->configs[i].name, "retention.ms")) {
            assert_true(kp_str_eq_cstr(r->configs[i].value, "1000"));
            assert_int_equal(r->configs[i].config_source, 1);
            seen = true;
        } else if (kp_str_eq_cstr(r->configs[i].name, "cleanup.policy")) {
            assert_true(kp_str_eq_cstr(r->configs[i].value, "delete"));
            assert_int_equal(r->configs[i].config_source, 5);
        }
    }
    assert_true(seen);

    /* Again: TOPIC_ALREADY_EXISTS with Kafka's message, at v2 (no configs there). */
    r = create(&e, 2, &s, 1, false, &rs);
    assert_int_equal(r->error_code, KP_ERROR_TOPIC_ALREADY_EXISTS);
    assert_true(kp_str_eq_cstr(r->error_message, "Topic 'orders' already exists."));

    /* validate_only creates nothing but reports the configs it would have. */
    struct topic_spec v = {"checked", 4, 3, "cleanup.policy", "compact"};
    r = create(&e, 5, &v, 1, true, &rs);
    assert_int_equal(r->error_code, 0);
    assert_int_equal(r->num_partitions, 4);
    assert_true(r->configs_count > 0);
    assert_int_equal(create1(&e, "checked", 4, 1), 0); /* it did not exist */

    /* Defaults, refusals and their codes. */
    assert_int_equal(create1(&e, "dflt", -1, -1), 0);
    assert_int_equal(describe(&e, 4, 2, "dflt", NULL, false, false)->error_code, 0);
    assert_int_equal(create_partitions(&e, 3, "dflt", 2, false, NULL),
                     KP_ERROR_INVALID_PARTITIONS); /* it has num.partitions = 2 already */
    assert_int_equal(create1(&e, "rf0", 1, 0), KP_ERROR_INVALID_REPLICATION_FACTOR);
    assert_int_equal(create1(&e, "rf-2", 1, -2), KP_ERROR_INVALID_REPLICATION_FACTOR);
    assert_int_equal(create1(&e, "p0", 0, 1), KP_ERROR_INVALID_PARTITIONS);
    assert_int_equal(create1(&e, "bad name", 1, 1), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(create1(&e, "bad name", 1, 0), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(create1(&e, "orders", 1, 0), KP_ERROR_TOPIC_ALREADY_EXISTS);
    assert_int_equal(create1(&e, "orders", 1, -5), KP_ERROR_TOPIC_ALREADY_EXISTS);
    struct topic_spec bad[] = {
        {"badcfg", 1, 1, "retention.ms", "forever"},
        {"unknowncfg", 1, 1, "no.such.config", "1"},
        {"dup", 1, 1, NULL, NULL},
        {"dup", 2, 1, NULL, NULL},
    };
    struct kp_create_topics_response rb;
    create(&e, 4, bad, 4, false, &rb);
    assert_int_equal(rb.topics_count, 3); /* one result for the repeated name */
    assert_int_equal(rb.topics[0].error_code, KP_ERROR_INVALID_CONFIG);
    assert_true(kp_str_eq_cstr(rb.topics[0].error_message,
                               "Invalid value forever for configuration retention.ms"));
    assert_int_equal(rb.topics[1].error_code, KP_ERROR_INVALID_CONFIG);
    assert_true(str_has(rb.topics[1].error_message, "no.such.config"));
    assert_int_equal(rb.topics[2].error_code, KP_ERROR_INVALID_REQUEST);
    assert_int_equal(describe(&e, 4, 2, "dup", NULL, false, false)->error_code,
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);

    /* Manual assignments: the partition count is theirs; mixing with counts is refused. */
    struct kp_create_topics_request rq;
    kp_create_topics_request_init(&rq);
    struct kp_create_topics_request_creatable_topic t;
    kp_create_topics_request_creatable_topic_init(&t);
    int32_t brokers[1] = {7};
    struct kp_create_topics_request_creatable_replica_assignment as[2];
    for (int i = 0; i < 2; i++) {
        kp_create_topics_request_creatable_replica_assignment_init(&as[i]);
        as[i].partition_index = 1 - i;
        as[i].broker_ids = brokers;
        as[i].broker_ids_count = 1;
    }
    t.name = kp_str_from("assigned");
    t.num_partitions = -1;
    t.replication_factor = -1;
    t.assignments = as;
    t.assignments_count = 2;
    t.configs_count = 0;
    rq.topics = &t;
    rq.topics_count = 1;
    call(&e, 19, 7, &rq, &rs);
    assert_int_equal(rs.topics[0].error_code, 0);
    assert_int_equal(rs.topics[0].num_partitions, 2);
    t.name = kp_str_from("assigned2");
    t.num_partitions = 2;
    call(&e, 19, 7, &rq, &rs);
    assert_int_equal(rs.topics[0].error_code, KP_ERROR_INVALID_REQUEST);
    t.num_partitions = -1;
    as[0].partition_index = 5;
    call(&e, 19, 7, &rq, &rs);
    assert_int_equal(rs.topics[0].error_code, KP_ERROR_INVALID_REPLICA_ASSIGNMENT);
    stop(&e);
}

static void test_admin_delete_topics(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    struct topic_spec s[] = {{"a", 1, 1, NULL, NULL}, {"b", 1, 1, NULL, NULL}};
    struct kp_create_topics_response cr;
    create(&e, 7, s, 2, false, &cr);
    assert_int_equal(cr.topics[0].error_code, 0);
    assert_int_equal(cr.topics[1].error_code, 0);
    struct kp_uuid id_b = cr.topics[1].topic_id;

    /* v1 by name, then again: UNKNOWN_TOPIC_OR_PARTITION. */
    struct kp_delete_topics_request rq;
    kp_delete_topics_request_init(&rq);
    struct kp_str names[1] = {kp_str_from("a")};
    rq.topic_names = names;
    rq.topic_names_count = 1;
    rq.timeout_ms = 5000;
    struct kp_delete_topics_response rs;
    call(&e, 20, 1, &rq, &rs);
    assert_int_equal(rs.responses_count, 1);
    assert_int_equal(rs.responses[0].error_code, 0);
    call(&e, 20, 5, &rq, &rs);
    assert_int_equal(rs.responses[0].error_code, KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    assert_true(str_has(rs.responses[0].error_message, "'a'"));

    /* v6 by id: the name comes back; an unknown id, and name plus id, are refused. */
    struct kp_delete_topics_request_delete_topic_state st[3];
    for (int i = 0; i < 3; i++) {
        kp_delete_topics_request_delete_topic_state_init(&st[i]);
    }
    st[0].name = KP_STR_NULL;
    st[0].topic_id = id_b;
    st[1].name = KP_STR_NULL;
    memset(st[1].topic_id.b, 0x42, 16);
    st[2].name = kp_str_from("x");
    st[2].topic_id = id_b;
    kp_delete_topics_request_init(&rq);
    rq.topics = st;
    rq.topics_count = 3;
    call(&e, 20, 6, &rq, &rs);
    assert_int_equal(rs.responses_count, 3);
    assert_int_equal(rs.responses[0].error_code, 0);
    assert_true(kp_str_eq_cstr(rs.responses[0].name, "b"));
    assert_memory_equal(rs.responses[0].topic_id.b, id_b.b, 16);
    assert_int_equal(rs.responses[1].error_code, KP_ERROR_UNKNOWN_TOPIC_ID);
    assert_int_equal(rs.responses[2].error_code, KP_ERROR_INVALID_REQUEST);
    assert_int_equal(describe(&e, 4, 2, "b", NULL, false, false)->error_code,
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    stop(&e);
}

static void on_topics(void *arg, int status, struct agent_topic **topics, const int16_t *errors,
                      size_t n)
{
    int *done = arg;
    assert_int_equal(status, 0);
    assert_int_equal(n, 1);
    assert_non_null(topics[0]);
    (void)errors;
    (*done)++;
}

static void test_admin_create_partitions(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    assert_int_equal(create1(&e, "grow", 3, 1), 0);
    /* Cache the topic, then grow it: the cache must forget the old count. */
    int done = 0;
    struct kp_str nm = kp_str_from("grow");
    agent_topics_get(&e.a, &nm, 1, false, on_topics, &done);
    for (int i = 0; i < 20000 && done == 0; i++) {
        uv_run(&e.loop, UV_RUN_NOWAIT);
        usleep(100);
    }
    assert_int_equal(done, 1);
    assert_non_null(agent_topic_cached(&e.a, nm));
    assert_int_equal(agent_topic_cached(&e.a, nm)->partitions, 3);

    struct kp_str msg;
    assert_int_equal(create_partitions(&e, 0, "grow", 6, true, NULL), 0); /* validate only */
    assert_non_null(agent_topic_cached(&e.a, nm));
    assert_int_equal(create_partitions(&e, 3, "grow", 5, false, NULL), 0);
    assert_null(agent_topic_cached(&e.a, nm));
    assert_int_equal(create_partitions(&e, 1, "grow", 5, false, &msg), KP_ERROR_INVALID_PARTITIONS);
    assert_true(kp_str_eq_cstr(msg, "Topic already has 5 partitions."));
    assert_int_equal(create_partitions(&e, 2, "grow", 2, false, &msg), KP_ERROR_INVALID_PARTITIONS);
    assert_true(str_has(msg, "currently has 5 partitions"));
    assert_int_equal(create_partitions(&e, 3, "nope", 2, false, NULL),
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);

    /* Assignments must match the increase. */
    struct kp_create_partitions_request rq;
    kp_create_partitions_request_init(&rq);
    struct kp_create_partitions_request_create_partitions_topic t;
    kp_create_partitions_request_create_partitions_topic_init(&t);
    struct kp_create_partitions_request_create_partitions_assignment as;
    kp_create_partitions_request_create_partitions_assignment_init(&as);
    int32_t b = 7;
    as.broker_ids = &b;
    as.broker_ids_count = 1;
    t.name = nm;
    t.count = 7;
    t.assignments = &as;
    t.assignments_count = 1;
    rq.topics = &t;
    rq.topics_count = 1;
    struct kp_create_partitions_response rs;
    call(&e, 37, 3, &rq, &rs);
    assert_int_equal(rs.results[0].error_code, KP_ERROR_INVALID_REPLICA_ASSIGNMENT);
    t.count = 6;
    call(&e, 37, 3, &rq, &rs);
    assert_int_equal(rs.results[0].error_code, 0);
    stop(&e);
}

static void test_admin_describe_configs(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    struct topic_spec s = {"cfg", 1, 1, "retention.ms", "5000"};
    struct kp_create_topics_response cr;
    assert_int_equal(create(&e, 7, &s, 1, false, &cr)->error_code, 0);

    for (int16_t v = 0; v <= 4; v++) {
        const struct kp_describe_configs_response_describe_configs_result *r =
            describe(&e, v, 2, "cfg", NULL, v >= 1, v >= 3);
        assert_int_equal(r->error_code, 0);
        assert_int_equal(r->configs_count, META_CFG_COUNT);
        const struct kp_describe_configs_response_describe_configs_resource_result *c =
            find_cfg(r, "retention.ms");
        assert_non_null(c);
        assert_true(kp_str_eq_cstr(c->value, "5000"));
        assert_false(c->read_only);
        assert_false(c->is_sensitive);
        const struct kp_describe_configs_response_describe_configs_resource_result *d =
            find_cfg(r, "cleanup.policy");
        assert_non_null(d);
        assert_true(kp_str_eq_cstr(d->value, "delete"));
        if (v == 0) {
            assert_false(c->is_default);
            assert_true(d->is_default);
            continue;
        }
        assert_int_equal(c->config_source, 1);
        assert_int_equal(d->config_source, 5);
        assert_int_equal(c->synonyms_count, 2);
        assert_int_equal(c->synonyms[0].source, 1);
        assert_true(kp_str_eq_cstr(c->synonyms[1].name, "log.retention.ms"));
        assert_true(kp_str_eq_cstr(c->synonyms[1].value, "604800000"));
        assert_int_equal(d->synonyms_count, 1);
        if (v >= 3) {
            assert_int_equal(c->config_type, 5);
            assert_int_equal(d->config_type, 7);
            assert_true(c->documentation.len > 0);
        }
    }
    /* A key filter, an unknown topic, an illegal name, the broker and other resources. */
    const struct kp_describe_configs_response_describe_configs_result *r =
        describe(&e, 2, 2, "cfg", "max.message.bytes", false, false);
    assert_int_equal(r->configs_count, 1);
    assert_true(kp_str_eq_cstr(r->configs[0].value, "1048588"));
    assert_int_equal(r->configs[0].synonyms_count, 0);
    r = describe(&e, 1, 2, "missing", NULL, false, false);
    assert_int_equal(r->error_code, KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    r = describe(&e, 1, 2, "bad/name", NULL, false, false);
    assert_int_equal(r->error_code, KP_ERROR_INVALID_TOPIC_EXCEPTION);
    r = describe(&e, 4, 4, "7", NULL, true, true);
    assert_int_equal(r->error_code, 0);
    const struct kp_describe_configs_response_describe_configs_resource_result *np =
        find_cfg(r, "num.partitions");
    assert_non_null(np);
    assert_true(kp_str_eq_cstr(np->value, "2"));
    assert_true(np->read_only);
    assert_int_equal(np->config_source, 4);
    assert_non_null(find_cfg(r, "flush.interval.ms"));
    assert_non_null(find_cfg(r, "log.retention.ms"));
    r = describe(&e, 4, 4, "8", NULL, false, false);
    assert_int_equal(r->error_code, KP_ERROR_INVALID_REQUEST);
    r = describe(&e, 4, 3, "group", NULL, false, false);
    assert_int_equal(r->error_code, KP_ERROR_INVALID_REQUEST);
    stop(&e);
}

static void test_admin_alter_configs(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    assert_int_equal(create1(&e, "alt", 1, 1), 0);
    struct kp_str msg;

    /* Legacy AlterConfigs replaces the whole set. */
    assert_int_equal(alter_legacy(&e, 0, "alt", "retention.ms", "7200000", false, NULL), 0);
    assert_true(topic_value_is(&e, "alt", "retention.ms", "7200000"));
    assert_int_equal(alter_legacy(&e, 2, "alt", "segment.ms", "60000", true, NULL), 0);
    assert_true(topic_value_is(&e, "alt", "segment.ms", "604800000")); /* validate only */
    assert_int_equal(alter_legacy(&e, 1, "alt", "segment.ms", "60000", false, NULL), 0);
    assert_true(topic_value_is(&e, "alt", "segment.ms", "60000"));
    assert_true(topic_value_is(&e, "alt", "retention.ms", "604800000"));
    assert_int_equal(alter_legacy(&e, 2, "alt", "retention.ms", "x", false, &msg),
                     KP_ERROR_INVALID_CONFIG);
    assert_true(kp_str_eq_cstr(msg, "Invalid value x for configuration retention.ms"));
    assert_int_equal(alter_legacy(&e, 2, "gone", "retention.ms", "1", false, NULL),
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);

    /* Incremental: SET, DELETE, APPEND, SUBTRACT. */
    struct alter_cfg set[] = {{"retention.ms", 0, "1000"}, {"max.message.bytes", 0, "2000000"}};
    assert_int_equal(incremental(&e, 1, 2, "alt", set, 2, false, NULL), 0);
    assert_true(topic_value_is(&e, "alt", "retention.ms", "1000"));
    assert_true(topic_value_is(&e, "alt", "segment.ms", "60000")); /* kept */
    struct alter_cfg del[] = {{"retention.ms", 1, NULL}};
    assert_int_equal(incremental(&e, 0, 2, "alt", del, 1, false, NULL), 0);
    assert_true(topic_value_is(&e, "alt", "retention.ms", "604800000"));
    struct alter_cfg app[] = {{"cleanup.policy", 2, "compact"}};
    assert_int_equal(incremental(&e, 1, 2, "alt", app, 1, true, NULL), 0);
    assert_true(topic_value_is(&e, "alt", "cleanup.policy", "delete"));
    assert_int_equal(incremental(&e, 1, 2, "alt", app, 1, false, NULL), 0);
    assert_true(topic_value_is(&e, "alt", "cleanup.policy", "delete,compact"));
    struct alter_cfg sub[] = {{"cleanup.policy", 3, "delete"}};
    assert_int_equal(incremental(&e, 1, 2, "alt", sub, 1, false, NULL), 0);
    assert_true(topic_value_is(&e, "alt", "cleanup.policy", "compact"));
    struct alter_cfg sub_all[] = {{"cleanup.policy", 3, "compact"}};
    assert_int_equal(incremental(&e, 1, 2, "alt", sub_all, 1, false, NULL),
                     KP_ERROR_INVALID_CONFIG); /* an empty policy is refused by the service */

    /* Refusals the agent makes itself. */
    struct alter_cfg app_long[] = {{"retention.ms", 2, "5"}};
    assert_int_equal(incremental(&e, 1, 2, "alt", app_long, 1, false, &msg),
                     KP_ERROR_INVALID_CONFIG);
    assert_true(kp_str_eq_cstr(msg, "Config value append is not allowed for config key: "
                                    "retention.ms"));
    struct alter_cfg dup[] = {{"retention.ms", 0, "1"}, {"retention.ms", 0, "2"}};
    assert_int_equal(incremental(&e, 1, 2, "alt", dup, 2, false, NULL), KP_ERROR_INVALID_REQUEST);
    struct alter_cfg badop[] = {{"retention.ms", 9, "1"}};
    assert_int_equal(incremental(&e, 1, 2, "alt", badop, 1, false, NULL), KP_ERROR_INVALID_REQUEST);
    struct alter_cfg nul[] = {{"retention.ms", 0, NULL}};
    assert_int_equal(incremental(&e, 1, 2, "alt", nul, 1, false, NULL), KP_ERROR_INVALID_REQUEST);
    assert_int_equal(incremental(&e, 1, 4, "7", set, 1, false, NULL), KP_ERROR_INVALID_REQUEST);
    struct alter_cfg unk[] = {{"no.such", 0, "1"}};
    assert_int_equal(incremental(&e, 1, 2, "alt", unk, 1, false, &msg), KP_ERROR_INVALID_CONFIG);
    assert_true(kp_str_eq_cstr(msg, "Unknown topic config name: no.such"));
    stop(&e);
}

/* Odd but decodable inputs get answers, never a crash or a closed connection. */
static void test_admin_odd_inputs(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    assert_int_equal(create1(&e, "", 1, 1), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(create1(&e, "big", INT32_MAX, 1), KP_ERROR_INVALID_PARTITIONS);
    assert_int_equal(create1(&e, "neg", INT32_MIN, 1), KP_ERROR_INVALID_PARTITIONS);
    char longname[300];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(create1(&e, longname, 1, 1), KP_ERROR_INVALID_TOPIC_EXCEPTION);
    assert_int_equal(create_partitions(&e, 0, "", INT32_MIN, false, NULL),
                     KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    assert_int_equal(create1(&e, "odd", 1, 1), 0);
    assert_int_equal(create_partitions(&e, 0, "odd", INT32_MIN, false, NULL),
                     KP_ERROR_INVALID_PARTITIONS);
    assert_int_equal(create_partitions(&e, 0, "odd", INT32_MAX, false, NULL),
                     KP_ERROR_INVALID_PARTITIONS);

    /* Empty requests. */
    struct kp_create_topics_request ct;
    kp_create_topics_request_init(&ct);
    ct.topics_count = 0;
    struct kp_create_topics_response ctr;
    call(&e, 19, 7, &ct, &ctr);
    assert_int_equal(ctr.topics_count, 0);
    struct kp_describe_configs_request dc;
    kp_describe_configs_request_init(&dc);
    dc.resources_count = 0;
    struct kp_describe_configs_response dcr;
    call(&e, 32, 4, &dc, &dcr);
    assert_int_equal(dcr.results_count, 0);

    /* An empty key list describes nothing; the cluster-wide broker resource is empty. */
    struct kp_describe_configs_request_describe_configs_resource res;
    kp_describe_configs_request_describe_configs_resource_init(&res);
    res.resource_type = 2;
    res.resource_name = kp_str_from("odd");
    res.configuration_keys = NULL;
    res.configuration_keys_count = 0;
    dc.resources = &res;
    dc.resources_count = 1;
    call(&e, 32, 4, &dc, &dcr);
    assert_int_equal(dcr.results[0].error_code, 0);
    assert_int_equal(dcr.results[0].configs_count, 0);
    assert_int_equal(describe(&e, 4, 4, "", NULL, false, false)->configs_count, 0);

    /* An APPEND that would not fit, and a SET of an empty name. */
    static char huge[5000];
    memset(huge, 'a', sizeof(huge) - 1);
    struct alter_cfg app[] = {{"cleanup.policy", 2, huge}};
    assert_int_equal(incremental(&e, 1, 2, "odd", app, 1, false, NULL), KP_ERROR_INVALID_CONFIG);
    struct alter_cfg empty[] = {{"", 0, "1"}};
    assert_int_equal(incremental(&e, 1, 2, "odd", empty, 1, false, NULL), KP_ERROR_INVALID_CONFIG);
    assert_true(topic_value_is(&e, "odd", "cleanup.policy", "delete"));
    stop(&e);
}

/* ---- mutated requests ---- */

/* Encodes a whole frame (size, header, body) into buf; *body_at receives the body's offset. */
static size_t encode_frame(int16_t key, int16_t version, const void *body, uint8_t *buf, size_t cap,
                           size_t *body_at)
{
    const struct kp_api *api = kp_api_find(key);
    struct kp_request_header h;
    kp_request_header_init(&h);
    h.request_api_key = key;
    h.request_api_version = version;
    h.correlation_id = 1;
    h.client_id = kp_str_from("fuzz");
    int16_t hv = kp_request_header_version(key, version);
    size_t hl = 0;
    size_t bl = 0;
    assert_int_equal(kp_request_header_size(&h, hv, &hl), 0);
    assert_int_equal(api->request->size(body, version, &bl), 0);
    assert_true(4 + hl + bl <= cap);
    struct kp_writer w;
    kp_writer_init(&w, buf, cap);
    kp_write_i32(&w, (int32_t)(hl + bl));
    assert_int_equal(kp_request_header_encode(&h, hv, &w), 0);
    assert_int_equal(api->request->encode(body, version, &w), 0);
    *body_at = 4 + hl;
    return 4 + hl + bl;
}

/* Sends a frame; true when a whole response came back, false when the agent closed the
 * connection (then a new one is opened). */
static bool raw_roundtrip(struct agent_env *e, const uint8_t *buf, size_t n)
{
    size_t off = 0;
    for (int i = 0; i < 100000 && off < n; i++) {
        ssize_t k = send(e->fd[0], buf + off, n - off, MSG_NOSIGNAL);
        if (k > 0) {
            off += (size_t)k;
        } else if (k < 0 && errno != EAGAIN) {
            break;
        }
        uv_run(&e->loop, UV_RUN_NOWAIT);
    }
    uint8_t szb[4];
    size_t got = 0;
    size_t need = 4;
    bool closed = false;
    for (int i = 0; i < 200000 && got < need; i++) {
        uint8_t tmp[4096];
        size_t want = need - got < sizeof(tmp) ? need - got : sizeof(tmp);
        ssize_t k =
            recv(e->fd[0], got < 4 ? szb + got : tmp, got < 4 ? 4 - got : want, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN)) {
            closed = true;
            break;
        }
        if (k > 0) {
            got += (size_t)k;
            if (got == 4) {
                need = 4 + (((size_t)szb[0] << 24) | ((size_t)szb[1] << 16) |
                            ((size_t)szb[2] << 8) | szb[3]);
            }
            continue;
        }
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(50);
    }
    if (closed) {
        close(e->fd[0]);
        e->fd[0] = agent_env_connect(e);
        return false;
    }
    assert_int_equal(got, need);
    return true;
}

static void test_admin_mutated_requests(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    assert_int_equal(create1(&e, "m1", 2, 1), 0);

    /* Rich valid requests of every admin API. */
    struct kp_create_topics_request ct;
    kp_create_topics_request_init(&ct);
    struct kp_create_topics_request_creatable_topic t[2];
    struct kp_create_topics_request_creatable_topic_config c[2];
    struct kp_create_topics_request_creatable_replica_assignment as[2];
    int32_t brokers[2] = {7, 8};
    for (int i = 0; i < 2; i++) {
        kp_create_topics_request_creatable_topic_init(&t[i]);
        kp_create_topics_request_creatable_topic_config_init(&c[i]);
        kp_create_topics_request_creatable_replica_assignment_init(&as[i]);
        as[i].partition_index = i;
        as[i].broker_ids = brokers;
        as[i].broker_ids_count = 2;
        c[i].name = kp_str_from(i ? "cleanup.policy" : "retention.ms");
        c[i].value = kp_str_from(i ? "compact" : "100");
        t[i].name = kp_str_from(i ? "mb" : "ma");
        t[i].num_partitions = i ? -1 : 3;
        t[i].replication_factor = i ? -1 : 1;
        t[i].assignments = i ? as : NULL;
        t[i].assignments_count = i ? 2 : 0;
        t[i].configs = c;
        t[i].configs_count = 2;
    }
    ct.topics = t;
    ct.topics_count = 2;
    struct kp_delete_topics_request dt;
    kp_delete_topics_request_init(&dt);
    struct kp_delete_topics_request_delete_topic_state ds[2];
    struct kp_str dn[2] = {kp_str_from("ma"), kp_str_from("zz")};
    for (int i = 0; i < 2; i++) {
        kp_delete_topics_request_delete_topic_state_init(&ds[i]);
        ds[i].name = i ? KP_STR_NULL : kp_str_from("m1");
        memset(ds[i].topic_id.b, i ? 0x11 : 0, 16);
    }
    dt.topics = ds;
    dt.topics_count = 2;
    struct kp_delete_topics_request dt1;
    kp_delete_topics_request_init(&dt1);
    dt1.topic_names = dn;
    dt1.topic_names_count = 2;
    struct kp_create_partitions_request cp;
    kp_create_partitions_request_init(&cp);
    struct kp_create_partitions_request_create_partitions_topic cpt;
    kp_create_partitions_request_create_partitions_topic_init(&cpt);
    struct kp_create_partitions_request_create_partitions_assignment cpa;
    kp_create_partitions_request_create_partitions_assignment_init(&cpa);
    cpa.broker_ids = brokers;
    cpa.broker_ids_count = 2;
    cpt.name = kp_str_from("m1");
    cpt.count = 3;
    cpt.assignments = &cpa;
    cpt.assignments_count = 1;
    cp.topics = &cpt;
    cp.topics_count = 1;
    struct kp_describe_configs_request dc;
    kp_describe_configs_request_init(&dc);
    struct kp_describe_configs_request_describe_configs_resource dr[2];
    struct kp_str keys[2] = {kp_str_from("retention.ms"), kp_str_from("num.partitions")};
    for (int i = 0; i < 2; i++) {
        kp_describe_configs_request_describe_configs_resource_init(&dr[i]);
        dr[i].resource_type = i ? 4 : 2;
        dr[i].resource_name = kp_str_from(i ? "7" : "m1");
        dr[i].configuration_keys = keys;
        dr[i].configuration_keys_count = 2;
    }
    dc.resources = dr;
    dc.resources_count = 2;
    struct kp_describe_configs_request dc0 = dc;
    dc.include_synonyms = true;
    dc.include_documentation = true;
    struct kp_alter_configs_request ac;
    kp_alter_configs_request_init(&ac);
    struct kp_alter_configs_request_alter_configs_resource ar;
    kp_alter_configs_request_alter_configs_resource_init(&ar);
    struct kp_alter_configs_request_alterable_config acc[2];
    for (int i = 0; i < 2; i++) {
        kp_alter_configs_request_alterable_config_init(&acc[i]);
        acc[i].name = kp_str_from(i ? "segment.ms" : "retention.ms");
        acc[i].value = kp_str_from("1000");
    }
    ar.resource_type = 2;
    ar.resource_name = kp_str_from("m1");
    ar.configs = acc;
    ar.configs_count = 2;
    ac.resources = &ar;
    ac.resources_count = 1;
    struct kp_incremental_alter_configs_request ic;
    kp_incremental_alter_configs_request_init(&ic);
    struct kp_incremental_alter_configs_request_alter_configs_resource ir;
    kp_incremental_alter_configs_request_alter_configs_resource_init(&ir);
    struct kp_incremental_alter_configs_request_alterable_config icc[2];
    for (int i = 0; i < 2; i++) {
        kp_incremental_alter_configs_request_alterable_config_init(&icc[i]);
        icc[i].name = kp_str_from(i ? "cleanup.policy" : "retention.ms");
        icc[i].config_operation = (int8_t)(i ? 2 : 0);
        icc[i].value = kp_str_from(i ? "compact" : "5");
    }
    ir.resource_type = 2;
    ir.resource_name = kp_str_from("m1");
    ir.configs = icc;
    ir.configs_count = 2;
    ic.resources = &ir;
    ic.resources_count = 1;

    struct {
        int16_t key;
        int16_t version;
        const void *body;
    } reqs[] = {
        {19, 7, &ct}, {19, 2, &ct},  {20, 6, &dt}, {20, 1, &dt1}, {37, 3, &cp}, {37, 0, &cp},
        {32, 4, &dc}, {32, 0, &dc0}, {33, 2, &ac}, {44, 1, &ic},  {44, 0, &ic},
    };
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int answered = 0;
    int closed = 0;
    for (size_t r = 0; r < sizeof(reqs) / sizeof(reqs[0]); r++) {
        uint8_t base[1024];
        uint8_t buf[1024];
        size_t body_at = 0;
        size_t n =
            encode_frame(reqs[r].key, reqs[r].version, reqs[r].body, base, sizeof(base), &body_at);
        assert_true(raw_roundtrip(&e, base, n)); /* the valid request is answered */
        for (int it = 0; it < 150; it++) {
            memcpy(buf, base, n);
            size_t len = n;
            int flips = 1 + (int)(rng % 4);
            for (int f = 0; f < flips; f++) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                size_t at = body_at + (size_t)(rng % (n - body_at));
                buf[at] = (uint8_t)(rng >> 32);
            }
            if (rng % 8 == 0) { /* sometimes a truncated body */
                len = body_at + (size_t)((rng >> 8) % (n - body_at));
                uint32_t sz = (uint32_t)(len - 4);
                buf[0] = (uint8_t)(sz >> 24);
                buf[1] = (uint8_t)(sz >> 16);
                buf[2] = (uint8_t)(sz >> 8);
                buf[3] = (uint8_t)sz;
            }
            if (raw_roundtrip(&e, buf, len)) {
                answered++;
            } else {
                closed++;
            }
        }
    }
    printf("mutated admin requests: %d answered, %d closed the connection\n", answered, closed);
    /* Both outcomes occurred, and the agent still serves. */
    assert_true(answered > 0);
    assert_true(closed > 0);
    assert_int_equal(create1(&e, "after-mutations", 1, 1), 0);
    stop(&e);
}

/* Without the metadata service every topic entry gets a retriable REQUEST_TIMED_OUT. */
static void test_admin_metadata_unavailable(void **state)
{
    (void)state;
    struct agent_env e;
    start(&e);
    meta_client_close(e.a.meta);
    e.a.meta = NULL;
    struct topic_spec s = {"nometa", 1, 1, NULL, NULL};
    struct kp_create_topics_response rs;
    const struct kp_create_topics_response_creatable_topic_result *r =
        create(&e, 7, &s, 1, false, &rs);
    assert_int_equal(r->error_code, KP_ERROR_REQUEST_TIMED_OUT);
    assert_true(str_has(r->error_message, "metadata service"));
    assert_int_equal(create_partitions(&e, 3, "x", 3, false, NULL), KP_ERROR_REQUEST_TIMED_OUT);
    assert_int_equal(describe(&e, 4, 2, "x", NULL, false, false)->error_code,
                     KP_ERROR_REQUEST_TIMED_OUT);
    assert_int_equal(describe(&e, 4, 4, "7", NULL, false, false)->error_code, 0);
    struct alter_cfg set[] = {{"retention.ms", 0, "1"}};
    assert_int_equal(incremental(&e, 1, 2, "x", set, 1, false, NULL), KP_ERROR_REQUEST_TIMED_OUT);
    stop(&e);
}

int run_test_admin(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_list_edit),
        cmocka_unit_test(test_admin_config_table),
        cmocka_unit_test(test_admin_explain),
        cmocka_unit_test(test_admin_create_topics),
        cmocka_unit_test(test_admin_delete_topics),
        cmocka_unit_test(test_admin_create_partitions),
        cmocka_unit_test(test_admin_describe_configs),
        cmocka_unit_test(test_admin_alter_configs),
        cmocka_unit_test(test_admin_odd_inputs),
        cmocka_unit_test(test_admin_mutated_requests),
        cmocka_unit_test(test_admin_metadata_unavailable),
    };
    return cmocka_run_group_tests_name("admin", tests, NULL, NULL);
}
