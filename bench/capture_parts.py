"""Where a PyTorch capture's time goes, stage by stage: what each layer of nnparity.capture()
adds to a plain forward, timed alternately in one process (medians of --runs rounds).

    NNPARITY_LIB=build/libnnparity.so /usr/bin/python3 bench/capture_parts.py [--runs 15] MODEL...

For each torchvision classification model (weights=None, batch 1, the CPU, torch's default
threads, torch.no_grad()), one round times these, in this order, each into a new file:

  plain      the forward alone
  hooks      the forward with a pre-hook and a forward hook on every module that do nothing:
             what torch's own dispatch of hooks costs
  bridge     the forward inside nnparity.capture(), with the library's record functions
             replaced by ones that record nothing: the session's open and close (no records),
             its hooks' Python, and the calls into the library, without the library's work
  unsketched the capture, with NNPARITY_SKETCH=0 (no fingerprints)
  capture    the capture as shipped
  write      the same bytes as the capture stores, one write() a stored tensor, into a new file
             (zoo_capture.py's floor)
  least      the forward with a forward hook on every module that writes its output's bytes
             into a new file with one write(), each tensor once: the least a capture that
             writes as the forward runs does, with the forward's caches shared with the writes

and prints, per model, each median and what each stage adds to the one before, as a share of
the plain forward: `hooks`, then the bridge's Python (bridge - hooks), the library's recording
without fingerprints (unsketched - bridge, of which `write` is the file system's part), and
the fingerprints (capture - unsketched). zoo_capture.py's ratio is capture / plain; `least` is
printed as its own ratio to the plain forward.

The stubbed bridge takes the path of a tensor seen for the first time at every record (with no
record number, nothing is stored once under two names), so its Python is that of a record that
writes; the capture's records of a tensor written before take a shorter path through the
same Python. The stages are differences of medians: on a loaded machine one can come out
negative."""
import argparse
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo_capture  # noqa: E402  (models, inputs, the floor's writes)
from zoo_capture import nnparity  # noqa: E402

_session = sys.modules["nnparity._session"]
_lib = sys.modules["nnparity._lib"]


def stubbed_library():
    """A context in which the bridge's calls into the library record nothing: its record
    functions report success and no record number, as a session with no file does."""
    real = _session.tap_call

    def tap_call(fn, fn_at, name_b, role_b, type_b, code, shape, *args):
        # the arguments are packed as for the real call, so the bridge's own work stays
        _session._packer.packed(name_b, role_b, type_b, code, shape)
        _session._packer.number.value = _session._NOT_RECORDED
        return 0

    class Stub:
        def __enter__(self):
            _session.tap_call = tap_call

        def __exit__(self, *exc):
            _session.tap_call = real
    return Stub()


def noop_pre(module, args):
    return None


def noop_fwd(module, args, output):
    return None


def measure(name, runs, workdir):
    model = zoo_capture.build("classification", name)
    (x,) = zoo_capture.example_input("classification", name)
    path = workdir / "parts.safetensors"
    raw = workdir / "parts.raw"

    def plain():
        model(x)

    def hooks():
        handles = [m.register_forward_pre_hook(noop_pre) for m in model.modules()]
        handles += [m.register_forward_hook(noop_fwd) for m in model.modules()]
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()

    def bridge():
        with stubbed_library(), nnparity.capture(model, path):
            model(x)

    def least():
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        seen = set()

        def write_out(module, args, output):
            if isinstance(output, torch.Tensor) and output.is_contiguous():
                key = (output.data_ptr(), output._version, tuple(output.shape))
                if key not in seen:
                    seen.add(key)
                    os.write(fd, memoryview(output.numpy()).cast("B"))
        handles = [m.register_forward_hook(write_out) for m in model.modules()]
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
            os.close(fd)

    def capture(sketch):
        def run():
            if sketch:
                os.environ.pop("NNPARITY_SKETCH", None)
            else:
                os.environ["NNPARITY_SKETCH"] = "0"
            try:
                with nnparity.capture(model, path):
                    model(x)
            finally:
                os.environ.pop("NNPARITY_SKETCH", None)
        return run

    def timed(fn):
        return zoo_capture.timed_fresh(fn, path, raw)

    stages = [("plain", plain), ("hooks", hooks), ("bridge", bridge),
              ("unsketched", capture(False)), ("capture", capture(True)), ("least", least)]
    times = {k: [] for k, _ in stages}
    times["write"] = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, fn in stages:  # a warm-up of each; the capture's dump gives the floor's sizes
            timed(fn)
            if k == "capture":
                records, sizes = zoo_capture.record_sizes(path)
        write = zoo_capture.plain_writes(raw, sizes)
        for _ in range(runs):
            for k, fn in stages:
                times[k].append(timed(fn))
            times["write"].append(timed(write))
    for p in (path, raw):
        if p.exists():
            p.unlink()
    return {k: statistics.median(v) for k, v in times.items()}, records, sum(sizes) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
          f"{args.runs} rounds; stages as a share of the plain forward")
    print(f"{'model':<22}{'plain ms':>9}{'capture':>9}{'ratio':>7}{'least':>7} | {'hooks':>6}"
          f"{'bridge':>8}{'library':>9}{'(write)':>9}{'sketch':>8}")
    with tempfile.TemporaryDirectory(prefix="nnp_parts_") as d:
        for name in args.models:
            m, records, mb = measure(name, args.runs, Path(d))
            p = m["plain"]

            def share(v):
                return f"{100 * v / p:+.0f}%"
            print(f"{name:<22}{1e3 * p:>9.1f}{1e3 * m['capture']:>9.1f}{m['capture'] / p:>7.2f}"
                  f"{m['least'] / p:>7.2f} | "
                  f"{share(m['hooks'] - p):>6}{share(m['bridge'] - m['hooks']):>8}"
                  f"{share(m['unsketched'] - m['bridge']):>9}{share(m['write']):>9}"
                  f"{share(m['capture'] - m['unsketched']):>8}   ({records} records, {mb:.1f} MB)")


if __name__ == "__main__":
    if "NNPARITY_LIB" not in os.environ:
        os.environ["NNPARITY_LIB"] = str(HERE.parent / "build" / "libnnparity.so")
    main()
