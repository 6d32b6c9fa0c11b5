"""Fingerprints stored by captures (docs/sketch.md), seen through `nnparity ls --sketch`: a
capture by the C API and one by the PyTorch bridge store, for every record, the sketch its data
gives; the stored ones are what is read; and a stored value that does not fit its records is
one line and exit 2 from the command that needs it, not from one that does not."""
import base64
import json
import struct
import subprocess

import numpy as np
import pytest

from conftest import EXAMPLES, LIB, one_line_error, write_safetensors

KEY = "nnparity.sketches"


def rewrite_meta(src, dst, key, value):
    """Copy the safetensors file src to dst with metadata `key` set to value (None: removed)."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.setdefault("__metadata__", {})
    if value is None:
        meta.pop(key, None)
    else:
        meta[key] = value
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    dst.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return dst


def stored_value(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])["__metadata__"].get(KEY)


def listed(nnp, path):
    p = nnp("ls", "--json", "--sketch", path, check=0)
    return json.loads(p.stdout)["files"][0]["records"]


def sketches(nnp, path):
    return [r["sketch"] for r in listed(nnp, path)]


def assert_same(stored, computed):
    """Equal but for the projection, which is stored to 11 bits of projection / norm."""
    assert len(stored) == len(computed)
    for s, c in zip(stored, computed):
        assert ("last" in s) == ("last" in c)
        for a, b in [(s, c)] + ([(s["last"], c["last"])] if "last" in s else []):
            assert a["count"] == b["count"] and a["norm"] == b["norm"] and a["sum"] == b["sum"]
            assert np.max(np.abs(np.subtract(a["proj"], b["proj"]))) <= b["norm"] * 2.0**-11
        assert s["hash"] == c["hash"] and s["nonfinite"] == c["nonfinite"]


def check_capture(nnp, path, tmp_path):
    value = stored_value(path)
    assert value.startswith("sketch/1:")
    records = listed(nnp, path)
    stored = [r["sketch"] for r in records]
    # an entry a stored tensor: a record of an earlier record's tensor (same_as) has its entry
    assert len(value) == len("sketch/1:") + 256 * sum("same_as" not in r for r in records)
    plain = rewrite_meta(path, tmp_path / "plain.safetensors", KEY, None)
    assert_same(stored, sketches(nnp, plain))
    return stored


def test_c_capture_stores_what_its_data_gives(nnp, tmp_path):
    out = tmp_path / "c.safetensors"
    subprocess.run([str(EXAMPLES / "tiny_mlp"), str(out)], check=True)
    stored = check_capture(nnp, out, tmp_path)
    assert all(len(s["hash"]) == 16 for s in stored)


def test_bridge_capture_stores_what_its_data_gives(nnp, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("NNPARITY_LIB", str(LIB))
    import nnparity

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.GELU(),
                                torch.nn.LayerNorm(64), torch.nn.Linear(64, 8))
    out = tmp_path / "bridge.safetensors"
    with nnparity.capture(model, out):
        model(torch.randn(2, 9, 40))
    with nnparity.capture(model.bfloat16(), tmp_path / "bf16.safetensors"):
        model(torch.randn(2, 9, 40).bfloat16())
    stored = check_capture(nnp, out, tmp_path)
    # [2, 9, D] records carry the sketch of their last rows
    assert all(s["last"]["count"] == 2 * s["count"] // 18 for s in stored)
    # the model's input and the first Linear's input are one tensor under two names, stored once
    assert stored[0]["hash"] == stored[1]["hash"]
    records = listed(nnp, out)
    assert records[1]["same_as"] == records[0]["name"] and records[1]["stored_bytes"] == 0
    check_capture(nnp, tmp_path / "bf16.safetensors", tmp_path)


def test_stored_sketches_are_the_ones_read(nnp, tmp_path):
    out = tmp_path / "c.safetensors"
    subprocess.run([str(EXAMPLES / "tiny_mlp"), str(out)], check=True)
    before = sketches(nnp, out)
    raw = bytearray(out.read_bytes())
    raw[-1] ^= 0x40  # a byte of the last record's data, behind the stored sketches' back
    changed = tmp_path / "changed.safetensors"
    changed.write_bytes(bytes(raw))
    assert sketches(nnp, changed) == before
    computed = sketches(nnp, rewrite_meta(changed, tmp_path / "plain.safetensors", KEY, None))
    assert computed[-1]["hash"] != before[-1]["hash"]


def test_files_without_stored_sketches_are_computed(nnp, tmp_path):
    x = np.arange(96, dtype=np.float32).reshape(2, 3, 16)
    f = tmp_path / "plain.safetensors"
    write_safetensors(f, {"a": x, "b": x.copy(), "c": x.reshape(6, 16), "d": x + 1})
    s = sketches(nnp, f)
    assert s[0]["hash"] == s[1]["hash"]  # the same bytes, shape and dtype
    assert s[0]["hash"] != s[2]["hash"]  # the same bytes, another shape
    assert s[0]["hash"] != s[3]["hash"]
    assert s[0]["norm"] == pytest.approx(float(np.linalg.norm(x.astype(np.float64))))
    assert s[0]["sum"] == float(x.sum(dtype=np.float64))
    assert s[0]["last"]["count"] == 32
    # the text table has the hash and the norm
    p = nnp("ls", "--sketch", f, check=0)
    assert "hash" in p.stdout.splitlines()[1] and s[0]["hash"] in p.stdout


def entry_edit(value, offset, data):
    """value with bytes [offset, offset+len(data)) of its first entry replaced."""
    entry = bytearray(base64.b64decode(value[9:9 + 256]))
    entry[offset:offset + len(data)] = data
    return value[:9] + base64.b64encode(bytes(entry)).decode() + value[9 + 256:]


@pytest.mark.parametrize("edit, message", [
    (lambda v: v[:-5], "holds"),                                    # truncated
    (lambda v: "sketch/2:" + v[9:], "version 'sketch/2' is not one this nnparity reads"),
    (lambda v: v[9:], "does not start with 'sketch/1:'"),
    (lambda v: v + v[9:9 + 256], "holds"),                          # one entry too many
    (lambda v: entry_edit(v, 16, struct.pack("<Q", 1 << 62)),       # a huge claimed count
     "entry 0 counts 4611686018427387904 elements, but tensor"),
    (lambda v: entry_edit(v, 24, struct.pack("<d", float("nan"))),
     "entry 0 has a norm that is negative or not finite"),
    (lambda v: entry_edit(v, 24, struct.pack("<d", -1.0)),
     "entry 0 has a norm that is negative or not finite"),
    (lambda v: entry_edit(v, 40, struct.pack("<H", 0x7c00)),        # an infinite projection
     "entry 0 has a projection that is not finite"),
    (lambda v: v[:20] + "!" + v[21:], "character outside base64's alphabet"),
    (lambda v: "", "does not start with 'sketch/1:'"),
])
def test_hostile_stored_values(nnp, tmp_path, edit, message):
    out = tmp_path / "c.safetensors"
    subprocess.run([str(EXAMPLES / "tiny_mlp"), str(out)], check=True)
    bad = rewrite_meta(out, tmp_path / "bad.safetensors", KEY, edit(stored_value(out)))
    nnp("ls", bad, check=0)  # read only by what needs them
    for args in (["ls", "--sketch"], ["ls", "--json", "--sketch"]):
        got = one_line_error(nnp(*args, bad), bad)
        assert got.startswith(f"metadata '{KEY}'"), got
        assert message in got, got
