"""gpt_oracle.py - the pairing of gpt_port.c's records with gpt_ref.py's written out by hand, to
check the expected culprits of expected_gpt.py independently of nnparity's own pairing.

The hand pairing knows what no rules file can say: a port record of call s is the last rows of
the reference's record of call s (the reference runs the whole prefix of t tokens at step s, the
port the new tokens only, n of them, but the whole KV cache: its attention's keys and values have
the reference's t rows), and the fused attn_qkv output is the reference's q, k and v projections
side by side. From it, write_oracle() writes the reference's values under the port's names and
shapes, in the port's order: a dump that `nnparity run` can use as the reference (its --ref
command copies the file) and inject into the port with names that match exactly, so that the
labels it gives are the truth that a pairing without rules has to find.

The port's modules nest by execution (a parent taps its input before its children run and its
output after), not by name: blk.0.attn_kqv runs inside blk.0.attn. parents() reads that nesting
off a capture."""
import json
import re

import torch

from gpt_ref import write_safetensors

# port module -> reference module, for the modules outside the blocks
TOP = {"token_embd": "wte", "position_embd": "wpe", "output_norm": "ln_f", "output": "lm_head"}
# blk.N.<part> -> h.N<suffix>; attn_qkv's input is that of q_proj (k_proj's and v_proj's are the
# same tensor), its output the three projections side by side (see ref_value)
BLOCK = {"": "", "attn_norm": ".ln_1", "attn": ".attn", "attn_qkv": ".attn.q_proj",
         "attn_kqv": ".attn.attend", "attn_output": ".attn.o_proj", "ffn_norm": ".ln_2",
         "ffn": ".mlp", "ffn_up": ".mlp.c_fc", "ffn_down": ".mlp.c_proj"}


def split_name(name):
    """'blk.0.attn/in1#2' -> ('blk.0.attn', 'in1', 2)"""
    base, _, call = name.partition("#")
    module, _, role = base.rpartition("/")
    return module, role, int(call) if call else 0


def record_name(module, role, call):
    return f"{module}/{role}" + (f"#{call}" if call else "")


def ref_module(port_module):
    if port_module in TOP:
        return TOP[port_module]
    m = re.fullmatch(r"blk\.(\d+)(?:\.(\w+))?", port_module)
    if not m or (m.group(2) or "") not in BLOCK:
        raise KeyError(f"no reference module for the port's {port_module}")
    return f"h.{m.group(1)}{BLOCK[m.group(2) or '']}"


def ref_value(ref, port_name, shape):
    """The reference's value of the port record `port_name` of `shape` ([1, n, ...]), from the
    reference dump `ref` (name -> tensor): the last n rows of the record(s) of the same call."""
    module, role, call = split_name(port_name)
    rm = ref_module(module)
    if module.endswith(".attn_qkv") and role == "out0":
        base = rm.rsplit(".", 1)[0]
        parts = [ref[record_name(f"{base}.{p}_proj", "out0", call)] for p in "qkv"]
        value = torch.cat(parts, dim=-1)
    else:
        value = ref[record_name(rm, role, call)]
    n = shape[1]
    return value[:, value.shape[1] - n:].contiguous()


def write_oracle(ref, port, path):
    """The reference's values in the port's names and shapes, in the port's order, as an
    nnparity dump at `path`. `ref` and `port` are nnparity.load() results."""
    tensors, records = {}, []
    for seq, rec in enumerate(port.records):
        value = ref_value(ref, rec.name, list(port[rec.name].shape))
        assert value.shape == port[rec.name].shape and value.dtype == port[rec.name].dtype, \
            (rec.name, value.shape, port[rec.name].shape)
        tensors[rec.name] = value
        records.append({"tensor": rec.name, "module": rec.module, "role": rec.role,
                        "type": rec.module_type, "call": rec.call, "seq": seq})
    write_safetensors(path, tensors, {"nnparity.format": "dump/1",
                                      "nnparity.records": json.dumps(records)})


def parents(port):
    """port module -> the module whose call encloses its calls ("" for the top level), from the
    order of a capture's records (nnparity.load() result)."""
    spans = {}
    for seq, rec in enumerate(port.records):
        lo, hi = spans.get((rec.module, rec.call), (seq, seq))
        spans[(rec.module, rec.call)] = (min(lo, seq), max(hi, seq))
    out = {}
    for (module, call), (lo, hi) in spans.items():
        if call:
            continue
        around = [(h - l, m) for (m, c), (l, h) in spans.items()
                  if c == 0 and m != module and l <= lo and hi <= h]
        out[module] = min(around)[1] if around else ""
    return out


def hand_culprit(doc, parent_of):
    """The culprit a run report on the oracle points at, by the rule of docs: the first
    divergence, when its module fails on the reference's inputs too (own), is that module's
    error; when it is right on them (inherited), the code that computed it is: the parent of the
    module it enters (an input), or the module itself (an output that its own code, after its
    children, got wrong). None when nothing diverges."""
    fd = doc.get("first_divergence")
    if fd is None:
        return None
    record = doc["records"][fd]
    module, role, _ = split_name(record["ref"])
    if record["label"] == "own":
        return {"kind": "module", "port_module": module, "ref_module": ref_module(module)}
    if record["label"] == "inherited":
        return {"kind": "code", "port_module": parent_of[module] if role.startswith("in")
                else module}
    return {"kind": record["label"], "port_module": module}
