"""A small GGUF v3 writer for the tests (pure Python and numpy, no gguf package), so that tests can
make GGUF files of their own: key-value metadata (u32, i32, f32, bool, string), tensors stored as
F32, F16, Q8_0 or Q4_0, and general.alignment. The quantizers follow ggml's reference ones
(quantize_row_q8_0_ref, quantize_row_q4_0_ref) operation by operation in float32, so a file
written here holds the bytes llama.cpp's tools would write for the same values.

Layout (ggml's docs/gguf.md): "GGUF", u32 version, u64 tensor count, u64 key-value count; the
key-value pairs (string key, u32 value type, value); the tensor infos (string name, u32 dimension
count, u64 dimensions fastest first, i.e. numpy's shape reversed, u32 ggml type, u64 offset into
the data section); zero padding to the alignment; the tensor data, each tensor at a multiple of
the alignment. A string is a u64 byte count and its UTF-8 bytes.

    w = GGUFWriter()
    w.add_string("general.architecture", "test")
    w.add_tensor("blk.0.w", x, "Q8_0")       # x: float32 array, last axis a multiple of 32
    w.write(path)
    w.expected["blk.0.w"]                     # the float32 values a reader must give back
"""
import struct
from pathlib import Path

import numpy as np

# GGUF value types (enum gguf_type)
V_U32, V_I32, V_F32, V_BOOL, V_STRING = 4, 5, 6, 7, 8
# ggml types (enum ggml_type) and their block sizes (elements, bytes)
GGML_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 8}
BLOCK = {"F32": (1, 4), "F16": (1, 2), "Q4_0": (32, 18), "Q8_0": (32, 34)}
QK = 32


def _string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _round_away(x):
    """C's roundf: halves away from zero (numpy's round goes to even). In float64, where
    |x| + 0.5 is exact for every float32 x of the size met here."""
    x = x.astype(np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_q8_0(x):
    """ggml's quantize_row_q8_0_ref on a flat float32 array (size a multiple of 32).
    Returns (d as float16 per block, q as int8 per element, block bytes)."""
    blocks = np.asarray(x, dtype=np.float32).reshape(-1, QK)
    amax = np.abs(blocks).max(axis=1)
    d = amax / np.float32(127)                          # float32 division, as in C
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    q = _round_away(blocks * inv[:, None]).astype(np.int8)  # x * id in float32, then roundf
    d16 = d.astype(np.float16)                          # GGML_FP32_TO_FP16: nearest even
    raw = np.empty((blocks.shape[0], 34), dtype=np.uint8)
    raw[:, :2] = d16.view(np.uint8).reshape(-1, 2)
    raw[:, 2:] = q.view(np.uint8)
    return d16, q.reshape(-1), raw.tobytes()


def quantize_q4_0(x):
    """ggml's quantize_row_q4_0_ref on a flat float32 array (size a multiple of 32).
    Returns (d as float16 per block, q as the 4-bit values 0..15 per element, block bytes):
    byte j of a block holds element j in its low nibble and element j + 16 in its high one."""
    blocks = np.asarray(x, dtype=np.float32).reshape(-1, QK)
    # the first element of largest magnitude, sign kept ("if (amax < fabsf(v))")
    first = np.abs(blocks).argmax(axis=1)
    vmax = blocks[np.arange(blocks.shape[0]), first]
    d = vmax / np.float32(-8)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    x0 = (blocks * inv[:, None]).astype(np.float32) + np.float32(8.5)  # float32 sums
    q = np.minimum(15, np.trunc(x0).astype(np.int8)).astype(np.uint8)  # (int8_t) truncates
    d16 = d.astype(np.float16)
    raw = np.empty((blocks.shape[0], 18), dtype=np.uint8)
    raw[:, :2] = d16.view(np.uint8).reshape(-1, 2)
    raw[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
    return d16, q.reshape(-1), raw.tobytes()


def dequantize_q8_0(d16, q):
    """ggml's dequantize_row_q8_0: d * q in float32 (exact: an f16 times a 7-bit integer)."""
    return (np.repeat(d16.astype(np.float32), QK) * q.astype(np.float32)).astype(np.float32)


def dequantize_q4_0(d16, q):
    """ggml's dequantize_row_q4_0: d * (q - 8) in float32 (exact)."""
    return (np.repeat(d16.astype(np.float32), QK) *
            (q.astype(np.float32) - np.float32(8))).astype(np.float32)


class GGUFWriter:
    """Collects key-value pairs and tensors, then writes one GGUF v3 file. `alignment` None
    writes no general.alignment (readers then use 32); a number writes it as a u32 and aligns
    the data to it."""

    def __init__(self, alignment=None):
        self.alignment = 32 if alignment is None else alignment
        self.kv = []        # (key, encoded type and value)
        self.tensors = []   # (name, numpy shape, ggml type name, bytes)
        self.expected = {}  # name -> float32 (or float16) array a reader must give back
        if alignment is not None:
            self.add_u32("general.alignment", alignment)

    def add_u32(self, key, v):
        self.kv.append((key, struct.pack("<II", V_U32, v)))

    def add_i32(self, key, v):
        self.kv.append((key, struct.pack("<Ii", V_I32, v)))

    def add_f32(self, key, v):
        self.kv.append((key, struct.pack("<If", V_F32, v)))

    def add_bool(self, key, v):
        self.kv.append((key, struct.pack("<IB", V_BOOL, 1 if v else 0)))

    def add_string(self, key, s):
        self.kv.append((key, struct.pack("<I", V_STRING) + _string(s)))

    def add_tensor(self, name, x, ggml_type="F32"):
        """Store `x` (any float array) as `ggml_type`; quantized types need the last axis to be
        a multiple of 32 (ggml quantizes rows in blocks)."""
        x = np.asarray(x)
        if ggml_type == "F32":
            data = np.ascontiguousarray(x, dtype="<f4")
            raw, want = data.tobytes(), data.astype(np.float32)
        elif ggml_type == "F16":
            data = np.ascontiguousarray(x, dtype="<f2")
            raw, want = data.tobytes(), data.astype(np.float16)
        elif ggml_type in ("Q8_0", "Q4_0"):
            if x.ndim == 0 or x.shape[-1] % QK:
                raise ValueError(f"{name}: {ggml_type} needs the last axis a multiple of {QK}")
            flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
            if ggml_type == "Q8_0":
                d16, q, raw = quantize_q8_0(flat)
                want = dequantize_q8_0(d16, q)
            else:
                d16, q, raw = quantize_q4_0(flat)
                want = dequantize_q4_0(d16, q)
            want = want.reshape(x.shape)
        else:
            raise ValueError(f"{name}: type {ggml_type} is not written here")
        self.tensors.append((name, tuple(x.shape), ggml_type, raw))
        self.expected[name] = want

    def to_bytes(self):
        a = self.alignment
        out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv)))
        for key, value in self.kv:
            out += _string(key) + value
        offset, blobs = 0, []
        for name, shape, ggml_type, raw in self.tensors:
            dims = list(reversed(shape))
            out += _string(name) + struct.pack("<I", len(dims))
            out += b"".join(struct.pack("<Q", n) for n in dims)
            out += struct.pack("<IQ", GGML_TYPES[ggml_type], offset)
            pad = -len(raw) % a
            blobs.append(raw + b"\0" * pad)
            offset += len(raw) + pad
        if self.tensors:
            out += b"\0" * (-len(out) % a)
        return bytes(out) + b"".join(blobs)

    def write(self, path):
        Path(path).write_bytes(self.to_bytes())


