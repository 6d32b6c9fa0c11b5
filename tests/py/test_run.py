"""Tests of `nnparity run`: the reference and the port run under capture, the port again under
injection, and one report that tells a layer's own error from the error it inherits. The port is
examples/tiny_mlp (its --bad-eps LayerNorm bug, its --crash-at abort), shell commands that hand
over prepared dumps, and a PyTorch model through the bridge. Also the report files: JSON,
Markdown, the self-contained HTML page (parsed, and opened in headless Chromium), the SVG and PNG
plots, and the reproducer."""
import html.parser
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import BIN, EXAMPLES, LIB, ROOT, read_safetensors, write_safetensors

pytestmark = pytest.mark.cli

TINY = shlex.quote(str(EXAMPLES / "tiny_mlp"))
LAYERS_AFTER_NORM = ["block.fc1/in0", "block.fc1/out0", "block.act/in0", "block.act/out0",
                     "block.fc2/in0", "block.fc2/out0"]


def nnp_run(out, ref, port, *args, check=None, env=None):
    """nnparity run with --json; returns (process, report dict or None)."""
    p = subprocess.run([str(BIN), "run", "--ref", ref, "--port", port, "--out", str(out),
                        "--json-file", str(out / "r.json"), *map(str, args)],
                       capture_output=True, text=True, errors="replace", timeout=300, env=env)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    report = out / "r.json"
    return p, json.loads(report.read_text()) if report.exists() else None


def by_name(doc):
    return {r["ref"]: r for r in doc["records"]}


@pytest.fixture(scope="module")
def bad_eps(tmp_path_factory):
    """One run of tiny_mlp against tiny_mlp --bad-eps, shared by the tests that read its files."""
    out = tmp_path_factory.mktemp("bad_eps") / "out"
    p, doc = nnp_run(out, TINY, f"{TINY} --bad-eps", "--markdown", out / "r.md", "--plot",
                     out / "plot.svg", check=1)
    return out, p, doc


def test_bad_eps_layernorm_is_own_the_rest_inherited(bad_eps):
    out, p, doc = bad_eps
    assert doc["schema"] == "nnparity.run/1" and doc["agree"] is False and doc["exit_code"] == 1
    recs = by_name(doc)
    first = doc["records"][doc["first_divergence"]]
    assert first["ref"] == "block.norm/out0" and first["label"] == "own"
    assert first["type"] == "LayerNorm" and first["component"] == "normalization"
    assert doc["first_own"] == doc["first_divergence"]
    # the LayerNorm's error is the same on the reference's inputs: all of it is its own
    assert first["standard"]["verdict"] == "fail" and first["injected"]["verdict"] == "fail"
    assert first["ratio"] == pytest.approx(1.0)
    for name in LAYERS_AFTER_NORM:
        r = recs[name]
        assert r["label"] == "inherited", name
        assert r["standard"]["verdict"] == "fail" and r["injected"]["verdict"] == "pass"
        assert r["injected"]["metrics"]["max_abs"] == 0 and r["ratio"] == 0
    assert recs["block.norm/in0"]["label"] == "ok"
    # the second call's LayerNorm makes NaNs of its own; its successors inherit them
    assert recs["block.norm/out0#1"]["label"] == "own"
    assert recs["block.norm/out0#1"]["injected"]["metrics"]["nan_port"] == 8
    assert all(recs[n + "#1"]["label"] == "inherited" for n in LAYERS_AFTER_NORM)
    assert doc["order_violation"] is None
    comp = doc["components"]
    assert comp["normalization"]["own"] == 2 and comp["normalization"]["inherited"] == 0
    assert comp["mlp"]["own"] == 0 and comp["mlp"]["inherited"] == 8
    assert doc["verdict"].startswith(
        "block.norm differs from the reference on its own inputs: its own error; the 3 layers "
        "after it inherit it. 1 other layer has an error of its own too: block.norm (call 1).")
    for side in ("reference", "port", "injected"):
        run = doc["runs"][side]
        assert run["failed"] is False and run["exit_status"] == 0 and run["records"] == 16
    assert (out / "ref.safetensors").exists() and (out / "port_injected.safetensors").exists()
    # the histogram of the first divergence counts every element
    assert sum(first["histograms"]["standard"]) == 32


