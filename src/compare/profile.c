/*
 * profile.c - where a failing pair's error lies: per axis, each index's share of the squared
 * error and its count of elements outside tolerance, and one line that says it to the person who
 * must fix the port ("all 784 failing elements lie in axis 1 index 7 (channel 7)").
 *
 * The pair is read once more (diff/explain.c says when): whole when small, else a seeded sample
 * of runs spread over the tensor, so that a failing pair costs at most a fixed number of reads
 * beyond the comparison whatever its size. Runs keep the reads sequential; stratified random
 * starts keep a run from landing on the same index of some axis every time. Its loops are
 * vectorized, and their sums kept in fixed partial sums, so that a profile is the same number
 * whatever the vector width or the version (AVX2 or not) that ran it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare/explain.h"

#define RUN NNP__X_PROFILE_RUN
#define SAMPLE_MAX ((uint64_t)NNP__X_PROFILE_RUNS * RUN)
/* Share of the error that "lies in" a few indices. */
#define CONCENTRATED 0.95

void nnp__x_axis_label(nnp_sbuf *b, const nnp__explained *x, uint32_t a)
{
    const char *name = x->axes[a].name;
    if (strncmp(name, "axis ", 5) == 0)
        nnp__sbuf_printf(b, "axis %u", a);
    else
        nnp__sbuf_printf(b, "axis %u (%s)", a, name);
}

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: a fixed seed gives the same sample on every run */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* One element of a stretch: a double of a converted buffer, or an F32 read in place (memcpy:
 * a record's bytes need not be aligned). */
static inline double at_f64(const void *v, uint64_t k)
{
    double d;
    memcpy(&d, (const unsigned char *)v + 8 * k, 8);
    return d;
}

static inline double at_f32(const void *v, uint64_t k)
{
    float f;
    memcpy(&f, (const unsigned char *)v + 4 * k, 4);
    return f;
}

/* Add a stretch of n elements whose differences are all finite to s2/f2 (their indices along
 * the innermost axis) and to *sum and *nbad: the square of each difference, and whether it
 * exceeds the tolerance, read from the sign of the margin (exact for finite values: tol - |d| is
 * negative exactly when |d| > tol; + 0.0 makes a -0 margin +0). The stretch's sum is kept in 8
 * partial sums (element k in sum k mod 8) added in a fixed order, so that it is the same number
 * whatever vector width the compiler gives the 8 (2 or 4 lanes) and whichever version below
 * runs. One version per way of reading the elements, and for F32 one for AVX2. */
#define ADD_ONE(AT, K, PART)                                                                   \
    do {                                                                                       \
        double r = AT(rv, K), d = AT(pv, K) - r, dd = d * d;                                   \
        double margin = (atol + rtol * fabs(r) - fabs(d)) + 0.0;                               \
        uint64_t bits;                                                                         \
        memcpy(&bits, &margin, sizeof bits);                                                   \
        s2[K] += dd;                                                                           \
        f2[K] += bits >> 63;                                                                   \
        PART += dd;                                                                            \
        nb += bits >> 63;                                                                      \
    } while (0)
#define ADD_FINITE(NAME, AT, ATTR)                                                             \
    ATTR static void NAME(const void *rv, const void *pv, uint64_t n, double atol, double rtol, \
                          double *restrict s2, uint64_t *restrict f2, double *sum,             \
                          uint64_t *nbad)                                                      \
    {                                                                                          \
        double part[8] = {0};                                                                  \
        uint64_t nb = 0, k = 0;                                                                \
        for (; k + 8 <= n; k += 8)                                                             \
            for (unsigned j = 0; j < 8; j++)                                                   \
                ADD_ONE(AT, k + j, part[j]);                                                   \
        for (; k < n; k++)                                                                     \
            ADD_ONE(AT, k, part[k & 7]);                                                       \
        *sum = ((part[0] + part[1]) + (part[2] + part[3])) +                                   \
               ((part[4] + part[5]) + (part[6] + part[7]));                                    \
        *nbad = nb;                                                                            \
    }

/* Whether every difference of a stretch is finite (both sides are): a sum of d * 0, which is 0
 * then and NaN else, in any order. F32 in float; a difference of finite floats that overflows a
 * float says "no" too, and takes the exact path. */
static bool all_finite_f64(const void *rv, const void *pv, uint64_t n)
{
    double z = 0;
#pragma omp simd reduction(+ : z)
    for (uint64_t k = 0; k < n; k++)
        z += (at_f64(pv, k) - at_f64(rv, k)) * 0.0;
    return z == 0;
}

#define ALL_FINITE_F32(NAME, ATTR)                                                             \
    ATTR static bool NAME(const void *rv, const void *pv, uint64_t n)                          \
    {                                                                                          \
        float z = 0;                                                                           \
        _Pragma("omp simd reduction(+ : z)")                                                   \
        for (uint64_t k = 0; k < n; k++) {                                                     \
            float r, p;                                                                        \
            memcpy(&r, (const unsigned char *)rv + 4 * k, 4);                                  \
            memcpy(&p, (const unsigned char *)pv + 4 * k, 4);                                  \
            z += (p - r) * 0.0f;                                                               \
        }                                                                                      \
        return z == 0;                                                                         \
    }

ADD_FINITE(add_finite_f64, at_f64, )
ADD_FINITE(add_finite_f32, at_f32, )
ALL_FINITE_F32(all_finite_f32, )

typedef void (*add_fn)(const void *, const void *, uint64_t, double, double, double *,
                       uint64_t *, double *, uint64_t *);
typedef bool (*check_fn)(const void *, const void *, uint64_t);

/* The F32 versions to run, chosen once for the CPU: AVX2 (four doubles a step, the same
 * arithmetic, no FMA) where it has it. */
static add_fn add_f32 = add_finite_f32;
static check_fn check_f32 = all_finite_f32;
static pthread_once_t f32_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__) && defined(__GNUC__)
#define X_AVX2 __attribute__((target("avx2")))
ADD_FINITE(add_finite_f32_avx2, at_f32, X_AVX2)
ALL_FINITE_F32(all_finite_f32_avx2, X_AVX2)

