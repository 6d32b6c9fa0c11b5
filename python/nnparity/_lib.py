"""Loading libnnparity.so through ctypes: the C signatures the bridge uses, the nnp_tap_desc
structure (and TapPacker, which packs it by hand on the recording path), the mapping between
torch dtypes and nnp_dtype, and NnparityError for failing calls.

Everything else in the package goes through this module, so it is the one place that has to agree
with include/nnparity.h."""
import ctypes
import ctypes.util
import os
import struct
import threading
from pathlib import Path

import torch

from ._version import __version__

# The API this bridge is written against (NNP_VERSION_MAJOR/MINOR of include/nnparity.h, kept
# in _version.py): a library of another major version, or an older minor one, is refused when
# it is loaded.
API_MAJOR, API_MINOR = (int(n) for n in __version__.split(".")[:2])
# The library's file name: its soname, which carries the major version.
SONAME = f"libnnparity.so.{API_MAJOR}"

# nnp_status (include/nnparity.h)
NNP_OK = 0
NNP_ERR_IO = 1
NNP_ERR_FORMAT = 2
NNP_ERR_UNSUPPORTED = 3
NNP_ERR_ARG = 4
NNP_ERR_NOT_FOUND = 5
NNP_ERR_NOMEM = 6
NNP_ERR_INTERNAL = 7

# nnp_dtype (include/nnparity.h); the numbers are the enum's values.
NNP_F64, NNP_F32, NNP_F16, NNP_BF16 = 1, 2, 3, 4
NNP_F8_E4M3, NNP_F8_E5M2 = 5, 6
NNP_I8, NNP_I16, NNP_I32, NNP_I64 = 7, 8, 9, 10
NNP_U8, NNP_U16, NNP_U32, NNP_U64 = 11, 12, 13, 14
NNP_BOOL = 15


