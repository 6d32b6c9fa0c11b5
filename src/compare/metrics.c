/*
 * metrics.c - how far a port's tensor is from the reference's, in one pass over both buffers.
 *
 * A tensor is cut into fixed chunks that threads take in order; each chunk is read a block at a
 * time. F32, BF16 and F16 blocks are summed in place by the kernels of kernels_cmp.c; any other
 * dtype is converted to double buffers small enough to stay in L1, so any dtype meets any other
 * exactly. Each block yields plain sums (squared and absolute error, norms, the dot product), the
 * worst element, and Pearson co-moments taken about the block's own means; blocks merge into
 * chunks and chunks into the tensor with Chan's formulas, in a fixed order, so the result does
 * not depend on the number of threads. A block holding a NaN or an infinity takes a slower path
 * that counts them and compares only the finite pairs.
 *
 * When a side lives in a dump, each chunk's pages are dropped from the process once it is
 * compared: a diff of dumps larger than memory keeps only the chunks in flight resident, and
 * the page cache, not the process, holds the files.
 *
 * A side read in place from a stored zip member has its member's CRC-32 checked in the same
 * pass: each chunk computes the CRC of what it has just compared, a span at a time while the
 * span is still in the cache, and the chunks' CRCs are combined in order at the end
 * (nnp__dump_pass_begin), so a checkpoint's tensors are not read a second time to check them.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32.h"
#include "compare/compare.h"

#define CMP_CHUNK (1u << 20)
#define CMP_BLOCK 1024u
/* Elements compared before their CRC is taken: 64 KiB of F32 a side, still in the L2 cache. */
#define CRC_SPAN 16384u

typedef struct {
    uint64_t count, finite, nan_ref, nan_port, inf_ref, inf_port, fail;
    uint64_t nan_new, inf_new; /* port NaN / Inf where the reference is finite */
    double sd2, sad, srr, spp, spr;      /* sums of d^2, |d|, r^2, p^2, p*r */
    double max_abs, ref_at_max, port_at_max;
    uint64_t max_index;
    bool has_max;
    double mean_r, mean_p, m2_r, m2_p, c_rp; /* Pearson co-moments of the finite pairs */
} acc;

typedef struct {
    nnp_cmp_side ref, port;
    uint64_t n;
    double atol, rtol;
    acc *parts;
    uint32_t *crc_ref, *crc_port; /* per chunk, for a side whose member check is folded in */
    bool *no_memory; /* per chunk: a gathered side's buffer could not be had */
    bool keep;       /* pages left for the caller to give back */
} cmp_job;

static void acc_merge(acc *a, const acc *b)
{
    if (b->finite) {
        if (!a->finite) {
            a->mean_r = b->mean_r;
            a->mean_p = b->mean_p;
            a->m2_r = b->m2_r;
            a->m2_p = b->m2_p;
            a->c_rp = b->c_rp;
        } else {
            double na = (double)a->finite, nb = (double)b->finite, n = na + nb, f = na * nb / n;
            double dr = b->mean_r - a->mean_r, dp = b->mean_p - a->mean_p;
            a->mean_r += dr * (nb / n);
            a->mean_p += dp * (nb / n);
            a->m2_r += b->m2_r + dr * dr * f;
            a->m2_p += b->m2_p + dp * dp * f;
            a->c_rp += b->c_rp + dr * dp * f;
        }
    }
    /* the first worst element in index order wins a tie */
    if (b->has_max && (!a->has_max || b->max_abs > a->max_abs)) {
        a->max_abs = b->max_abs;
        a->max_index = b->max_index;
        a->ref_at_max = b->ref_at_max;
        a->port_at_max = b->port_at_max;
        a->has_max = true;
    }
    a->count += b->count;
    a->finite += b->finite;
    a->nan_ref += b->nan_ref;
    a->nan_port += b->nan_port;
    a->inf_ref += b->inf_ref;
    a->inf_port += b->inf_port;
    a->nan_new += b->nan_new;
    a->inf_new += b->inf_new;
    a->fail += b->fail;
    a->sd2 += b->sd2;
    a->sad += b->sad;
    a->srr += b->srr;
    a->spp += b->spp;
    a->spr += b->spr;
}

