"""`nnparity diff` pairs a port value recorded with its axes in another order than the
reference's ([T, D] against [D, T], [B, H, T, D] against [B, T, H, D], NCHW against NHWC, a
square matrix transposed) by its values, read through the permutation, and compares it through
a `ref transpose` adapter that --emit-rules writes; a wrong value of such a layout pairs on
structure where only one permutation fits and fails there; `nnparity run` injects through the
adapter."""
import json
import os
import shlex
import subprocess
import textwrap

import numpy as np
import pytest

from conftest import BIN, LIB, ROOT, read_safetensors, write_safetensors

pytestmark = pytest.mark.cli


def T(t, *axes):
    return np.ascontiguousarray(t.transpose(*axes))


def values():
    rng = np.random.default_rng(7)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"x": f(6, 8), "conv1": f(2, 4, 6, 6), "proj": f(6, 16), "scores": f(2, 3, 6, 4),
            "conv": f(2, 5, 7, 9), "mix": f(8, 8), "y": f(6, 8)}


def near(t, seed):
    """The same values computed a little differently: other bytes, within any tolerance."""
    rng = np.random.default_rng(seed)
    return (t * (1 + 1e-7 * rng.standard_normal(t.shape))).astype(np.float32)


def captures(tmp_path, bug=None):
    """A reference and a port that records most layers in another layout, under other names.
    bug: the layer whose port values are wrong, and every one after it."""
    v = values()
    ref = {"enc.embed/out0": v["x"], "enc.conv1/out0": v["conv1"], "enc.proj/out0": v["proj"],
           "enc.attn/scores": v["scores"], "enc.conv/out0": v["conv"],
           "enc.conv2/out0": v["conv1"] * 0.5 + 1, "enc.mix/out0": v["mix"],
           "enc.out/out0": v["y"]}
    order = ["proj", "scores", "conv", "conv2", "mix", "y"]
    wrong = set(order[order.index(bug):]) if bug else set()
    k = lambda name: 1.5 if name in wrong else 1.0  # noqa: E731
    port = {"e.tok/out0": v["x"],
            "e.cv1/out0": T(v["conv1"], 0, 2, 3, 1),                       # NHWC, square
            "e.lin_t/out0": T(v["proj"] * k("proj"), 1, 0),                # [D, T]
            "e.sc/out0": near(T(v["scores"] * k("scores"), 0, 2, 1, 3), 1),  # [B, T, H, D]
            "e.cv/out0": T(v["conv"] * k("conv"), 0, 2, 3, 1),             # NHWC
            "e.cv2/out0": near(T((v["conv1"] * 0.5 + 1) * k("conv2"), 0, 2, 3, 1), 2),
            "e.mx/out0": T(v["mix"] * k("mix"), 1, 0),                     # [D, D] transposed
            "e.head/out0": v["y"] * k("y")}
    write_safetensors(tmp_path / "ref.safetensors", ref)
    write_safetensors(tmp_path / "port.safetensors", port)
    return tmp_path / "ref.safetensors", tmp_path / "port.safetensors"


def diff(nnp, ref, port, *args, check):
    return json.loads(nnp("diff", "--json", ref, port, *args, check=check).stdout)


def pairs_of(doc):
    return {p["ref"]: (p["port"], p["evidence"], p["adapters"]) for p in doc["pairs"]}


EXPECTED = {
    "enc.embed/out0": ("e.tok/out0", "value-exact", None),
    "enc.conv1/out0": ("e.cv1/out0", "value-transposed", "ref transpose 0,2,3,1"),
    "enc.proj/out0": ("e.lin_t/out0", "value-transposed", "ref transpose 1,0"),
    "enc.attn/scores": ("e.sc/out0", "value-transposed", "ref transpose 0,2,1,3"),
    "enc.conv/out0": ("e.cv/out0", "value-transposed", "ref transpose 0,2,3,1"),
    "enc.conv2/out0": ("e.cv2/out0", "value-transposed", "ref transpose 0,2,3,1"),
    "enc.mix/out0": ("e.mx/out0", "value-transposed", "ref transpose 1,0"),
    "enc.out/out0": ("e.head/out0", "value-exact", None),
}