class NnparityError(RuntimeError):
    """A libnnparity call failed. `status` is the nnp_status number, the message the library's
    one-line explanation (nnp_last_error)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


NnparityError.__module__ = "nnparity"


class NotFoundError(NnparityError):
    """NNP_ERR_NOT_FOUND: a name looked up is not there (e.g. the reference lacks a record).
    A separate class so that injection can let such an input run unchanged."""


NotFoundError.__module__ = "nnparity"


def _torch_dtype_table():
    table = [
        (torch.float64, NNP_F64), (torch.float32, NNP_F32), (torch.float16, NNP_F16),
        (torch.bfloat16, NNP_BF16), (torch.int8, NNP_I8), (torch.int16, NNP_I16),
        (torch.int32, NNP_I32), (torch.int64, NNP_I64), (torch.uint8, NNP_U8),
        (torch.bool, NNP_BOOL),
    ]
    # Newer torch releases have these; older ones (1.13) do not, and such records then load
    # through the fallbacks in LOAD_FALLBACK.
    for attr, code in (("float8_e4m3fn", NNP_F8_E4M3), ("float8_e5m2", NNP_F8_E5M2),
                       ("uint16", NNP_U16), ("uint32", NNP_U32), ("uint64", NNP_U64)):
        dt = getattr(torch, attr, None)
        if isinstance(dt, torch.dtype):
            table.append((dt, code))
    return table


TORCH_TO_NNP = dict(_torch_dtype_table())
NNP_TO_TORCH = {code: dt for dt, code in TORCH_TO_NNP.items()}
# Records whose dtype this torch lacks: (torch dtype to load as, how to get there from the raw
# little-endian bits). Unsigned ints widen exactly; f8 stays as its raw bits; U64 keeps its bits
# in an int64 (values from 2**63 up read negative).
LOAD_FALLBACK = {
    NNP_U16: (torch.int32, "widen_u16"),
    NNP_U32: (torch.int64, "widen_u32"),
    NNP_U64: (torch.int64, "bits"),
    NNP_F8_E4M3: (torch.uint8, "bits"),
    NNP_F8_E5M2: (torch.uint8, "bits"),
}
DTYPE_SIZE = {NNP_F64: 8, NNP_F32: 4, NNP_F16: 2, NNP_BF16: 2, NNP_F8_E4M3: 1, NNP_F8_E5M2: 1,
              NNP_I8: 1, NNP_I16: 2, NNP_I32: 4, NNP_I64: 8, NNP_U8: 1, NNP_U16: 2, NNP_U32: 4,
              NNP_U64: 8, NNP_BOOL: 1}


class TapDesc(ctypes.Structure):
    """struct nnp_tap_desc, field for field in header order."""
    _c_name = "nnp_tap_desc"
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("role", ctypes.c_char_p),
        ("module_type", ctypes.c_char_p),
        ("dtype", ctypes.c_int),
        ("ndim", ctypes.c_uint32),
        ("shape", ctypes.POINTER(ctypes.c_uint64)),
    ]


class CStr(bytes):
    """bytes that know where their characters are, for descriptors packed by hand (TapPacker).
    The address stays valid as long as the object lives; names the bridge reuses record after
    record (module names, roles) are made CStr once."""

    def __new__(cls, value):
        self = super().__new__(cls, value)
        self.addr = _address(self)
        return self


def _address(b):
    """The address of the characters of bytes b (0 for None); valid while b lives."""
    if b is None:
        return 0
    addr = getattr(b, "addr", None)
    return addr if addr is not None else ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value


class TapPacker(threading.local):
    """Structs nnp_tap_desc and their shapes, packed with the struct module into buffers of the
    calling thread and kept by their fields: building a TapDesc (and its shape array) through
    ctypes for each record costs more than the library takes to record a small tensor, and a
    module's records have the same names, dtype and shape capture after capture. The layout is
    the compiler's ("@": native sizes and alignment); _Lib checks it against TapDesc, whose
    layout it checks against the library's."""
    DESC = struct.Struct("@PPPiIP")
    MAX_DIMS = 64
    KEEP_MAX = 4096  # descriptors kept a thread
    SHAPES = [struct.Struct(f"@{n}Q") for n in range(MAX_DIMS + 1)]

    def __init__(self):
        # where nnp_tap_record_numbered puts a record's number
        self.number = ctypes.c_uint64()
        self.number_addr = ctypes.addressof(self.number)
        self.kept = {}  # descriptor addresses by their fields
        self.bufs = []  # the buffers that hold them

    def packed(self, name_b, role_b, type_b, code, shape):
        """The address of a descriptor of these fields, packed on first use and kept; None when
        the shape has more dimensions than a descriptor here holds (build a TapDesc then)."""
        key = (name_b, role_b, type_b, code, shape)
        addr = self.kept.get(key)
        if addr is None:
            n = len(shape)
            if n > self.MAX_DIMS:
                return None
            if len(self.kept) >= self.KEEP_MAX:  # a loop of ever new shapes: start again
                self.kept.clear()
                self.bufs.clear()
            buf = ctypes.create_string_buffer(self.DESC.size + 8 * max(n, 1))
            addr = ctypes.addressof(buf)
            # the key keeps the names alive as long as the descriptor
            self.DESC.pack_into(buf, 0, _address(name_b), _address(role_b), _address(type_b),
                                code, n, addr + self.DESC.size)
            self.SHAPES[n].pack_into(buf, self.DESC.size, *shape)
            self.bufs.append(buf)
            self.kept[key] = addr
        return addr


def check_packer():
    """Refuse a TapPacker layout that is not TapDesc's."""
    fields = [f for f, _ in TapDesc._fields_]
    fmt = TapPacker.DESC.format.lstrip("@")
    offsets = [struct.calcsize("@" + fmt[:i + 1]) - struct.calcsize("@" + fmt[i])
               for i in range(len(fmt))]
    mine = {"size": TapPacker.DESC.size, **dict(zip(fields, offsets))}
    theirs = {"size": ctypes.sizeof(TapDesc), **{f: getattr(TapDesc, f).offset for f in fields}}
    if mine != theirs:
        raise NnparityError(NNP_ERR_INTERNAL, f"the bridge packs nnp_tap_desc as {mine}, but "
                                              f"its TapDesc is {theirs}")


class CaptureOptions(ctypes.Structure):
    """struct nnp_capture_options."""
    _c_name = "nnp_capture_options"
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("inject_path", ctypes.c_char_p),
        ("rules_path", ctypes.c_char_p),
        ("expected_records", ctypes.c_size_t),
        ("rank", ctypes.c_int),
        ("world_size", ctypes.c_int),
    ]


    def __init__(self, *args, **kw):
        # the size first, as nnp_capture_options_init sets it
        super().__init__(ctypes.sizeof(self), *args, **kw)


