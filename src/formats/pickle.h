/*
 * pickle.h - the restricted unpickler (pickle.c) that the PyTorch checkpoint reader (torch_pt.c)
 * runs data.pkl on: the value tree it builds, and the one hook through which the reader turns
 * persistent ids into storages.
 */
#ifndef NNP_FORMATS_PICKLE_H
#define NNP_FORMATS_PICKLE_H

#include "formats/formats.h"

/* At most this many MARKs open at once, and containers nested at most this deep when the tree is
 * walked: real checkpoints nest a few levels, and flattening recurses once per level. */
#define NNP_PICKLE_MAX_DEPTH 100
/* torch's own limit on a tensor's dimensions. */
#define NNP_PICKLE_MAX_DIMS 64
/* Longest module or name of a GLOBAL opcode (and storage key of a persistent id). */
#define NNP_PICKLE_MAX_GLOBAL_PART 256

/* Opcodes that a reader telling formats apart by their first bytes looks for. */
enum { NNP_PICKLE_PROTO = 0x80, NNP_PICKLE_LONG1 = 0x8a, NNP_PICKLE_FRAME = 0x95 };

/* ---- values ---- */

enum {
    NNP_PV_NONE, NNP_PV_BOOL, NNP_PV_INT, NNP_PV_FLOAT, NNP_PV_STR, NNP_PV_BYTES, NNP_PV_TUPLE,
    NNP_PV_LIST, NNP_PV_DICT, NNP_PV_GLOBAL, NNP_PV_STORAGE, NNP_PV_TENSOR
};

/* What an allowlisted global is (the allowlist is pickle.c's). */
enum {
    NNP_PG_ORDERED_DICT,   /* collections.OrderedDict: called with () it makes an empty dict */
    NNP_PG_REBUILD_TENSOR, /* torch._utils._rebuild_tensor_v2 */
    NNP_PG_REBUILD_PARAM,  /* torch._utils._rebuild_parameter(_with_state): the tensor it wraps */
    NNP_PG_STORAGE,        /* torch.<X>Storage: names a storage's element type in a persistent id */
    NNP_PG_DTYPE           /* torch.float32 ...: a value, kept as metadata */
};

typedef struct nnp_pv_global {
    const char *module, *name;
    int kind;
    nnp_dtype dtype; /* NNP_PG_STORAGE */
} nnp_pv_global;

/* A storage: whatever the persistent_load hook made of a persistent id (torch_pt.c defines it);
 * the machine only hands it on to the tensors built on it. */
typedef struct nnp_pv_storage nnp_pv_storage;

/* A tensor as _rebuild_tensor_v2 describes it; the reader checks it against its storage. */
typedef struct nnp_pv_tensor {
    const nnp_pv_storage *st;
    uint64_t offset;
    uint32_t ndim;
    uint64_t shape[NNP_PICKLE_MAX_DIMS];
    uint64_t stride[NNP_PICKLE_MAX_DIMS];
} nnp_pv_tensor;

typedef struct nnp_pv nnp_pv;
struct nnp_pv {
    unsigned char kind;
    bool ordered; /* a dict made by collections.OrderedDict (BUILD may then set its attributes) */
    bool busy;    /* for the reader: on the path being flattened, so reaching it is a cycle */
    uint64_t pos; /* offset in the pickle of the opcode that made it, for messages */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *s; /* into the pickle's bytes, not NUL-terminated */
            size_t n;
        } str;
        struct {
            nnp_pv **v; /* items; a dict holds key, value, key, value... */
            size_t n, cap;
        } seq;
        const nnp_pv_global *g;
        const nnp_pv_storage *st;
        const nnp_pv_tensor *t;
    } u;
};

/* ---- the machine ---- */

typedef struct nnp_pickle nnp_pickle;

/* BINPERSID: the value that the persistent id `pid` stands for, in *out (NULL only with an error
 * status); the machine pushes it in the id's place. Its messages go through nnp__pickle_fail. */
typedef nnp_status (*nnp_pickle_persistent_fn)(void *ctx, nnp_pickle *L, const nnp_pv *pid,
                                               nnp_pv **out);

struct nnp_pickle {
    /* set by the caller */
    const char *path;   /* the file, as named in messages */
    const char *member; /* the pickle's name within it, for messages */
    const unsigned char *p; /* the pickle's bytes */
    uint64_t n;
    nnp_pickle_persistent_fn persistent_load; /* required */
    void *ctx;                                /* persistent_load's */

    /* the machine's own, zero before the run */
    uint64_t at; /* offset of the opcode being run */
    nnp_pv **stack;
    size_t sn, scap;
    size_t *marks; /* stack heights at each open MARK */
    size_t mn, mcap;
    nnp_pv **memo;
    size_t memo_cap, memo_count; /* slots, and slots holding a value */
    struct nnp_pickle_chunk *chunks; /* the arena every value lives in */
};

/* Run the pickle to its STOP: *result is the value it leaves, which lives (with every value and
 * whatever nnp__pickle_alloc gave) until nnp__pickle_free. Nothing the pickle names is imported
 * or called: globals outside the allowlist, and opcodes outside the subset torch writes, are
 * refused with a message naming them. */
nnp_status nnp__pickle_run(nnp_pickle *L, nnp_pv **result);
/* Free the machine's stack, memo and arena; every value from it goes too. */
void nnp__pickle_free(nnp_pickle *L);

/* For persistent_load: memory in the machine's arena (NULL, with nnp__nomem, when out). */
void *nnp__pickle_alloc(nnp_pickle *L, size_t n);
/* A new zeroed value of `kind` made at the opcode being run (NULL when out of memory). */
nnp_pv *nnp__pickle_value(nnp_pickle *L, unsigned char kind);
/* "<file>: <member> byte <at>: <what>" for the opcode being run. */
nnp_status nnp__pickle_fail(const nnp_pickle *L, nnp_status st, const char *fmt, ...)
    NNP_PRINTF(3, 4);
/* The kind with its article, for messages: "an int", "a str", "None". */
const char *nnp__pickle_a_kind(const nnp_pv *v);
/* A name from the file made safe for a one-line message: printable ASCII, cut at 100 bytes. */
void nnp__pickle_printable(char *dst, size_t cap, const char *s, size_t n);

#endif /* NNP_FORMATS_PICKLE_H */