static void choose_f32(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        add_f32 = add_finite_f32_avx2;
        check_f32 = all_finite_f32_avx2;
    }
}
#else
static void choose_f32(void)
{
}
#endif

/* Accumulate one run [start, start + len) into the per-axis arrays, a stretch of the innermost
 * axis at a time: each element adds to its innermost index, and the outer axes, whose indices
 * hold over the stretch, take the stretch's sums. The run's elements are at rbase and pbase.
 * Two F32 sides are read in place; others are converted a
 * stretch at a time. */
static void read_run(const nnp__xinput *in, uint64_t start, uint64_t len, const void *rbase,
                     const void *pbase, double **sq, uint64_t **fl, uint64_t *fail_total)
{
    double rv[RUN], pv[RUN], none_sq[1] = {0};
    uint64_t idx[NNP__X_MAX_DIMS] = {0}, rest = start, fail = 0, none_fl[1] = {0};
    /* a 0-d tensor (its one element) has no axis: its sums go to scratch */
    uint32_t last = in->ndim ? in->ndim - 1 : 0;
    uint64_t width = in->ndim ? in->shape[last] : 1;
    bool f32 = in->rdtype == NNP_F32 && in->pdtype == NNP_F32;
    pthread_once(&f32_once, choose_f32);
    for (uint32_t a = in->ndim; a-- > 0;) {
        idx[a] = rest % in->shape[a];
        rest /= in->shape[a];
    }
    for (uint64_t done = 0; done < len;) {
        /* the stretch: to the end of the run, of the buffers or of the innermost axis */
        uint64_t n = len - done < RUN ? len - done : RUN;
        n = n < width - idx[last] ? n : width - idx[last];
        const void *r = rv, *p = pv;
        if (f32) {
            r = (const unsigned char *)rbase + 4 * done;
            p = (const unsigned char *)pbase + 4 * done;
        } else {
            nnp__x_elems(in->rdtype, rbase, done, (size_t)n, rv);
            nnp__x_elems(in->pdtype, pbase, done, (size_t)n, pv);
        }
        double *s2 = in->ndim ? sq[last] + idx[last] : none_sq, sum = 0;
        uint64_t *f2 = in->ndim ? fl[last] + idx[last] : none_fl, nbad = 0;
        if (f32 ? check_f32(r, p, n) : all_finite_f64(r, p, n)) {
            (f32 ? add_f32 : add_finite_f64)(r, p, n, in->atol, in->rtol, s2, f2, &sum, &nbad);
        } else {
            for (uint64_t k = 0; k < n; k++) {
                double rk = f32 ? at_f32(r, k) : rv[k], pk = f32 ? at_f32(p, k) : pv[k];
                bool bad = nnp__x_fails(rk, pk, in->atol, in->rtol);
                double d = pk - rk, d2 = isfinite(d) ? d * d : 0;
                s2[k] += d2;
                f2[k] += bad;
                sum += d2;
                nbad += bad;
            }
        }
        fail += nbad;
        done += n;
        if (!in->ndim)
            continue;
        for (uint32_t a = 0; a < last; a++) {
            sq[a][idx[a]] += sum;
            fl[a][idx[a]] += nbad;
        }
        idx[last] += n;
        for (uint32_t a = in->ndim; a-- > 0;) { /* the next index, row-major */
            if (idx[a] < in->shape[a])
                break;
            idx[a] = 0;
            if (a)
                idx[a - 1]++;
        }
    }
    *fail_total += fail;
}

