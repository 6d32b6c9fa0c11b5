/*
 * value_parts.c - pairing by evidence when one side computes in one record what the other
 * computes in several: a fused projection whose last axis holds q, k and v side by side (or gate
 * and up) against separate ones. The whole values never meet (their shapes differ), so the
 * fused value is cut into its n parts along the last axis and each part is fingerprinted and
 * matched as a whole value would be (value_align.c): the same bytes, or an estimated rel-L2
 * under the value tolerance (nnp__value_tol) over the same elements, or against the last row
 * of a sequence.
 *
 * Only values that could be parts are read: an unpaired fused value whose last axis is n times
 * (n = 2, 3, 4) another value's with the leading axes equal, that other value made near it in
 * execution order (right after what precedes the fused value on its own side). So reading costs
 * at most one pass over the values that could be fused.
 *
 * A group is n values of the other side, consecutive among its shape-compatible values there,
 * each paired with the part of the same index: parts keep their order (q before k before v in
 * the fused layout and in the code that computes them apart). The group is chosen on evidence:
 * the most members that hold some part of the fused value, then the most that hold their own
 * part. A member that holds its own part is a value pair; one that holds another part or none
 * is a structure pair and fails, which is what a port that swapped two parts' weights looks like
 * (the values are right but in the wrong place); a member that holds neither and already has a
 * partner by value is something else, and the group is not made.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"
#include "kernels/kernels.h"

#define MAX_PARTS 4     /* q, k, v (and a fourth, as gate/up pairs come two or four at a time) */
#define NEAR_SCAN 256   /* values of the other side looked at after the fused value's anchor */
#define NEAR_KEEP 16    /* shape-compatible values kept of those */

/* How two shapes meet as a part: 0 not, 1 the same rows, 2 one row against the fused or parts
 * side's last row (mode says which side holds the rows). */
enum { MEET_NONE = 0, MEET_SAME, MEET_LAST_ROW };

/* Whether `part` (the parts side) is one of n parts of `fused` along the last axis, and how:
 * the leading axes equal, or the port's one row against the reference's last. port_is_fused
 * says which of the two is the port's. */
static int meets(const nnp_record *fused, const nnp_record *part, bool port_is_fused,
                 uint32_t *n_out)
{
    uint32_t nd = fused->ndim;
    if (nd < 1 || part->ndim != nd || nd > NNP_ADAPT_MAX_DIMS)
        return MEET_NONE;
    uint64_t D = fused->shape[nd - 1], d = part->shape[nd - 1];
    if (d < 2 || D % d || D / d < 2 || D / d > MAX_PARTS)
        return MEET_NONE;
    if (nnp_dtype_class_of(fused->dtype) != NNP_CLASS_FLOAT ||
        nnp_dtype_class_of(part->dtype) != NNP_CLASS_FLOAT)
        return MEET_NONE;
    *n_out = (uint32_t)(D / d);
    bool same = true;
    for (uint32_t k = 0; k + 1 < nd && same; k++)
        same = fused->shape[k] == part->shape[k];
    if (same)
        return MEET_SAME;
    if (nd < 2)
        return MEET_NONE;
    /* the port decodes one row; the reference re-ran the sequence */
    const nnp_record *port = port_is_fused ? fused : part, *ref = port_is_fused ? part : fused;
    if (port->shape[nd - 2] != 1 || ref->shape[nd - 2] < 2)
        return MEET_NONE;
    for (uint32_t k = 0; k + 2 < nd; k++)
        if (fused->shape[k] != part->shape[k])
            return MEET_NONE;
    return MEET_LAST_ROW;
}

/* The fingerprints of the n parts of record i along its last axis: its slice copied whole, one
 * part at a time, into a buffer of one part's size. */
