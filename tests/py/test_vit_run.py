"""`nnparity run` on the bundled example: torchvision's VisionTransformer (examples/vit/
reference.py) against its C port (examples/vit_port.c) with each of the port's switchable bugs.
The first divergence is the module that holds the bug, labelled own; the layers after it that
fail only inherit its error (a missing k bias, which softmax cancels, fails nowhere else); with
no bug the run agrees. The reproducer of one bug re-runs its layer alone with the same error.

Every case runs the reference (a torch import and a forward pass) and the port twice; the eight
runs share one weights export and go two at a time, with one comparison thread each."""
import concurrent.futures
import json
import shlex
import subprocess
import sys

import pytest

from conftest import BIN, EXAMPLES, ROOT
# the bugs and the records of the module that holds each (the first divergence first), the
# attention inputs only torch >= 2.0 records, and the environment without the caller's capture
# settings (NNPARITY_LIB set to the library the tests use): as the example's own tests have them
from test_vit_example import ATTENTION_INPUTS, BUGS, clean_env

pytestmark = pytest.mark.cli

VIT = ROOT / "examples" / "vit"
RULES = VIT / "vit.rules"
PORT = EXAMPLES / "vit_port"
REFERENCE = f"{shlex.quote(sys.executable)} {shlex.quote(str(VIT / 'reference.py'))}"
NO_BUG = None


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    for path in (BIN, PORT):
        if not path.exists():
            pytest.fail(f"{path} is not built")
    w = tmp_path_factory.mktemp("vit_weights") / "weights.safetensors"
    p = subprocess.run([sys.executable, str(VIT / "reference.py"), "--weights", str(w)],
                       env=clean_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return w


def port_command(weights, bug):
    return " ".join(shlex.quote(str(a)) for a in
                    [PORT, weights] + (["--bug", bug] if bug else []))


def nnp_run(out, weights, bug):
    """nnparity run on one bug (or none); returns (process, nnparity.run/1 report)."""
    p = subprocess.run([str(BIN), "run", "-j", "1", "--ref", REFERENCE,
                        "--port", port_command(weights, bug), "--rules", str(RULES),
                        "--out", str(out), "--json"],
                       cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                       errors="replace", timeout=300)
    assert p.returncode in (0, 1), (bug, p.returncode, p.stderr)
    return p, json.loads(p.stdout)


@pytest.fixture(scope="module")
def runs(weights, tmp_path_factory):
    """bug (None: no bug) -> (out dir, process, report), for every bug `vit_port --bug list`
    names."""
    p = subprocess.run([str(PORT), "--bug", "list"], env=clean_env(), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    bugs = [line.split()[0] for line in p.stdout.splitlines()]
    assert sorted(bugs) == sorted(BUGS)
    base = tmp_path_factory.mktemp("vit_run")
    cases = {bug: base / (bug or "no-bug") for bug in [NO_BUG] + bugs}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {bug: pool.submit(nnp_run, out, weights, bug) for bug, out in cases.items()}
        return {bug: (cases[bug], *f.result()) for bug, f in futures.items()}


def module_of(record):
    return record.split("/")[0]


def check_runs(doc):
    for side in ("reference", "port", "injected"):
        run = doc["runs"][side]
        assert run["captured"] and not run["failed"] and run["exit_status"] == 0, (side, run)
    # the port's 86 records (q, k and v apart) pair with every one of the reference's
    assert doc["runs"]["port"]["records"] == doc["runs"]["injected"]["records"] == 86
    assert doc["unmatched_port"] == [] and doc["unmatched_injected"] == []
    assert doc["order_violation"] is None
    return doc


def test_no_bug_agrees(runs):
    out, p, doc = runs[NO_BUG]
    check_runs(doc)
    assert p.returncode == 0 and doc["exit_code"] == 0 and doc["agree"] is True, doc["verdict"]
    assert doc["first_divergence"] is None and doc["first_own"] is None
    assert doc["reproducer"] is None and not (out / "repro" / "layer.safetensors").exists()
    assert {r["label"] for r in doc["records"] if not ATTENTION_INPUTS.search(r["ref"])} == {"ok"}
    assert (out / "report.html").exists()


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bug_is_own_and_the_rest_inherited(runs, bug):
    out, p, doc = runs[bug]
    check_runs(doc)
    assert p.returncode == 1 and doc["exit_code"] == 1 and doc["agree"] is False
    records = doc["records"]
    fd = doc["first_divergence"]
    first = records[fd]
    # the first divergence is the buggy module's first record, and it is its own error: it
    # fails as badly on the reference's inputs
    assert (first["ref"], first["label"]) == (BUGS[bug][0], "own")
    assert first["standard"]["verdict"] == first["injected"]["verdict"] == "fail"
    assert first["ratio"] == pytest.approx(1, abs=0.01)
    assert doc["first_own"] == fd
    layer = module_of(first["ref"])
    assert doc["verdict"].startswith(
        f"{layer} differs from the reference on its own inputs: its own error; ")
    assert doc["reproducer"]["layer"] == layer
    assert (out / "report.html").exists() and (out / "repro" / "layer.safetensors").exists()
    # before it everything agrees; the buggy module's records (and only those) fail on the
    # reference's inputs; every other record that fails in the standard scenario inherits
    for r in records[:fd]:
        assert r["label"] == "ok" or ATTENTION_INPUTS.search(r["ref"]), r["ref"]
    assert [r["ref"] for r in records if r["label"] == "own"] == BUGS[bug]
    failing_after = [r for r in records[fd + 1:]
                     if r["standard"] and r["standard"]["verdict"] != "pass"]
    for r in failing_after:
        if r["ref"] in BUGS[bug]:
            continue
        assert r["label"] == "inherited", r["ref"]
        assert r["injected"]["verdict"] == "pass" and r["ratio"] < 0.01, r["ref"]
    if bug == "no-k-bias":
        # softmax cancels the k bias: nothing after the fused q/k/v record fails at all
        assert failing_after == []
        assert "its own error; no layer after it inherits it." in doc["verdict"]
        # the port names the projection its own way: the verdict says which of its modules
        assert doc["verdict"].endswith("The first wrong value is made by the port's blk.1.attn_q.")
        assert doc["culprit"] == {"kind": "module", "port_module": "blk.1.attn_q",
                                  "ref_module": "encoder.layers.encoder_layer_1.self_attention",
                                  "after": None, "before": None}
    else:
        # the error travels to the logits, which are right on the reference's inputs
        logits = next(r for r in records if r["ref"] == "model/out0")
        assert logits["label"] == "inherited"


def readme_commands(readme):
    """The indented command lines of the reproducer's README: the port on the reproducer, then
    the diff."""
    return [line.strip() for line in readme.splitlines() if line.startswith("    ")]


def diff_pair(ref, port, name, *args):
    p = subprocess.run([str(BIN), "diff", "--json", *map(str, args), str(ref), str(port)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode in (0, 1), p.stderr
    doc = json.loads(p.stdout)
    return p.returncode, next(pair for pair in doc["pairs"] if pair["ref"] == name)


def test_reproducer_reruns_the_layer_alone(runs, weights):
    """gelu-tanh: the layer's first call fed the reference's input from repro/layer.safetensors,
    as repro/README.md says, makes the error the run found on the reference's inputs: the same
    max-abs, the same metrics. Without the bug the layer passes on the same file."""
    out, _, doc = runs["gelu-tanh"]
    first = doc["records"][doc["first_divergence"]]
    want = first["injected"]["metrics"]
    repro = out / "repro" / "layer.safetensors"
    assert doc["reproducer"] == {"file": str(repro), "readme": str(out / "repro" / "README.md"),
                                 "layer": "encoder.layers.encoder_layer_2.mlp.1"}
    # the reproducer against the injected capture
    rc, pair = diff_pair(repro, out / "port_injected.safetensors", first["ref"],
                         "--rules", RULES)
    assert rc == 1 and pair["verdict"] == "fail" and pair["metrics"] == want

    # the README's two commands, as written (`nnparity` being the binary under test)
    rerun, diff = readme_commands((out / "repro" / "README.md").read_text())
    assert rerun.startswith(f"NNPARITY_INJECT={repro} ") and "--bug gelu-tanh" in rerun
    assert diff.startswith("nnparity diff ")
    p = subprocess.run(["sh", "-c", rerun], cwd=ROOT, env=clean_env(), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["sh", "-c", f"{shlex.quote(str(BIN))} {diff[len('nnparity '):]} --json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    report = json.loads(p.stdout)
    pair = report["pairs"][report["first_divergence"]]
    assert pair["ref"] == first["ref"] and pair["metrics"] == want
    assert pair["metrics"]["max_abs"] == want["max_abs"]
    # only the layer's input was injected: its output is the only record compared that fails
    assert [q["ref"] for q in report["pairs"] if q["verdict"] != "pass"] == [first["ref"]]

    # the fixed layer, on the same file, passes
    fixed = out / "repro" / "fixed.safetensors"
    p = subprocess.run([str(PORT), str(weights)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=clean_env(NNPARITY_INJECT=repro, NNPARITY_RULES=RULES,
                                                 NNPARITY_CAPTURE=fixed))
    assert p.returncode == 0, p.stderr
    rc, pair = diff_pair(repro, fixed, first["ref"], "--rules", RULES)
    assert rc == 0 and pair["verdict"] == "pass"


def test_text_report_fits_80_columns(weights, tmp_path):
    """The ViT's module paths are long (encoder.layers.encoder_layer_2.self_attention/in_proj):
    the text report still keeps to 80 columns, but for lines holding a path the user chose."""
    out = tmp_path / "text"
    p = subprocess.run([str(BIN), "run", "-j", "1", "--all", "--ref", REFERENCE,
                        "--port", port_command(weights, "gelu-tanh"), "--rules", str(RULES),
                        "--out", str(out)],
                       cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                       errors="replace", timeout=300)
    assert p.returncode == 1, p.stderr
    long = [l for l in p.stdout.splitlines()
            if len(l) > 80 and str(tmp_path) not in l and str(weights) not in l]
    assert not long, "\n".join(long)
    assert "first divergence: encoder.layers.encoder_layer_2.mlp.1/out0" in p.stdout
    # long names stand whole on their own line below their row's figures
    assert "\n        encoder.layers.encoder_layer_2.self_attention/in_proj\n" in p.stdout