/* The finite pairs r[0..n), p[0..n), at flat indices first + idx[k] (idx NULL: consecutive). */
static void finite_block(const double *r, const double *p, size_t n, uint64_t first,
                         const uint32_t *idx, double atol, double rtol, acc *out)
{
    double sd2 = 0, sad = 0, srr = 0, spp = 0, spr = 0, sr = 0, sp = 0, fail = 0;
#pragma omp simd reduction(+ : sd2, sad, srr, spp, spr, sr, sp, fail)
    for (size_t i = 0; i < n; i++) {
        double d = p[i] - r[i], a = fabs(d);
        sd2 += d * d;
        sad += a;
        srr += r[i] * r[i];
        spp += p[i] * p[i];
        spr += p[i] * r[i];
        sr += r[i];
        sp += p[i];
        fail += a > atol + rtol * fabs(r[i]) ? 1.0 : 0.0;
    }
    size_t worst = 0;
    double wa = -1;
    for (size_t i = 0; i < n; i++) {
        double a = fabs(p[i] - r[i]);
        if (a > wa) {
            wa = a;
            worst = i;
        }
    }
    double mr = sr / (double)n, mp = sp / (double)n, m2r = 0, m2p = 0, crp = 0;
#pragma omp simd reduction(+ : m2r, m2p, crp)
    for (size_t i = 0; i < n; i++) {
        double a = r[i] - mr, b = p[i] - mp;
        m2r += a * a;
        m2p += b * b;
        crp += a * b;
    }
    memset(out, 0, sizeof *out);
    out->count = out->finite = n;
    out->fail = (uint64_t)fail;
    out->sd2 = sd2;
    out->sad = sad;
    out->srr = srr;
    out->spp = spp;
    out->spr = spr;
    out->mean_r = mr;
    out->mean_p = mp;
    out->m2_r = m2r;
    out->m2_p = m2p;
    out->c_rp = crp;
    out->has_max = true;
    out->max_abs = wa;
    out->max_index = first + (idx ? idx[worst] : worst);
    out->ref_at_max = r[worst];
    out->port_at_max = p[worst];
}

static void compare_block(double *r, double *p, size_t n, uint64_t first, double atol,
                          double rtol, acc *total)
{
    double probe = 0;
#pragma omp simd reduction(+ : probe)
    for (size_t i = 0; i < n; i++)
        probe += (r[i] - p[i]) * 0.0; /* NaN exactly when either side is NaN or infinite */
    acc b;
    if (probe == 0.0) {
        finite_block(r, p, n, first, NULL, atol, rtol, &b);
        acc_merge(total, &b);
        return;
    }
    acc extra = {0};
    uint32_t idx[CMP_BLOCK];
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        bool rf = isfinite(r[i]), pf = isfinite(p[i]);
        /* as truth values: glibc's isinf() is -1 for -inf */
        extra.nan_ref += isnan(r[i]) != 0;
        extra.nan_port += isnan(p[i]) != 0;
        extra.inf_ref += isinf(r[i]) != 0;
        extra.inf_port += isinf(p[i]) != 0;
        extra.nan_new += rf && isnan(p[i]);
        extra.inf_new += rf && isinf(p[i]) != 0;
        if (rf && pf) {
            r[kept] = r[i];
            p[kept] = p[i];
            idx[kept++] = (uint32_t)i;
        } else {
            extra.count++;
            /* the same infinity on both sides agrees; anything else with a NaN or Inf does not */
            extra.fail += !(isinf(r[i]) != 0 && r[i] == p[i]);
        }
    }
    acc_merge(total, &extra);
    if (kept) {
        finite_block(r, p, kept, first, idx, atol, rtol, &b);
        acc_merge(total, &b);
    }
}

/* Where in a finite block the largest error lies: the first element that reaches it. */
static void locate_worst(const cmp_job *job, const unsigned char *r, const unsigned char *p,
                         size_t n, uint64_t first, double max_abs, acc *b)
{
    double x[CMP_BLOCK], y[CMP_BLOCK];
    for (size_t done = 0; done < n;) {
        size_t k = n - done < CMP_BLOCK ? n - done : CMP_BLOCK;
        nnp_convert_to_f64(job->ref.dtype, r + done * nnp_dtype_size(job->ref.dtype), k, x);
        nnp_convert_to_f64(job->port.dtype, p + done * nnp_dtype_size(job->port.dtype), k, y);
        for (size_t i = 0; i < k; i++)
            if (fabs(y[i] - x[i]) == max_abs) {
                b->has_max = true;
                b->max_abs = max_abs;
                b->max_index = first + done + i;
                b->ref_at_max = x[i];
                b->port_at_max = y[i];
                return;
            }
        done += k;
    }
}