static nnp_status sketch_parts(nnp_dump *dump, size_t i, uint32_t n, nnp_sketch *out)
{
    const nnp_record *q = nnp_dump_record(dump, i);
    const void *data;
    nnp_status st = nnp_dump_data(dump, i, &data);
    if (st)
        return st;
    size_t es = nnp_dtype_size(q->dtype);
    uint64_t D = q->shape[q->ndim - 1], d = D / n, rows = q->nelem / (D ? D : 1);
    unsigned char *buf = malloc(q->nbytes / n + 1);
    if (!buf) {
        nnp_dump_release(dump, i);
        return nnp__nomem();
    }
    uint64_t shape[NNP_ADAPT_MAX_DIMS];
    memcpy(shape, q->shape, q->ndim * sizeof *shape);
    shape[q->ndim - 1] = d;
    for (uint32_t k = 0; k < n; k++) {
        for (uint64_t r = 0; r < rows; r++)
            memcpy(buf + r * d * es, (const unsigned char *)data + (r * D + k * d) * es, d * es);
        nnp__sketch_tensor(q->dtype, q->ndim, shape, buf, rows * d, &out[k]);
    }
    free(buf);
    nnp_dump_release(dump, i);
    return NNP_OK;
}

/* How far a parts-side value is from part k (its fingerprint pk), or -1 when it is not that
 * part. The port's whole tensor meets the reference's part or its last row. */
static double part_distance(const nnp_sketch *pk, const nnp_sketch *other, int meet,
                            bool port_is_fused, double tol)
{
    if (meet == MEET_SAME && pk->hash == other->hash)
        return 0;
    const nnp_sketch_part *a, *b; /* a: the port's, b: the reference's */
    if (port_is_fused) {
        a = &pk->all;
        b = meet == MEET_LAST_ROW ? (other->has_last ? &other->last : NULL) : &other->all;
    } else {
        a = &other->all;
        b = meet == MEET_LAST_ROW ? (pk->has_last ? &pk->last : NULL) : &pk->all;
    }
    double dist;
    if (!b || b->norm <= 0 || a->norm <= 0 || !nnp__sketch_distance(a, b, &dist, NULL) ||
        !(dist <= tol))
        return -1;
    return dist;
}

/* The parts side's values near fused value f, in execution order: after `from` (the other
 * side's partner of the last paired value before f, -1: none), shape-compatible, not yet in a
 * group. */
static size_t near_values(const nnp__parts_side *F, const nnp__parts_side *S, uint32_t f,
                          int64_t from, bool port_is_fused, const bool *s_taken, uint32_t *out,
                          int *meet, uint32_t *nparts)
{
    const nnp_record *fr = nnp_dump_record(F->d, F->rec[F->first[f]]);
    size_t n = 0;
    for (size_t c = (size_t)(from + 1), seen = 0;
         c < S->ncls && seen < NEAR_SCAN && n < NEAR_KEEP; c++, seen++) {
        if (s_taken[c])
            continue;
        uint32_t k;
        int m = meets(fr, nnp_dump_record(S->d, S->rec[S->first[c]]), port_is_fused, &k);
        if (m == MEET_NONE)
            continue;
        out[n] = (uint32_t)c;
        meet[n] = m;
        nparts[n++] = k;
    }
    return n;
}

typedef struct {
    nnp__part_pair *v;
    size_t n, cap;
} part_list;

static nnp_status push(part_list *l, nnp__part_pair x)
{
    if (!nnp__grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v))
        return nnp__nomem();
    l->v[l->n++] = x;
    return NNP_OK;
}

/* As value_align.c's: equal bytes 1, values 0.9-1 by their distance; a member that does not
 * hold its own part is believed as far as its group is: half the share of members holding a
 * part. */
static double part_confidence(double dist, int any, uint32_t n, double tol)
{
    if (dist < 0)
        return 0.5 * any / n;
    return dist == 0 ? 1.0 : nnp__value_confidence(dist, tol);
}

