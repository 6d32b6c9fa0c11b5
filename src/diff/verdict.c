/*
 * verdict.c - what a compared pair's metrics mean: the default tolerances by dtype and the
 * pass / warn / fail verdict (docs/diff.md says why these numbers).
 */
#include <math.h>

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

/* The elementwise test cannot see a tensor whose values all lie far below atol (layer scales of
 * 1e-6, small initializations multiplied through a network): any change of it passes. The error
 * as a whole can: a rel-L2 over this many times rtol fails the pair, whatever its elements do.
 * Summing in another order stays near 1e-6 relative in float32, a thousand times below. */
#define REL_L2_OVER_RTOL 10.0

void nnp__diff_verdict(nnp_diff_pair *p)
{
    const nnp_metrics *m = &p->metrics;
    bool new_nonfinite = m->nan_port > m->nan_ref || m->inf_port > m->inf_ref;
    /* rel_l2 is NaN or infinite when the reference is all zeros: the elements decide then */
    bool systematic = p->rtol > 0 && isfinite(m->rel_l2) && m->rel_l2 > REL_L2_OVER_RTOL * p->rtol;
    /* Summation noise scales with the values summed, not with the element: in a tensor of large
     * values it lands on the elements near zero too, where atol + rtol x |ref| is small. So
     * atol is at least rtol x the reference's RMS, for a pair whose every element is finite. */
    bool finite = m->nan_ref == 0 && m->nan_port == 0 && m->inf_ref == 0 && m->inf_port == 0;
    double rms_ref = m->rel_l2 > 0 && isfinite(m->rel_l2) ? m->rmse / m->rel_l2 : 0;
    bool within_noise = finite && m->max_abs <= p->atol + p->rtol * rms_ref;
    if (systematic)
        p->verdict = NNP_FAIL;
    else if (m->allclose_fail == 0 || within_noise)
        p->verdict = NNP_PASS;
    else if (!new_nonfinite && m->allclose_fail * 1000 <= m->count)
        p->verdict = NNP_WARN;
    else
        p->verdict = NNP_FAIL;
}
