"""Tests of scale-out (docs/scale.md): per-rank capture named from each launcher's environment,
a directory of rank files read as one dump (and refused with a rank missing), the gather rules
on a 2-rank tensor-parallel port of torchvision's MLP against its single-process reference (a
wrong shard caught), pipeline stages read in execution order, and `nnparity diff --mpi` under
mpirun giving the single-process report byte for byte."""
import json
import os
import shutil
import subprocess
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

import nnparity
from conftest import BIN, LIB, write_safetensors

pytestmark = pytest.mark.cli
PYTHON = "/usr/bin/python3"

# Opens a capture with no options (rank and world size from the environment), taps one tensor
# and closes: plain ctypes, so the child starts in a blink.
TAP_SCRIPT = textwrap.dedent("""
    import ctypes, sys
    L = ctypes.CDLL(sys.argv[1])
    st = L.nnp_capture_open(sys.argv[2].encode(), None)
    if st:
        L.nnp_last_error.restype = ctypes.c_char_p
        print(L.nnp_last_error().decode(), file=sys.stderr)
        sys.exit(2)
    shape = (ctypes.c_uint64 * 1)(3)
    data = (ctypes.c_float * 3)(1, 2, 3)
    assert L.nnp_tap(b"layer", b"out0", 2, 1, shape, data) == 0
    assert L.nnp_capture_close() == 0
""")

RANK_VARS = ["RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK",
             "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"]


def tap_with_env(path, **env):
    e = {k: v for k, v in os.environ.items() if k not in RANK_VARS}
    e.update(env)
    return subprocess.run([PYTHON, "-c", TAP_SCRIPT, str(LIB), str(path)], env=e,
                          capture_output=True, text=True, timeout=60)


def ls_json(nnp, path):
    return json.loads(nnp("ls", "--json", path, check=0).stdout)["files"][0]


# ------------------------------------------------------------------------------------------------
# Per-rank naming

@pytest.mark.parametrize("family", [("RANK", "WORLD_SIZE"),
                                    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                                    ("PMI_RANK", "PMI_SIZE"),
                                    ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")])
def test_rank_file_named_from_each_launchers_environment(tmp_path, family):
    # srun sets SLURM_NTASKS as well as the step's size: every variable of a family is set
    out = tmp_path / "cap.safetensors"
    p = tap_with_env(out, **{family[0]: "2", **{v: "3" for v in family[1:]}})
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == ["rank-00002-of-00003.safetensors"]


def test_an_sbatch_script_is_one_process(tmp_path):
    # the batch script itself runs as SLURM_PROCID 0 with the allocation's SLURM_NTASKS, but
    # outside any srun step: a reference captured there is one process's plain file
    out = tmp_path / "ref.safetensors"
    p = tap_with_env(out, SLURM_PROCID="0", SLURM_NTASKS="4", SLURM_LOCALID="0")
    assert p.returncode == 0, p.stderr
    assert out.is_file()


def test_torchrun_variables_win_over_slurms(tmp_path):
    # torchrun inside a Slurm job: the process's own rank is torchrun's
    p = tap_with_env(tmp_path / "cap", RANK="1", WORLD_SIZE="2", SLURM_PROCID="0",
                     SLURM_NTASKS="1", SLURM_STEP_NUM_TASKS="1")
    assert p.returncode == 0, p.stderr
    assert os.listdir(tmp_path / "cap") == ["rank-00001-of-00002.safetensors"]


def test_one_process_keeps_a_plain_file_and_a_slash_makes_a_directory(tmp_path):
    assert tap_with_env(tmp_path / "one.safetensors").returncode == 0
    assert (tmp_path / "one.safetensors").is_file()
    # salloc sets SLURM_NTASKS without SLURM_PROCID: not a rank
    assert tap_with_env(tmp_path / "two.safetensors", SLURM_NTASKS="4").returncode == 0
    assert (tmp_path / "two.safetensors").is_file()
    assert tap_with_env(str(tmp_path / "dir") + "/").returncode == 0
    assert os.listdir(tmp_path / "dir") == ["rank-00000-of-00001.safetensors"]


def test_a_rank_outside_the_world_is_refused(tmp_path):
    p = tap_with_env(tmp_path / "cap", RANK="4", WORLD_SIZE="4")
    assert p.returncode == 2
    assert "RANK=4 and WORLD_SIZE=4 are not a rank below a world size" in p.stderr
    assert not (tmp_path / "cap").exists()


def test_bridge_takes_torch_distributed_rank(monkeypatch):
    from nnparity import _session
    assert _session.distributed_rank(1, 4) == (1, 4)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 3)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 8)
    assert _session.distributed_rank() == (3, 8)
    with pytest.raises(nnparity.NnparityError, match="rank 2 of 2 ranks does not exist"):
        nnparity.capture(None, "x", rank=2, world_size=2)


