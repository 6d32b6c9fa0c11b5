/*
 * npy.h - the npy header parser that npy.c shares with the npz reader, which meets the same
 * header inside archive members (in place when stored, inflated when deflated).
 */
#ifndef NNP_FORMATS_NPY_H
#define NNP_FORMATS_NPY_H

#include "formats/formats.h"

/* numpy 2 allows 64 dimensions (numpy 1: 32); dump.c converts Fortran order up to 64 too. */
#define NNP_NPY_MAX_DIMS 64

/* Bytes that always hold the preamble (magic, version, header length) when the npy is that long. */
#define NNP_NPY_PREAMBLE_MAX 12

typedef struct nnp_npy_info {
    nnp_dtype dtype;
    unsigned layout;     /* NNP_LAYOUT_* flags, set only where they change the bytes */
    uint32_t ndim;
    uint64_t shape[NNP_NPY_MAX_DIMS];
    uint64_t data_offset; /* where the array's bytes start: preamble + header */
    uint64_t nbytes;      /* product of shape * item size */
} nnp_npy_info;

/* Messages name `file`, then `member` when it is not NULL (an npz member), then the byte offset
 * within the npy. */

/* Check the preamble of an npy of `size` bytes at p (p holds min(size, NNP_NPY_PREAMBLE_MAX)
 * bytes) and find where its data starts; data_offset <= size on success. */
nnp_status nnp__npy_preamble(const char *file, const char *member, const unsigned char *p,
                             uint64_t size, uint64_t *data_offset);

/* Parse a whole npy header: p holds the first `avail` bytes of an npy that is `size` bytes long,
 * and avail reaches at least the data offset nnp__npy_preamble found (an npz reader inflates only
 * that much of a deflated member). Checks that the data is exactly nbytes long. */
nnp_status nnp__npy_parse(const char *file, const char *member, const unsigned char *p,
                          uint64_t avail, uint64_t size, nnp_npy_info *out);

#endif /* NNP_FORMATS_NPY_H */
