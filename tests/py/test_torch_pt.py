"""PyTorch checkpoints written by torch.save at test time, read by `nnparity ls` and `stats`:
a torchvision resnet18 state dict, every dtype torch stores (bf16 included), views that share
one storage (transposed, sliced, strided, expanded), nested dicts and lists with plain values,
parameters, pickle protocol 4, and checkpoints that must be refused (a pickle that would run a
command, the legacy format)."""
import json

import pytest
import torch

pytestmark = pytest.mark.cli


def stats(nnp, path):
    doc = json.loads(nnp("stats", "--json", path, check=0).stdout)
    assert doc["format"] == "torch"
    return doc["records"]


def ls_names(nnp, path):
    doc = json.loads(nnp("ls", "--json", path, check=0).stdout)
    return [r["name"] for r in doc["files"][0]["records"]]


def check_against_torch(rec, t):
    """nnparity's statistics of a record against torch's own, in float64."""
    x = t.detach().to(torch.float64).reshape(-1)
    s = rec["stats"]
    assert rec["shape"] == list(t.shape)
    assert s["count"] == x.numel()
    if x.numel():
        assert s["min"] == x.min().item() and s["max"] == x.max().item()
        assert s["abs_max"] == x.abs().max().item()
        assert s["mean"] == pytest.approx(x.mean().item(), rel=1e-12, abs=1e-13)
        assert s["std"] == pytest.approx(x.std(unbiased=False).item(), rel=1e-10, abs=1e-13)
        assert s["zeros"] == int((x == 0).sum())


DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
         torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def test_resnet18_state_dict(nnp, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1234)
    model = torchvision.models.resnet18(weights=None)
    sd = model.state_dict()
    f = tmp_path / "resnet18.pt"
    torch.save(sd, f)
    assert ls_names(nnp, f) == list(sd)
    recs = stats(nnp, f)
    assert [r["name"] for r in recs] == list(sd)
    for r in recs:
        t = sd[r["name"]]
        assert r["dtype"] == DTYPE[t.dtype]
        check_against_torch(r, t)


def test_every_dtype(nnp, tmp_path):
    torch.manual_seed(7)
    sd = {
        "f32": torch.randn(17, 5),
        "bf16": torch.randn(9, 33).to(torch.bfloat16),
        "f16": (torch.randn(40) * 100).to(torch.float16),
        "f64": torch.randn(3, 3, dtype=torch.float64) * 1e100,
        "i64": torch.randint(-(2 ** 40), 2 ** 40, (11,)),
        "i32": torch.randint(-(2 ** 30), 2 ** 30, (4, 2), dtype=torch.int32),
        "i16": torch.randint(-300, 300, (6,), dtype=torch.int16),
        "i8": torch.randint(-128, 127, (5,), dtype=torch.int8),
        "u8": torch.randint(0, 255, (5,), dtype=torch.uint8),
        "bool": torch.tensor([True, False, True, True]),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
        "nonfinite": torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), -2.0]),
    }
    f = tmp_path / "dtypes.pt"
    torch.save(sd, f)
    recs = {r["name"]: r for r in stats(nnp, f)}
    assert list(recs) == list(sd)
    for name, t in sd.items():
        assert recs[name]["dtype"] == DTYPE[t.dtype]
        if name != "nonfinite":
            check_against_torch(recs[name], t)
    s = recs["nonfinite"]["stats"]
    assert (s["nan"], s["pos_inf"], s["neg_inf"], s["finite"]) == (1, 1, 1, 2)
    assert (s["min"], s["max"]) == (-2.0, 1.0)


def test_views_share_storage(nnp, tmp_path):
    torch.manual_seed(3)
    base = torch.randn(6, 10)
    views = {
        "base": base,
        "transposed": base.t(),
        "rows": base[1:4],
        "strided": base[1:5:2, 3::3],
        "column": base[:, 7],
        "diagonal": base.diagonal(),
        "narrow": base.narrow(1, 2, 5),
        "expanded": base[2:3].expand(4, 10),
        "permuted": base.reshape(2, 3, 10).permute(2, 0, 1),
        "scalar_view": base[4, 4],
    }
    assert not views["transposed"].is_contiguous() and views["expanded"].stride()[0] == 0
    f = tmp_path / "views.pt"
    torch.save(views, f)
    recs = {r["name"]: r for r in stats(nnp, f)}
    assert list(recs) == list(views)
    for name, t in views.items():
        check_against_torch(recs[name], t)


