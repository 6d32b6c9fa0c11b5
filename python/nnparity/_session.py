"""The capture/injection session behind capture(), inject(), auto() and tap(): the hooks on a
model's modules, the stack of running modules that tap() names its records after, and the calls
that hand tensors to libnnparity.

Naming, the same for every entry point:
  - a module's record name is its path from model.named_modules(); the root module (path "") is
    called `root` ("model" unless given);
  - inputs are the tensors found by flattening the positional arguments (and keyword arguments,
    where torch passes them to hooks) depth-first through tuples, lists and dicts (in the dict's
    own order); they are numbered in0, in1, ... in that order, whatever their dtype; outputs are
    numbered out0, out1, ... the same way;
  - gradients (grads=True) are grad_out<i> and grad_in<i>, i being the position in torch's
    grad_output / grad_input tuples (None entries are skipped but keep their number, so grad_in<i>
    is the gradient of in<i> whenever the inputs are plain positional tensors);
  - tap(name, t) inside a module's forward records role <name> under that module; outside every
    module it records under the name itself with role "out0"; gradients of taps are
    grad_<role>.
The C library counts calls per (name, role), so a module run twice gets call 0 and call 1.

Tensors that are not plain dense ones are recorded in a dense form (dense_form(): nested padded
with 0, quantized dequantized, complex as a trailing (real, imag) axis) described by the dump's
"bridge.<kind>.<record>" metadata; what has none is listed under "bridge.skipped".

Distributed runs: each process records its own file. rank/world_size given to capture() or
inject() win; else torch.distributed's, when it is initialized; else the library reads the
launcher's environment (RANK/WORLD_SIZE, OMPI_COMM_WORLD_*, PMI_*, and srun's
SLURM_PROCID/SLURM_STEP_NUM_TASKS).
With several ranks the path names a directory that gets one rank-R-of-N.safetensors per rank
(docs/scale.md)."""
import ctypes
import fnmatch
import inspect
import json
import os
import threading
import warnings
import weakref

import torch

from . import _lib
from ._lib import NNP_ERR_ARG, NNP_ERR_NOT_FOUND, NNP_OK, NnparityError, TapDesc

# The session tap() reports to; None when no session is active (tap() is then a no-op).
_active = None

_PRE_HOOK_KWARGS = "with_kwargs" in inspect.signature(
    torch.nn.Module.register_forward_pre_hook).parameters


def active_session():
    return _active


# ------------------------------------------------------------------------------------------------
# Flattening

def flatten(obj, out):
    """Append the tensors in obj to out, depth-first through tuples, lists and dicts."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            flatten(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            flatten(x, out)
    return out


def remap(obj, fn):
    """obj with each tensor t replaced by fn(t), in flatten()'s order; containers holding no
    replaced tensor are returned as they are."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        items = [remap(x, fn) for x in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        if isinstance(obj, list):
            return type(obj)(items) if type(obj) is not list else items
        if hasattr(obj, "_fields"):  # a namedtuple
            return type(obj)(*items)
        return type(obj)(items) if type(obj) is not tuple else tuple(items)
    if isinstance(obj, dict):
        new = {k: remap(v, fn) for k, v in obj.items()}
        if all(new[k] is v for k, v in obj.items()):
            return obj
        out = obj.copy()
        for k, v in new.items():
            out[k] = v
        return out
    return obj


# ------------------------------------------------------------------------------------------------
# Handing tensors to the library

def host_view(t):
    """(tensor on the host, C-contiguous, nnp dtype) for t, or None when t is not a plain dense
    tensor of a dtype the library has (dense_form() handles those). A contiguous CPU tensor is
    returned as it is, so its memory is read in place."""
    code = _lib.TORCH_TO_NNP.get(t.dtype)
    # is_nested first: a nested tensor's layout is strided, but its shape cannot be read.
    if code is None or t.is_nested or t.layout != torch.strided:
        return None
    if t.is_cpu:
        if t.is_contiguous():
            # Read in place, not detached: only its shape and address are used, and a hook
            # pays for every new tensor object, record after record.
            return t, code
    elif t.device.type == "meta":
        return None
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if not t.is_contiguous():
        t = t.contiguous()
    return t, code


