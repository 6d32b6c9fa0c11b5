#!/usr/bin/python3
"""diff_numpy.py - the peer of `nnparity diff` in bench/diff_vs_probe.sh: the same metrics for
every tensor two safetensors files share, computed the way a user would write it with numpy.

Each file's header is read with json; each tensor is mapped with np.memmap (BF16, which numpy
lacks, is widened to float32 by a shift), converted to float64 as nnparity does, subtracted and
reduced: mse, max-abs and where, rel-L2, cosine, Pearson correlation (np.corrcoef) and the count
outside nnparity's default tolerance for the dtype. One line per tensor.

    /usr/bin/python3 bench/diff_numpy.py REF PORT
"""
import json
import struct
import sys

import numpy as np

# nnparity's default tolerances (docs/diff.md): atol, rtol
TOLERANCE = {"F32": (1e-5, 1e-4), "F16": (1e-3, 1e-2), "BF16": (1e-2, 4e-2)}
NUMPY = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def tensors(path):
    """{name: (dtype name, shape, byte offset of the data in the file)}"""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], 8 + n + v["data_offsets"][0]) for k, v in header.items()}


def load(path, info):
    dtype, shape, offset = info
    count = int(np.prod(shape))
    a = np.memmap(path, dtype=NUMPY[dtype], mode="r", offset=offset, shape=(count,))
    if dtype == "BF16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float64)


def main():
    ref_path, port_path = sys.argv[1], sys.argv[2]
    ref, port = tensors(ref_path), tensors(port_path)
    for name in sorted(ref, key=lambda k: ref[k][2]):
        if name not in port:
            continue
        (ra, rr), (pa, pr) = TOLERANCE[ref[name][0]], TOLERANCE[port[name][0]]
        atol, rtol = max(ra, pa), max(rr, pr)  # the lower-precision side decides
        r, p = load(ref_path, ref[name]), load(port_path, port[name])
        d = p - r
        ad = np.abs(d)
        worst = int(ad.argmax())
        mse = float(np.mean(d * d))
        rel_l2 = float(np.linalg.norm(d) / np.linalg.norm(r))
        cosine = float(np.dot(r, p) / (np.linalg.norm(r) * np.linalg.norm(p)))
        pcc = float(np.corrcoef(r, p)[0, 1])
        fails = int(np.count_nonzero(ad > atol + rtol * np.abs(r)))
        print(f"{name}: mse {mse:.6g} max-abs {ad[worst]:.6g} at {worst} rel-L2 {rel_l2:.6g} "
              f"cosine {cosine:.9f} pcc {pcc:.9f} outside {fails}")


if __name__ == "__main__":
    main()
