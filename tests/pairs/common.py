"""common.py - what the pair scripts share: nnparity imported from this clone (no install
needed), the planted bug chosen by NNP_PAIR_BUG, and one forward pass run under
nnparity.auto(), which records or injects exactly as `nnparity run` asks through
NNPARITY_CAPTURE / NNPARITY_INJECT / NNPARITY_RULES, and does nothing without them.

The bridge loads libnnparity.so from $NNPARITY_LIB, else from the clone's build/."""
import os
import sys
from pathlib import Path

import torch

# torch's own kernels, not oneDNN's, on every CPU: oneDNN's bf16 kernels (on CPUs with
# AVX512-BF16) add in float32, and a model run with them in bf16 stays within bf16's tolerances
# of its float32 self, while torch's own show bf16's compute noise, as the tests that need it
# expect, the same on every machine.
torch.backends.mkldnn.enabled = False

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import nnparity  # noqa: E402

# Float32 noise between a reference and a correct port (another summation order, BatchNorm
# folded into the convolution): nnparity's own float32 tolerance.
ATOL, RTOL = 1e-5, 1e-4


def planted_bug(script, bugs):
    """The bug NNP_PAIR_BUG names ('' for none); an unknown name ends the script with one line."""
    name = os.environ.get("NNP_PAIR_BUG", "")
    if name and name not in bugs:
        sys.exit(f"{script}: NNP_PAIR_BUG={name} is not one of this port's bugs: "
                 f"{', '.join(sorted(bugs))}")
    return name


def forward(model, x, **kw):
    """model(x) under nnparity.auto(model): the one forward pass `nnparity run` records. On one
    thread: the pair scripts run two at a time on small machines, and one thread keeps every
    reduction in the same order from run to run. NNP_PAIR_DTYPE=bf16 (or f16) runs the model
    and its input in that dtype end to end, as a port to an accelerator does."""
    torch.set_num_threads(1)
    dtype = os.environ.get("NNP_PAIR_DTYPE", "")
    if dtype:
        if dtype not in ("bf16", "f16"):
            sys.exit(f"NNP_PAIR_DTYPE={dtype} is not bf16 or f16")
        dtype = torch.bfloat16 if dtype == "bf16" else torch.float16
        model, x = model.to(dtype), x.to(dtype)
    with torch.no_grad(), nnparity.auto(model, **kw):
        y = model(x)
    print("output:", " ".join(f"{v:.6f}" for v in y.float().flatten().tolist()))
    return y


def agree(port_out, ref_out):
    """Whether two outputs agree to float32 noise, as nnparity's default float32 tolerance
    says, with the largest difference."""
    d = (port_out - ref_out).abs()
    return bool((d <= ATOL + RTOL * ref_out.abs()).all()), float(d.max())


def self_check(script, build_ref, build_port, example, bugs):
    """--check: the correct port agrees with the reference to float32 noise, and every planted
    bug changes the output beyond it (a bug that the output cannot show would test nothing).
    Prints one line a case; exits 1 on the first case that does not hold."""
    torch.set_num_threads(1)
    x = example()
    with torch.no_grad():
        ref_out = build_ref()(x)
        for bug in [""] + sorted(bugs):
            ok, err = agree(build_port(bug)(x), ref_out)
            good = ok if not bug else not ok
            print(f"{script}: {bug or '(correct)':18} max-abs {err:.3g}  "
                  f"{'ok' if good else 'WRONG'}")
            if not good:
                sys.exit(1)
