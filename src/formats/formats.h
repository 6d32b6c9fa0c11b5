/*
 * formats.h - the readers, one per format, each adding records to a dump through the builder
 * (dump/dump.h); formats/registry.c lists them for nnp_dump_open.
 */
#ifndef NNP_FORMATS_H
#define NNP_FORMATS_H

#include "dump/dump.h"

/* ---- format readers (src/formats/) ---- */

/* Each reads one file (or a set of shards) into the dump under construction. */
nnp_status nnp__safetensors_load(nnp_dump *d, const char *path);
nnp_status nnp__sharded_load_index(nnp_dump *d, const char *index_path);
nnp_status nnp__sharded_load_dir(nnp_dump *d, const char *dir_path);
/* A directory whose *.safetensors files (names[0..n), in natural order) are a capture's
 * rank-R-of-N files (formats/ranks.c): every rank must be there; read as one dump. *handled is
 * false, and nothing is read, when no name is a rank file's. */
nnp_status nnp__ranks_load_dir(nnp_dump *d, const char *dir_path, char *const *names, size_t n,
                               bool *handled);
/* Parse "rank-R-of-N.safetensors" (any number of digits); false when `name` is not one. */
bool nnp__rank_file_name(const char *name, uint32_t *rank, uint32_t *world);
nnp_status nnp__npy_load(nnp_dump *d, const char *path);
nnp_status nnp__npz_load(nnp_dump *d, const char *path);
/* A PyTorch checkpoint (formats/torch_pt.c): a torch.save zip, read through a restricted
 * unpickler; the legacy pre-1.6 format is refused with advice. */
nnp_status nnp__torch_load(nnp_dump *d, const char *path);
/* The same over `path` already mapped into the dump (npz.c hands over zips that hold
 * <archive>/data.pkl, so a zip is mapped and read once). */
nnp_status nnp__torch_load_map(nnp_dump *d, const char *path, const nnp_map *m);
/* Whether a file's first n bytes start torch's legacy (pre-1.6) serialization: a pickle whose
 * first value is torch's magic number. */
bool nnp__torch_is_legacy(const unsigned char *head, size_t n);
nnp_status nnp__gguf_load(nnp_dump *d, const char *path);

/* Formats refused by name (formats/foreign.c): each fails with one line that says what the file
 * is and what nnparity reads instead. */
nnp_status nnp__onnx_refuse(nnp_dump *d, const char *path);
nnp_status nnp__hdf5_refuse(nnp_dump *d, const char *path);
nnp_status nnp__keras_refuse(nnp_dump *d, const char *path);
nnp_status nnp__savedmodel_refuse(nnp_dump *d, const char *path);
nnp_status nnp__pickle_refuse(nnp_dump *d, const char *path);
/* Text: an nnparity report (JSON or Markdown), an HTML page, anything else (a rules file). */
nnp_status nnp__text_refuse(nnp_dump *d, const char *path);


/* Read a partial dump through its journal (formats/journal.c): `m` maps `path`; the journal is
 * the file `journal_name` beside it. `hlen` is the header length the file declares, which must be
 * the room the journal names; 0 takes the room from the journal alone (recovery, when the header
 * itself may be torn). */
nnp_status nnp__journal_load(nnp_dump *d, const char *path, const nnp_map *m, uint64_t hlen,
                             const char *journal_name);
/* Open `partial` through the journal `journal_name` beside it, whatever its header holds. */
nnp_status nnp__dump_open_journal(const char *partial, const char *journal_name, nnp_dump **out);

#endif /* NNP_FORMATS_H */
