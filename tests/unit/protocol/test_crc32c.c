/* Unit tests for protocol/src/crc32c.c: known vectors and fast path == portable path. */
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

#include "runnel/protocol/crc32c.h"

static void test_known_vectors(void **state)
{
    assert_int_equal(kp_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(kp_crc32c_portable(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(kp_crc32c(0, "", 0), 0);

    /* iSCSI test patterns (RFC 3720, B.4). */
    uint8_t buf[32];
    memset(buf, 0, sizeof(buf));
    assert_int_equal(kp_crc32c(0, buf, sizeof(buf)), 0x8A9136AAu);
    memset(buf, 0xff, sizeof(buf));
    assert_int_equal(kp_crc32c(0, buf, sizeof(buf)), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) {
        buf[i] = (uint8_t)i;
    }
    assert_int_equal(kp_crc32c(0, buf, sizeof(buf)), 0x46DD794Eu);
    for (int i = 0; i < 32; i++) {
        buf[i] = (uint8_t)(31 - i);
    }
    assert_int_equal(kp_crc32c_portable(0, buf, sizeof(buf)), 0x113FDB5Cu);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint8_t rnd8(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)(rng_state >> 24);
}

/* Every length 0..1024 at every alignment 0..7: fast and portable agree. */
static void test_fast_equals_portable(void **state)
{
    uint8_t *buf = malloc(1024 + 8);
    assert_non_null(buf);
    for (size_t i = 0; i < 1024 + 8; i++) {
        buf[i] = rnd8();
    }
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len <= 1024; len++) {
            uint32_t seed = len * 2654435761u;
            assert_int_equal(kp_crc32c(seed, buf + off, len),
                             kp_crc32c_portable(seed, buf + off, len));
        }
    }
    free(buf);
}

/* Large buffers exercise the interleaved lanes (24 KiB and 768 B blocks) and their merge. */
static void test_large_buffers_and_chaining(void **state)
{
    size_t n = 300000;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++) {
        buf[i] = rnd8();
    }
    static const size_t lens[] = {767, 768, 769, 24575, 24576, 24577, 49152 + 768 + 3, 300000};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        for (size_t off = 0; off < 3; off++) {
            size_t len = lens[i] - off;
            assert_int_equal(kp_crc32c(0, buf + off, len), kp_crc32c_portable(0, buf + off, len));
        }
    }
    uint32_t whole = kp_crc32c(0, buf, n);
    for (size_t cut = 0; cut < n; cut += 12345) {
        uint32_t c = kp_crc32c(0, buf, cut);
        assert_int_equal(kp_crc32c(c, buf + cut, n - cut), whole);
    }
    /* A single flipped bit changes the checksum. */
    buf[n / 2] ^= 0x10;
    assert_int_not_equal(kp_crc32c(0, buf, n), whole);
    free(buf);
}

int run_test_crc32c(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_fast_equals_portable),
        cmocka_unit_test(test_large_buffers_and_chaining),
    };
    return cmocka_run_group_tests_name("crc32c", tests, NULL, NULL);
}
