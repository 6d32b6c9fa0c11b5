/*
 * diff.h - the stages of a diff: rules and what a name maps to, the adapters that bring layouts
 * together, pairing, automatic alignment and the rules written from it, verdicts.
 */
#ifndef NNP_DIFF_H
#define NNP_DIFF_H

#include "compare/compare.h"
#include "compare/explain.h"

/* The result of a diff (opaque in nnparity.h: callers read it through accessors, diff.c). */
struct nnp_diff {
    nnp_diff_pair *pairs;   /* in the reference's execution order */
    size_t npairs;
    size_t *unmatched_ref, nunmatched_ref;   /* reference records with no port record */
    size_t *unmatched_port, nunmatched_port; /* port records with no reference record (and not
                                              * ignored by the rules) */
    int64_t first_divergence; /* see the accessors of the same names */
    int64_t order_violation;
    int64_t nonfinite_origin;
    size_t naligned;          /* pairs made by automatic alignment */
    void *owned;              /* pairing's: shapes and texts the pairs point to */
    size_t rank0_default;
    nnp_collision *collisions; /* renames that met, in the port's order (owned, like the pairs) */
    size_t ncollisions;
    /* from pairing by evidence (NULL without): per record, the seq of the first record of the
     * same dump that holds its value (the order check looks at values, not at their names);
     * per port record, a reference record of its value (SIZE_MAX: none), for the rules */
    uint64_t *ref_value_seq, *port_value_seq;
    size_t *port_value_ref;
    nnp_culprit culprit;      /* culprit.c */
    char *culprit_module;
    nnp__explained **explained; /* per pair: where its error lies and hints (explain.c); NULL */
    /* per pair, while explanations are made: its explanation's status, and whether it is made
     * (explain.c); NULL */
    nnp_status *explain_status;
    bool *explain_done;
};

/* ---- rules: what a name maps to (rules.c) and the adapters that bring layouts together
 * (adapt.c) ---- */

#define NNP_ADAPT_MAX_DIMS 16

typedef enum nnp_op_kind {
    NNP_OP_TRANSPOSE, /* permute the axes as dims[0..n) says (n 0: reverse them) */
    NNP_OP_RESHAPE,   /* to dims[0..n), one of them may be -1 (n 0: the other side's shape) */
    NNP_OP_SLICE,     /* [start, end) along axis; negative from the end, end INT64_MAX: to it */
    NNP_OP_PART,      /* part `start` of `end` equal parts along axis */
    NNP_OP_SELECT,    /* index `start` along axis, dropping the axis */
    NNP_OP_CAST,      /* round to dtype */
    NNP_OP_ROTARY     /* undo llama.cpp's q/k row permutation for `start` heads */
} nnp_op_kind;

typedef struct nnp_op {
    nnp_op_kind kind;
    bool on_ref;      /* applies to the reference's tensor of the pair, not the port's */
    uint32_t n;
    int64_t dims[NNP_ADAPT_MAX_DIMS];
    int64_t axis, start, end;
    nnp_dtype dtype;
} nnp_op;

/* Where one port record goes: the reference name, the adapters in rule order, a tolerance given
 * by a rule, and, when it is one part of a record the reference holds fused, which part. */
/* How a `gather` rule joins the copies of a name that several ranks of a rank capture hold
 * (docs/scale.md). */
enum { NNP_GATHER_NONE = 0, NNP_GATHER_CONCAT, NNP_GATHER_SUM, NNP_GATHER_RANK0 };

typedef struct nnp_mapping {
    char *name;
    nnp_op *ops;
    size_t nops;
    bool has_tolerance;
    double atol, rtol;
    uint32_t part, nparts; /* nparts 0: not a part */
    int64_t join_axis;
    bool join_sum;         /* the parts are summed, not joined along join_axis */
    int gather;            /* NNP_GATHER_*: the first gather rule that matched the name */
    int64_t gather_axis;
} nnp_mapping;

/* Map a name through every rule: *n mappings (0: ignored; more than one: a split). */
nnp_status nnp__rules_apply(const nnp_rules *rules, const char *name, nnp_mapping **out,
                            size_t *n);