def test_text_report(bad_eps):
    out, p, doc = bad_eps
    lines = p.stdout.splitlines()
    assert lines[0] == "nnparity run: the port does not match the reference"
    assert max(len(l) for l in lines) <= 80, p.stdout
    assert "verdict: block.norm differs from the reference on its own inputs: its own error;" \
        in p.stdout
    assert "first divergence: block.norm/out0 [LayerNorm], seq 1: own" in p.stdout
    assert "order: the matched pairs run in the same order on both sides" in p.stdout
    assert f"report: {out}/report.html" in p.stdout
    rows = {l.split()[-1]: l.split() for l in lines if l[:6].strip().isdigit()}
    assert rows["block.norm/out0"][1] == "own" and rows["block.fc1/out0"][1] == "inherited"
    assert "block.norm/in0" not in rows  # within tolerance: listed with --all only
    assert "(2 records within tolerance in both scenarios; --all lists them)" in p.stdout
    comp = [l.split() for l in lines if l.startswith("normalization")]
    assert comp == [["normalization", "4", "2", "0", "0.00167", "0.00167"]]


def test_markdown_report(bad_eps):
    out, _, _ = bad_eps
    md = (out / "r.md").read_text()
    assert md.startswith("### nnparity run: the port does not match the reference\n")
    assert "**First divergence:** seq 1, `block.norm/out0` (LayerNorm), **own**" in md
    assert "| normalization | 4 | 2 | 0 |" in md
    assert "| 1 | own | 0.00167 | 0.00167 | `block.norm/out0` |" in md


def test_component_rules_place_records(tmp_path):
    """The rules' `component` lines decide the per-component table of run, as they do diff's."""
    rules = tmp_path / "c.rules"
    rules.write_text("# the second Linear is this model's head\ncomponent ^block\\.fc2/ head\n")
    p, doc = nnp_run(tmp_path / "out", TINY, f"{TINY} --bad-eps", "--rules", rules, check=1)
    recs = by_name(doc)
    assert recs["block.fc2/out0"]["component"] == "head"
    assert recs["block.fc1/out0"]["component"] == "mlp"
    # fc2's input and output, in both calls, inherit the LayerNorm's error
    assert doc["components"]["head"]["inherited"] == 4
    assert doc["components"]["mlp"]["inherited"] == 4


def test_same_command_agrees(tmp_path):
    out = tmp_path / "out"
    p, doc = nnp_run(out, TINY, TINY, check=0)
    assert doc["agree"] is True and doc["first_divergence"] is None and doc["first_own"] is None
    assert {r["label"] for r in doc["records"]} == {"ok"}
    assert doc["reproducer"] is None and not (out / "repro" / "layer.safetensors").exists()
    assert doc["verdict"] == ("The port agrees with the reference: all 16 compared records are "
                              "within tolerance in both scenarios.")
    assert p.stdout.startswith("nnparity run: the port agrees with the reference\n")
    # a second run into the same folder starts from clean captures
    nnp_run(out, TINY, TINY, check=0)


def test_crash_keeps_the_layers_before_it(tmp_path):
    out = tmp_path / "out"
    p, doc = nnp_run(out, TINY, f"{TINY} --crash-at 5", check=1)
    port = doc["runs"]["port"]
    assert port["failed"] is True and port["signal"] == 6 and port["records"] == 10
    assert port["recovered"] is True  # the partial capture was finished into a normal file
    assert "tiny_mlp: --crash-at 5: aborting in block.fc1 (call 1)" in port["stderr_tail"]
    assert doc["runs"]["injected"]["records"] == 10
    labels = [r["label"] for r in doc["records"]]
    assert labels == ["ok"] * 10 + ["missing"] * 6
    assert doc["verdict"].startswith("The port exited with status 134 (killed by signal 6, "
                                     "Aborted) after capturing 10 records; 6 of the reference's "
                                     "records are missing from its capture.")
    assert "  | tiny_mlp: --crash-at 5: aborting in block.fc1 (call 1)" in p.stdout
    assert "--crash-at 5: aborting" in (out / "port.stderr").read_text()
    assert "--crash-at 5: aborting in block.fc1 (call 1)" in (out / "report.html").read_text()
    assert not (out / "port.safetensors.partial").exists()
    # the help says why a crash after capturing is exit 1, and before capturing exit 2
    usage = subprocess.run([str(BIN), "help", "run"], capture_output=True, text=True).stdout
    assert "1 a divergence, a reordering, or a command that failed after capturing" in usage
    assert "captured nothing (there is nothing to compare)" in usage


