"""`nnparity diff`: metrics against numpy, verdicts and exit codes, pairing through rules,
unmatched records, the execution-order check, and a torchvision model captured in float64,
float32 and bfloat16."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import LIB, ROOT, expected_verdicts, write_safetensors

pytestmark = pytest.mark.cli


def records_meta(order):
    """nnparity provenance listing tensors in the given execution order."""
    return {"nnparity.format": "dump/1",
            "nnparity.records": json.dumps([{"tensor": t, "seq": i} for i, t in enumerate(order)])}


def diff_json(nnp, ref, port, *args, check):
    return json.loads(nnp("diff", "--json", ref, port, *args, check=check).stdout)


def test_metrics_match_numpy(nnp, tmp_path):
    rng = np.random.default_rng(1)
    r = rng.standard_normal((64, 33))
    p = (r + rng.standard_normal(r.shape) * 1e-3).astype(np.float32)
    write_safetensors(tmp_path / "r.safetensors", {"x": r})
    write_safetensors(tmp_path / "p.safetensors", {"x": p})
    doc = diff_json(nnp, tmp_path / "r.safetensors", tmp_path / "p.safetensors",
                    "--atol", "1e-3", "--rtol", "1e-3", check=1)
    m = doc["pairs"][0]["metrics"]
    d = p.astype(np.float64) - r
    assert m["count"] == r.size
    assert m["mse"] == pytest.approx(np.mean(d * d), rel=1e-12)
    assert m["mean_abs"] == pytest.approx(np.mean(np.abs(d)), rel=1e-12)
    assert m["max_abs"] == np.abs(d).max()
    assert m["max_index"] == list(np.unravel_index(np.abs(d).argmax(), r.shape))
    assert m["ref_at_max"] == r.flat[np.abs(d).argmax()]
    assert m["rel_l2"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(r), rel=1e-12)
    p64 = p.astype(np.float64)
    assert m["cosine"] == pytest.approx(r.ravel() @ p64.ravel() /
                                        np.linalg.norm(r) / np.linalg.norm(p64), rel=1e-12)
    assert m["pcc"] == pytest.approx(np.corrcoef(r.ravel(), p64.ravel())[0, 1], rel=1e-12)
    assert m["snr_db"] == pytest.approx(10 * np.log10((r * r).sum() / (d * d).sum()), rel=1e-12)
    fails = (np.abs(d) > 1e-3 + 1e-3 * np.abs(r)).sum()
    assert m["allclose_fail"] == fails and fails > 0
    assert doc["pairs"][0]["verdict"] == "fail" and doc["first_divergence"] == 0


def test_verdicts_rules_unmatched_and_exit_codes(nnp, tmp_path):
    rng = np.random.default_rng(2)
    layers = {f"blocks.{i}/out0": rng.standard_normal((4, 8)).astype(np.float32) for i in range(4)}
    ref = tmp_path / "ref.safetensors"
    write_safetensors(ref, {**layers, "head/out0": np.ones(3, np.float32)})
    port = {k.replace("blocks.", "blk."): v.copy() for k, v in layers.items()}
    port["blk.2/out0"][1, 3] += 0.5          # one element off: a divergence at block 2
    port["scratch/out0"] = np.zeros(2, np.float32)
    port["extra/out0"] = np.zeros(2, np.float32)
    pf = tmp_path / "port.safetensors"
    write_safetensors(pf, port)
    rules = tmp_path / "port.rules"
    rules.write_text("# the port's block names\nrename ^blk\\. blocks.\nignore ^scratch/\n")
    p = nnp("diff", "--rules", rules, ref, pf, check=1)
    assert "First divergence in execution order, at seq 2:" in p.stdout
    assert "blocks.2/out0 (fail)" in p.stdout
    assert "max-abs 0.5 at [1, 3]" in p.stdout
    assert "only in the reference (1):\n  head/out0" in p.stdout
    assert "only in the port (1):\n  extra/out0" in p.stdout   # scratch is ignored
    doc = diff_json(nnp, ref, pf, "--rules", rules, check=1)
    assert [x["verdict"] for x in doc["pairs"]] == ["pass", "pass", "fail", "pass"]
    assert doc["unmatched_ref"] == ["head/out0"] and doc["unmatched_port"] == ["extra/out0"]
    # without the rules (and without alignment) nothing pairs
    doc = diff_json(nnp, ref, pf, "--no-align", check=0)
    assert doc["pairs"] == [] and len(doc["unmatched_ref"]) == 5
    # loose enough tolerances make it agree
    nnp("diff", "--rules", rules, "--atol", "0.6", ref, pf, check=0)
    # a JSON report file is written whole
    out = tmp_path / "report.json"
    nnp("diff", "--rules", rules, "--json-file", out, ref, pf, check=1)
    assert json.loads(out.read_text())["schema"] == "nnparity.diff/1"


def test_warn_shape_and_dtype_mismatch(nnp, tmp_path):
    r = np.arange(4000, dtype=np.float32)
    p = r.copy()
    p[7] += 1    # one element in 4000: under 0.1%, a warning
    write_safetensors(tmp_path / "r.safetensors", {"a": r, "b": np.zeros((2, 3), np.float32),
                                                   "c": np.zeros(3, np.float32)})
    write_safetensors(tmp_path / "p.safetensors", {"a": p, "b": np.zeros((3, 2), np.float32),
                                                   "c": np.zeros(3, np.int32)})
    doc = diff_json(nnp, tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=1)
    v = {x["ref"]: x["verdict"] for x in doc["pairs"]}
    assert v == {"a": "warn", "b": "shape", "c": "dtype"}
    text = nnp("diff", tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=1).stdout
    assert "reference F32 [2, 3], port F32 [3, 2]: not compared" in text


def test_order_violation(nnp, tmp_path):
    t = {n: np.full(2, i, np.float32) for i, n in enumerate(["a", "b", "c", "d"])}
    write_safetensors(tmp_path / "r.safetensors", t, records_meta(["a", "b", "c", "d"]))
    write_safetensors(tmp_path / "p.safetensors", t, records_meta(["a", "c", "b", "d"]))
    p = nnp("diff", tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=1)
    assert "order: the port runs seq 2 earlier than the pair before it" in p.stdout
    assert ">      2      1  c" in p.stdout
    doc = diff_json(nnp, tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=1)
    assert doc["order_violation"] == 2 and doc["first_divergence"] is None
    assert doc["order_violation_seq"] == 2 and doc["first_divergence_seq"] is None


@pytest.mark.parametrize("args,needle", [
    (("x",), "REF and PORT are needed"),
    (("--atol", "-1", "a", "b"), "--atol takes a non-negative number"),
    (("--rtol", "nan", "a", "b"), "--rtol takes a non-negative number"),
    (("--bogus", "a", "b"), "unknown option"),
])
def test_usage(nnp, args, needle):
    assert needle in nnp("diff", *args, check=2).stderr


def test_bad_rules_file(nnp, tmp_path):
    write_safetensors(tmp_path / "r.safetensors", {"a": np.zeros(1, np.float32)})
    (tmp_path / "bad.rules").write_text("rename (x y\n")
    p = nnp("diff", "--rules", tmp_path / "bad.rules", tmp_path / "r.safetensors",
            tmp_path / "r.safetensors", check=2)
    assert "bad.rules: line 1, column 8: bad regex" in p.stderr


VIT = r"""
import copy, sys, torch, torchvision
sys.path.insert(0, sys.argv[1])
import nnparity
torch.backends.mkldnn.enabled = False  # torch's own bf16 kernels: see tests/pairs/common.py
torch.manual_seed(0)
m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                         hidden_dim=32, mlp_dim=64, num_classes=10).eval()
x = torch.randn(1, 3, 32, 32)
for name, dtype in [("f32", torch.float32), ("f64", torch.float64), ("bf16", torch.bfloat16)]:
    mod = copy.deepcopy(m).to(dtype)
    with torch.no_grad(), nnparity.capture(mod, f"{sys.argv[2]}/vit_{name}.safetensors"):
        mod(x.to(dtype))
