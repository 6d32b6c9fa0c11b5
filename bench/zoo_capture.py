"""What nnparity.capture() costs over the torchvision zoo: per model, the plain forward against
the same forward inside nnparity.capture() (every module's inputs and outputs recorded into a
file on disk), timed in this process, alternately, after a warm-up of each.

Models: every classification, segmentation, detection, optical-flow and video model torchvision
lists, built with weights=None (and no backbone weights), batch 1, on the CPU, with torch's
default threads, under torch.no_grad(). A model that does not build or run on its small input is
listed as skipped.

    NNPARITY_LIB=build/libnnparity.so /usr/bin/python3 bench/zoo_capture.py \
        [--runs 5] [--dir DIR] [--group classification,...] [--max-mparams N] [--peer TREE]
        [MODEL ...]

Prints one row per model: plain ms and capture ms (medians of --runs runs; more for a fast
model, until each side had about 3 s, up to 4 times --runs; 3 for a model slower than 1 s, and
one run for a model slower than 5 s, whose ratio is close to 1 anyway), their ratio, the floor,
the records the dump holds and the MB it stores (a tensor recorded under several names is
stored once). The floor is (plain + write) / plain, where write is the time to write the same
bytes with one plain write() a stored tensor into a new file, timed in the same runs: no
capture that writes its records as the forward runs can have a lower ratio. The ratios are the
figures to compare; absolute times drift on a shared machine.

Each capture writes a new file: the previous one is deleted before the clock starts. Replacing
an existing dump also frees the old one's blocks, which costs what deleting it costs (on a file
system mounted with `discard`, a wait for the device) and is not the capture's own work.

--peer TREE also times the bridge of another source tree (TREE/python, with its
TREE/build/libnnparity.so) in the same runs, interleaved: a before/after comparison whose
figures share the same plain forwards.

--max-mparams N leaves out the models of more than N million parameters (listed as skipped):
building one and running it once takes minutes on a small machine, and a model that large
spends its time in a few big layers, where the capture costs least."""
import argparse
import ctypes
import gc
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torchvision import models

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import nnparity  # noqa: E402
from nnparity import _lib  # noqa: E402

GROUPS = {
    "classification": models,
    "segmentation": models.segmentation,
    "detection": models.detection,
    "optical_flow": models.optical_flow,
    "video": models.video,
}


def build(group, name):
    """The model with random weights; its backbone's too (no download)."""
    torch.manual_seed(0)
    extra = {"weights_backbone": None} if group in ("segmentation", "detection") else {}
    return models.get_model(name, weights=None, **extra).eval()


def count_mparams(name):
    """The model's parameters in millions, from its weights' description (no download, no
    build); None when torchvision describes none."""
    try:
        weights = list(models.get_model_weights(name))
    except Exception:
        return None
    return weights[0].meta.get("num_params", 0) / 1e6 if weights else None


def example_input(group, name):
    """(args) for one forward: small, but what the model accepts."""
    torch.manual_seed(0)
    if group == "classification":
        size = 299 if name.startswith("inception") else 224
        return (torch.randn(1, 3, size, size),)
    if group == "segmentation":
        return (torch.randn(1, 3, 224, 224),)
    if group == "detection":
        return ([torch.rand(3, 224, 224)],)
    if group == "optical_flow":
        return (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128))
    # video: (batch, channels, frames, height, width); the MViTs and S3D want 16 frames of
    # 224x224 (S3D pools the last 2 x 7 x 7 at once)
    if name.startswith("mvit") or name == "s3d":
        return (torch.randn(1, 3, 16, 224, 224),)
    return (torch.randn(1, 3, 8, 112, 112),)