# ------------------------------------------------------------------------------------------------
# torchvision's MLP (Linear 0, ReLU 1, Dropout 2, Linear 3, Dropout 4), its single-process
# reference, and ports split by hand across two ranks

D_IN, D_HID, D_OUT, WORLD = 8, 16, 8, 2


def mlp(d_hid, fc1=None, fc2=None):
    """torchvision.ops.MLP D_IN -> d_hid -> D_OUT, in eval mode, with the given (weight, bias)
    for its two Linear layers (a bias of None: zeros)."""
    m = torchvision.ops.MLP(D_IN, [d_hid, D_OUT]).eval()
    with torch.no_grad():
        for layer, wb in ((m[0], fc1), (m[3], fc2)):
            if wb is not None:
                layer.weight.copy_(wb[0])
                layer.bias.copy_(wb[1] if wb[1] is not None else torch.zeros_like(layer.bias))
    return m


@pytest.fixture(scope="module")
def mlp_captures(tmp_path_factory):
    """ref: the MLP in one process; tp: column-parallel first Linear, row-parallel second Linear
    on 2 ranks; tp_bad: the same with rank 1's first shard off; pp: layers 0-2 on rank 0, 3-4 on
    rank 1, two micro-batches (calls)."""
    d = tmp_path_factory.mktemp("mlp")
    torch.manual_seed(0)
    ref = mlp(D_HID)
    fc1, fc2 = ref[0], ref[3]
    xs = [torch.randn(4, D_IN) for _ in range(2)]
    with torch.no_grad(), nnparity.capture(ref, d / "ref.safetensors"):
        ref(xs[0])
    with torch.no_grad(), nnparity.capture(ref, d / "ref2.safetensors", exclude=["model"]):
        for x in xs:
            ref(x)
    h = D_HID // WORLD
    for name, off in (("tp", 0.0), ("tp_bad", 0.01)):
        for r in range(WORLD):
            cols = slice(r * h, (r + 1) * h)
            w1 = fc1.weight[cols] + (off if r == 1 else 0.0)
            # the row-parallel bias is added once, by rank 0
            shard = mlp(h, (w1, fc1.bias[cols]),
                        (fc2.weight[:, cols], fc2.bias if r == 0 else None))
            with torch.no_grad(), nnparity.capture(shard, d / name, rank=r, world_size=WORLD):
                shard(xs[0])
    stage0, stage1 = nn.Sequential(), nn.Sequential()
    for i in range(3):
        stage0.add_module(str(i), ref[i])
    for i in (3, 4):
        stage1.add_module(str(i), ref[i])
    with torch.no_grad(), nnparity.capture(stage0, d / "pp", exclude=["model"], rank=0,
                                           world_size=WORLD):
        acts = [stage0(x) for x in xs]
    with torch.no_grad(), nnparity.capture(stage1, d / "pp", exclude=["model"], rank=1,
                                           world_size=WORLD):
        for a in acts:
            stage1(a)
    rules = d / "tp.rules"
    rules.write_text(textwrap.dedent("""\
        # row-parallel: each rank holds a partial sum (the second Linear, the Dropout after it)
        gather  ^(3/out0|4/|model/out0)       sum
        # column-parallel: each rank holds a slice of the hidden features
        gather  ^(0/out0|1/|2/|3/in0)          concat -1
        # the rest is replicated
        gather  .                              rank0
    """))
    return d


