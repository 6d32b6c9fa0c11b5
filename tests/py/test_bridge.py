"""Tests of the PyTorch bridge (python/nnparity): capture of torchvision models checked against
what plain torch hooks saw, injection (exact reproduction, a perturbed layer isolated, dtype
conversion, shape mismatch), gradients and taps, dtypes that must reload bit for bit, clean-up
after exceptions, and auto() driven by the environment in a child process."""
import collections
import copy
import os
import subprocess
import textwrap

import pytest
import torch
import torch.nn as nn
import torchvision

import nnparity
from conftest import LIB, ROOT

PYTHON = "/usr/bin/python3"


# ------------------------------------------------------------------------------------------------
# Helpers, written independently of the bridge so that they check it rather than repeat it.

def tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for x in obj for t in tensors_in(x)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in tensors_in(x)]
    return []


def record_name(name, role, call):
    return f"{name}/{role}" + (f"#{call}" if call else "")


class Seen:
    """What plain forward hooks saw, in hook order: (name, role, call, type, clone)."""

    def __init__(self, model, root="model"):
        self.items, self.handles = [], []
        self.calls = collections.Counter()
        for path, module in model.named_modules():
            name, kind = path or root, type(module).__name__
            self.handles.append(module.register_forward_pre_hook(
                lambda m, args, name=name, kind=kind: self.add(name, "in", args, kind)))
            self.handles.append(module.register_forward_hook(
                lambda m, args, out, name=name, kind=kind: self.add(name, "out", out, kind)))

    def add(self, name, prefix, obj, kind):
        for i, t in enumerate(tensors_in(obj)):
            role = f"{prefix}{i}"
            call = self.calls[(name, role)]
            self.calls[(name, role)] += 1
            # A clone: later in-place ops (ReLU(inplace=True)) must not change what was seen.
            self.items.append((name, role, call, kind, t.detach().clone()))

    def remove(self):
        for h in self.handles:
            h.remove()


def assert_same_bits(a, b, what=""):
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
    if a.dtype.is_floating_point:
        size = torch.finfo(a.dtype).bits
        ints = {64: torch.int64, 32: torch.int32, 16: torch.int16}[size]
        assert torch.equal(a.contiguous().view(ints), b.contiguous().view(ints)), what
    else:
        assert torch.equal(a, b), what


def check_capture(model, x, tmp_path, **kw):
    """Capture model(x) next to plain hooks; every record must be what the hooks saw, in their
    order, with their names, roles, calls and types. Returns the loaded dump."""
    with torch.no_grad():
        plain = model(x)
    seen = Seen(model)
    path = tmp_path / "cap.safetensors"
    try:
        with torch.no_grad(), nnparity.capture(model, path, **kw):
            captured = model(x)
    finally:
        seen.remove()
    assert torch.equal(plain, captured)
    dump = nnparity.load(path)
    assert len(dump) == len(seen.items) > 0
    for seq, ((name, role, call, kind, t), rec) in enumerate(zip(seen.items, dump.records)):
        assert rec == (record_name(name, role, call), name, role, call, kind, seq)
        assert_same_bits(dump[rec.name], t, rec.name)
    return dump


def vit(seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10).eval()
    # torchvision starts the head at zero, which would hide every difference before it.
    nn.init.normal_(model.heads.head.weight, std=0.1)
    return model


def resnet(seed=0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=10).eval()


def image(n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, n, n, generator=g)


