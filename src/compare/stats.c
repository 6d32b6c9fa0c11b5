/*
 * stats.c - per-tensor statistics in one streaming pass.
 *
 * Each record is cut into fixed chunks; threads take chunks in file order. A chunk is converted
 * to double a block at a time (small enough to stay in L1) and each block is summarised with a
 * two-pass mean and sum of squared deviations, which are then merged block into chunk and chunk
 * into tensor with Chan's formula. The moments are taken of x - K, with K the tensor's first
 * finite element: for data with a large offset (1e9 + noise) that subtraction is exact, and the
 * block means then keep full precision instead of carrying the offset's rounding into the merge.
 * The result does not depend on the number of threads: chunk boundaries and the merge order are
 * fixed. float32 blocks skip the conversion and go through the fused kernels of kernels_f32.c.
 * Values so large that their moments overflow a double (near 1e308) are summed again exactly in
 * long double.
 *
 * A record read in place from a stored zip member has the member's CRC-32 checked in the same
 * pass, chunk by chunk, as metrics.c does. A gathered view (a PyTorch view that is not stored
 * in order) is gathered a chunk at a time into a buffer of that chunk's size, so its stats
 * never need a copy of all it presents, which for an expanded view can be far more than its
 * file (nnp__dump_begin_ranged).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32.h"
#include "compare/compare.h"

#define STATS_CHUNK_ELEMS (1u << 20)
#define STATS_BLOCK_ELEMS 2048u
/* Elements summarised before their CRC is taken, while they are still in the L2 cache. */
#define CRC_SPAN 16384u

typedef struct {
    uint64_t count, finite, nan, pos_inf, neg_inf, zeros;
    double min, max, abs_max;
    double mean, m2; /* of x - shift */
} part;

typedef struct {
    size_t rec;       /* record index in the dump */
    size_t out;       /* index into the caller's arrays */
    uint64_t first;   /* first element */
    uint64_t n;       /* elements */
    double shift;     /* the record's pivot K */
    bool crc;         /* the record's member check is folded into the pass */
} chunk;

typedef struct {
    nnp_dump *dump;
    const void **data;
    chunk *chunks;
    part *parts;
    uint32_t *crcs;   /* per chunk, where chunk.crc */
    bool *no_memory;  /* per chunk: its gathering buffer could not be had */
} stats_job;

static void part_init(part *p)
{
    memset(p, 0, sizeof *p);
    p->min = INFINITY;
    p->max = -INFINITY;
}

/* Chan et al.: merge the finite-value moments of b into a. */
static void part_merge(part *a, const part *b)
{
    if (b->finite) {
        if (!a->finite) {
            a->mean = b->mean;
            a->m2 = b->m2;
        } else {
            double na = (double)a->finite, nb = (double)b->finite, n = na + nb;
            double delta = b->mean - a->mean;
            a->mean += delta * (nb / n);
            a->m2 += b->m2 + delta * delta * (na * nb / n);
        }
        if (b->min < a->min) a->min = b->min;
        if (b->max > a->max) a->max = b->max;
        if (b->abs_max > a->abs_max) a->abs_max = b->abs_max;
    }
    a->count += b->count;
    a->finite += b->finite;
    a->nan += b->nan;
    a->pos_inf += b->pos_inf;
    a->neg_inf += b->neg_inf;
    a->zeros += b->zeros;
}

/* Moments of n finite values. The sums vectorize under -fopenmp-simd; min and max do not (no
 * compiler vectorizes a double min without fast-math), so they get four independent lanes. */
static void finite_block(const double *x, size_t n, double shift, part *p)
{
    double sum = 0, zeros = 0;
#pragma omp simd reduction(+ : sum, zeros)
    for (size_t i = 0; i < n; i++) {
        sum += x[i] - shift;
        zeros += x[i] == 0.0 ? 1.0 : 0.0;
    }
    double mn[4] = {INFINITY, INFINITY, INFINITY, INFINITY};
    double mx[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    double am[4] = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) {
            double v = x[i + k], a = fabs(v);
            mn[k] = v < mn[k] ? v : mn[k];
            mx[k] = v > mx[k] ? v : mx[k];
            am[k] = a > am[k] ? a : am[k];
        }
    for (; i < n; i++) {
        double v = x[i], a = fabs(v);
        mn[0] = v < mn[0] ? v : mn[0];
        mx[0] = v > mx[0] ? v : mx[0];
        am[0] = a > am[0] ? a : am[0];
    }
    for (int k = 1; k < 4; k++) {
        mn[0] = mn[k] < mn[0] ? mn[k] : mn[0];
        mx[0] = mx[k] > mx[0] ? mx[k] : mx[0];
        am[0] = am[k] > am[0] ? am[k] : am[0];
    }
    double mean = sum / (double)n, m2 = 0;
#pragma omp simd reduction(+ : m2)
    for (size_t i = 0; i < n; i++) {
        double dv = (x[i] - shift) - mean;
        m2 += dv * dv;
    }
    part_init(p);
    p->count = p->finite = n;
    p->zeros = (uint64_t)zeros;
    p->min = mn[0];
    p->max = mx[0];
    p->abs_max = am[0];
    p->mean = mean;
    p->m2 = m2;
}

