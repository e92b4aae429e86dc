/* Unit tests for protocol/src/codec.c and mem.c: the primitives under every decoder. */
#include "test_util.h"

#include <string.h>

#include "runnel/protocol/codec.h"
#include "runnel/protocol/mem.h"

static void test_ints_round_trip(void **state)
{
    uint8_t buf[64];
    struct kp_writer w;
    kp_writer_init(&w, buf, sizeof(buf));
    kp_write_i8(&w, -5);
    kp_write_i16(&w, -300);
    kp_write_i32(&w, INT32_MIN);
    kp_write_i64(&w, -1234567890123LL);
    kp_write_u16(&w, 65535);
    kp_write_u32(&w, 4000000000u);
    kp_write_f64(&w, 3.25);
    kp_write_bool(&w, true);
    assert_int_equal(w.err, 0);

    struct kp_reader r;
    kp_reader_init(&r, buf, kp_writer_len(&w));
    assert_int_equal(kp_read_i8(&r), -5);
    assert_int_equal(kp_read_i16(&r), -300);
    assert_int_equal(kp_read_i32(&r), INT32_MIN);
    assert_true(kp_read_i64(&r) == -1234567890123LL);
    assert_int_equal(kp_read_u16(&r), 65535);
    assert_int_equal(kp_read_u32(&r), 4000000000u);
    assert_true(kp_read_f64(&r) == 3.25);
    assert_true(kp_read_bool(&r));
    assert_int_equal(r.err, 0);
    assert_int_equal(kp_reader_remaining(&r), 0);
    /* Reading past the end is a sticky error, never an out-of-bounds read. */
    assert_int_equal(kp_read_i32(&r), 0);
    assert_int_equal(r.err, KP_ERR_SHORT);
    assert_int_equal(kp_read_i8(&r), 0);
    assert_int_equal(r.err, KP_ERR_SHORT);
}

