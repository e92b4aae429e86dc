/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) for record batches and object chunks.
 *
 * Two implementations with identical results: a portable slicing-by-8 table walk, and an x86-64
 * path using the SSE4.2 crc32 instruction. The instruction has a latency of three cycles but a
 * throughput of one per cycle, so the fast path runs three independent streams over adjacent
 * thirds of a block and merges them with a "shift by N zero bytes" operator (a linear map on the
 * 32-bit register, applied with four 256-entry tables). The hardware functions carry their own
 * target attribute, so the rest of the build needs no -msse4.2; the CPU is checked once at load.
 *
 * All internal functions work on the raw register (no pre/post inversion); kp_crc32c() applies
 * the conventional inversions so that results chain across calls.
 */
#include "runnel/protocol/crc32c.h"

#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KP_CRC_HW 1
#include <nmmintrin.h>
#endif

#define POLY 0x82F63B78u

/* Slicing-by-8 tables: table[0] is the classic byte table, table[k] advances k more bytes. */
static uint32_t crc_table[8][256];

/* Lane lengths of the interleaved hardware path (bytes per lane, multiples of 8). */
#define LONG_LANE 8192
#define SHORT_LANE 256

/* Zero-byte shift operators for LONG_LANE and SHORT_LANE bytes, as byte-indexed tables. */
static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];

typedef uint32_t (*crc_fn)(uint32_t, const uint8_t *, size_t);
static crc_fn crc_impl;

static inline uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        uint32_t lo = load_le32(p) ^ crc;
        uint32_t hi = load_le32(p + 4);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
              crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^
              crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    return crc;
}

/* Applies a shift operator built by build_shift(). */
static inline uint32_t shift_apply(const uint32_t t[4][256], uint32_t crc)
{
    return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^ t[3][crc >> 24];
}

/*
 * The register after `n` zero bytes is a linear function of the register before; record the
 * image of each input bit and fold them into byte tables.
 */
static void build_shift(uint32_t t[4][256], size_t n)
{
    static const uint8_t zeros[64];
    uint32_t bit_image[32];
    for (int b = 0; b < 32; b++) {
        uint32_t crc = 1u << b;
        for (size_t done = 0; done < n; done += sizeof(zeros)) {
            size_t step = n - done < sizeof(zeros) ? n - done : sizeof(zeros);
            crc = crc_sw(crc, zeros, step);
        }
        bit_image[b] = crc;
    }
    for (int k = 0; k < 4; k++) {
        for (int v = 0; v < 256; v++) {
            uint32_t img = 0;
            for (int b = 0; b < 8; b++) {
                if (v & (1 << b)) {
                    img ^= bit_image[k * 8 + b];
                }
            }
            t[k][v] = img;
        }
    }
}

#ifdef KP_CRC_HW
static inline uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw_serial(uint32_t crc, const uint8_t *p,
                                                                size_t len)
{
    uint64_t c = crc;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    while (len >= 8) {
        c = _mm_crc32_u64(c, load_u64(p));
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    return (uint32_t)c;
}

/* Three interleaved streams over lanes of `lane` bytes; returns the register after 3*lane. */
__attribute__((target("sse4.2"))) static inline uint32_t
crc_hw_3way(uint32_t crc, const uint8_t *p, size_t lane, const uint32_t shift[4][256])
{
    uint64_t c0 = crc, c1 = 0, c2 = 0;
    const uint8_t *p1 = p + lane;
    const uint8_t *p2 = p + 2 * lane;
    for (size_t i = 0; i < lane; i += 8) {
        c0 = _mm_crc32_u64(c0, load_u64(p + i));
        c1 = _mm_crc32_u64(c1, load_u64(p1 + i));
        c2 = _mm_crc32_u64(c2, load_u64(p2 + i));
    }
    uint32_t r = shift_apply(shift, (uint32_t)c0) ^ (uint32_t)c1;
    return shift_apply(shift, r) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = _mm_crc32_u8(crc, *p++);
        len--;
    }
    while (len >= 3 * LONG_LANE) {
        crc = crc_hw_3way(crc, p, LONG_LANE, shift_long);
        p += 3 * LONG_LANE;
        len -= 3 * LONG_LANE;
    }
    while (len >= 3 * SHORT_LANE) {
        crc = crc_hw_3way(crc, p, SHORT_LANE, shift_short);
        p += 3 * SHORT_LANE;
        len -= 3 * SHORT_LANE;
    }
    return crc_hw_serial(crc, p, len);
}
#endif

__attribute__((constructor)) static void crc32c_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        }
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[k][n] = c;
        }
    }
    crc_impl = crc_sw;
#ifdef KP_CRC_HW
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        build_shift(shift_long, LONG_LANE);
        build_shift(shift_short, SHORT_LANE);
        crc_impl = crc_hw;
    }
#endif
}

uint32_t kp_crc32c(uint32_t crc, const void *buf, size_t len)
{
    if (crc_impl == NULL) { /* called before constructors ran (another constructor) */
        crc32c_init();
    }
    return ~crc_impl(~crc, buf, len);
}

uint32_t kp_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
    if (crc_impl == NULL) {
        crc32c_init();
    }
    return ~crc_sw(~crc, buf, len);
}
