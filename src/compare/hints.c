/*
 * hints.c - simple explanations of a failing pair's difference, each tested on where the error
 * lies and kept only when it fits: a scale, a sign flip, an offset or bias, a shift, swapped axes,
 * permuted indices, the rounding of a narrower float type, clipping, zeros, new NaN/Inf.
 *
 * Every test reads a bounded sample of the region the profile found (at most HINT_MAX elements,
 * the permutation tests fewer; for the whole of a pair the profile sampled, runs within its
 * runs), so a hint costs a fixed number of reads whatever the tensor's size. A model's fit is
 * the share of the squared error it explains, or, for the models that say what happened to
 * single elements (zeros, clipping, rounding), the share of the failing elements it accounts
 * for; a hint is kept at FIT or more, so that a model that explains only part of the error is
 * never offered as the explanation. A test stops reading a candidate as soon as its fit can no
 * longer reach FIT (below_fit): most candidates miss at once, and reading them whole was most of
 * what the hints cost.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare/explain.h"

#define HINT_MAX (1u << 13)
#define HINT_RUN 128u
_Static_assert(2 * (HINT_MAX / HINT_RUN) <= NNP__X_PROFILE_RUNS && HINT_RUN <= NNP__X_PROFILE_RUN,
               "the hints' runs of a whole sampled pair lie in every other run of the profile's");
#define PERM_MAX 1024u
#define FIT 0.99

const char *nnp_hint_kind_name(nnp_hint_kind kind)
{
    static const char *const names[] = {"scale", "sign",      "offset",   "axes-swapped",
                                        "permuted", "shift",  "precision", "clip",
                                        "zeros", "nonfinite", "other-record"};
    return (unsigned)kind < sizeof names / sizeof *names ? names[kind] : "?";
}

nnp_status nnp__x_hint_add(nnp__explained *x, nnp_hint_kind kind, double fit, int axis, int axis2,
                           double value, const char *fmt, ...)
{
    if (x->nhints >= NNP__X_MAX_HINTS)
        return NNP_OK;
    nnp_sbuf b = {0};
    va_list ap;
    va_start(ap, fmt);
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    nnp__sbuf_puts(&b, line);
    if (b.failed)
        return nnp__nomem();
    x->hints[x->nhints++] = (nnp_hint){kind, fit < 0 ? 0 : fit > 1 ? 1 : fit, axis, axis2, value,
                                       b.s};
    return NNP_OK;
}

static uint64_t stride_of(const nnp__xinput *in, uint32_t a)
{
    uint64_t s = 1;
    for (uint32_t k = a + 1; k < in->ndim; k++)
        s *= in->shape[k];
    return s;
}

/* The elements of the region (every axis' indices the profile found, or all of it), all or
 * runs of them spread over it. */
static nnp_status take_sample(const nnp__xinput *in, nnp__explained *x, nnp__xscratch *scratch)
{
    uint64_t rs[NNP__X_MAX_DIMS], st[NNP__X_MAX_DIMS], total = 1;
    for (uint32_t a = 0; a < in->ndim; a++) {
        rs[a] = x->nreg[a] ? x->nreg[a] : in->shape[a];
        st[a] = stride_of(in, a);
        total *= rs[a];
    }
    uint64_t n = total <= HINT_MAX ? total : HINT_MAX;
    nnp__xsample *s = &x->sample;
    /* flat, r, p and idx, one block (8-byte elements each; n is at most HINT_MAX), then the
     * finite flags */
    size_t size = (size_t)n * (3 + (in->ndim ? in->ndim : 1)) * 8 + (size_t)n;
    unsigned char *mem;
    if (scratch && scratch->size >= size) {
        mem = scratch->mem;
    } else if (scratch) {
        free(scratch->mem);
        scratch->mem = mem = malloc(size);
        scratch->size = mem ? size : 0;
    } else {
        s->own = mem = malloc(size);
    }
    memcpy(s->stride, st, sizeof st);
    if (!mem)
        return nnp__nomem();
    s->flat = (uint64_t *)(void *)mem;
    s->r = (double *)(void *)(mem + (size_t)n * 8);
    s->p = (double *)(void *)(mem + (size_t)n * 16);
    s->idx = (uint64_t *)(void *)(mem + (size_t)n * 24);
    s->cap = n;
    s->finite = mem + (size_t)n * (3 + (in->ndim ? in->ndim : 1)) * 8;
    uint64_t runs = total <= HINT_MAX ? 1 : HINT_MAX / HINT_RUN, len = total <= HINT_MAX ? total
                                                                                       : HINT_RUN;
    uint64_t stratum = total / runs, seed = total * 2654435761u + 1;
    /* with no axis cut to a region, a run's elements lie next to each other in the tensor */
    bool whole = true;
    for (uint32_t a = 0; a < in->ndim; a++)
        whole &= !x->nreg[a];
    /* The whole of a pair the profile sampled: runs within every other run of the profile's,
     * at a random place in each. As much a stratified sample of the pair as runs of its own,
     * but of elements just read, whose pages are mapped and in cache: fresh places cost a
     * page fault each (the comparing pass gave the pages back) and a miss. */
    bool in_profile = whole && x->profile.sampled && runs > 1;
    for (uint64_t k = 0; k < runs; k++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t start;
        if (runs == 1)
            start = 0;
        else if (in_profile)
            start = x->run[2 * k] + (seed >> 17) % (NNP__X_PROFILE_RUN - len + 1);
        else
            start = k * stratum + (seed >> 17) % (stratum - len + 1);
        /* the run's first element's place in the region, then one step at a time */
        uint64_t pos[NNP__X_MAX_DIMS], u = start;
        for (uint32_t a = in->ndim; a-- > 0;) {
            pos[a] = u % rs[a];
            u /= rs[a];
        }
        uint64_t first = s->n;
        if (!in->ndim) /* a 0-d tensor: its one element */
            s->flat[s->n++] = 0;
        for (uint64_t j = 0; j < len && in->ndim;) {
            /* along the innermost axis, where only the last index moves (its stride is 1) */
            uint32_t last = in->ndim - 1;
            uint64_t outer[NNP__X_MAX_DIMS], base = 0, m = rs[last] - pos[last];
            m = m < len - j ? m : len - j;
            for (uint32_t a = 0; a < last; a++) {
                outer[a] = x->nreg[a] ? x->reg[a][pos[a]] : pos[a];
                base += outer[a] * st[a];
            }
            /* each axis' indices lie in a column of their own (the tests read an axis at a
             * time) */
            uint64_t n0 = s->n;
            for (uint32_t a = 0; a < last; a++)
                for (uint64_t t = 0; t < m; t++)
                    s->idx[a * n + n0 + t] = outer[a];
            for (uint64_t t = 0; t < m; t++) {
                uint64_t i = x->nreg[last] ? x->reg[last][pos[last] + t] : pos[last] + t;
                s->idx[last * n + n0 + t] = i;
                s->flat[n0 + t] = base + i;
            }
            s->n = n0 + m;
            j += m;
            pos[last] += m;
            for (uint32_t a = in->ndim; a-- > 0;) { /* the next place, row-major */
                if (pos[a] < rs[a])
                    break;
                pos[a] = 0;
                if (a)
                    pos[a - 1]++;
            }
        }
        if (whole) {
            nnp__x_elems(in->rdtype, in->r, start, (size_t)len, s->r + first);
            nnp__x_elems(in->pdtype, in->p, start, (size_t)len, s->p + first);
        } else {
            for (uint64_t j = first; j < s->n; j++) {
                s->r[j] = nnp__x_elem(in->rdtype, in->r, s->flat[j]);
                s->p[j] = nnp__x_elem(in->pdtype, in->p, s->flat[j]);
            }
        }
    }
    return NNP_OK;
}