def test_crash_before_capturing_anything_is_exit_2(tmp_path):
    out = tmp_path / "out"
    p, doc = nnp_run(out, TINY, f"{TINY} --crash-at 0", check=2)
    assert doc is None
    assert ("nnparity: the port command failed before capturing anything: it exited with "
            "status 134 (killed by signal 6, Aborted)") in p.stderr
    assert "  | tiny_mlp: --crash-at 0: aborting in block.norm (call 0)" in p.stderr
    p, _ = nnp_run(tmp_path / "o2", "true", TINY, check=2)
    assert "the reference command captured nothing: it exited with status 0 without " \
           "recording into $NNPARITY_CAPTURE" in p.stderr
    # what a PyTorch script does differently to record there
    assert "`with nnparity.auto(model):`" in p.stderr and "nnparity.capture(model, path)" in p.stderr


def test_stderr_tail_is_the_last_20_lines(tmp_path):
    out = tmp_path / "out"
    port = f"{TINY}; for i in $(seq 1 30); do echo line $i >&2; done; echo to-stdout; exit 7"
    p, doc = nnp_run(out, TINY, port, check=1)
    run = doc["runs"]["port"]
    assert run["exit_status"] == 7 and run["signal"] is None and run["failed"] is True
    assert run["stderr_tail"] == [f"line {i}" for i in range(11, 31)]
    assert (out / "port.stderr").read_text().splitlines() == [f"line {i}" for i in range(1, 31)]
    # the commands' stdout goes to stderr: stdout holds only the report
    assert "to-stdout" in p.stderr and "to-stdout" not in p.stdout
    assert "line 30" in p.stderr  # stderr passes through
    # every record agrees, but the port failed: a finding
    assert {r["label"] for r in doc["records"]} == {"ok"} and doc["agree"] is False


def test_injection_that_captures_nothing_is_exit_2(tmp_path):
    out = tmp_path / "out"
    port = f'[ -z "$NNPARITY_INJECT" ] && {TINY}'
    p, doc = nnp_run(out, TINY, port, check=2)
    assert doc["runs"]["injected"]["captured"] is False
    assert {r["label"] for r in doc["records"]} == {"ok"}
    assert "Under injection the port captured nothing" in doc["verdict"]
    assert "the port command under injection failed before capturing anything" in p.stderr


def test_reproducer_reproduces_the_layer_alone(bad_eps, tmp_path):
    out, _, doc = bad_eps
    repro = out / "repro" / "layer.safetensors"
    assert doc["reproducer"] == {"file": f"{out}/repro/layer.safetensors",
                                 "readme": f"{out}/repro/README.md", "layer": "block.norm"}
    meta, tensors = read_safetensors(repro)
    assert set(tensors) == {"block.norm/in0", "block.norm/out0"}
    assert meta["layer"] == "block.norm"
    _, ref = read_safetensors(out / "ref.safetensors")
    _, inj = read_safetensors(out / "port_injected.safetensors")
    # the injected input (which is the reference's), and the reference's output
    assert tensors["block.norm/in0"] == inj["block.norm/in0"] == ref["block.norm/in0"]
    assert tensors["block.norm/out0"] == ref["block.norm/out0"]
    readme = (out / "repro" / "README.md").read_text()
    assert readme.startswith("# Reproducer: block.norm (LayerNorm)\n")
    assert "NNPARITY_INJECT=" in readme and "nnparity diff" in readme

    want = doc["records"][doc["first_divergence"]]["injected"]["metrics"]
    # nnparity diff of the reproducer against what the port made on those inputs
    d = subprocess.run([str(BIN), "diff", "--json", repro, out / "port_injected.safetensors"],
                       capture_output=True, text=True)
    assert d.returncode == 1, d.stderr
    diff = json.loads(d.stdout)
    pair = diff["pairs"][diff["first_divergence"]]
    assert pair["ref"] == "block.norm/out0" and pair["metrics"]["max_abs"] == want["max_abs"]
    # and re-running the port on the reproducer alone, as its README says
    mine = tmp_path / "mine.safetensors"
    env = dict(os.environ, NNPARITY_INJECT=str(repro), NNPARITY_CAPTURE=str(mine))
    subprocess.run([str(EXAMPLES / "tiny_mlp"), "--bad-eps"], env=env, check=True)
    d = subprocess.run([str(BIN), "diff", "--json", repro, mine], capture_output=True,
                       text=True)
    assert d.returncode == 1, d.stderr
    diff = json.loads(d.stdout)
    pair = diff["pairs"][diff["first_divergence"]]
    assert pair["ref"] == "block.norm/out0" and pair["metrics"] == want
    # the fixed layer passes on it
    env["NNPARITY_CAPTURE"] = str(tmp_path / "fixed.safetensors")
    subprocess.run([str(EXAMPLES / "tiny_mlp")], env=env, check=True)
    subprocess.run([str(BIN), "diff", repro, tmp_path / "fixed.safetensors"],
                   capture_output=True, check=True)