class Record(ctypes.Structure):
    """struct nnp_record, as nnp_dump_record returns it."""
    _c_name = "nnp_record"
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("module", ctypes.c_char_p),
        ("role", ctypes.c_char_p),
        ("module_type", ctypes.c_char_p),
        ("call", ctypes.c_uint64),
        ("seq", ctypes.c_uint64),
        ("dtype", ctypes.c_int),
        ("ndim", ctypes.c_uint32),
        ("shape", ctypes.POINTER(ctypes.c_uint64)),
        ("nelem", ctypes.c_uint64),
        ("nbytes", ctypes.c_uint64),
        ("file", ctypes.c_char_p),
        ("rank", ctypes.c_int32),
        ("world_size", ctypes.c_uint32),
    ]


# The diff's result, read through its accessors (nnp_diff_pair_at, nnp_diff_profile, ...). These
# structures are checked against the library when a diff is first asked for (check_diff_layouts),
# not when the library loads, so that capture keeps working with a library that predates them.
class Metrics(ctypes.Structure):
    """struct nnp_metrics."""
    _c_name = "nnp_metrics"
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("count", "finite", "nan_ref", "nan_port", "inf_ref", "inf_port",
                 "allclose_fail")] + \
        [(n, ctypes.c_double) for n in
         ("allclose_fail_pct", "mse", "rmse", "mean_abs", "max_abs")] + \
        [("max_index", ctypes.c_uint64)] + \
        [(n, ctypes.c_double) for n in
         ("ref_at_max", "port_at_max", "rel_l2", "nmse", "snr_db", "cosine", "pcc")] + \
        [("nan_new", ctypes.c_uint64), ("inf_new", ctypes.c_uint64),
         ("reserved", ctypes.c_double * 6)]


class DiffOptions(ctypes.Structure):
    """struct nnp_diff_options (progress is a function pointer the bridge leaves NULL)."""
    _c_name = "nnp_diff_options"
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("rules", ctypes.c_void_p),
        ("atol", ctypes.c_double),
        ("rtol", ctypes.c_double),
        ("threads", ctypes.c_int),
        ("no_align", ctypes.c_bool),
        ("progress", ctypes.c_void_p),
        ("progress_ctx", ctypes.c_void_p),
        ("like", ctypes.c_void_p),
        ("like_port", ctypes.c_void_p),
        ("no_explain", ctypes.c_bool),
        ("noise", ctypes.c_void_p),
    ]


class DiffPair(ctypes.Structure):
    """struct nnp_diff_pair, as nnp_diff_pair_at returns it."""
    _c_name = "nnp_diff_pair"
    _fields_ = [
        ("ref", ctypes.c_size_t),
        ("port", ctypes.c_size_t),
        ("verdict", ctypes.c_int),
        ("atol", ctypes.c_double),
        ("rtol", ctypes.c_double),
        ("metrics", Metrics),
        ("aligned", ctypes.c_bool),
        ("nparts", ctypes.c_uint32),
        ("parts", ctypes.POINTER(ctypes.c_size_t)),
        ("adapters", ctypes.c_char_p),
        ("problem", ctypes.c_char_p),
        ("ref_dtype", ctypes.c_int),
        ("port_dtype", ctypes.c_int),
        ("ref_ndim", ctypes.c_uint32),
        ("port_ndim", ctypes.c_uint32),
        ("ref_shape", ctypes.POINTER(ctypes.c_uint64)),
        ("port_shape", ctypes.POINTER(ctypes.c_uint64)),
        ("join", ctypes.c_int),
        ("join_axis", ctypes.c_int64),
        ("nadapters", ctypes.c_uint32),
        ("evidence", ctypes.c_int),
        ("confidence", ctypes.c_double),
    ]


class Collision(ctypes.Structure):
    """struct nnp_collision."""
    _c_name = "nnp_collision"
    _fields_ = [("port", ctypes.c_size_t), ("taken_by", ctypes.c_size_t),
                ("name", ctypes.c_char_p)]


