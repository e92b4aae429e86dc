/*
 * The cut a Fetch applies to one partition's bytes (agent/src/fetch.h): base offsets written into
 * stored batches (base 0) without breaking their CRC, the batch holding fetch_offset found,
 * partition limits honoured with whole batches, and the KIP-74 rule (the first batch is served
 * whole when it alone exceeds the limit, and only then).
 */
#include "test_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fetch.h"
#include "runnel/protocol/records.h"

/* Builds a batch of `n` records (base offset 0) with `vlen`-byte values. */
static uint8_t *make_batch(int n, size_t vlen, size_t *len)
{
    struct kp_record_in recs[16];
    uint8_t *val = calloc(1, vlen + 1);
    assert_non_null(val);
    memset(val, 'v', vlen);
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        memset(&recs[i], 0, sizeof(recs[i]));
        recs[i].key = (struct kp_bytes){NULL, -1};
        recs[i].value = (struct kp_bytes){val, (int32_t)vlen};
        recs[i].timestamp = 1000 + i;
    }
    struct kp_batch_spec spec;
    kp_batch_spec_init(&spec);
    uint8_t *out = NULL;
    assert_int_equal(kp_batch_build(&spec, recs, (size_t)n, &out, len), 0);
    free(val);
    return out;
}

struct three {
    uint8_t buf[4096];
    size_t len;
    size_t pos[3]; /* where each batch starts */
    size_t blen[3];
};

/* Batches of 2, 3 and 1 records, so offsets base..base+1, +2..+4, +5. */
static void make_three(struct three *t, size_t vlen)
{
    int counts[3] = {2, 3, 1};
    t->len = 0;
    for (int i = 0; i < 3; i++) {
        size_t l = 0;
        uint8_t *b = make_batch(counts[i], vlen, &l);
        assert_true(t->len + l <= sizeof(t->buf));
        memcpy(t->buf + t->len, b, l);
        t->pos[i] = t->len;
        t->blen[i] = l;
        t->len += l;
        free(b);
    }
}

static int64_t base_at(const uint8_t *p, size_t len)
{
    struct kp_batch b;
    struct kp_batch_err err;
    /* Full parse including the CRC: rewriting the base offset must leave it valid. */
    assert_int_equal(kp_batch_parse(p, len, 0, &b, &err), 0);
    assert_int_equal(b.partition_leader_epoch, 7);
    return b.base_offset;
}

static void test_offsets_rewritten_and_cut(void **state)
{
    (void)state;
    struct three t;
    make_three(&t, 10);
    struct agent_fetch_cut c;
    agent_fetch_cut_init(&c, 103, SIZE_MAX, true, 7);
    const char *why = NULL;
    assert_int_equal(agent_fetch_cut_extent(&c, t.buf, 0, t.len, 100, &why), 0);
    assert_int_equal(base_at(t.buf + t.pos[0], t.blen[0]), 100);
    assert_int_equal(base_at(t.buf + t.pos[1], t.blen[1]), 102);
    assert_int_equal(base_at(t.buf + t.pos[2], t.blen[2]), 105);
    /* 103 is inside the second batch: served from its start to the end. */
    assert_int_equal(c.start, t.pos[1]);
    assert_int_equal(c.end, t.len);
    assert_false(c.full);
}

static void test_fetch_offset_at_batch_boundary(void **state)
{
    (void)state;
    struct three t;
    make_three(&t, 10);
    struct agent_fetch_cut c;
    agent_fetch_cut_init(&c, 105, SIZE_MAX, true, 7);
    const char *why = NULL;
    assert_int_equal(agent_fetch_cut_extent(&c, t.buf, 0, t.len, 100, &why), 0);
    assert_int_equal(c.start, t.pos[2]);
    assert_int_equal(c.end, t.len);
    /* Nothing at or past 106 in this extent. */
    agent_fetch_cut_init(&c, 106, SIZE_MAX, true, 7);
    assert_int_equal(agent_fetch_cut_extent(&c, t.buf, 0, t.len, 100, &why), 0);
    assert_int_equal(c.start, SIZE_MAX);
}