/* One block of F32/BF16/F16 pairs through the kernel; false when it holds a NaN or Inf. */
static bool fast_block(const cmp_job *job, const unsigned char *r, const unsigned char *p,
                       size_t n, uint64_t first, acc *total)
{
    nnp_cmp_sums s;
    if (!nnp__cmp_block(job->ref.dtype, r, job->port.dtype, p, n, job->atol, job->rtol, &s))
        return false;
    acc b = {0};
    b.count = b.finite = s.n;
    b.fail = s.fail;
    b.sd2 = s.sd2;
    b.sad = s.sad;
    b.srr = s.srr;
    b.spp = s.spp;
    b.spr = s.spr;
    b.mean_r = s.mean_r;
    b.mean_p = s.mean_p;
    b.m2_r = s.m2_r;
    b.m2_p = s.m2_p;
    b.c_rp = s.c_rp;
    /* Only a block that beats the worst so far needs to say where its worst is (an equal one
     * loses the tie to the earlier element): rare after the first few blocks. */
    if (!total->has_max || s.max_abs > total->max_abs)
        locate_worst(job, r, p, n, first, s.max_abs, &b);
    acc_merge(total, &b);
    return true;
}

/* A block in double buffers: every dtype, and the exact path for blocks with NaN or Inf. */
static void slow_block(const cmp_job *job, const unsigned char *r, const unsigned char *p,
                       size_t n, uint64_t first, acc *total)
{
    size_t rs = nnp_dtype_size(job->ref.dtype), ps = nnp_dtype_size(job->port.dtype);
    double x[CMP_BLOCK], y[CMP_BLOCK];
    for (size_t done = 0; done < n;) {
        size_t k = n - done < CMP_BLOCK ? n - done : CMP_BLOCK;
        nnp_convert_to_f64(job->ref.dtype, r + done * rs, k, x);
        nnp_convert_to_f64(job->port.dtype, p + done * ps, k, y);
        compare_block(x, y, k, first + done, job->atol, job->rtol, total);
        done += k;
    }
}

/* Elements [first, first + n) of a side: in place, or, for a side read by ranges (data NULL,
 * nnp__dump_begin_ranged), gathered into *buf (the caller frees it). NULL: no memory. */
static const unsigned char *chunk_of(const nnp_cmp_side *side, uint64_t first, uint64_t n,
                                     unsigned char **buf)
{
    size_t es = nnp_dtype_size(side->dtype);
    if (side->data)
        return (const unsigned char *)side->data + first * es;
    if (!(*buf = malloc(n ? (size_t)n * es : 1)))
        return NULL;
    nnp__dump_read_range(side->dump, side->rec, first, n, *buf);
    return *buf;
}