/* " in axis 1 index 7 (channel 7)", or "" when the error lies everywhere. */
static const char *in_region(const nnp__explained *x, char *buf, size_t n)
{
    if (!x->region_text || !*x->region_text)
        return "";
    snprintf(buf, n, " in %s", x->region_text);
    return buf;
}

static void label(char *buf, size_t n, const nnp__explained *x, uint32_t a)
{
    nnp_sbuf b = {0};
    nnp__x_axis_label(&b, x, a);
    snprintf(buf, n, "%s", b.s ? b.s : "axis");
    nnp__sbuf_free(&b);
}

/* A scale that is 1/sqrt(k) or sqrt(k) for a whole k, as attention's 1/sqrt(d) is. */
static void scale_words(char *buf, size_t n, double c)
{
    double inv = 1 / (c * c), k = round(inv), k2 = round(c * c);
    if (k >= 2 && fabs(inv - k) <= 0.005 * k)
        snprintf(buf, n, " (%s1/sqrt(%.0f): a 1/sqrt(d) scale applied where the reference has none, "
                         "or twice)", c < 0 ? "-" : "", k);
    else if (k2 >= 2 && fabs(c * c - k2) <= 0.005 * k2)
        snprintf(buf, n, " (%ssqrt(%.0f): a 1/sqrt(d) scale missing)", c < 0 ? "-" : "", k2);
    else
        buf[0] = 0;
}

/* What the tests start from, in one pass over the sample. */
typedef struct {
    double E;          /* squared error of the finite elements */
    uint64_t fin, F, Ffin, newnf;
    double srr, spr;   /* sums of r^2 and p r (the scale) */
    uint64_t zeros;    /* failing elements the port holds 0 for */
    double sd;         /* sum of p - r (the offset, the precision's bias) */
    double maxr;       /* the largest |r| */
    double hi, lo;     /* the port's largest and least values (the clip) */
} base;

/* The sums of a sample whose values are all finite, 8 partial sums each (element k in sum
 * k mod 8) added in a fixed order: a loop the compiler vectorizes, and the same number whatever
 * its vector width. Whether an element fails, from the sign of its margin (as in profile.c). */
#define BASE_ONE(K, J)                                                                         \
    do {                                                                                       \
        double r = rv[K], p = pv[K], d = p - r;                                                \
        double margin = (atol + rtol * fabs(r) - fabs(d)) + 0.0;                               \
        uint64_t bits;                                                                         \
        memcpy(&bits, &margin, sizeof bits);                                                   \
        e[J] += d * d;                                                                         \
        rr[J] += r * r;                                                                        \
        pr[J] += p * r;                                                                        \
        dd[J] += d;                                                                            \
        nbad += bits >> 63;                                                                    \
    } while (0)

static double sum8(const double *v)
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

