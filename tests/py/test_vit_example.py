"""End-to-end tests of the bundled example: torchvision's VisionTransformer (examples/vit/
reference.py) against its C port (examples/vit_port.c), paired by examples/vit/vit.rules. With no
bug the port agrees with the reference record for record, its separate q, k and v projections
joined into the reference's fused one; each switchable bug is found first in the module that
holds it, and with injection only that module's records fail."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import BIN, EXAMPLES, LIB, ROOT

# also run against the sanitized CLI and port (tests/run_tests.sh)
pytestmark = pytest.mark.cli

VIT = ROOT / "examples" / "vit"
RULES = VIT / "vit.rules"
PORT = EXAMPLES / "vit_port"

ATTN = "encoder.layers.encoder_layer_{}.self_attention/"
# the reference's fused q/k/v projection, which the port's attn_q, attn_k and attn_v join into
QKV = ATTN + "in_proj"

# bug -> the reference records of the module that holds it that fail under injection, the
# first divergence first (vit_port --bug list). A wrong projection shows first in the fused
# q/k/v record, then (but for a k bias, which softmax cancels) in the attention's output.
BUGS = {
    "gelu-tanh": ["encoder.layers.encoder_layer_2.mlp.1/out0"],
    "no-k-bias": [QKV.format(1)],
    "no-v-bias": [QKV.format(1), ATTN.format(1) + "out0"],
    "ln-eps": ["encoder.layers.encoder_layer_0.ln_1/out0"],
    "qk-swap": [QKV.format(3), ATTN.format(3) + "out0"],
    "no-residual": ["encoder.layers.encoder_layer_1/out0"],
    "bf16-block": ["encoder.layers.encoder_layer_2/out0"],
}

# From torch 2.0 on, forward hooks see keyword arguments, and the bridge then records the
# self-attention's query, key and value as in0, in1 and in2; the port taps the one input they
# all are, as in0 (on torch 1.13 reference.py taps in0 itself).
ATTENTION_INPUTS = re.compile(r"\.self_attention/in[12]$")


def clean_env(**extra):
    """The environment without any capture settings of the caller's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNPARITY_")}
    env["NNPARITY_LIB"] = str(LIB)
    env.pop("VIT_PORT_BUG", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(weights, reference dump), made once for the module."""
    for path in (BIN, LIB, PORT):
        if not path.exists():
            pytest.fail(f"{path} is not built")
    d = tmp_path_factory.mktemp("vit")
    weights, ref = d / "weights.safetensors", d / "ref.safetensors"
    p = subprocess.run([sys.executable, str(VIT / "reference.py"), "--weights", str(weights),
                        "--capture", str(ref)], env=clean_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    return weights, ref


def run_port(weights, capture, bug=None, inject=None):
    env = clean_env(NNPARITY_CAPTURE=capture)
    if inject:
        env.update(NNPARITY_INJECT=str(inject), NNPARITY_RULES=str(RULES))
    args = [str(PORT), str(weights)] + (["--bug", bug] if bug else [])
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # injection finds every record it asks for: the rules map every input the port taps
    assert p.stderr == ""
    return p


def diff(ref, port):
    p = subprocess.run([str(BIN), "diff", str(ref), str(port), "--rules", str(RULES),
                        "--json"], capture_output=True, text=True, timeout=60)
    assert p.returncode in (0, 1), p.stderr
    report = json.loads(p.stdout)
    unmatched_ref = [n for n in report["unmatched_ref"] if not ATTENTION_INPUTS.search(n)]
    assert unmatched_ref == [] and report["unmatched_port"] == []
    return p.returncode, report


def failing(report):
    return [p["ref"] for p in report["pairs"] if p["verdict"] != "pass"]


@pytest.mark.parametrize("inject", [False, True], ids=["plain", "injected"])
def test_port_matches_reference(reference, tmp_path, inject):
    weights, ref = reference
    port = tmp_path / "port.safetensors"
    run_port(weights, port, inject=ref if inject else None)
    rc, report = diff(ref, port)
    assert rc == 0 and report["agree"], failing(report)
    assert report["first_divergence"] is None and report["order_violation"] is None
    assert failing(report) == []
    # every module the reference recorded is paired, the whole model and the classifier included
    names = {p["ref"] for p in report["pairs"]}
    assert {"model/in0", "model/out0", "conv_proj/out0", "heads.head/out0",
            ATTN.format(3) + "in0", ATTN.format(3) + "out0"} <= names
    assert len(report["pairs"]) == 78
    # the fused projection of every block pairs with the port's three, joined in q, k, v order
    joined = {p["ref"]: p for p in report["pairs"] if p.get("port_parts")}
    assert sorted(joined) == [QKV.format(i) for i in range(4)]
    for i in range(4):
        pair = joined[QKV.format(i)]
        assert pair["port_parts"] == [f"blk.{i}.attn_{x}/out0" for x in "qkv"]
        assert pair["ref_shape"] == pair["port_shape"] == [1, 17, 192]


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bug_found_in_its_module(reference, tmp_path, bug):
    weights, ref = reference
    port = tmp_path / "port.safetensors"
    run_port(weights, port, bug=bug)
    rc, report = diff(ref, port)
    assert rc == 1 and not report["agree"]
    first = report["pairs"][report["first_divergence"]]
    assert (first["ref"], first["verdict"]) == (BUGS[bug][0], "fail")
    # without injection the error travels on: the logits differ too (test_missing_k_bias says
    # why a k bias is the exception)
    assert ("model/out0" in failing(report)) == (bug != "no-k-bias")


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bug_localized_by_injection(reference, tmp_path, bug):
    weights, ref = reference
    port = tmp_path / "injected.safetensors"
    run_port(weights, port, bug=bug, inject=ref)
    rc, report = diff(ref, port)
    assert rc == 1
    assert report["pairs"][report["first_divergence"]]["ref"] == BUGS[bug][0]
    # every layer runs on the reference's input: only the buggy module's own records differ
    assert failing(report) == BUGS[bug]


@pytest.mark.parametrize("inject", [False, True], ids=["plain", "injected"])
def test_missing_k_bias(reference, tmp_path, inject):
    """A missing k bias is wrong where it lives, the k projection, and nowhere after it:
    softmax(q (k + b)^T) = softmax(q k^T + q b^T), and q b^T is the same for every key of a
    query, so the scores shift by a constant per row, which softmax cancels. The fused q/k/v
    pair is the port's only failing record, and its worst element lies in the k third."""
    weights, ref = reference
    port = tmp_path / "port.safetensors"
    run_port(weights, port, bug="no-k-bias", inject=ref if inject else None)
    rc, report = diff(ref, port)
    assert rc == 1 and failing(report) == [QKV.format(1)]
    first = report["pairs"][report["first_divergence"]]
    assert first["ref"] == QKV.format(1)
    assert first["port_parts"] == ["blk.1.attn_q/out0", "blk.1.attn_k/out0", "blk.1.attn_v/out0"]
    assert "concat" in first["adapters"] and first["ref_shape"] == [1, 17, 192]
    m = first["metrics"]
    assert 64 <= m["max_index"][-1] < 128
    # the error is the k bias (drawn at std 0.1), the same in every token's row; what fails is
    # at most the k third (17 tokens by 64)
    assert 0.05 < m["max_abs"] < 1
    assert m["allclose_fail"] <= 17 * 64


def test_bug_from_environment(reference, tmp_path):
    weights, ref = reference
    port = tmp_path / "port.safetensors"
    p = subprocess.run([str(PORT), str(weights)], capture_output=True, text=True, timeout=60,
                       env=clean_env(NNPARITY_CAPTURE=port, VIT_PORT_BUG="no-residual"))
    assert p.returncode == 0, p.stderr
    rc, report = diff(ref, port)
    assert rc == 1 and report["pairs"][report["first_divergence"]]["ref"] == BUGS["no-residual"][0]


def test_port_errors(tmp_path):
    if not PORT.exists():
        pytest.fail(f"{PORT} is not built")
    missing = tmp_path / "missing.safetensors"
    p = subprocess.run([str(PORT), str(missing)], capture_output=True, text=True, timeout=60,
                       env=clean_env())
    assert p.returncode == 1 and p.stdout == ""
    assert len(p.stderr.splitlines()) == 1 and str(missing) in p.stderr
    p = subprocess.run([str(PORT), str(missing), "--bug", "nonsense"], capture_output=True,
                       text=True, timeout=60, env=clean_env())
    assert p.returncode == 2 and "nonsense" in p.stderr
    p = subprocess.run([str(PORT), "--bug", "list"], capture_output=True, text=True, timeout=60,
                       env=clean_env())
    assert p.returncode == 0
    assert set(BUGS) == {line.split()[0] for line in p.stdout.splitlines()}


def test_reference_captures_to_environment(reference, tmp_path):
    """With no arguments, reference.py records into $NNPARITY_CAPTURE, as `nnparity run --ref`
    asks of it; the result is the same dump."""
    _, ref = reference
    out = tmp_path / "env_ref.safetensors"
    p = subprocess.run([sys.executable, str(VIT / "reference.py")], capture_output=True,
                       text=True, timeout=300, env=clean_env(NNPARITY_CAPTURE=out))
    assert p.returncode == 0, p.stderr
    p = subprocess.run([str(BIN), "diff", str(ref), str(out), "--json"],
                       capture_output=True, text=True, timeout=60)
    report = json.loads(p.stdout)
    assert p.returncode == 0 and len(report["pairs"]) == 78
    assert all(p["metrics"]["max_abs"] == 0 for p in report["pairs"])