def test_transposed_layouts_pair_by_value_and_the_rules_pair_them_again(nnp, tmp_path):
    ref, port = captures(tmp_path)
    doc = diff(nnp, ref, port, check=0)
    assert pairs_of(doc) == EXPECTED
    assert all(p["verdict"] == "pass" for p in doc["pairs"])
    conf = {p["ref"]: p["confidence"] for p in doc["pairs"]}
    assert conf["enc.proj/out0"] == 1.0  # the same bytes once transposed
    assert 0.9 <= conf["enc.attn/scores"] < 1.0  # near values, by their sketches
    assert doc["agree"] is True and doc["unmatched_ref"] == [] and doc["unmatched_port"] == []
    text = nnp("diff", ref, port, check=0).stdout
    assert "paired by values, with the axes in another order" not in text  # passing: not shown
    rules = tmp_path / "aligned.rules"
    nnp("diff", ref, port, "--emit-rules", rules, check=0)
    written = rules.read_text()
    # the adapter is on the reference's side (injection can feed the port through it), on the
    # reference's name, which the renames before it give the port's record
    assert r"ref transpose ^enc\.attn/scores$ 0,2,1,3" in written
    assert r"ref transpose ^enc\.proj/out0$ 1,0" in written
    assert r"ref transpose ^enc\.conv/out0$ 0,2,3,1" in written
    assert r"ref transpose ^enc\.mix/out0$ 1,0" in written
    assert written.index("\nrename ") < written.index("\nref transpose ")
    again = diff(nnp, ref, port, "--rules", rules, "--no-align", check=0)
    assert {r: (p, a) for r, (p, e, a) in pairs_of(again).items()} == \
        {r: (p, a) for r, (p, e, a) in EXPECTED.items()}
    assert again["agree"] is True and again["unmatched_ref"] == [] and \
        again["unmatched_port"] == []


def test_a_wrong_transposed_layer_pairs_on_structure_and_fails_there(nnp, tmp_path):
    ref, port = captures(tmp_path, bug="scores")
    doc = diff(nnp, ref, port, check=1)
    got = {p["ref"]: p for p in doc["pairs"]}
    first = doc["pairs"][doc["first_divergence"]]
    assert first["ref"] == "enc.attn/scores" and first["port"] == "e.sc/out0"
    assert first["evidence"] == "structure-transposed" and first["verdict"] == "fail"
    assert first["adapters"] == "ref transpose 0,2,1,3" and first["confidence"] <= 0.5
    # what precedes the bug still pairs by value
    for name in ("enc.embed/out0", "enc.conv1/out0", "enc.proj/out0"):
        assert (got[name]["port"], got[name]["evidence"]) == EXPECTED[name][:2]
        assert got[name]["verdict"] == "pass"
    # after it, structure: one permutation fits NCHW [2, 5, 7, 9] as NHWC; for square images
    # ([2, 4, 6, 6] as [2, 6, 6, 4]) two do, and the one values chose for enc.conv1 is taken;
    # a square [8, 8] could be itself or transposed, so it is compared as it is
    assert got["enc.conv/out0"]["evidence"] == "structure-transposed"
    assert got["enc.conv/out0"]["adapters"] == "ref transpose 0,2,3,1"
    assert got["enc.conv2/out0"]["evidence"] == "structure-transposed"
    assert got["enc.conv2/out0"]["adapters"] == "ref transpose 0,2,3,1"
    assert (got["enc.mix/out0"]["port"], got["enc.mix/out0"]["evidence"],
            got["enc.mix/out0"]["adapters"]) == ("e.mx/out0", "structure", None)
    assert all(got[n]["verdict"] == "fail" for n in
               ("enc.attn/scores", "enc.conv/out0", "enc.conv2/out0", "enc.out/out0"))
    assert doc["unmatched_ref"] == [] and doc["unmatched_port"] == []
    text = nnp("diff", ref, port, check=1).stdout
    assert "paired by structure, with the axes in another order" in text
    assert "adapted: ref transpose 0,2,1,3" in text


def test_a_layout_no_value_chose_is_not_guessed(nnp, tmp_path):
    # square images NHWC, wrong: [2, 4, 6, 6] reads as [2, 6, 6, 4] two ways, and no value
    # says which; the port's record stays unmatched rather than compared through a guess
    rng = np.random.default_rng(3)
    x, c = rng.standard_normal((6, 8)).astype(np.float32), \
        rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    write_safetensors(tmp_path / "r.safetensors", {"a.in/out0": x, "a.conv/out0": c})
    write_safetensors(tmp_path / "p.safetensors",
                      {"b.in/out0": x, "b.conv/out0": T(c * 2, 0, 2, 3, 1)})
    doc = diff(nnp, tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=0)
    assert pairs_of(doc) == {"a.in/out0": ("b.in/out0", "value-exact", None)}
    assert doc["unmatched_ref"] == ["a.conv/out0"]
    assert doc["unmatched_port"] == ["b.conv/out0"]


