"""inject(): run a port on the reference's layer inputs.

    with nnparity.inject(port, "ref.safetensors", capture_path="port_inj.safetensors"):
        port(x)

Before each module runs, its tensor inputs are replaced by the reference's record of the same
name, role and call (after the rules, if any), converted to the input's dtype and moved to its
device; so every layer is measured on the reference's inputs and a layer's own error shows apart
from the error it inherits. nnparity.tap() values are replaced the same way."""
from ._session import Session


def inject(model, reference, rules=None, only=None, capture_path=None, grads=False,
           include=None, exclude=None, leaves_only=False, inputs=True, outputs=True,
           root="model", rank=None, world_size=None, params=False):
    """A context manager that feeds `reference`'s recorded inputs to `model`'s modules.

    rules         a rules file mapping this model's record names onto the reference's
    only          fnmatch glob(s) on module paths: inject only into matching modules; the others
                  run on what they are given
    capture_path  also record this run (the port under injection) into a dump; the other
                  keywords then say what is recorded, as for capture(). Injected inputs are
                  always recorded, as injected.
    rank, world_size  as for capture(): where capture_path records in a distributed run
    params        as for capture(): record the modules' parameters and buffers (never injected)

    An input the reference has no record for runs unchanged. An input whose shape differs from
    the reference's raises NnparityError naming both shapes. Integer and bool inputs need the
    reference's dtype; float inputs convert from any dtype (round to nearest even). With torch
    1.13 only positional arguments can be replaced (torch passes keyword arguments to hooks from
    2.0 on, and then they are replaced too)."""
    return Session(model, capture_path, inject_path=reference, rules=rules, only=only,
                   grads=grads, include=include, exclude=exclude, leaves_only=leaves_only,
                   inputs=inputs, outputs=outputs, root=root, rank=rank,
                   world_size=world_size, params=params)
