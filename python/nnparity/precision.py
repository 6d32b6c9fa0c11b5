"""The reference run in a port's precision: the baseline of `nnparity run --baseline` (docs/run.md,
"Ports in lower precision"). A port that computes in bf16 differs from a float32 reference by
bf16 compute noise; the same reference run in bf16 shows how much noise that is at every layer.

    NNPARITY_BASELINE=bf16 | f16                  the model in that dtype for the block
    NNPARITY_BASELINE=autocast-bf16 | autocast-f16  the block under torch.autocast

Cast: the model's floating parameters and buffers are replaced by copies in the dtype while the
block runs and put back when it ends (the model the script holds is unchanged afterwards); the
floating tensors given to the model are cast on the way in, and its floating outputs are handed
back in the dtype its inputs had, so that the script goes on as it would. The capture records
what the model computed: the layers' values in the low dtype.

Autocast: torch decides per operation (matrix products in the low dtype, reductions and norms in
float32), as a port built on mixed precision does; the outputs are handed back as with a cast.
torch runs autocast on the CPU in bf16 only."""
import torch

from ._lib import NNP_ERR_ARG, NnparityError
from ._session import flatten, remap

_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}
SPECS = ("bf16", "f16", "autocast-bf16", "autocast-f16")


def parse(spec):
    """(autocast?, dtype) for a NNPARITY_BASELINE value."""
    autocast = spec.startswith("autocast-")
    dtype = _DTYPES.get(spec[len("autocast-"):] if autocast else spec)
    if dtype is None:
        raise NnparityError(NNP_ERR_ARG, f"NNPARITY_BASELINE={spec!r}: the baseline's precision "
                                         f"is one of {', '.join(SPECS)}")
    return autocast, dtype


def _device_type(model):
    for p in model.parameters():
        return p.device.type
    return "cpu"


class Precision:
    """The model run in a lower precision while the block lasts. The session enters it in two
    steps around its own hooks: `before_hooks` (the inputs' cast must run before the capture
    records them) and `after_hooks` (the outputs' cast back must run after the capture recorded
    the low-precision outputs)."""

    def __init__(self, model, spec):
        self.autocast, self.dtype = parse(spec)
        self.model = model
        self._saved = []      # (parameter or buffer, its original data)
        self._handles = []
        self._autocast = None
        self._in_dtype = torch.get_default_dtype()

    def before_hooks(self):
        if self.model is None:
            return
        if self.autocast:
            device = _device_type(self.model)
            if device == "cpu" and self.dtype != torch.bfloat16:
                raise NnparityError(NNP_ERR_ARG, "NNPARITY_BASELINE=autocast-f16: torch's CPU "
                                                 "autocast runs bf16 only; use autocast-bf16 or "
                                                 "f16")
            self._autocast = torch.autocast(device_type=device, dtype=self.dtype)
            self._autocast.__enter__()
        else:
            self._cast_model()
        self._handles.append(self.model.register_forward_pre_hook(self._cast_inputs))

    def _cast_model(self):
        for module in self.model.modules():
            for table in (module._parameters, module._buffers):
                for t in table.values():
                    if t is not None and t.is_floating_point() and t.dtype != self.dtype:
                        self._saved.append((t, t.data))
                        t.data = t.data.to(self.dtype)

    def after_hooks(self):
        if self.model is not None:
            self._handles.append(self.model.register_forward_hook(self._cast_outputs))

    def exit(self):
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()
        saved, self._saved = self._saved, []
        for t, original in saved:
            t.data = original
        if self._autocast is not None:
            ac, self._autocast = self._autocast, None
            ac.__exit__(None, None, None)

    def _cast_inputs(self, module, args):
        floating = [t for t in flatten(args, []) if t.is_floating_point()]
        if floating:
            self._in_dtype = floating[0].dtype
        if self.autocast:
            return None  # torch casts per operation
        return remap(args, lambda t: t.to(self.dtype) if t.is_floating_point() else t)

    def _cast_outputs(self, module, args, output):
        return remap(output, lambda t: t.to(self._in_dtype) if t.is_floating_point() else t)