static void base_finite(const double *restrict rv, const double *restrict pv, uint64_t n,
                        double atol, double rtol, base *b)
{
    double e[8] = {0}, rr[8] = {0}, pr[8] = {0}, dd[8] = {0};
    uint64_t nbad = 0, k = 0;
    for (; k + 8 <= n; k += 8)
        for (unsigned j = 0; j < 8; j++)
            BASE_ONE(k + j, j);
    for (; k < n; k++)
        BASE_ONE(k, k & 7);
    b->E = sum8(e);
    b->srr = sum8(rr);
    b->spr = sum8(pr);
    b->sd = sum8(dd);
    b->F = b->Ffin = nbad;
    b->fin = n;
    uint64_t zeros = 0;
    for (k = 0; k < n; k++) {
        double r = rv[k], p = pv[k];
        b->maxr = b->maxr > fabs(r) ? b->maxr : fabs(r);
        /* comparisons, not fmax and fmin (calls, and free to return either zero of a tie) */
        b->hi = b->hi > p ? b->hi : p;
        b->lo = b->lo < p ? b->lo : p;
        zeros += p == 0;
    }
    /* the zeros the port holds where the reference fails: counted only where there are any */
    b->zeros = 0;
    for (k = 0; k < n && zeros; k++)
        b->zeros += pv[k] == 0 && rv[k] != 0 && fabs(pv[k] - rv[k]) > atol + rtol * fabs(rv[k]);
}

static base base_of(const nnp__xinput *in, nnp__xsample *s)
{
    base b = {0};
    b.hi = -INFINITY;
    b.lo = INFINITY;
    /* 0 when every value is finite, else NaN */
    double z = 0;
#pragma omp simd reduction(+ : z)
    for (uint64_t k = 0; k < s->n; k++)
        z += s->r[k] * 0.0 + s->p[k] * 0.0;
    if (z == 0) {
        base_finite(s->r, s->p, s->n, in->atol, in->rtol, &b);
        memset(s->finite, 1, s->n);
        s->all_finite = true;
        return b;
    }
    /* one at a time, in order, each sum as its test took it in a pass of its own */
    for (uint64_t k = 0; k < s->n; k++) {
        double r = s->r[k], p = s->p[k];
        /* noted for the tests, which read only the elements finite on both sides */
        s->finite[k] = isfinite(r) && isfinite(p);
        if (s->finite[k]) {
            /* nnp__x_fails of two finite values */
            bool bad = fabs(p - r) > in->atol + in->rtol * fabs(r);
            b.F += bad;
            b.E += (p - r) * (p - r);
            b.fin++;
            b.Ffin += bad;
            b.srr += r * r;
            b.spr += p * r;
            b.zeros += (p == 0) & (r != 0) & bad;
            b.sd += p - r;
            b.maxr = b.maxr > fabs(r) ? b.maxr : fabs(r);
            /* comparisons, not fmax and fmin (calls, and free to return either zero of a
             * tie) */
            b.hi = b.hi > p ? b.hi : p;
            b.lo = b.lo < p ? b.lo : p;
        } else {
            b.F += nnp__x_fails(r, p, in->atol, in->rtol);
            b.newnf += isfinite(r);
        }
    }
    s->all_finite = b.fin == s->n;
    return b;
}

#define FINITE(k) (s->all_finite || s->finite[k])

/* Whether a fit 1 - resid / e, its residual still growing, has already fallen below FIT: the
 * tests below stop reading candidates there, as most (another index' values, another block's)
 * fall below at once. Exact: a sum of squares only grows, and 1 - resid / e only falls with it,
 * rounding included, so the fit they would have computed in full is below FIT too, and a fit
 * below FIT is never offered. */
static bool below_fit(double resid, double e)
{
    return 1 - resid / e < FIT;
}

/* Every step-th element of the sample (the PERM_MAX the shift and permutation tests read),
 * gathered once: how many there are, and of the finite ones, in order, where each lies in the
 * sample, its squared error and its index along each axis. Read from the sample, each took a
 * cache line of its own, for every axis and candidate. */
typedef struct {
    uint64_t all, n, cap;
    uint64_t *k;
    double *d2;
    uint64_t *idx; /* along axis a at a * cap + m */
} stepset;

static nnp_status stepset_of(const nnp__xinput *in, const nnp__xsample *s, stepset *t)
{
    uint64_t step = s->n > PERM_MAX ? s->n / PERM_MAX : 1, most = s->n / step + 1;
    uint32_t nd = in->ndim ? in->ndim : 1;
    t->all = t->n = 0;
    t->cap = most;
    t->k = malloc(most * sizeof *t->k);
    t->d2 = malloc(most * sizeof *t->d2);
    t->idx = malloc(most * nd * sizeof *t->idx);
    if (!t->k || !t->d2 || !t->idx)
        return nnp__nomem();
    for (uint64_t k = 0; k < s->n; k += step) {
        t->all++;
        if (!FINITE(k))
            continue;
        t->k[t->n] = k;
        t->d2[t->n] = (s->p[k] - s->r[k]) * (s->p[k] - s->r[k]);
        for (uint32_t a = 0; a < in->ndim; a++)
            t->idx[a * most + t->n] = s->idx[a * s->cap + k];
        t->n++;
    }
    return NNP_OK;
}

static void stepset_free(stepset *t)
{
    free(t->k);
    free(t->d2);
    free(t->idx);
}

/* floor(i / d), by the reciprocal inv = 1 / d and a correction (a division each element cost
 * more than the rest of the loop); exact while i < 2^52, past which it divides. */
static inline uint64_t div_by(uint64_t i, uint64_t d, double inv)
{
    if (i >= (1ull << 52))
        return i / d;
    /* (through int64_t: x86 converts signed integers in one instruction, unsigned in several) */
    uint64_t q = (uint64_t)(int64_t)((double)(int64_t)i * inv);
    if (q * d > i)
        q--;
    else if ((q + 1) * d <= i)
        q++;
    return q;
}

