"""Ports in lower precision: `nnparity run --baseline`. A port that computes in bf16 end to end
(tests/precision/vit_bf16.py: torchvision's VisionTransformer cast to bf16) differs from its
float32 reference by bf16 compute noise, which fails the bf16 tolerances at many layers. With a
baseline (the reference run again in bf16 through the bridge's NNPARITY_BASELINE) those layers
are labelled precision and the run agrees; a real bug in the bf16 port (q and k swapped, a
dropped bias) is still its layer's own error. Also the bridge's side: the model runs in the
precision asked for and is left as it was."""
import json
import shlex
import subprocess
import sys

import pytest
import torch

from conftest import BIN, LIB, ROOT
from test_vit_example import clean_env


SCRIPT = ROOT / "tests" / "precision" / "vit_bf16.py"
REF = f"{shlex.quote(sys.executable)} {shlex.quote(str(SCRIPT))}"


def run(out, port_args, *args):
    p = subprocess.run([str(BIN), "run", "-j", "1", "--ref", REF, "--port",
                        f"{REF} --port {port_args}", "--out", str(out), "--json-file",
                        str(out / "r.json"), *args],
                       cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                       errors="replace", timeout=600)
    doc = json.loads((out / "r.json").read_text()) if (out / "r.json").exists() else None
    return p, doc


def labels(doc):
    return {r["ref"]: r["label"] for r in doc["records"]}


@pytest.fixture(scope="module")
def correct(tmp_path_factory):
    out = tmp_path_factory.mktemp("bf16") / "out"
    return out, *run(out, "", "--baseline", "bf16")


def test_without_baseline_bf16_noise_is_called_own(tmp_path):
    p, doc = run(tmp_path / "out", "")
    assert p.returncode == 1, p.stderr
    assert "own" in labels(doc).values() and "precision" not in labels(doc).values()
    assert doc["baseline"] is None and "baseline" not in doc["runs"]
    # the verdict says the error is of the size bf16 noise reaches, and how to measure it
    assert "its rel-L2 of" in doc["verdict"] and "units of bf16 rounding" in doc["verdict"]
    assert "(--baseline bf16 measures the noise layer by layer)" in doc["verdict"]


@pytest.mark.cli  # also under the sanitizers: the baseline's path through the CLI
def test_correct_bf16_port_agrees_within_noise(correct):
    out, p, doc = correct
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.startswith("nnparity run: the port agrees with the reference within bf16 "
                               "compute noise\n")
    assert doc["agree"] is True and doc["first_divergence"] is None
    got = labels(doc)
    assert set(got.values()) <= {"ok", "precision"}
    # bf16 noise fails the tolerances of most layers; each of those is within the floor
    assert doc["baseline"]["within_noise"] == list(got.values()).count("precision") > 20
    assert doc["baseline"]["precision"] == "bf16" and doc["baseline"]["factor"] == 4
    for r in doc["records"]:
        if r["label"] != "precision":
            continue
        # the floors: the baseline's error as it is, and under injection the largest over the
        # span the port's module computes (here the same modules: the record's own)
        floors = {"standard": r["baseline"]["standard"]["metrics"],
                  "injected": r["baseline"]["injected_floor"]}
        assert floors["injected"]["rel_l2"] >= r["baseline"]["injected"]["metrics"]["rel_l2"]
        for scen in ("standard", "injected"):
            port = r[scen]
            if port["verdict"] == "fail":
                assert port["metrics"]["rel_l2"] <= 4 * floors[scen]["rel_l2"]
                assert port["metrics"]["max_abs"] <= 4 * floors[scen]["max_abs"]
    assert doc["runs"]["baseline"]["records"] == doc["runs"]["reference"]["records"]
    assert doc["runs"]["baseline_injected"]["captured"] is True
    html = (out / "report.html").read_text()
    # the headline says so; the precision records are folded with the passing ones, their
    # label in the table's data
    assert "<h1>The port agrees with the reference within bf16 compute noise</h1>" in html
    assert html.count(',"precision",') == doc["baseline"]["within_noise"]
    assert '"failing":0,"words":["beyond bf16 compute noise"' in html


@pytest.mark.parametrize("bug,layer", [
    ("qk-swap", "encoder.layers.encoder_layer_1.self_attention"),
    ("no-bias", "encoder.layers.encoder_layer_1.mlp.0"),
])
def test_real_bug_in_bf16_port_is_still_own(tmp_path, bug, layer):
    p, doc = run(tmp_path / "out", f"--bug {bug}", "--baseline", "bf16")
    assert p.returncode == 1, p.stderr
    first = doc["records"][doc["first_divergence"]]
    assert first["module"] == layer and first["label"] == "own", first
    # nothing before the bug is blamed: upstream differences are noise
    before = doc["records"][:doc["first_divergence"]]
    assert {r["label"] for r in before} <= {"ok", "precision"}
    assert f"differ only by bf16 compute noise" in doc["verdict"]


def test_bad_baseline_precision_is_said(tmp_path):
    p = subprocess.run([str(BIN), "run", "--ref", REF, "--port", f"{REF} --port", "--out",
                        str(tmp_path / "out"), "--baseline", "autocast-f16"],
                       cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=600)
    # torch's CPU autocast has no f16: the baseline command fails and says why
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "autocast-f16" in p.stderr and "bf16 only" in p.stderr


def test_bridge_runs_the_model_in_the_precision_and_restores_it(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "python"))
    monkeypatch.setenv("NNPARITY_LIB", str(LIB))
    import nnparity
    from nnparity._lib import NnparityError
    from nnparity._session import Session
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 8)
    # (torch has no f16 matrix product on the CPU)
    for spec, low in (("bf16", torch.bfloat16), ("autocast-bf16", torch.bfloat16)):
        with torch.no_grad():
            y32 = model(x)
        with torch.no_grad(), Session(model, tmp_path / f"b-{spec}.safetensors", baseline=spec):
            y = model(x)
        # the script goes on in float32; the model is as it was, bit for bit
        assert y.dtype == torch.float32
        assert all(torch.equal(v, weights[k]) and v.dtype == torch.float32
                   for k, v in model.state_dict().items())
        d = nnparity.load(tmp_path / f"b-{spec}.safetensors")
        # what was recorded was computed in the low precision
        assert d["0/out0"].dtype == low
        assert not torch.equal(y, y32)
    with pytest.raises(NnparityError, match="NNPARITY_BASELINE='fp8'"):
        with Session(model, tmp_path / "bad.safetensors", baseline="fp8"):
            pass
    assert not (tmp_path / "bad.safetensors").exists()