/* "s" for a plural of a named axis: "heads 2 and 3"; an unnamed one says "indices". */
static void index_list(nnp_sbuf *b, const nnp__explained *x, uint32_t a)
{
    uint32_t n = x->nreg[a];
    nnp__sbuf_printf(b, "axis %u %s ", a, n == 1 ? "index" : "indices");
    for (uint32_t k = 0; k < n; k++)
        nnp__sbuf_printf(b, "%s%llu", k == 0 ? "" : k + 1 == n ? " and " : ", ",
                         (unsigned long long)x->reg[a][k]);
    const char *name = x->axes[a].name;
    if (strncmp(name, "axis ", 5) != 0) {
        nnp__sbuf_printf(b, " (%s%s ", name, n == 1 ? "" : "s");
        for (uint32_t k = 0; k < n; k++)
            nnp__sbuf_printf(b, "%s%llu", k == 0 ? "" : k + 1 == n ? " and " : ", ",
                             (unsigned long long)x->reg[a][k]);
        nnp__sbuf_puts(b, ")");
    }
}

/* The fewest indices (at most NNP__X_REGION_MAX, and at most half the axis) that hold
 * CONCENTRATED of the mass; 0 when none do. Their share goes to *share. */
static uint32_t concentrate(const double *mass, uint64_t n, double total, uint64_t *out,
                            double *share)
{
    /* The indices by mass, largest first and the lower index first among equals, as many as
     * can be taken: one pass keeping the few largest, where picking the largest left each
     * time would pass over the axis once per pick. A NaN orders nothing: then picking it is. */
    uint64_t top[NNP__X_REGION_MAX];
    uint32_t ntop = 0;
    bool ordered = true;
    for (uint64_t i = 0; i < n && ordered; i++) {
        ordered = !isnan(mass[i]);
        if (ntop == NNP__X_REGION_MAX && !(mass[i] > mass[top[ntop - 1]]))
            continue;
        uint32_t j = ntop < NNP__X_REGION_MAX ? ntop++ : ntop - 1;
        for (; j > 0 && mass[i] > mass[top[j - 1]]; j--)
            top[j] = top[j - 1];
        top[j] = i;
    }
    uint32_t k = 0;
    double held = 0;
    while (k < NNP__X_REGION_MAX && k * 2 < n && held < CONCENTRATED * total) {
        uint64_t best = UINT64_MAX;
        if (ordered) {
            best = k < ntop ? top[k] : UINT64_MAX;
        } else {
            for (uint64_t i = 0; i < n; i++) {
                bool taken = false;
                for (uint32_t j = 0; j < k; j++)
                    taken |= out[j] == i;
                if (!taken && (best == UINT64_MAX || mass[i] > mass[best]))
                    best = i;
            }
        }
        if (best == UINT64_MAX || mass[best] <= 0)
            break;
        out[k++] = best;
        held += mass[best];
    }
    if (held < CONCENTRATED * total || k * 2 > n)
        return 0;
    for (uint32_t i = 1; i < k; i++) /* ascending, as people read them */
        for (uint32_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
            uint64_t t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    *share = held / total;
    return k;
}

/* Add v to `len` indices of an axis of n from `from` on, wrapping past its end to its start
 * (whole turns to *all), as differences: diff[i] - diff[i - 1] is what index i gains. */
static void add_wrapped(int64_t *diff, uint64_t n, uint64_t from, uint64_t len, uint64_t v,
                        uint64_t *all)
{
    *all += len / n * v;
    len %= n;
    if (!len)
        return;
    diff[from] += (int64_t)v;
    if (from + len <= n) {
        diff[from + len] -= (int64_t)v;
    } else {
        diff[0] += (int64_t)v;
        diff[from + len - n] -= (int64_t)v;
    }
}

/* The elements a sampled profile read at each index of axis a (count; diff: n + 1 of scratch).
 * A run is consecutive elements, so the indices of the axis it crosses are consecutive too
 * (wrapping at the axis' end): a few range additions a run, whatever the run's length. */
static void sampled_counts(const nnp__explained *x, uint32_t a, uint64_t *count, int64_t *diff)
{
    uint64_t n = x->axes[a].size, st = 1, all = 0;
    for (uint32_t b = a + 1; b < x->profile.ndim; b++)
        st *= x->axes[b].size;
    memset(diff, 0, (n + 1) * sizeof *diff);
    for (uint32_t k = 0; k < NNP__X_PROFILE_RUNS; k++) {
        uint64_t s = x->run[k], e = s + RUN, q0 = s / st, q1 = (e - 1) / st;
        if (q0 == q1) {
            add_wrapped(diff, n, q0 % n, 1, RUN, &all);
            continue;
        }
        add_wrapped(diff, n, q0 % n, 1, (q0 + 1) * st - s, &all);
        add_wrapped(diff, n, q1 % n, 1, e - q1 * st, &all);
        if (q1 - q0 > 1)
            add_wrapped(diff, n, (q0 + 1) % n, q1 - q0 - 1, st, &all);
    }
    int64_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        at += diff[i];
        count[i] = all + (uint64_t)at;
    }
}

