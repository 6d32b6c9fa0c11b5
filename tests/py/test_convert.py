"""`nnparity convert`: every kind of conformance file (safetensors, npy/npz, a torch checkpoint,
GGUF) written as safetensors holds exactly the values the conformance README names, in the same
order with the same names; --dtype rounds as numpy and torch do; --only keeps a subset; GGUF
files from tests/py/gguf_writer.py (F32, F16, Q8_0, Q4_0) come back as ggml dequantizes them;
bad inputs, a failure halfway through and unwritable outputs leave nothing behind; and the
output never overwrites the input."""
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import gguf_writer
from conftest import BIN, read_safetensors, write_safetensors

pytestmark = pytest.mark.cli

NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
      "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def values(dtype, shape, raw):
    """A safetensors tensor as numpy; BF16 as its exact float32 value."""
    if dtype == "BF16":
        u = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    return np.frombuffer(raw, NP[dtype]).reshape(shape)


def convert(nnp, *args, check=0):
    p = nnp("convert", *args, check=check)
    if check == 0:
        assert p.stderr == ""
    return p


def load(path):
    """(metadata, [(name, dtype, shape, raw)] in data order, i.e. execution order)."""
    meta, tensors = read_safetensors(path)
    return meta, [(k, *v) for k, v in tensors.items()]


def leftovers(out):
    out = Path(out)
    return [p.name for p in (out, Path(f"{out}.partial"), Path(f"{out}.journal")) if p.exists()]


def one_line_error(p, *needles):
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnparity: "), p.stderr
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])


# ---- every conformance kind ----

@pytest.mark.parametrize("name", ["valid_all_dtypes", "valid_scalar_and_zero_size",
                                  "valid_empty", "valid_metadata", "valid_official_one_i32",
                                  "valid_leading_whitespace"])
def test_safetensors_kept_byte_for_byte(nnp, conformance, tmp_path, name):
    src = conformance / "safetensors" / f"{name}.safetensors"
    out = tmp_path / "out.safetensors"
    p = convert(nnp, src, out)
    assert p.stdout.startswith(f"{out}: ") and "(safetensors)" in p.stdout
    meta_in, want = load(src)
    meta, got = load(out)
    assert got == want  # names, order, dtypes, shapes and bytes
    assert meta.pop("nnparity.format") == "dump/1"
    prov = json.loads(meta.pop("nnparity.records"))
    assert [e["tensor"] for e in prov] == [t[0] for t in want]
    assert [e["seq"] for e in prov] == list(range(len(want)))
    if want:  # a fingerprint per record, written as any capture writes them (docs/sketch.md)
        sketches = meta.pop("nnparity.sketches")
        assert sketches.startswith("sketch/1:") and len(sketches) == 9 + 256 * len(want)
    assert meta == (meta_in or {})
    assert leftovers(out) == ["out.safetensors"]


def test_provenance_and_execution_order_kept(nnp, tmp_path):
    """An nnparity dump whose execution order differs from its data order keeps its order and
    each record's module, role, type and call; its own keys are rebuilt, the caller's kept."""
    src = tmp_path / "dump.safetensors"
    recs = [{"tensor": "c", "module": "blk.1", "role": "out0", "type": "Linear", "call": 0,
             "seq": 0},
            {"tensor": "a", "module": "blk.0", "role": "in0", "type": "LayerNorm", "call": 1,
             "seq": 1},
            {"tensor": "b", "seq": 2}]
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([7], np.int64),
              "c": np.full((2,), 0.5, np.float16)}
    write_safetensors(src, arrays, metadata={"nnparity.format": "dump/1",
                                             "nnparity.records": json.dumps(recs),
                                             "model": "tiny"})
    out = tmp_path / "out.safetensors"
    convert(nnp, src, out)
    meta, got = load(out)
    assert [t[0] for t in got] == ["c", "a", "b"]
    for name, dtype, shape, raw in got:
        assert np.array_equal(values(dtype, shape, raw), arrays[name])
    assert meta["model"] == "tiny" and meta["nnparity.format"] == "dump/1"
    prov = json.loads(meta["nnparity.records"])
    for e, want in zip(prov, recs):
        for k in ("tensor", "module", "role", "type", "call", "seq"):
            assert e.get(k, "" if k != "call" else 0) == want.get(k, "" if k != "call" else 0)
    ls = [json.loads(nnp("ls", "--json", f, check=0).stdout)["files"][0]["records"]
          for f in (src, out)]
    drop = ("file",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in ls[0]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in ls[1]]