def load_peer(tree):
    """The nnparity package of another source tree, imported under another name and bound to
    that tree's library."""
    tree = Path(tree).resolve()
    pkg = tree / "python" / "nnparity"
    spec = importlib.util.spec_from_file_location("nnparity_peer", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    peer = importlib.util.module_from_spec(spec)
    sys.modules["nnparity_peer"] = peer
    spec.loader.exec_module(peer)
    lib = tree / "build" / "libnnparity.so"
    peer._lib._find_library = lambda: str(lib)
    return peer


def record_sizes(path):
    """(records, the bytes each stored tensor of a finished dump takes), read from its header
    only: a record of a tensor recorded before (same_as, docs/dump-format.md) writes none."""
    L = _lib.lib()
    stored = L.dll.nnp_record_stored_bytes
    stored.restype, stored.argtypes = ctypes.c_uint64, [ctypes.c_void_p, ctypes.c_size_t]
    handle = ctypes.c_void_p()
    _lib.check(L.nnp_dump_open(os.fsencode(str(path)), ctypes.byref(handle)))
    try:
        n = L.nnp_dump_count(handle)
        return n, [b for b in (stored(handle, i) for i in range(n)) if b]
    finally:
        L.nnp_dump_close(handle)


def plain_writes(path, sizes):
    """The floor for writing a dump: the same bytes, one write() a record, into a new file.
    They come from memory with data in it, as a record does (a buffer never written reads
    from the kernel's shared zero page, which is cheaper)."""
    buf = memoryview(bytearray(os.urandom(max(sizes, default=0))))

    def write():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for n in sizes:
                os.write(fd, buf[:n])
        finally:
            os.close(fd)
    return write


def timed_fresh(fn, *paths):
    """fn's wall-clock seconds, with each of paths removed before (a capture writes a new file:
    replacing one would add the old one's deletion) and the garbage collected."""
    for p in paths:
        if p.exists():
            p.unlink()
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(group, name, runs, workdir, bridges):
    """(plain s, write s, [capture s per bridge], records, MB)"""
    model = build(group, name)
    args = example_input(group, name)
    path = workdir / "zoo.safetensors"
    raw = workdir / "zoo.raw"

    def plain():
        model(*args)

    def capture_with(bridge):
        def captured():
            with bridge.capture(model, path):
                model(*args)
        return captured

    def timed(fn):
        return timed_fresh(fn, path, raw)

    # each round: the plain forward, the captures (this tree's last: its dump gives the sizes
    # the plain writes copy), the plain writes
    captures = [capture_with(b) for b in reversed(bridges)]
    times = [[] for _ in range(2 + len(captures))]  # plain, write, captures
    sizes = None
    records = 0
    with torch.no_grad(), warnings.catch_warnings():
        # the bridge's warnings (skipped tensors) are not what is measured here
        warnings.simplefilter("ignore")
        # a warm-up of each; the plain one's time sizes the runs: `runs`, more (up to 4 times
        # as many) for a fast model, so that each side runs about 3 s in all; 3 for a model
        # slower than 1 s, and 1 with no warm-up but the plain one's for one slower than 5 s
        first = timed(plain)
        if first > 5.0:
            n = 1
        else:
            for side in captures:
                timed(side)
            records, sizes = record_sizes(path)
            n = 3 if first > 1.0 else max(runs, min(4 * runs, int(3.0 / max(first, 1e-3))))
        for _ in range(n):
            times[0].append(timed(plain))
            for side, t in zip(captures, reversed(times[2:])):
                t.append(timed(side))
            if sizes is None:
                records, sizes = record_sizes(path)
            times[1].append(timed(plain_writes(raw, sizes)))
    for p in (path, raw):
        if p.exists():
            p.unlink()
    medians = [statistics.median(t) for t in times]
    return medians[0], medians[1], medians[2:], records, sum(sizes) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="model names (default: every model of the groups)")
    ap.add_argument("--group", default=",".join(GROUPS),
                    help="comma-separated groups (default: all)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", help="where the dump goes (default: a temporary directory)")
    ap.add_argument("--peer", help="another source tree whose bridge is timed too")
    ap.add_argument("--max-mparams", type=float,
                    help="leave out models of more than this many million parameters")
    args = ap.parse_args()

    todo = []
    for group in args.group.split(","):
        for name in models.list_models(module=GROUPS[group]):
            if not args.models or name in args.models:
                todo.append((group, name))
    bridges = [nnparity] + ([load_peer(args.peer)] if args.peer else [])
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="nnp_zoo_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, --runs {args.runs}, "
          f"files in {workdir}"
          + (f", peer {args.peer}" if args.peer else ""), flush=True)
    peer_head = f" {'peer ms':>9} {'ratio':>6}" if args.peer else ""
    print(f"{'model':36} {'plain ms':>9} {'capture ms':>10} {'ratio':>6}{peer_head} "
          f"{'floor':>6} {'records':>8} {'MB':>8}", flush=True)
    ratios = []
    try:
        for group, name in todo:
            if args.max_mparams is not None:
                mparams = count_mparams(name)
                if mparams is not None and mparams > args.max_mparams:
                    print(f"{name:36} skipped: {mparams:.0f}M parameters, over --max-mparams",
                          flush=True)
                    continue
            try:
                tp, tw, tcs, records, mb = measure(group, name, args.runs, workdir, bridges)
            except Exception as e:  # a model that does not run on this input
                print(f"{name:36} skipped: {type(e).__name__}: {str(e).splitlines()[0][:80]}",
                      flush=True)
                continue
            ratios.append((tcs[0] / tp, name))
            peer = f" {tcs[1] * 1e3:9.1f} {tcs[1] / tp:6.2f}" if args.peer else ""
            print(f"{name:36} {tp * 1e3:9.1f} {tcs[0] * 1e3:10.1f} {tcs[0] / tp:6.2f}{peer} "
                  f"{(tp + tw) / tp:6.2f} {records:8d} {mb:8.1f}", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if ratios:
        worst = max(ratios)
        over = [n for r, n in ratios if r > 1.5]
        print(f"{len(ratios)} models; worst ratio {worst[0]:.2f} ({worst[1]}); "
              f"{len(over)} above 1.5{': ' + ', '.join(over) if over else ''}")


if __name__ == "__main__":
    if "NNPARITY_LIB" not in os.environ:
        os.environ["NNPARITY_LIB"] = str(Path(__file__).resolve().parents[1] / "build" /
                                         "libnnparity.so")
    main()