def test_rank_capture_directory_opens_as_one_dump(nnp, mlp_captures):
    info = ls_json(nnp, mlp_captures / "tp")
    assert info["format"] == "safetensors-ranks"
    names = [r["name"] for r in info["records"]]
    assert len(names) == 24
    # every name is held by both ranks: each copy says whose it is; rank 0's run comes first
    assert names[:3] == ["model/in0@rank0", "0/in0@rank0", "0/out0@rank0"]
    assert names[12] == "model/in0@rank1"
    dump = nnparity.load(mlp_captures / "tp")
    assert [r.rank for r in dump.records] == [0] * 12 + [1] * 12
    assert dump["0/out0@rank1"].shape == (4, D_HID // WORLD)


def test_a_missing_rank_is_refused(nnp, mlp_captures, tmp_path):
    shutil.copytree(mlp_captures / "tp", tmp_path / "tp")
    (tmp_path / "tp" / "rank-00001-of-00002.safetensors").unlink()
    p = nnp("ls", tmp_path / "tp", check=2)
    assert p.stderr.count("\n") == 1
    assert ("a capture of 2 ranks, but rank 1's file rank-00001-of-00002.safetensors is missing"
            in p.stderr)
    (tmp_path / "tp" / "rank-00001-of-00002.safetensors.partial").write_bytes(b"")
    assert "nnparity recover" in nnp("diff", tmp_path / "tp", tmp_path / "tp", check=2).stderr


def test_rank_files_of_two_runs_are_refused(nnp, mlp_captures, tmp_path):
    shutil.copytree(mlp_captures / "tp", tmp_path / "tp")
    shutil.copy(tmp_path / "tp" / "rank-00000-of-00002.safetensors",
                tmp_path / "tp" / "rank-00000-of-00003.safetensors")
    assert "rank files of different runs" in nnp("ls", tmp_path / "tp", check=2).stderr


def diff_json(nnp, ref, port, *args, check):
    p = nnp("diff", "--json", *args, ref, port, check=check)
    return json.loads(p.stdout)


def test_gather_rules_join_a_tensor_parallel_port(nnp, mlp_captures):
    d = mlp_captures
    rep = diff_json(nnp, d / "ref.safetensors", d / "tp", "--rules", d / "tp.rules", check=0)
    pairs = {p["ref"]: p for p in rep["pairs"]}
    assert len(pairs) == 12 and all(p["verdict"] == "pass" for p in pairs.values())
    assert rep["unmatched_ref"] == [] and rep["unmatched_port"] == []
    assert pairs["0/out0"]["adapters"] == "gather concat of 2 ranks on axis -1"
    assert pairs["0/out0"]["port_parts"] == ["0/out0@rank0", "0/out0@rank1"]
    assert pairs["3/out0"]["adapters"] == "gather sum of 2 ranks"
    assert pairs["model/out0"]["adapters"] == "gather sum of 2 ranks"
    assert pairs["0/in0"]["port"] == "0/in0@rank0" and pairs["0/in0"]["adapters"] is None


def test_gather_catches_a_wrong_shard(nnp, mlp_captures):
    d = mlp_captures
    rep = diff_json(nnp, d / "ref.safetensors", d / "tp_bad", "--rules", d / "tp.rules", check=1)
    first = rep["pairs"][rep["first_divergence"]]
    assert first["ref"] == "0/out0" and first["verdict"] == "fail"
    # the error sits in rank 1's half of the features
    assert first["metrics"]["max_index"][1] >= D_HID // WORLD


def test_without_gather_rules_rank0_is_compared_and_said(nnp, mlp_captures):
    d = mlp_captures
    p = nnp("diff", d / "ref.safetensors", d / "tp", check=1)
    assert ("ranks: 12 names that several ranks of the port hold no gather rule covers:\n"
            "  each compared as its lowest rank's copy") in p.stdout
    rep = diff_json(nnp, d / "ref.safetensors", d / "tp", check=1)
    verdicts = {p["ref"]: p["verdict"] for p in rep["pairs"]}
    assert verdicts["0/in0"] == "pass" and verdicts["0/out0"] == "shape"


def test_pipeline_stages_read_in_execution_order(nnp, mlp_captures):
    d = mlp_captures
    names = [r["name"] for r in ls_json(nnp, d / "pp")["records"]]
    # names one rank alone holds keep their names; micro-batch 0 on both stages, then 1
    layers = [f"{i}/{r}" for i in range(5) for r in ("in0", "out0")]
    assert names == layers + [n + "#1" for n in layers]
    rep = diff_json(nnp, d / "ref2.safetensors", d / "pp", check=0)
    assert rep["order_violation"] is None and len(rep["pairs"]) == 20


def test_gather_rule_errors_name_line_and_column(nnp, mlp_captures, tmp_path):
    bad = tmp_path / "bad.rules"
    for text, msg in (("gather x scatter\n", "line 1, column 10: 'scatter' is not a way to "
                                             "gather (concat AXIS, sum or rank0)"),
                      ("\ngather x concat\n", "line 2, column 16: 'gather REGEX concat' needs "
                                              "the axis"),
                      ("gather x sum 1\n", "line 1, column 14: unexpected '1'")):
        bad.write_text(text)
        p = nnp("diff", "--rules", bad, mlp_captures / "ref.safetensors", mlp_captures / "tp",
                check=2)
        assert msg in p.stderr, p.stderr


# ------------------------------------------------------------------------------------------------
# nnparity diff --mpi

MPIRUN = shutil.which("mpirun")
PLUGIN = BIN.parent / "libnnparity_mpi.so"
needs_mpi = pytest.mark.skipif(
    not MPIRUN or not PLUGIN.exists(),
    reason=("mpirun is not installed" if not MPIRUN else
            f"the MPI plugin {PLUGIN} is not built (make builds it where mpicc is found)"))


def mpirun(n, *args):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    return subprocess.run([MPIRUN, "--oversubscribe", "-np", str(n), str(BIN), *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def plain_dumps(tmp_path_factory):
    """Unsharded dumps whose pairs take every path: a tensor of several chunks (split among
    processes), a NaN, an adapted pair, mixed dtypes, an empty tensor, a shape mismatch, ints;
    and the reference again as a directory of shards."""
    d = tmp_path_factory.mktemp("plain")
    rng = np.random.default_rng(1)
    ref, port = {}, {}
    ref["a/out0"] = rng.standard_normal((3, 1_100_000)).astype(np.float32)
    port["a/out0"] = ref["a/out0"] + rng.standard_normal((3, 1_100_000)).astype(np.float32) * 3e-5
    ref["b/out0"] = rng.standard_normal((300, 70)).astype(np.float32)
    port["b/out0"] = ref["b/out0"].copy()
    port["b/out0"][5, 7] = np.nan
    ref["c/out0"] = rng.standard_normal((64, 32)).astype(np.float32)
    port["c/out0"] = ref["c/out0"].T.copy()
    ref["d/out0"] = rng.standard_normal((2, 3))
    port["d/out0"] = ref["d/out0"].astype(np.float16)
    ref["e/out0"] = np.zeros((0, 4), np.float32)
    port["e/out0"] = np.zeros((0, 4), np.float32)
    ref["f/out0"] = rng.standard_normal(5).astype(np.float32)
    port["f/out0"] = rng.standard_normal(6).astype(np.float32)
    ref["g/out0"] = np.arange(10, dtype=np.int32)
    port["g/out0"] = np.arange(10, dtype=np.int64)
    write_safetensors(d / "ref.safetensors", ref)
    write_safetensors(d / "port.safetensors", port)
    (d / "shards").mkdir()
    names = list(ref)
    write_safetensors(d / "shards" / "model-00001-of-00002.safetensors",
                      {k: ref[k] for k in names[:3]})
    write_safetensors(d / "shards" / "model-00002-of-00002.safetensors",
                      {k: ref[k] for k in names[3:]})
    (d / "t.rules").write_text("transpose ^c/out0$ 1,0\n")
    return d


@needs_mpi
@pytest.mark.parametrize("nproc", [2, 3])
def test_mpi_diff_equals_the_single_process_report(nnp, plain_dumps, mlp_captures, tmp_path,
                                                   nproc):
    cases = [(plain_dumps / "ref.safetensors", plain_dumps / "port.safetensors",
              plain_dumps / "t.rules", 1),
             (plain_dumps / "shards", plain_dumps / "port.safetensors", plain_dumps / "t.rules", 1),
             (mlp_captures / "ref.safetensors", mlp_captures / "tp", mlp_captures / "tp.rules", 0),
             (mlp_captures / "ref.safetensors", mlp_captures / "tp_bad",
              mlp_captures / "tp.rules", 1)]
    for k, (ref, port, rules, code) in enumerate(cases):
        one, many = tmp_path / f"one{k}.json", tmp_path / f"many{k}.json"
        single = nnp("diff", "--rules", rules, "--json-file", one, ref, port, check=code)
        p = mpirun(nproc, "diff", "--mpi", "--rules", rules, "--json-file", many, ref, port)
        assert p.returncode == code, p.stderr
        # no field of the report legitimately differs: the JSON is the same bytes, and so is
        # the text report
        assert many.read_bytes() == one.read_bytes()
        assert p.stdout == single.stdout


@needs_mpi
def test_mpi_failure_on_any_process_is_one_line_and_exit_2(plain_dumps):
    p = mpirun(2, "diff", "--mpi", plain_dumps / "ref.safetensors", plain_dumps / "nope")
    assert p.returncode == 2
    assert "nnparity: " + str(plain_dumps / "nope") + ": cannot open" in p.stderr
    assert p.stdout == ""


def test_mpi_without_the_plugin_is_refused_in_one_line(plain_dumps, tmp_path):
    env = dict(os.environ, NNPARITY_MPI_PLUGIN=str(tmp_path / "missing.so"))
    p = subprocess.run([str(BIN), "diff", "--mpi", plain_dumps / "ref.safetensors",
                        plain_dumps / "port.safetensors"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 2
    assert p.stderr.startswith("nnparity: --mpi needs the MPI plugin: ")
    assert p.stderr.count("\n") == 1