def read_tensors(path):
    """The tensors of a GGUF file as {name: (ggml type number, numpy shape, raw bytes)}, for
    checking files against this writer (key-value values are skipped, not interpreted)."""
    raw = Path(path).read_bytes()
    assert raw[:4] == b"GGUF"
    _, nt, nkv = struct.unpack_from("<IQQ", raw, 4)
    pos = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    alignment = 32

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", raw, pos)
        pos += 8 + n
        return raw[pos - n:pos].decode("utf-8")

    def skip(t):
        nonlocal pos
        if t == V_STRING:
            string()
        elif t == 9:
            et, n = struct.unpack_from("<IQ", raw, pos)
            pos += 12
            for _ in range(n):
                skip(et)
        else:
            pos += sizes[t]

    for _ in range(nkv):
        key = string()
        (t,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", raw, pos)
        skip(t)
    infos = []
    for _ in range(nt):
        name = string()
        (nd,) = struct.unpack_from("<I", raw, pos)
        dims = struct.unpack_from(f"<{nd}Q", raw, pos + 4)
        t, off = struct.unpack_from("<IQ", raw, pos + 4 + 8 * nd)
        pos += 4 + 8 * nd + 12
        infos.append((name, t, tuple(reversed(dims)), off))
    start = pos + (-pos % alignment)
    nbytes = {0: (1, 4), 1: (1, 2), 2: (32, 18), 8: (32, 34)}
    out = {}
    for name, t, shape, off in infos:
        n = int(np.prod(shape, dtype=np.int64))
        per, size = nbytes[t] if t in nbytes else (None, None)
        length = n // per * size if per else None
        out[name] = (t, shape, raw[start + off:start + off + length] if length is not None
                     else None)
    return out