static void test_limit_whole_batches(void **state)
{
    (void)state;
    struct three t;
    make_three(&t, 100);
    struct agent_fetch_cut c;
    /* Room for the first two batches and a bit, not the third. */
    agent_fetch_cut_init(&c, 100, t.blen[0] + t.blen[1] + t.blen[2] - 1, true, 7);
    const char *why = NULL;
    assert_int_equal(agent_fetch_cut_extent(&c, t.buf, 0, t.len, 100, &why), 0);
    assert_int_equal(c.start, 0);
    assert_int_equal(c.end, t.pos[2]);
    assert_true(c.full);
}

static void test_kip74_first_batch_whole(void **state)
{
    (void)state;
    struct three t;
    make_three(&t, 100);
    struct agent_fetch_cut c;
    const char *why = NULL;
    /* A limit smaller than the first batch: with min_one, exactly that batch. */
    agent_fetch_cut_init(&c, 100, 10, true, 7);
    assert_int_equal(agent_fetch_cut_extent(&c, t.buf, 0, t.len, 100, &why), 0);
    assert_int_equal(c.start, 0);
    assert_int_equal(c.end, t.blen[0]);
    assert_true(c.full);
    /* Not the first partition with data: nothing at all, never a partial batch. */
    make_three(&t, 100);
    agent_fetch_cut_init(&c, 100, 10, false, 7);
    assert_int_equal(agent_fetch_cut_extent(&c, t.buf, 0, t.len, 100, &why), 0);
    assert_int_equal(c.start, 0);
    assert_int_equal(c.end, 0);
    assert_true(c.full);
    /* A zero limit with min_one still yields one batch. */
    make_three(&t, 100);
    agent_fetch_cut_init(&c, 102, 0, true, 7);
    assert_int_equal(agent_fetch_cut_extent(&c, t.buf, 0, t.len, 100, &why), 0);
    assert_int_equal(c.start, t.pos[1]);
    assert_int_equal(c.end, t.pos[1] + t.blen[1]);
}

static void test_two_extents(void **state)
{
    (void)state;
    struct three t;
    make_three(&t, 10);
    /* Extent A = first batch at offset 50; extent B = the other two at offset 60. */
    struct agent_fetch_cut c;
    agent_fetch_cut_init(&c, 50, SIZE_MAX, true, 7);
    const char *why = NULL;
    assert_int_equal(agent_fetch_cut_extent(&c, t.buf, 0, t.blen[0], 50, &why), 0);
    assert_int_equal(
        agent_fetch_cut_extent(&c, t.buf + t.pos[1], t.pos[1], t.len - t.pos[1], 60, &why), 0);
    assert_int_equal(base_at(t.buf, t.blen[0]), 50);
    assert_int_equal(base_at(t.buf + t.pos[1], t.blen[1]), 60);
    assert_int_equal(base_at(t.buf + t.pos[2], t.blen[2]), 63);
    assert_int_equal(c.start, 0);
    assert_int_equal(c.end, t.len);
}

static void test_malformed(void **state)
{
    (void)state;
    struct three t;
    make_three(&t, 10);
    struct agent_fetch_cut c;
    agent_fetch_cut_init(&c, 0, SIZE_MAX, true, 7);
    const char *why = NULL;
    /* Cut in the middle of the second batch: not whole batches. */
    assert_int_equal(agent_fetch_cut_extent(&c, t.buf, 0, t.pos[1] + 5, 0, &why), -EBADMSG);
    assert_non_null(why);
    /* Garbage. */
    uint8_t junk[100];
    memset(junk, 0xff, sizeof(junk));
    agent_fetch_cut_init(&c, 0, SIZE_MAX, true, 7);
    assert_int_equal(agent_fetch_cut_extent(&c, junk, 0, sizeof(junk), 0, &why), -EBADMSG);
}

int run_test_fetch_cut(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offsets_rewritten_and_cut),
        cmocka_unit_test(test_fetch_offset_at_batch_boundary),
        cmocka_unit_test(test_limit_whole_batches),
        cmocka_unit_test(test_kip74_first_batch_whole),
        cmocka_unit_test(test_two_extents),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests_name("fetch_cut", tests, NULL, NULL);
}