def test_a_square_matrix_stored_transposed_pairs_by_value(nnp, tmp_path):
    rng = np.random.default_rng(4)
    x, w, y = (rng.standard_normal(s).astype(np.float32) for s in ((4, 16), (16, 16), (4, 16)))
    write_safetensors(tmp_path / "r.safetensors",
                      {"m.in/out0": x, "m.attn_map/out0": w, "m.out/out0": y})
    write_safetensors(tmp_path / "p.safetensors",
                      {"c.x/out0": x, "c.map_t/out0": near(T(w, 1, 0), 5), "c.y/out0": y})
    r, p = tmp_path / "r.safetensors", tmp_path / "p.safetensors"
    doc = diff(nnp, r, p, check=0)
    assert pairs_of(doc)["m.attn_map/out0"] == ("c.map_t/out0", "value-transposed",
                                                "ref transpose 1,0")
    assert doc["agree"] is True
    rules = tmp_path / "aligned.rules"
    nnp("diff", r, p, "--emit-rules", rules, check=0)
    assert r"ref transpose ^m\.attn_map/out0$ 1,0" in rules.read_text()
    assert diff(nnp, r, p, "--rules", rules, "--no-align", check=0)["agree"] is True


def test_a_value_in_its_own_layout_is_not_read_transposed(nnp, tmp_path):
    # the port holds the reference's square value as it is and also transposed: the value
    # pairs as it is, and its transposed copy takes nothing from it
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((4, 16)).astype(np.float32), \
        rng.standard_normal((16, 16)).astype(np.float32)
    write_safetensors(tmp_path / "r.safetensors", {"m.in/out0": x, "m.w/out0": w})
    write_safetensors(tmp_path / "p.safetensors",
                      {"c.x/out0": x, "c.w/out0": w, "c.w_t/out0": T(w, 1, 0)})
    doc = diff(nnp, tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=0)
    assert pairs_of(doc) == {"m.in/out0": ("c.x/out0", "value-exact", None),
                             "m.w/out0": ("c.w/out0", "value-exact", None)}
    assert doc["unmatched_port"] == ["c.w_t/out0"]


TORCH_MODEL = textwrap.dedent("""
    import collections, sys
    import torch
    import nnparity

    PORT = "--port" in sys.argv

    class LinearT(torch.nn.Linear):
        # the port's Linear hands its output on as [features, tokens], as a C engine may
        def forward(self, x):
            return super().forward(x).t()

    class Scale(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, n))

        def forward(self, x):
            if PORT:  # reads [features, tokens]; the port's bug: a gain off by 1%
                return (x * (self.weight * 1.01)[:, None]).t()
            return x * self.weight

    torch.manual_seed(0)
    names = ["proj", "gain", "act", "out"] if PORT else ["fc", "scale", "act", "head"]
    layers = [(LinearT if PORT else torch.nn.Linear)(4, 8), Scale(8), torch.nn.ReLU(),
              torch.nn.Linear(8, 2)]
    model = torch.nn.Sequential(collections.OrderedDict(zip(names, layers)))
    x = torch.randn(3, 4)
    with torch.no_grad(), nnparity.auto(model):
        model(x)
""")


def test_run_injects_through_the_reference_transpose(tmp_path):
    script = tmp_path / "model.py"
    script.write_text(TORCH_MODEL)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), NNPARITY_LIB=str(LIB))
    py = "/usr/bin/python3"
    out = tmp_path / "out"
    p = subprocess.run([str(BIN), "run", "--ref", f"{py} {shlex.quote(str(script))}",
                        "--port", f"{py} {shlex.quote(str(script))} --port", "--out", str(out),
                        "--json-file", str(out / "r.json")],
                       capture_output=True, text=True, errors="replace", timeout=300, env=env)
    assert p.returncode == 1, (p.stdout, p.stderr)
    doc = json.loads((out / "r.json").read_text())
    recs = {r["ref"]: r for r in doc["records"]}
    assert recs["fc/out0"]["standard"]["evidence"] == "value-transposed"
    assert recs["scale/in0"]["standard"]["evidence"] == "value-transposed"
    assert recs["fc/out0"]["label"] == "ok" and recs["scale/in0"]["label"] == "ok"
    assert doc["records"][doc["first_divergence"]]["ref"] == "scale/out0"
    assert recs["scale/out0"]["label"] == "own"
    assert recs["head/out0"]["label"] == "inherited"
    assert doc["injection"]["not_injected"] == 0 and doc["injection"]["injected"] > 0
    rules = (out / "aligned.rules").read_text()
    assert r"ref transpose ^scale/in0$ 1,0" in rules
    # the port's gain read the reference's value, laid out as the port lays it out
    def array(path, name):
        dtype, shape, raw = read_safetensors(path)[1][name]
        assert dtype == "F32"
        return np.frombuffer(raw, "<f4").reshape(shape)

    fed = array(out / "port_injected.safetensors", "gain/in0")
    assert fed.shape == (8, 3)
    assert np.array_equal(fed, array(out / "ref.safetensors", "scale/in0").T)