def test_sharded_checkpoint(nnp, tmp_path):
    """Shards become one file, in index order; no shard may be the output."""
    shards = {"model-00001-of-00002.safetensors": {"embed": np.arange(8, dtype=np.float32),
                                                   "l0.w": np.ones((2, 2), np.float16)},
              "model-00002-of-00002.safetensors": {"l1.w": np.full((3,), 2, np.int32),
                                                   "head": np.zeros((1, 4), np.float64)}}
    weight_map, d = {}, tmp_path / "shards"
    d.mkdir()
    for f, tensors in shards.items():
        write_safetensors(d / f, tensors, metadata={"format": "pt"})
        weight_map.update({k: f for k in tensors})
    index = d / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    out = tmp_path / "merged.safetensors"
    assert "(safetensors-sharded)" in convert(nnp, index, out).stdout
    meta, got = load(out)
    assert [t[0] for t in got] == ["embed", "l0.w", "l1.w", "head"]
    arrays = {k: v for tensors in shards.values() for k, v in tensors.items()}
    for k, dtype, shape, raw in got:
        assert np.array_equal(values(dtype, shape, raw), arrays[k])
    assert meta["format"] == "pt"
    shard = d / "model-00002-of-00002.safetensors"
    before = shard.read_bytes()
    one_line_error(nnp("convert", d, shard), "would overwrite", shard.name)
    assert shard.read_bytes() == before


@pytest.mark.parametrize("name", ["stored.npz", "deflated.npz", "positional.npz",
                                  "fortran_f32.npy", "bigendian_i64.npy", "scalar_f32.npy",
                                  "empty_0x4.npy"])
def test_numpy(nnp, conformance, tmp_path, name):
    src = conformance / "numpy" / name
    out = tmp_path / "out.safetensors"
    convert(nnp, src, out)
    _, got = load(out)
    if name.endswith(".npz"):
        with np.load(src) as z:
            want = {k: z[k] for k in z.files}
    else:
        want = {name[:-4]: np.load(src)}
    expected = np.load(conformance / "numpy" / "EXPECTED.npz")
    assert [t[0] for t in got] == list(want)
    for k, dtype, shape, raw in got:
        w = want[k]
        assert shape == list(w.shape) and np.dtype(NP[dtype]) == w.dtype.newbyteorder("<")
        assert np.array_equal(values(dtype, shape, raw), w)
        if k in expected.files:  # the README's little-endian, C-ordered values
            assert np.array_equal(values(dtype, shape, raw).ravel(), expected[k].ravel())


def test_torch_state_dict(nnp, conformance, tmp_path):
    out = tmp_path / "out.safetensors"
    p = convert(nnp, conformance / "torch" / "state_dict.pt", out)
    assert "17 records" in p.stdout and "(torch)" in p.stdout
    _, got = load(out)
    expected = np.load(conformance / "torch" / "EXPECTED_state_dict.npz")
    assert [t[0] for t in got] == list(expected.files)
    dtypes = {"half": "F16", "bf16": "BF16", "f64": "F64", "i64": "I64", "i32": "I32",
              "i16": "I16", "i8": "I8", "u8": "U8", "bool": "BOOL"}
    for k, dtype, shape, raw in got:
        assert dtype == dtypes.get(k, "F32"), k
        assert shape == list(expected[k].shape)
        # views and the transposed tensor gathered into C order; bf16 exactly
        assert np.array_equal(values(dtype, shape, raw), expected[k]), k


def test_torch_nested_metadata(nnp, conformance, tmp_path):
    out = tmp_path / "out.safetensors"
    convert(nnp, conformance / "torch" / "nested.pt", out)
    meta, got = load(out)
    src = json.loads(nnp("ls", "--json", "--meta", conformance / "torch" / "nested.pt",
                         check=0).stdout)["files"][0]
    assert [t[0] for t in got] == [r["name"] for r in src["records"]]
    assert {k: v for k, v in meta.items() if not k.startswith("nnparity.")} == \
        src["metadata"] and meta


