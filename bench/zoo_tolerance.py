"""Do the default verdicts see a 1% change on every layer of the torchvision zoo, and only that?
Random weights (seed 0), one input each; per model, four captures and three diffs:

- order: the model in channels_last (other convolution kernels, another summation order)
  against the reference must agree: float32 noise is not a bug;
- f64: the model in float64 against the float32 reference must agree;
- scaled: every parameter (weights and biases) times 1.01, so that each module that holds
  some computes its output 1% off, fed the reference's inputs (injection): the output of every
  module that holds a weight (not all zeros, as ViT's head) must fail.

    NNPARITY_BIN=build/nnparity NNPARITY_LIB=build/libnnparity.so \\
        /usr/bin/python3 bench/zoo_tolerance.py [--quick] [MODEL ...]

Prints one line per model (how many weighted modules the 1% change escaped, the smallest RMS
among the reference's outputs) and exits 1 when any check fails. Too slow for `make check`
(tens of minutes on 2 cores over the whole zoo); --quick takes the models below 30 M
parameters."""
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torchvision import models

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
import nnparity  # noqa: E402

BIN = os.environ.get("NNPARITY_BIN", str(ROOT / "build" / "nnparity"))


def diff(ref, port):
    p = subprocess.run([BIN, "diff", "--json", ref, port], capture_output=True, text=True)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"nnparity diff {ref} {port}: {p.stderr.strip()}")
    return p.returncode, json.loads(p.stdout)


def weighted_modules(model):
    """Modules holding a weight that 1% changes: not one initialized to zeros (ViT's head),
    whose output scaling leaves as it is."""
    return {name or "model" for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.nn.Parameter)
            and bool(m.weight.detach().ne(0).any())}


def check(name, tmp, size):
    torch.manual_seed(0)
    model = models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, size, size)
    path = {k: os.path.join(tmp, k + ".safetensors") for k in ("ref", "order", "f64", "scaled")}
    with torch.no_grad():
        with nnparity.capture(model, path["ref"]):
            model(x)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        with nnparity.capture(cl, path["order"]):
            cl(x.contiguous(memory_format=torch.channels_last))
        f64 = copy.deepcopy(model).double()
        with nnparity.capture(f64, path["f64"]):
            f64(x.double())
        scaled = copy.deepcopy(model)
        for p in scaled.parameters():
            p.mul_(1.01)
        with nnparity.inject(scaled, path["ref"], capture_path=path["scaled"]):
            scaled(x)
    rc_order, d_order = diff(path["ref"], path["order"])
    rc_f64, d_f64 = diff(path["ref"], path["f64"])
    _, d_scaled = diff(path["ref"], path["scaled"])
    weighted = weighted_modules(model)
    missed = sorted({p["ref"].split("/")[0] for p in d_scaled["pairs"]
                     if p["ref"].split("/")[0] in weighted and "/out" in p["ref"]
                     and p["verdict"] != "fail"})
    refs = nnparity.load(path["ref"])
    small = min((float(t.double().pow(2).mean().sqrt()) for k, t in refs.items()
                 if "/out" in k and t.is_floating_point() and t.numel()), default=math.nan)
    bad_order = [p["ref"] for p in d_order["pairs"] if p["verdict"] == "fail"]
    bad_f64 = [p["ref"] for p in d_f64["pairs"] if p["verdict"] == "fail"]
    ok = not missed and rc_order == 0 and rc_f64 == 0
    print(f"{name}: {'ok' if ok else 'FAIL'}  {len(weighted)} weighted modules, 1% missed on "
          f"{len(missed)}{' (' + ', '.join(missed[:3]) + ')' if missed else ''}; "
          f"order {len(bad_order)} fail{' (' + bad_order[0] + ')' if bad_order else ''}; "
          f"f64 {len(bad_f64)} fail{' (' + bad_f64[0] + ')' if bad_f64 else ''}; "
          f"smallest output rms {small:.1e}", flush=True)
    for p in path.values():
        if os.path.exists(p):
            os.remove(p)
    return ok


def main():
    args = sys.argv[1:]
    quick = "--quick" in args
    names = [a for a in args if not a.startswith("--")] or models.list_models(module=models)
    if quick:
        names = [n for n in names if sum(p.numel() for p in models.get_model(
            n, weights=None).parameters()) < 30_000_000]
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        failed = []
        for n in names:
            size = 299 if n.startswith("inception") else 224
            if not check(n, tmp, size):
                failed.append(n)
    print(f"{len(names) - len(failed)} of {len(names)} models pass" +
          (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
