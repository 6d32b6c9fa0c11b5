"""Interop with the tools people use: files written by numpy and torch read by nnparity to the
same values, and nnparity's own dumps read back by an independent reader that follows the
safetensors reference rules (and by torch)."""
import json
import subprocess

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, read_safetensors, write_safetensors

pytestmark = pytest.mark.cli


def stats(nnp, path, *extra):
    doc = json.loads(nnp("stats", "--json", path, *extra, check=0).stdout)
    return {r["name"]: r for r in doc["records"]}


def check_stats(rec, arr):
    x = np.asarray(arr, dtype=np.float64).ravel()
    s = rec["stats"]
    assert s["count"] == x.size
    if x.size:
        assert s["min"] == x.min() and s["max"] == x.max()
        assert s["mean"] == pytest.approx(x.mean(), rel=1e-12, abs=1e-13)
        assert s["std"] == pytest.approx(x.std(), rel=1e-10, abs=1e-13)


def test_numpy_npy_and_npz(nnp, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "le": rng.standard_normal((3, 5)).astype("<f4"),
        "be": rng.standard_normal((4, 2)).astype(">f8"),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4, 2)).astype(np.float32)),
        "ints": rng.integers(-9, 9, (7,)).astype(">i4"),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float16),
    }
    for name, arr in arrays.items():
        np.save(tmp_path / f"{name}.npy", arr)
        rec = stats(nnp, tmp_path / f"{name}.npy")[name]
        assert rec["shape"] == list(arr.shape)
        check_stats(rec, arr)
    np.savez(tmp_path / "s.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    for f in ("s.npz", "c.npz"):
        got = stats(nnp, tmp_path / f)
        assert sorted(got) == sorted(arrays)
        for name, arr in arrays.items():
            check_stats(got[name], arr)


def test_torch_tensors(nnp, tmp_path):
    torch.manual_seed(0)
    t32 = torch.randn(6, 7)
    tbf = torch.randn(33, 3).to(torch.bfloat16)
    t16 = (torch.randn(40) * 100).to(torch.float16)
    ti64 = torch.randint(-(2 ** 40), 2 ** 40, (9,))
    tb = torch.rand(12) > 0.5
    f = tmp_path / "torch.safetensors"
    write_safetensors(f, {
        "t32": t32.numpy(),
        "tbf": ("BF16", list(tbf.shape), tbf.view(torch.int16).numpy().tobytes()),
        "t16": t16.numpy(),
        "ti64": ti64.numpy(),
        "tb": tb.numpy(),
    })
    got = stats(nnp, f)
    check_stats(got["t32"], t32.double().numpy())
    check_stats(got["tbf"], tbf.double().numpy())
    check_stats(got["t16"], t16.double().numpy())
    check_stats(got["ti64"], ti64.double().numpy())
    check_stats(got["tb"], tb.double().numpy())
    np.save(tmp_path / "from_torch.npy", t32.numpy())
    check_stats(stats(nnp, tmp_path / "from_torch.npy")["from_torch"], t32.double().numpy())


def test_own_dump_follows_reference_rules(nnp, tmp_path):
    f = tmp_path / "mlp.safetensors"
    subprocess.run([str(EXAMPLES / "tiny_mlp"), str(f)], check=True)
    meta, tensors = read_safetensors(f)
    assert meta["nnparity.format"] == "dump/1"
    records = json.loads(meta["nnparity.records"])
    assert [r["tensor"] for r in records][:3] == ["block.norm/in0", "block.norm/out0",
                                                  "block.fc1/in0"]
    assert [r["seq"] for r in records] == list(range(16))
    assert records[8] == {"tensor": "block.norm/in0#1", "module": "block.norm", "role": "in0",
                          "type": "LayerNorm", "call": 1, "seq": 8}
    got = stats(nnp, f)
    for name, (dtype, shape, raw) in tensors.items():
        assert dtype == "F32"
        t = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(shape)
        check_stats(got[name], t.double().numpy())
    # the LayerNorm output is normalized per row
    _, shape, raw = tensors["block.norm/out0"]
    ln = np.frombuffer(raw, np.float32).reshape(shape)
    assert np.allclose(ln.mean(axis=1), 0, atol=1e-6) and np.allclose(ln.std(axis=1), 1, atol=1e-3)


def test_hf_sharded_checkpoint(nnp, tmp_path):
    rng = np.random.default_rng(1)
    shards = {
        "model-00001-of-00002.safetensors": {"embed.weight": rng.standard_normal((10, 4))},
        "model-00002-of-00002.safetensors": {"head.weight": rng.standard_normal((4, 10)),
                                             "head.bias": np.zeros(10)},
    }
    weight_map = {}
    for shard, tensors in shards.items():
        write_safetensors(tmp_path / shard, {k: v.astype(np.float32) for k, v in tensors.items()},
                          {"format": "pt"})
        weight_map.update({k: shard for k in tensors})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    p = nnp("ls", index, check=0)
    assert "safetensors-sharded, 3 records" in p.stdout
    got = stats(nnp, index)
    check_stats(got["embed.weight"], shards["model-00001-of-00002.safetensors"]["embed.weight"]
                .astype(np.float32))
    assert got["head.bias"]["stats"]["zeros"] == 10
    assert got["head.weight"]["file"].endswith("model-00002-of-00002.safetensors")
    assert "safetensors-sharded, 3 records" in nnp("ls", tmp_path, check=0).stdout
