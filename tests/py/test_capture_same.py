"""A tensor recorded again unchanged is stored once (docs/dump-format.md, "same_as"): the
bridge records a tensor object it has recorded before, at the same version, as the earlier
record's tensor, and a C engine says so with nnp_tap_record_same. Every record still reads as
the tensor it was when it was recorded: a change made in place since is a new tensor."""
import ctypes
import json
import struct

import numpy as np
import pytest

from conftest import LIB, one_line_error, write_safetensors

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.cli


@pytest.fixture
def nnparity(monkeypatch):
    monkeypatch.setenv("NNPARITY_LIB", str(LIB))
    import nnparity
    return nnparity


def header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


class AddInPlace(torch.nn.Module):
    """Changes its input in place through a view of it, after the bridge recorded it."""

    def forward(self, x):
        x[:, :2].add_(1.0)
        return x


class ResizeInPlace(torch.nn.Module):
    """Gives its input another shape in place: resize_ changes no version and no address."""

    def forward(self, x):
        return x.resize_(x.shape[1], x.shape[0])


def reference_records(model, x):
    """What each module saw and made, cloned at the time, with plain hooks."""
    out = {}

    def keep(key, t):
        out[key] = t.detach().clone()  # and return None: a pre-hook's result replaces the input
    handles = []
    for path, m in model.named_modules():
        name = path or "model"
        handles.append(m.register_forward_pre_hook(
            lambda m, a, name=name: keep(f"{name}/in0", a[0])))
        handles.append(m.register_forward_hook(
            lambda m, a, o, name=name: keep(f"{name}/out0", o)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def test_bridge_stores_a_tensor_given_again_once_and_a_changed_one_again(nnparity, tmp_path):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, 8), torch.nn.ReLU(inplace=True), AddInPlace(),
              torch.nn.Linear(8, 3)]
    model = torch.nn.Sequential(*layers)
    x = torch.randn(4, 6)
    path = tmp_path / "cap.safetensors"
    with torch.no_grad(), nnparity.capture(model, path):
        model(x)

    h = header(path)
    same = {e["tensor"]: e.get("same_as") for e in json.loads(h["__metadata__"]
                                                               ["nnparity.records"])}
    assert h["__metadata__"]["nnparity.format"] == "dump/2"
    # an input that is the output before it, the container's input and output: one tensor
    assert same["0/in0"] == "model/in0" and same["1/in0"] == "0/out0"
    assert same["2/in0"] == "1/out0" and same["model/out0"] == "3/out0"
    # changed in place since it was recorded (ReLU's inplace, a view's add_): stored again
    assert same["1/out0"] is None and same["2/out0"] is None
    stored = {k for k in h if k != "__metadata__"}
    assert stored == {k for k, v in same.items() if v is None}

    # every name reads as what the module saw or made at the time
    want = reference_records(model, x.clone())
    dump = nnparity.load(path)
    assert sorted(r.name for r in dump.records) == sorted(want)
    for name, t in want.items():
        assert torch.equal(dump[name], t), name
    assert not torch.equal(dump["0/out0"], dump["1/out0"])  # ReLU changed it in place


def test_a_tensor_given_another_shape_in_place_is_stored_again(nnparity, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), ResizeInPlace())
    path = tmp_path / "cap.safetensors"
    with torch.no_grad(), nnparity.capture(model, path):
        y = model(torch.randn(4, 6))
    dump = nnparity.load(path)
    assert dump["1/in0"].shape == (4, 8) and dump["1/out0"].shape == (8, 4)
    assert torch.equal(dump["1/out0"], y) and torch.equal(dump["1/in0"].flatten(), y.flatten())
    same = {r["tensor"]: r.get("same_as")
            for r in json.loads(header(path)["__metadata__"]["nnparity.records"])}
    assert same["1/in0"] == "0/out0" and same["1/out0"] is None


def test_same_as_false_writes_every_record(nnparity, tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh())
    path = tmp_path / "cap.safetensors"
    with torch.no_grad(), nnparity.capture(model, path, same_as=False):
        model(torch.randn(4, 6))
    h = header(path)
    entries = json.loads(h["__metadata__"]["nnparity.records"])
    assert h["__metadata__"]["nnparity.format"] == "dump/1"
    assert not any("same_as" in e for e in entries)
    assert {k for k in h if k != "__metadata__"} == {e["tensor"] for e in entries}


def test_a_rank_capture_names_the_record_it_is_the_same_as(nnparity, nnp, tmp_path):
    # pipeline parallel: each rank runs other layers, so its names lose "@rank<R>" on reading
    torch.manual_seed(0)
    stages = [torch.nn.Sequential(torch.nn.Linear(6, 8)), torch.nn.Sequential(torch.nn.Tanh())]
    x = torch.randn(4, 6)
    for rank, stage in enumerate(stages):
        with torch.no_grad(), nnparity.capture(stage, tmp_path / "run", rank=rank, world_size=2,
                                               root=f"stage{rank}"):
            x = stage(x)
    records = json.loads(nnp("ls", "--json", tmp_path / "run").stdout)["files"][0]["records"]
    names = {r["name"] for r in records}
    same = {r["name"]: r["same_as"] for r in records if "same_as" in r}
    # "0/..." is on both ranks and keeps its suffix; "stage0/..." and "stage1/..." lose theirs
    assert same == {"0/in0@rank0": "stage0/in0", "stage0/out0": "0/out0@rank0",
                    "0/in0@rank1": "stage1/in0", "stage1/out0": "0/out0@rank1"}
    assert set(same.values()) <= names