/* The least share of the elements read that must lie before an onset. An error spread evenly
 * would put as big a share of itself there, ten times the 1e-3 an onset allows: without it,
 * any error over an axis of a thousand indices or more "lay from index 4 on". */
#define ONSET_PREFIX 0.01
/* Of a few failing elements scattered at random (a NaN every 997 elements), none may land in
 * the first indices by chance. Of F failing elements among the N read, the chance that none
 * lies among the P read before an onset, were they spread at random, is C(N - P, F) / C(N, F);
 * an onset is claimed when that is below e^-7 (about 1e-3). */
#define ONSET_LOG_CHANCE (-7.0)

static bool none_before_by_chance(double reads, double before, double events)
{
    if (reads - before < events)
        return false; /* they could not all lie after it */
    /* lgamma_r: lgamma sets the global signgam, and profiles are made on several threads */
    int sign;
    double log_chance = lgamma_r(reads - before + 1, &sign) -
                        lgamma_r(reads - before - events + 1, &sign) -
                        lgamma_r(reads + 1, &sign) + lgamma_r(reads - events + 1, &sign);
    return log_chance > ONSET_LOG_CHANCE;
}

/* Where the error lies along an axis (stretch() below). */
typedef struct {
    bool before;         /* absent before `from` */
    bool after;          /* absent after `to` */
    bool grows;          /* grows from `from` on (claimed without `after` only) */
    uint64_t from, to;   /* the first and last index read that hold error */
    uint64_t clean_to;   /* one past the last index read before `from`: it starts in between */
    uint64_t clean_from; /* the first index read after `to`: it ends before that */
} axis_stretch;