/* Fused value f of side F against side S: the best group, if any, into l. */
static nnp_status group_one(const nnp__parts_side *F, const nnp__parts_side *S, uint32_t f,
                            int64_t from, bool port_is_fused, bool *f_taken, bool *s_taken,
                            part_list *l)
{
    uint32_t cand[NEAR_KEEP], cn[NEAR_KEEP];
    int meet[NEAR_KEEP];
    size_t nc = near_values(F, S, f, from, port_is_fused, s_taken, cand, meet, cn);
    uint32_t best_n = 0, best_member[MAX_PARTS];
    int best_any = 0, best_own = 0, best_meet[MAX_PARTS];
    double best_dist[MAX_PARTS];
    for (uint32_t n = 2; n <= MAX_PARTS; n++) {
        uint32_t idx[NEAR_KEEP];
        size_t m = 0;
        for (size_t j = 0; j < nc; j++)
            if (cn[j] == n)
                idx[m++] = (uint32_t)j;
        if (m < n)
            continue;
        nnp_sketch pk[MAX_PARTS];
        nnp_status st = sketch_parts(F->d, F->rec[F->first[f]], n, pk);
        if (st)
            return st;
        nnp_dtype fd = nnp_dump_record(F->d, F->rec[F->first[f]])->dtype;
        /* dist[j][k]: compatible value j against part k, -1 where it is not that part */
        double dist[NEAR_KEEP][MAX_PARTS];
        for (size_t j = 0; j < m; j++)
            for (uint32_t k = 0; k < n; k++)
                dist[j][k] = part_distance(
                    &pk[k], &S->sk[S->first[cand[idx[j]]]], meet[idx[j]], port_is_fused,
                    nnp__value_tol(fd, nnp_dump_record(S->d, S->rec[S->first[cand[idx[j]]]])
                                           ->dtype));
        for (size_t w = 0; w + n <= m; w++) {
            int any = 0, own = 0;
            bool ok = true;
            for (uint32_t k = 0; k < n && ok; k++) {
                bool some = false;
                for (uint32_t q = 0; q < n; q++)
                    some |= dist[w + k][q] >= 0;
                any += some;
                own += dist[w + k][k] >= 0;
                /* a value paired elsewhere that holds no part is not one of them */
                if (!some && S->partner[cand[idx[w + k]]] >= 0)
                    ok = false;
            }
            if (!ok || !any || any < best_any || (any == best_any && own <= best_own))
                continue;
            best_n = n;
            best_any = any;
            best_own = own;
            for (uint32_t k = 0; k < n; k++) {
                best_member[k] = cand[idx[w + k]];
                best_meet[k] = meet[idx[w + k]];
                best_dist[k] = dist[w + k][k];
            }
        }
    }
    nnp_status st = NNP_OK;
    for (uint32_t k = 0; k < best_n && !st; k++) {
        uint32_t fc = f, sc = best_member[k];
        s_taken[sc] = true;
        st = push(l, (nnp__part_pair){.rc = port_is_fused ? sc : fc,
                                      .pc = port_is_fused ? fc : sc,
                                      .part = (uint8_t)k,
                                      .nparts = (uint8_t)best_n,
                                      .ref_fused = !port_is_fused,
                                      .last_row = best_meet[k] == MEET_LAST_ROW,
                                      .by_value = best_dist[k] >= 0,
                                      .confidence = part_confidence(
                                          best_dist[k], best_any, best_n,
                                          nnp__value_tol(
                                              nnp_dump_record(F->d, F->rec[F->first[f]])->dtype,
                                              nnp_dump_record(S->d, S->rec[S->first[sc]])
                                                  ->dtype))});
    }
    if (best_n)
        f_taken[f] = true;
    return st;
}

/* Every fused value of side F without a partner, in F's execution order. */
static nnp_status group_side(const nnp__parts_side *F, const nnp__parts_side *S,
                             bool port_is_fused, bool *f_taken, bool *s_taken, part_list *l)
{
    nnp_status st = NNP_OK;
    int64_t from = -1; /* the partner of the last paired value so far */
    for (uint32_t f = 0; f < F->ncls && !st; f++) {
        if (F->partner[f] >= 0)
            from = F->partner[f];
        else if (!f_taken[f])
            st = group_one(F, S, f, from, port_is_fused, f_taken, s_taken, l);
    }
    return st;
}

nnp_status nnp__pair_parts(const nnp__parts_side *ref, const nnp__parts_side *port,
                           bool *ref_taken, bool *port_taken, nnp__part_pair **out, size_t *nout)
{
    part_list l = {0};
    nnp_status st = group_side(ref, port, false, ref_taken, port_taken, &l);
    if (!st)
        st = group_side(port, ref, true, port_taken, ref_taken, &l);
    if (st) {
        free(l.v);
        l.v = NULL;
        l.n = 0;
    }
    *out = l.v;
    *nout = l.n;
    return st;
}