/* The shift k along axis a that explains the most; *fit its fit (0: none, or none of FIT). */
static int best_shift(const nnp__xinput *in, const nnp__xsample *s, const stepset *ss,
                      uint32_t a, double *fit)
{
    enum { NK = 4 };
    static const int ks[NK] = {1, -1, 2, -2};
    uint64_t st = s->stride[a], valid[NK] = {0};
    int64_t n = (int64_t)in->shape[a];
    double e[NK] = {0};
    /* the error each shift is to explain, from the sample alone (the bound above needs it),
     * every shift's in one pass */
    for (uint64_t m = 0; m < ss->n; m++) {
        int64_t i = (int64_t)ss->idx[a * ss->cap + m];
        for (int t = 0; t < NK; t++) {
            int64_t j = i - ks[t];
            if (j >= 0 && j < n) {
                e[t] += ss->d2[m];
                valid[t]++;
            }
        }
    }
    int best = 0;
    *fit = 0;
    for (int t = 0; t < NK; t++) {
        if (!(e[t] > 0 && valid[t] * 2 >= ss->all))
            continue;
        double resid = 0;
        bool short_of_fit = false;
        for (uint64_t m = 0, used = 0; m < ss->n && !short_of_fit; m++) {
            int64_t i = (int64_t)ss->idx[a * ss->cap + m], j = i - ks[t];
            if (j < 0 || j >= n)
                continue;
            uint64_t k = ss->k[m];
            double q = nnp__x_elem(in->rdtype, in->r, s->flat[k] + (uint64_t)(j - i) * st);
            resid += (s->p[k] - q) * (s->p[k] - q);
            short_of_fit = ++used % 8 == 0 && below_fit(resid, e[t]);
        }
        double f = short_of_fit ? 0 : 1 - resid / e[t];
        if (f > *fit) {
            *fit = f;
            best = ks[t];
        }
    }
    return best;
}

/* Indices (g blocks of shape[a] / g) permuted along axis a, the port's block i holding the
 * reference's block map[i]; only port indices the sample holds are tested, against every
 * reference index. The fit, 0 when the best map is the identity or takes one block twice, or
 * when it falls below FIT. */
static double permutation_fit(const nnp__xinput *in, const nnp__xsample *s, const stepset *ss,
                              uint32_t a, uint64_t g, uint64_t *map, bool *seen_out)
{
    uint64_t n = in->shape[a], bs = n / g, st = s->stride[a];
    double inv = 1.0 / (double)bs;
    /* err[bi][bj]: the squared error of the port's block bi against the reference's block bj;
     * least[bi], the least of row bi so far */
    double *err = calloc(g * g + 2 * g, sizeof *err), *least = err + g * g, *diag = least + g;
    bool *seen = seen_out;
    if (!err)
        return -1;
    memset(seen, 0, g * sizeof *seen);
    /* The identity's error, the error to explain, comes from the sample alone (the reference
     * index itself is its own block's): the same sums, in the same order, as below. */
    uint64_t cur = UINT64_MAX;
    double acc = 0;
    for (uint64_t m = 0; m < ss->n; m++) {
        uint64_t bi = div_by(ss->idx[a * ss->cap + m], bs, inv);
        if (bi != cur) { /* in registers while the block holds, as in offset_hint */
            if (cur != UINT64_MAX)
                diag[cur] = acc;
            cur = bi;
            acc = diag[bi];
            seen[bi] = true;
        }
        acc += ss->d2[m];
    }
    if (cur != UINT64_MAX)
        diag[cur] = acc;
    double e = 0;
    for (uint64_t bi = 0; bi < g; bi++)
        if (seen[bi])
            e += diag[bi];
    if (!(e > 0)) {
        free(err);
        return 0;
    }
    for (uint64_t m = 0; m < ss->n; m++) {
        uint64_t k = ss->k[m], i = ss->idx[a * ss->cap + m], bi = div_by(i, bs, inv);
        uint64_t o = i - bi * bs;
        double *row = err + bi * g;
        for (uint64_t bj = 0; bj < g; bj++) {
            int64_t delta = (int64_t)(bj * bs + o) - (int64_t)i;
            double q = nnp__x_elem(in->rdtype, in->r, s->flat[k] + (uint64_t)delta * st);
            row[bj] += (s->p[k] - q) * (s->p[k] - q);
        }
        least[bi] = row[0];
        for (uint64_t bj = 1; bj < g; bj++)
            least[bi] = row[bj] < least[bi] ? row[bj] : least[bi];
        /* every row's least only grows: their sum bounds the best map's residual from below */
        if ((m + 1) % 8 == 0) {
            double lower = 0;
            for (uint64_t bk = 0; bk < g; bk++)
                if (seen[bk])
                    lower += least[bk];
            if (below_fit(lower, e)) {
                free(err);
                return 0;
            }
        }
    }
    double resid = 0;
    bool moved = false, distinct = true;
    e = 0;
    for (uint64_t bi = 0; bi < g; bi++) {
        map[bi] = bi;
        if (!seen[bi])
            continue;
        for (uint64_t bj = 0; bj < g; bj++)
            if (err[bi * g + bj] < err[bi * g + map[bi]])
                map[bi] = bj;
        e += err[bi * g + bi];
        resid += err[bi * g + map[bi]];
        moved |= map[bi] != bi;
        for (uint64_t bk = 0; bk < bi; bk++)
            distinct &= !seen[bk] || map[bk] != map[bi];
    }
    free(err);
    return moved && distinct && e > 0 ? 1 - resid / e : 0;
}

