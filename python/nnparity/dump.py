"""load(): read a dump (any file nnparity reads) into torch tensors through the C dump API, with
each record's provenance. Used to look at captures from Python and by the tests to check them."""
import collections
import ctypes
import os

import torch

from . import _lib

class RecordInfo(collections.namedtuple("RecordInfo", "name module role call module_type seq")):
    """One record's provenance. `rank`: in a capture of several ranks (docs/scale.md), the rank
    that recorded it, else -1; an attribute rather than a field, so that a record still compares
    equal to its 6-tuple."""
    rank = -1


class Dump(collections.OrderedDict):
    """tensor name -> torch tensor, in execution order; `.records` lists a RecordInfo per
    record in the same order; `.meta` is the file's metadata (str -> str), nnparity's own keys
    included."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.records = []
        self.meta = {}


def _tensor(rec, ptr):
    shape = [rec.shape[i] for i in range(rec.ndim)]
    code = rec.dtype
    dtype = _lib.NNP_TO_TORCH.get(code)
    if dtype is not None:
        # The bytes go straight into the new tensor's memory: exact for every dtype, bf16
        # included, with no detour through numpy.
        t = torch.empty(shape, dtype=dtype)
        if rec.nbytes:
            ctypes.memmove(t.data_ptr(), ptr, rec.nbytes)
        return t
    fallback = _lib.LOAD_FALLBACK.get(code)
    if fallback is None:
        raise _lib.NnparityError(_lib.NNP_ERR_UNSUPPORTED,
                                 f"{rec.name.decode()}: dtype {code} has no torch equivalent")
    to, how = fallback
    if how == "bits":
        t = torch.empty(shape, dtype=to)
        if rec.nbytes:
            ctypes.memmove(t.data_ptr(), ptr, rec.nbytes)
        return t
    # Unsigned ints torch lacks: the raw bits in the signed type of the same width, then
    # widened and corrected to their unsigned values.
    signed = torch.int16 if how == "widen_u16" else torch.int32
    raw = torch.empty(shape, dtype=signed)
    if rec.nbytes:
        ctypes.memmove(raw.data_ptr(), ptr, rec.nbytes)
    wide = raw.to(to)
    return torch.where(wide < 0, wide + (1 << (16 if how == "widen_u16" else 32)), wide)


def load(path):
    """Read the dump at `path` into a Dump (an OrderedDict of name -> tensor with `.records`).
    Tensors are copies: they do not depend on the file after this returns."""
    L = _lib.lib()
    handle = ctypes.c_void_p()
    _lib.check(L.nnp_dump_open(os.fsencode(os.fspath(path)), ctypes.byref(handle)))
    try:
        out = Dump()
        for i in range(L.nnp_dump_count(handle)):
            rec = L.nnp_dump_record(handle, i).contents
            ptr = ctypes.c_void_p()
            _lib.check(L.nnp_dump_data(handle, i, ctypes.byref(ptr)))
            name = rec.name.decode()
            out[name] = _tensor(rec, ptr.value)
            info = RecordInfo(
                name, (rec.module or b"").decode(), (rec.role or b"").decode(), rec.call,
                (rec.module_type or b"").decode(), rec.seq)
            if rec.rank >= 0:
                info.rank = rec.rank
            out.records.append(info)
        key, value = ctypes.c_char_p(), ctypes.c_char_p()
        for i in range(L.nnp_dump_meta_count(handle)):
            L.nnp_dump_meta_at(handle, i, ctypes.byref(key), ctypes.byref(value))
            out.meta[key.value.decode()] = (value.value or b"").decode()
        return out
    finally:
        L.nnp_dump_close(handle)
