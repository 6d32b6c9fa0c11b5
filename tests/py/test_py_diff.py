"""nnparity.diff(): the diff of two dumps as Python objects, over the library calls `nnparity diff`
makes. Its to_dict() must equal the CLI's `diff --json` report on the same files (a planted
scale in one channel with its profile and hints, a capture that pairs only by alignment, rules
given as a file and as text, a shape mismatch, new NaN, a torch model with a bug and its
culprit); bad input raises NnparityError naming the file; and repeated diffs release what the
library allocated (process memory and mappings stay flat over 200 diffs)."""
import ctypes
import json

import numpy as np
import pytest
import torch

import nnparity
from conftest import write_safetensors

RNG = np.random.default_rng(11)


def dump(path, records):
    """records: [(name, module type, array)] in execution order, with nnparity's metadata."""
    meta = [{"tensor": n, "module": n.split("/")[0], "role": n.split("/")[1], "type": t,
             "call": 0, "seq": k} for k, (n, t, _) in enumerate(records)]
    write_safetensors(path, {n: a for n, _, a in records},
                      {"nnparity.format": "dump/1", "nnparity.records": json.dumps(meta)})
    return str(path)


def cli_json(nnp, ref, port, *args):
    p = nnp("diff", "--json", *args, ref, port)
    assert p.returncode in (0, 1), (p.returncode, p.stderr)
    return json.loads(p.stdout), p.returncode


def same_as_cli(nnp, ref, port, cli_args=(), **kw):
    res = nnparity.diff(ref, port, **kw)
    doc, rc = cli_json(nnp, ref, port, *cli_args)
    assert res.to_dict() == doc
    assert res.exit_code == rc
    # what a notebook prints: one line per fact, never the whole report
    assert repr(res).startswith("<DiffResult ")
    return res, doc


def scaled_channel(tmp_path):
    ok = RNG.standard_normal((4, 8)).astype(np.float32)
    conv = RNG.standard_normal((1, 16, 8, 8)).astype(np.float32)
    bad = conv.copy()
    bad[:, 7] *= 1.5
    after = RNG.standard_normal((1, 16)).astype(np.float32)
    ref = dump(tmp_path / "ref.safetensors",
               [("fc/out0", "Linear", ok), ("conv/out0", "Conv2d", conv),
                ("head/out0", "Linear", after)])
    port = dump(tmp_path / "port.safetensors",
                [("fc/out0", "Linear", ok.copy()), ("conv/out0", "Conv2d", bad),
                 ("head/out0", "Linear", after + 1)])
    return ref, port


def test_planted_scale_gives_the_cli_report_with_profile_and_hints(nnp, tmp_path):
    ref, port = scaled_channel(tmp_path)
    res, doc = same_as_cli(nnp, ref, port)
    assert not res.agree and res.exit_code == 1
    assert [p.verdict for p in res.pairs] == ["pass", "fail", "fail"]
    first = res.first_divergence
    assert first is res["conv/out0"] and res.first_divergence_index == 1
    assert (first.ref, first.port, first.evidence, first.confidence) == \
        ("conv/out0", "conv/out0", "name", 1.0)
    assert (first.ref_dtype, first.ref_shape, first.port_shape) == ("F32", [1, 16, 8, 8],
                                                                    [1, 16, 8, 8])
    assert first.atol == pytest.approx(1e-5) and first.rtol == pytest.approx(1e-4)
    assert first.profile.where == "all 64 failing elements lie in axis 1 index 7 (channel 7)"
    channel = first.profile.axes[1]
    assert (channel.name, channel.size, channel.fail[7], sum(channel.fail)) == \
        ("channel", 16, 64, 64)
    assert channel.sq_share[7] == pytest.approx(1.0)
    hint = first.hints[0]
    assert hint.kind == "scale" and hint.value == pytest.approx(1.5, rel=1e-6)
    assert hint.fit > 0.999 and doc["pairs"][1]["hints"][0]["axis"] == hint.axis
    assert hint.text == "port = 1.5 x reference in axis 1 index 7 (channel 7)"
    assert first.metrics.max_index[1] == 7 and first.metrics.rel_l2 > 0
    assert res["fc/out0"].profile is None and res["fc/out0"].hints == []
    assert res.failing() == [res.pairs[1], res.pairs[2]]
    assert "first divergence" in repr(res) and "channel 7" in repr(res)
    # without explaining, the same pairs and metrics, no profiles or hints
    quiet = nnparity.diff(ref, port, explain=False)
    assert quiet.first_divergence.metrics == first.metrics
    assert quiet.first_divergence.profile is None and quiet.first_divergence.hints == []