# The library wants a non-NULL data pointer even for a tensor with no elements, whose data_ptr()
# may be 0; this byte stands in (nothing is read from or written to it).
_EMPTY = ctypes.c_uint64(0)
_EMPTY_ADDR = ctypes.addressof(_EMPTY)


def make_desc(name_b, role_b, type_b, code, shape):
    n = len(shape)
    dims = (ctypes.c_uint64 * n)(*shape) if n else None
    # The shape array must outlive the call: keep it with the descriptor.
    desc = TapDesc(name_b, role_b, type_b, code, n, dims)
    desc._dims = dims
    return desc


# Descriptors for the library, packed in buffers of the calling thread.
_packer = _lib.TapPacker()


def tap_call(fn, fn_at, name_b, role_b, type_b, code, shape, *args):
    """fn (nnp_tap_record_numbered, nnp_tap_record_same, nnp_tap_inject) on a descriptor of the
    given fields and args, and its status; fn_at is the same function given a packed one, used
    whenever the shape fits the packer."""
    addr = _packer.packed(name_b, role_b, type_b, code, shape)
    if addr is not None:
        return fn_at(addr, *args)
    return fn(ctypes.byref(make_desc(name_b, role_b, type_b, code, shape)), *args)


def tap_record(fn, fn_at, name_b, role_b, type_b, code, shape, *args):
    """tap_call() for a record: a status other than NNP_OK is raised."""
    status = tap_call(fn, fn_at, name_b, role_b, type_b, code, shape, *args)
    if status != NNP_OK:
        raise _lib.error(status, f"recording {name_b.decode()}/{role_b.decode()}")


_NOT_RECORDED = (1 << 64) - 1  # the number nnp_tap_record_numbered gives when it records nothing


def record_tensor(name_b, role_b, type_b, t):
    """Record t: (its record's number in the capture, None when the session recorded nothing;
    its nnp dtype; its shape), or None (nothing recorded) when host_view() refuses it."""
    hv = host_view(t)
    if hv is None:
        return None
    h, code = hv
    L = _lib.lib()
    tap_record(L.nnp_tap_record_numbered, L.nnp_tap_record_numbered_at, name_b, role_b, type_b,
               code, h.shape, h.data_ptr() or _EMPTY_ADDR, _packer.number_addr)
    number = _packer.number.value
    return (None if number == _NOT_RECORDED else number), code, h.shape


def record_same(name_b, role_b, type_b, code, shape, number):
    """Record (name, role) as the tensor of record `number`, written before."""
    L = _lib.lib()
    tap_record(L.nnp_tap_record_same, L.nnp_tap_record_same_at, name_b, role_b, type_b, code,
               shape, number)


def tensor_version(t):
    """t's version counter, which every in-place change of its memory bumps (through any view of
    it); None for a tensor that keeps none (one made under torch.inference_mode())."""
    try:
        return t._version
    except RuntimeError:
        return None


class Unrecordable(Exception):
    """A tensor that has no dense form the library can hold; the message is the reason."""


def _summary(values):
    """A per-channel quantization parameter in a few words: all of it when short, else its range."""
    v = values.tolist()
    if len(v) <= 8:
        return "[" + " ".join(repr(x) for x in v) + "]"
    return f"{min(v)!r}..{max(v)!r}"