void nnp__mappings_free(nnp_mapping *m, size_t n);
/* Match the rules about reference record names (`ref ignore`, `component`) against one, as it
 * is: *ignored when a `ref ignore` rule drops it; an error when a regex reaches a limit. */
nnp_status nnp__rules_check_ref(const nnp_rules *rules, const char *name, bool *ignored);
/* The component the last `component` rule matching this reference record name gives it, or
 * NNP_COMPONENT_COUNT when none matches (NULL rules: none). */
nnp_component_kind nnp__rules_component(const nnp_rules *rules, const char *name);
/* How an adapter reads in a rules file ("transpose 1,0", "ref select 1 -1", "part 2/3 of axis 0"). */
void nnp__op_describe(nnp_sbuf *b, const nnp_op *op);

/* ---- components (component.c): the one table of their names ---- */

/* The component named by the n bytes at s ("mlp"), or NNP_COMPONENT_COUNT when none is. */
nnp_component_kind nnp__component_parse(const char *s, size_t n);
/* Every component's name, for messages: "embedding, attention, ..., head or other". */
void nnp__component_list(char *buf, size_t n);

/* A tensor in C order: its bytes are `data` (NULL: only the shape is known), a copy owned here
 * when `owned` is set. */
typedef struct nnp_tensor {
    nnp_dtype dtype;
    uint32_t ndim;
    uint64_t shape[NNP_ADAPT_MAX_DIMS];
    uint64_t nelem;
    const void *data;
    void *owned;
} nnp_tensor;

/* Apply the ops of one side (on_ref) in order. `other` is the other side's tensor (its shape is
 * what `reshape` without dims takes). An adapter that does not fit is NNP_ERR_ARG saying why;
 * t->data is then NULL. With t->data NULL only the shape is worked out. */
nnp_status nnp__adapt(nnp_tensor *t, const nnp_op *ops, size_t nops, bool on_ref,
                      const nnp_tensor *other);
/* Join n parts along axis into a new tensor (shape only when the parts have no data). */
nnp_status nnp__concat(const nnp_tensor *parts, size_t n, int64_t axis, nnp_tensor *out);
void nnp__tensor_free(nnp_tensor *t);
/* A pair compared element for element: neither a shape nor a dtype mismatch (NULL: not). */
static inline bool nnp__pair_compared(const nnp_diff_pair *p)
{
    return p && p->verdict != NNP_SHAPE_MISMATCH && p->verdict != NNP_DTYPE_MISMATCH;
}
/* A pair that fails: verdict fail, shape or dtype (NULL: not). */
static inline bool nnp__pair_fails(const nnp_diff_pair *p)
{
    return p && p->verdict != NNP_PASS && p->verdict != NNP_WARN;
}
/* The module a record belongs to: its module path, or its name when the file has none. */
static inline const char *nnp__module_of(const nnp_record *r)
{
    return *r->module ? r->module : r->name;
}
/* One module call: its module and call index, hashed (culprit.c, noise_floor.c). */
static inline uint64_t nnp__call_key(const nnp_record *r)
{
    return nnp__hash_combine(nnp__hash_str(nnp__module_of(r)), r->call);
}
/* A layer input's role: "in0", "in1", ... (not "ids", not "input_scale"). */
static inline bool nnp__is_input_role(const char *role)
{
    return role && role[0] == 'i' && role[1] == 'n' && role[2] >= '0' && role[2] <= '9';
}
/* The axis along which a decoder with a cache holds one row where a reference that re-runs the
 * prefix holds them all: the one before the last ([B, T, D] activations, [B, H, T, T] scores),
 * the last of a 2-d tensor of integers ([B, T] token ids and positions); -1 for fewer axes. */
int nnp__sequence_axis(uint32_t ndim, nnp_dtype dtype);
/* Whether port shape q is reference shape r cut to one row along the sequence axis (r has more
 * than one there, every other axis equal, the same dtype class). */
bool nnp__is_one_row_of(uint32_t qdim, const uint64_t *q, nnp_dtype qdtype, uint32_t rdim,
                        const uint64_t *r, nnp_dtype rdtype);

/* ---- pairing (pairing.c) and automatic alignment (match.c) ---- */

/* Pair the records of a diff (d->pairs, unmatched lists, d->owned): by the names the rules give,
 * joining parts, then by alignment; shapes after the adapters, verdicts for what cannot be
 * compared, tolerances. */
