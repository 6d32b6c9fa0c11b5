"""The nnparity command on GGUF files: `ls --meta` shows the conformance file's key-value pairs
as a small independent parser written here reads them, `ls` and `stats --json` agree with the
float32 values gguf-py's dequantizers give (types.expected.npz), and bad files fail in one line."""
import json
import struct

import numpy as np
import pytest

pytestmark = pytest.mark.cli

NAMES = ["t.f32", "t.f16", "t.bf16", "t.q8_0", "t.q4_0", "t.q4_1", "t.q5_0", "t.q5_1",
         "t.q2_k", "t.q3_k", "t.q4_k", "t.q5_k", "t.q6_k"]

# GGUF value types: struct format of each scalar
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}


def quoted(s):
    """A JSON string literal, escaping as nnparity does (control characters as \\u00XX)."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20:
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def shown(vtype, value):
    if vtype == 6:
        return "%.9g" % value
    if vtype == 12:
        return "%.17g" % value
    if vtype == 7:
        return "true" if value else "false"
    return str(value)


def read_kv(path):
    """The key-value pairs of a GGUF file, as the text nnparity shows for each."""
    raw = path.read_bytes()
    pos = 24
    assert raw[:4] == b"GGUF"
    (nkv,) = struct.unpack_from("<Q", raw, 16)

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", raw, pos)
        s = raw[pos + 8:pos + 8 + n].decode("utf-8")
        pos += 8 + n
        return s

    def scalar(t):
        nonlocal pos
        (v,) = struct.unpack_from(SCALARS[t], raw, pos)
        pos += struct.calcsize(SCALARS[t])
        return shown(t, v)

    out = {}
    for _ in range(nkv):
        key = string()
        (t,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if t == 8:
            out[key] = string()
        elif t == 9:
            et, n = struct.unpack_from("<IQ", raw, pos)
            pos += 12
            items = [quoted(string()) if et == 8 else scalar(et) for _ in range(n)]
            more = f", ... ({n} items)" if n > 16 else ""
            out[key] = "[" + ", ".join(items[:16]) + more + "]"
        else:
            out[key] = scalar(t)
    return out


@pytest.fixture
def gguf(conformance):
    return conformance / "gguf" / "types.gguf"


@pytest.fixture
def expected(conformance):
    return np.load(conformance / "gguf" / "types.expected.npz")


def test_ls_meta_shows_every_pair(nnp, gguf):
    kv = read_kv(gguf)
    assert len(kv) == 15
    # every scalar type, the non-ASCII string and both arrays are in the file
    assert kv["test.str"] == "h\u00e9llo w\u00f6rld"
    assert kv["test.arr_i32"] == "[1, -2, 3]"
    assert kv["test.arr_str"] == '["a", "bc", ""]'
    assert kv["test.f64"] == "%.17g" % np.pi
    p = nnp("ls", "--meta", gguf, check=0)
    lines = p.stdout.splitlines()
    # quantized tensors present F32 and store their blocks (q8_0: 34 bytes a block of 32)
    assert lines[0] == f"{gguf}: gguf, 13 records, 19.2 KiB, stored in 4.07 KiB"
    assert lines[1].split()[-2:] == ["size", "stored"]
    assert [l.split()[-4:] for l in lines[2:] if " t.q8_0 " in l] == [["1.00", "KiB", "272", "B"]]
    meta = lines.index("metadata (25):")
    shown_pairs = [l[2:].split(": ", 1) for l in lines[meta + 1:]]
    assert [k for k, _ in shown_pairs[:15]] == list(kv)
    assert dict(shown_pairs[:15]) == kv
    types = dict(shown_pairs[15:])
    assert types == {f"gguf.tensor_type.{n}": n[2:].upper() for n in NAMES[3:]}


def test_ls_json_records_and_meta(nnp, gguf, expected):
    doc = json.loads(nnp("ls", "--json", "--meta", gguf, check=0).stdout)
    (f,) = doc["files"]
    assert f["format"] == "gguf"
    assert {k: v for k, v in f["metadata"].items() if not k.startswith("gguf.")} == read_kv(gguf)
    assert [r["name"] for r in f["records"]] == NAMES
    for r in f["records"]:
        want = expected[r["name"]]
        assert r["shape"] == list(want.shape)
        dtype = {"t.f16": "F16", "t.bf16": "BF16"}.get(r["name"], "F32")
        assert r["dtype"] == dtype
        assert r["nbytes"] == want.size * {"F32": 4}.get(dtype, 2)


def test_stats_json_matches_numpy(nnp, gguf, expected):
    doc = json.loads(nnp("stats", "--json", gguf, check=0).stdout)
    assert doc["format"] == "gguf" and doc["first_nonfinite"] is None
    got = {r["name"]: r["stats"] for r in doc["records"]}
    assert sorted(got) == sorted(NAMES)
    for name in NAMES:
        x = expected[name].astype(np.float64).ravel()
        s = got[name]
        assert s["count"] == x.size and s["finite"] == x.size and s["nan"] == 0
        assert s["zeros"] == (x == 0).sum()
        # the dequantized values are exact, so the extremes are too
        assert s["min"] == x.min() and s["max"] == x.max(), name
        assert s["abs_max"] == np.abs(x).max()
        assert s["mean"] == pytest.approx(x.mean(), rel=1e-12, abs=1e-12)
        assert s["std"] == pytest.approx(x.std(), rel=1e-10)


def gguf_bytes(version=3, tensor_type=0, offset=0, data=b"\0" * 16, kv=b"", nkv=0):
    """One F32 tensor 'w' of 4 elements (by default) after `nkv` pairs given as raw bytes."""
    head = b"GGUF" + struct.pack("<IQQ", version, 1, nkv) + kv
    head += struct.pack("<Q", 1) + b"w" + struct.pack("<IQIQ", 1, 4, tensor_type, offset)
    head += b"\0" * (-len(head) % 32)
    return head + data


@pytest.mark.parametrize("name,raw,needle", [
    ("v1", gguf_bytes(version=1), "GGUF version 1 is not read"),
    ("q8_1", gguf_bytes(tensor_type=9, data=b"\0" * 64), "Q8_1"),
    ("unknown_type", gguf_bytes(tensor_type=77), "ggml type 77"),
    ("unaligned", gguf_bytes(offset=8, data=b"\0" * 32), "not a multiple of the alignment"),
    ("past_end", gguf_bytes(data=b"\0" * 15), "past the end of the file"),
    ("dup_key", gguf_bytes(nkv=2, kv=2 * (struct.pack("<Q", 1) + b"k" + struct.pack("<IB", 0, 1))),
     "appears twice"),
])
def test_bad_gguf_one_line(nnp, tmp_path, name, raw, needle):
    f = tmp_path / f"{name}.gguf"
    f.write_bytes(raw)
    p = nnp("ls", f, check=2)
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"nnparity: {f}: byte ")
    assert needle in lines[0]


def test_valid_built_file_opens(nnp, tmp_path):
    f = tmp_path / "ok.gguf"
    f.write_bytes(gguf_bytes(data=np.array([1, 2, 3, 4], "<f4").tobytes()))
    doc = json.loads(nnp("stats", "--json", f, check=0).stdout)
    (r,) = doc["records"]
    assert r["name"] == "w" and r["shape"] == [4]
    assert r["stats"]["max"] == 4.0 and r["stats"]["mean"] == 2.5