/* Whether one side of a stretch, holding `side` of the `reads` elements read, is clean: it
 * holds ONSET_PREFIX of them and, for failing elements (`events`), none lying there by chance
 * has odds under e^-7. */
static bool side_clean(uint64_t side, uint64_t reads, uint64_t events)
{
    double frac = (double)side / (double)reads;
    return frac >= ONSET_PREFIX &&
           (!events || !none_before_by_chance((double)reads, (double)side, (double)events));
}

/* From one end of an axis (the last index first when `from_end`), the indices read whose error
 * per element adds up to at most 1e-3 of `total`: *stop the first index read past them, *side
 * the elements read in them, *edge the one of them nearest *stop (n: none). */
static void clean_end(const double *mass, const uint64_t *count, uint64_t per, uint64_t n,
                      double total, bool from_end, uint64_t *stop, uint64_t *side, uint64_t *edge)
{
    double acc = 0;
    *stop = *edge = n;
    *side = 0;
    for (uint64_t j = 0; j < n; j++) {
        uint64_t i = from_end ? n - 1 - j : j, c = count ? count[i] : per;
        if (!c)
            continue;
        double d = mass[i] / (double)c;
        if (acc + d > 1e-3 * total) {
            *stop = i;
            return;
        }
        acc += d;
        *side += c;
        *edge = i;
    }
}

/* Along an axis the error is absent before some index and present from it on, or present up
 * to some index and absent after it, or both (a stretch of indices: a slice zeroed, a tail of
 * tokens), or grows along the axis; false when none of these. `count` is the elements read at
 * each index (NULL: `per` at each, the pair read whole): only indices read take part, each by
 * its error per element read. `events`: the failing elements `mass` counts (0: it is squared
 * error). Each clean side holds at most 1e-3 of the error. */
static bool stretch(const double *mass, const uint64_t *count, uint64_t per, uint64_t n,
                    uint64_t events, axis_stretch *out)
{
    double total = 0;
    uint64_t reads = 0, nread = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t c = count ? count[i] : per;
        if (c) {
            total += mass[i] / (double)c;
            reads += c;
            nread++;
        }
    }
    if (nread < 4 || !(total > 0))
        return false;
    /* the clean prefix: k the first index read past it, clean one past its last; the clean
     * suffix: e the last index read before it, clean_after its first */
    uint64_t k, before_reads, last_clean, e, after_reads, clean_after;
    clean_end(mass, count, per, n, total, false, &k, &before_reads, &last_clean);
    clean_end(mass, count, per, n, total, true, &e, &after_reads, &clean_after);
    uint64_t clean = last_clean < n ? last_clean + 1 : 0;
    *out = (axis_stretch){0};
    out->before = k > 0 && side_clean(before_reads, reads, events);
    out->after = clean_after < n && side_clean(after_reads, reads, events);
    uint64_t start = out->before ? k : 0;
    /* the trend of the rest: the correlation of the index with the error per element */
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, first = 0, last = 0;
    uint64_t m = 0;
    for (uint64_t i = start; i < n; i++) {
        uint64_t c = count ? count[i] : per;
        if (!c)
            continue;
        double xi = (double)i, yi = mass[i] / (double)c;
        first = m ? first : yi;
        last = yi;
        m++;
        sx += xi;
        sy += yi;
        sxx += xi * xi;
        syy += yi * yi;
        sxy += xi * yi;
    }
    double md = (double)m, vx = sxx - sx * sx / md, vy = syy - sy * sy / md;
    double c = sxy - sx * sy / md, corr = vx > 0 && vy > 0 ? c / sqrt(vx * vy) : 0;
    out->from = start;
    out->to = out->after ? e : n - 1;
    out->clean_to = out->before ? clean : start;
    out->clean_from = out->after ? clean_after : n;
    out->grows = !out->after && m >= 4 && corr > 0.9 && last > 2 * first;
    return (out->before && m >= 2) || out->after || (!out->before && out->grows);
}