def test_nested_and_plain_values(nnp, tmp_path):
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 4)).sum().backward()
    opt.step()
    ckpt = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "blocks": [{"w": torch.randn(2, 2)}, ({"w": torch.randn(3)}, "tag")],
        "epoch": 12,
        "loss": 0.25,
        "name": "run-7",
        "done": False,
        "extra": None,
    }
    f = tmp_path / "nested.pt"
    torch.save(ckpt, f)
    names = ls_names(nnp, f)
    assert names == ["model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias",
                     "optimizer.state.0.momentum_buffer", "optimizer.state.1.momentum_buffer",
                     "optimizer.state.2.momentum_buffer", "optimizer.state.3.momentum_buffer",
                     "blocks.0.w", "blocks.1.0.w"]
    recs = {r["name"]: r for r in stats(nnp, f)}
    check_against_torch(recs["model.2.weight"], ckpt["model"]["2.weight"])
    check_against_torch(recs["optimizer.state.1.momentum_buffer"],
                        ckpt["optimizer"]["state"][1]["momentum_buffer"])
    check_against_torch(recs["blocks.1.0.w"], ckpt["blocks"][1][0]["w"])
    doc = json.loads(nnp("ls", "--json", "--meta", f, check=0).stdout)
    meta = doc["files"][0]["metadata"]
    assert meta["epoch"] == "12" and meta["loss"] == "0.25" and meta["name"] == "run-7"
    assert meta["done"] == "False" and meta["extra"] == "None" and meta["blocks.1.1"] == "tag"
    assert meta["optimizer.param_groups.0.lr"] == "0.1"
    assert meta["optimizer.param_groups.0.params.3"] == "3"


def test_parameter_bare_tensor_and_protocol4(nnp, tmp_path):
    torch.manual_seed(9)
    p = torch.nn.Parameter(torch.randn(5, 3))
    f = tmp_path / "weights.pth"
    torch.save(p, f)
    (rec,) = stats(nnp, f)
    assert rec["name"] == "weights"
    check_against_torch(rec, p)

    sd = {"a": torch.randn(4, 4).t(), "b": torch.randn(8).to(torch.bfloat16)}
    f = tmp_path / "proto4.pt"
    torch.save(sd, f, pickle_protocol=4)
    recs = {r["name"]: r for r in stats(nnp, f)}
    for name, t in sd.items():
        check_against_torch(recs[name], t)


class _Hostile:
    """Pickles as a call to os.system: what a malicious checkpoint does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.path}",))


def test_hostile_checkpoint_refused(nnp, tmp_path):
    marker = tmp_path / "ran"
    f = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": _Hostile(marker)}, f)
    for cmd in ("ls", "stats"):
        p = nnp(cmd, f, check=2)
        assert p.stdout == ""
        (line,) = p.stderr.splitlines()
        assert "global 'posix.system' is not allowed (restricted unpickler)" in line
        assert "data.pkl byte" in line
    assert not marker.exists()


def test_legacy_format_refused(nnp, tmp_path):
    f = tmp_path / "old.pt"
    torch.save({"w": torch.zeros(2)}, f, _use_new_zipfile_serialization=False)
    p = nnp("ls", f, check=2)
    assert "legacy serialization format" in p.stderr and "torch >= 1.6" in p.stderr


def two_archives(tmp_path, order):
    """A zip holding two torch archives, `order` saying whose members come first."""
    import zipfile
    saved = {"one": {"w": torch.arange(4.0)}, "two": {"w": torch.full((3,), 7.0),
                                                    "extra": torch.zeros(2)}}
    parts = {}
    for name, obj in saved.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        with zipfile.ZipFile(tmp_path / f"{name}.pt") as z:
            parts[name] = [(i, z.read(i)) for i in z.infolist()]
    out = tmp_path / f"both_{order[0]}_first.pt"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name in order:
            for info, data in parts[name]:
                z.writestr(info.filename, data, zipfile.ZIP_STORED)
    return out


@pytest.mark.parametrize("order", [("one", "two"), ("two", "one")])
def test_two_archives_refused_as_torch_refuses_them(nnp, tmp_path, order):
    # torch takes the archive from the zip's first member and refuses members outside it
    path = two_archives(tmp_path, order)
    with pytest.raises(RuntimeError, match="not in a subdirectory"):
        torch.load(path)
    p = nnp("ls", path, check=2)
    other = order[1]
    assert (f"member '{other}/data.pkl' is outside the archive '{order[0]}/' that the zip's "
            "first member names, so torch.load would refuse the file") in p.stderr


def test_first_member_outside_an_archive_is_refused(nnp, tmp_path):
    import zipfile
    torch.save({"w": torch.ones(2)}, tmp_path / "a.pt")
    out = tmp_path / "loose.pt"
    with zipfile.ZipFile(tmp_path / "a.pt") as src, zipfile.ZipFile(out, "w") as z:
        z.writestr("README", b"not in a folder")
        for info in src.infolist():
            z.writestr(info.filename, src.read(info), zipfile.ZIP_STORED)
    with pytest.raises(RuntimeError):
        torch.load(out)
    p = nnp("ls", out, check=2)
    assert "the zip's first member 'README' is not in a folder, so torch.load would refuse it" \
        in p.stderr
