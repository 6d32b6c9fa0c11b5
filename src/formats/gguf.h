/*
 * gguf.h - what the GGUF reader (gguf.c) shares with gguf_quant.c: ggml's tensor types by number
 * (with the error each quantized one allows), and the dequantizers that turn ggml's quantized
 * blocks into float32.
 */
#ifndef NNP_FORMATS_GGUF_H
#define NNP_FORMATS_GGUF_H

#include "formats/formats.h"

/* One ggml tensor type (enum ggml_type). */
typedef struct nnp_ggml_type {
    const char *name;  /* ggml's spelling: "F32", "Q4_K", ... */
    uint32_t block;    /* elements per block: 1 for plain types, 32 or 256 for quantized ones */
    uint32_t size;     /* bytes per block; 0 where nnparity does not read the type */
    nnp_dtype dtype;   /* the dtype a plain type's bytes are read as; F32 for a quantized type
                        * that nnparity dequantizes; NNP_DTYPE_INVALID where it reads neither */
    bool quantized;    /* the bytes are blocks to dequantize, not elements */
    bool removed;      /* ggml assigned the number once and no longer reads it from GGUF files */
    double rel_l2_bound; /* a dequantized type: the rel-L2 from its source that a correct
                          * quantization stays within (gguf_quant.c says how it was set) */
} nnp_ggml_type;

/* The type with ggml number `type`, or NULL for a number ggml never assigned. */
const nnp_ggml_type *nnp__ggml_type(uint32_t type);

/* Dequantize `nblocks` blocks of quantized type `type` (one nnparity reads) from src into dst,
 * nblocks * block floats, exactly as ggml's dequantize_row_* and gguf-py's numpy dequantizers
 * compute them: the same float32 operations in the same order, so every bit agrees. False for a
 * type without a dequantizer (dst is then untouched). */
bool nnp__ggml_dequantize(uint32_t type, const unsigned char *src, uint64_t nblocks, float *dst);

#endif /* NNP_FORMATS_GGUF_H */
