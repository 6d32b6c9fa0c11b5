/*
 * verdict.c - what a compared pair's metrics mean: the default tolerances by dtype and the
 * pass / warn / fail verdict (docs/diff.md says why these numbers).
 */
#include "diff/diff.h"

const char *nnp_verdict_name(nnp_verdict v)
{
    switch (v) {
    case NNP_PASS: return "pass";
    case NNP_WARN: return "warn";
    case NNP_FAIL: return "fail";
    case NNP_SHAPE_MISMATCH: return "shape";
    case NNP_DTYPE_MISMATCH: return "dtype";
    }
    return "?";
}

/* About ten times each format's rounding error, so that a port that only sums in another order
 * passes, while a wrong formula (an approximated GELU, a wrong epsilon) does not. */
static void tolerance_of(nnp_dtype t, double *atol, double *rtol)
{
    switch (t) {
    case NNP_F64: *atol = 1e-12; *rtol = 1e-9; break;
    case NNP_F32: *atol = 1e-5; *rtol = 1e-4; break;
    case NNP_F16: *atol = 1e-3; *rtol = 1e-2; break;
    case NNP_BF16: *atol = 1e-2; *rtol = 4e-2; break;
    case NNP_F8_E4M3: *atol = 1e-2; *rtol = 0.125; break;
    case NNP_F8_E5M2: *atol = 1e-2; *rtol = 0.25; break;
    default: *atol = 0; *rtol = 0; break; /* integers and bool compare exactly */
    }
}

void nnp_default_tolerance(nnp_dtype a, nnp_dtype b, double *atol, double *rtol)
{
    double aa, ar, ba, br;
    tolerance_of(a, &aa, &ar);
    tolerance_of(b, &ba, &br);
    /* the lower-precision side decides */
    *atol = aa > ba ? aa : ba;
    *rtol = ar > br ? ar : br;
}

void nnp__diff_verdict(nnp_diff_pair *p)
{
    const nnp_metrics *m = &p->metrics;
    bool new_nonfinite = m->nan_port > m->nan_ref || m->inf_port > m->inf_ref;
    if (m->allclose_fail == 0)
        p->verdict = NNP_PASS;
    else if (!new_nonfinite && m->allclose_fail * 1000 <= m->count)
        p->verdict = NNP_WARN;
    else
        p->verdict = NNP_FAIL;
}
