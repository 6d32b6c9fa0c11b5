/*
 * crc32.h - the CRC-32 of zip archives (IEEE 802.3, reflected, zlib's crc32), fast enough to
 * check a checkpoint's tensors as they are read: carry-less multiplication where the CPU has it
 * (PCLMULQDQ, or VPCLMULQDQ on 256-bit registers), chosen at run time, and zlib's table code
 * elsewhere.
 */
#ifndef NNP_COMMON_CRC32_H
#define NNP_COMMON_CRC32_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* The CRC-32 of p[0..n) continued from `crc` (0 to start), as zlib's crc32(crc, p, n). */
uint32_t nnp__crc32(uint32_t crc, const void *p, size_t n);

/* The CRC-32 of A followed by B, from crc_a, crc_b and B's length (zlib's crc32_combine). */
uint32_t nnp__crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/* The implementations, for the tests and benchmarks that check each against zlib. */
typedef enum nnp_crc_impl {
    NNP_CRC_ZLIB,    /* zlib's tables: every CPU */
    NNP_CRC_PCLMUL,  /* four 128-bit lanes folded with PCLMULQDQ */
    NNP_CRC_VPCLMUL, /* eight lanes in four 256-bit registers, VPCLMULQDQ and AVX2 */
    NNP_CRC_IMPLS
} nnp_crc_impl;

/* Whether this CPU runs `impl`; nnp__crc32 uses the last one that it runs. */
bool nnp__crc32_available(nnp_crc_impl impl);
/* nnp__crc32 with a given implementation (one that is available). */
uint32_t nnp__crc32_with(nnp_crc_impl impl, uint32_t crc, const void *p, size_t n);
/* "zlib", "pclmul" or "vpclmul". */
const char *nnp__crc32_impl_name(nnp_crc_impl impl);

#endif /* NNP_COMMON_CRC32_H */
