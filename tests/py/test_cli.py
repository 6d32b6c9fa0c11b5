"""Golden tests of the nnparity command: usage and exit codes, `ls` and `stats` output on the
conformance files and on files written here, and one-line errors for every bad input."""
import json

import numpy as np
import pytest

from conftest import EXAMPLES, write_safetensors

pytestmark = pytest.mark.cli


def test_help_and_version(nnp):
    p = nnp("--help", check=0)
    assert "usage: nnparity" in p.stdout and "ls" in p.stdout and "stats" in p.stdout
    assert nnp("--version", check=0).stdout.startswith("nnparity 0.")
    assert "usage: nnparity ls" in nnp("help", "ls", check=0).stdout
    assert "usage: nnparity stats" in nnp("stats", "--help", check=0).stdout


@pytest.mark.parametrize("args,needle", [
    ((), "usage: nnparity"),
    (("frobnicate",), "unknown command 'frobnicate'"),
    (("help", "frobnicate"), "no command 'frobnicate'"),
    (("ls",), "no FILE given"),
    (("ls", "--bogus", "x"), "unknown option '--bogus'"),
    (("stats", "-j", "0", "x"), "-j takes a thread count"),
    (("stats", "a", "b", "c"), "too many arguments"),
])
def test_usage_errors(nnp, args, needle):
    p = nnp(*args, check=2)
    assert needle in p.stderr
    assert p.stdout == ""


def test_ls_golden(nnp, conformance):
    f = conformance / "safetensors" / "valid_all_dtypes.safetensors"
    p = nnp("ls", f, check=0)
    lines = p.stdout.splitlines()
    assert lines[0] == f"{f}: safetensors, 12 records, 35 B"
    assert lines[1].split() == ["seq", "name", "dtype", "shape", "size"]
    rows = [l.split() for l in lines[2:]]
    assert [r[1] for r in rows] == ["f64", "f32", "i32", "f16", "bf16", "i16", "u8", "i8",
                                    "bool", "e4m3", "e5m2", "i64"]
    assert rows[0] == ["0", "f64", "F64", "[1]", "8", "B"]
    assert rows[9] == ["9", "e4m3", "F8_E4M3", "[1]", "1", "B"]


def test_ls_scalar_zero_size_and_meta(nnp, conformance):
    p = nnp("ls", "--meta", conformance / "safetensors" / "valid_scalar_and_zero_size.safetensors",
            conformance / "safetensors" / "valid_metadata.safetensors", check=0)
    assert "     0  s     F64      []" in p.stdout
    assert "     1  z     F32      [2, 0]" in p.stdout
    assert "  format: pt" in p.stdout and "  note: x" in p.stdout


def test_ls_json(nnp, conformance):
    p = nnp("ls", "--json", "--meta", conformance / "safetensors" / "valid_metadata.safetensors",
            check=0)
    doc = json.loads(p.stdout)
    assert doc["schema"] == "nnparity.ls/1"
    (f,) = doc["files"]
    assert f["format"] == "safetensors" and f["metadata"] == {"format": "pt", "note": "x"}
    (r,) = f["records"]
    assert r["name"] == "a" and r["dtype"] == "F32" and r["shape"] == [2] and r["nbytes"] == 8


BAD = sorted(p.name for p in __import__("conftest").CONFORMANCE.glob("safetensors/bad_*"))


@pytest.mark.parametrize("name", BAD)
def test_bad_safetensors_one_line(nnp, conformance, name):
    f = conformance / "safetensors" / name
    p = nnp("ls", f, check=2)
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"nnparity: {f}: ")
    rule = name[len("bad_"):].split("_")[0].split(".")[0]
    if rule[0].isupper():
        # the file's name says the rule; bad_InvalidHeader_utf8 declares a header length
        # past the end of the file, which the reference reader checks first
        expect = "InvalidHeaderLength" if name == "bad_InvalidHeader_utf8.safetensors" else rule
        assert f"({expect})" in lines[0]


def test_missing_file(nnp, tmp_path):
    p = nnp("stats", tmp_path / "nope.safetensors", check=2)
    assert p.stderr.strip() == f"nnparity: {tmp_path / 'nope.safetensors'}: cannot open: " \
                               "No such file or directory"


def test_stats_match_numpy(nnp, tmp_path):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((64, 33)).astype(np.float32)
    b = (rng.standard_normal(5000) * 1e3 + 1e6).astype(np.float64)
    c = rng.integers(-100, 100, size=(10, 10)).astype(np.int16)
    c[0, :5] = 0
    d = rng.standard_normal(300).astype(np.float16)
    d[[3, 7]] = np.nan
    d[11] = np.inf
    f = tmp_path / "t.safetensors"
    write_safetensors(f, {"a": a, "b": b, "c": c, "d": d})
    doc = json.loads(nnp("stats", "--json", f, check=0).stdout)
    assert doc["schema"] == "nnparity.stats/1"
    got = {r["name"]: r["stats"] for r in doc["records"]}
    for name, arr in {"a": a, "b": b, "c": c, "d": d}.items():
        x = arr.astype(np.float64).ravel()
        fin = x[np.isfinite(x)]
        s = got[name]
        assert s["count"] == x.size and s["finite"] == fin.size
        assert s["nan"] == np.isnan(x).sum()
        assert s["pos_inf"] == np.isposinf(x).sum() and s["neg_inf"] == np.isneginf(x).sum()
        assert s["zeros"] == (fin == 0).sum()
        assert s["min"] == fin.min() and s["max"] == fin.max()
        assert s["abs_max"] == np.abs(fin).max()
        assert s["mean"] == pytest.approx(fin.mean(), rel=1e-12, abs=1e-12)
        assert s["std"] == pytest.approx(fin.std(), rel=1e-10)
    assert doc["first_nonfinite"] == "d"