def test_gguf_types(nnp, conformance, tmp_path):
    src = conformance / "gguf" / "types.gguf"
    out = tmp_path / "out.safetensors"
    p = convert(nnp, src, out)
    assert "13 records" in p.stdout and "(gguf)" in p.stdout
    meta, got = load(out)
    expected = np.load(conformance / "gguf" / "types.expected.npz")
    assert [t[0] for t in got] == list(expected.files)
    for k, dtype, shape, raw in got:
        assert dtype == {"t.f16": "F16", "t.bf16": "BF16"}.get(k, "F32"), k
        assert shape == list(expected[k].shape)
        assert np.array_equal(values(dtype, shape, raw).astype(np.float32), expected[k]), k
    src_meta = json.loads(nnp("ls", "--json", "--meta", src, check=0).stdout)
    src_meta = src_meta["files"][0]["metadata"]
    assert {k: v for k, v in meta.items() if not k.startswith("nnparity.")} == src_meta
    assert meta["test.str"] == "h\u00e9llo w\u00f6rld"
    assert meta["gguf.tensor_type.t.q8_0"] == "Q8_0"


def test_gguf_types_to_f32(nnp, conformance, tmp_path):
    out = tmp_path / "out.safetensors"
    convert(nnp, "--dtype", "f32", conformance / "gguf" / "types.gguf", out)
    _, got = load(out)
    expected = np.load(conformance / "gguf" / "types.expected.npz")
    for k, dtype, shape, raw in got:
        assert dtype == "F32" and np.array_equal(values(dtype, shape, raw), expected[k]), k


# ---- --dtype ----

def special_values(dtype):
    rng = np.random.default_rng(7)
    x = np.concatenate([
        rng.standard_normal(2000) * np.logspace(-9, 6, 2000),
        [0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65519.99, 65520, 1e6, 6e-8, 3e-8, 2.9e-8,
         1e-45, 3.4e38, 1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8],
    ])
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def bf16_exact(x):
    """float64 -> bf16 bits, rounded once to nearest even (8 significant bits; subnormals below
    2^-126 on the 2^-133 grid), as the float32 bits' top half."""
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        m, e = np.frexp(x)
        r = np.ldexp(np.rint(m * 256) / 256, e)
        tiny = np.abs(x) < 2.0**-126
        r = np.where(tiny, np.rint(x * 2.0**133) / 2.0**133, r)
        f = r.astype(np.float32)
    return (f.view(np.uint32) >> 16).astype(np.uint16)


def check_float_bits(got_bits, want_bits, src):
    nan = np.isnan(src.astype(np.float64))
    assert np.array_equal(got_bits[~nan], want_bits[~nan])
    assert np.all((got_bits[nan] & 0x7FFF) > (0x7C00 if got_bits.dtype == np.uint16 else 0))


def test_dtype_f16_and_bf16(nnp, tmp_path):
    src = tmp_path / "in.safetensors"
    tensors = {"f64": special_values(np.float64), "f32": special_values(np.float32),
               "f16": special_values(np.float16).reshape(-1, 2),
               "i32": np.arange(-5, 5, dtype=np.int32), "mask": np.array([True, False, True]),
               "u8": np.array([0, 255], np.uint8)}
    write_safetensors(src, tensors)
    out16, outbf = tmp_path / "f16.safetensors", tmp_path / "bf16.safetensors"
    convert(nnp, "--dtype", "F16", src, out16)
    convert(nnp, "--dtype=bf16", src, outbf)
    _, g16 = load(out16)
    _, gbf = load(outbf)
    assert [t[0] for t in g16] == list(tensors) == [t[0] for t in gbf]
    for (k, d16, s16, r16), (_, dbf, sbf, rbf) in zip(g16, gbf):
        x = tensors[k]
        if x.dtype.kind not in "f":  # integers and bool unchanged
            assert (d16, r16) == (dbf, rbf) == ({"i32": "I32", "mask": "BOOL", "u8": "U8"}[k],
                                                x.tobytes())
            continue
        assert (d16, dbf) == ("F16", "BF16") and s16 == sbf == list(x.shape)
        # F16: numpy rounds float64 and float32 straight to nearest even, as nnparity does
        with np.errstate(over="ignore"):
            want16 = x.astype(np.float16).view(np.uint16).ravel()
        check_float_bits(np.frombuffer(r16, "<u2"), want16, x.ravel())
        got = np.frombuffer(rbf, "<u2")
        if x.dtype == np.float64:
            # torch goes float64 -> float32 -> bf16 (two roundings); nnparity rounds once
            check_float_bits(got, bf16_exact(x.ravel()), x.ravel())
        else:
            want = torch.from_numpy(x.ravel().copy()).to(torch.bfloat16).view(torch.int16)
            check_float_bits(got, want.numpy().view(np.uint16), x.ravel())