static nnp_status permutation_hints(const nnp__xinput *in, const nnp__xsample *s,
                                    const stepset *ss, nnp__explained *x, uint32_t a)
{
    static const uint64_t blocks[] = {2, 3, 4, 8};
    uint64_t n = in->shape[a], cand[16];
    size_t nc = 0;
    if (x->nreg[a]) { /* indices of the region, against every index of the axis */
        if (n <= 256)
            cand[nc++] = n;
    } else {
        for (size_t t = 0; t < sizeof blocks / sizeof *blocks; t++)
            if (blocks[t] < n && n % blocks[t] == 0)
                cand[nc++] = blocks[t];
        if (n <= 64)
            cand[nc++] = n;
    }
    for (size_t t = 0; t < nc; t++) {
        uint64_t g = cand[t];
        uint64_t *map = malloc(g * sizeof *map);
        bool *seen = malloc(g * sizeof *seen);
        double fit = map && seen ? permutation_fit(in, s, ss, a, g, map, seen) : -1;
        if (fit < 0) {
            free(map);
            free(seen);
            return nnp__nomem();
        }
        if (fit >= FIT) {
            char ax[96], moves[256] = "";
            size_t len = 0, shown = 0;
            for (uint64_t i = 0; i < g && shown < 4; i++)
                if (seen[i] && map[i] != i) {
                    len += (size_t)snprintf(moves + len, sizeof moves - len, "%s%llu holds %llu",
                                            shown ? ", " : "", (unsigned long long)i,
                                            (unsigned long long)map[i]);
                    shown++;
                }
            label(ax, sizeof ax, x, a);
            nnp_status st;
            if (g == n)
                st = nnp__x_hint_add(x, NNP_HINT_PERMUTED, fit, (int)a, -1, 1,
                                     "indices along %s are permuted: port index %s of the "
                                     "reference's (rows in another's place)", ax, moves);
            else
                st = nnp__x_hint_add(x, NNP_HINT_PERMUTED, fit, (int)a, -1, (double)(n / g),
                                     "blocks of %llu along %s are permuted: port block %s of "
                                     "the reference's (q, k, v or heads in another order)",
                                     (unsigned long long)(n / g), ax, moves);
            free(map);
            free(seen);
            return st;
        }
        free(map);
        free(seen);
    }
    return NNP_OK;
}

/* Rounding to a float type with `mant` mantissa bits and least normal exponent `emin`: 1 / its
 * ulp at v (the type's smallest ulp at 0, below its normal range or past the finite). An ulp is
 * a power of two, so multiplying by this is dividing by the ulp, exactly; taken from v's
 * exponent bits, as frexp and ldexp per element cost more than the whole test. */
static double inv_ulp(double v, int mant, int emin)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    int e = (int)((bits >> 52) & 0x7ff) - 1023; /* floor(log2 |v|) for a normal double */
    if (e < emin || e > 1023) /* 0, subnormal, below the type's normals, inf, NaN */
        e = emin;
    bits = (uint64_t)(1023 - (e - mant)) << 52;
    double inv;
    memcpy(&inv, &bits, sizeof inv);
    return inv;
}

static nnp_status precision_hint(const nnp__xinput *in, const nnp__xsample *s, const base *b,
                                 nnp__explained *x)
{
    static const struct { int mant, emin; const char *name; } fmts[] = {
        {10, -126, "f16 or tf32"}, {7, -126, "bf16"}};
    double maxr = b->maxr, sd = b->sd;
    /* rounding errs both ways: a systematic error (an approximated function) is not one */
    if (fabs(sd / (double)b->fin) > 0.25 * sqrt(b->E / (double)b->fin))
        return NNP_OK;
    for (size_t t = 0; t < 2; t++) {
        uint64_t within = 0, missed = 0;
        double su2 = 0;
        bool short_of_fit = false;
        for (uint64_t k = 0; k < s->n && !short_of_fit; k++) {
            if (!FINITE(k))
                continue;
            double u = fabs(s->p[k] - s->r[k]) * inv_ulp(s->r[k], fmts[t].mant, fmts[t].emin);
            su2 += u * u;
            /* past 1 ulp rms, the rms can only grow: not this type's rounding */
            short_of_fit = su2 / (double)b->fin > 1;
            if (nnp__x_fails(s->r[k], s->p[k], in->atol, in->rtol)) {
                within += u <= 4;
                missed += !(u <= 4);
                /* the fit counts the failing elements within 4 ulps: past as many misses as
                 * FIT allows, it cannot reach FIT (the same division, on at least as many) */
                short_of_fit |= (double)(b->Ffin - missed) / (double)b->Ffin < FIT;
            }
        }
        if (short_of_fit)
            continue;
        double fit = (double)within / (double)b->Ffin, rms = sqrt(su2 / (double)b->fin);
        /* rounding leaves about 0.3 ulps rms, a few operations in the narrower type about 1:
         * an error of several ulps of one type is the rounding of a narrower one */
        if (fit < FIT || rms < 0.05 || rms > 1)
            continue;
        /* whether the port's values are all of that type, said only of a hint offered */
        uint64_t exact = 0;
        for (uint64_t k = 0; k < s->n; k++) {
            if (!FINITE(k))
                continue;
            double q = s->p[k] * inv_ulp(s->p[k], fmts[t].mant, fmts[t].emin);
            exact += q == floor(q);
        }
        const char *name = t == 0 && maxr > 65504 ? "tf32" : fmts[t].name;
        return nnp__x_hint_add(x, NNP_HINT_PRECISION, fit, -1, -1, rms,
                               "within 4 ulps of %s rounding of the reference (%.2g ulps rms%s): "
                               "a precision change, not a bug", name, rms,
                               exact == b->fin ? t == 0 ? "; the port's values are f16/tf32 numbers"
                                                        : "; the port's values are bf16 numbers"
                                               : "");
    }
    return NNP_OK;
}