def test_tolerances_given_are_the_clis(nnp, tmp_path):
    ref, port = scaled_channel(tmp_path)
    res, _ = same_as_cli(nnp, ref, port, ("--atol", "10", "--rtol", "0"), atol=10, rtol=0)
    assert res.agree and res.exit_code == 0 and res.first_divergence is None
    assert all(p.atol == 10 and p.rtol == 0 for p in res.pairs)
    # one given: the other is 0, as on the command line
    res, _ = same_as_cli(nnp, ref, port, ("--atol", "10"), atol=10)
    assert all(p.rtol == 0 for p in res.pairs)


def aligned_captures(tmp_path):
    """Names that differ throughout: only alignment pairs them. blk.2.ffn carries a bug and the
    port has a scratch record of its own."""
    ref, port = [], []
    for i in range(4):
        for r, p, t in (("ln", "attn_norm", "LayerNorm"), ("mlp", "ffn", "MLP")):
            x = RNG.standard_normal((5, 8)).astype(np.float32)
            ref.append((f"encoder.layer_{i}.{r}/out0", t, x))
            port.append((f"blk.{i}.{p}/out0", t, x + (1.0 if (i, p) == (2, "ffn") else 0.0)))
    port.append(("blk.3.scratch/out0", "Buffer", np.zeros(16, np.float32)))
    return dump(tmp_path / "ref.safetensors", ref), dump(tmp_path / "port.safetensors", port)


def test_alignment_pairs_as_the_cli_does(nnp, tmp_path):
    ref, port = aligned_captures(tmp_path)
    res, doc = same_as_cli(nnp, ref, port)
    assert res.aligned == 8 and all(p.aligned for p in res.pairs)
    assert (res.first_divergence.ref, res.first_divergence.port) == \
        ("encoder.layer_2.mlp/out0", "blk.2.ffn/out0")
    assert res.unmatched_port == ["blk.3.scratch/out0"] and res.unmatched_ref == []
    assert doc["first_divergence_seq"] == res.first_divergence.ref_seq
    # align=False is --no-align: names alone pair nothing here
    res, _ = same_as_cli(nnp, ref, port, ("--no-align",), align=False)
    assert res.pairs == [] and len(res.unmatched_ref) == 8 and res.agree


def renamed_and_transposed(tmp_path):
    w = RNG.standard_normal((6, 4)).astype(np.float32)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    ref = dump(tmp_path / "ref.safetensors", [("enc.proj/out0", "Linear", w),
                                              ("enc.out/out0", "Linear", x)])
    port = dump(tmp_path / "port.safetensors", [("model.proj/out0", "Linear", w.T.copy()),
                                                ("model.out/out0", "Linear", x[:, :2].copy())])
    return ref, port


RULES = """# the port's names and layout
rename ^model\\.(.*) enc.\\1
transpose ^enc\\.proj/out0 1,0
"""


def test_rules_as_a_file_and_as_text(nnp, tmp_path):
    ref, port = renamed_and_transposed(tmp_path)
    rules = tmp_path / "port.rules"
    rules.write_text(RULES)
    res, doc = same_as_cli(nnp, ref, port, ("--rules", rules), rules=rules)
    proj, out = res["enc.proj/out0"], res["enc.out/out0"]
    assert (proj.port, proj.verdict, proj.adapters) == ("model.proj/out0", "pass", "transpose 1,0")
    # a shape mismatch is reported, not compared: no metrics
    assert out.verdict == "shape" and out.metrics is None and "metrics" not in doc["pairs"][1]
    assert res.first_divergence is out
    assert nnparity.diff(ref, port, rules=str(rules)).to_dict() == doc
    assert nnparity.diff(ref, port, rules=RULES).to_dict() == doc
    # one rule line is text too
    one = nnparity.diff(ref, port, rules=r"rename ^model\.(.*) enc.\1")
    assert one["enc.proj/out0"].verdict == "shape"


def test_new_nan_is_where_nonfinite_values_start(nnp, tmp_path):
    a = RNG.standard_normal((4, 4)).astype(np.float32)
    b = RNG.standard_normal((4, 4)).astype(np.float32)
    bad = b.copy()
    bad[1, 2] = np.nan
    ref = dump(tmp_path / "ref.safetensors", [("a/out0", "Linear", a), ("b/out0", "Linear", b)])
    port = dump(tmp_path / "port.safetensors", [("a/out0", "Linear", a.copy()),
                                                ("b/out0", "Linear", bad)])
    res, doc = same_as_cli(nnp, ref, port)
    assert res.nonfinite_origin is res["b/out0"] and res.nonfinite_origin_index == 1
    m = res["b/out0"].metrics
    assert m.nan_new == 1 and m.nan_port == 1
    assert "nonfinite" in [h.kind for h in res["b/out0"].hints]
    # floats the JSON report writes as null stay floats on the objects
    assert all(v is None or isinstance(v, (int, float, list))
               for v in doc["pairs"][1]["metrics"].values())
    assert isinstance(m.snr_db, float)


