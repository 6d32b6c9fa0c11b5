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
} nnp__value_side;

/* After the values are chained, before structure fills the gaps (value_flow.c): pairs that the
 * dataflow contradicts are moved to the value the counterpart module reads or makes, and a
 * port output of another shape than every value structure could give it is paired with the
 * value its counterpart makes. Values may be split on the port's side (p->ncls grows). */
nnp_status nnp__flow_check(nnp__value_side *r, nnp__value_side *p);

#endif
