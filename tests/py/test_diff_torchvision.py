"""`nnparity diff` on a real network: torchvision's resnet18 (random weights, a 64x64 input)
captured through the PyTorch bridge in float64 (the reference), float32 and bfloat16. float32
must agree with float64 on every layer under the default tolerances; bfloat16 must be flagged,
its error growing with depth: the input (rounded to bf16) passes, the first divergence is a
convolution of the first stage, and the last stage fails."""
import json
import os
import subprocess
import sys

import pytest

from conftest import LIB, ROOT, expected_verdicts

pytestmark = pytest.mark.cli

CAPTURE = r"""
import copy, sys, torch, torchvision
sys.path.insert(0, sys.argv[1])
import nnparity
torch.backends.mkldnn.enabled = False  # torch's own bf16 kernels: see tests/pairs/common.py
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
x = torch.randn(2, 3, 64, 64)
for name, dtype in [("f64", torch.float64), ("f32", torch.float32), ("bf16", torch.bfloat16)]:
    m = copy.deepcopy(model).to(dtype)
    with torch.no_grad(), nnparity.capture(m, f"{sys.argv[2]}/resnet18_{name}.safetensors"):
        m(x.to(dtype))
"""


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    out = tmp_path_factory.mktemp("resnet18")
    env = dict(os.environ, NNPARITY_LIB=str(LIB))
    subprocess.run([sys.executable, "-c", CAPTURE, str(ROOT / "python"), str(out)], check=True,
                   env=env, timeout=300)
    return {n: out / f"resnet18_{n}.safetensors" for n in ("f64", "f32", "bf16")}


def diff(nnp, ref, port, check):
    return json.loads(nnp("diff", "--json", ref, port, check=check).stdout)


def by_name(doc):
    return {p["ref"]: p for p in doc["pairs"]}


def test_float32_agrees_with_float64(nnp, captures):
    doc = diff(nnp, captures["f64"], captures["f32"], check=0)
    pairs = doc["pairs"]
    # every module call's input and output (the blocks call their ReLU twice)
    assert len(pairs) == 152 and not doc["unmatched_ref"] and not doc["unmatched_port"]
    assert doc["first_divergence"] is None and doc["order_violation"] is None
    assert all(p["verdict"] in ("pass", "warn") for p in pairs)
    assert all(p["port_dtype"] == "F32" and p["atol"] == 1e-5 and p["rtol"] == 1e-4
               for p in pairs)
    # float32's rounding, nothing more: about 1e-7 relative, growing slowly with depth
    assert max(p["metrics"]["rel_l2"] for p in pairs) < 1e-5
    assert all(p["metrics"]["cosine"] > 0.999999 for p in pairs)
    assert pairs[0]["ref"] == "model/in0" and pairs[0]["metrics"]["max_abs"] == 0


def test_bfloat16_is_flagged_where_it_starts(nnp, captures):
    doc = diff(nnp, captures["f64"], captures["bf16"], check=1)
    pairs, named = doc["pairs"], by_name(doc)
    assert len(pairs) == 152
    assert all(p["port_dtype"] == "BF16" and p["atol"] == 1e-2 and p["rtol"] == 4e-2
               for p in pairs)
    # the input, rounded to bf16 (at most 2^-9 relative), is within bf16's tolerance
    assert named["model/in0"]["verdict"] == "pass"
    # The first divergence is a convolution of the first stage: the first pair that the
    # verdicts worked out here fail (the capture runs torch's own bf16 kernels, oneDNN's off:
    # those of CPUs with AVX512-BF16 add in float32, and every layer would pass).
    want = expected_verdicts(captures["f64"], captures["bf16"], 1e-2, 4e-2)
    assert {p["ref"]: p["verdict"] for p in pairs} == want
    first = doc["first_divergence"]
    assert first == next(i for i, p in enumerate(pairs) if want[p["ref"]] == "fail")
    assert pairs[first]["type"] == "Conv2d"
    assert first < [p["ref"] for p in pairs].index("layer1/out0")
    assert all(p["verdict"] in ("pass", "warn") for p in pairs[:first])
    # deeper is worse: the error grows with depth and the last stage fails
    rel = {n: named[n]["metrics"]["rel_l2"] for n in
           ("model/in0", "conv1/out0", "layer1/out0", "layer4/out0")}
    assert rel["model/in0"] < rel["conv1/out0"] < rel["layer1/out0"] < rel["layer4/out0"]
    deep = [p for p in pairs if p["ref"].startswith("layer4")]
    assert deep and all(p["verdict"] == "fail" for p in deep)
    assert all(p["metrics"]["allclose_fail_pct"] > 0.1 for p in deep)
    # still the same function: bf16 rounding, not a broken layer
    assert all(p["metrics"]["cosine"] > 0.99 for p in pairs)
    assert sum(p["verdict"] == "fail" for p in pairs) > len(pairs) // 2


def test_float32_reference_reads_bfloat16_the_same(nnp, captures):
    """F32 against BF16 goes through the vector kernels that read both in place; F64 against
    BF16 through the double path. Against float32 or float64, bf16's error is the same to a
    fraction of a percent, and so are the verdicts."""
    a = by_name(diff(nnp, captures["f64"], captures["bf16"], check=1))
    b = by_name(diff(nnp, captures["f32"], captures["bf16"], check=1))
    assert a.keys() == b.keys()
    for name, p in a.items():
        q = b[name]
        assert q["ref_dtype"] == "F32" and q["atol"] == p["atol"] and q["rtol"] == p["rtol"]
        assert q["metrics"]["rel_l2"] == pytest.approx(p["metrics"]["rel_l2"], rel=1e-3, abs=1e-6)
        assert q["metrics"]["count"] == p["metrics"]["count"]
    changed = [n for n in a if a[n]["verdict"] != b[n]["verdict"]]
    assert len(changed) <= 2, changed