static void summarize_block(double *x, size_t n, double shift, part *acc)
{
    /* v*0 is 0 for every finite v and NaN for NaN and infinities: one cheap test for the block. */
    double probe = 0;
#pragma omp simd reduction(+ : probe)
    for (size_t i = 0; i < n; i++)
        probe += x[i] * 0.0;
    part b;
    if (probe == 0.0) {
        finite_block(x, n, shift, &b);
        part_merge(acc, &b);
        return;
    }
    /* Rare: count the non-finite values and keep only the finite ones. */
    part extra;
    part_init(&extra);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        if (isnan(v))
            extra.nan++;
        else if (isinf(v))
            *(v > 0 ? &extra.pos_inf : &extra.neg_inf) += 1;
        else
            x[kept++] = v;
    }
    extra.count = n - kept;
    part_merge(acc, &extra);
    if (kept) {
        finite_block(x, kept, shift, &b);
        part_merge(acc, &b);
    }
}

static void merge_moments(part *acc, const nnp_block_moments *m)
{
    part b;
    part_init(&b);
    b.count = b.finite = m->n;
    b.zeros = m->zeros;
    b.min = m->min;
    b.max = m->max;
    b.abs_max = m->abs_max;
    b.mean = m->mean;
    b.m2 = m->m2;
    part_merge(acc, &b);
}

static void run_chunk(void *ctx, size_t t)
{
    stats_job *job = ctx;
    const chunk *c = &job->chunks[t];
    const nnp_record *r = nnp_dump_record(job->dump, c->rec);
    size_t es = nnp_dtype_size(r->dtype);
    const unsigned char *base = (const unsigned char *)job->data[c->out] + c->first * es;
    unsigned char *gathered = NULL;
    if (!job->data[c->out]) { /* a view, gathered a chunk at a time */
        if (!(gathered = malloc((size_t)c->n * es))) {
            job->no_memory[t] = true;
            return;
        }
        nnp__dump_read_range(job->dump, c->rec, c->first, c->n, gathered);
        base = gathered;
    }
    /* float32 read in place where it is aligned (a file may place a tensor at any offset) */
    bool direct = r->dtype == NNP_F32 && (uintptr_t)base % sizeof(float) == 0;
    double buf[STATS_BLOCK_ELEMS];
    part acc;
    part_init(&acc);
    nnp__dump_prefetch_range(job->dump, c->rec, c->first * es, c->n * es);
    uint32_t crc = 0;
    uint64_t span = 0; /* the first element not in the CRC yet */
    for (uint64_t done = 0; done < c->n;) {
        size_t n = c->n - done < STATS_BLOCK_ELEMS ? (size_t)(c->n - done) : STATS_BLOCK_ELEMS;
        nnp_block_moments m;
        if (direct && nnp__f32_block_moments((const float *)(const void *)(base + done * es), n,
                                             c->shift, &m)) {
            merge_moments(&acc, &m);
        } else {
            nnp_convert_to_f64(r->dtype, base + done * es, n, buf);
            summarize_block(buf, n, c->shift, &acc);
        }
        done += n;
        if (c->crc && (done - span >= CRC_SPAN || done == c->n)) {
            crc = nnp__crc32(crc, base + span * es, (size_t)(done - span) * es);
            span = done;
        }
    }
    job->crcs[t] = crc;
    free(gathered);
    nnp__dump_release_range(job->dump, c->rec, c->first * es, c->n * es);
    job->parts[t] = acc;
}

/* Mean and population std of the finite elements in long double, whose range no double overflows:
 * for the rare tensors whose double moments overflowed. */
static void exact_moments(const nnp_record *r, const void *data, double *mean, double *std)
{
    size_t es = nnp_dtype_size(r->dtype);
    long double sum = 0, m2 = 0;
    uint64_t n = 0;
    double v;
    for (uint64_t i = 0; i < r->nelem; i++) {
        nnp_convert_to_f64(r->dtype, (const unsigned char *)data + i * es, 1, &v);
        if (isfinite(v)) {
            sum += v;
            n++;
        }
    }
    long double mu = sum / (long double)n;
    for (uint64_t i = 0; i < r->nelem; i++) {
        nnp_convert_to_f64(r->dtype, (const unsigned char *)data + i * es, 1, &v);
        if (isfinite(v))
            m2 += ((long double)v - mu) * ((long double)v - mu);
    }
    *mean = (double)mu;
    *std = (double)sqrtl(m2 / (long double)n);
}

/* K: the first finite element among the first few, else 0. A view read by ranges (data NULL)
 * gives those few first. */
