"""auto(): capture and/or injection as the environment says, for scripts driven from outside
(`nnparity run`) without code changes beyond one `with` line:

    NNPARITY_CAPTURE=port.safetensors   record every layer into this dump
    NNPARITY_INJECT=ref.safetensors     inject the reference's layer inputs
    NNPARITY_RULES=port.rules           rules for the injection
    NNPARITY_PARAMS=1                   also record the modules' parameters and buffers
    NNPARITY_BASELINE=bf16              run the model in that precision: bf16, f16,
                                        autocast-bf16 or autocast-f16 (precision.py)

With none of CAPTURE and INJECT set, auto() does nothing at all. Otherwise it uses the library's
environment session: it is opened on the first auto() block and stays open for the process, so
several blocks (several forwards, a training step after an evaluation) go into one dump with
running call indices; the dump is finished when the process exits normally."""
import atexit
import contextlib
import os

from . import _lib
from ._session import Session

_atexit_registered = False


def _close_at_exit():
    # The library also finishes its environment session at exit; closing here first means the
    # dump is complete before the interpreter tears down, and a second close is a no-op.
    if _lib._lib is not None:
        _lib._lib.nnp_capture_close()


def auto(model=None, **kw):
    """A context manager: like capture()/inject() with the paths from the environment, or a
    no-op. `model` may be None to only enable nnparity.tap(). Keywords are those of capture()
    (grads, include, exclude, leaves_only, inputs, outputs, root, params) and inject()'s
    `only`; NNPARITY_PARAMS=1 in the environment sets params, NNPARITY_BASELINE=SPEC sets
    baseline (the model run in that precision, for `nnparity run --baseline`)."""
    global _atexit_registered
    if not (os.environ.get("NNPARITY_CAPTURE") or os.environ.get("NNPARITY_INJECT")):
        return contextlib.nullcontext()
    if not _atexit_registered:
        atexit.register(_close_at_exit)
        _atexit_registered = True
    if os.environ.get("NNPARITY_PARAMS", "") not in ("", "0"):
        kw.setdefault("params", True)
    if os.environ.get("NNPARITY_BASELINE"):
        kw.setdefault("baseline", os.environ["NNPARITY_BASELINE"])
    return Session(model, os.environ.get("NNPARITY_CAPTURE") or None,
                   inject_path=os.environ.get("NNPARITY_INJECT") or None,
                   rules=os.environ.get("NNPARITY_RULES") or None, env=True, **kw)