def assert_self_contained(page, text):
    """The page loads nothing from elsewhere: no external tags, sources, links or URLs."""
    for tag, attrs in page.tags:
        assert tag not in ("link", "img", "iframe", "object", "embed"), tag
        assert "src" not in attrs, (tag, attrs)
        href = attrs.get("href")
        assert href is None or href.startswith("#"), (tag, attrs)
    assert "<link" not in text and "src=" not in text and "@import" not in text
    assert "url(" not in text and "http://" not in text and "https://" not in text


class Page(html.parser.HTMLParser):
    """Collects tags, attributes and text of the report page."""

    def __init__(self):
        super().__init__()
        self.tags, self.text, self.scripts, self._in_script = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def test_html_page_is_self_contained(bad_eps):
    out, _, _ = bad_eps
    text = (out / "report.html").read_text()
    page = Page()
    page.feed(text)
    page.close()
    tags = [t for t, _ in page.tags]
    assert tags[0] == "html" and "svg" in tags and "table" in tags and "script" in tags
    assert_self_contained(page, text)
    body = " ".join(page.text)
    assert "The port does not match the reference" in body
    assert "block.norm differs from the reference on its own inputs" in body
    # the plot: both scenarios, coloured by component, with a legend
    svg_tags = [(t, a) for t, a in page.tags if t in ("circle", "rect")]
    assert sum(1 for t, a in svg_tags if t == "circle" and a.get("fill") == "#d62728") >= 2
    assert "injected: on the reference's inputs" in body and "normalization" in body
    # the sortable table: one row per reference record, in the row data its script renders
    # (docs/run.md: records not within tolerance first, the rest folded by module prefix)
    data = json.loads(re.search(r'<script type="application/json" id="nnp-rows">(.*?)</script>',
                                text, re.S).group(1))
    labels = [row[data["columns"].index("label")] for row in data["rows"]]
    assert labels.count("own") == 2 and len(labels) == 16
    assert data["failing"] == 14 and sorted(data["order"]) == list(range(16))
    assert all(labels[i] != "ok" for i in data["order"][:14])
    # per-record details with the worst element and a histogram
    assert any(t == "details" and a.get("id") == "row-1" for t, a in page.tags)
    assert "1e-03 .. 1e-02" not in body and "1e-3 .. 1e-2" in body