def test_dtype_refused(nnp, conformance, tmp_path):
    out = tmp_path / "out.safetensors"
    p = nnp("convert", "--dtype", "I8", conformance / "gguf" / "types.gguf", out, check=2)
    assert "--dtype takes F32, F16, BF16 or F64, not 'I8'" in p.stderr
    assert leftovers(out) == []


# ---- --only ----

def test_only(nnp, conformance, tmp_path):
    src = conformance / "gguf" / "types.gguf"
    out = tmp_path / "out.safetensors"
    p = convert(nnp, "--only", "t.q4*", "--only", "t.f16", src, out)
    assert "4 records" in p.stdout
    meta, got = load(out)
    assert [t[0] for t in got] == ["t.f16", "t.q4_0", "t.q4_1", "t.q4_k"]
    assert sorted(k for k in meta if k.startswith("gguf.tensor_type.")) == \
        ["gguf.tensor_type.t.q4_0", "gguf.tensor_type.t.q4_1", "gguf.tensor_type.t.q4_k"]
    assert meta["general.architecture"] == "nnparity-test"
    assert [e["seq"] for e in json.loads(meta["nnparity.records"])] == [0, 1, 2, 3]
    expected = np.load(conformance / "gguf" / "types.expected.npz")
    for k, dtype, shape, raw in got:
        assert np.array_equal(values(dtype, shape, raw).astype(np.float32), expected[k])


def test_only_matching_nothing(nnp, conformance, tmp_path):
    out = tmp_path / "out.safetensors"
    p = nnp("convert", "--only", "nothing*", conformance / "gguf" / "types.gguf", out)
    one_line_error(p, "types.gguf", "no tensor matches --only")
    assert leftovers(out) == []


# ---- GGUF files written by gguf_writer.py ----

def edge_blocks():
    """Blocks that exercise the quantizers' corners: all zeros, the largest magnitude both
    positive and negative (first one wins for Q4_0), ties, values at x*id + 8.5 = 16.5, tiny and
    large scales."""
    b = [np.zeros(32), np.r_[3.0, -3.0, np.linspace(-1, 1, 30)], np.r_[-3.0, 3.0, np.zeros(30)],
         np.arange(32) - 16.0, (np.arange(32) - 16.0) / 4, np.full(32, 1e-7),
         np.linspace(-6e4, 6e4, 32), np.r_[np.full(16, 0.5), np.full(16, -0.25)]]
    return np.concatenate(b).astype(np.float32)


def gguf_model(alignment=None):
    rng = np.random.default_rng(3)
    w = gguf_writer.GGUFWriter(alignment=alignment)
    w.add_string("general.architecture", "toy")
    w.add_u32("toy.block_count", 2)
    w.add_f32("toy.eps", 1e-5)
    w.add_i32("toy.offset", -3)
    w.add_bool("toy.flag", True)
    w.add_tensor("tok_embd", rng.standard_normal((5, 64)).astype(np.float32), "Q8_0")
    w.add_tensor("blk.0.norm", rng.standard_normal(7).astype(np.float32), "F32")
    w.add_tensor("blk.0.attn_q", rng.standard_normal((3, 96)), "Q4_0")
    w.add_tensor("blk.0.ffn", rng.standard_normal((2, 3, 32)) * 10, "Q8_0")
    w.add_tensor("blk.1.ffn", rng.standard_normal((2, 2, 3)), "F16")
    w.add_tensor("edges.q8", edge_blocks().reshape(-1, 64), "Q8_0")
    w.add_tensor("edges.q4", edge_blocks().reshape(-1, 32), "Q4_0")
    w.add_tensor("scalar_row", np.array([2.5], np.float32), "F32")
    return w