static void run_chunk(void *ctx, size_t t)
{
    cmp_job *job = ctx;
    uint64_t first = (uint64_t)t * CMP_CHUNK;
    uint64_t n = job->n - first < CMP_CHUNK ? job->n - first : CMP_CHUNK;
    size_t rs = nnp_dtype_size(job->ref.dtype), ps = nnp_dtype_size(job->port.dtype);
    /* this chunk of each side: in place, or gathered into a buffer of its own (a view) */
    unsigned char *gathered[2] = {NULL, NULL};
    const unsigned char *ref = chunk_of(&job->ref, first, n, &gathered[0]);
    const unsigned char *port = chunk_of(&job->port, first, n, &gathered[1]);
    if (!ref || !port) {
        free(gathered[0]);
        free(gathered[1]);
        job->no_memory[t] = true;
        return;
    }
    bool fast = nnp__cmp_fast_dtype(job->ref.dtype) && nnp__cmp_fast_dtype(job->port.dtype);
    size_t block = fast ? NNP_CMP_BLOCK : CMP_BLOCK;
    /* No prefetch: mapping a chunk ahead with MADV_POPULATE_READ cost more system time than
     * the page faults it saves (the kernel maps 16 pages a fault from the page cache), and
     * MADV_WILLNEED more again; both were slower, warm and cold. */
    acc total = {0};
    bool crc = job->crc_ref || job->crc_port;
    uint32_t crc_ref = 0, crc_port = 0;
    uint64_t span = 0; /* the first element not in the CRCs yet */
    for (uint64_t done = 0; done < n;) {
        size_t k = n - done < block ? (size_t)(n - done) : block;
        const unsigned char *r = ref + done * rs, *p = port + done * ps;
        if (!fast || !fast_block(job, r, p, k, first + done, &total))
            slow_block(job, r, p, k, first + done, &total);
        done += k;
        if (crc && (done - span >= CRC_SPAN || done == n)) {
            if (job->crc_ref)
                crc_ref = nnp__crc32(crc_ref, ref + span * rs, (size_t)(done - span) * rs);
            if (job->crc_port)
                crc_port = nnp__crc32(crc_port, port + span * ps, (size_t)(done - span) * ps);
            span = done;
        }
    }
    if (job->crc_ref)
        job->crc_ref[t] = crc_ref;
    if (job->crc_port)
        job->crc_port[t] = crc_port;
    if (job->ref.dump && job->ref.data && !job->keep)
        nnp__dump_release_range(job->ref.dump, job->ref.rec, first * rs, n * rs);
    if (job->port.dump && job->port.data && !job->keep)
        nnp__dump_release_range(job->port.dump, job->port.rec, first * ps, n * ps);
    free(gathered[0]);
    free(gathered[1]);
    job->parts[t] = total;
}

static void finish(const acc *a, nnp_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->count = a->count;
    m->finite = a->finite;
    m->nan_ref = a->nan_ref;
    m->nan_port = a->nan_port;
    m->inf_ref = a->inf_ref;
    m->inf_port = a->inf_port;
    m->nan_new = a->nan_new;
    m->inf_new = a->inf_new;
    m->allclose_fail = a->fail;
    m->allclose_fail_pct = a->count ? 100.0 * (double)a->fail / (double)a->count : 0;
    if (a->count == 0) { /* nothing to differ: identical */
        m->snr_db = INFINITY;
        m->cosine = m->pcc = 1;
        return;
    }
    if (a->finite == 0) {
        m->mse = m->rmse = m->mean_abs = m->max_abs = m->rel_l2 = m->nmse = m->snr_db = NAN;
        m->cosine = m->pcc = m->ref_at_max = m->port_at_max = NAN;
        return;
    }
    double n = (double)a->finite;
    m->mse = a->sd2 / n;
    m->rmse = sqrt(m->mse);
    m->mean_abs = a->sad / n;
    m->max_abs = a->max_abs;
    m->max_index = a->max_index;
    m->ref_at_max = a->ref_at_max;
    m->port_at_max = a->port_at_max;
    bool same = a->sd2 == 0;
    m->rel_l2 = a->srr > 0 ? sqrt(a->sd2) / sqrt(a->srr) : same ? 0 : INFINITY;
    m->nmse = a->srr > 0 ? a->sd2 / a->srr : same ? 0 : INFINITY;
    m->snr_db = same ? INFINITY : a->srr > 0 ? 10 * log10(a->srr / a->sd2) : -INFINITY;
    if (same) /* identical: exactly 1, whatever the rounding of the sums */
        m->cosine = 1;
    else if (a->srr > 0 && a->spp > 0)
        m->cosine = a->spr / (sqrt(a->srr) * sqrt(a->spp));
    else
        m->cosine = a->srr == 0 && a->spp == 0 ? 1 : 0;
    if (same)
        m->pcc = 1;
    else if (a->m2_r > 0 && a->m2_p > 0)
        m->pcc = a->c_rp / (sqrt(a->m2_r) * sqrt(a->m2_p));
    else /* a constant side: perfect only when the tensors are identical */
        m->pcc = same ? 1 : 0;
    /* rounding can carry a correlation a hair past 1 */
    if (m->cosine > 1) m->cosine = 1;
    if (m->cosine < -1) m->cosine = -1;
    if (m->pcc > 1) m->pcc = 1;
    if (m->pcc < -1) m->pcc = -1;
}

/* Whether the pass folds the check of a side's zip member in (nnp__dump_pass_begin): only a
 * side that is its record whole; any other is checked now, if it needs it. */
