/*
 * kernels.h - the vector kernels of one block: the moments of float32 values (stats) and the
 * sums of one block of pairs (compare), each chosen at run time for the CPU.
 */
#ifndef NNP_KERNELS_H
#define NNP_KERNELS_H

#include "common/common.h"

/* ---- statistics kernels (kernels_f32.c) ---- */

/* Moments of a block of finite values: the mean and sum of squared deviations are of x - shift. */
typedef struct nnp_block_moments {
    uint64_t n, zeros;
    double min, max, abs_max, mean, m2;
} nnp_block_moments;

/* The moments of n float32 values (4-byte aligned), or false when one is NaN or infinite (the
 * caller then takes the slow path for the block). Uses the best kernel the CPU runs. */
bool nnp__f32_block_moments(const float *x, size_t n, double shift, nnp_block_moments *m);
/* The portable kernel, for comparing against the vector ones in tests. */
bool nnp__f32_block_moments_portable(const float *x, size_t n, double shift,
                                     nnp_block_moments *m);

/* ---- comparison kernels (kernels_cmp.c) and the comparing pass (metrics.c) ---- */

/* Pairs per block of the comparison kernels: 2 x 8 KiB of F32, still in L1 when a block must be
 * summed a second time (kernels_cmp.c). */
#define NNP_CMP_BLOCK 2048u

/* What a block of finite pairs contributes to nnp_compare's metrics. */
typedef struct nnp_cmp_sums {
    uint64_t n, fail;                  /* pairs; pairs outside atol + rtol |ref| */
    double sd2, sad, srr, spp, spr;    /* sums of d^2, |d|, r^2, p^2, p*r (d = p - r) */
    double max_abs;                    /* the largest |d| (the caller finds where) */
    double mean_r, mean_p, m2_r, m2_p, c_rp; /* Pearson moments about the block's own means */
} nnp_cmp_sums;

/* Whether the kernels read this dtype in place: F32, BF16 and F16, each exactly a float. */
bool nnp__cmp_fast_dtype(nnp_dtype t);
/* The sums of n (1..NNP_CMP_BLOCK) pairs stored as rt at ref and pt at port (any alignment, both
 * fast dtypes), or false when an element is NaN or infinite: the caller then takes its exact
 * slow path for the block. Uses the best kernel the CPU runs. */
bool nnp__cmp_block(nnp_dtype rt, const void *ref, nnp_dtype pt, const void *port, size_t n,
                    double atol, double rtol, nnp_cmp_sums *out);
/* The portable kernel, for comparing against the vector ones in tests. */
bool nnp__cmp_block_portable(nnp_dtype rt, const void *ref, nnp_dtype pt, const void *port,
                             size_t n, double atol, double rtol, nnp_cmp_sums *out);
/* The kernels nnp__cmp_block chooses among, worst to best: it runs the best this CPU has. Tests
 * run each one the CPU has through nnp__cmp_block_with (false also for a kernel it lacks). */
typedef enum { NNP_CMP_PORTABLE, NNP_CMP_AVX2, NNP_CMP_AVX512, NNP_CMP_KERNELS } nnp_cmp_kernel;
bool nnp__cmp_kernel_available(nnp_cmp_kernel k);
bool nnp__cmp_block_with(nnp_cmp_kernel k, nnp_dtype rt, const void *ref, nnp_dtype pt,
                         const void *port, size_t n, double atol, double rtol, nnp_cmp_sums *out);

/* ---- fingerprints of records (sketch.c, docs/sketch.md) ---- */

/* nnp_sketch and nnp_sketch_part are public (nnparity.h). */

/* A projection as stored (dump/sketch_codec.c): F16 of proj[m] / norm to nearest even, a
 * magnitude past F16's largest finite as that largest; zeros when the norm is 0. The portable
 * version gives the same bits. */
void nnp__sketch_proj_f16(const nnp_sketch_part *p, uint16_t *out);
void nnp__sketch_proj_f16_portable(const nnp_sketch_part *p, uint16_t *out);
/* The other way: the W little-endian F16 at src, each times the norm in double and held to a
 * float's range, into out; false when one of them is not finite (out is then not all set). */
bool nnp__sketch_proj_unpack(const unsigned char *src, double norm, float *out);
bool nnp__sketch_proj_unpack_portable(const unsigned char *src, double norm, float *out);

/* A 64-bit hash of n bytes. */
uint64_t nnp__bytes_hash(const void *data, uint64_t n, uint64_t seed);
/* The sketch of a tensor of nelem elements stored as dtype (little-endian, C order) at data. */
void nnp__sketch_tensor(nnp_dtype dtype, uint32_t ndim, const uint64_t *shape, const void *data,
                        uint64_t nelem, nnp_sketch *out);
/* The portable version, for comparing against the vector one in tests (they agree bit for bit). */
void nnp__sketch_tensor_portable(nnp_dtype dtype, uint32_t ndim, const uint64_t *shape,
                                 const void *data, uint64_t nelem, nnp_sketch *out);
/* The estimated ||a - b|| / ||b|| and cosine between the streams two parts were made from;
 * false when their lengths differ. Either output may be NULL. */
bool nnp__sketch_distance(const nnp_sketch_part *a, const nnp_sketch_part *b, double *rel_l2,
                          double *cosine);

#endif /* NNP_KERNELS_H */
