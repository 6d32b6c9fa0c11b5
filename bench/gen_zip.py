"""gen_zip.py - the archives crc_check.sh diffs: a reference and a port as torch.save
checkpoints (.pt) and as np.savez archives (.npz), each 4 float32 tensors of 256 MiB ([16384,
4096], standard normal values from a fixed seed; 1 GiB a file). The port's known difference:
every 16th element is one unit in the last place off.

    /usr/bin/python3 bench/gen_zip.py DATA_DIR
"""
import sys
from pathlib import Path

import numpy as np
import torch

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(20261207)
ref = {f"t{i}": rng.standard_normal((16384, 4096), dtype=np.float32) for i in range(4)}
port = {}
for k, v in ref.items():
    p = v.copy()
    flat = p.reshape(-1).view(np.uint32)
    flat[::16] ^= 1
    port[k] = p
for name, tensors in (("ref", ref), ("port", port)):
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, out / f"zip_{name}.pt")
    np.savez(out / f"zip_{name}.npz", **tensors)