static nnp_status clip_hint(const nnp__xsample *s, const nnp__xinput *in, const base *b,
                            nnp__explained *x)
{
    double hi = b->hi, lo = b->lo;
    if (!(hi > lo))
        return NNP_OK;
    uint64_t above = 0, below = 0, inner = 0, missed = 0;
    for (uint64_t k = 0; k < s->n; k++) {
        if (!FINITE(k))
            continue;
        inner += s->p[k] > lo && s->p[k] < hi;
        if (!nnp__x_fails(s->r[k], s->p[k], in->atol, in->rtol))
            continue;
        bool up = s->p[k] == hi && s->r[k] > hi, down = s->p[k] == lo && s->r[k] < lo;
        above += up;
        below += down;
        /* a failing element neither clipped up nor down: past as many as FIT allows, the fit
         * (the clipped share of the failing elements) cannot reach FIT */
        missed += !up && !down;
        if (!up && !down && (double)(b->Ffin - missed) / (double)b->Ffin < FIT)
            return NNP_OK;
    }
    double fit = (double)(above + below) / (double)b->Ffin;
    /* most values untouched: a tensor made all of one value is zeros or a constant, not a clip */
    if (fit < FIT || inner * 10 < b->fin)
        return NNP_OK;
    if (above && below)
        return nnp__x_hint_add(x, NNP_HINT_CLIP, fit, -1, -1, hi,
                               "clipped to [%.6g, %.6g] where the reference goes past it "
                               "(clipping or saturation)", lo, hi);
    return nnp__x_hint_add(x, NNP_HINT_CLIP, fit, -1, -1, above ? hi : lo,
                           "clipped %s at %.6g where the reference goes past it (clipping or "
                           "saturation)", above ? "above" : "below", above ? hi : lo);
}

/* port = reference + b, b constant or one per index of an axis the region spans whole. */
static nnp_status offset_hint(const nnp__xinput *in, const nnp__xsample *s, const base *b,
                              nnp__explained *x, bool *fitted)
{
    char where[512];
    double mean = b->sd / (double)b->fin, fit = 1 - (b->E - (double)b->fin * mean * mean) / b->E;
    if (fit >= FIT) {
        *fitted = true;
        return nnp__x_hint_add(x, NNP_HINT_OFFSET, fit, -1, -1, fabs(mean),
                               "port = reference + %.6g%s (a constant offset)", mean,
                               in_region(x, where, sizeof where));
    }
    /* the sums per index of the axes the region spans whole, of at least 2 indices, each seen
     * 4 times on average */
    uint32_t axes[NNP__X_MAX_DIMS], na = 0;
    uint64_t total = 0;
    for (uint32_t a = 0; a < in->ndim; a++)
        if (!x->nreg[a] && in->shape[a] >= 2 && in->shape[a] * 4 <= b->fin) {
            axes[na++] = a;
            total += in->shape[a];
        }
    if (!na)
        return NNP_OK;
    double *sums = calloc(total, sizeof *sums);
    uint64_t *cnts = calloc(total, sizeof *cnts);
    if (!sums || !cnts) {
        free(sums);
        free(cnts);
        return nnp__nomem();
    }
    double *sum[NNP__X_MAX_DIMS];
    uint64_t *cnt[NNP__X_MAX_DIMS];
    for (uint64_t t = 0, off = 0; t < na; off += in->shape[axes[t]], t++) {
        sum[t] = sums + off;
        cnt[t] = cnts + off;
        uint32_t a = axes[t];
        if (a + 1 == in->ndim) { /* the innermost: its index moves every element */
            for (uint64_t k = 0; k < s->n; k++)
                if (FINITE(k)) {
                    uint64_t i = s->idx[a * s->cap + k];
                    sum[t][i] += s->p[k] - s->r[k];
                    cnt[t][i]++;
                }
            continue;
        }
        /* an outer axis: the index' sums in registers while it holds (for runs of elements):
         * adding to memory each time waits on the last store */
        uint64_t cur = UINT64_MAX, c = 0;
        double acc = 0;
        for (uint64_t k = 0; k < s->n; k++) {
            if (!FINITE(k))
                continue;
            uint64_t i = s->idx[a * s->cap + k];
            if (i != cur) {
                if (cur != UINT64_MAX) {
                    sum[t][cur] = acc;
                    cnt[t][cur] = c;
                }
                cur = i;
                acc = sum[t][i];
                c = cnt[t][i];
            }
            acc += s->p[k] - s->r[k];
            c++;
        }
        if (cur != UINT64_MAX) {
            sum[t][cur] = acc;
            cnt[t][cur] = c;
        }
    }
    int best = -1;
    double best_fit = 0, best_mean = 0;
    for (uint32_t t = 0; t < na; t++) {
        double explained = 0, mabs = 0;
        uint64_t used = 0;
        bool enough = true;
        for (uint64_t i = 0; i < in->shape[axes[t]]; i++) {
            if (!cnt[t][i])
                continue;
            /* a mean of one or two elements explains them whatever they are */
            enough &= cnt[t][i] >= 3;
            explained += sum[t][i] * sum[t][i] / (double)cnt[t][i];
            mabs += fabs(sum[t][i] / (double)cnt[t][i]);
            used++;
        }
        double f = explained / b->E;
        if (enough && used >= 2 && f > best_fit) {
            best_fit = f;
            best = (int)axes[t];
            best_mean = mabs / (double)used;
        }
    }
    free(sums);
    free(cnts);
    if (best < 0 || best_fit < FIT)
        return NNP_OK;
    *fitted = true;
    char ax[96];
    label(ax, sizeof ax, x, (uint32_t)best);
    return nnp__x_hint_add(x, NNP_HINT_OFFSET, best_fit, best, -1, best_mean,
                           "port = reference + b along %s%s, mean |b| %.3g (a bias missing or "
                           "added)", ax, in_region(x, where, sizeof where), best_mean);
}