def no_hooks_left(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks, m
    assert nnparity._session.active_session() is None


# ------------------------------------------------------------------------------------------------
# Capture

def test_capture_vit_matches_plain_hooks(tmp_path):
    model = vit()
    dump = check_capture(model, image(), tmp_path)
    no_hooks_left(model)
    names = [r.name for r in dump.records]
    assert names[0] == "model/in0" and names[-1] == "model/out0"
    kinds = {r.module: r.module_type for r in dump.records}
    assert kinds["model"] == "VisionTransformer"
    assert kinds["encoder.layers.encoder_layer_0.ln_1"] == "LayerNorm"
    assert kinds["encoder.layers.encoder_layer_1.mlp.0"] == "Linear"
    assert kinds["encoder.layers.encoder_layer_1.self_attention"] == "MultiheadAttention"
    # Pre-hook order: a module's input comes before its children's records, its output after.
    assert names.index("encoder/in0") < names.index("encoder.ln/out0") < names.index("encoder/out0")


def test_capture_resnet_in_place_relu(tmp_path):
    # ResNet's ReLUs work in place: each record must hold the value at the time of its hook.
    model = resnet()
    dump = check_capture(model, image(64), tmp_path)
    no_hooks_left(model)
    relu_in, relu_out = dump["relu/in0"], dump["relu/out0"]
    assert (relu_in < 0).any() and torch.equal(relu_out, relu_in.clamp(min=0))
    assert torch.equal(dump["bn1/out0"], relu_in)
    # layer1.0.relu runs twice in a BasicBlock.
    calls = [r.call for r in dump.records if r.name.startswith("layer1.0.relu/out0")]
    assert calls == [0, 1]


class Twice(nn.Module):
    """One ReLU module used twice, so its records get call indices 0 and 1."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(6, 5), nn.Linear(5, 4), nn.ReLU()

    def forward(self, x):
        return self.act(self.fc2(self.act(self.fc1(x))))


def test_module_called_twice_gets_two_calls(tmp_path):
    torch.manual_seed(0)
    dump = check_capture(Twice(), torch.randn(3, 6), tmp_path)
    acts = [(r.name, r.role, r.call) for r in dump.records if r.module == "act"]
    assert acts == [("act/in0", "in0", 0), ("act/out0", "out0", 0),
                    ("act/in0#1", "in0", 1), ("act/out0#1", "out0", 1)]
    assert [r.name for r in dump.records] == [
        "model/in0", "fc1/in0", "fc1/out0", "act/in0", "act/out0", "fc2/in0", "fc2/out0",
        "act/in0#1", "act/out0#1", "model/out0"]


def test_parameters_and_buffers_recorded_once_and_never_injected(tmp_path):
    """params=True: each module's own parameters (param:NAME) and buffers (buffer:NAME), as its
    first call sees them, once a session however often it runs; under injection they are the
    port's own, recorded, not replaced."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
    ref, port = tmp_path / "ref.safetensors", tmp_path / "port.safetensors"
    x = torch.randn(2, 4)
    with torch.no_grad(), nnparity.capture(model, ref, params=True):
        model(x)
        model(x)
    names = [r.name for r in nnparity.load(ref).records]
    assert names[:4] == ["model/in0", "0/param:weight", "0/param:bias", "0/in0"]
    assert names.count("1/buffer:running_var") == 1 and "1/buffer:running_var#1" not in names
    assert "1/param:weight#1" not in names and "0/out0#1" in names
    t = nnparity.load(ref)
    assert torch.equal(t["0/param:weight"], model[0].weight)
    assert torch.equal(t["1/buffer:running_mean"], model[1].running_mean)
    port_model = copy.deepcopy(model)
    with torch.no_grad():
        port_model[0].weight.mul_(2)
        with nnparity.inject(port_model, ref, capture_path=port, params=True):
            port_model(x)
    got = nnparity.load(port)
    assert torch.equal(got["0/param:weight"], port_model[0].weight)
    assert torch.equal(port_model[0].weight, 2 * model[0].weight)
    # without params=True, none
    plain = tmp_path / "plain.safetensors"
    with torch.no_grad(), nnparity.capture(model, plain):
        model(x)
    assert not any(":" in r.role for r in nnparity.load(plain).records)


class Structured(nn.Module):
    """Nested arguments and results, non-tensor arguments, dtypes other than f32."""

    def forward(self, x, pair, table, scale, mask):
        a, b = pair
        y = x * scale + a.sum() + table["w"].float().mean()
        return {"y": y, "rest": [b * 2, mask.logical_not()]}, 7


def test_flattening_of_arguments_and_results(tmp_path):
    model = Structured()
    x = torch.randn(2, 3)
    args = (x, (torch.arange(4.0), torch.ones(2, dtype=torch.float64)),
            {"w": torch.arange(6, dtype=torch.int64).reshape(2, 3)}, 3.0,
            torch.tensor([True, False, True]))
    path = tmp_path / "s.safetensors"
    with nnparity.capture(model, path):
        out, seven = model(*args)
    dump = nnparity.load(path)
    assert [r.role for r in dump.records] == ["in0", "in1", "in2", "in3", "in4",
                                              "out0", "out1", "out2"]
    assert_same_bits(dump["model/in0"], x)
    assert_same_bits(dump["model/in1"], args[1][0])
    assert_same_bits(dump["model/in2"], args[1][1])
    assert_same_bits(dump["model/in3"], args[2]["w"])
    assert_same_bits(dump["model/in4"], args[4])
    assert_same_bits(dump["model/out0"], out["y"])
    assert_same_bits(dump["model/out1"], out["rest"][0])
    assert_same_bits(dump["model/out2"], out["rest"][1])
    assert seven == 7


def test_non_contiguous_scalar_and_empty_tensors(tmp_path):
    class M(nn.Module):
        def forward(self, a, s, e):
            return a.t(), s * 2, e

    a, model = torch.randn(3, 4), M()
    path = tmp_path / "n.safetensors"
    with nnparity.capture(model, path):
        model(a.t(), torch.tensor(1.5), torch.zeros(0, 5))
    dump = nnparity.load(path)
    assert_same_bits(dump["model/in0"], a.t().contiguous())
    assert_same_bits(dump["model/out0"], a)
    assert dump["model/in1"].shape == () and dump["model/out1"].item() == 3.0
    assert dump["model/in2"].shape == (0, 5) and dump["model/out2"].shape == (0, 5)


@pytest.mark.parametrize("ndim", [16, 64, 65, 70])
def test_tensors_of_many_dimensions_are_recorded_and_injected(tmp_path, ndim):
    # The bridge packs a record's description into a buffer for up to 64 dimensions and
    # builds it otherwise; both ways must say the same. Injection takes up to 16 axes (the
    # adapters' limit); past that the library's refusal names the record, which it could not
    # do from a descriptor it read wrong.
    shape = [1] * (ndim - 2) + [2, 3]
    x = torch.arange(6.0).reshape(shape)
    model = nn.Identity()
    ref, port = tmp_path / "ref.safetensors", tmp_path / "port.safetensors"
    with nnparity.capture(model, ref):
        model(x)
    dump = nnparity.load(ref)
    assert_same_bits(dump["model/in0"], x)
    assert_same_bits(dump["model/out0"], x)
    if ndim > 16:
        with pytest.raises(nnparity.NnparityError,
                           match="inject 'model/in0': reference record 'model/in0' has more "
                                 "than 16 axes"):
            with nnparity.inject(model, ref, capture_path=port):
                model(torch.zeros(shape))
        return
    with nnparity.inject(model, ref, capture_path=port):
        y = model(torch.zeros(shape))
    assert_same_bits(y, x)
    assert_same_bits(nnparity.load(port)["model/in0"], x)


def test_include_exclude_leaves_and_roles(tmp_path):
    model, x = vit(), image()
    path = tmp_path / "sel.safetensors"
    with torch.no_grad(), nnparity.capture(model, path, include="encoder.layers.*",
                                           exclude=["*.mlp.*"], inputs=False):
        model(x)
    mods = {r.module for r in nnparity.load(path).records}
    assert "encoder.layers.encoder_layer_0.mlp" in mods
    assert not any(".mlp." in m for m in mods) and "model" not in mods and "encoder" not in mods
    assert {r.role for r in nnparity.load(path).records} == {"out0"}
    with torch.no_grad(), nnparity.capture(model, path, leaves_only=True, outputs=False):
        model(x)
    dump = nnparity.load(path)
    leaves = {n or "model" for n, m in model.named_modules() if not list(m.children())}
    assert {r.module for r in dump.records} <= leaves
    assert {r.role for r in dump.records} == {"in0"}
    no_hooks_left(model)


class Affine(nn.Module):
    """Elementwise only: torch 1.13 has no f16 matmul or GELU on the CPU."""

    def forward(self, x):
        return x * 3 + 1


def test_bf16_f16_int64_bool_reload_exactly(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 4)).to(torch.bfloat16)
    x = (torch.randn(5, 16) * 3).to(torch.bfloat16)
    dump = check_capture(model, x, tmp_path)
    assert dump["0/out0"].dtype == torch.bfloat16
    x16 = torch.cat([torch.randn(40) * 1000, torch.tensor([6e-8, -0.0, 65504.0])]).half()
    dump = check_capture(nn.Sequential(Affine(), Affine()), x16, tmp_path)
    assert dump["1/out0"].dtype == torch.float16
    emb = nn.Embedding(50, 8)
    ids = torch.randint(0, 50, (2, 7))
    dump = check_capture(emb, ids, tmp_path)
    assert dump["model/in0"].dtype == torch.int64
    assert_same_bits(dump["model/in0"], ids)
    ints = torch.tensor([-(2 ** 62), 2 ** 40 + 1, -1, 0])
    path = tmp_path / "ints.safetensors"
    with nnparity.capture(None, path):  # no model: taps only
        nnparity.tap("ints", ints)
        nnparity.tap("flags", ints > 0)
    dump = nnparity.load(path)
    assert_same_bits(dump["ints/out0"], ints)
    assert_same_bits(dump["flags/out0"], ints > 0)


