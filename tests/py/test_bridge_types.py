"""Tests of the PyTorch bridge on tensors that are not plain dense ones: nested tensors (the
TransformerEncoder fast path passes them between layers), quantized and complex tensors, and
tensors the bridge cannot record at all. The forward must run as it runs without the bridge,
what has values is recorded in a dense form the metadata describes, and the rest is listed in the
metadata and in one warning."""
import json
import warnings

import pytest
import torch
import torch.nn as nn

import nnparity
from nnparity import _session


def nnparity_warnings(caught):
    return [str(w.message) for w in caught if str(w.message).startswith("nnparity:")]


def capture_with_warnings(model, path, *args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad(), nnparity.capture(model, path):
            out = model(*args, **kw)
    return out, nnparity_warnings(caught)


# ------------------------------------------------------------------------------------------------
# Nested tensors

def encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 3).eval()


def test_transformer_encoder_with_padding_mask_runs_and_records_its_layers(tmp_path):
    model = encoder()
    x = torch.randn(3, 6, 16)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, 4:] = True  # two padded positions
    mask[2, 3:] = True  # three
    with torch.no_grad():
        plain = model(x, src_key_padding_mask=mask)
    path = tmp_path / "enc.safetensors"
    out, said = capture_with_warnings(model, path, x, src_key_padding_mask=mask)
    assert said == []
    assert torch.equal(out, plain)
    assert out.contiguous().view(torch.int32).equal(plain.contiguous().view(torch.int32))

    d = nnparity.load(path)
    for i in range(3):
        for role in ("in0", "out0"):
            name = f"layers.{i}/{role}"
            assert d[name].shape == (3, 6, 16), name
            # the padded dense form: 0 where the mask pads, the layer's values elsewhere
            assert torch.count_nonzero(d[name][0, 4:]) == 0
            assert torch.count_nonzero(d[name][2, 3:]) == 0
            assert torch.count_nonzero(d[name][1]) > 0
            note = d.meta[f"bridge.nested.{name}"]
            assert note.startswith("padded with 0 to [3, 6, 16]") and "4x16 6x16 3x16" in note
    info = {r.name: r for r in d.records}
    assert info["layers.0/out0"].module_type == "TransformerEncoderLayer"
    assert info["layers.0/out0"].role == "out0"
    # the last layer's output, padded, is the encoder's output where nothing is padded
    assert torch.equal(d["layers.2/out0"][1], plain[1])
    assert torch.equal(d["model/out0"], plain)
    assert "bridge.skipped" not in d.meta


def test_nested_tensor_records_again_per_call(tmp_path):
    model = encoder()
    x = torch.randn(2, 5, 16)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 2:] = True
    path = tmp_path / "twice.safetensors"
    with torch.no_grad(), nnparity.capture(model, path):
        model(x, src_key_padding_mask=mask)
        model(x[:, :4], src_key_padding_mask=mask[:, :4])
    d = nnparity.load(path)
    assert d["layers.1/out0"].shape == (2, 5, 16)
    assert d["layers.1/out0#1"].shape == (2, 4, 16)
    assert d.meta["bridge.nested.layers.1/out0#1"].startswith("padded with 0 to [2, 4, 16]")


# ------------------------------------------------------------------------------------------------
# Quantized tensors

class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.relu(self.conv(self.quant(x)))
        return self.dequant(self.fc(x.flatten(1)))


def quantized_model():
    engine = "qnnpack" if "qnnpack" in torch.backends.quantized.supported_engines else None
    if engine is None:
        pytest.skip("this torch has no quantized engine")
    torch.backends.quantized.engine = engine
    torch.manual_seed(0)
    model = Small().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    prepared = torch.ao.quantization.prepare(model)
    with torch.no_grad():
        prepared(torch.randn(4, 3, 8, 8))
    return torch.ao.quantization.convert(prepared)


def test_quantized_model_records_dequantized_with_its_parameters(tmp_path):
    model = quantized_model()
    x = torch.randn(2, 3, 8, 8)
    seen = {}
    handles = [m.register_forward_hook(
        lambda m, a, o, name=name: seen.setdefault(name or "model", o))
        for name, m in model.named_modules()]
    with torch.no_grad():
        plain = model(x)
    for h in handles:
        h.remove()
    path = tmp_path / "q.safetensors"
    out, said = capture_with_warnings(model, path, x)
    assert said == []
    assert torch.equal(out, plain)

    d = nnparity.load(path)
    # every input and output of every module that ran: nothing left out for being quantized
    assert len(d) == 2 * len(seen), sorted(d)
    for name in ("quant", "conv", "relu", "fc"):
        q = seen[name]
        assert q.is_quantized
        rec = d[f"{name}/out0"]
        assert rec.dtype == torch.float32
        assert torch.equal(rec, q.dequantize()), name
        assert d.meta[f"bridge.quantized.{name}/out0"] == (
            f"dtype={q.dtype},scale={q.q_scale()!r},zero_point={q.q_zero_point()}")
    assert "bridge.quantized.conv/in0" in d.meta
    assert "bridge.quantized.quant/in0" not in d.meta  # a float input stays as it is
    assert not any(k.startswith("bridge.quantized.dequant/out") for k in d.meta)


def test_per_channel_quantized_tap_names_axis_and_parameters(tmp_path):
    t = torch.randn(3, 4)
    q = torch.quantize_per_channel(t, torch.tensor([0.1, 0.2, 0.05]), torch.tensor([0, 1, 2]),
                                   0, torch.qint8)
    path = tmp_path / "pc.safetensors"
    with nnparity.capture(None, path):
        nnparity.tap("w", q)
    d = nnparity.load(path)
    assert torch.equal(d["w/out0"], q.dequantize())
    note = d.meta["bridge.quantized.w/out0"]
    assert note.startswith("dtype=torch.qint8,axis=0,scale=[")
    assert "zero_point=[0 1 2]" in note


