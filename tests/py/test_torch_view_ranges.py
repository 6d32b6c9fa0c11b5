"""`stats` gathers a PyTorch view (transposed, strided, expanded) a chunk at a time instead of
copying all it presents first: the values come out as numpy computes them, chunks that start
in the middle of a row included, and the peak memory of an expanded view's stats stays far
below the size it presents."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import BIN

pytestmark = pytest.mark.cli

MIB = 1 << 20


def stats_of(nnp, path, *extra):
    doc = json.loads(nnp("stats", "--json", *extra, path, check=0).stdout)
    return {r["name"]: r["stats"] for r in doc["records"]}


def expected(a):
    a = np.asarray(a, dtype=np.float64)
    return {"count": a.size, "min": a.min(), "max": a.max(), "mean": a.mean(), "std": a.std(),
            "zeros": int((a == 0).sum())}


@pytest.mark.parametrize("threads", ["1", "2"])
def test_views_read_by_chunks_match_numpy(nnp, tmp_path, threads):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(1500, 1000, generator=g)
    views = {
        "transposed": base.t(),                        # 1.5M elements: a chunk ends mid-row
        "strided": base[::2, 1::3],                   # every other row, every third column
        "permuted": base.reshape(15, 100, 1000).permute(2, 0, 1),
        "expanded": torch.arange(7.0).reshape(7, 1, 1).expand(7, 400, 500),
    }
    path = tmp_path / "views.pt"
    torch.save(views, path)
    got = stats_of(nnp, path, "-j", threads)
    for name, v in views.items():
        want = expected(v.contiguous().numpy())
        s = got[name]
        assert s["count"] == want["count"] and s["zeros"] == want["zeros"], name
        assert s["min"] == pytest.approx(want["min"]) and s["max"] == pytest.approx(want["max"])
        assert s["mean"] == pytest.approx(want["mean"], abs=1e-9)
        assert s["std"] == pytest.approx(want["std"], rel=1e-9)


def peak_rss(*args):
    env = dict(os.environ)
    # AddressSanitizer keeps freed memory in quarantine (256 MiB), which would count each
    # chunk's buffer anew; a small quarantine measures what the pass itself holds
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"
    code = ("import resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
            "assert p.returncode == 0, p.stderr\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    p = subprocess.run([sys.executable, "-c", code, str(BIN), *args], capture_output=True,
                       text=True, env=env, check=True)
    return int(p.stdout.strip()) * 1024


def test_expanded_view_stats_in_bounded_memory(tmp_path):
    # 64 MiB presented (the cap's least), 4 KiB stored
    v = torch.arange(1024.0).reshape(1024, 1).expand(1024, 16 * 1024)
    path = tmp_path / "wide.pt"
    torch.save({"wide": v}, path)
    listing = peak_rss("ls", str(path))          # opens the file, reads no data
    stats = peak_rss("stats", "-j", "2", str(path))
    assert stats - listing < 32 * MIB, (stats, listing)


def test_expanded_view_diff_in_bounded_memory(tmp_path):
    """diff reads a view by chunks too: comparing two 64 MiB views of 4 KiB each holds neither
    whole, and finds the one element that differs."""
    v = torch.arange(1024.0).reshape(1024, 1).expand(1024, 16 * 1024)
    w = v.clone()
    w[5, 7] += 1  # one element apart: a plain tensor now, read in place
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"wide": v}, a)
    torch.save({"wide": v}, b)
    listing = peak_rss("ls", str(a))
    same = peak_rss("diff", "-j", "2", str(a), str(b))
    assert same - listing < 32 * MIB, (same, listing)
    c = tmp_path / "c.pt"
    torch.save({"wide": w}, c)
    p = subprocess.run([str(BIN), "diff", "--json", str(a), str(c)], capture_output=True,
                       text=True)
    # one element in 16M outside the tolerance: a warning, and exactly where it is
    assert p.returncode == 0, p.stderr
    pair = json.loads(p.stdout)["pairs"][0]
    assert pair["verdict"] == "warn"
    m = pair["metrics"]
    assert m["max_abs"] == 1.0 and m["max_index"] == [5, 7], m
