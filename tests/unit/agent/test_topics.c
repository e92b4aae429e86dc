/*
 * The agent's topic cache (agent/src/topics.c) against an in-process metadata server over
 * loopback: a lookup that is partly answered from the cache and partly by the metadata service
 * must hand its callback live cache entries, even when a cached entry was invalidated (as admin
 * requests do) or its topic deleted while the service was being asked. Before the fix the
 * callback got the freed entry (a use after free that ASan reports; without ASan the pointer is
 * no longer the cache's entry, which the assertions below also catch).
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "agent.h"
#include "runnel/metadata/client.h"
#include "runnel/metadata/server.h"
#include "runnel/protocol/errors.h"

struct tenv {
    uv_loop_t loop;          /* test loop */
    struct agent a;          /* agent whose topic cache is tested */
    struct meta_server *srv; /* metadata service */
    char dir[64];            /* its data directory */
    int done;                /* completed callbacks */
};

/* What one agent_topics_get() callback saw, copied while its pointers were valid. */
struct seen {
    struct tenv *e;    /* environment */
    int calls;         /* callbacks (must end at 1) */
    int status;        /* its status */
    size_t n;          /* answers */
    bool live[4];      /* topics[i] is the cache's current entry for the name */
    char name[4][32];  /* topics[i]->name, or "" when NULL */
    int32_t parts[4];  /* topics[i]->partitions, or -1 */
    bool lat[4];       /* topics[i]->log_append_time */
    int16_t errors[4]; /* errors[i] */
};

static void pump(struct tenv *e, int *counter, int target)
{
    for (int i = 0; i < 20000 && *counter < target; i++) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    assert_true(*counter >= target);
}

static void on_meta(void *arg, int status, const void *resp)
{
    struct tenv *e = arg;
    (void)resp;
    assert_int_equal(status, 0);
    e->done++;
}

static void create_topic(struct tenv *e, const char *name, int32_t parts, bool lat)
{
    struct kp_meta_create_topics_request rq;
    kp_meta_create_topics_request_init(&rq);
    struct kp_meta_create_topics_request_meta_creatable_topic t;
    kp_meta_create_topics_request_meta_creatable_topic_init(&t);
    struct kp_meta_create_topics_request_meta_creatable_config c;
    kp_meta_create_topics_request_meta_creatable_config_init(&c);
    t.name = kp_str_from(name);
    t.num_partitions = parts;
    if (lat) {
        c.name = kp_str_from("message.timestamp.type");
        c.value = kp_str_from("LogAppendTime");
        t.configs = &c;
        t.configs_count = 1;
    }
    rq.topics = &t;
    rq.topics_count = 1;
    int before = e->done;
    assert_int_equal(meta_client_call(e->a.meta, 1001, &rq, on_meta, e), 0);
    pump(e, &e->done, before + 1);
}

/* Sends a MetaDeleteTopics without waiting for it (requests are served in order). */
static void delete_topic_nowait(struct tenv *e, const char *name)
{
    struct kp_meta_delete_topics_request rq;
    kp_meta_delete_topics_request_init(&rq);
    struct kp_meta_delete_topics_request_meta_deletable_topic t;
    kp_meta_delete_topics_request_meta_deletable_topic_init(&t);
    t.name = kp_str_from(name);
    rq.topics = &t;
    rq.topics_count = 1;
    assert_int_equal(meta_client_call(e->a.meta, 1002, &rq, on_meta, e), 0);
}

static void on_topics(void *arg, int status, struct agent_topic **topics, const int16_t *errors,
                      size_t n)
{
    struct seen *s = arg;
    s->calls++;
    s->status = status;
    s->n = n;
    for (size_t i = 0; i < n && i < 4; i++) {
        s->errors[i] = errors[i];
        s->parts[i] = -1;
        s->name[i][0] = '\0';
        if (topics[i] == NULL) {
            continue;
        }
        /* Reading the entry is what ASan checks; it must also be the cache's entry. */
        snprintf(s->name[i], sizeof(s->name[i]), "%s", topics[i]->name);
        s->parts[i] = topics[i]->partitions;
        s->lat[i] = topics[i]->log_append_time;
        s->live[i] = agent_topic_cached(&s->e->a, kp_str_from(s->name[i])) == topics[i];
    }
    s->e->done++;
}

