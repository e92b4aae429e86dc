/*
 * CRC-32C (Castagnoli), the checksum of Kafka record batches and of Runnel's object chunks.
 * Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at run time) and a
 * table-driven fallback otherwise; both give identical results.
 */
#ifndef RUNNEL_PROTOCOL_CRC32C_H
#define RUNNEL_PROTOCOL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extends `crc` (0 to start) over `len` bytes and returns the new value; the conventional
 * pre- and post-inversion are applied inside, so crc32c(crc32c(0, a), b) == crc32c(0, a || b).
 */
uint32_t kp_crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable table-driven path, exposed so tests can compare it with the fast one. */
uint32_t kp_crc32c_portable(uint32_t crc, const void *buf, size_t len);

#endif
