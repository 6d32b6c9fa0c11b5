"""Views in a PyTorch checkpoint are gathered into C order when first read, so their size is not
bound by the file's: an expanded one-element storage reads as 2^32 elements. What a dump's
gathered views may hold in total is capped at 16 times the file's size (at least 64 MiB); the
view that would pass it is refused with one line, and nothing past the cap is allocated."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import BIN

pytestmark = pytest.mark.cli

MIB = 1 << 20


# A build under AddressSanitizer reserves terabytes of address space for its shadow memory, so
# it cannot run under an address-space limit; its own allocator refuses a huge allocation instead.
SANITIZED = b"__asan_init" in BIN.read_bytes()
LIMIT = "pass" if SANITIZED else "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))"


def run_measured(*args):
    """Run nnparity in a child of a fresh Python and return (returncode, stderr, peak RSS in
    bytes). Its address space is limited, so a regression fails instead of taking the machine."""
    code = (
        "import resource, subprocess, sys\n"
        "def lim():\n"
        f"    {LIMIT}\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, preexec_fn=lim)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(p.returncode)\n")
    p = subprocess.run([sys.executable, "-c", code, str(BIN), *args], capture_output=True,
                       text=True, env=dict(os.environ))
    return p.returncode, p.stderr, int(p.stdout.strip().splitlines()[-1]) * 1024


def test_expanded_scalar_shared_by_200_names_is_refused(tmp_path):
    base = torch.zeros(1).expand(2**32)
    assert base.stride() == (0,) and base.storage().size() == 1
    f = tmp_path / "bomb.pt"
    torch.save({f"t{i}": base for i in range(200)}, f)
    size = f.stat().st_size
    assert size < 4096
    rc, err, peak = run_measured("stats", str(f))
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert str(f) in line and "'t0'" in line
    assert f"{2**34} bytes" in line          # logical size: 2^32 float32
    assert "view of 4 stored bytes" in line  # the one-element storage
    assert f"cap of {64 * MIB} bytes" in line
    assert peak < 200 * MIB, peak


def test_cap_counts_every_view_of_the_dump(nnp, tmp_path):
    # 16 MiB per view: four reach the 64 MiB cap exactly, the fifth passes it
    base = torch.arange(3, dtype=torch.float32)[1:2].expand(4 * MIB)
    f = tmp_path / "five.pt"
    torch.save({f"v{i}": base for i in range(5)}, f)
    rc, err, peak = run_measured("stats", str(f))
    assert rc == 2, err
    assert "'v4'" in err and f"with the {64 * MIB} bytes of the views read before it" in err
    assert peak < 200 * MIB, peak
    # four of them are read, and read right
    torch.save({f"v{i}": base for i in range(4)}, f)
    doc = json.loads(nnp("stats", "--json", f).stdout)
    assert [r["name"] for r in doc["records"]] == [f"v{i}" for i in range(4)]
    for r in doc["records"]:
        assert r["stats"]["count"] == 4 * MIB
        assert r["stats"]["min"] == r["stats"]["max"] == 1.0


def test_ordinary_views_still_read(nnp, tmp_path):
    m = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    f = tmp_path / "t.pt"
    torch.save({"m": m, "mt": m.t()}, f)
    doc = json.loads(nnp("stats", "--json", f).stdout)
    recs = {r["name"]: r for r in doc["records"]}
    assert recs["mt"]["shape"] == [4, 3]
    assert recs["mt"]["stats"]["count"] == 12 and recs["mt"]["stats"]["max"] == 11.0
