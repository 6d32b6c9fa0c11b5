"""`nnparity ls` gives each record's presented size and, where it differs, the bytes it takes
in its file: a PyTorch view that repeats elements (stride 0) stores far fewer bytes than it
presents. The columns and JSON fields of plain files stay as they were."""
import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.cli


def write_views(path):
    torch.save({"bcast": torch.zeros(1).expand(1000),          # stride 0: one float stored
                "full": torch.arange(6.0).reshape(2, 3),        # contiguous
                "rows": torch.arange(4.0).reshape(4, 1).expand(4, 5)}, path)


def test_broadcast_view_text(nnp, tmp_path):
    path = tmp_path / "views.pt"
    write_views(path)
    assert torch.load(path)["bcast"].stride() == (0,)  # what torch.save kept
    p = nnp("ls", path, check=0)
    lines = p.stdout.splitlines()
    assert lines[0] == f"{path}: torch, 3 records, 4.01 KiB, stored in 44 B"
    assert lines[1].split() == ["seq", "name", "dtype", "shape", "size", "stored"]
    rows = {line.split()[1]: line.split() for line in lines[2:]}
    assert rows["bcast"] == ["0", "bcast", "F32", "[1000]", "3.91", "KiB", "4", "B"]
    assert rows["full"][-4:] == ["24", "B", "24", "B"]
    assert rows["rows"][-4:] == ["80", "B", "16", "B"]


def test_broadcast_view_json(nnp, tmp_path):
    path = tmp_path / "views.pt"
    write_views(path)
    (f,) = json.loads(nnp("ls", "--json", path, check=0).stdout)["files"]
    recs = {r["name"]: r for r in f["records"]}
    assert (recs["bcast"]["nbytes"], recs["bcast"]["stored_bytes"]) == (4000, 4)
    assert (recs["full"]["nbytes"], recs["full"]["stored_bytes"]) == (24, 24)
    assert (recs["rows"]["nbytes"], recs["rows"]["stored_bytes"]) == (80, 16)
    # the fields every record had come first, unchanged
    assert list(recs["bcast"])[:-1] == ["seq", "name", "module", "role", "call", "type", "dtype",
                                        "shape", "nelem", "nbytes", "file"]
    # and the view still reads as the 1000 zeros it presents
    (s,) = json.loads(nnp("stats", "--json", path, "bcast", check=0).stdout)["records"]
    assert s["stats"]["count"] == 1000 and s["stats"]["zeros"] == 1000


def test_deflated_npz_stores_less(nnp, tmp_path):
    path = tmp_path / "z.npz"
    np.savez_compressed(path, z=np.zeros(100_000, np.float32), r=np.arange(4, dtype=np.float32))
    (f,) = json.loads(nnp("ls", "--json", path, check=0).stdout)["files"]
    recs = {r["name"]: r for r in f["records"]}
    assert recs["z"]["nbytes"] == 400_000 and 0 < recs["z"]["stored_bytes"] < 4000
    assert "stored" in nnp("ls", path, check=0).stdout.splitlines()[1]


def test_plain_files_have_no_stored_column(nnp, conformance, tmp_path):
    f = conformance / "safetensors" / "valid_all_dtypes.safetensors"
    lines = nnp("ls", f, check=0).stdout.splitlines()
    assert lines[0] == f"{f}: safetensors, 12 records, 35 B"
    assert lines[1].split() == ["seq", "name", "dtype", "shape", "size"]
    (doc,) = json.loads(nnp("ls", "--json", f, check=0).stdout)["files"]
    assert all(r["stored_bytes"] == r["nbytes"] for r in doc["records"])
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.ones(7, np.float32))  # stored: as presented
    assert nnp("ls", path, check=0).stdout.splitlines()[1].split()[-1] == "size"