nnp_status nnp__pair_records(nnp_dump *ref, nnp_dump *port, const nnp_diff_options *opts,
                             nnp_diff *d);
/* Both sides of pair i with their data, as the adapters leave them (for adapted pairs); free with
 * nnp__tensor_free. */
nnp_status nnp__pair_tensors(const nnp_diff *d, size_t i, nnp_dump *ref, nnp_dump *port,
                             nnp_tensor *rt, nnp_tensor *pt);
void nnp__pairing_free(void *owned);

typedef struct nnp__align_item {
    const char *name;       /* record name, e.g. "blk.3.attn_q/out0" */
    const char *role;       /* "out0", "in0", "weight", ... ("" if unknown) */
    uint32_t ndim;
    const uint64_t *shape;
    nnp_dtype dtype;
    const nnp_sketch_part *values; /* the values' sketch, or NULL: with both sides', how alike
                                    * the values are breaks ties between equal structures */
} nnp__align_item;

/* Items are given in execution order. On return port_to_ref[j] is the index into ref of the
 * record port[j] is aligned with, or -1. The result is one-to-one and monotonic (if port j<k
 * are both aligned, their ref indices increase). score[j] (may be NULL) in [0,1] says how sure. */
nnp_status nnp__align(const nnp__align_item *ref, size_t nref, const nnp__align_item *port,
                      size_t nport, int64_t *port_to_ref, double *score);
/* Axes a reference value is read through to meet the port's layout (value_transposed.c): the
 * port's axis k is the reference's axis axes[k], so the port's shape is the reference's shape
 * permuted ([B, H, T, D] read as [B, T, H, D]: 0,2,1,3). n 0: none. */
#define NNP_PERM_MAX_DIMS 5
typedef struct nnp__perm {
    uint8_t n;
    uint8_t axes[NNP_PERM_MAX_DIMS];
} nnp__perm;

/* A pair made by evidence (value_align.c): record indices in the two dumps. */
typedef struct nnp__value_pair {
    size_t ref, port;
    uint8_t how;       /* nnp_evidence */
    double confidence;
    uint8_t part, nparts; /* nparts > 0: one side is the fused one, compared through its part
                           * `part` of nparts along the last axis (value_parts.c) */
    bool ref_fused;       /* ... the reference's side (else the port's) */
    bool last_row;        /* the reference's last row against the port's one row */
    nnp__perm perm;       /* the reference's axes permuted into the port's layout */
} nnp__value_pair;

/* One side of pairing by evidence, as value_parts.c reads it: its values (value_align.c). */
typedef struct nnp__parts_side {
    nnp_dump *d;
    const size_t *rec;      /* the records taking part, in execution order */
    const nnp_sketch *sk;   /* per record */
    const uint32_t *first;  /* per value: its first record */
    size_t ncls;            /* values, numbered in the order they are first made */
    const int64_t *partner; /* per value: the other side's value paired by value, or -1 */
} nnp__parts_side;

/* A value of one side paired with part `part` of nparts of a fused value of the other. */
typedef struct nnp__part_pair {
    uint32_t rc, pc;      /* the reference's value and the port's */
    uint8_t part, nparts;
    bool ref_fused;       /* the reference's value is the fused one (else the port's) */
    bool last_row;        /* the port's one row against the reference's last */
    bool by_value;        /* it holds that part (else it is paired on structure: order, shape) */
    double confidence;    /* 0.9-1 by value; at most 0.5 on structure, less the fewer members
                           * of its group hold a part */
} nnp__part_pair;

/* Pair fused values that nothing paired with the other side's values that are their parts
 * (value_parts.c). ref_taken and port_taken (per value, false on entry) say which values a
 * group took: the fused one and its members. *out: free(). */
nnp_status nnp__pair_parts(const nnp__parts_side *ref, const nnp__parts_side *port,
                           bool *ref_taken, bool *port_taken, nnp__part_pair **out, size_t *nout);