static nnp_status pass_begin(const nnp_cmp_side *side, uint64_t n, bool *fold)
{
    *fold = false;
    if (!side->dump)
        return NNP_OK;
    const nnp_record *r = nnp_dump_record(side->dump, side->rec);
    bool whole = r && r->nelem == n && r->dtype == side->dtype;
    return nnp__dump_pass_begin(side->dump, side->rec, whole ? fold : NULL);
}

/* The chunks' CRCs in order: the CRC of the record's bytes, for its member's check. */
static nnp_status pass_end(const nnp_cmp_side *side, const uint32_t *crcs, size_t nchunks,
                           uint64_t n)
{
    size_t es = nnp_dtype_size(side->dtype);
    uint32_t crc = 0;
    for (size_t t = 0; t < nchunks; t++) {
        uint64_t len = n - (uint64_t)t * CMP_CHUNK < CMP_CHUNK ? n - (uint64_t)t * CMP_CHUNK
                                                               : CMP_CHUNK;
        crc = nnp__crc32_combine(crc, crcs[t], len * es);
    }
    return nnp__dump_pass_end(side->dump, side->rec, crc);
}

nnp_status nnp__compare_sides(const nnp_cmp_side *ref, const nnp_cmp_side *port, uint64_t n,
                              const nnp_compare_options *opts, nnp_metrics *out)
{
    return nnp__compare_sides_keep(ref, port, n, opts, false, out);
}

nnp_status nnp__compare_sides_keep(const nnp_cmp_side *ref, const nnp_cmp_side *port, uint64_t n,
                                   const nnp_compare_options *opts, bool keep, nnp_metrics *out)
{
    if (!out || !ref || !port || nnp_dtype_size(ref->dtype) == 0 ||
        nnp_dtype_size(port->dtype) == 0 ||
        (n && ((!ref->data && !ref->dump) || (!port->data && !port->dump))))
        return nnp__fail(NNP_ERR_ARG, "nnp_compare: missing data, dtype or output");
    nnp_compare_options o;
    nnp_compare_options_init(&o);
    if (opts)
        o = *opts; /* internal callers: their own options, built whole */
    if (!(o.atol >= 0) || !(o.rtol >= 0))
        return nnp__fail(NNP_ERR_ARG, "nnp_compare: tolerances must be non-negative numbers");
    size_t nchunks = (size_t)((n + CMP_CHUNK - 1) / CMP_CHUNK);
    bool fold_ref = false, fold_port = false;
    nnp_status st = pass_begin(ref, n, &fold_ref);
    if (!st)
        st = pass_begin(port, n, &fold_port);
    if (st)
        return st;
    acc *parts = calloc(nchunks ? nchunks : 1, sizeof *parts);
    uint32_t *crcs = fold_ref || fold_port ? calloc(2 * (nchunks ? nchunks : 1), sizeof *crcs)
                                           : NULL;
    bool *no_memory = calloc(nchunks ? nchunks : 1, sizeof *no_memory);
    if (!parts || !no_memory || ((fold_ref || fold_port) && !crcs)) {
        free(parts);
        free(crcs);
        free(no_memory);
        return nnp__nomem();
    }
    cmp_job job = {*ref, *port, n, o.atol, o.rtol, parts, fold_ref ? crcs : NULL,
                   fold_port ? crcs + nchunks : NULL, no_memory, keep};
    st = nnp__parallel_for(nchunks, o.threads, run_chunk, &job);
    for (size_t t = 0; t < nchunks && !st; t++)
        if (no_memory[t])
            st = nnp__nomem();
    if (!st && fold_ref)
        st = pass_end(ref, job.crc_ref, nchunks, n);
    if (!st && fold_port)
        st = pass_end(port, job.crc_port, nchunks, n);
    if (!st) {
        acc total = {0};
        for (size_t i = 0; i < nchunks; i++)
            acc_merge(&total, &parts[i]);
        finish(&total, out);
    }
    free(parts);
    free(crcs);
    free(no_memory);
    return st;
}

void nnp_compare_options_init(nnp_compare_options *opts)
{
    if (opts)
        *opts = (nnp_compare_options){.size = sizeof *opts};
}

