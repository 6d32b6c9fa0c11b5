"""Capturing under faults, through the PyTorch bridge and through the C API (ctypes): a process
killed with SIGKILL mid-run keeps every record it finished, readable as a partial dump and
recovered byte for byte by `nnparity recover`; a full disk (RLIMIT_FSIZE standing in for it)
stops the capture with a clear error while the process lives on, also when SIGXFSZ keeps its
default action of killing the process, and leaves a partial dump that says it is one; an
unwritable output path or a missing or broken reference fails before the model runs."""
import ctypes
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import nnparity
from conftest import LIB, ROOT, run

PYTHON = sys.executable


def child_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNPARITY_")}
    env["NNPARITY_LIB"] = str(LIB)
    return env


# A child that captures a model step after step, for ever, and says on stdout which module's
# output has just been recorded: its own forward hooks, registered after the bridge's, run after
# the bridge recorded that output.
KILLED = textwrap.dedent("""
    import sys, torch, torch.nn as nn
    sys.path.insert(0, {python!r})
    import nnparity
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(6)])
    x = torch.randn(4, 32)
    with torch.no_grad(), nnparity.capture(model, {path!r}):
        for name, m in model.named_modules():
            m.register_forward_hook(lambda m, a, out, name=name or "model": print(name, flush=True))
        while True:
            x = torch.tanh(model(x))
""")


def expected_records(steps):
    """The records the child above makes in `steps` steps, as (name, tensor), computed here
    with plain hooks on the same model."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(6)])
    x = torch.randn(4, 32)
    out, calls = [], {}

    def add(name, role, t):
        key = (name, role)
        call = calls.get(key, 0)
        calls[key] = call + 1
        out.append((f"{name}/{role}" + (f"#{call}" if call else ""), t.detach().clone()))

    for path, m in model.named_modules():
        name = path or "model"
        m.register_forward_pre_hook(lambda m, a, name=name: add(name, "in0", a[0]))
        m.register_forward_hook(lambda m, a, o, name=name: add(name, "out0", o))
    with torch.no_grad():
        for _ in range(steps):
            x = torch.tanh(model(x))
    return out


def test_bridge_sigkill_mid_run_keeps_every_finished_record(tmp_path):
    path = tmp_path / "killed.safetensors"
    child = subprocess.Popen([PYTHON, "-c", KILLED.format(python=str(ROOT / "python"),
                                                         path=str(path))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=child_env())
    told = []
    try:
        while len(told) < 25:  # about three steps of 7 modules, then mid-step
            line = child.stdout.readline()
            assert line, child.stderr.read()
            told.append(line.strip())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert not path.exists()  # never presented as a finished dump

    want = expected_records(steps=6)
    # every output the child reported is recorded, and so is everything before it
    outs = [i for i, (n, _) in enumerate(want) if "/out0" in n]
    assert [want[i][0].split("/")[0] for i in outs[:25]] == told
    at_least = outs[24] + 1

    p = run("ls", f"{path}.partial", check=0)
    assert "safetensors-partial" in p.stdout.splitlines()[0]
    p = run("recover", path, check=0)
    (n,) = [int(w) for w in p.stdout.split() if w.isdigit()]
    assert n >= at_least
    dump = nnparity.load(path)
    assert len(dump) == n
    for (name, t), rec in zip(want, dump.records):
        assert rec.name == name
        assert torch.equal(dump[name], t), name
    assert not (tmp_path / "killed.safetensors.partial").exists()
    assert not (tmp_path / "killed.safetensors.journal").exists()


# A child under a file-size limit of 2 MiB capturing 640 KiB a step until the limit stops it;
# it reports what it caught and exits normally.
FULL_BRIDGE = textwrap.dedent("""
    import json, resource, signal, sys, torch, torch.nn as nn
    sys.path.insert(0, {python!r})
    import nnparity
    if {default_sigxfsz}:
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # as a C host has it
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
    model = nn.Sequential(*[nn.Linear(256, 256) for _ in range(4)])
    steps = 0
    try:
        with torch.no_grad(), nnparity.capture(model, {path!r}):
            for _ in range(100):
                model(torch.ones(64, 256))
                steps += 1
    except nnparity.NnparityError as e:
        print(json.dumps({{"error": str(e), "status": e.status, "steps": steps}}))
    else:
        print(json.dumps({{"error": None, "steps": steps}}))
""")

FULL_C_API = textwrap.dedent("""
    import ctypes, json, resource, signal, sys
    lib = ctypes.CDLL({lib!r})
    lib.nnp_capture_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.nnp_tap.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32,
                            ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p]
    lib.nnp_last_error.restype = ctypes.c_char_p
    if {default_sigxfsz}:
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
    assert lib.nnp_capture_open({path!r}.encode(), None) == 0
    shape = (ctypes.c_uint64 * 1)(16384)
    buf = (ctypes.c_float * 16384)()
    steps = 0
    while True:
        st = lib.nnp_tap(b"layer", b"out0", 2, 1, shape, buf)
        if st:
            break
        steps += 1
    first = lib.nnp_last_error().decode()
    again = lib.nnp_tap(b"layer", b"out0", 2, 1, shape, buf)
    closed = lib.nnp_capture_close()
    print(json.dumps({{"error": first, "status": st, "again": again, "closed": closed,
                      "close_error": lib.nnp_last_error().decode(), "steps": steps}}))