/* What pairing by evidence found; the arrays are the caller's, one entry per record given. */
typedef struct nnp__value_result {
    nnp__value_pair *pairs; /* free() */
    size_t npairs;
    bool *port_covered;     /* the port record's value was paired (through another record of it,
                             * perhaps) */
    size_t *port_value_ref; /* a reference record holding the port record's value; SIZE_MAX */
    uint64_t *ref_first, *port_first; /* the seq of the first record holding the same value */
} nnp__value_result;

/* Pair the records ref_recs[0..nref) and port_recs[0..nport) (each in execution order; the port's
 * under the names the rules gave, port_names[k] for port_recs[k]) by value, then, with
 * `structure`, by structure where no value agrees (value_align.c). Several reference records
 * may share a port record when they are one value. */
nnp_status nnp__align_values(nnp_dump *ref, const size_t *ref_recs, size_t nref, nnp_dump *port,
                             const size_t *port_recs, size_t nport, const char *const *port_names,
                             const double *ref_noise, int threads, bool structure,
                             nnp__value_result *res);
/* Rules text that renames each port_names[i] to ref_names[i], generalized where that is safe;
 * it round-trips through nnp_rules_parse and nnp_rules_map. */
nnp_status nnp__align_rules(const char *const *port_names, const char *const *ref_names, size_t n,
                            nnp_sbuf *out);

/* ---- the stages of a diff (diff.c), shared with the distributed diff (distrib.c) ---- */

/* pass, warn or fail from a compared pair's metrics */
void nnp__diff_verdict(nnp_diff_pair *p);
/* Once every pair is compared: the first divergence, the order check, where NaN/Inf start. */
nnp_status nnp__diff_conclude(nnp_diff *d, nnp_dump *port);
/* Where each failing pair's error lies and what explains it (explain.c): the arrays the
 * explanations go to, before any is made; one pair's explanation, once it is compared, with a
 * scratch of the calling thread's (its status kept for nnp__diff_explain); and, once every pair
 * is compared, the explanations not made yet and the first error of any. */
nnp_status nnp__diff_explain_begin(nnp_diff *d);
void nnp__diff_explain_pair(nnp_diff *d, nnp_dump *ref, nnp_dump *port, size_t i,
                            nnp__xscratch *scratch);
nnp_status nnp__diff_explain(nnp_diff *d, nnp_dump *ref, nnp_dump *port, int threads);
/* Whether pair p has values an explanation reads (either side is of a float dtype). */
bool nnp__diff_pair_explainable(const nnp_diff_pair *p);
/* The same for pairs `which` (n of them), compared already. */
nnp_status nnp__diff_explain_some(nnp_diff *d, nnp_dump *ref, nnp_dump *port, int threads,
                                  const size_t *which, size_t n);
void nnp__diff_explained_free(nnp_diff *d);
/* Who makes the first divergence (culprit.c), once it is known. */
nnp_status nnp__diff_culprit(nnp_diff *d, nnp_dump *ref, nnp_dump *port);
/* Who makes the divergence at pair `first`, the pairs that agree being those `agrees` marks
 * (NULL: those that pass or warn); *module (the culprit's port_module) is the caller's to
 * free. */
nnp_status nnp__culprit_of(const nnp_diff *d, const nnp_dump *ref, const nnp_dump *port,
                           size_t first, const bool *agrees, nnp_culprit *out, char **module);

/* Pairing by evidence: the estimated rel-L2 under which a record of dtype a and one of dtype b
 * hold one value (value_align.c says why these), the widest it is for any dtypes, and how sure
 * a value pair at distance `dist` is (0.9 at the tolerance, 1 at no distance). */
double nnp__value_tol(nnp_dtype a, nnp_dtype b);
#define NNP__VALUE_TOL_MAX 0.25
double nnp__value_confidence(double dist, double tol);

/* noise_floor.c: per reference record (rows[i] its attribution row, n of them), the largest
 * error the injected baseline makes over the span of reference records that the port's module
 * there computes from its inputs; known false where the baseline compared none. */
typedef struct {
    double rel_l2, max_abs;
    bool known;
} nnp__floor;
nnp_status nnp__injected_floors(const nnp_dump *port, const nnp_diff *std,
                                const nnp_dump *injected, const nnp_diff *inj,
                                const nnp_diff *base_inj, const nnp_attribution_row *rows,
                                size_t n, nnp__floor *out);

#endif /* NNP_DIFF_H */
