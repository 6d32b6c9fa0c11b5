"""A dump truncated by another process while nnparity reads it: one line naming the file and
exit 2, not a death by SIGBUS; a report not yet renamed into place is not left behind.

Making it deterministic: the dump is a sparse safetensors file of 1 GiB of float32 zeros whose
cached pages are dropped first (posix_fadvise DONTNEED), so every page is faulted in and
zero-filled as it is read: reading it takes hundreds of milliseconds even on a fast machine. The
test waits until the file shows in the process's /proc/PID/maps (it is mapped, its data not yet
read) and truncates it then, milliseconds into that window; the read that follows, past the new
end, raises SIGBUS. Should the process still finish first (it never did), the test tries again
and, after three tries, skips rather than fail on timing."""
import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from conftest import BIN

pytestmark = pytest.mark.cli

if not sys.platform.startswith("linux"):
    pytest.skip("needs /proc/PID/maps", allow_module_level=True)

TENSORS, TENSOR_BYTES = 4, 256 << 20  # 1 GiB of float32


def write_sparse_dump(path):
    header = {f"t{i}": {"dtype": "F32", "shape": [TENSOR_BYTES // 4],
                        "data_offsets": [i * TENSOR_BYTES, (i + 1) * TENSOR_BYTES]}
              for i in range(TENSORS)}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + TENSORS * TENSOR_BYTES)  # a hole: no disk used
    return 8 + len(text)


def drop_cached_pages(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def is_mapped(pid, path):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any(line.rstrip("\n").endswith(" " + str(path)) for line in f)
    except OSError:
        return False


def truncate_while_read(args, dump, other=None):
    """Run nnparity, truncate `dump` once the process has mapped it (and `other`, the second
    input of a diff); (exit code, stdout, stderr), or None when nnparity finished before the
    truncation (a retry)."""
    for path in (dump, other) if other else (dump,):
        write_sparse_dump(path)
        drop_cached_pages(path)
    p = subprocess.Popen([str(BIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 30
    while not (is_mapped(p.pid, dump) and (other is None or is_mapped(p.pid, other))):
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            out, err = p.communicate()
            pytest.fail(f"nnparity never mapped the dump (rc {p.returncode}): {err}")
    os.truncate(dump, 4096)
    out, err = p.communicate(timeout=120)
    return None if p.returncode == 0 else (p.returncode, out, err)


@pytest.mark.parametrize("command", ["stats", "diff"])
def test_a_dump_truncated_while_read_is_one_line_and_exit_2(tmp_path, command):
    dump = tmp_path / "big.safetensors"
    other = tmp_path / "other.safetensors" if command == "diff" else None
    report = tmp_path / "report.json"
    args = ["stats", "-j", "1", str(dump)] if command == "stats" else \
        ["diff", "-j", "1", "--json-file", str(report), str(dump), str(other)]
    for _ in range(3):
        got = truncate_while_read(args, dump, other)
        if got:
            break
        report.unlink(missing_ok=True)
    else:
        pytest.skip("nnparity read the whole dump before it could be truncated")
    rc, out, err = got
    assert rc != -signal.SIGBUS, "killed by SIGBUS"
    assert rc == 2, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    prefix = f"nnparity: {dump}: the file shrank while it was being read (SIGBUS at byte "
    assert lines[0].startswith(prefix), lines[0]
    assert lines[0].endswith("); nothing was written"), lines[0]
    offset = int(lines[0][len(prefix):-len("); nothing was written")])
    assert 4096 <= offset < os.path.getsize(dump) + TENSORS * TENSOR_BYTES + 4096
    # the report was never renamed into place: at most its temporary file is left beside it
    assert not report.exists()
    assert all(p.name.startswith("report.json.") and p.name.endswith(".tmp")
               for p in tmp_path.iterdir() if p not in (dump, other))