""")


@pytest.mark.parametrize("api", ["bridge", "c"])
@pytest.mark.parametrize("default_sigxfsz", [False, True], ids=["SIGXFSZ-ignored",
                                                                "SIGXFSZ-default"])
def test_disk_full_stops_capture_and_keeps_a_partial_dump(tmp_path, api, default_sigxfsz):
    path = tmp_path / "full.safetensors"
    src = FULL_BRIDGE if api == "bridge" else FULL_C_API
    code = src.format(python=str(ROOT / "python"), lib=str(LIB), path=str(path),
                      default_sigxfsz=default_sigxfsz)
    p = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                       env=child_env())
    # the host process lives on, whatever SIGXFSZ does
    assert p.returncode == 0, (p.returncode, p.stderr)
    got = json.loads(p.stdout.splitlines()[-1])
    assert got["status"] == 1  # NNP_ERR_IO
    assert f"{path}.partial: cannot write at byte 2097152: File too large" in got["error"]
    if api == "c":
        assert got["again"] == 1  # later taps are refused, not written
        assert "File too large (capture stopped; earlier records are kept)" in got["close_error"]
        assert got["closed"] == 1 and f"{path}.partial (nnparity recover finishes it)" in \
            got["close_error"]
    assert not path.exists()

    p = run("ls", f"{path}.partial", check=0)
    head = p.stdout.splitlines()[0]
    assert "safetensors-partial" in head
    n = int(head.split(", ")[1].split()[0])
    assert n >= 20  # 2 MiB of 64 KiB records, less the header room
    assert run("recover", path, check=0).stdout == f"recovered {n} records\n"
    dump = nnparity.load(path)
    assert len(dump) == n
    if api == "bridge":
        assert got["steps"] == n // 10  # a step records 10 tensors
        assert dump.records[0].name == "model/in0"
        assert torch.equal(dump["model/in0"], torch.ones(64, 256))


# ------------------------------------------------------------------------------------------------
# Failures before the model runs

class Counting(nn.Module):
    """A model that counts its forward calls."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x)


def no_hooks_left(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert nnparity._session.active_session() is None


@pytest.mark.parametrize("where,reason", [
    ("missing_dir/x.safetensors", "No such file or directory"),
    ("a_file/x.safetensors", "Not a directory"),
])
def test_unwritable_capture_path_fails_before_running(tmp_path, where, reason):
    (tmp_path / "a_file").write_text("")
    model = Counting()
    path = tmp_path / where
    with pytest.raises(nnparity.NnparityError) as err:
        with nnparity.capture(model, path):
            model(torch.ones(1, 4))
    assert model.calls == 0
    assert err.value.status == 1  # NNP_ERR_IO
    assert f"{path}.partial: cannot create: {reason}" in str(err.value)
    no_hooks_left(model)
    # the C API says the same
    lib = nnparity._lib.lib()
    assert lib.nnp_capture_open(os.fsencode(path), None) == 1
    assert f"{path}.partial: cannot create: {reason}" in nnparity._lib.last_error()
    assert lib.nnp_capture_active() == 0


def broken_reference(tmp_path):
    """A safetensors reference cut short: its tensor's bytes are missing."""
    f = tmp_path / "broken.safetensors"
    header = b'{"fc/in0":{"dtype":"F32","shape":[1,4],"data_offsets":[0,16]}}'
    f.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 10)
    return f


@pytest.mark.parametrize("kind", ["missing", "broken", "not_a_dump", "bad_rules"])
def test_bad_reference_fails_before_running(tmp_path, kind):
    ref = {"missing": tmp_path / "none.safetensors", "broken": broken_reference(tmp_path),
           "not_a_dump": tmp_path / "notes.txt"}.get(kind, tmp_path / "good.safetensors")
    (tmp_path / "notes.txt").write_text("not a dump\n")
    rules = None
    if kind == "bad_rules":
        with nnparity.capture(Counting(), ref):
            pass
        rules = tmp_path / "r.rules"
        rules.write_text("rename (unclosed x\n")
    want = {"missing": f"{ref}: cannot open: No such file or directory",
            "broken": f"{ref}: byte 86: tensors end at byte 86 but the file has 80 bytes "
                      "(MetadataIncompleteBuffer)",
            "not_a_dump": f"{ref}:",
            "bad_rules": f"{rules}: line 1, column 8: bad regex '(unclosed'"}[kind]
    out = tmp_path / "port.safetensors"
    model = Counting()
    with pytest.raises(nnparity.NnparityError) as err:
        with nnparity.inject(model, ref, rules=rules, capture_path=out):
            model(torch.ones(1, 4))
    assert model.calls == 0
    assert want in str(err.value), str(err.value)
    assert not out.exists() and not (tmp_path / "port.safetensors.partial").exists()
    no_hooks_left(model)
    # the C API refuses the same session the same way, creating nothing
    opts = nnparity._lib.CaptureOptions(os.fsencode(ref), os.fsencode(rules) if rules else None, 0)
    assert nnparity._lib.lib().nnp_capture_open(os.fsencode(out), ctypes.byref(opts)) != 0
    assert want in nnparity._lib.last_error()
    assert not out.exists() and not (tmp_path / "port.safetensors.partial").exists()


def test_mismatched_reference_stops_at_the_first_mismatching_layer(tmp_path):
    """A reference recorded from another shape: the first injected layer raises, naming both
    shapes, and no layer after it runs."""
    torch.manual_seed(0)
    ref_model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    ref = tmp_path / "ref.safetensors"
    with torch.no_grad(), nnparity.capture(ref_model, ref):
        ref_model(torch.randn(2, 8))
    port = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    ran = []
    handle = port[1].register_forward_hook(lambda *a: ran.append(1))
    with pytest.raises(nnparity.NnparityError) as err:
        with torch.no_grad(), nnparity.inject(port, ref):
            port(torch.randn(3, 8))
    assert "inject 'model/in0': shape mismatch: the port's input is [3, 8], reference record " \
           "'model/in0' is [2, 8]" in str(err.value)
    assert ran == []
    handle.remove()
    no_hooks_left(port)
