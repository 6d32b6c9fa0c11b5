#!/usr/bin/python3
"""make_torch_seeds.py - writes the seed inputs of fuzz_torch into fuzz/corpus/fuzz_torch/.

Two kinds of seeds, both from torch.save:
  seed_*.pt   whole checkpoints (a zip), which fuzz_torch reads as they are;
  seed_*.pkl  only the data.pkl of a checkpoint whose every storage is 64 bytes with a key
              below 16, which fuzz_torch wraps in a checkpoint of its own that holds exactly
              such storages; mutations then go into the pickle, not into the zip.
They cover protocol 2 (torch's default) and 4 (FRAME, MEMOIZE, STACK_GLOBAL), every storage
type nnparity reads, views sharing a storage (transposed, strided, offset, expanded), a 0-dim
and a zero-size tensor, nested dicts and lists with plain values, a Parameter, and the
OrderedDict BUILD that a module's state_dict carries.

torch.save's archives carry no timestamps, and the values below are fixed, so re-running
rewrites the same bytes. Run with Debian's interpreter, which has torch:
    /usr/bin/python3 fuzz/make_torch_seeds.py
"""
import io
import os
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_torch")


def saved(obj, protocol=2):
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=protocol)
    return buf.getvalue()


def pickle_of(archive):
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        (name,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
        return z.read(name)


def write(name, data):
    with open(os.path.join(OUT, "seed_" + name), "wb") as f:
        f.write(data)


def storage64(dtype):
    """A tensor whose storage is 64 bytes, with values that are not all alike."""
    n = 64 // torch.tensor([], dtype=dtype).element_size()
    if dtype == torch.bool:
        return torch.arange(n) % 3 == 0
    return (torch.arange(n) - n // 2).to(dtype)


def main():
    os.makedirs(OUT, exist_ok=True)
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]

    # every storage type, one tensor each (keys 0..9)
    every = {str(t).replace("torch.", ""): storage64(t) for t in dtypes}
    write("dtypes.pkl", pickle_of(saved(every)))

    # views of one 16-float storage, and a second storage for the scalar
    base = storage64(torch.float32).reshape(4, 4)
    views = {
        "base": base,
        "t": base.t(),
        "strided": base[::2, 1::2],
        "row": base[2],
        "expanded": base[1:2].expand(3, 4),
        "scalar": storage64(torch.float32)[5],
        "empty": base[:, :0],
    }
    write("views.pkl", pickle_of(saved(views)))
    write("views_proto4.pkl", pickle_of(saved(views, protocol=4)))

    # nested containers with plain values, and a Parameter
    nested = {
        "model": {"blocks": [{"w": storage64(torch.float16).reshape(8, 4)},
                             {"w": torch.nn.Parameter(storage64(torch.float32))}]},
        "step": 12, "lr": 0.001, "name": "ckpt", "flags": (True, None), "big": -(2 ** 40),
    }
    write("nested.pkl", pickle_of(saved(nested)))

    # a module's state_dict: an OrderedDict with _metadata set by BUILD
    lin = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(storage64(torch.float32).reshape(4, 4))
    write("module.pkl", pickle_of(saved(lin.state_dict())))

    # whole checkpoints
    small = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),
             "h": torch.arange(4, dtype=torch.bfloat16), "n": 3}
    write("small.pt", saved(small))
    write("small_proto4.pt", saved(small, protocol=4))
    write("bare.pt", saved(torch.arange(5, dtype=torch.int16)))


if __name__ == "__main__":
    main()