class Culprit(ctypes.Structure):
    """struct nnp_culprit."""
    _c_name = "nnp_culprit"
    _fields_ = [("kind", ctypes.c_int), ("port_module", ctypes.c_char_p),
                ("ref_module", ctypes.c_char_p), ("after", ctypes.c_int64),
                ("before", ctypes.c_int64)]


class AxisProfile(ctypes.Structure):
    """struct nnp_axis_profile."""
    _c_name = "nnp_axis_profile"
    _fields_ = [("name", ctypes.c_char_p), ("size", ctypes.c_uint64),
                ("sq_share", ctypes.POINTER(ctypes.c_double)),
                ("fail", ctypes.POINTER(ctypes.c_uint64))]


class Profile(ctypes.Structure):
    """struct nnp_profile."""
    _c_name = "nnp_profile"
    _fields_ = [("ndim", ctypes.c_uint32), ("axes", ctypes.POINTER(AxisProfile)),
                ("elements", ctypes.c_uint64), ("sampled", ctypes.c_bool),
                ("fail", ctypes.c_uint64), ("where", ctypes.c_char_p)]


class Hint(ctypes.Structure):
    """struct nnp_hint."""
    _c_name = "nnp_hint"
    _fields_ = [("kind", ctypes.c_int), ("fit", ctypes.c_double), ("axis", ctypes.c_int32),
                ("axis2", ctypes.c_int32), ("value", ctypes.c_double),
                ("text", ctypes.c_char_p)]


DIFF_STRUCTS = (Metrics, DiffOptions, DiffPair, Collision, Culprit, AxisProfile, Profile, Hint)


