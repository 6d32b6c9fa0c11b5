/*
 * torch_pt.h - what the PyTorch checkpoint reader (torch_pt.c) shares with the npz reader: the
 * one test that tells a torch checkpoint from an npz archive, since both are zips.
 */
#ifndef NNP_FORMATS_TORCH_PT_H
#define NNP_FORMATS_TORCH_PT_H

#include "common/zip.h"
#include "formats/formats.h"

/* The member holding a torch checkpoint's pickle: the first, in central directory order, named
 * "<archive>/data.pkl" (or a bare "data.pkl"); NULL when the zip is not a torch checkpoint. */
const nnp_zip_entry *nnp__torch_pickle_entry(const nnp_zip *z);

#endif /* NNP_FORMATS_TORCH_PT_H */
