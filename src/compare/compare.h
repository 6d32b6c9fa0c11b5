/*
 * compare.h - the comparing pass over two sides that may live in dumps, whole or cut at its
 * chunks for processes that share a tensor (the distributed diff).
 */
#ifndef NNP_COMPARE_H
#define NNP_COMPARE_H

#include "dump/dump.h"
#include "kernels/kernels.h"

/* One side of a comparison: n elements of `dtype` at `data`. When `dump` is set, `data` is what
 * nnp_dump_data gave for its record `rec`: the pass then releases each chunk's mapped pages
 * once compared, so that comparing a tensor of any size keeps only the chunks in flight
 * resident (the page cache keeps the file). NULL: memory the caller owns, left alone. `data`
 * NULL with `dump` set: a record nnp__dump_begin_ranged allowed to be read by ranges (a view),
 * which the pass gathers a chunk at a time into buffers of its own. */
typedef struct nnp_cmp_side {
    nnp_dtype dtype;
    const void *data;
    nnp_dump *dump;
    size_t rec;
} nnp_cmp_side;

/* nnp_compare over two sides that may live in dumps (above). */
nnp_status nnp__compare_sides(const nnp_cmp_side *ref, const nnp_cmp_side *port, uint64_t n,
                              const nnp_compare_options *opts, nnp_metrics *out);
/* The same, leaving the pages it compares to the caller to give back (nnp_dump_release) when
 * `keep`: for an explanation that reads them again soon (diff.c). */
nnp_status nnp__compare_sides_keep(const nnp_cmp_side *ref, const nnp_cmp_side *port, uint64_t n,
                                   const nnp_compare_options *opts, bool keep, nnp_metrics *out);

/* Compare record `ref_rec` of `ref` with record `port_rec` of `port` (the same number of
 * elements, any dtypes, as nnp_compare), releasing each chunk's mapped pages behind the scan
 * and both records' remaining pages at the end. What `nnparity diff` calls per pair: its
 * resident size stays a few chunks whatever the dump's size. */
nnp_status nnp__compare_records(nnp_dump *ref, size_t ref_rec, nnp_dump *port, size_t port_rec,
                                const nnp_compare_options *opts, nnp_metrics *out);

/* The comparing pass cut at its chunks, for processes that share a tensor's chunks
 * (distrib.c): chunk `chunk` of n elements (nnp__cmp_chunk_elems() each, the last one shorter)
 * into `partial` (nnp__cmp_partial_size() bytes of plain data), releasing its pages as
 * nnp__compare_sides does; nnp__compare_merge then merges the partials of every chunk, in
 * chunk order, into the same metrics as nnp__compare_sides gives, bit for bit. */
size_t nnp__cmp_partial_size(void);
uint64_t nnp__cmp_chunk_elems(void);
void nnp__compare_chunk(const nnp_cmp_side *ref, const nnp_cmp_side *port, uint64_t n,
                        double atol, double rtol, uint64_t chunk, void *partial);
void nnp__compare_merge(const void *partials, size_t nchunks, nnp_metrics *out);

#endif /* NNP_COMPARE_H */