/* "index 12" or, where the sample read none of the indices lo to hi, "an index between lo and
 * hi". */
static void index_or_between(nnp_sbuf *w, uint64_t lo, uint64_t hi)
{
    if (lo == hi)
        nnp__sbuf_printf(w, "index %llu", (unsigned long long)hi);
    else
        nnp__sbuf_printf(w, "an index between %llu and %llu", (unsigned long long)lo,
                         (unsigned long long)hi);
}

/* The words for a stretch along an axis, after "the error lies along axis 1 (token)". */
static void stretch_words(nnp_sbuf *w, const axis_stretch *s)
{
    bool exact = s->clean_to == s->from && s->clean_from == s->to + 1;
    if (s->before && s->after && exact) {
        nnp__sbuf_printf(w, " in indices %llu to %llu", (unsigned long long)s->from,
                         (unsigned long long)s->to);
        return;
    }
    if (s->before) {
        nnp__sbuf_puts(w, " from ");
        index_or_between(w, s->clean_to, s->from);
    }
    if (s->after) {
        nnp__sbuf_puts(w, " up to ");
        index_or_between(w, s->to, s->clean_from - 1);
    } else if (s->before) {
        nnp__sbuf_puts(w, " on");
    }
    if (!exact)
        nnp__sbuf_puts(w, " (the sample read none between)");
}

/* Whether the indices of a sample's region on axis a are borne out: some element read lies in
 * the region on every other axis that has one, and outside it on axis a. Without one, the
 * sample never looked elsewhere along a where the error is (one run that crossed channel 1 in
 * batch 6 says nothing of channel 1 in the other batches). */
static bool region_shown(const nnp__explained *x, uint32_t a)
{
    uint32_t ndim = x->profile.ndim;
    uint64_t st[NNP__X_MAX_DIMS], size = 1;
    for (uint32_t b = ndim; b-- > 0;) {
        st[b] = size;
        size *= x->axes[b].size;
    }
    for (uint32_t k = 0; k < NNP__X_PROFILE_RUNS; k++)
        for (uint64_t f = x->run[k], e = f + RUN; f < e;) {
            /* the element's indices; the next element at which one of them changes */
            bool in_others = true, in_a = false;
            uint64_t next = e;
            for (uint32_t b = 0; b < ndim; b++) {
                if (!x->nreg[b])
                    continue;
                uint64_t i = f / st[b] % x->axes[b].size, end = (f / st[b] + 1) * st[b];
                bool in = false;
                for (uint32_t j = 0; j < x->nreg[b]; j++)
                    in |= x->reg[b][j] == i;
                if (b == a)
                    in_a = in;
                else
                    in_others &= in;
                next = end < next ? end : next;
            }
            if (in_others && !in_a)
                return true;
            f = next;
        }
    return false;
}

