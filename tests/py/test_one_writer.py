"""One writer per capture path: while a capture writes X, a second capture into X fails at open
with one line naming the first one's process id, and `nnparity recover X` refuses to finish the
capture under it. Neither touches the running capture's files. Once that process is gone (killed
too), the lock goes with it: recovery and a new capture work."""
import ctypes
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import BIN, LIB

pytestmark = pytest.mark.cli

TINY = BIN.parent / "examples" / "tiny_mlp"

# A capture through the C API that records one tensor, says so, and waits (killed by the test).
HOLD = textwrap.dedent("""
    import ctypes, sys
    lib = ctypes.CDLL(sys.argv[1])
    lib.nnp_capture_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.nnp_tap.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32,
                            ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p]
    assert lib.nnp_capture_open(sys.argv[2].encode(), None) == 0
    shape = (ctypes.c_uint64 * 1)(4)
    buf = (ctypes.c_float * 4)(1, 2, 3, 4)
    assert lib.nnp_tap(b"layer", b"out0", 2, 1, shape, buf) == 0
    print("ready", flush=True)
    sys.stdin.read()
""")


def run(*args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, errors="replace",
                          timeout=60)


@pytest.fixture
def holder(tmp_path):
    out = tmp_path / "x.safetensors"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNPARITY_")}
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(LIB), str(out)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "ready"
        yield p, out
    finally:
        p.kill()
        p.wait()


def snapshot(tmp_path):
    return {n: (tmp_path / n).read_bytes() for n in sorted(os.listdir(tmp_path))}


def test_second_capture_names_the_first(tmp_path, holder):
    p, out = holder
    before = snapshot(tmp_path)
    q = run(TINY, out)
    assert q.returncode == 2, (q.stdout, q.stderr)
    assert q.stderr.splitlines() == [
        f"tiny_mlp: {out}.partial: a capture by process {p.pid} is writing it: one writer per "
        "capture path"]
    assert snapshot(tmp_path) == before


def test_recover_refuses_a_running_capture(tmp_path, holder):
    p, out = holder
    before = snapshot(tmp_path)
    q = run(BIN, "recover", out)
    assert q.returncode == 2 and q.stdout == ""
    assert q.stderr.splitlines() == [
        f"nnparity: {out}.partial: a capture by process {p.pid} is writing it: not recovered "
        "while it runs"]
    assert snapshot(tmp_path) == before
    # the writer dies without closing: its lock goes with it
    p.send_signal(signal.SIGKILL)
    p.wait()
    q = run(BIN, "recover", out)
    assert q.returncode == 0, q.stderr
    assert out.exists() and not (tmp_path / "x.safetensors.partial").exists()
    assert run(TINY, tmp_path / "y.safetensors").returncode == 0


def test_two_writers_in_one_process(tmp_path):
    lib = ctypes.CDLL(str(LIB))
    lib.nnp_writer_open.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                    ctypes.POINTER(ctypes.c_void_p)]
    lib.nnp_writer_abort.argtypes = [ctypes.c_void_p]
    lib.nnp_last_error.restype = ctypes.c_char_p
    path = str(tmp_path / "x.safetensors").encode()
    a, b = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.nnp_writer_open(path, 0, ctypes.byref(a)) == 0
    try:
        assert lib.nnp_writer_open(path, 0, ctypes.byref(b)) != 0
        assert "another capture (in this process or one whose id is not known) is writing it" \
            in lib.nnp_last_error().decode()
        assert not b
    finally:
        lib.nnp_writer_abort(a)
    assert os.listdir(tmp_path) == []
