"""Stored zip members (npz arrays, PyTorch storages) are read in place from the mapping, and
their CRC-32 is checked the first time their data is read, the way numpy and torch check it: one
flipped byte in a tensor is one line naming the file, the member and "CRC-32 mismatch", exit 2,
for every command that reads data. Records of a megabyte or more are checked inside the pass
that compares them or takes their statistics; smaller ones before it; both paths are tried
here. Listing a file reads no data, so it still works."""
import zipfile

import numpy as np
import pytest
import torch

from conftest import one_line_error

pytestmark = pytest.mark.cli

SMALL, LARGE = 1000, 400_000  # float32 elements: 4 kB, and 1.6 MB (past the folding threshold)


def values(n):
    return (np.arange(n, dtype=np.float32) * 0.25 - 7).reshape(-1, 8)


def write(fmt, path, n):
    a = values(n)
    if fmt == "npz":
        np.savez(path, w=a, b=np.ones(3, np.float32))
        return "w.npy"
    torch.save({"w": torch.from_numpy(a), "b": torch.ones(3)}, path)
    with zipfile.ZipFile(path) as z:  # torch names the archive after the file's stem
        return next(n for n in z.namelist() if n.endswith("/data/0"))


def flip_in_tensor(path, n, at):
    """Flip one bit of element `at` of tensor w, found in the file by its bytes."""
    raw = bytearray(path.read_bytes())
    needle = values(n).tobytes()
    start = raw.find(needle)
    assert start > 0 and raw.find(needle, start + 1) < 0
    raw[start + 4 * at + 1] ^= 0x04
    path.write_bytes(bytes(raw))


@pytest.fixture(params=["npz", "pt"])
def fmt(request):
    return request.param


@pytest.mark.parametrize("n", [SMALL, LARGE], ids=["small", "large"])
def test_flipped_byte_is_refused(nnp, tmp_path, fmt, n):
    good, bad = tmp_path / f"good.{fmt}", tmp_path / f"bad.{fmt}"
    write(fmt, good, n)
    member = write(fmt, bad, n)
    flip_in_tensor(bad, n, n // 2)

    nnp("ls", bad, check=0)  # the header alone: nothing to check yet
    nnp("stats", good, check=0)
    for args in (["stats", bad], ["stats", "-j", "1", bad], ["diff", good, bad],
                 ["diff", bad, good], ["diff", "-j", "1", good, bad],
                 ["convert", bad, tmp_path / "out.safetensors"], ["weights", good, bad]):
        msg = one_line_error(nnp(*args), bad)
        assert f"member '{member}'" in msg and "CRC-32 mismatch" in msg, (args, msg)
    assert not (tmp_path / "out.safetensors").exists()
    # the untouched file against itself agrees
    nnp("diff", good, good, check=0)


def test_flip_in_npy_header_is_refused(nnp, tmp_path):
    """A byte of a stored member outside the tensor (its npy header, still parsable) is part of
    the member, checked with the data."""
    path = tmp_path / "h.npz"
    np.savez(path, w=values(LARGE))
    raw = bytearray(path.read_bytes())
    pad = raw.find(b"    \n")  # the header's padding: a tab there still parses
    raw[pad] = ord("\t")
    path.write_bytes(bytes(raw))
    nnp("ls", path, check=0)
    for args in (["stats", path], ["diff", path, path]):
        msg = one_line_error(nnp(*args), path)
        assert "member 'w.npy'" in msg and "CRC-32 mismatch" in msg, (args, msg)


def test_view_of_flipped_storage_is_refused(nnp, tmp_path):
    """A strided view is gathered from its storage: the storage is checked first."""
    path = tmp_path / "view.pt"
    base = torch.from_numpy(values(SMALL).copy())
    torch.save({"t": base.t()}, path)  # transposed: gathered, not read in place
    flip_in_tensor(path, SMALL, 3)
    msg = one_line_error(nnp("stats", path), path)
    assert "member 'view/data/0'" in msg and "CRC-32 mismatch" in msg


def test_conformance_files_still_read(nnp, conformance):
    """Every npz and PyTorch file of the conformance set that nnparity reads has members whose
    CRC-32 holds."""
    read = 0
    for path in sorted(conformance.rglob("*")):
        if path.suffix not in (".npz", ".pt", ".pth", ".bin"):
            continue
        p = nnp("stats", path)
        assert "CRC-32" not in p.stderr, (path, p.stderr)
        if p.returncode == 0:
            read += 1
            nnp("diff", path, path, check=0)
    assert read >= 3


def test_flip_in_a_later_large_record_is_refused(nnp, tmp_path):
    # pairs of 2^20 elements or more are compared one after the other with every thread: a
    # mismatch found while comparing the second must stop the diff as one in the first does,
    # even when the flipped bit (the last of a mantissa) leaves the pair within tolerance, so
    # that no later read of the pair finds it
    n = 1_100_000
    a, b = values(n), values(n) + 1
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, a=a, b=b)
    np.savez(bad, a=a, b=b)
    raw = bytearray(bad.read_bytes())
    start = raw.find(b.tobytes())
    assert start > 0
    raw[start + 4 * (n // 2)] ^= 0x01
    bad.write_bytes(bytes(raw))
    for args in (["diff", good, bad], ["diff", "-j", "1", good, bad],
                 ["diff", "--json", good, bad]):
        msg = one_line_error(nnp(*args), bad)
        assert "member 'b.npy'" in msg and "CRC-32 mismatch" in msg, (args, msg)


def test_a_mismatch_found_on_another_thread_is_said(nnp, tmp_path):
    # pairs under 2^20 elements are compared several at a time, one a thread: the mismatch's
    # message was that thread's and the diff printed "nnparity: " and nothing else, unless the
    # calling thread happened to take the pair
    n = 400_000
    arrays = {f"a{k}": values(n) - k for k in range(8)}
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, **arrays)
    np.savez(bad, **arrays)
    raw = bytearray(bad.read_bytes())
    start = raw.find(arrays["a6"].tobytes())
    raw[start + 4 * (n // 2) + 1] ^= 0x04
    bad.write_bytes(bytes(raw))
    for _ in range(6):
        msg = one_line_error(nnp("diff", "-j", "2", bad, good), bad)
        assert "member 'a6.npy'" in msg and "CRC-32 mismatch" in msg, msg