static void test_varints(void **state)
{
    static const int64_t values[] = {0,   1,         -1,        63,        -64,      64,
                                     300, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint8_t buf[16];
        struct kp_writer w;
        kp_writer_init(&w, buf, sizeof(buf));
        kp_write_varlong(&w, values[i]);
        assert_int_equal(kp_writer_len(&w), kp_varlong_size(values[i]));
        struct kp_reader r;
        kp_reader_init(&r, buf, kp_writer_len(&w));
        assert_true(kp_read_varlong(&r) == values[i]);
        assert_int_equal(r.err, 0);
    }
    /* 300 as an unsigned varint is ac 02. */
    uint8_t two[] = {0xac, 0x02};
    struct kp_reader r;
    kp_reader_init(&r, two, 2);
    assert_int_equal(kp_read_uvarint(&r), 300);
    /* Six continuation bytes overflow a 32-bit varint. */
    uint8_t over[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    kp_reader_init(&r, over, sizeof(over));
    kp_read_uvarint(&r);
    assert_int_equal(r.err, KP_ERR_INVALID);
    /* A varint cut short. */
    uint8_t cut[] = {0x80, 0x80};
    kp_reader_init(&r, cut, sizeof(cut));
    kp_read_uvarint(&r);
    assert_int_equal(r.err, KP_ERR_SHORT);
}

static void test_strings_and_lengths(void **state)
{
    uint8_t buf[64];
    struct kp_writer w;
    kp_writer_init(&w, buf, sizeof(buf));
    kp_write_string(&w, false, kp_str_from("abc"));
    kp_write_string(&w, true, kp_str_from("xy"));
    kp_write_string(&w, true, KP_STR_NULL);
    kp_write_bytes(&w, false, KP_BYTES_NULL);
    kp_write_array_len(&w, true, 0);
    assert_int_equal(w.err, 0);
    assert_int_equal(kp_writer_len(&w), 2 + 3 + 1 + 2 + 1 + 4 + 1);

    struct kp_reader r;
    struct kp_str s;
    struct kp_bytes b;
    kp_reader_init(&r, buf, kp_writer_len(&w));
    kp_read_string(&r, false, &s);
    assert_true(kp_str_eq_cstr(s, "abc"));
    kp_read_string(&r, true, &s);
    assert_true(kp_str_eq_cstr(s, "xy"));
    kp_read_string(&r, true, &s);
    assert_int_equal(s.len, -1);
    kp_read_bytes(&r, false, &b);
    assert_int_equal(b.len, -1);
    assert_int_equal(kp_read_array_len(&r, true, 1), 0);
    assert_int_equal(r.err, 0);

    /* A string length beyond the input is an error, not a read past the end. */
    uint8_t longer[] = {0x00, 0x10, 'a'};
    kp_reader_init(&r, longer, sizeof(longer));
    kp_read_string(&r, false, &s);
    assert_int_equal(r.err, KP_ERR_SHORT);
    /* A huge array count with few bytes behind it is refused before anyone allocates. */
    uint8_t huge[] = {0x7f, 0xff, 0xff, 0xff, 0x00};
    kp_reader_init(&r, huge, sizeof(huge));
    assert_int_equal(kp_read_array_len(&r, false, 4), -1);
    assert_int_equal(r.err, KP_ERR_SHORT);
    /* -2 is not a length. */
    uint8_t neg[] = {0xff, 0xfe};
    kp_reader_init(&r, neg, sizeof(neg));
    kp_read_string(&r, false, &s);
    assert_int_equal(r.err, KP_ERR_INVALID);
}

static void test_writer_overflow_is_sticky(void **state)
{
    uint8_t buf[3];
    struct kp_writer w;
    kp_writer_init(&w, buf, sizeof(buf));
    kp_write_i16(&w, 1);
    kp_write_i16(&w, 2);
    assert_int_equal(w.err, KP_ERR_SHORT);
    assert_int_equal(kp_writer_len(&w), 2);
}

static void test_arena_limit(void **state)
{
    struct kp_arena a;
    kp_arena_init(&a, 1024);
    void *p = kp_arena_alloc(&a, 100);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
    assert_null(kp_arena_alloc(&a, 2000));
    assert_null(kp_arena_calloc(&a, SIZE_MAX / 2, 4));
    void *big = NULL;
    kp_arena_free(&a);
    kp_arena_init(&a, 0);
    big = kp_arena_alloc(&a, 100000);
    assert_non_null(big);
    memset(big, 1, 100000);
    assert_non_null(kp_arena_alloc(&a, 10));
    kp_arena_reset(&a);
    assert_int_equal(a.used, 0);
    kp_arena_free(&a);
}

/* Allocates `n` runs of `size` bytes, filled with 0xff; returns the first. */
static uint8_t *arena_round(struct kp_arena *a, int n, size_t size, uint8_t **last)
{
    uint8_t *first = NULL;
    for (int i = 0; i < n; i++) {
        uint8_t *p = kp_arena_alloc(a, size);
        assert_non_null(p);
        for (size_t k = 0; k < size; k++) {
            assert_int_equal(p[k], 0); /* zero-filled, also when the block is reused */
        }
        memset(p, 0xff, size);
        if (first == NULL) {
            first = p;
        }
        *last = p;
    }
    return first;
}

static void test_arena_keep(void **state)
{
    (void)state;
    struct kp_arena a;
    kp_arena_init(&a, 0);
    kp_arena_keep(&a, 1u << 20);
    uint8_t *last;
    arena_round(&a, 60, 5000, &last); /* 300,000 bytes over many blocks */
    assert_true(kp_arena_held(&a) >= 300000);
    kp_arena_reset(&a);
    /* One block of the round's use, rounded up to 64 KiB; the same round fits in it. */
    assert_int_equal(kp_arena_held(&a), 5 * 65536);
    uint8_t *first = arena_round(&a, 60, 5000, &last);
    assert_ptr_equal(last, first + 59 * 5008); /* contiguous: 5000 rounded up to 16 */
    assert_int_equal(kp_arena_held(&a), 5 * 65536);
    kp_arena_reset(&a);
    assert_int_equal(kp_arena_held(&a), 5 * 65536);
    /* A smaller round keeps the block; a larger one replaces it, up to the bound. */
    arena_round(&a, 2, 100, &last);
    kp_arena_reset(&a);
    assert_int_equal(kp_arena_held(&a), 5 * 65536);
    arena_round(&a, 100, 20000, &last); /* 2 MB: more than the arena may keep */
    kp_arena_reset(&a);
    assert_true(kp_arena_held(&a) <= 8192);
    kp_arena_free(&a);
    assert_int_equal(kp_arena_held(&a), 0);

    /* Without kp_arena_keep, a reset keeps one small block at most. */
    kp_arena_init(&a, 0);
    arena_round(&a, 60, 5000, &last);
    kp_arena_reset(&a);
    assert_true(kp_arena_held(&a) <= 8192);
    kp_arena_free(&a);
}

/* A claim that takes runs starting with 'X' and remembers where they go. */
struct claims {
    struct kp_gather g;  /* first: the writer hands this back */
    size_t at[4];        /* buffer positions of the runs taken */
    const uint8_t *p[4]; /* their bytes */
    int n;               /* runs taken */
    int asked;           /* claims asked */
};

static bool claim_x(struct kp_gather *g, size_t at, const uint8_t *ptr, size_t n)
{
    struct claims *c = (struct claims *)g;
    c->asked++;
    if (ptr[0] != 'X' || c->n == 4) {
        return false;
    }
    (void)n;
    c->at[c->n] = at;
    c->p[c->n++] = ptr;
    return true;
}

static void test_writer_gather(void **state)
{
    (void)state;
    static const uint8_t xs[] = "XXXXXXXXXX";
    static const uint8_t ys[] = "YYYYYYYYYY";
    static const uint8_t xshort[] = "XX";
    struct claims c;
    memset(&c, 0, sizeof(c));
    c.g.claim = claim_x;
    c.g.min = 4;
    uint8_t buf[64];
    struct kp_writer w;
    kp_writer_init(&w, buf, sizeof(buf));
    assert_null(w.gather);
    w.gather = &c.g;
    kp_write_i16(&w, 7);
    kp_write_bytes(&w, false, (struct kp_bytes){xs, 10});   /* taken: only its length is written */
    kp_write_bytes(&w, true, (struct kp_bytes){ys, 10});    /* refused: copied */
    kp_write_bytes(&w, true, (struct kp_bytes){xshort, 2}); /* below min: copied, not asked */
    assert_int_equal(w.err, 0);
    assert_int_equal(c.asked, 2);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.at[0], 2 + 4);
    assert_ptr_equal(c.p[0], xs);
    assert_int_equal(c.g.claimed, 10);
    assert_int_equal(kp_writer_len(&w), 2 + 4 + 1 + 10 + 1 + 2);
    static const uint8_t want[] = {0,   7,   0,   0,   0,   10,  11,  'Y', 'Y', 'Y',
                                   'Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y', 3,   'X', 'X'};
    assert_memory_equal(buf, want, sizeof(want));
}

int run_test_codec(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ints_round_trip),
        cmocka_unit_test(test_varints),
        cmocka_unit_test(test_strings_and_lengths),
        cmocka_unit_test(test_writer_overflow_is_sticky),
        cmocka_unit_test(test_arena_limit),
        cmocka_unit_test(test_arena_keep),
        cmocka_unit_test(test_writer_gather),
    };
    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
