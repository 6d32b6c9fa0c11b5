"""Shared fixtures for the Python tests: where the nnparity binary, library and conformance
files are, a runner for the CLI, and a safetensors writer that lays files out the way the
reference writer does (so tests can make files without the safetensors package)."""
import json
import math
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
# absolute, so that tests may run commands from another working directory
BIN = Path(os.environ.get("NNPARITY_BIN", ROOT / "build" / "nnparity")).resolve()
LIB = Path(os.environ.get("NNPARITY_LIB", ROOT / "build" / "libnnparity.so")).resolve()
CONFORMANCE = Path(os.environ.get("NNP_CONFORMANCE", ROOT / "tests" / "conformance"))
EXAMPLES = BIN.parent / "examples"

# numpy dtype -> safetensors name
ST_DTYPES = {
    np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("float16"): "F16",
    np.dtype("int8"): "I8", np.dtype("int16"): "I16", np.dtype("int32"): "I32",
    np.dtype("int64"): "I64", np.dtype("uint8"): "U8", np.dtype("uint16"): "U16",
    np.dtype("uint32"): "U32", np.dtype("uint64"): "U64", np.dtype("bool"): "BOOL",
}


def write_safetensors(path, tensors, metadata=None):
    """Write {name: numpy array or (dtype_name, shape, raw bytes)} in the reference layout:
    header padded with spaces to a multiple of 8, data in insertion order."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        if isinstance(t, tuple):
            dtype, shape, raw = t
        else:
            arr = np.ascontiguousarray(t)
            dtype, shape, raw = ST_DTYPES[arr.dtype.newbyteorder("=")], list(arr.shape), \
                arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    """A strict reader following the reference rules, for checking nnparity's own output. A
    capture's record stored under an earlier record's name ("same_as" in nnparity.records) is
    given that record's tensor, as docs/dump-format.md says a reader of nnparity's metadata
    presents it."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n <= 100_000_000 and 8 + n <= len(raw)
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    if meta is not None:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    names = sorted(header, key=lambda k: tuple(header[k]["data_offsets"]))
    pos, out = 0, {}
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
    for k in names:
        info = header[k]
        b, e = info["data_offsets"]
        assert b == pos and e >= b, (k, b, e, pos)
        assert e - b == int(np.prod(info["shape"], dtype=np.int64)) * sizes[info["dtype"]]
        out[k] = (info["dtype"], info["shape"], raw[8 + n + b:8 + n + e])
        pos = e
    assert 8 + n + pos == len(raw)
    for entry in json.loads((meta or {}).get("nnparity.records", "[]")):
        if "same_as" in entry:
            assert entry["tensor"] not in out and entry["same_as"] in out, entry
            out[entry["tensor"]] = out[entry["same_as"]]
    return meta, out


def float_values(dtype, shape, raw):
    """A float tensor read by read_safetensors as float64 (BF16: its 16 bits are a float32's
    upper half)."""
    if dtype == "BF16":
        a = (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4")
    else:
        a = np.frombuffer(raw, {"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype])
    return a.astype(np.float64).reshape(shape)


def expected_verdicts(ref_path, port_path, atol, rtol):
    """The verdict of each name the two files share, worked out here as docs/diff.md defines it:
    fail when rel-L2 > 10 x rtol; else pass when every element has |port - ref| <= atol +
    rtol * |ref| (or the same infinity on both sides), or when all are finite and the largest
    |port - ref| <= atol + rtol * RMS(ref); warn when at most 0.1% of them are outside and no
    new NaN/Inf; fail otherwise."""
    _, ref = read_safetensors(ref_path)
    _, port = read_safetensors(port_path)
    out = {}
    for name in ref.keys() & port.keys():
        r, q = float_values(*ref[name]), float_values(*port[name])
        with np.errstate(invalid="ignore"):
            agree = (np.abs(q - r) <= atol + rtol * np.abs(r)) | (np.isinf(r) & (r == q))
        outside = int(np.count_nonzero(~agree))
        new_nonfinite = np.isnan(q).sum() > np.isnan(r).sum() or \
            np.isinf(q).sum() > np.isinf(r).sum()
        # the moments are over the elements finite on both sides, as the library's
        both = np.isfinite(r) & np.isfinite(q)
        rf, d = r[both].astype(np.float64), (q[both] - r[both]).astype(np.float64)
        ref_norm = float(np.sqrt(np.sum(rf ** 2)))
        rel_l2 = float(np.sqrt(np.sum(d ** 2))) / ref_norm if ref_norm > 0 else math.nan
        rms = ref_norm / math.sqrt(rf.size) if rf.size else 0.0
        within_noise = bool(both.all()) and rf.size > 0 and \
            float(np.abs(d).max()) <= atol + rtol * rms
        out[name] = "fail" if rtol > 0 and rel_l2 > 10 * rtol else \
            "pass" if outside == 0 or within_noise else \
            "warn" if not new_nonfinite and outside * 1000 <= r.size else "fail"
    return out


def run(*args, check=None):
    """Run nnparity with args; returns CompletedProcess (text)."""
    p = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                       errors="replace", timeout=120)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


@pytest.fixture
def nnp():
    if not BIN.exists():
        pytest.fail(f"{BIN} is not built")
    return run


@pytest.fixture
def conformance():
    if not CONFORMANCE.is_dir():
        pytest.fail(f"conformance files not found at {CONFORMANCE}")
    return CONFORMANCE


# The PyTorch bridge (python/nnparity) is imported from the source tree; it finds the library
# through NNPARITY_LIB, like the tests above.
import sys  # noqa: E402

sys.path.insert(0, str(ROOT / "python"))


def one_line_error(p, path):
    """The message after "nnparity: PATH: " (so that fragments cannot match the path)."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    prefix = f"nnparity: {path}: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]