static double pivot(nnp_dump *dump, size_t rec, const nnp_record *r, const void *data)
{
    size_t es = nnp_dtype_size(r->dtype);
    unsigned char head[64 * 16];
    if (!data && r->nelem) {
        nnp__dump_read_range(dump, rec, 0, r->nelem < 64 ? r->nelem : 64, head);
        data = head;
    }
    for (uint64_t i = 0; i < r->nelem && i < 64; i++) {
        double v;
        nnp_convert_to_f64(r->dtype, (const unsigned char *)data + i * es, 1, &v);
        if (isfinite(v))
            return v;
    }
    return 0;
}

nnp_status nnp_stats_compute(nnp_dump *dump, const size_t *idx, size_t n, int threads,
                             nnp_tensor_stats *out)
{
    if (!dump || (n && (!idx || !out)))
        return nnp__fail(NNP_ERR_ARG, "nnp_stats_compute: missing dump, indices or output");
    nnp_status st = NNP_OK;
    const void **data = calloc(n ? n : 1, sizeof *data);
    double *shifts = calloc(n ? n : 1, sizeof *shifts);
    size_t nchunks = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const nnp_record *r = nnp_dump_record(dump, idx[i]);
        if (!r)
            st = nnp__fail(NNP_ERR_ARG, "nnp_stats_compute: no record %zu", idx[i]);
        else
            nchunks += (size_t)((r->nelem + STATS_CHUNK_ELEMS - 1) / STATS_CHUNK_ELEMS);
    }
    chunk *chunks = calloc(nchunks ? nchunks : 1, sizeof *chunks);
    part *parts = calloc(nchunks ? nchunks : 1, sizeof *parts);
    uint32_t *crcs = calloc(nchunks ? nchunks : 1, sizeof *crcs);
    bool *no_memory = calloc(nchunks ? nchunks : 1, sizeof *no_memory);
    if (!st && (!data || !shifts || !chunks || !parts || !crcs || !no_memory))
        st = nnp__nomem();
    size_t c = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const nnp_record *r = nnp_dump_record(dump, idx[i]);
        bool fold = false, ranged;
        /* the pass checks what it reads (nnp__dump_pass_begin); a view it gathers itself */
        if ((st = nnp__dump_begin_ranged(dump, idx[i], &ranged)) ||
            (!ranged && ((st = nnp__dump_data_for_pass(dump, idx[i], &data[i])) ||
                         (st = nnp__dump_pass_begin(dump, idx[i], &fold)))))
            break;
        double shift = shifts[i] = pivot(dump, idx[i], r, data[i]);
        for (uint64_t first = 0; first < r->nelem; first += STATS_CHUNK_ELEMS) {
            uint64_t left = r->nelem - first;
            chunks[c++] = (chunk){idx[i], i, first,
                                  left < STATS_CHUNK_ELEMS ? left : STATS_CHUNK_ELEMS, shift,
                                  fold};
        }
    }
    if (!st) {
        stats_job job = {dump, data, chunks, parts, crcs, no_memory};
        st = nnp__parallel_for(nchunks, threads, run_chunk, &job);
    }
    for (size_t k = 0; k < nchunks && !st; k++)
        if (no_memory[k])
            st = nnp__nomem();
    /* each folded record's chunks, in order: the CRC of its bytes */
    for (size_t k = 0; k < nchunks && !st;) {
        size_t rec = chunks[k].rec, out = chunks[k].out;
        bool fold = chunks[k].crc;
        size_t es = nnp_dtype_size(nnp_dump_record(dump, rec)->dtype);
        uint32_t crc = 0;
        for (; k < nchunks && chunks[k].out == out; k++)
            crc = nnp__crc32_combine(crc, crcs[k], chunks[k].n * es);
        if (fold)
            st = nnp__dump_pass_end(dump, rec, crc);
    }
    if (!st) {
        /* Merge each record's chunks in order: the same sums whatever thread ran them. */
        c = 0;
        for (size_t i = 0; i < n; i++) {
            part acc;
            part_init(&acc);
            while (c < nchunks && chunks[c].out == i)
                part_merge(&acc, &parts[c++]);
            nnp_tensor_stats *s = &out[i];
            s->count = acc.count;
            s->finite = acc.finite;
            s->nan = acc.nan;
            s->pos_inf = acc.pos_inf;
            s->neg_inf = acc.neg_inf;
            s->zeros = acc.zeros;
            bool any = acc.finite > 0;
            s->min = any ? acc.min : NAN;
            s->max = any ? acc.max : NAN;
            s->abs_max = any ? acc.abs_max : NAN;
            s->mean = any ? shifts[i] + acc.mean : NAN;
            s->std = any ? sqrt(acc.m2 / (double)acc.finite) : NAN;
            if (any && (!isfinite(s->mean) || !isfinite(s->std))) {
                /* rare: a view read by ranges is copied whole for this */
                if (!data[i] && (st = nnp_dump_data(dump, idx[i], &data[i])))
                    break;
                exact_moments(nnp_dump_record(dump, idx[i]), data[i], &s->mean, &s->std);
            }
        }
    }
    free(data);
    free(shifts);
    free(chunks);
    free(parts);
    free(crcs);
    free(no_memory);
    return st;
}