def test_the_bridge_forgets_tensors_that_died(nnparity, tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh())
    with torch.no_grad(), nnparity.capture(model, tmp_path / "cap.safetensors") as session:
        for _ in range(50):
            model(torch.randn(4, 6))
        # the last step's three tensors, at most, are still alive (the result was dropped)
        assert len(session._recorded) <= 3


def test_a_dump_with_same_as_reads_alike_in_every_command(nnparity, nnp, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    path = tmp_path / "cap.safetensors"
    with torch.no_grad(), nnparity.capture(model, path):
        model(torch.randn(4, 6))
    records = json.loads(nnp("ls", "--json", "--sketch", path).stdout)["files"][0]["records"]
    by_name = {r["name"]: r for r in records}
    assert by_name["1/in0"]["same_as"] == "0/out0" and by_name["1/in0"]["stored_bytes"] == 0
    assert by_name["1/in0"]["nbytes"] == by_name["0/out0"]["stored_bytes"] == 4 * 8 * 4
    assert by_name["1/in0"]["sketch"] == by_name["0/out0"]["sketch"]
    assert "same_as" not in by_name["0/out0"]
    # a dump against itself: every record pairs with itself and agrees exactly
    doc = json.loads(nnp("diff", "--json", path, path).stdout)
    assert len(doc["pairs"]) == len(records)
    assert all(p["metrics"]["max_abs"] == 0 for p in doc["pairs"])


def test_c_api_records_the_same_tensor_and_refuses_what_does_not_fit(nnparity, tmp_path):
    from nnparity import _lib
    L = _lib.lib()
    path = tmp_path / "c.safetensors"
    data = (ctypes.c_float * 6)(*range(6))
    shape = (ctypes.c_uint64 * 2)(2, 3)
    other = (ctypes.c_uint64 * 2)(3, 2)

    def desc(name, role, dims=shape, dtype=_lib.TORCH_TO_NNP[torch.float32]):
        return _lib.TapDesc(name, role, b"Op", dtype, 2, dims)

    number = ctypes.c_uint64()
    # no session: nothing recorded, no number
    assert L.nnp_tap_record_numbered(ctypes.byref(desc(b"a", b"out0")), data,
                                     ctypes.byref(number)) == 0
    assert number.value == (1 << 64) - 1
    _lib.check(L.nnp_capture_open(str(path).encode(), None))
    try:
        _lib.check(L.nnp_tap_record_numbered(ctypes.byref(desc(b"a", b"out0")), data,
                                             ctypes.byref(number)))
        assert number.value == 0
        _lib.check(L.nnp_tap_record_same(ctypes.byref(desc(b"b", b"in0")), 0))
        # a record that is itself the same as another names the stored one
        _lib.check(L.nnp_tap_record_same(ctypes.byref(desc(b"c", b"in0")), 1))
        refusals = [(desc(b"d", b"in0"), 7, "the same as record 7, but 3 are recorded"),
                    (desc(b"d", b"in0", other), 0, "whose dtype or shape differs"),
                    (desc(b"d", b"in0", dtype=_lib.TORCH_TO_NNP[torch.float64]), 0,
                     "whose dtype or shape differs")]
        for d, n, why in refusals:
            assert L.nnp_tap_record_same(ctypes.byref(d), n) == _lib.NNP_ERR_ARG
            assert why in L.nnp_last_error().decode()
    finally:
        _lib.check(L.nnp_capture_close())
    dump = nnparity.load(path)
    assert [r.name for r in dump.records] == ["a/out0", "b/in0", "c/in0"]
    for name in ("a/out0", "b/in0", "c/in0"):
        assert dump[name].tolist() == [[0, 1, 2], [3, 4, 5]]
    entries = json.loads(header(path)["__metadata__"]["nnparity.records"])
    assert [e.get("same_as") for e in entries] == [None, "a/out0", "a/out0"]


@pytest.mark.parametrize("same_as, why", [
    ("missing/out0", "tensor 'b/in0' is the same as 'missing/out0', which the file does not "
                     "hold before it"),
    ("c/out0", "tensor 'b/in0' is the same as 'c/out0', which the file does not hold before it"),
    (7, "\"same_as\" must be strings"),
])
def test_a_same_as_that_names_no_earlier_tensor_is_refused(nnp, tmp_path, same_as, why):
    records = [{"tensor": "a/out0", "seq": 0}, {"tensor": "b/in0", "same_as": same_as, "seq": 1},
               {"tensor": "c/out0", "seq": 2}]
    path = tmp_path / "bad.safetensors"
    write_safetensors(path, {"a/out0": np.zeros(3, np.float32), "c/out0": np.ones(3, np.float32)},
                      {"nnparity.format": "dump/2", "nnparity.records": json.dumps(records)})
    assert why in one_line_error(nnp("ls", path, check=2), path)
