"""What records' fingerprints cost a PyTorch capture (docs/sketch.md), on a few torchvision
models: forward under nnparity.capture with sketches (as shipped) and with NNPARITY_SKETCH=0
(none), alternately, RUNS times each; prints the medians and the share of the capture's time
that sketching takes (target < 5%). The third figure is an upper bound of that share measured
without the capture: sketching the same records on one thread from memory that no cache holds
(`sketch_cost records`, bench/sketch_cost.c, built by bench/sketch_cost.sh).

    NNPARITY_LIB=build/libnnparity.so /usr/bin/python3 bench/sketch_torch.py [MODEL ...]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import nnparity  # noqa: E402

SKETCH_COST = Path(os.environ.get("SKETCH_COST", Path(__file__).resolve().parents[1] / "build" /
                                  "bench" / "sketch_cost"))

def sketch_seconds(capture, runs):
    out = subprocess.run([str(SKETCH_COST), "records", str(capture), str(runs)], check=True,
                         capture_output=True, text=True).stdout
    return float(out)


def model_of(name):
    if name == "vit":  # the small ViT of capture_torch.py
        return torchvision.models.VisionTransformer(
            image_size=224, patch_size=16, num_layers=4, num_heads=6, hidden_dim=384,
            mlp_dim=1536)
    return getattr(torchvision.models, name)()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["resnet18", "mobilenet_v3_small", "vit"])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nnp_sketch_"))
    try:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"median of {args.runs}")
        for name in args.models:
            torch.manual_seed(0)
            model, x = model_of(name).eval(), torch.randn(1, 3, 224, 224)
            cap = work / "cap.safetensors"
            times = {"1": [], "0": []}
            with torch.no_grad():
                model(x)
                for k in range(args.runs + 1):
                    for flag in ("1", "0"):
                        os.environ["NNPARITY_SKETCH"] = flag
                        t0 = time.perf_counter()
                        with nnparity.capture(model, cap):
                            model(x)
                        if k:  # the first round warms up
                            times[flag].append(time.perf_counter() - t0)
            os.environ.pop("NNPARITY_SKETCH")
            with nnparity.capture(model, cap):
                model(x)
            t_with, t_without = statistics.median(times["1"]), statistics.median(times["0"])
            t_sk = sketch_seconds(cap, args.runs)
            n, mib = len(nnparity.load(cap)), cap.stat().st_size / 2**20
            print(f"{name:20s} {n:4d} records {mib:6.1f} MiB  capture {t_with * 1e3:7.1f} ms, "
                  f"without sketches {t_without * 1e3:7.1f} ms: share "
                  f"{100 * (t_with - t_without) / t_with:5.1f}% (target < 5%); sketching "
                  f"alone {t_sk * 1e3:6.1f} ms, {100 * t_sk / t_with:4.1f}%")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if "NNPARITY_LIB" not in os.environ:
        os.environ["NNPARITY_LIB"] = str(Path(__file__).resolve().parents[1] / "build" /
                                         "libnnparity.so")
    main()