@pytest.mark.parametrize("alignment", [None, 64])
def test_gguf_writer_read_back(nnp, tmp_path, alignment):
    w = gguf_model(alignment)
    src = tmp_path / "toy.gguf"
    w.write(src)
    out = tmp_path / "out.safetensors"
    convert(nnp, src, out)
    meta, got = load(out)
    assert [t[0] for t in got] == list(w.expected)
    for k, dtype, shape, raw in got:
        want = w.expected[k]
        assert shape == list(want.shape)
        assert dtype == ("F16" if want.dtype == np.float16 else "F32"), k
        assert values(dtype, shape, raw).tobytes() == want.tobytes(), k
    assert meta["general.architecture"] == "toy" and meta["toy.block_count"] == "2"
    assert meta["toy.eps"] == "%.9g" % np.float32(1e-5)
    assert meta["toy.offset"] == "-3" and meta["toy.flag"] == "true"
    assert meta.get("general.alignment") == (None if alignment is None else str(alignment))
    types = {k[len("gguf.tensor_type."):]: v for k, v in meta.items()
             if k.startswith("gguf.tensor_type.")}
    assert types == {"tok_embd": "Q8_0", "blk.0.attn_q": "Q4_0", "blk.0.ffn": "Q8_0",
                     "edges.q8": "Q8_0", "edges.q4": "Q4_0"}


def test_gguf_writer_layout(tmp_path):
    """The writer's file, read back by its own small reader: dims reversed, offsets aligned."""
    w = gguf_model(alignment=64)
    src = tmp_path / "toy.gguf"
    w.write(src)
    raw = src.read_bytes()
    assert raw[:4] == b"GGUF" and struct.unpack_from("<IQQ", raw, 4) == (3, 8, 6)
    t = gguf_writer.read_tensors(src)
    assert t["blk.0.ffn"][:2] == (8, (2, 3, 32)) and t["blk.1.ffn"][:2] == (1, (2, 2, 3))
    assert t["blk.0.attn_q"][0] == 2 and len(t["blk.0.attn_q"][2]) == 3 * 3 * 18


def test_quantizers_match_the_conformance_file(conformance):
    """Quantizing gguf-py's dequantized values again gives back the file's very bytes (ggml's
    quantizers are idempotent on their own output), block layout and nibble order included."""
    t = gguf_writer.read_tensors(conformance / "gguf" / "types.gguf")
    expected = np.load(conformance / "gguf" / "types.expected.npz")
    assert gguf_writer.quantize_q8_0(expected["t.q8_0"].ravel())[2] == t["t.q8_0"][2]
    assert gguf_writer.quantize_q4_0(expected["t.q4_0"].ravel())[2] == t["t.q4_0"][2]


def test_q4_0_by_hand():
    """x = -16..15: the largest magnitude is -16, so d = 2, id = 0.5, q = min(15, int(x/2 + 8.5));
    byte j holds q[j] low and q[j + 16] high."""
    x = np.arange(32, dtype=np.float32) - 16
    d16, q, raw = gguf_writer.quantize_q4_0(x)
    want_q = np.minimum(15, np.floor(x / 2 + 8.5)).astype(np.uint8)
    assert d16[0] == 2 and np.array_equal(q, want_q)
    assert raw == np.float16(2).tobytes() + bytes(int(want_q[j] | want_q[j + 16] << 4)
                                                 for j in range(16))
    assert np.array_equal(gguf_writer.dequantize_q4_0(d16, q), 2 * (want_q.astype(np.float32) - 8))
    d16, q, raw = gguf_writer.quantize_q8_0(x)
    assert d16[0] == np.float16(np.float32(16) / np.float32(127))
    assert raw[2:3] == bytes([256 - 127])  # -16 -> -127


PEAK_RSS = """
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if p.returncode == 0 else -1)
sys.exit(p.returncode)
"""


def sanitized():
    return b"__asan_init" in BIN.read_bytes()


