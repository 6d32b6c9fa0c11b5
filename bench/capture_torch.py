"""Benchmark of the PyTorch bridge: one forward of a torchvision model with nnparity.capture()
against the same forward with plain hooks that keep the same tensors and torch.save() them.

Both sides record every module's inputs and outputs and end with a complete file on disk. The
plain hooks must clone what they keep, as the bridge's records are taken at hook time: resnet18's
ReLUs work in place and would otherwise change tensors after they were seen. Prints the median of
5 runs of each and the ratio capture / (hooks + torch.save); the target is <= 1.3. Neither side
syncs its file to disk (the capture's journal already keeps a killed run's records); a third line
times torch.save followed by fdatasync, for comparison with a writer that does.

    NNPARITY_LIB=build/libnnparity.so /usr/bin/python3 bench/capture_torch.py [--model vit]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import nnparity  # noqa: E402


def tensors_in(obj, out):
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            tensors_in(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            tensors_in(x, out)
    return out


def run_with_torch_save(model, x, path, sync=False):
    kept, handles, calls = {}, [], {}

    def keep(name, prefix, obj):
        for i, t in enumerate(tensors_in(obj, [])):
            key = f"{name}/{prefix}{i}"
            n = calls.get(key, 0)
            calls[key] = n + 1
            kept[key + (f"#{n}" if n else "")] = t.detach().clone()

    for path_, m in model.named_modules():
        name = path_ or "model"
        handles.append(m.register_forward_pre_hook(
            lambda mod, args, name=name: keep(name, "in", args)))
        handles.append(m.register_forward_hook(
            lambda mod, args, out, name=name: keep(name, "out", out)))
    try:
        model(x)
        with open(path, "wb") as f:
            torch.save(kept, f)
            if sync:
                # The capture makes its file durable before renaming it into place
                # (fdatasync); this is the same guarantee for torch.save.
                f.flush()
                os.fdatasync(f.fileno())
    finally:
        for h in handles:
            h.remove()
    return sum(t.numel() * t.element_size() for t in kept.values()), len(kept)


def run_with_capture(model, x, path):
    with nnparity.capture(model, path):
        model(x)


def median_time(fn, runs=5):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("resnet18", "vit"), default="resnet18")
    ap.add_argument("--dir", help="where the files go (default: a temporary directory)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    torch.manual_seed(0)
    if args.model == "resnet18":
        model, x = torchvision.models.resnet18(), torch.randn(1, 3, 224, 224)
    else:
        model = torchvision.models.VisionTransformer(
            image_size=224, patch_size=16, num_layers=4, num_heads=6, hidden_dim=384,
            mlp_dim=1536)
        x = torch.randn(1, 3, 224, 224)
    model.eval()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="nnp_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    cap_path, pt_path = workdir / "capture.safetensors", workdir / "hooks.pt"
    try:
        with torch.no_grad():
            model(x)  # warm-up: allocator, kernels, library load
            run_with_capture(model, x, cap_path)
            nbytes, n = run_with_torch_save(model, x, pt_path)
            t_plain = median_time(lambda: model(x), args.runs)
            t_save = median_time(lambda: run_with_torch_save(model, x, pt_path), args.runs)
            t_sync = median_time(lambda: run_with_torch_save(model, x, pt_path, True),
                                 args.runs)
            t_cap = median_time(lambda: run_with_capture(model, x, cap_path), args.runs)
        assert len(nnparity.load(cap_path)) == n
        print(f"model {args.model}, input {list(x.shape)}, {n} records, "
              f"{nbytes / 2**20:.1f} MiB, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, files in {workdir}")
        print(f"forward alone                            {t_plain * 1e3:9.1f} ms")
        print(f"forward + hooks + torch.save             {t_save * 1e3:9.1f} ms")
        print(f"forward + hooks + torch.save + fdatasync {t_sync * 1e3:9.1f} ms")
        print(f"forward + nnparity.capture               {t_cap * 1e3:9.1f} ms")
        print(f"ratio capture / torch.save               {t_cap / t_save:9.2f}"
              "   (target <= 1.3)")
        print(f"ratio capture / torch.save + fdatasync   {t_cap / t_sync:9.2f}")
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if "NNPARITY_LIB" not in os.environ:
        os.environ["NNPARITY_LIB"] = str(Path(__file__).resolve().parents[1] / "build" /
                                         "libnnparity.so")
    main()
