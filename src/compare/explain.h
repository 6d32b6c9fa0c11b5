/*
 * explain.h - where a failing pair's error lies (profile.c) and which simple explanation fits it
 * (hints.c), computed on the pair's two tensors as they were compared.
 */
#ifndef NNP_EXPLAIN_H
#define NNP_EXPLAIN_H

#include <math.h>
#include <string.h>

#include "compare/compare.h"

#define NNP__X_MAX_DIMS 16
#define NNP__X_MAX_HINTS 16
/* Indices of one axis that can still be called "where the error lies". */
#define NNP__X_REGION_MAX 4
/* A pair of more elements than the profile reads whole is read in this many runs of this many
 * elements (profile.c); the hints' sample of such a pair as a whole lies within them. */
#define NNP__X_PROFILE_RUNS 128u
#define NNP__X_PROFILE_RUN 512u

/* The pair: both sides in C order with one shape (the reference's, as compared). */
typedef struct nnp__xinput {
    nnp_dtype rdtype, pdtype;
    const void *r, *p;
    uint32_t ndim;
    const uint64_t *shape;
    uint64_t nelem;
    double atol, rtol;
    const char *names[NNP__X_MAX_DIMS]; /* axis names; NULL: "axis k" */
    uint64_t failing; /* elements outside tolerance in the whole pair, as compared (0: none or
                       * not known): what a sample that holds none of them must say */
} nnp__xinput;

/* Elements of where the error lies, read for the hints: their flat indices and both values. */
typedef struct nnp__xsample {
    uint64_t n;
    uint64_t *flat;
    double *r, *p;
    uint64_t *idx;                     /* each element's index along axis a at a * cap + k */
    uint64_t cap;                      /* the elements there is room for */
    unsigned char *finite;             /* whether both values are finite, each element */
    bool all_finite;                   /* whether every element's are */
    uint64_t stride[NNP__X_MAX_DIMS];  /* of each axis, in elements */
    void *own;                         /* the block the arrays lie in, when the sample owns it */
} nnp__xsample;

/* A block one thread lends the samples of the pairs it explains, one after the other: taken
 * from the heap once and grown when a pair needs more, so that a pair's sample costs no fresh
 * pages (a new block of that size comes from the kernel, zeroed, one page fault at a time). */
typedef struct nnp__xscratch {
    void *mem;
    size_t size;
} nnp__xscratch;

/* What one pair's explanation keeps (the public parts point into it). */
typedef struct nnp__explained {
    nnp_profile profile;
    nnp_axis_profile axes[NNP__X_MAX_DIMS];
    char *names[NNP__X_MAX_DIMS];
    double *share;   /* every axis' shares, one block */
    uint64_t *fail;  /* every axis' counts, one block */
    char *where;
    /* the indices each axis' error lies in (nreg 0: the whole axis), and those as words */
    uint32_t nreg[NNP__X_MAX_DIMS];
    uint64_t reg[NNP__X_MAX_DIMS][NNP__X_REGION_MAX];
    char *region_text; /* "" when the error spreads over every axis */
    nnp_hint hints[NNP__X_MAX_HINTS];
    size_t nhints;
    uint64_t run[NNP__X_PROFILE_RUNS]; /* where the profile's runs start, when it sampled */
    nnp__xsample sample; /* freed once the hints are taken */
    double sample_sq;    /* squared error of the sample's finite elements */
} nnp__explained;

/* One element of a tensor as a double. Inline, as the next one is: the tests call them per
 * element of their samples, where a call and a switch cost more than the test itself. */
static inline double nnp__x_elem(nnp_dtype dtype, const void *data, uint64_t i)
{
    const unsigned char *b = data;
    if (dtype == NNP_F32) {
        float f;
        memcpy(&f, b + 4 * i, 4);
        return f;
    }
    if (dtype == NNP_F64) {
        double d;
        memcpy(&d, b + 8 * i, 8);
        return d;
    }
    double d;
    nnp_convert_to_f64(dtype, b + i * nnp_dtype_size(dtype), 1, &d);
    return d;
}
/* Elements [first, first + n) of a tensor as doubles: F32, what most dumps hold, in a loop
 * vectorized here (nnp_convert_to_f64's is not, at -O2); other dtypes through it. */
static inline void nnp__x_elems(nnp_dtype dtype, const void *data, uint64_t first, size_t n,
                                double *out)
{
    if (dtype == NNP_F32) {
        const unsigned char *b = (const unsigned char *)data + 4 * first;
#pragma omp simd
        for (size_t k = 0; k < n; k++) {
            float f;
            memcpy(&f, b + 4 * k, 4);
            out[k] = f;
        }
        return;
    }
    nnp_convert_to_f64(dtype, (const unsigned char *)data + first * nnp_dtype_size(dtype), n,
                       out);
}
/* Whether an element pair is outside tolerance (a NaN on either side is; the same infinity on
 * both is not). */
static inline bool nnp__x_fails(double r, double p, double atol, double rtol)
{
    if (isnan(r) || isnan(p))
        return true;
    if (isinf(r) || isinf(p))
        return r != p;
    return fabs(p - r) > atol + rtol * fabs(r);
}
/* "axis 2 (token)" or "axis 2". */
void nnp__x_axis_label(nnp_sbuf *b, const nnp__explained *x, uint32_t a);

/* The profile and the where line (profile.c); x zeroed by the caller. */
nnp_status nnp__x_profile(const nnp__xinput *in, nnp__explained *x);
/* The hints that fit (hints.c), after the profile: `m` are the pair's metrics. The sample lies
 * in `scratch` when given (valid until the scratch is used again), else in memory of its own. */
nnp_status nnp__x_hints(const nnp__xinput *in, const nnp_metrics *m, nnp__explained *x,
                        nnp__xscratch *scratch);
/* The share of the sample's squared error explained by `other` (a tensor of the same shape)
 * standing in for the reference; -1 when there is no error to explain, or as soon as the share
 * is sure to fall below `least`. */
double nnp__x_other_fit(const nnp__explained *x, nnp_dtype dtype, const void *other,
                        double least);
/* Add a hint (its text formatted); hints beyond NNP__X_MAX_HINTS are dropped. */
nnp_status nnp__x_hint_add(nnp__explained *x, nnp_hint_kind kind, double fit, int axis, int axis2,
                           double value, const char *fmt, ...) NNP_PRINTF(7, 8);
/* For a pair whose port shape `pshape` is a permutation of the reference's `in->shape`: add an
 * axes-swapped hint when one permutation of the port's axes gives the reference back. */
nnp_status nnp__x_permuted_shape(const nnp__xinput *in, uint32_t pndim, const uint64_t *pshape,
                                 nnp__explained *x);
void nnp__x_sample_free(nnp__explained *x);
void nnp__explained_free(nnp__explained *x);

#endif /* NNP_EXPLAIN_H */