# ------------------------------------------------------------------------------------------------
# Complex tensors

class Spectrum(nn.Module):
    def forward(self, x):
        return torch.fft.fft(x)


class Magnitude(nn.Module):
    def forward(self, z):
        return z.abs()


class FFTNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fft = Spectrum()
        self.mag = Magnitude()

    def forward(self, x):
        return self.mag(self.fft(x))


def test_complex_output_is_recorded_as_real_and_imaginary(tmp_path):
    model = FFTNet()
    x = torch.randn(2, 8)
    path = tmp_path / "c.safetensors"
    out, said = capture_with_warnings(model, path, x)
    assert said == []
    assert torch.equal(out, model(x))
    d = nnparity.load(path)
    z = torch.fft.fft(x)
    assert d["fft/out0"].shape == (2, 8, 2)
    assert torch.equal(d["fft/out0"], torch.view_as_real(z))
    assert torch.equal(d["mag/in0"], torch.view_as_real(z))
    assert "trailing axis of 2" in d.meta["bridge.complex.fft/out0"]


def test_complex_and_quantized_inputs_are_not_injected_and_say_so(tmp_path):
    model = FFTNet()
    x = torch.randn(2, 8)
    ref = tmp_path / "ref.safetensors"
    with torch.no_grad(), nnparity.capture(model, ref):
        want = model(x)
    port = tmp_path / "port.safetensors"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad(), nnparity.inject(model, ref, capture_path=port):
            got = model(x)
    said = nnparity_warnings(caught)
    assert torch.equal(got, want)
    assert len(said) == 1, said
    assert "not injected: mag/in0 (complex)" in said[0]
    d = nnparity.load(port)
    # still recorded, as it ran
    assert torch.equal(d["mag/in0"], torch.view_as_real(torch.fft.fft(x)))
    assert json.loads(d.meta["bridge.not_injected"]) == [
        {"record": "mag/in0", "reason": "complex", "times": 1}]


# ------------------------------------------------------------------------------------------------
# What cannot be recorded

class Odd(nn.Module):
    """Outputs a sparse tensor, a tensor on the meta device and a plain one."""

    def forward(self, x):
        return x.to_sparse(), torch.empty(2, 3, device="meta"), x * 2


class OddNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.odd = Odd()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        s, _, y = self.odd(x)
        return self.lin(y) + s.to_dense()


def test_skipped_tensors_are_listed_in_metadata_and_one_warning(tmp_path):
    torch.manual_seed(0)
    model = OddNet()
    x = torch.randn(2, 3)
    path = tmp_path / "s.safetensors"
    with torch.no_grad():
        plain = model(x)
        model(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad(), nnparity.capture(model, path):
            out = model(x)
            model(x)
    said = nnparity_warnings(caught)
    assert torch.equal(out, plain)
    assert len(said) == 1, said
    assert "not recorded: odd/out0 (layout torch.sparse_coo), odd/out1 (on the meta device" \
        in said[0]
    assert "dump's metadata" in said[0]
    d = nnparity.load(path)
    assert json.loads(d.meta["bridge.skipped"]) == [
        {"record": "odd/out0", "reason": "layout torch.sparse_coo", "times": 2},
        {"record": "odd/out1", "reason": "on the meta device, no values", "times": 2}]
    # the rest is recorded, the plain output of the same module included
    assert torch.equal(d["odd/out2"], x * 2) and "lin/out0#1" in d


def test_an_unexpected_failure_in_a_hook_does_not_break_the_forward(tmp_path, monkeypatch):
    def broken(t):
        raise ValueError("no dense form today")
    monkeypatch.setattr(_session, "dense_form", broken)
    model = FFTNet()
    x = torch.randn(2, 8)
    path = tmp_path / "b.safetensors"
    out, said = capture_with_warnings(model, path, x)
    assert torch.equal(out, model(x))
    assert len(said) == 1, said
    assert "fft/out0 (ValueError: no dense form today)" in said[0]
    d = nnparity.load(path)
    assert "fft/out0" not in d and "mag/out0" in d and "model/in0" in d
    skipped = json.loads(d.meta["bridge.skipped"])
    assert {s["record"] for s in skipped} == {"fft/out0", "mag/in0"}


def test_injection_shape_mismatch_still_raises(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4))
    ref = tmp_path / "ref.safetensors"
    with torch.no_grad(), nnparity.capture(model, ref):
        model(torch.randn(2, 4))
    with pytest.raises(nnparity.NnparityError), torch.no_grad(), \
            nnparity.inject(model, ref):
        model(torch.randn(3, 4))


def test_a_failure_outside_any_one_tensor_skips_the_modules_side(tmp_path, monkeypatch):
    def broken(obj, out):
        raise TypeError("cannot walk this")
    monkeypatch.setattr(_session, "flatten", broken)
    model = FFTNet()
    x = torch.randn(2, 8)
    path = tmp_path / "f.safetensors"
    out, said = capture_with_warnings(model, path, x)
    assert torch.equal(out, model(x))
    assert len(said) == 1 and "mag/out (TypeError: cannot walk this)" in said[0], said
    d = nnparity.load(path)
    assert len(d) == 0
    assert {s["record"] for s in json.loads(d.meta["bridge.skipped"])} == {
        f"{m}/{side}" for m in ("model", "fft", "mag") for side in ("in", "out")}