_c_int, _c_char_p, _c_void_p = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
_SIGNATURES = {
    # name: (restype, argtypes)
    "nnp_last_error": (_c_char_p, []),
    "nnp_status_name": (_c_char_p, [_c_int]),
    "nnp_version": (_c_char_p, []),
    "nnp_version_number": (_c_int, []),
    "nnp_struct_layout": (ctypes.c_bool, [_c_char_p, _c_char_p, ctypes.POINTER(ctypes.c_size_t)]),
    "nnp_dump_open": (_c_int, [_c_char_p, ctypes.POINTER(_c_void_p)]),
    "nnp_dump_close": (None, [_c_void_p]),
    "nnp_dump_count": (ctypes.c_size_t, [_c_void_p]),
    "nnp_dump_record": (ctypes.POINTER(Record), [_c_void_p, ctypes.c_size_t]),
    "nnp_dump_data": (_c_int, [_c_void_p, ctypes.c_size_t, ctypes.POINTER(_c_void_p)]),
    "nnp_dump_meta_get": (_c_char_p, [_c_void_p, _c_char_p]),
    "nnp_dump_meta_count": (ctypes.c_size_t, [_c_void_p]),
    "nnp_dump_meta_at": (None, [_c_void_p, ctypes.c_size_t, ctypes.POINTER(_c_char_p),
                                ctypes.POINTER(_c_char_p)]),
    "nnp_capture_open": (_c_int, [_c_char_p, ctypes.POINTER(CaptureOptions)]),
    "nnp_capture_close": (_c_int, []),
    "nnp_capture_active": (_c_int, []),
    "nnp_tap_record": (_c_int, [ctypes.POINTER(TapDesc), _c_void_p]),
    "nnp_tap_record_numbered": (_c_int, [ctypes.POINTER(TapDesc), _c_void_p, _c_void_p]),
    "nnp_tap_record_same": (_c_int, [ctypes.POINTER(TapDesc), ctypes.c_uint64]),
    "nnp_tap_inject": (_c_int, [ctypes.POINTER(TapDesc), _c_void_p]),
    "nnp_capture_set_meta": (_c_int, [_c_char_p, _c_char_p]),
    "nnp_convert": (_c_int, [_c_int, _c_void_p, ctypes.c_size_t, _c_int, _c_void_p]),
    "nnp_recover": (_c_int, [_c_char_p, ctypes.POINTER(ctypes.c_size_t)]),
    # diffing two dumps (nnparity.diff), the calls `nnparity diff` makes
    "nnp_free": (None, [_c_void_p]),
    "nnp_dtype_name": (_c_char_p, [_c_int]),
    "nnp_dump_open_both": (_c_int, [_c_char_p, _c_char_p, ctypes.POINTER(_c_void_p),
                                    ctypes.POINTER(_c_void_p)]),
    "nnp_dump_path": (_c_char_p, [_c_void_p]),
    "nnp_dump_defer_checks": (None, [_c_void_p]),
    "nnp_dump_finish_checks": (_c_int, [_c_void_p]),
    "nnp_rules_load": (_c_int, [_c_char_p, ctypes.POINTER(_c_void_p)]),
    "nnp_rules_parse": (_c_int, [_c_char_p, _c_char_p, ctypes.POINTER(_c_void_p)]),
    "nnp_rules_free": (None, [_c_void_p]),
    "nnp_diff_options_init": (None, [ctypes.POINTER(DiffOptions)]),
    "nnp_diff_dumps": (_c_int, [_c_void_p, _c_void_p, ctypes.POINTER(DiffOptions),
                                ctypes.POINTER(_c_void_p)]),
    "nnp_diff_free": (None, [_c_void_p]),
    "nnp_diff_pair_count": (ctypes.c_size_t, [_c_void_p]),
    "nnp_diff_pair_at": (ctypes.POINTER(DiffPair), [_c_void_p, ctypes.c_size_t]),
    "nnp_diff_unmatched_ref_count": (ctypes.c_size_t, [_c_void_p]),
    "nnp_diff_unmatched_ref_at": (ctypes.c_size_t, [_c_void_p, ctypes.c_size_t]),
    "nnp_diff_unmatched_port_count": (ctypes.c_size_t, [_c_void_p]),
    "nnp_diff_unmatched_port_at": (ctypes.c_size_t, [_c_void_p, ctypes.c_size_t]),
    "nnp_diff_first_divergence": (ctypes.c_int64, [_c_void_p]),
    "nnp_diff_culprit": (ctypes.POINTER(Culprit), [_c_void_p]),
    "nnp_diff_order_violation": (ctypes.c_int64, [_c_void_p]),
    "nnp_diff_nonfinite_origin": (ctypes.c_int64, [_c_void_p]),
    "nnp_diff_aligned_count": (ctypes.c_size_t, [_c_void_p]),
    "nnp_diff_collision_count": (ctypes.c_size_t, [_c_void_p]),
    "nnp_diff_collision_at": (ctypes.POINTER(Collision), [_c_void_p, ctypes.c_size_t]),
    "nnp_diff_profile": (ctypes.POINTER(Profile), [_c_void_p, ctypes.c_size_t]),
    "nnp_diff_hint_count": (ctypes.c_size_t, [_c_void_p, ctypes.c_size_t]),
    "nnp_diff_hint_at": (ctypes.POINTER(Hint), [_c_void_p, ctypes.c_size_t, ctypes.c_size_t]),
    "nnp_verdict_name": (_c_char_p, [_c_int]),
    "nnp_evidence_name": (_c_char_p, [_c_int]),
    "nnp_hint_kind_name": (_c_char_p, [_c_int]),
    "nnp_component_kind_of": (_c_int, [_c_void_p, _c_char_p, _c_char_p]),
    "nnp_component_name": (_c_char_p, [_c_int]),
}


# Second prototypes of C functions, loaded as <name>_at: the tap functions given the address of
# a descriptor TapPacker packed.
_AT_SIGNATURES = {
    "nnp_tap_record": (_c_int, [_c_void_p, _c_void_p]),
    "nnp_tap_record_numbered": (_c_int, [_c_void_p, _c_void_p, _c_void_p]),
    "nnp_tap_record_same": (_c_int, [_c_void_p, ctypes.c_uint64]),
    "nnp_tap_inject": (_c_int, [_c_void_p, _c_void_p]),
}


def _find_library():
    """The library to load, the first found of: NNPARITY_LIB; the repository's build/ when this
    package is the source tree's; the copy a package built from a built tree carries; the
    library directory `make install` recorded; the system's library path."""
    env = os.environ.get("NNPARITY_LIB")
    if env:
        return env
    here = Path(__file__).resolve().parent
    # python/nnparity/_lib.py -> the repository's build/libnnparity.so
    in_repo = here.parents[1] / "build" / "libnnparity.so"
    if in_repo.exists():
        return str(in_repo)
    bundled = here / SONAME
    if bundled.exists():
        return str(bundled)
    try:
        from ._install import LIBDIR  # written by `make install` only
    except ImportError:
        LIBDIR = None
    if LIBDIR and (Path(LIBDIR) / SONAME).exists():
        return str(Path(LIBDIR) / SONAME)
    found = ctypes.util.find_library("nnparity")
    if found:
        return found
    raise OSError(f"{SONAME} not found: set NNPARITY_LIB, build it with `make`, or install it "
                  "with `make install`")


