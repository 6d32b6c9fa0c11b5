"""Checks of the PyTorch bridge over the whole torchvision classification zoo (random weights,
one image each), too slow for `make check` (tens of minutes on 2 cores):

- inject: injecting each model's own capture into the same model reproduces its output and
  every record bit for bit (injection changes values only: not aliasing, not memory format);
- silent: no module is reported as having run none of its hooks (no false warning).

    NNPARITY_LIB=build/libnnparity.so /usr/bin/python3 bench/zoo_checks.py [MODEL ...]

Prints one line per model; exits 1 when any model fails a check."""
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torchvision import models

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import nnparity  # noqa: E402


def same_bits(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return torch.equal(a.contiguous().view(-1).view(torch.uint8),
                           b.contiguous().view(-1).view(torch.uint8))
    return torch.equal(a, b)


def check(name, tmp):
    torch.manual_seed(0)
    model = models.get_model(name, weights=None).eval()
    size = 299 if name.startswith("inception") else 224
    x = torch.randn(1, 3, size, size)
    ref, port = os.path.join(tmp, "ref.safetensors"), os.path.join(tmp, "port.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad(), nnparity.capture(model, ref):
            y = model(x)
    silent = [str(w.message) for w in caught if str(w.message).startswith("nnparity:")]
    with torch.no_grad(), nnparity.inject(model, ref, capture_path=port):
        y2 = model(x)
    a, b = nnparity.load(ref), nnparity.load(port)
    differ = [k for k in a if k not in b or not same_bits(a[k], b[k])]
    ok = torch.equal(y, y2) and not differ and not silent
    print(f"{name}: {'ok' if ok else 'FAIL'}  {len(a)} records, {len(differ)} differ"
          f"{' (' + ', '.join(differ[:3]) + ')' if differ else ''}"
          f"{'; ' + silent[0] if silent else ''}", flush=True)
    os.remove(ref)
    os.remove(port)
    return ok


def main():
    names = sys.argv[1:] or models.list_models(module=models)
    with tempfile.TemporaryDirectory() as tmp:
        failed = [n for n in names if not check(n, tmp)]
    print(f"{len(names) - len(failed)} of {len(names)} models pass" +
          (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