def test_stats_first_nonfinite_in_execution_order(nnp, tmp_path):
    f = tmp_path / "bad.safetensors"
    import subprocess
    subprocess.run([str(EXAMPLES / "tiny_mlp"), str(f), "--bad-eps"], check=True)
    p = nnp("stats", f, check=0)
    assert "first NaN/Inf: block.norm/out0#1 (seq 9, LayerNorm): 8 NaN" in p.stdout
    assert nnp("stats", "--check-finite", f, check=1).returncode == 1
    assert nnp("stats", "--check-finite", f, "fc2/out0", check=1)
    # the first call's tensors are clean
    nnp("stats", "--check-finite", f, "block.*/out0", check=0)
    p = nnp("stats", f, "no-such-layer", check=2)
    assert "no tensor matches 'no-such-layer'" in p.stderr


def test_stats_pattern_and_threads(nnp, tmp_path):
    f = tmp_path / "p.safetensors"
    write_safetensors(f, {"enc.0.attn": np.ones(3, np.float32),
                          "enc.1.attn": np.zeros(3, np.float32),
                          "enc.0.mlp": np.arange(3, dtype=np.float32)})
    p = nnp("stats", "-j", "3", f, "attn", check=0)
    assert "2 of 3 records" in p.stdout and "enc.0.mlp" not in p.stdout
    p = nnp("stats", "--threads", "1", f, "enc.?.mlp", check=0)
    assert "1 of 3 records" in p.stdout


def test_output_error_is_reported(nnp, conformance):
    import subprocess
    from conftest import BIN
    with open("/dev/full", "w") as full:
        p = subprocess.run([str(BIN), "ls", str(conformance / "safetensors" /
                                                "valid_all_dtypes.safetensors")],
                           stdout=full, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 2
    assert "cannot write the output" in p.stderr


@pytest.mark.parametrize("name,needle", [
    ("unsupported_complex64.npy", "complex"),
    ("unsupported_object.npy", "object"),
    ("unsupported_structured.npy", "structured"),
    ("v2_header_structured.npy", "structured"),
])
def test_unsupported_npy(nnp, conformance, name, needle):
    p = nnp("ls", conformance / "numpy" / name, check=2)
    assert len(p.stderr.splitlines()) == 1
    assert name in p.stderr and needle in p.stderr.lower()


def test_json_refuses_names_that_are_not_utf8(nnp, conformance, tmp_path):
    f = tmp_path / "bad\udcffname.npy"  # surrogateescape: the byte 0xff in the file name
    f.write_bytes((conformance / "numpy" / "f32.npy").read_bytes())
    for cmd in ("ls", "stats"):
        p = nnp(cmd, "--json", f, check=2)
        assert p.stdout == "" and "not valid UTF-8" in p.stderr
    assert "bad" in nnp("ls", f, check=0).stdout


KILLED_CAPTURE = r"""
import ctypes, os, signal, sys
lib = ctypes.CDLL(sys.argv[1])
lib.nnp_capture_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
lib.nnp_tap.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32,
                        ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p]
assert lib.nnp_capture_open(sys.argv[2].encode(), None) == 0
shape = (ctypes.c_uint64 * 1)(1000)
buf = (ctypes.c_float * 1000)()
for k in range(7):
    for i in range(1000):
        buf[i] = k + i / 1000
    assert lib.nnp_tap(b"layer", b"out0", 2, 1, shape, buf) == 0
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_recover_after_sigkill(nnp, tmp_path):
    import subprocess
    import sys
    from conftest import LIB
    f = tmp_path / "cap.safetensors"
    p = subprocess.run([sys.executable, "-c", KILLED_CAPTURE, str(LIB), str(f)])
    assert p.returncode == -9
    assert not f.exists()
    p = nnp("ls", f"{f}.partial", check=0)
    assert "safetensors-partial, 7 records" in p.stdout
    assert "layer/out0#6" in p.stdout
    assert nnp("recover", f, check=0).stdout == "recovered 7 records\n"
    assert not (tmp_path / "cap.safetensors.partial").exists()
    assert not (tmp_path / "cap.safetensors.journal").exists()
    doc = json.loads(nnp("stats", "--json", f, check=0).stdout)
    assert [r["stats"]["min"] for r in doc["records"]] == pytest.approx(list(range(7)))
    assert doc["records"][6]["call"] == 6
    p = nnp("recover", f, check=2)
    assert "cap.safetensors.partial: cannot open" in p.stderr
    nnp("recover", check=2)
    nnp("recover", "--force", f, check=2)