static nnp_status structure_hints(const nnp__xinput *in, const nnp__xsample *s, const base *b,
                                  nnp__explained *x, bool *fitted)
{
    stepset ss;
    nnp_status st = stepset_of(in, s, &ss);
    bool shifted[NNP__X_MAX_DIMS] = {0};
    for (uint32_t a = 0; a < in->ndim && !st; a++) {
        if (x->nreg[a] || in->shape[a] < 3)
            continue;
        double fit;
        int k = best_shift(in, s, &ss, a, &fit);
        if (fit < FIT)
            continue;
        char ax[96];
        label(ax, sizeof ax, x, a);
        shifted[a] = *fitted = true;
        st = nnp__x_hint_add(x, NNP_HINT_SHIFT, fit, (int)a, -1, k,
                             "shifted by %+d along %s: port index i holds reference index i %s %d "
                             "(an off-by-one position)", k, ax, k > 0 ? "-" : "+", abs(k));
    }
    for (uint32_t a = 0; a < in->ndim && !st; a++)
        for (uint32_t c = a + 1; c < in->ndim && !st; c++) {
            if (x->nreg[a] || x->nreg[c] || in->shape[a] != in->shape[c] || in->shape[a] < 2)
                continue;
            uint64_t sa = s->stride[a], sc = s->stride[c];
            double resid = 0;
            bool short_of_fit = false;
            for (uint64_t k = 0, m = 0; k < s->n && !short_of_fit; k++) {
                if (!FINITE(k))
                    continue;
                uint64_t i = s->idx[a * s->cap + k], j = s->idx[c * s->cap + k];
                uint64_t f = s->flat[k] - i * sa - j * sc + j * sa + i * sc;
                double q = nnp__x_elem(in->rdtype, in->r, f);
                resid += (s->p[k] - q) * (s->p[k] - q);
                short_of_fit = ++m % 8 == 0 && below_fit(resid, b->E);
            }
            double fit = 1 - resid / b->E;
            if (short_of_fit || fit < FIT)
                continue;
            char ax[96], cx[96];
            label(ax, sizeof ax, x, a);
            label(cx, sizeof cx, x, c);
            *fitted = true;
            st = nnp__x_hint_add(x, NNP_HINT_AXES_SWAPPED, fit, (int)a, (int)c, 0,
                                 "%s and %s swapped: the port holds the reference transposed "
                                 "(rules: transpose)", ax, cx);
        }
    for (uint32_t a = 0; a < in->ndim && !st; a++) {
        if (shifted[a] || in->shape[a] < 2)
            continue;
        size_t before = x->nhints;
        st = permutation_hints(in, s, &ss, x, a);
        *fitted |= x->nhints > before;
    }
    stepset_free(&ss);
    return st;
}

static int by_fit(const void *a, const void *b)
{
    double x = ((const nnp_hint *)a)->fit, y = ((const nnp_hint *)b)->fit;
    return x < y ? 1 : x > y ? -1 : 0;
}