"""


def test_torchvision_float64_float32_bfloat16(nnp, tmp_path):
    import os
    env = dict(os.environ, NNPARITY_LIB=str(LIB))
    subprocess.run([sys.executable, "-c", VIT, str(ROOT / "python"), str(tmp_path)], check=True,
                   env=env)
    f64, f32, bf16 = (tmp_path / f"vit_{n}.safetensors" for n in ("f64", "f32", "bf16"))
    doc = diff_json(nnp, f64, f32, check=0)      # float32 agrees with float64
    assert len(doc["pairs"]) == 58 and all(x["verdict"] == "pass" for x in doc["pairs"])
    assert doc["pairs"][5]["atol"] == 1e-5 and doc["pairs"][5]["rtol"] == 1e-4
    doc = diff_json(nnp, f32, bf16, check=1)     # bfloat16 does not
    # The first divergence must be the first pair that the verdicts worked out here fail, and a
    # layer that computes (the script runs torch's own bf16 kernels, oneDNN's off: those of CPUs
    # with AVX512-BF16 add in float32, and every layer would pass).
    want = expected_verdicts(f32, bf16, 1e-2, 4e-2)
    assert {p["ref"]: p["verdict"] for p in doc["pairs"]} == want
    first = doc["pairs"][doc["first_divergence"]]
    assert first["ref"] == next(p["ref"] for p in doc["pairs"] if want[p["ref"]] == "fail")
    assert first["type"] in ("Conv2d", "Linear")
    assert first["port_dtype"] == "BF16" and first["rtol"] == 4e-2
    # the model's input, rounded to bf16, is within bf16's tolerance
    assert doc["pairs"][0]["ref"] == "model/in0" and doc["pairs"][0]["verdict"] == "pass"
    comp = doc["components"]
    assert set(comp) == {"embedding", "attention", "mlp", "normalization", "head", "other"}
    assert comp["mlp"]["pairs"] == 24 and comp["mlp"]["fail"] > 0
    assert sum(c["fail"] for c in comp.values()) == sum(v == "fail" for v in want.values())
    # bf16's error (its rounding is up to 2^-9 relative), not float32's (1e-7)
    assert comp["embedding"]["pairs"] == 2 and comp["embedding"]["rel_l2_max"] > 1e-3
    assert sum(c["pairs"] for c in comp.values()) == 58


def test_nonfinite_origin_and_markdown(nnp, tmp_path):
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    from conftest import EXAMPLES
    subprocess.run([str(EXAMPLES / "tiny_mlp"), str(good)], check=True)
    subprocess.run([str(EXAMPLES / "tiny_mlp"), str(bad), "--bad-eps"], check=True)
    doc = diff_json(nnp, good, bad, check=1)
    origin = doc["pairs"][doc["nonfinite_origin"]]
    assert origin["ref"] == "block.norm/out0#1" and origin["type"] == "LayerNorm"
    text = nnp("diff", good, bad, check=1).stdout
    assert "NaN/Inf: first appear at block.norm/out0#1 [LayerNorm] (seq 9)" in text
    md = tmp_path / "report.md"
    nnp("diff", "--markdown", md, good, bad, check=1)
    m = md.read_text()
    assert m.startswith("### nnparity diff: the port diverges from the reference")
    assert "**First divergence:** seq 1, `block.norm/out0` (LayerNorm), fail: max-abs" in m
    assert "**NaN/Inf first appear at:** seq 9, `block.norm/out0#1`" in m
    assert "| normalization | 4 | 2 | 0 | 2 |" in m and "</details>" in m
    p = nnp("diff", "--markdown", tmp_path / "no" / "r.md", good, bad, check=2)
    assert len(p.stderr.splitlines()) == 1 and "r.md: cannot write" in p.stderr
    nnp("diff", "--markdown", md, good, good, check=0)
    assert "agrees with the reference" in md.read_text() and "<details>" not in md.read_text()


def test_nonfinite_origin_follows_inputs(nnp, tmp_path):
    """NaN made by layer a reaches layer b through b's input: a is the origin, though b's
    output is compared first in the reference's order."""
    nan = np.array([1.0, np.nan], np.float32)
    ok = np.array([1.0, 2.0], np.float32)
    order = ["b/in0", "b/out0", "a/in0", "a/out0"]
    meta = {"nnparity.format": "dump/1", "nnparity.records": json.dumps(
        [{"tensor": t, "module": t.split("/")[0], "role": t.split("/")[1], "seq": i}
         for i, t in enumerate(order)])}
    write_safetensors(tmp_path / "r.safetensors", {t: ok for t in order}, meta)
    # the port runs a before b, and a's output feeds b
    port_order = ["a/in0", "a/out0", "b/in0", "b/out0"]
    meta_p = {"nnparity.format": "dump/1", "nnparity.records": json.dumps(
        [{"tensor": t, "module": t.split("/")[0], "role": t.split("/")[1], "seq": i}
         for i, t in enumerate(port_order)])}
    write_safetensors(tmp_path / "p.safetensors",
                      {"a/in0": ok, "a/out0": nan, "b/in0": nan, "b/out0": nan}, meta_p)
    doc = diff_json(nnp, tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=1)
    assert doc["pairs"][doc["nonfinite_origin"]]["ref"] == "a/out0"