nnp_status nnp_compare(nnp_dtype ref_dtype, const void *ref, nnp_dtype port_dtype,
                       const void *port, uint64_t n, const nnp_compare_options *opts,
                       nnp_metrics *out)
{
    nnp_compare_options o;
    nnp_compare_options_init(&o);
    nnp_status st = nnp__options_take("nnp_compare", opts, &o, sizeof o);
    if (st)
        return st;
    nnp_cmp_side r = {ref_dtype, ref, NULL, 0}, p = {port_dtype, port, NULL, 0};
    return nnp__compare_sides(&r, &p, n, &o, out);
}

nnp_status nnp__compare_records(nnp_dump *ref, size_t ref_rec, nnp_dump *port, size_t port_rec,
                                const nnp_compare_options *opts, nnp_metrics *out)
{
    const nnp_record *a = nnp_dump_record(ref, ref_rec), *b = nnp_dump_record(port, port_rec);
    if (!a || !b)
        return nnp__fail(NNP_ERR_ARG, "nnp_compare: no such record");
    if (a->nelem != b->nelem)
        return nnp__fail(NNP_ERR_ARG, "nnp_compare: '%s' has %llu elements, '%s' %llu", a->name,
                         (unsigned long long)a->nelem, b->name, (unsigned long long)b->nelem);
    nnp_cmp_side r = {a->dtype, NULL, ref, ref_rec}, p = {b->dtype, NULL, port, port_rec};
    /* the pass checks what it reads (nnp__compare_sides); a view it gathers a chunk at a time */
    bool ranged_ref, ranged_port;
    nnp_status st = nnp__dump_begin_ranged(ref, ref_rec, &ranged_ref);
    if (!st && !ranged_ref)
        st = nnp__dump_data_for_pass(ref, ref_rec, &r.data);
    if (!st)
        st = nnp__dump_begin_ranged(port, port_rec, &ranged_port);
    if (!st && !ranged_port)
        st = nnp__dump_data_for_pass(port, port_rec, &p.data);
    if (!st)
        st = nnp__compare_sides(&r, &p, a->nelem, opts, out);
    /* the pages the chunks could not release, those two chunks share (one chunk released all
     * of a record's whole pages: no second call for the many small records of a capture) */
    if (st || a->nelem > CMP_CHUNK) {
        nnp_dump_release(ref, ref_rec);
        nnp_dump_release(port, port_rec);
    }
    return st;
}

/* ---- the pass cut at its chunks, for processes that share one tensor's chunks (distrib.c) ----
 * A chunk's partial result is what run_chunk leaves for it; merging the partials of every chunk
 * in chunk order, as nnp__compare_sides does, gives its metrics bit for bit, whichever process
 * computed which chunk. */

size_t nnp__cmp_partial_size(void)
{
    return sizeof(acc);
}

uint64_t nnp__cmp_chunk_elems(void)
{
    return CMP_CHUNK;
}

void nnp__compare_chunk(const nnp_cmp_side *ref, const nnp_cmp_side *port, uint64_t n,
                        double atol, double rtol, uint64_t chunk, void *partial)
{
    /* run_chunk over a view that starts at the chunk: the same blocks over the same bytes;
     * only the index of the worst element is relative to the view */
    uint64_t first = chunk * CMP_CHUNK, len = n - first < CMP_CHUNK ? n - first : CMP_CHUNK;
    size_t rs = nnp_dtype_size(ref->dtype), ps = nnp_dtype_size(port->dtype);
    bool no_memory = false;
    cmp_job job = {{ref->dtype, (const unsigned char *)ref->data + first * rs, NULL, 0},
                   {port->dtype, (const unsigned char *)port->data + first * ps, NULL, 0},
                   len, atol, rtol, partial, NULL, NULL, &no_memory, false};
    run_chunk(&job, 0); /* both sides in place: nothing to allocate */
    acc *a = partial;
    if (a->has_max)
        a->max_index += first;
    if (ref->dump)
        nnp__dump_release_range(ref->dump, ref->rec, first * rs, len * rs);
    if (port->dump)
        nnp__dump_release_range(port->dump, port->rec, first * ps, len * ps);
}

void nnp__compare_merge(const void *partials, size_t nchunks, nnp_metrics *out)
{
    const acc *parts = partials;
    acc total = {0};
    for (size_t i = 0; i < nchunks; i++)
        acc_merge(&total, &parts[i]);
    finish(&total, out);
}
