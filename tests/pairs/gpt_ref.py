#!/usr/bin/python3
"""gpt_ref.py - the reference side of a reference/port pair written apart: a tiny GPT in PyTorch
(learned position embedding, pre-LayerNorm blocks, causal attention, GELU MLP) that decodes
greedily the plain way, running the whole prefix again at every step. tests/pairs/gpt_port.c
ports it to C the way engines decode, one token at a time with a KV cache, under its own names.

    gpt_ref.py [--weights W.safetensors] [--tokens N]

--weights writes the weights in the port's names and layouts (a fused qkv), with the prompt as
`prompt`; the script then generates N tokens (default 4) after the prompt and prints them and
the last step's logits of the last position, as the port does. Each step runs under
nnparity.auto(): with NNPARITY_CAPTURE set (as `nnparity run --ref` sets it) every module's
inputs and outputs are recorded, shaped [1, t, ...] at a step with a prefix of t tokens.

Run with /usr/bin/python3 (torch). The bridge loads libnnparity.so from $NNPARITY_LIB, else
from the repository's build/.
"""
import argparse
import json
import math
import struct
import sys
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import nnparity  # noqa: E402

CONFIG = dict(vocab=64, dim=32, layers=2, heads=4, ctx=16, ffn=128)
PROMPT_LEN, NEW_TOKENS = 5, 4
# seed 33 makes a model whose greedy tokens vary (many seeds repeat one token), each chosen
# with a margin of 0.07 or more over the runner-up, far above float32 noise
MODEL_SEED, PROMPT_SEED = 33, 1
# The small embeddings of GPT-2's initialization (std 0.02) keep the first LayerNorm's input
# variance near 1e-3, where its epsilon still shows: a port with another epsilon fails there.
EMBED_STD = 0.02


class Attend(nn.Module):
    """softmax(q k^T / sqrt(head_dim)) v over the heads, causally masked; q, k and v come in as
    [1, t, dim] and the heads go out side by side, [1, t, dim]. A module of its own so that
    hooks see the three inputs and the mixed result apart from the projections."""

    def __init__(self, heads):
        super().__init__()
        self.heads = heads

    def forward(self, q, k, v):
        b, t, d = q.shape
        hd = d // self.heads

        def split(x):
            return x.view(b, t, self.heads, hd).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        y = scores.softmax(dim=-1) @ v
        return y.transpose(1, 2).reshape(b, t, d)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.attend = Attend(heads)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.o_proj(self.attend(self.q_proj(x), self.k_proj(x), self.v_proj(x)))


class MLP(nn.Module):
    def __init__(self, dim, ffn):
        super().__init__()
        self.c_fc = nn.Linear(dim, ffn)
        self.act = nn.GELU()
        self.c_proj = nn.Linear(ffn, dim)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, ffn)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab, dim, layers, heads, ctx, ffn):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(ctx, dim)
        self.h = nn.ModuleList(Block(dim, heads, ffn) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.wte(ids) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def build_model():
    torch.manual_seed(MODEL_SEED)
    model = GPT(**CONFIG)
    with torch.no_grad():
        model.wte.weight.normal_(0.0, EMBED_STD)
        model.wpe.weight.normal_(0.0, EMBED_STD)
        # LayerNorm starts at ones and zeros: a port that dropped or mixed them up would match
        # by accident, so they get random values too
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    return model.eval()


def prompt():
    g = torch.Generator().manual_seed(PROMPT_SEED)
    return torch.randint(0, CONFIG["vocab"], (1, PROMPT_LEN), generator=g)


def port_weights(model, ids):
    """The state dict in the port's names (llama.cpp-like) and layouts: each attention's q, k
    and v projections fused into one attn_qkv, in that order."""
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out = {"token_embd.weight": sd["wte.weight"], "position_embd.weight": sd["wpe.weight"]}
    for i in range(CONFIG["layers"]):
        src, dst = f"h.{i}.", f"blk.{i}."
        out.update({
            dst + "attn_norm.weight": sd[src + "ln_1.weight"],
            dst + "attn_norm.bias": sd[src + "ln_1.bias"],
            dst + "attn_qkv.weight": torch.cat([sd[src + f"attn.{p}_proj.weight"]
                                                for p in "qkv"]),
            dst + "attn_qkv.bias": torch.cat([sd[src + f"attn.{p}_proj.bias"] for p in "qkv"]),
            dst + "attn_output.weight": sd[src + "attn.o_proj.weight"],
            dst + "attn_output.bias": sd[src + "attn.o_proj.bias"],
            dst + "ffn_norm.weight": sd[src + "ln_2.weight"],
            dst + "ffn_norm.bias": sd[src + "ln_2.bias"],
            dst + "ffn_up.weight": sd[src + "mlp.c_fc.weight"],
            dst + "ffn_up.bias": sd[src + "mlp.c_fc.bias"],
            dst + "ffn_down.weight": sd[src + "mlp.c_proj.weight"],
            dst + "ffn_down.bias": sd[src + "mlp.c_proj.bias"],
        })
    out.update({"output_norm.weight": sd["ln_f.weight"], "output_norm.bias": sd["ln_f.bias"],
                "output.weight": sd["lm_head.weight"], "prompt": ids[0]})
    return out


def write_safetensors(path, tensors, metadata=None):
    """float32 and int64 tensors to a safetensors file: the 8-byte little-endian header length,
    the JSON header padded with spaces to 8-byte alignment, then the data; `metadata` (str to
    str) goes into __metadata__."""
    kinds = {torch.float32: ("F32", "<f4"), torch.int64: ("I64", "<i8")}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        dtype, np_dtype = kinds[t.dtype]
        raw = t.contiguous().numpy().astype(np_dtype).tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    tmp.replace(path)


def generate(model, ids, steps):
    """Greedy decoding without a cache: every step runs the model on the whole prefix. Returns
    (new tokens, logits of the last step's last position)."""
    new = []
    with torch.no_grad(), nnparity.auto(model):
        for _ in range(steps):
            logits = model(ids)[0, -1]
            token = int(logits.argmax())
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return new, logits


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", metavar="W.safetensors",
                    help="write the weights in the port's names, with the prompt")
    ap.add_argument("--tokens", type=int, default=NEW_TOKENS, help="tokens to generate")
    args = ap.parse_args()
    if not 1 <= args.tokens <= CONFIG["ctx"] - PROMPT_LEN:
        ap.error(f"--tokens must be 1 to {CONFIG['ctx'] - PROMPT_LEN}")
    model, ids = build_model(), prompt()
    if args.weights:
        write_safetensors(args.weights, port_weights(model, ids))
    tokens, logits = generate(model, ids, args.tokens)
    print("tokens:", " ".join(str(t) for t in tokens))
    print("logits:", " ".join(f"{v:.6f}" for v in logits.tolist()))


if __name__ == "__main__":
    main()