def test_json_fields_are_the_documented_ones(nnp, tmp_path):
    """Every field the JSON report writes is in docs/report-schema.md, and the report has every
    documented top-level and pair field."""
    import re
    doc_text = (ROOT / "docs" / "report-schema.md").read_text()
    tables = {}
    for title, body in re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", doc_text, re.S | re.M):
        names = set()
        for cell in re.findall(r"^\| (.+?) \|", body, re.M):
            names.update(re.findall(r"`([a-z_0-9]+)`", cell))
        tables[title] = names
    rng = np.random.default_rng(3)
    r = rng.standard_normal((4, 8)).astype(np.float32)
    write_safetensors(tmp_path / "r.safetensors", {"a/out0": r, "mlp/out0": r, "x/out0": r})
    write_safetensors(tmp_path / "p.safetensors", {"a/out0": r + 1, "mlp/out0": r,
                                                   "y/out0": r[:2]})
    rep = diff_json(nnp, tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=1)
    assert set(rep) == tables["Top level"]
    pair = rep["pairs"][0]
    assert set(pair) | {"port_parts"} == tables["A pair"]
    assert set(pair["metrics"]) == tables["Metrics"]
    for comp in rep["components"].values():
        assert set(comp) == tables["Components"]


def test_text_report_fits_80_columns(nnp, tmp_path):
    """Long module paths (torchvision's ViT has 70-character names) do not push the text report
    past 80 columns: a table row's name goes on its own line, whole; the file paths, which the
    user chose, are the only lines allowed to be longer."""
    rng = np.random.default_rng(5)
    ref, port = {}, {}
    for i in range(8):
        for role in ("self_attention.out_proj/out0", "mlp.fc2/out0", "ln_1/out0"):
            name = f"encoder.layers.encoder_layer_{i}.{role}"
            ref[name] = rng.standard_normal((4, 16)).astype(np.float32)
            port[name] = ref[name] + np.float32(1e-3 if i > 4 else 0)
    port["encoder.layers.encoder_layer_6.mlp.fc2/out0"][0, 0] = np.nan
    port["renamed.encoder.layers.encoder_layer_7.self_attention.out_proj/out0"] = \
        port.pop("encoder.layers.encoder_layer_7.self_attention.out_proj/out0")
    write_safetensors(tmp_path / "r.safetensors", ref)
    write_safetensors(tmp_path / "p.safetensors", port)
    out = nnp("diff", "--all", tmp_path / "r.safetensors", tmp_path / "p.safetensors",
              check=1).stdout
    long = [l for l in out.splitlines()
            if len(l) > 80 and not l.startswith(("reference: ", "port:      "))]
    assert not long, "\n".join(long)
    # every name is still there whole, for a search to find
    for name in ref:
        assert f"\n        {name}\n" in out or f"  {name}\n" in out
    assert "NaN/Inf: first appear at encoder.layers.encoder_layer_6.mlp.fc2/out0" in out
    # the renamed record is paired by alignment, the pair listed on two lines
    assert "paired by automatic alignment (1;" in out
    assert ("  renamed.encoder.layers.encoder_layer_7.self_attention.out_proj/out0\n"
            "    -> encoder.layers.encoder_layer_7.self_attention.out_proj/out0\n") in out