def test_plots_svg_and_png(bad_eps, tmp_path):
    out, _, _ = bad_eps
    svg = ET.parse(out / "plot.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == ns + "svg"
    circles = svg.findall(f".//{ns}circle")
    squares = [r for r in svg.findall(f".//{ns}rect") if r.get("fill") == "none"]
    # 8 layer outputs per scenario (inputs are not plotted), plus the legend's markers
    assert len([c for c in circles if c.find(f"{ns}title") is not None]) == 8
    assert len([s for s in squares if s.find(f"{ns}title") is not None]) == 8
    assert "rel-L2, log scale" in ET.tostring(svg, encoding="unicode")
    # the PNG: same picture, rasterized
    o2 = tmp_path / "o"
    nnp_run(o2, TINY, f"{TINY} --bad-eps", "--plot", tmp_path / "plot.png", "--metric",
            "max-abs", check=1)
    raw = (tmp_path / "plot.png").read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    assert (width, height) == (960, 420)
    assert "max-abs, log scale" in (o2 / "report.html").read_text()


def test_names_are_escaped_and_prepared_dumps_work(tmp_path):
    """Commands that hand over prepared dumps: any program that writes $NNPARITY_CAPTURE works,
    and names with markup in them are escaped everywhere."""
    evil = "blk<script>alert(1)</script>&\"'"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    meta = {"nnparity.format": "dump/1", "nnparity.records": json.dumps(
        [{"tensor": f"{evil}/out0", "module": evil, "role": "out0", "seq": 0}])}
    write_safetensors(tmp_path / "ref.st", {f"{evil}/out0": x}, meta)
    write_safetensors(tmp_path / "port.st", {f"{evil}/out0": x + 1}, meta)
    ref = f'cp {tmp_path}/ref.st "$NNPARITY_CAPTURE"'
    port = f'cp {tmp_path}/port.st "$NNPARITY_CAPTURE"'
    out = tmp_path / "out"
    p, doc = nnp_run(out, ref, port, "--plot", tmp_path / "p.svg", check=1)
    assert doc["records"][0]["label"] == "own"
    text = (out / "report.html").read_text()
    assert "<script>alert" not in text
    assert "blk&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;" in text
    ET.parse(tmp_path / "p.svg")  # still well-formed XML
    meta, tensors = read_safetensors(out / "repro" / "layer.safetensors")
    assert list(tensors) == [f"{evil}/out0"]


def write_dump(path, tensors):
    """A dump as the capture writes it: records named <module>/<role>, in this order."""
    meta = {"nnparity.format": "dump/1", "nnparity.records": json.dumps(
        [{"tensor": t, "module": t.split("/")[0], "role": t.split("/")[1], "seq": i}
         for i, t in enumerate(tensors)])}
    write_safetensors(path, tensors, meta)


def test_inherited_first_divergence_and_unknown(tmp_path):
    """The port's input differs (its preprocessing, before any tapped layer): the first
    divergence is inherited, and the first layer with an error of its own is named after it.
    A record the injection run does not capture is unknown."""
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    ref = {"a/in0": x, "a/out0": 2 * x, "b/in0": 2 * x, "b/out0": 2 * x + 1}
    off = {"a/in0": x + 0.5, "a/out0": 2 * x + 1, "b/in0": 2 * x + 1, "b/out0": 2 * x + 3}
    inj = {"a/in0": x, "a/out0": 2 * x, "b/in0": 2 * x, "b/out0": 2 * x + 1.5}
    for name, t in (("ref", ref), ("port", off), ("inj", inj)):
        write_dump(tmp_path / f"{name}.st", t)
    port = (f'if [ -n "$NNPARITY_INJECT" ]; then cp {tmp_path}/inj.st "$NNPARITY_CAPTURE"; '
            f'else cp {tmp_path}/port.st "$NNPARITY_CAPTURE"; fi')
    p, doc = nnp_run(tmp_path / "out", f'cp {tmp_path}/ref.st "$NNPARITY_CAPTURE"', port,
                     check=1)
    assert [r["label"] for r in doc["records"]] == ["inherited", "inherited", "inherited", "own"]
    assert doc["first_divergence"] == 0 and doc["first_own"] == 3
    assert doc["verdict"] == (
        "The port first differs at a (a/in0), but given the reference's inputs it agrees: the "
        "error comes from before every captured layer (the model's input, or code that is not "
        "tapped). The first layer with an error of its own is b.")
    assert doc["reproducer"]["layer"] == "b"
    _, tensors = read_safetensors(tmp_path / "out" / "repro" / "layer.safetensors")
    assert set(tensors) == {"b/in0", "b/out0"}

    del inj["b/out0"]
    write_dump(tmp_path / "inj.st", inj)
    p, doc = nnp_run(tmp_path / "out", f'cp {tmp_path}/ref.st "$NNPARITY_CAPTURE"', port,
                     check=1)
    assert doc["records"][3]["label"] == "unknown" and doc["records"][3]["injected"] is None
    assert doc["unmatched_injected"] == [] and doc["first_own"] is None
    assert doc["reproducer"] is None and not (tmp_path / "out" / "repro" / "README.md").exists()


@pytest.mark.parametrize("args,needle", [
    (("--port", "x"), "--ref CMD and --port CMD are needed"),
    (("--ref", "x", "--port", "y", "--plot", "p.gif"), "--plot writes FILE.svg or FILE.png"),
    (("--ref", "x", "--port", "y", "--metric", "mse"), "--metric is rel-l2 or max-abs"),
    (("--ref", "x", "--port", "y", "--atol", "-1"), "--atol takes a non-negative number"),
    (("--ref", "x", "--port", "y", "extra"), "unexpected argument 'extra'"),
])
def test_usage_errors(tmp_path, args, needle):
    p = subprocess.run([str(BIN), "run", *args], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 2 and needle in p.stderr and p.stdout == ""


def test_bad_rules_file_stops_before_running(tmp_path):
    rules = tmp_path / "bad.rules"
    rules.write_text("frobnicate a b\n")
    marker = tmp_path / "ran"
    p = subprocess.run([str(BIN), "run", "--ref", f"touch {marker}", "--port", "true", "--rules",
                        rules, "--out", tmp_path / "out"], capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith(f"nnparity: {rules}: line 1") and not marker.exists()


TORCH_MODEL = textwrap.dedent("""
    import collections, sys
    import torch
    import nnparity

    PORT = "--port" in sys.argv

    class Scale(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, n))

        def forward(self, x):
            nnparity.tap("weight", self.weight)
            # the port's bug: a gain off by 1%
            return x * (self.weight * 1.01 if PORT else self.weight)

    torch.manual_seed(0)
    names = ["proj", "gain", "act", "out"] if PORT else ["fc", "scale", "act", "head"]
    layers = [torch.nn.Linear(4, 8), Scale(8), torch.nn.ReLU(), torch.nn.Linear(8, 2)]
    model = torch.nn.Sequential(collections.OrderedDict(zip(names, layers)))
    x = torch.randn(3, 4)
    with torch.no_grad(), nnparity.auto(model):
        model(x)
""")


def test_pytorch_bridge_with_rules_and_parameters(tmp_path):
    script = tmp_path / "model.py"
    script.write_text(TORCH_MODEL)
    rules = tmp_path / "port.rules"
    rules.write_text("# the port names its layers differently\nrename ^proj fc\n"
                     "rename ^gain scale\nrename ^out/ head/\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), NNPARITY_LIB=str(LIB))
    py = "/usr/bin/python3"
    out = tmp_path / "out"
    p, doc = nnp_run(out, f"{py} {script}", f"{py} {script} --port", "--rules", rules, check=1,
                     env=env)
    recs = by_name(doc)
    assert doc["records"][doc["first_divergence"]]["ref"] == "scale/out0"
    assert recs["scale/out0"]["label"] == "own"
    assert recs["scale/out0"]["injected"]["port"] == "gain/out0"
    assert recs["act/out0"]["label"] == "inherited" and recs["head/out0"]["label"] == "inherited"
    assert recs["fc/out0"]["label"] == "ok" and recs["scale/weight"]["label"] == "ok"
    assert doc["verdict"].startswith("scale differs from the reference on its own inputs")
    # the reproducer holds the layer's input, output and parameter under the reference's names
    meta, tensors = read_safetensors(out / "repro" / "layer.safetensors")
    assert set(tensors) == {"scale/in0", "scale/out0", "scale/weight"}
    _, ref = read_safetensors(out / "ref.safetensors")
    assert all(tensors[k] == ref[k] for k in tensors)
    readme = (out / "repro" / "README.md").read_text()
    assert f"--rules {rules}" in readme and "| `scale/weight` | parameter or tap" in readme


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_page_in_headless_chromium(bad_eps, tmp_path):
    """The page loads without a console error, its script makes the table sortable, and a
    screenshot is written to $NNPARITY_SCREENSHOTS (default: the test's temporary folder)."""
    browser = chromium()
    if not browser:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    out, _, _ = bad_eps
    shots = os.environ.get("NNPARITY_SCREENSHOTS") or str(tmp_path)
    os.makedirs(shots, exist_ok=True)
    shot = os.path.join(shots, "run_report.png")
    url = (out / "report.html").resolve().as_uri()
    common = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
              "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000"]
    p = subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, text=True,
                       errors="replace", timeout=120)
    console = [l for l in p.stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]
    assert console == [], p.stderr
    assert p.returncode == 0, p.stderr
    raw = open(shot, "rb").read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000
    p = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                       errors="replace", timeout=120)
    console = [l for l in p.stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]
    assert console == [], p.stderr
    # the script ran to its end: the table is marked sortable, and its rows rendered
    assert 'id="records-table" data-sortable="ready"' in p.stdout
    assert p.stdout.count('data-label="inherited"') == 12
    assert p.stdout.count('data-label="own"') == 2


def test_nothing_injected_labels_nothing_own(tmp_path):
    """A port whose inputs all map to names the reference lacks is injected nowhere: the run
    says the injection had no effect and labels no record own or inherited."""
    rules = tmp_path / "away.rules"
    rules.write_text("rename /in([0-9]) /elsewhere\\1\n")
    p, doc = nnp_run(tmp_path / "out", TINY, f"{TINY} --bad-eps", "--rules", rules, check=1)
    assert doc["injection"]["injected"] == 0 and doc["injection"]["not_injected"] > 0
    assert "holds no record" in doc["injection"]["first_reason"]
    labels = {r["label"] for r in doc["records"]}
    assert "own" not in labels and "inherited" not in labels, labels
    first = doc["records"][doc["first_divergence"]]
    assert first["ref"] == "block.norm/out0" and first["label"] == "unknown"
    assert "The injection scenario had no effect" in doc["verdict"]


def test_injection_counts_what_it_injected(bad_eps):
    out, p, doc = bad_eps
    assert doc["injection"]["injected"] > 0 and doc["injection"]["not_injected"] == 0
    assert doc["injection"]["first_reason"] is None


BN_CHANNEL = """
import sys, torch
import nnparity
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                            torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3, padding=1)).eval()
with torch.no_grad():
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    if "--port" in sys.argv:  # a checkpoint loader that got one channel's scale wrong
        model[1].weight[7] *= 1.5
x = torch.randn(1, 3, 28, 28)
with torch.no_grad(), nnparity.auto(model, params=True):
    model(x)
"""


def test_wrong_parameter_is_named_and_its_reproducer_holds_it(tmp_path):
    """A BatchNorm whose weight has one wrong channel: with params=True the bridge records each
    module's parameters and buffers, the run's first divergence is that weight, and the
    reproducer holds the reference's parameters, fails as the run did, and passes once the
    parameter is fixed."""
    script = tmp_path / "model.py"
    script.write_text(BN_CHANNEL)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), NNPARITY_LIB=str(LIB))
    py = "/usr/bin/python3"
    out = tmp_path / "out"
    p, doc = nnp_run(out, f"{py} {script}", f"{py} {script} --port", check=1, env=env)
    first = doc["records"][doc["first_divergence"]]
    assert first["ref"] == "1/param:weight" and first["label"] == "own"
    assert first["standard"]["metrics"]["max_index"] == [7]
    assert by_name(doc)["1/out0"]["label"] == "own"
    assert by_name(doc)["0/param:weight"]["label"] == "ok"
    assert doc["reproducer"]["layer"] == "1"
    meta, tensors = read_safetensors(out / "repro" / "layer.safetensors")
    assert set(tensors) == {"1/in0", "1/out0", "1/param:weight", "1/param:bias",
                            "1/buffer:running_mean", "1/buffer:running_var",
                            "1/buffer:num_batches_tracked"}
    _, ref = read_safetensors(out / "ref.safetensors")
    assert tensors["1/param:weight"] == ref["1/param:weight"]
    readme = (out / "repro" / "README.md").read_text()
    assert "| `1/param:weight` | parameter, the reference's | F32 | [16] |" in readme
    assert ("the port's parameter differs (`1/param:weight`, fail): max-abs 0.5 at [7] "
            "(reference 1, port 1.5)") in readme
    # as the README says: the port on the reproducer fails as the run did ...
    repro = out / "repro" / "layer.safetensors"
    mine = tmp_path / "mine.safetensors"
    run_env = dict(env, NNPARITY_INJECT=str(repro), NNPARITY_CAPTURE=str(mine))
    subprocess.run([py, str(script), "--port"], env=run_env, check=True)
    d = subprocess.run([str(BIN), "diff", "--json", repro, mine], capture_output=True,
                       text=True)
    assert d.returncode == 1, d.stderr
    pairs = {x["ref"]: x for x in json.loads(d.stdout)["pairs"]}
    want = by_name(doc)["1/out0"]["injected"]["metrics"]
    assert pairs["1/out0"]["metrics"]["max_abs"] == want["max_abs"]
    assert pairs["1/param:weight"]["verdict"] == "fail"
    # ... and passes once the parameter is fixed
    run_env["NNPARITY_CAPTURE"] = str(tmp_path / "fixed.safetensors")
    subprocess.run([py, str(script)], env=run_env, check=True)
    subprocess.run([str(BIN), "diff", repro, tmp_path / "fixed.safetensors"],
                   capture_output=True, check=True)