def dense_form(t):
    """(a plain dense tensor standing for t, [(kind, note)]) for the tensors host_view() refuses
    that still have values to compare: a nested tensor padded with 0 to its dense shape, a
    quantized one dequantized, a complex one as (real, imag) on a trailing axis of 2; the notes
    say what was done, for the dump's metadata. Raises Unrecordable for the others."""
    notes = []
    if t.is_nested:
        # Padded rather than one record per component: the record keeps the module's role, and
        # the dense form is what a port that runs without nested tensors passes between layers
        # (its padded positions hold whatever that port computed there, these hold 0).
        try:
            sizes = t._nested_tensor_size().tolist()
        except Exception:
            sizes = None
        t = torch.nested.to_padded_tensor(t.detach(), 0.0)
        note = f"padded with 0 to {list(t.shape)}"
        if sizes is not None:
            note += " from components " + " ".join("x".join(map(str, z)) or "()" for z in sizes)
        notes.append(("nested", note))
    if t.is_quantized:
        scheme = t.qscheme()
        if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            note = f"dtype={t.dtype},scale={t.q_scale()!r},zero_point={t.q_zero_point()}"
        else:
            note = (f"dtype={t.dtype},axis={t.q_per_channel_axis()},"
                    f"scale={_summary(t.q_per_channel_scales())},"
                    f"zero_point={_summary(t.q_per_channel_zero_points())}")
        t = t.detach().dequantize()
        notes.append(("quantized", note))
    if t.is_complex():
        t = torch.view_as_real(t.detach().resolve_conj())
        notes.append(("complex", "real and imaginary parts on a trailing axis of 2"))
    if t.device.type == "meta":
        raise Unrecordable("on the meta device, no values")
    if t.layout != torch.strided:
        raise Unrecordable(f"layout {t.layout}")
    if _lib.TORCH_TO_NNP.get(t.dtype) is None:
        raise Unrecordable(f"dtype {t.dtype}")
    return t, notes


def why_not_injected(t):
    """Why injection leaves t as it is (it has no plain dense form to overwrite), or None."""
    if t.is_nested:
        return "nested tensor"
    if t.is_quantized:
        return "quantized"
    if t.is_complex():
        return "complex"
    if t.device.type == "meta":
        return "on the meta device"
    if t.layout != torch.strided:
        return f"layout {t.layout}"
    if _lib.TORCH_TO_NNP.get(t.dtype) is None:
        return f"dtype {t.dtype}"
    return None


class _Replace(torch.autograd.Function):
    """Forward: the injected value; backward: the gradient passes to the original input, so a
    port can still run backward under injection. The value travels in a list, not as an
    argument, so autograd does not treat it as a view of an input (in-place ops on it stay
    legal)."""

    @staticmethod
    def forward(ctx, original, box):
        return box[0]

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def inject_tensor(name_b, role_b, type_b, t):
    """The reference's tensor for (name, role, this call), in t's dtype and on t's device, or t
    itself when the reference lacks that record or the dtype has no nnp equivalent. The library
    also records the result when the session records. t must be one host_view() accepts."""
    code = _lib.TORCH_TO_NNP[t.dtype]
    src = t.detach()
    # A private copy: the library overwrites it, and the caller's tensor must stay untouched.
    if src.device.type == "cpu":
        buf = src.clone(memory_format=torch.contiguous_format)
    else:
        buf = src.to("cpu").contiguous()
    L = _lib.lib()
    status = tap_call(L.nnp_tap_inject, L.nnp_tap_inject_at, name_b, role_b, type_b, code,
                      buf.shape, buf.data_ptr() or _EMPTY_ADDR)
    if status == NNP_ERR_NOT_FOUND:
        return t
    if status != NNP_OK:
        # The library's message names the record and, for a shape mismatch, both shapes.
        raise _lib.error(status)
    if t.device.type == "cpu" and src.is_contiguous():
        new = buf
    else:
        # The input's own layout (a channels-last image, a transposed view): kernels choose
        # their algorithm by strides, and another layout would change more than the values.
        new = torch.empty_like(src, memory_format=torch.preserve_format)
        new.copy_(buf)
    if t.requires_grad and torch.is_grad_enabled():
        new = _Replace.apply(t, [new])
    return new


# ------------------------------------------------------------------------------------------------
# Selection

def _patterns(p):
    if p is None:
        return None
    if isinstance(p, (str, bytes, os.PathLike)):
        return [os.fspath(p)]
    return [os.fspath(x) for x in p]


def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


class _Mod:
    """What the hooks of one module need, computed once."""
    __slots__ = ("name", "name_b", "type_b", "rec_in", "rec_out", "grads", "inject", "called",
                 "params")

    def __init__(self, name, module, rec_in, rec_out, grads, inject, params=False):
        self.name = name
        # CStr: the library is handed them record after record
        self.name_b = cstr(name)
        self.type_b = cstr(type(module).__name__)
        self.rec_in, self.rec_out, self.grads, self.inject = rec_in, rec_out, grads, inject
        self.called = False  # its hooks ran at least once
        self.params = params  # its parameters and buffers are still to be recorded