def test_gguf_memory_stays_bounded(nnp, tmp_path):
    """16 Q8_0 tensors dequantize to 256 MiB of float32; converting them never holds them all."""
    rng = np.random.default_rng(5)
    w = gguf_writer.GGUFWriter()
    x = rng.standard_normal((1024, 4096)).astype(np.float32)
    w.add_tensor("t0", x, "Q8_0")
    name, shape, ggml_type, raw = w.tensors[0]
    for i in range(1, 16):  # the same blocks under other names: quantized once
        w.tensors.append((f"t{i}", shape, ggml_type, raw))
    src = tmp_path / "big.gguf"
    w.write(src)
    out = tmp_path / "out.safetensors"
    # A small Python runs the command and reports its children's peak RSS: a child forked
    # straight from pytest would count pytest's own pages until it execs.
    p = subprocess.run([sys.executable, "-c", PEAK_RSS, str(BIN), "convert", str(src), str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "16 records, 256 MiB" in p.stdout
    peak_kib = int(p.stdout.splitlines()[-1])
    if not sanitized():  # ASan keeps freed memory in quarantine
        assert peak_kib < 160 * 1024, peak_kib
    want = w.expected["t0"].reshape(-1)
    with open(out, "rb") as f:
        hlen = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(hlen))
    data = np.memmap(out, dtype="<f4", mode="r", offset=8 + hlen)
    for i in (0, 7, 15):
        b, e = header[f"t{i}"]["data_offsets"]
        assert header[f"t{i}"]["shape"] == [1024, 4096]
        assert np.array_equal(data[b // 4:e // 4], want), i
    del data


# ---- errors leave nothing behind ----

def truncated_gguf(conformance, tmp_path):
    raw = (conformance / "gguf" / "types.gguf").read_bytes()
    f = tmp_path / "cut.gguf"
    f.write_bytes(raw[:len(raw) - 700])
    return f


@pytest.mark.parametrize("kind", ["truncated_gguf", "hostile_os_system", "hostile_builtins_eval",
                                  "hostile_unknown_opcode", "legacy_format",
                                  "bad_MetadataIncompleteBuffer_truncated", "unsupported_object",
                                  "missing"])
def test_bad_input(nnp, conformance, tmp_path, kind):
    src = {"truncated_gguf": lambda: truncated_gguf(conformance, tmp_path),
           "missing": lambda: tmp_path / "missing.safetensors",
           "bad_MetadataIncompleteBuffer_truncated":
               lambda: conformance / "safetensors" / f"{kind}.safetensors",
           "unsupported_object": lambda: conformance / "numpy" / f"{kind}.npy"}.get(
        kind, lambda: conformance / "torch" / f"{kind}.pt")()
    out = tmp_path / "out.safetensors"
    one_line_error(nnp("convert", src, out), src)
    assert leftovers(out) == []


def test_failure_halfway_leaves_nothing(nnp, tmp_path):
    """The second member's CRC is wrong, found only when its data is inflated: after the first
    record was written. The writer is aborted and an existing OUT is left as it was."""
    src = tmp_path / "bad.npz"
    np.savez_compressed(src, a=np.arange(1000, dtype=np.float32), b=np.ones(1000, np.float32))
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo("b.npy")
    bad_crc = struct.pack("<I", info.CRC ^ 1)
    good_crc = struct.pack("<I", info.CRC)
    for sig, at in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):
        i = raw.find(sig, info.header_offset if sig == b"PK\x03\x04" else 0)
        while raw[i + at:i + at + 4] != good_crc:
            i = raw.find(sig, i + 1)
        raw[i + at:i + at + 4] = bad_crc
    src.write_bytes(bytes(raw))
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"previous")
    one_line_error(nnp("convert", "--force", src, out), "bad.npz", "b.npy", "CRC-32")
    assert leftovers(out) == ["out.safetensors"] and out.read_bytes() == b"previous"


FAILING_RENAME = r"""
#include <errno.h>
int rename(const char *from, const char *to) { (void)from; (void)to; errno = EIO; return -1; }
"""


def test_failed_close_leaves_nothing(nnp, conformance, tmp_path):
    """The last step, the rename into place, fails (a library preloaded to make it so): the
    writer would keep OUT.partial for `recover`; convert removes it."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or sanitized():  # ASan's runtime must come first among the libraries
        pytest.skip("needs a C compiler and an unsanitized build")
    so = tmp_path / "rename.so"
    subprocess.run([cc, "-shared", "-fPIC", "-x", "c", "-", "-o", str(so)],
                   input=FAILING_RENAME, text=True, check=True)
    out = tmp_path / "out.safetensors"
    p = subprocess.run([str(BIN), "convert", str(conformance / "gguf" / "types.gguf"), str(out)],
                       capture_output=True, text=True, env={**os.environ, "LD_PRELOAD": str(so)})
    one_line_error(p, "out.safetensors.partial: cannot rename", "Input/output error")
    assert "stay in" not in p.stderr and leftovers(out) == []


def test_unwritable_output(nnp, conformance, tmp_path):
    src = conformance / "gguf" / "types.gguf"
    out = tmp_path / "no" / "such" / "dir" / "out.safetensors"
    one_line_error(nnp("convert", src, out), out, "cannot create")
    assert not (tmp_path / "no").exists()
    d = tmp_path / "dir.safetensors"
    d.mkdir()
    one_line_error(nnp("convert", src, d), d, "is a directory")
    assert list(d.iterdir()) == [] and leftovers(d) == ["dir.safetensors"]
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            one_line_error(nnp("convert", src, ro / "out.safetensors"), "cannot create")
            assert list(ro.iterdir()) == []
        finally:
            ro.chmod(0o755)


# ---- the output never overwrites the input ----

def partial_dump(path, tensors):
    """What a killed capture leaves (docs/dump-format.md): a placeholder header naming the
    journal, the data, and one journal line per record."""
    room = 128
    hdr = json.dumps({"__metadata__": {"nnparity.format": "dump/1",
                                       "nnparity.partial": f"{path.name}.journal"}}).encode()
    data, lines, off = b"", [json.dumps({"nnparity.journal": 1, "room": room})], 0
    for seq, (name, x) in enumerate(tensors.items()):
        raw = x.astype("<f4").tobytes()
        lines.append(json.dumps({"tensor": name, "module": name, "role": "out0", "call": 0,
                                 "seq": seq, "dtype": "F32", "shape": list(x.shape),
                                 "data_offsets": [off, off + len(raw)]}))
        data += raw
        off += len(raw)
    Path(f"{path}.partial").write_bytes(struct.pack("<Q", room) + hdr.ljust(room) + data)
    Path(f"{path}.journal").write_text("\n".join(lines) + "\n")


def test_refuses_to_overwrite_the_input(nnp, conformance, tmp_path):
    src = tmp_path / "in.safetensors"
    src.write_bytes((conformance / "safetensors" / "valid_all_dtypes.safetensors").read_bytes())
    before = src.read_bytes()
    one_line_error(nnp("convert", src, src), "OUT is IN")
    os.link(src, tmp_path / "link.safetensors")
    one_line_error(nnp("convert", src, tmp_path / "link.safetensors"),
                   "link.safetensors: would overwrite", "in.safetensors")
    assert src.read_bytes() == before and leftovers(src) == ["in.safetensors"]

    # a capture's partial file is OUT.partial for OUT = the capture's own path
    cap = tmp_path / "cap.safetensors"
    partial_dump(cap, {"x": np.arange(4.0), "y": np.ones((2, 2))})
    before = Path(f"{cap}.partial").read_bytes()
    one_line_error(nnp("convert", f"{cap}.partial", cap),
                   "cap.safetensors: would overwrite", "cap.safetensors.partial")
    assert Path(f"{cap}.partial").read_bytes() == before and not cap.exists()
    # converting it elsewhere reads what was captured and leaves the capture recoverable
    out = tmp_path / "copy.safetensors"
    assert "(safetensors-partial)" in convert(nnp, f"{cap}.partial", out).stdout
    meta, got = load(out)
    assert [t[0] for t in got] == ["x", "y"] and "nnparity.partial" not in meta
    assert [e["module"] for e in json.loads(meta["nnparity.records"])] == ["x", "y"]
    # an OUT whose journal exists belongs to a capture that can still be recovered
    one_line_error(nnp("convert", src, cap), "cap.safetensors.journal", "recover")
    assert Path(f"{cap}.partial").read_bytes() == before


def test_existing_output_is_replaced(nnp, conformance, tmp_path):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old")
    # a file nnparity did not write is replaced only with --force (docs/cli.md)
    one_line_error(nnp("convert", conformance / "numpy" / "stored.npz", out),
                   "out.safetensors: exists and is a file, not a safetensors file nnparity wrote",
                   "--force")
    assert out.read_bytes() == b"old"
    nnp("convert", "--force", conformance / "numpy" / "stored.npz", out, check=0)
    assert len(load(out)[1]) == 6 and leftovers(out) == ["out.safetensors"]
    # one nnparity wrote is replaced as it is
    convert(nnp, conformance / "numpy" / "f32.npy", out)
    assert len(load(out)[1]) == 1 and leftovers(out) == ["out.safetensors"]


def test_usage(nnp, tmp_path):
    p = nnp("help", "convert", check=0)
    assert p.stdout.startswith("usage: nnparity convert [--dtype DTYPE] [--only PATTERN]... "
                               "[--force] IN OUT")
    assert "convert" in nnp("--help", check=0).stdout
    for args in ([], ["a"], ["a", "b", "c"], ["--bogus", "a", "b"], ["--dtype"]):
        p = nnp("convert", *args, check=2)
        assert p.stderr.startswith("nnparity convert: ")
        assert p.stderr.splitlines()[1:] == ["see 'nnparity convert --help'"]
