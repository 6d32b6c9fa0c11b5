/*
 * noise_floor.c - how much a port in lower precision may differ from the reference under
 * injection at each reference record, from the baseline (the reference run in that precision,
 * each module fed the reference's inputs).
 *
 * The baseline's error at a record is the noise of that record's module alone. A port's module
 * may span several of the reference's (a convolution with its BatchNorm folded in, a patch
 * embedding that also adds the positions, a whole block): fed the reference's values at its
 * inputs, it computes every reference step from there to its output, and its noise is that of
 * the span. So the floor of a record is the largest baseline error over the span: the reference
 * records after the earliest of the port module's inputs, up to the record itself. Composing
 * the span's steps can add up to about the square root of their number times the largest; the
 * factor the floor is applied with (NNP_PRECISION_FACTOR) leaves room for that.
 */
#include <stdlib.h>

#include "diff/diff.h"

typedef struct {
    uint64_t key; /* module and call */
    size_t rec;
} keyed_input;

static int by_key(const void *a, const void *b)
{
    const keyed_input *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key ? 1 : x->rec < y->rec ? -1 : x->rec > y->rec;
}


nnp_status nnp__injected_floors(const nnp_dump *port, const nnp_diff *std,
                                const nnp_dump *injected, const nnp_diff *inj,
                                const nnp_diff *base_inj, const nnp_attribution_row *rows,
                                size_t n, nnp__floor *out)
{
    size_t nrec = nnp_dump_count(port);
    keyed_input *in = malloc((nrec ? nrec : 1) * sizeof *in);
    int64_t *value_ref = malloc((nrec ? nrec : 1) * sizeof *value_ref);
    if (!in || !value_ref) {
        free(in);
        free(value_ref);
        return nnp__nomem();
    }
    /* the inputs of the port's module calls, by call: the standard capture's, which pairing
     * grouped into values (the injected capture holds the same records, by name) */
    size_t nin = 0;
    for (size_t i = 0; i < nrec; i++) {
        const nnp_record *r = nnp_dump_record(port, i);
        if (nnp__is_input_role(r->role))
            in[nin++] = (keyed_input){nnp__call_key(r), i};
    }
    qsort(in, nin, sizeof *in, by_key);
    /* the earliest reference record of each port value */
    const uint64_t *vseq = std->port_value_seq;
    for (size_t i = 0; i < nrec; i++)
        value_ref[i] = -1;
    for (size_t i = 0; i < std->npairs; i++) {
        size_t v = vseq ? (size_t)vseq[std->pairs[i].port] : std->pairs[i].port;
        if (value_ref[v] < 0 || (int64_t)std->pairs[i].ref < value_ref[v])
            value_ref[v] = (int64_t)std->pairs[i].ref;
    }
    for (size_t row = 0; row < n; row++) {
        out[row] = (nnp__floor){0, 0, false};
        int64_t lo = (int64_t)row - 1; /* without a span: the record's own module */
        /* the port module that made the record under injection */
        const nnp_record *q =
            rows[row].inj_pair >= 0
                ? nnp_dump_record(injected, inj->pairs[rows[row].inj_pair].port)
            : rows[row].std_pair >= 0 ? nnp_dump_record(port, std->pairs[rows[row].std_pair].port)
                                      : NULL;
        if (q) {
            uint64_t key = nnp__call_key(q);
            size_t a = nnp__first_key_from(in, nin, sizeof *in, key);
            for (; a < nin && in[a].key == key; a++) {
                size_t v = vseq ? (size_t)vseq[in[a].rec] : in[a].rec;
                if (value_ref[v] >= 0 && value_ref[v] < lo)
                    lo = value_ref[v];
            }
        }
        for (int64_t k = lo + 1; k <= (int64_t)row; k++) {
            const nnp_diff_pair *b = rows[k].base_inj_pair >= 0
                                         ? &base_inj->pairs[rows[k].base_inj_pair]
                                         : NULL;
            if (!nnp__pair_compared(b))
                continue;
            out[row].known = true;
            if (b->metrics.rel_l2 > out[row].rel_l2)
                out[row].rel_l2 = b->metrics.rel_l2;
            if (b->metrics.max_abs > out[row].max_abs)
                out[row].max_abs = b->metrics.max_abs;
        }
    }
    free(in);
    free(value_ref);
    return NNP_OK;
}