def test_capture_does_not_change_outputs_with_grad(tmp_path):
    model, x = vit(), image()
    plain = model(x)
    with nnparity.capture(model, tmp_path / "g.safetensors", grads=True):
        captured = model(x)
    assert torch.equal(plain, captured)
    no_hooks_left(model)


# ------------------------------------------------------------------------------------------------
# Gradients and taps

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3)

    def forward(self, x):
        h = nnparity.tap("hidden", self.act(self.fc1(x)), grad=True)
        return self.fc2(h)


def test_gradients_in_backward_order(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(Block(), nn.Tanh())
    x = torch.randn(4, 6, requires_grad=True)
    fired = []  # what plain full backward hooks saw, in firing order
    handles = []
    for path, m in model.named_modules():
        def hook(mod, gin, gout, name=path or "model"):
            fired.extend((name, f"grad_out{i}", g.clone()) for i, g in enumerate(gout)
                         if g is not None)
            fired.extend((name, f"grad_in{i}", g.clone()) for i, g in enumerate(gin)
                         if g is not None)
        handles.append(m.register_full_backward_hook(hook))
    path = tmp_path / "grads.safetensors"
    with nnparity.capture(model, path, grads=True):
        y = model(x)
        y.sum().backward()
    for h in handles:
        h.remove()
    no_hooks_left(model)
    dump = nnparity.load(path)
    grads = [r for r in dump.records if r.role.startswith("grad_") and r.role != "grad_hidden"]
    assert [(r.module, r.role) for r in grads] == [(n, role) for n, role, _ in fired]
    for r, (_, _, g) in zip(grads, fired):
        assert_same_bits(dump[r.name], g, r.name)
    # Backward order: the last module to run forward is the first whose gradients arrive.
    assert grads[0].module == "1" and grads[0].role == "grad_out0"
    for r in grads:
        io = r.role[len("grad_"):]
        assert dump[r.name].shape == dump[record_name(r.module, io, 0)].shape, r.name
    # Every gradient comes after every forward record.
    last_forward = max(r.seq for r in dump.records if not r.role.startswith("grad_"))
    assert min(r.seq for r in dump.records if r.role.startswith("grad_")) > last_forward
    assert_same_bits(dump["model/grad_in0"], x.grad)


def test_tap_records_value_and_gradient(tmp_path):
    torch.manual_seed(0)
    model = Block()
    x = torch.randn(4, 6)
    seen = {}
    model.act.register_forward_hook(lambda m, a, out: seen.setdefault("h", out))
    path = tmp_path / "tap.safetensors"
    with nnparity.capture(model, path):
        y = model(x)
        seen["h"].retain_grad()
        (y * y).sum().backward()
    dump = nnparity.load(path)
    tap = [r for r in dump.records if r.role == "hidden"]
    assert [(r.name, r.module, r.module_type) for r in tap] == [("model/hidden", "model", "Block")]
    assert_same_bits(dump["model/hidden"], seen["h"].detach())
    assert_same_bits(dump["model/grad_hidden"], seen["h"].grad)
    # Order: the tap comes between act's output and fc2's input.
    names = [r.name for r in dump.records]
    assert names.index("act/out0") < names.index("model/hidden") < names.index("fc2/in0")


def test_tap_without_session_is_a_no_op():
    t = torch.randn(3)
    assert nnparity.tap("anything", t) is t
    assert nnparity.tap("anything", t, grad=True) is t
    assert nnparity.tap("not a tensor", 3) == 3


# ------------------------------------------------------------------------------------------------
# Injection

def capture_to(model, x, path, **kw):
    with torch.no_grad(), nnparity.capture(model, path, **kw):
        return model(x)


def test_injecting_own_capture_reproduces_every_layer(tmp_path):
    for make, x in ((vit, image()), (resnet, image(64))):
        ref_model = make()
        ref_path, port_path = tmp_path / "ref.safetensors", tmp_path / "port.safetensors"
        y_ref = capture_to(ref_model, x, ref_path)
        port = copy.deepcopy(ref_model)
        with torch.no_grad(), nnparity.inject(port, ref_path, capture_path=port_path):
            y = port(x)
        no_hooks_left(port)
        assert torch.equal(y, y_ref)
        ref, got = nnparity.load(ref_path), nnparity.load(port_path)
        assert [r[:5] for r in got.records] == [r[:5] for r in ref.records]
        for name in ref:
            assert_same_bits(got[name], ref[name], name)


def test_injection_isolates_a_perturbed_layer(tmp_path):
    ref_model, x = vit(), image()
    ref_path = tmp_path / "ref.safetensors"
    capture_to(ref_model, x, ref_path)
    port = copy.deepcopy(ref_model)
    bad = "encoder.layers.encoder_layer_0.mlp.0"
    with torch.no_grad():
        # One column: a constant added to the whole weight would cancel on the LayerNorm'd
        # input, whose features sum to about zero.
        port.get_submodule(bad).weight[:, 0] += 0.05
    ref = nnparity.load(ref_path)

    def differing(path):
        got = nnparity.load(path)
        assert list(got) == list(ref)
        return {n for n in ref if not torch.equal(got[n], ref[n])}

    # Without injection the error spreads to everything after the layer.
    plain_path = tmp_path / "plain.safetensors"
    capture_to(port, x, plain_path)
    spread = differing(plain_path)
    assert "model/out0" in spread and "encoder.layers.encoder_layer_1.mlp.3/out0" in spread
    # With injection only the perturbed layer (and modules containing it) can differ.
    inj_path = tmp_path / "inj.safetensors"
    with torch.no_grad(), nnparity.inject(port, ref_path, capture_path=inj_path):
        port(x)
    diff = differing(inj_path)
    assert f"{bad}/out0" in diff
    parts = bad.split(".")
    containing = {"model"} | {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    assert {n.split("/")[0] for n in diff} <= containing, diff
    assert not any("/in" in n for n in diff)
    assert "model/out0" not in diff  # the head ran on the reference's input


def test_injection_only_some_modules(tmp_path):
    ref_model, x = vit(), image()
    ref_path, inj_path = tmp_path / "ref.safetensors", tmp_path / "inj.safetensors"
    capture_to(ref_model, x, ref_path)
    port = copy.deepcopy(ref_model)
    with torch.no_grad():
        port.get_submodule("encoder.layers.encoder_layer_0.mlp.0").weight[:, 0] += 0.05
        with nnparity.inject(port, ref_path, only="encoder.layers.encoder_layer_1*",
                             capture_path=inj_path):
            port(x)
    ref, got = nnparity.load(ref_path), nnparity.load(inj_path)
    # Layer 0 runs on its own (wrong) values; layer 1 gets the reference's inputs back.
    assert not torch.equal(got["encoder.layers.encoder_layer_0/out0"],
                           ref["encoder.layers.encoder_layer_0/out0"])
    for name in ref:
        if name.startswith("encoder.layers.encoder_layer_1"):
            assert_same_bits(got[name], ref[name], name)


def test_injection_converts_to_the_port_dtype(tmp_path):
    ref_model, x = vit(), image()
    ref_path, inj_path = tmp_path / "ref.safetensors", tmp_path / "inj.safetensors"
    capture_to(ref_model, x, ref_path)
    port = copy.deepcopy(ref_model).double()
    with torch.no_grad(), nnparity.inject(port, ref_path, capture_path=inj_path):
        port(x.double())
    ref, got = nnparity.load(ref_path), nnparity.load(inj_path)
    inputs = [r.name for r in got.records if r.role.startswith("in")]
    assert len(inputs) > 20
    for name in inputs:
        assert got[name].dtype == torch.float64
        assert torch.equal(got[name], ref[name].double()), name


def test_injection_shape_mismatch_names_both_shapes(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    ref_path = tmp_path / "ref.safetensors"
    capture_to(model, torch.randn(2, 8), ref_path)
    with pytest.raises(nnparity.NnparityError) as err:
        with nnparity.inject(model, ref_path):
            model(torch.randn(3, 8))
    assert err.value.status == 4  # NNP_ERR_ARG
    assert "[3, 8]" in str(err.value) and "[2, 8]" in str(err.value)
    no_hooks_left(model)


def test_injection_leaves_inputs_the_reference_lacks(tmp_path):
    torch.manual_seed(0)
    ref_model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    ref_path, inj_path = tmp_path / "ref.safetensors", tmp_path / "inj.safetensors"
    x = torch.randn(2, 8)
    y_ref = capture_to(ref_model, x, ref_path)
    # The port has an extra module the reference never recorded, and runs a second call.
    port = nn.Sequential(copy.deepcopy(ref_model[0]), nn.ReLU(), nn.Identity())
    with torch.no_grad(), nnparity.inject(port, ref_path, capture_path=inj_path):
        y = port(x + 1)
        port(x + 2)
    assert torch.equal(y, y_ref)  # model/in0 and 0/in0 were injected
    got = nnparity.load(inj_path)
    assert "2/in0" not in nnparity.load(ref_path)
    assert torch.equal(got["2/in0"], got["1/out0"])  # no reference record: ran unchanged
    assert torch.equal(got["model/in0#1"], x + 2)    # no second call in the reference


class Renamed(nn.Module):
    """The reference's Sequential(Linear, ReLU) under other names, as a port would have it."""

    def __init__(self, linear):
        super().__init__()
        self.proj, self.act = linear, nn.ReLU()

    def forward(self, x):
        return self.act(self.proj(x))


def test_injection_through_rules(tmp_path):
    torch.manual_seed(0)
    ref_model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    ref_path, inj_path = tmp_path / "ref.safetensors", tmp_path / "inj.safetensors"
    x = torch.randn(5, 8)
    y_ref = capture_to(ref_model, x, ref_path)
    port = Renamed(copy.deepcopy(ref_model[0]))
    with torch.no_grad():
        port.proj.bias.add_(1.0)
    rules = tmp_path / "port.rules"
    rules.write_text("# port names on the left, the reference's on the right\n"
                     "rename ^proj/ 0/\n"
                     "rename ^act/  1/\n")
    with torch.no_grad(), nnparity.inject(port, ref_path, rules=rules, capture_path=inj_path):
        y = port(x)
    assert torch.equal(y, y_ref)  # act got the reference's input, undoing the bias shift
    ref, got = nnparity.load(ref_path), nnparity.load(inj_path)
    assert torch.equal(got["act/in0"], ref["1/in0"])
    assert not torch.equal(got["proj/out0"], ref["0/out0"])
    bad = tmp_path / "bad.rules"
    bad.write_text("rename (unclosed x\n")
    with pytest.raises(nnparity.NnparityError, match="bad.rules"):
        with nnparity.inject(port, ref_path, rules=bad):
            pass
    no_hooks_left(port)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_are_recorded_and_injected(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    x = torch.randn(3, 8)
    ref_path, inj_path = tmp_path / "ref.safetensors", tmp_path / "inj.safetensors"
    capture_to(model, x, ref_path)
    port = copy.deepcopy(model).cuda()
    with torch.no_grad(), nnparity.inject(port, ref_path, capture_path=inj_path):
        y = port(x.cuda() + 1)
    assert y.is_cuda
    ref, got = nnparity.load(ref_path), nnparity.load(inj_path)
    assert torch.equal(got["model/in0"], ref["model/in0"])
    assert torch.equal(got["1/in0"], ref["1/in0"])
    assert torch.equal(y.cpu(), got["model/out0"])


def test_tap_is_injected(tmp_path):
    torch.manual_seed(0)
    model = Block()
    x = torch.randn(4, 6)
    ref_path = tmp_path / "ref.safetensors"
    capture_to(model, x, ref_path)
    ref = nnparity.load(ref_path)
    port = copy.deepcopy(model)
    with torch.no_grad():
        port.fc1.bias.add_(1.0)
    with nnparity.inject(port, ref_path, only="model"):
        y = port(x)
        y.sum().backward()  # the injected tap still passes gradients on
    assert torch.equal(y.detach(), ref["model/out0"])
    assert port.fc1.weight.grad is not None


# ------------------------------------------------------------------------------------------------
# Failure and clean-up

class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.inner = nn.Sequential(nn.ReLU())

    def forward(self, x):
        self.inner(self.fc(x))
        raise ValueError("boom")


def test_exception_in_forward_removes_hooks_and_closes(tmp_path):
    model = Boom()
    path = tmp_path / "boom.safetensors"
    for grads in (False, True):
        with pytest.raises(ValueError, match="boom"):
            with nnparity.capture(model, path, grads=grads):
                model(torch.randn(2, 4))
        no_hooks_left(model)
        # The partial run is a complete file, and the library's session is closed.
        assert [r.name for r in nnparity.load(path).records][-1] == "inner/out0"
        assert not (tmp_path / "boom.safetensors.partial").exists()
    model.fc.register_backward_hook(lambda *a: None)  # old-style hooks still allowed
    with nnparity.capture(nn.ReLU(), path):
        pass


def test_sessions_do_not_nest(tmp_path):
    model = nn.ReLU()
    with nnparity.capture(model, tmp_path / "a.safetensors"):
        with pytest.raises(nnparity.NnparityError, match="already"):
            with nnparity.capture(model, tmp_path / "b.safetensors"):
                pass
    assert (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()
    no_hooks_left(model)


def test_root_name_must_not_clash(tmp_path):
    wrapper = nn.Sequential()
    wrapper.add_module("model", nn.Linear(2, 2))  # as in Hugging Face's *ForCausalLM
    with pytest.raises(nnparity.NnparityError, match="root="):
        with nnparity.capture(wrapper, tmp_path / "w.safetensors"):
            pass
    assert not (tmp_path / "w.safetensors").exists()
    with nnparity.capture(wrapper, tmp_path / "w.safetensors", root="top"):
        wrapper(torch.ones(1, 2))
    assert [r.name for r in nnparity.load(tmp_path / "w.safetensors").records] == [
        "top/in0", "model/in0", "model/out0", "top/out0"]


def test_missing_reference_fails_before_running(tmp_path):
    with pytest.raises(nnparity.NnparityError) as err:
        with nnparity.inject(nn.ReLU(), tmp_path / "none.safetensors"):
            pass
    assert "none.safetensors" in str(err.value)


# ------------------------------------------------------------------------------------------------
# auto(): driven by the environment, in a child process

CHILD = textwrap.dedent("""
    import sys, torch, torch.nn as nn
    sys.path.insert(0, {python!r})
    import nnparity
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    with torch.no_grad():
        model[0].bias.add_({shift})
    for step in range(2):
        with torch.no_grad(), nnparity.auto(model):
            y = model(torch.ones(2, 8) * step)
    print(float(y.sum()))
""")


def run_child(tmp_path, env, shift=0.0):
    full = {k: v for k, v in os.environ.items() if not k.startswith("NNPARITY_")}
    full.update(NNPARITY_LIB=str(LIB.resolve()), **env)
    p = subprocess.run([PYTHON, "-c", CHILD.format(python=str(ROOT / "python"), shift=shift)],
                       env=full, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    return p


def test_auto_does_nothing_without_environment(tmp_path):
    model = nn.ReLU()
    with nnparity.auto(model):
        assert not model._forward_hooks
    run_child(tmp_path, {})
    assert list(tmp_path.iterdir()) == []


def test_auto_captures_and_injects_from_environment(tmp_path):
    ref_path = tmp_path / "ref.safetensors"
    run_child(tmp_path, {"NNPARITY_CAPTURE": str(ref_path)})
    ref = nnparity.load(ref_path)
    # Both blocks went into one dump, with running call indices.
    assert [r.name for r in ref.records] == [
        "model/in0", "0/in0", "0/out0", "1/in0", "1/out0", "model/out0",
        "model/in0#1", "0/in0#1", "0/out0#1", "1/in0#1", "1/out0#1", "model/out0#1"]
    assert torch.equal(ref["model/in0#1"], torch.ones(2, 8))
    # A port with a shifted bias, injected: every input is the reference's.
    port_path = tmp_path / "port.safetensors"
    run_child(tmp_path, {"NNPARITY_CAPTURE": str(port_path), "NNPARITY_INJECT": str(ref_path)},
              shift=0.5)
    port = nnparity.load(port_path)
    assert list(port) == list(ref)
    for name in ref:
        if "/in" in name or name.startswith("1/") or name.startswith("model/"):
            assert torch.equal(port[name], ref[name]), name
    assert not torch.equal(port["0/out0"], ref["0/out0"])


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


class _CallsForward(nn.Module):
    """Calls one block through .forward(), which runs none of its hooks, and keeps the others in
    a ModuleList (a container that is never called itself)."""

    def __init__(self):
        super().__init__()
        self.direct = _Block()
        self.layers = nn.ModuleList([_Block(), _Block()])

    def forward(self, x):
        x = self.direct.forward(x)
        for layer in self.layers:
            x = layer(x)
        return x


def nnparity_warnings(caught):
    return [str(w.message) for w in caught if str(w.message).startswith("nnparity:")]


def test_a_module_whose_hooks_never_ran_is_named(tmp_path):
    import warnings
    torch.manual_seed(0)
    model = _CallsForward()
    path = tmp_path / "c.safetensors"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad(), nnparity.capture(model, path):
            model(torch.ones(2, 4))
    said = nnparity_warnings(caught)
    assert len(said) == 1, said
    assert said[0].startswith("nnparity: direct recorded nothing although its submodules did")
    assert "module.forward(x)" in said[0]
    # what the warning says is what the dump holds: the block's children, not the block
    names = set(nnparity.load(path).keys())
    assert "direct.fc/out0" in names and "direct/out0" not in names
    assert "layers.0/out0" in names and not any(n.startswith("layers/") for n in names)


def test_no_warning_when_every_module_ran(tmp_path):
    import warnings
    model = _Block()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad(), nnparity.capture(model, tmp_path / "b.safetensors"):
            model(torch.ones(2, 4))
        # a module left out of the capture is not expected to record
        other = _CallsForward()
        with torch.no_grad(), nnparity.capture(other, tmp_path / "x.safetensors",
                                               exclude=["direct"]):
            other(torch.ones(2, 4))
    assert nnparity_warnings(caught) == []


class _NeedsOneTensor(nn.Module):
    """Attention that, like nn.MultiheadAttention's fast path, depends on its three inputs being
    one tensor, and remembers the memory format its input came in."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, q, k, v):
        self.seen.append((q is k and k is v, q.is_contiguous(memory_format=torch.channels_last)))
        return q * 2 + k + v


class _SelfAttendCL(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = _NeedsOneTensor()

    def forward(self, x):
        x = x.to(memory_format=torch.channels_last)
        return self.attn(x, x, x)


def test_injection_keeps_aliasing_and_memory_format(tmp_path):
    model, x = _SelfAttendCL(), torch.randn(1, 3, 4, 4)
    ref_path, port_path = tmp_path / "ref.safetensors", tmp_path / "port.safetensors"
    y_ref = capture_to(model, x, ref_path)
    with torch.no_grad(), nnparity.inject(model, ref_path, capture_path=port_path):
        y = model(x)
    # the same tensor three times, channels-last, in the injected run as in the plain one
    assert model.attn.seen == [(True, True), (True, True)]
    assert torch.equal(y, y_ref)
    ref, got = nnparity.load(ref_path), nnparity.load(port_path)
    assert [r[:5] for r in got.records] == [r[:5] for r in ref.records]
    for name in ref:
        assert_same_bits(got[name], ref[name], name)


def test_injecting_own_capture_into_convnext_is_bit_exact(tmp_path):
    # ConvNeXt's downsampling convolutions take channels-last inputs: a contiguous copy picks
    # another kernel and changes the last bits of later stages
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    x = image(64)
    ref_path, port_path = tmp_path / "ref.safetensors", tmp_path / "port.safetensors"
    y_ref = capture_to(model, x, ref_path)
    with torch.no_grad(), nnparity.inject(model, ref_path, capture_path=port_path):
        y = model(x)
    assert torch.equal(y, y_ref)
    ref, got = nnparity.load(ref_path), nnparity.load(port_path)
    for name in ref:
        assert_same_bits(got[name], ref[name], name)