class _Lib:
    """The loaded library: its version and the layouts of the structs declared here are checked
    first, so that a library built from another header fails at load, not with wrong reads."""

    def __init__(self, path):
        self.path = path
        self.dll = ctypes.CDLL(path)
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(self.dll, name)
            except AttributeError:
                setattr(self, name, _missing(path, name))
                continue
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        for name, (restype, argtypes) in _AT_SIGNATURES.items():
            try:
                fn = ctypes.CFUNCTYPE(restype, *argtypes)((name, self.dll))
            except AttributeError:
                fn = _missing(path, name)
            setattr(self, name + "_at", fn)
        check_version(self)
        for cls in (TapDesc, CaptureOptions, Record):
            check_layout(self, cls)
        check_packer()


def check_version(L):
    """Refuse a library whose API this bridge was not written against."""
    if not hasattr(L.dll, "nnp_version_number"):
        found = L.nnp_version().decode() if hasattr(L.dll, "nnp_version") else "unknown"
        raise NnparityError(NNP_ERR_UNSUPPORTED,
                            f"{L.path} is libnnparity {found}; this bridge needs "
                            f"{API_MAJOR}.{API_MINOR} or later: rebuild libnnparity")
    number = L.nnp_version_number()
    major, minor = number // 10000, number // 100 % 100
    if major != API_MAJOR or minor < API_MINOR:
        raise NnparityError(NNP_ERR_UNSUPPORTED,
                            f"{L.path} is libnnparity {major}.{minor}; this bridge needs "
                            f"{API_MAJOR}.{API_MINOR} or a later {API_MAJOR}.x")


def check_layout(L, struct):
    """Compare a ctypes structure's size and field offsets with the library's own (C names)."""
    got = ctypes.c_size_t()

    def layout(field):
        if not L.nnp_struct_layout(struct._c_name.encode(), field and field.encode(),
                                   ctypes.byref(got)):
            raise NnparityError(NNP_ERR_UNSUPPORTED,
                                f"{L.path} does not know {struct._c_name}"
                                f"{'.' + field if field else ''}: rebuild libnnparity")
        return got.value

    mine = {"size": ctypes.sizeof(struct)}
    theirs = {"size": layout(None)}
    for name, _ in struct._fields_:
        mine[name] = getattr(struct, name).offset
        theirs[name] = layout(name)
    if mine != theirs:
        wrong = ", ".join(f"{k} {mine[k]} != {theirs[k]}" for k in mine if mine[k] != theirs[k])
        raise NnparityError(NNP_ERR_UNSUPPORTED,
                            f"struct {struct._c_name} differs between the bridge and {L.path} "
                            f"({wrong}): rebuild libnnparity or update the bridge")


def check_diff_layouts(L):
    """Check the diff's structures against the library once, before the first diff reads one."""
    if not getattr(L, "diff_layouts_checked", False):
        for cls in DIFF_STRUCTS:
            check_layout(L, cls)
        L.diff_layouts_checked = True


def _missing(path, name):
    def fail(*_args):
        raise NnparityError(NNP_ERR_UNSUPPORTED, f"{path} has no {name}; rebuild libnnparity")
    return fail


_lib = None


def lib():
    """The loaded library (loaded on first use)."""
    global _lib
    if _lib is None:
        _lib = _Lib(_find_library())
    return _lib


def last_error():
    msg = lib().nnp_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def error(status, context=None):
    """The exception for a failing status: the library's message, prefixed by `context`."""
    msg = last_error()
    if not msg:
        name = lib().nnp_status_name(status)
        msg = name.decode() if name else f"status {status}"
    if context:
        msg = f"{context}: {msg}"
    cls = NotFoundError if status == NNP_ERR_NOT_FOUND else NnparityError
    return cls(status, msg)


def check(status, context=None):
    if status != NNP_OK:
        raise error(status, context)
