/*
 * value_side.h - one side of pairing by evidence as value_align.c builds it, shared with the
 * dataflow checks of value_flow.c: the records taking part, grouped into values (records with
 * the same bytes), and what each value is paired with on the other side.
 */
#ifndef NNP_VALUE_SIDE_H
#define NNP_VALUE_SIDE_H

#include "diff/diff.h"

typedef struct {
    nnp_dump *d;
    const size_t *rec;     /* records, in execution order */
    size_t n;
    nnp_sketch *sk;
    uint32_t *cls;         /* per record: its value (class) */
    size_t ncls;
    uint32_t *first;       /* per value: its first record */
    uint32_t *mstart;      /* per value: its records are members[mstart[c] .. mstart[c + 1]) */
    uint32_t *members;
    int64_t *partner;      /* per value: the other side's value it is paired with, -1 */
    uint8_t *how;          /* per value: how (NNP_EVIDENCE_*) */
    bool *agrees_after;    /* per value: a module reading it makes a paired value */
    bool *in_part;         /* per value: in a group of parts of a fused value (value_parts.c) */
    const double *noise;   /* the reference's side: per dump record, its rel-L2 when computed in
                            * the port's precision (NaN: not known); NULL: no baseline */
} nnp__value_side;

/* The port's values in the order they were made: the dataflow check appends the values it
 * splits off (value_flow.c), so an index no longer says where a value stands. Makes the rank
 * of each value (rank[c]) and the value of each rank (order[k]); the caller frees both, also
 * on failure. */
nnp_status nnp__made_order(const nnp__value_side *p, uint32_t **rank, uint32_t **order);

/* The estimated rel-L2 under which reference value rc and a port value of dtype pd are one
 * value: nnp__value_tol of their dtypes, or, where the baseline measured the reference's noise
 * at rc, twice that noise (at least 5%). */
double nnp__side_tol(const nnp__value_side *r, uint32_t rc, nnp_dtype pd);

/* After the values are chained, before structure fills the gaps (value_flow.c): pairs that the
 * dataflow contradicts are moved to the value the counterpart module reads or makes, and a
 * port output of another shape than every value structure could give it is paired with the
 * value its counterpart makes. Values may be split on the port's side (p->ncls grows). */
nnp_status nnp__flow_check(nnp__value_side *r, nnp__value_side *p);

/* ---- values laid out with their axes in another order (value_transposed.c) ---- */

/* A reference value paired with a port value that holds it with its axes permuted. */
typedef struct nnp__perm_pair {
    uint32_t rc, pc;
    nnp__perm perm;    /* read the reference's value through it to get the port's layout */
    double confidence; /* 1 for equal bytes, 0.9-1 by the estimated distance */
} nnp__perm_pair;

/* The permutations value evidence chose: where a shape alone allows several (a channels-last
 * port with square images: [N, C, H, H] read as [N, H, H, C] two ways), structure takes the
 * one among them that values chose elsewhere in the capture. */
#define NNP__PERMS_CHOSEN 8
typedef struct nnp__perm_set {
    nnp__perm v[NNP__PERMS_CHOSEN];
    size_t n;
} nnp__perm_set;

/* After the value chain: each reference value that nothing paired is read through the
 * permutations that give the shape of unpaired port values near it in execution order (between
 * the pairs around it), fingerprinted and matched as values are (the same bytes, or an
 * estimated rel-L2 under 5%). A pair sets partner and how (NNP_EVIDENCE_VALUE_TRANSPOSED) on
 * both sides; *out (free()) lists them with their permutations, *chosen the permutations. */
nnp_status nnp__pair_transposed(nnp__value_side *r, nnp__value_side *p, nnp__perm_pair **out,
                                size_t *nout, nnp__perm_set *chosen);

/* Structure's share, for one gap between paired values: a port item whose shape is, and only
 * is, a permutation of one shape that the gap's reference items hold, where neither side holds
 * the other's shape, may stand for that shape: shape[k] is then the reference shape the port
 * item pk is aligned as, perm[k] the permutation (one the shapes leave no doubt about, or the
 * one of several that values chose); shape[k] NULL otherwise. */
nnp_status nnp__gap_perms(const nnp__align_item *ri, size_t nr, const nnp__align_item *pi,
                          size_t np, const nnp__perm_set *chosen, const uint64_t **shape,
                          nnp__perm *perm);

#endif