static nnp_status describe(nnp__explained *x, bool by_fail, uint64_t failing)
{
    nnp_sbuf w = {0}, reg = {0};
    uint32_t ndim = x->profile.ndim;
    double *mass = NULL;
    uint64_t biggest = 1, *count = NULL;
    int64_t *diff = NULL;
    for (uint32_t a = 0; a < ndim; a++)
        biggest = x->axes[a].size > biggest ? x->axes[a].size : biggest;
    mass = malloc(biggest * sizeof *mass);
    if (x->profile.sampled) {
        count = malloc(biggest * sizeof *count);
        diff = malloc((biggest + 1) * sizeof *diff);
    }
    if (!mass || (x->profile.sampled && (!count || !diff))) {
        free(mass);
        free(count);
        free(diff);
        return nnp__nomem();
    }
    if (x->profile.sampled && !by_fail && failing) {
        /* the pair's failing elements all lie where the sample did not read: what little
         * error it read says nothing of theirs */
        uint64_t nelem = 1;
        for (uint32_t a = 0; a < ndim; a++)
            nelem *= x->axes[a].size;
        nnp__sbuf_printf(&w, "the sample read (%llu of %llu elements) holds none of the %llu "
                         "failing elements", (unsigned long long)x->profile.elements,
                         (unsigned long long)nelem, (unsigned long long)failing);
        ndim = 0;
    }
    double least_share = 1, share[NNP__X_MAX_DIMS] = {0};
    bool any = false;
    for (uint32_t a = 0; a < ndim; a++) {
        const nnp_axis_profile *ax = &x->axes[a];
        for (uint64_t i = 0; i < ax->size; i++)
            mass[i] = by_fail ? (double)ax->fail[i] : ax->sq_share[i];
        x->nreg[a] = ax->size > 1 ? concentrate(mass, ax->size, by_fail ? (double)x->profile.fail
                                                                        : 1.0,
                                                x->reg[a], &share[a])
                                  : 0;
    }
    /* a sample's region on several axes keeps the axes along which it is borne out (all of
     * them when none is: then it is all there is to say) */
    uint32_t nregions = 0, shown = 0;
    bool keep[NNP__X_MAX_DIMS];
    for (uint32_t a = 0; a < ndim; a++) {
        keep[a] = x->nreg[a] && (!x->profile.sampled || region_shown(x, a));
        nregions += x->nreg[a] != 0;
        shown += keep[a];
    }
    for (uint32_t a = 0; a < ndim && nregions > 1 && shown; a++)
        if (!keep[a])
            x->nreg[a] = 0;
    for (uint32_t a = 0; a < ndim; a++) {
        if (!x->nreg[a])
            continue;
        least_share = share[a] < least_share ? share[a] : least_share;
        if (any)
            nnp__sbuf_puts(&reg, ", ");
        index_list(&reg, x, a);
        any = true;
    }
    if (any) {
        unsigned long long nf = (unsigned long long)x->profile.fail;
        const char *of = x->profile.sampled ? " of a sample" : "";
        if (by_fail && least_share >= 1 && nf == 1)
            nnp__sbuf_printf(&w, "the one failing element%s lies in %s", of, reg.s);
        else if (by_fail && least_share >= 1)
            nnp__sbuf_printf(&w, "all %llu failing elements%s lie in %s", nf, of, reg.s);
        else if (by_fail)
            nnp__sbuf_printf(&w, "%.0f%% of the %llu failing elements%s lie in %s",
                             floor(100 * least_share), nf, of, reg.s);
        else
            nnp__sbuf_printf(&w, "%.0f%% of the squared error lies in %s",
                             floor(100 * least_share), reg.s);
    }
    /* A sample's runs cover the other axes' indices of a region only here and there: where the
     * error starts along them is not known from a sample of a region. */
    for (uint32_t a = 0; a < ndim && !(any && x->profile.sampled); a++) {
        const nnp_axis_profile *ax = &x->axes[a];
        if (x->nreg[a])
            continue;
        for (uint64_t i = 0; i < ax->size; i++)
            mass[i] = by_fail ? (double)ax->fail[i] : ax->sq_share[i];
        if (count)
            sampled_counts(x, a, count, diff);
        uint64_t per = ax->size ? x->profile.elements / ax->size : 0;
        axis_stretch st;
        if (!stretch(mass, count, per ? per : 1, ax->size, by_fail ? x->profile.fail : 0, &st))
            continue;
        nnp__sbuf_puts(&w, w.len ? "; " : "");
        nnp__sbuf_printf(&w, "the error %s along ", st.grows ? "grows" : "lies");
        nnp__x_axis_label(&w, x, a);
        stretch_words(&w, &st);
    }
    if (!w.len)
        nnp__sbuf_puts(&w, "the error is spread over every axis");
    free(mass);
    free(count);
    free(diff);
    if (w.failed || reg.failed) {
        nnp__sbuf_free(&w);
        nnp__sbuf_free(&reg);
        return nnp__nomem();
    }
    x->where = w.s;
    x->region_text = reg.s ? reg.s : calloc(1, 1);
    return x->region_text ? NNP_OK : nnp__nomem();
}

