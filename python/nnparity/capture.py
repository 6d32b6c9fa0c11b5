"""capture(): record every layer of a PyTorch model into an nnparity dump.

    with nnparity.capture(model, "ref.safetensors"):
        model(x)

Each module's inputs (in0, in1, ...) and outputs (out0, ...) are recorded as the forward runs,
under the module's path from named_modules() (the root is "model"), with the module's class name
as its type; see _session.py for the naming rules. The dump is complete and renamed into place
when the block ends, also when it ends with an exception."""
from ._session import Session


def capture(model, path, grads=False, include=None, exclude=None, leaves_only=False,
            inputs=True, outputs=True, root="model", rank=None, world_size=None, params=False,
            same_as=True):
    """A context manager that records `model` into the dump at `path` (model None: only
    nnparity.tap() records).

    grads        also record gradients when backward runs inside the block (grad_out<i>,
                 grad_in<i>, through torch's full backward hooks, which torch refuses on
                 modules whose outputs or inputs the forward code changes in place, such as
                 ResNet's `out += identity`; leave those out with include/exclude)
    include      fnmatch glob(s) on record names (module paths, "model" for the root): record only
                 modules that match one
    exclude      glob(s): do not record modules that match one
    leaves_only  record only modules without children
    inputs/outputs  whether to record the modules' inputs / outputs
    params       also record each module's own parameters (role param:NAME) and buffers
                 (buffer:NAME), once, as its first call sees them
    root         the record name of the root module
    rank, world_size  this process's place in a distributed run (default: torch.distributed's
                 when initialized, else the launcher's environment); with several ranks `path`
                 names a directory and this rank records rank-RRRRR-of-NNNNN.safetensors in it
    same_as      store a tensor object given again at the same version (torch's count of its
                 in-place changes), address and shape once, the later records `same_as` the
                 first; False writes every record's bytes, for code that changes a tensor
                 where torch does not count it (t.data, a NumPy view, a raw-pointer kernel)

    Modules left out are still tracked, so nnparity.tap() inside them names its records after
    them. The model computes exactly what it computes without capture."""
    return Session(model, path, grads=grads, include=include, exclude=exclude,
                   leaves_only=leaves_only, inputs=inputs, outputs=outputs, root=root,
                   rank=rank, world_size=world_size, params=params, same_as=same_as)