static void lookup(struct tenv *e, struct seen *s, const char *const *names, size_t n)
{
    struct kp_str ks[4];
    for (size_t i = 0; i < n; i++) {
        ks[i] = kp_str_from(names[i]);
    }
    memset(s, 0, sizeof(*s));
    s->e = e;
    agent_topics_get(&e->a, ks, n, false, on_topics, s);
}

static void start(struct tenv *e)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "/tmp/runnel-test-topics-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    assert_int_equal(uv_loop_init(&e->loop), 0);
    struct meta_server_options o;
    meta_server_options_default(&o);
    o.data_dir = e->dir;
    o.host = "127.0.0.1";
    o.port = 0;
    char err[256];
    assert_int_equal(meta_server_open(&e->srv, &e->loop, &o, err, sizeof(err)), 0);
    e->a.loop = &e->loop;
    e->a.cfg.auto_create_topics = false;
    e->a.cfg.default_partitions = 1;
    assert_int_equal(meta_client_open(&e->a.meta, &e->loop, "127.0.0.1", meta_server_port(e->srv)),
                     0);
}

static void stop(struct tenv *e)
{
    agent_topics_free(&e->a);
    meta_client_close(e->a.meta);
    meta_server_close(e->srv);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
    assert_int_equal(system(cmd), 0);
}

/* A cached entry invalidated while the rest of the lookup is at the metadata service. */
static void test_topics_invalidated_during_lookup(void **state)
{
    (void)state;
    struct tenv e;
    start(&e);
    create_topic(&e, "lat", 2, true);
    create_topic(&e, "other", 3, false);
    struct seen s;
    const char *one[] = {"lat"};
    lookup(&e, &s, one, 1); /* caches "lat" */
    pump(&e, &e.done, e.done + 1);
    assert_non_null(agent_topic_cached(&e.a, kp_str_from("lat")));

    /* "lat" is fresh in the cache, "other" is not: this lookup asks the metadata service. */
    const char *two[] = {"lat", "other"};
    int before = e.done;
    lookup(&e, &s, two, 2);
    assert_int_equal(s.calls, 0);
    agent_topics_invalidate(&e.a, kp_str_from("lat")); /* e.g. AlterConfigs meanwhile */
    pump(&e, &e.done, before + 1);

    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.name[0], "lat");
    assert_true(s.live[0]);
    assert_int_equal(s.parts[0], 2);
    assert_true(s.lat[0]);
    assert_string_equal(s.name[1], "other");
    assert_true(s.live[1]);
    assert_int_equal(s.parts[1], 3);
    assert_false(s.lat[1]);
    stop(&e);
}

/* A cached entry invalidated and its topic deleted while the lookup waits: answered as unknown. */
static void test_topics_deleted_during_lookup(void **state)
{
    (void)state;
    struct tenv e;
    start(&e);
    create_topic(&e, "gone", 1, false);
    create_topic(&e, "kept", 2, false);
    struct seen s;
    const char *one[] = {"gone"};
    lookup(&e, &s, one, 1);
    pump(&e, &e.done, e.done + 1);

    const char *two[] = {"gone", "kept"};
    int before = e.done;
    lookup(&e, &s, two, 2);
    assert_int_equal(s.calls, 0);
    delete_topic_nowait(&e, "gone"); /* served after the lookup's describe, before its retry */
    agent_topics_invalidate(&e.a, kp_str_from("gone"));
    pump(&e, &e.done, before + 2); /* the delete and the lookup */

    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, 0);
    assert_string_equal(s.name[0], "");
    assert_int_equal(s.errors[0], KP_ERROR_UNKNOWN_TOPIC_OR_PARTITION);
    assert_null(agent_topic_cached(&e.a, kp_str_from("gone")));
    assert_string_equal(s.name[1], "kept");
    assert_true(s.live[1]);
    assert_int_equal(s.parts[1], 2);
    stop(&e);
}

int run_test_topics(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topics_invalidated_during_lookup),
        cmocka_unit_test(test_topics_deleted_during_lookup),
    };
    return cmocka_run_group_tests_name("topics", tests, NULL, NULL);
}