def test_a_pair_that_fails_only_by_nan_says_so(nnp, tmp_path):
    """A port that writes NaN where the reference is finite, and agrees everywhere else: the
    first divergence names the NaN, not "max-abs 0", in text, Markdown and JSON."""
    ref = {"a/out0": np.arange(8, dtype=np.float32).reshape(2, 4),
           "b/out0": np.ones((2, 4), np.float32)}
    port = {k: v.copy() for k, v in ref.items()}
    port["a/out0"][0, 1] = port["a/out0"][1, 2] = port["a/out0"][1, 3] = np.nan
    port["a/out0"][0, 0] = np.inf
    write_safetensors(tmp_path / "r.safetensors", ref, records_meta(list(ref)))
    write_safetensors(tmp_path / "p.safetensors", port, records_meta(list(port)))
    md = tmp_path / "d.md"
    out = nnp("diff", tmp_path / "r.safetensors", tmp_path / "p.safetensors", "--markdown", md,
              check=1).stdout
    first = out[out.index("First divergence"):]
    assert ("  3 NaN and 1 Inf in the port where the reference is finite\n"
            "  finite elements: max-abs 0 at [0, 2]") in first, first
    assert "3 NaN and 1 Inf in the port where the reference is finite; finite elements: " \
        in md.read_text()
    doc = diff_json(nnp, tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=1)
    m = doc["pairs"][0]["metrics"]
    assert (m["nan_new"], m["inf_new"], m["nan_port"], m["inf_port"]) == (3, 1, 3, 1)
    assert doc["pairs"][1]["metrics"]["nan_new"] == 0