_ROLE_CACHE = {}
# Module names and types as CStr, made once a process: a capture of the same model again (a
# loop over inputs) would otherwise make a pair for every module each time it opens.
_CSTR_CACHE = {}
# Modules whose parameters the library's environment session has recorded, by record name.
_ENV_PARAMS_DONE = set()


def cstr(s):
    b = _CSTR_CACHE.get(s)
    if b is None:
        b = _CSTR_CACHE[s] = _lib.CStr(s.encode())
    return b


def role_bytes(prefix, i):
    key = (prefix, i)
    b = _ROLE_CACHE.get(key)
    if b is None:
        b = _ROLE_CACHE[key] = _lib.CStr(f"{prefix}{i}".encode())
    return b


# ------------------------------------------------------------------------------------------------
# The session

class Session:
    """One `with` block of capture(), inject() or auto(). `path`: where to record (None: no
    recording); `inject_path`: the reference to inject from (None: no injection). With
    env=True the library's environment-configured session is used instead of opening one; it
    stays open for the rest of the process."""

    def __init__(self, model, path=None, *, inject_path=None, rules=None, only=None, grads=False,
                 include=None, exclude=None, leaves_only=False, inputs=True, outputs=True,
                 root="model", env=False, rank=None, world_size=None, params=False,
                 baseline=None, same_as=True):
        if (rank is None) != (world_size is None):
            raise NnparityError(NNP_ERR_ARG, "give rank and world_size together, or neither")
        if world_size is not None and not 0 <= int(rank) < int(world_size):
            raise NnparityError(NNP_ERR_ARG, f"rank {rank} of {world_size} ranks does not exist")
        self.rank, self.world_size = rank, world_size
        self.model = model
        self.path = os.fspath(path) if path is not None else None
        self.inject_path = os.fspath(inject_path) if inject_path is not None else None
        self.rules = os.fspath(rules) if rules is not None else None
        self.only = _patterns(only)
        self.grads = bool(grads)
        self.include = _patterns(include)
        self.exclude = _patterns(exclude)
        self.leaves_only = bool(leaves_only)
        self.inputs = bool(inputs)
        self.outputs = bool(outputs)
        self.params = bool(params)
        self.same_as = bool(same_as)
        self.root = root
        self.env = env
        # the reference in a port's precision (precision.py): None, "bf16", "autocast-bf16", ...
        self.baseline = baseline
        self._precision = None
        self.recording = self.path is not None
        self.injecting = self.inject_path is not None
        self._handles = []
        self._full_bw_flags = []
        self._local = threading.local()
        self._entered = False
        # What could not be recorded / injected: {(record name, reason): times}, for the one
        # warning and the metadata at the end. Filled only off the common path.
        self._skipped = {}
        self._not_injected = {}
        # The tensors recorded, by id(): (weak reference, version, address, (record number,
        # nnp dtype, shape)), for _record_again().
        self._recorded = {}
        # Calls of each (name, role) recorded through dense_form(), which numbers the metadata
        # keys of those records (the library's call index, as long as a (name, role) is either
        # always or never such a tensor, as one module's tensors are).
        self._dense_calls = {}

    # -- selection --------------------------------------------------------------------------

    def _modules(self):
        out = []
        for path, module in self._named:
            name = path if path else self.root
            selected = ((self.include is None or _matches(name, self.include))
                        and not (self.exclude and _matches(name, self.exclude))
                        and not (self.leaves_only and next(module.children(), None) is not None))
            inject = self.injecting and (self.only is None or _matches(name, self.only))
            params = (selected and self.params and self.recording
                      and (next(module.parameters(recurse=False), None) is not None
                           or next(module.buffers(recurse=False), None) is not None))
            out.append((module, _Mod(name, module, selected and self.inputs and self.recording,
                                     selected and self.outputs and self.recording,
                                     selected and self.grads and self.recording, inject,
                                     params)))
        return out

    # -- the module stack ---------------------------------------------------------------------

    def stack(self):
        s = getattr(self._local, "stack", None)
        if s is None:
            s = self._local.stack = []
        return s

    def _pop(self, mod):
        s = self.stack()
        if s and s[-1] is mod:
            s.pop()
            return
        # Pop down to this module: entries above it belong to forwards that raised and were
        # caught inside this one.
        for i in range(len(s) - 1, -1, -1):
            if s[i] is mod:
                del s[i:]
                return

    # -- recording and injecting one tensor ---------------------------------------------------
    # The hooks must never break the user's forward: anything but the library's own errors
    # (NnparityError: a failing write, an injection shape mismatch, which the user must see)
    # becomes a skipped record, listed in the metadata and in one warning when the block ends.

    def _record(self, name_b, role_b, type_b, t):
        try:
            if self._record_again(name_b, role_b, type_b, t):
                return
            # read before the record: a change made after it (on another thread) then counts
            version = tensor_version(t)
            done = record_tensor(name_b, role_b, type_b, t)
            if done is None:
                self._record_dense(name_b, role_b, type_b, t)
            elif done[0] is not None and version is not None and self.same_as:
                self._remember(t, version, done)
        except NnparityError:
            raise
        except Unrecordable as e:
            self._skip(self._skipped, name_b, role_b, str(e))
        except Exception as e:
            self._skip(self._skipped, name_b, role_b, f"{type(e).__name__}: {e}")

    def _record_again(self, name_b, role_b, type_b, t):
        """Record t as the tensor of an earlier record when it is the same tensor object, at the
        same version and address: a module's output that the next module takes as its input, a
        container's input that its first child takes. Its bytes are then written and
        fingerprinted once. False when it is not such a tensor."""
        seen = self._recorded.get(id(t))
        if seen is None:
            return False
        ref, version, address, (number, code, shape) = seen
        # The weak reference tells a tensor that died, and whose id a new one reuses, from the
        # one recorded; the version, a change made in place since (an in-place ReLU, a
        # transpose_); the shape, a resize_, which leaves the version as it was.
        if ref() is not t or tensor_version(t) != version or t.data_ptr() != address or \
                t.shape != shape:
            return False
        record_same(name_b, role_b, type_b, code, shape, number)
        return True

    def _remember(self, t, version, done):
        """Keep what _record_again needs of t, recorded at `version` as `done` (record number,
        nnp dtype, shape), until t dies: a capture of many steps keeps only its live tensors'."""
        recorded, key = self._recorded, id(t)

        def forget(ref):
            entry = recorded.get(key)
            if entry is not None and entry[0] is ref:
                recorded.pop(key, None)
        recorded[key] = (weakref.ref(t, forget), version, t.data_ptr(), done)

    def _record_dense(self, name_b, role_b, type_b, t):
        dense, notes = dense_form(t)
        record_tensor(name_b, role_b, type_b, dense)
        key = (name_b, role_b)
        call = self._dense_calls.get(key, 0)
        self._dense_calls[key] = call + 1
        record = f"{name_b.decode()}/{role_b.decode()}" + (f"#{call}" if call else "")
        for kind, note in notes:
            _lib.check(_lib.lib().nnp_capture_set_meta(f"bridge.{kind}.{record}".encode(),
                                                       note.encode()),
                       "setting the dump's metadata")

    @staticmethod
    def _skip(table, name_b, role_b, reason):
        key = (f"{name_b.decode()}/{role_b.decode()}", reason)
        table[key] = table.get(key, 0) + 1

    def _inject(self, name_b, role_b, type_b, t):
        """inject_tensor() for a tensor it can take, else t itself (recorded when recording,
        as the library records what it injects)."""
        try:
            why = why_not_injected(t)
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
        if why is None:
            try:
                return inject_tensor(name_b, role_b, type_b, t)
            except NnparityError:
                raise
            except Exception as e:
                why = f"{type(e).__name__}: {e}"
        self._skip(self._not_injected, name_b, role_b, why)
        if self.recording:
            self._record(name_b, role_b, type_b, t)
        return t

    def _failed(self, mod, side, e):
        """A hook's body raised something other than NnparityError: noted as a skipped record
        of the module's side ("in", "out", "grad") instead of breaking the forward."""
        self._skip(self._skipped, mod.name_b, side.encode(), f"{type(e).__name__}: {e}")

    # -- hooks --------------------------------------------------------------------------------

    def _params(self, mod, module):
        """Record the module's own parameters (role param:NAME) and buffers (buffer:NAME) as
        its first call sees them, once a session: what a layer computes with, for a diff that
        names the wrong weight and a reproducer that holds it. An environment session spans
        several blocks: a module it has seen is not recorded again."""
        mod.params = False
        if self.env:
            if mod.name in _ENV_PARAMS_DONE:
                return
            _ENV_PARAMS_DONE.add(mod.name)
        for kind, items in (("param", module.named_parameters(recurse=False)),
                            ("buffer", module.named_buffers(recurse=False))):
            for pname, t in items:
                if isinstance(t, torch.Tensor):
                    self._record(mod.name_b, _lib.CStr(f"{kind}:{pname}".encode()), mod.type_b,
                                 t.detach())

    def _inputs(self, mod, args, kwargs):
        """Record or inject the tensors of (args, kwargs); returns the new (args, kwargs) when
        something was injected, else None."""
        if mod.inject:
            counter = iter(range(1 << 62))
            # One tensor passed as several inputs (attn(x, x, x)) stays one tensor: modules
            # test for it (nn.MultiheadAttention's fast path needs query is key is value).
            given = {}

            def fn(t):
                role = role_bytes("in", next(counter))
                seen = given.get(id(t))
                if seen is not None and seen[0] is t:
                    if self.recording:  # as nnp_tap_inject records what it injects
                        self._record(mod.name_b, role, mod.type_b, seen[1])
                    return seen[1]
                new = self._inject(mod.name_b, role, mod.type_b, t)
                given[id(t)] = (t, new)
                return new
            new_args = remap(args, fn)
            new_kwargs = remap(kwargs, fn) if kwargs else kwargs
            if new_args is args and new_kwargs is kwargs:
                return None
            return new_args, new_kwargs
        if mod.rec_in:
            tensors = flatten(args, [])
            if kwargs:
                flatten(kwargs, tensors)
            record, name_b, type_b = self._record, mod.name_b, mod.type_b
            for i, t in enumerate(tensors):
                record(name_b, role_bytes("in", i), type_b, t)
        return None

    def _outputs(self, mod, output):
        record, name_b, type_b = self._record, mod.name_b, mod.type_b
        for i, t in enumerate(flatten(output, [])):
            record(name_b, role_bytes("out", i), type_b, t)

    def _grads(self, mod, grad_input, grad_output):
        for prefix, grads in (("grad_out", grad_output), ("grad_in", grad_input)):
            for i, g in enumerate(grads):
                if isinstance(g, torch.Tensor):
                    self._record(mod.name_b, role_bytes(prefix, i), mod.type_b, g)

    def _make_hooks(self, mod):
        session = self

        def pre_hook(module, args):
            mod.called = True
            session.stack().append(mod)
            try:
                if mod.params:
                    session._params(mod, module)
                r = session._inputs(mod, args, None)
            except NnparityError:
                raise
            except Exception as e:
                session._failed(mod, "in", e)
                return None
            return None if r is None else r[0]

        def pre_hook_kwargs(module, args, kwargs):
            mod.called = True
            session.stack().append(mod)
            try:
                if mod.params:
                    session._params(mod, module)
                return session._inputs(mod, args, kwargs)
            except NnparityError:
                raise
            except Exception as e:
                session._failed(mod, "in", e)
                return None

        def fwd_hook(module, args, output):
            session._pop(mod)
            if mod.rec_out:
                try:
                    session._outputs(mod, output)
                except NnparityError:
                    raise
                except Exception as e:
                    session._failed(mod, "out", e)

        def bw_hook(module, grad_input, grad_output):
            # Backward may run after the block ended (torch keeps the hooks of a forward that
            # ran inside it): record only while this session is the active one.
            if _active is not session:
                return None
            try:
                session._grads(mod, grad_input, grad_output)
            except NnparityError:
                raise
            except Exception as e:
                session._failed(mod, "grad", e)
            return None

        return (pre_hook_kwargs if _PRE_HOOK_KWARGS else pre_hook), fwd_hook, bw_hook

    def _register(self):
        self._mods = []
        for module, mod in self._modules():
            self._mods.append((module, mod))
            pre, fwd, bw = self._make_hooks(mod)
            if _PRE_HOOK_KWARGS:
                self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                self._handles.append(module.register_forward_pre_hook(pre))
            self._handles.append(module.register_forward_hook(fwd))
            if mod.grads:
                self._full_bw_flags.append((module, getattr(module, "_is_full_backward_hook",
                                                            None)))
                self._handles.append(module.register_full_backward_hook(bw))

    def _unregister(self):
        if self._precision is not None:
            precision, self._precision = self._precision, None
            precision.exit()
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()
        # register_full_backward_hook marks the module for good, which would forbid the user's
        # own register_backward_hook later; put the mark back as it was.
        flags, self._full_bw_flags = self._full_bw_flags, []
        for module, flag in flags:
            if not module._backward_hooks and hasattr(module, "_is_full_backward_hook"):
                module._is_full_backward_hook = flag

    # -- taps ---------------------------------------------------------------------------------

    def tap(self, name, tensor, grad):
        s = self.stack()
        top = s[-1] if s else None
        if top is not None:
            name_b, role, type_b = top.name_b, name, top.type_b
            inject = top.inject
        else:
            name_b, role, type_b = name.encode(), "out0", None
            inject = self.injecting and (self.only is None or _matches(name, self.only))
        role_b = role.encode()
        if inject:
            tensor = self._inject(name_b, role_b, type_b, tensor)
        elif self.recording:
            self._record(name_b, role_b, type_b, tensor)
        if grad and self.recording and tensor.requires_grad:
            grad_role_b = ("grad_" + role).encode()
            session = self

            def on_grad(g):
                if _active is session:
                    session._record(name_b, grad_role_b, type_b, g)
                return None
            tensor.register_hook(on_grad)
        return tensor

    # -- open and close -----------------------------------------------------------------------

    def _open(self):
        L = _lib.lib()
        if self.env:
            state = L.nnp_capture_active()
            if state == 0:
                # The library did not open a session from the environment; opening it here with
                # the same paths gives the failure a status and a message, or works around it.
                self._open_explicit(L)
                state = L.nnp_capture_active()
            self.recording = bool(state & 1)
            self.injecting = bool(state & 2)
            return
        self._open_explicit(L)

    def _open_explicit(self, L):
        n_mod = len(self._named)
        # Records expected per module and side. The library keeps this much room for the
        # header in front of the data; a header that outgrows it is written by copying every
        # recorded byte once more behind a bigger one, while room left over costs only its
        # spaces. Most modules record one tensor a side, but a module called in a loop (RAFT's
        # update block) or given a list (DenseNet's layers) records several: torchvision's
        # models need up to 3.3 a side, so 4 leaves a margin.
        per = 4 * ((1 if self.inputs else 0) + (1 if self.outputs else 0)
                   + (2 if self.grads else 0))
        rank, world = distributed_rank(self.rank, self.world_size)
        opts = _lib.CaptureOptions(
            os.fsencode(self.inject_path) if self.inject_path else None,
            os.fsencode(self.rules) if self.rules else None,
            n_mod * per + 16 if self.recording else 0, rank, world)
        status = L.nnp_capture_open(os.fsencode(self.path) if self.path else None,
                                    ctypes.byref(opts))
        _lib.check(status, "opening the capture session")

    def __enter__(self):
        global _active
        if _active is not None:
            raise NnparityError(NNP_ERR_ARG, "an nnparity session is already active in this "
                                             "process; sessions do not nest")
        if self._entered:
            raise NnparityError(NNP_ERR_ARG, "this session was already used; make a new one")
        self._entered = True
        # Checked before the session opens, so that a refusal leaves no file behind.
        # The model's modules, walked once: the check below, the header room and the hooks.
        self._named = list(self.model.named_modules()) if self.model is not None else []
        if self.root and any(p == self.root for p, _ in self._named):
            raise NnparityError(NNP_ERR_ARG, f"a submodule of the model is named {self.root!r}, "
                                             "the root module's record name; pass root=... "
                                             "with another name")
        if self.baseline:
            from .precision import Precision, parse
            parse(self.baseline)  # a bad value is refused before any file is opened
        self._open()
        try:
            if self.baseline:
                self._precision = Precision(self.model, self.baseline)
                self._precision.before_hooks()
            self._register()
            if self._precision:
                self._precision.after_hooks()
        except BaseException:
            self._unregister()
            if not self.env:
                _lib.lib().nnp_capture_close()
            raise
        _active = self
        return self

    def _warn_bypassed(self):
        """Name the modules whose hooks never ran while a submodule's did: their forward was
        called directly (`block.forward(x)` runs no hook), or their parent used their submodules
        without calling them; either way nothing of theirs is in the dump."""
        # the modules above a called one other than the root, by name; the root is above all
        above, any_called = set(), False
        for _, mod in self._mods:
            if mod.called and mod.name != self.root:
                any_called = True
                parts = mod.name.split(".")
                for i in range(1, len(parts)):
                    above.add(".".join(parts[:i]))
        silent = []
        for module, mod in self._mods:
            if mod.called or not (mod.rec_in or mod.rec_out or mod.inject):
                continue
            if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
                continue  # containers have no forward of their own
            if (any_called if mod.name == self.root else mod.name in above):
                silent.append(mod.name)
        # the outermost ones: a module inside a silent one says nothing new
        silent = [n for n in silent
                  if not any(o != n and (o == self.root or n.startswith(o + ".")) for o in silent)]
        if silent:
            more = f" and {len(silent) - 5} more" if len(silent) > 5 else ""
            whose = "its" if len(silent) == 1 else "their"
            warnings.warn(f"nnparity: {', '.join(silent[:5])}{more} recorded nothing although "
                          f"{whose} submodules did: call a module as module(x), not "
                          "module.forward(x), which runs no hook (or its parent used its "
                          "submodules without calling it)", RuntimeWarning, stacklevel=3)

    def _report_types(self):
        """Put what could not be recorded into the dump's metadata ("bridge.skipped", a JSON
        list) and name it, with the inputs left uninjected, in one warning."""
        def entries(table):
            return [{"record": r, "reason": why, "times": n} for (r, why), n in table.items()]
        if self._skipped and self.recording:
            _lib.check(_lib.lib().nnp_capture_set_meta(
                b"bridge.skipped", json.dumps(entries(self._skipped)).encode()),
                "setting the dump's metadata")
        if self._not_injected and self.recording:
            _lib.check(_lib.lib().nnp_capture_set_meta(
                b"bridge.not_injected", json.dumps(entries(self._not_injected)).encode()),
                "setting the dump's metadata")
        parts = []
        for table, what in ((self._skipped, "not recorded"), (self._not_injected, "not injected")):
            if table:
                items = [f"{r} ({why})" for (r, why) in table]
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                parts.append(f"{what}: {', '.join(items[:5])}{more}")
        if parts:
            where = " (listed in the dump's metadata)" if self.recording else ""
            warnings.warn(f"nnparity: tensors {'; '.join(parts)}{where}", RuntimeWarning,
                          stacklevel=3)

    def __exit__(self, exc_type, exc, tb):
        global _active
        try:
            if exc_type is None and hasattr(self, "_mods"):
                self._warn_bypassed()
            self._unregister()
            self._report_types()
        finally:
            _active = None
            self._local = threading.local()
            self._recorded.clear()
            if not self.env:
                status = _lib.lib().nnp_capture_close()
                if status != NNP_OK and exc_type is None:
                    raise _lib.error(status, "closing the capture session")
        return False


def distributed_rank(rank=None, world_size=None):
    """(rank, world size) to hand the library: the ones given, else torch.distributed's when it
    is initialized, else (0, 0), which lets the library read the launcher's environment."""
    if world_size is not None:
        return int(rank), int(world_size)
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 0


def tap(name, tensor, grad=False):
    """Record `tensor` as role `name` of the module whose forward is running (see the module
    docstring) and return it; under injection, return the reference's tensor instead (same
    shape, converted to tensor's dtype and device). grad=True also records the tensor's
    gradient, as role grad_<name>, when backward reaches it. Without an active session this
    returns `tensor` at once."""
    s = _active
    if s is None or not isinstance(tensor, torch.Tensor):
        return tensor
    return s.tap(name, tensor, grad)