class Net(torch.nn.Module):
    def __init__(self, bug=False):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(8, 16)
        self.act = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(16, 4)
        self.bug = bug

    def forward(self, x):
        h = self.act(self.fc1(x))
        if self.bug:
            h = h * 2  # code of the model itself, between two modules
        return self.fc2(h)


def test_a_captured_model_with_a_bug_names_its_culprit(nnp, tmp_path):
    x = torch.randn(3, 8)
    paths = []
    for bug in (False, True):
        path = tmp_path / f"{'port' if bug else 'ref'}.safetensors"
        model = Net(bug)
        with torch.no_grad(), nnparity.capture(model, path):
            model(x)
        paths.append(str(path))
    res, doc = same_as_cli(nnp, *paths)
    assert not res.agree
    assert res.first_divergence.ref == "fc2/in0"
    c = res.culprit
    assert c is not None and c.kind == "code" and c.port_module == ""
    assert c.after == "act/out0" and c.before == "fc2/in0"
    assert "culprit: code (top level)" in repr(res)
    assert set(res.components) == set(doc["components"])


def test_bad_input_raises_with_the_file_named(tmp_path):
    ref, port = scaled_channel(tmp_path)
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(nnparity.NnparityError, match=f"^{missing}: "):
        nnparity.diff(ref, missing)
    with pytest.raises(nnparity.NnparityError, match=f"^{missing}: "):
        nnparity.diff(missing, port)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(nnparity.NnparityError, match=f"^{bad}: ") as e:
        nnparity.diff(ref, bad)
    assert e.value.status == 2  # NNP_ERR_FORMAT
    rules = tmp_path / "missing.rules"
    with pytest.raises(nnparity.NnparityError, match=f"^{rules}: "):
        nnparity.diff(ref, port, rules=rules)
    with pytest.raises(nnparity.NnparityError, match="^<rules>: line 2"):
        nnparity.diff(ref, port, rules="ignore ^x\nfrobnicate a b\n")


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]


def heap():
    """Bytes the C heap holds (glibc's mallinfo2: in use, and in mmap'ed blocks); None where
    the C library has no mallinfo2."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = MallInfo2
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd


def memory():
    """(resident bytes, mappings, C heap bytes) of this process."""
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * 4096
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    return rss, maps, heap()


def test_repeated_diffs_release_what_the_library_allocated(tmp_path):
    # 4 MiB a side, failing pairs with profiles and hints: a diff, dump or rules object left
    # behind would hold its mapping (and the pages it read) after diff() returns
    big = RNG.standard_normal((256, 4096)).astype(np.float32)
    bad = big.copy()
    bad[:, 5] *= 2
    ref = dump(tmp_path / "ref.safetensors", [("a/out0", "Linear", big)])
    port = dump(tmp_path / "port.safetensors", [("a/out0", "Linear", bad)])
    rules = "rename ^x y\ntolerance ^a 1e-5 1e-4\n"
    for _ in range(20):  # warm up: allocator pools, thread stacks
        nnparity.diff(ref, port, rules=rules, threads=2)
    rss0, maps0, heap0 = memory()
    for _ in range(200):
        res = nnparity.diff(ref, port, rules=rules, threads=2)
    rss1, maps1, heap1 = memory()
    assert res.first_divergence.hints
    assert maps1 - maps0 <= 4, (maps0, maps1)
    # 200 leaked dumps would hold 200 x 8 MiB of mapped data they read
    assert rss1 - rss0 < 32 << 20, (rss0, rss1)
    # a leaked diff holds some 70 KiB of heap here, a leaked rules object some 1.5 KiB: 200 of
    # either are well over the allowance; what Python keeps (results freed) is well under it
    if heap0 is not None:
        assert heap1 - heap0 < 200 << 10, (heap0, heap1)


def test_no_leak_on_failure(tmp_path):
    ref, _ = scaled_channel(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    for _ in range(10):
        with pytest.raises(nnparity.NnparityError):
            nnparity.diff(ref, bad, rules="rename ^a b")
    maps0 = memory()[1]
    for _ in range(100):
        with pytest.raises(nnparity.NnparityError):
            nnparity.diff(ref, bad, rules="rename ^a b")
    assert memory()[1] - maps0 <= 4


def test_layouts_of_the_diff_structs_are_checked():
    from nnparity import _lib
    for struct in _lib.DIFF_STRUCTS:
        _lib.check_layout(_lib.lib(), struct)

    class Drifted(ctypes.Structure):  # nnp_hint with value before the axes
        _c_name = "nnp_hint"
        _fields_ = [("kind", ctypes.c_int), ("fit", ctypes.c_double),
                    ("value", ctypes.c_double), ("axis", ctypes.c_int32),
                    ("axis2", ctypes.c_int32), ("text", ctypes.c_char_p)]

    with pytest.raises(nnparity.NnparityError, match="nnp_hint differs .*value 16 != 24"):
        _lib.check_layout(_lib.lib(), Drifted)