nnp_status nnp__x_hints(const nnp__xinput *in, const nnp_metrics *m, nnp__explained *x,
                        nnp__xscratch *scratch)
{
    nnp_status st = take_sample(in, x, scratch);
    if (st)
        return st;
    const nnp__xsample *s = &x->sample;
    base b = base_of(in, &x->sample);
    x->sample_sq = b.E;
    char where[512];
    uint64_t nf = m->nan_new + m->inf_new;
    if (nf)
        st = nnp__x_hint_add(x, NNP_HINT_NONFINITE, b.F ? (double)b.newnf / (double)b.F : 1, -1,
                             -1, (double)nf, "%s introduced: %llu NaN and %llu Inf where the "
                             "reference is finite%s", m->nan_new ? "NaN" : "Inf",
                             (unsigned long long)m->nan_new, (unsigned long long)m->inf_new,
                             in_region(x, where, sizeof where));
    if (st || b.E <= 0 || !b.Ffin)
        goto done;
    uint64_t zeros = b.zeros;
    double srr = b.srr, spr = b.spr;
    bool fitted = false;
    double zfit = (double)zeros / (double)b.Ffin;
    if (zfit >= FIT) {
        fitted = true;
        st = nnp__x_hint_add(x, NNP_HINT_ZEROS, zfit, -1, -1, (double)zeros,
                             "zeros where the reference is not%s (a part left out)",
                             in_region(x, where, sizeof where));
    }
    double c = srr > 0 ? spr / srr : 0, resid = 0;
    for (uint64_t k = 0; k < s->n && srr > 0; k++)
        if (FINITE(k))
            resid += (s->p[k] - c * s->r[k]) * (s->p[k] - c * s->r[k]);
    double cfit = srr > 0 ? 1 - resid / b.E : 0;
    if (!st && !fitted && cfit >= FIT && fabs(c) > 1e-6 && fabs(c - 1) > 1e-3) {
        fitted = true;
        char words[160];
        scale_words(words, sizeof words, c);
        if (fabs(c + 1) < 0.01)
            st = nnp__x_hint_add(x, NNP_HINT_SIGN, cfit, -1, -1, c,
                                 "port = -reference%s (a sign flipped)",
                                 in_region(x, where, sizeof where));
        else
            st = nnp__x_hint_add(x, NNP_HINT_SCALE, cfit, -1, -1, c,
                                 "port = %.6g x reference%s%s", c,
                                 in_region(x, where, sizeof where), words);
    }
    if (!st && !fitted)
        st = offset_hint(in, s, &b, x, &fitted);
    if (!st && !fitted)
        st = structure_hints(in, s, &b, x, &fitted);
    if (!st && !fitted)
        st = clip_hint(s, in, &b, x);
    if (!st && !fitted && x->nhints == (nf ? 1u : 0u))
        st = precision_hint(in, s, &b, x);
done:
    if (!st && x->nhints > 1)
        qsort(x->hints, x->nhints, sizeof *x->hints, by_fit);
    return st;
}

double nnp__x_other_fit(const nnp__explained *x, nnp_dtype dtype, const void *other, double least)
{
    const nnp__xsample *s = &x->sample;
    if (x->sample_sq <= 0)
        return -1;
    double resid = 0;
    for (uint64_t k = 0; k < s->n; k++) {
        if (!FINITE(k))
            continue;
        double q = nnp__x_elem(dtype, other, s->flat[k]);
        resid += (s->p[k] - q) * (s->p[k] - q);
        /* the residual only grows, and the fit with it only falls: once below `least` it stays
         * there, and most candidates (another record's values) get there in a few elements,
         * so that the rest of their sample is neither read nor mapped */
        if ((k & 31) == 31 && 1 - resid / x->sample_sq < least)
            return -1;
    }
    return isfinite(resid) ? 1 - resid / x->sample_sq : -1;
}

nnp_status nnp__x_permuted_shape(const nnp__xinput *in, uint32_t pndim, const uint64_t *pshape,
                                 nnp__explained *x)
{
    if (pndim != in->ndim || pndim < 2 || pndim > 6)
        return NNP_OK;
    uint32_t perm[6], n = pndim;
    for (uint32_t k = 0; k < n; k++)
        perm[k] = k;
    uint64_t pst[6], rst[6];
    for (uint32_t k = 0; k < n; k++) {
        pst[k] = rst[k] = 1;
        for (uint32_t j = k + 1; j < n; j++) {
            pst[k] *= pshape[j];
            rst[k] *= in->shape[j];
        }
    }
    uint64_t step = in->nelem > PERM_MAX ? in->nelem / PERM_MAX : 1, seed = in->nelem | 1;
    /* every permutation of the port's axes, in lexicographic order */
    for (;;) {
        bool fits_shape = true, identity = true;
        for (uint32_t k = 0; k < n; k++) {
            fits_shape &= pshape[k] == in->shape[perm[k]];
            identity &= perm[k] == k;
        }
        if (fits_shape && !identity) {
            uint64_t within = 0, total = 0;
            for (uint64_t f = 0; f < in->nelem; f += step) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                uint64_t rf = step > 1 ? f + (seed >> 17) % step : f;
                if (rf >= in->nelem)
                    break;
                uint64_t pf = 0;
                for (uint32_t k = 0; k < n; k++)
                    pf += rf / rst[perm[k]] % in->shape[perm[k]] * pst[k];
                double r = nnp__x_elem(in->rdtype, in->r, rf), p = nnp__x_elem(in->pdtype, in->p, pf);
                within += !nnp__x_fails(r, p, in->atol, in->rtol);
                total++;
            }
            double fit = total ? (double)within / (double)total : 0;
            if (fit >= FIT) {
                char axes[64] = "";
                size_t len = 0;
                uint32_t inv[6];
                for (uint32_t k = 0; k < n; k++)
                    inv[perm[k]] = k;
                for (uint32_t k = 0; k < n; k++)
                    len += (size_t)snprintf(axes + len, sizeof axes - len, "%s%u", k ? "," : "",
                                            inv[k]);
                return nnp__x_hint_add(x, NNP_HINT_AXES_SWAPPED, fit, -1, -1, 0,
                                       "the port holds the reference with its axes permuted: a "
                                       "transposed output (rules: transpose NAME %s)", axes);
            }
        }
        /* next permutation */
        int i = (int)n - 2;
        while (i >= 0 && perm[i] >= perm[i + 1])
            i--;
        if (i < 0)
            break;
        int j = (int)n - 1;
        while (perm[j] <= perm[i])
            j--;
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        for (int a = i + 1, z = (int)n - 1; a < z; a++, z--) {
            t = perm[a];
            perm[a] = perm[z];
            perm[z] = t;
        }
    }
    return NNP_OK;
}