nnp_status nnp__x_profile(const nnp__xinput *in, nnp__explained *x)
{
    uint64_t total_idx = 0;
    for (uint32_t a = 0; a < in->ndim; a++)
        total_idx += in->shape[a];
    x->share = calloc(total_idx ? total_idx : 1, sizeof *x->share);
    x->fail = calloc(total_idx ? total_idx : 1, sizeof *x->fail);
    if (!x->share || !x->fail)
        return nnp__nomem();
    double *sq[NNP__X_MAX_DIMS];
    uint64_t *fl[NNP__X_MAX_DIMS], off = 0;
    for (uint32_t a = 0; a < in->ndim; a++) {
        sq[a] = x->share + off;
        fl[a] = x->fail + off;
        off += in->shape[a];
        char buf[32];
        snprintf(buf, sizeof buf, "axis %u", a);
        x->names[a] = strdup(in->names[a] ? in->names[a] : buf);
        if (!x->names[a])
            return nnp__nomem();
        x->axes[a] = (nnp_axis_profile){x->names[a], in->shape[a], sq[a], fl[a]};
    }
    x->profile.ndim = in->ndim;
    x->profile.axes = x->axes;
    uint64_t fail = 0;
    size_t rs = nnp_dtype_size(in->rdtype), ps = nnp_dtype_size(in->pdtype);
    if (in->nelem <= SAMPLE_MAX) {
        read_run(in, 0, in->nelem, in->r, in->p, sq, fl, &fail);
        x->profile.elements = in->nelem;
    } else {
        uint64_t stratum = in->nelem / NNP__X_PROFILE_RUNS, seed = in->nelem;
        for (uint64_t k = 0; k < NNP__X_PROFILE_RUNS; k++) {
            x->run[k] = k * stratum + rng_next(&seed) % (stratum - RUN + 1);
            read_run(in, x->run[k], RUN, (const unsigned char *)in->r + x->run[k] * rs,
                     (const unsigned char *)in->p + x->run[k] * ps, sq, fl, &fail);
        }
        x->profile.elements = SAMPLE_MAX;
        x->profile.sampled = true;
    }
    x->profile.fail = fail;
    /* every axis sums the same squared error: take it from the first */
    double total = 0;
    for (uint64_t i = 0; in->ndim && i < in->shape[0]; i++)
        total += sq[0][i];
    for (uint32_t a = 0; a < in->ndim && total > 0; a++)
        for (uint64_t i = 0; i < in->shape[a]; i++)
            sq[a][i] /= total;
    /* failing elements say where a NaN or a small count lies; the squared error says it when
     * every element read passes (a sample that missed them) */
    return describe(x, fail > 0, in->failing);
}

void nnp__x_sample_free(nnp__explained *x)
{
    free(x->sample.own);
    memset(&x->sample, 0, sizeof x->sample);
}

void nnp__explained_free(nnp__explained *x)
{
    if (!x)
        return;
    for (uint32_t a = 0; a < NNP__X_MAX_DIMS; a++)
        free(x->names[a]);
    free(x->share);
    free(x->fail);
    free(x->where);
    free(x->region_text);
    for (size_t k = 0; k < x->nhints; k++)
        free((char *)x->hints[k].text);
    nnp__x_sample_free(x);
}
