#!/usr/bin/python3
"""vit_port.py - an independently written port of vit_ref.py's torchvision VisionTransformer,
the way a port written apart from its reference looks: another module tree and other names,
separate q/k/v projections against torchvision's fused in_proj, the residuals added inside the
attention and MLP modules (torchvision adds them in the encoder block), the position embedding
added in the patch embedding (torchvision: in the encoder), the class token picked in the root's
forward (torchvision: too, but before a `heads` container the port does not have). It loads the
reference's weights: it builds the reference with the same seed and splits its state dict.

    NNP_PAIR_BUG=NAME vit_port.py   run with one planted bug (BUGS below); empty or unset: none
    vit_port.py --check             the correct port agrees with the reference to float32 noise,
                                    and each bug changes the output

Like vit_ref.py, one forward pass under nnparity.auto(): `nnparity run --port` drives it."""
import sys

import torch
from torch import nn

import common
import vit_ref

# name -> what the port gets wrong (tests/pairs/expected.py says where a report should put it)
BUGS = {
    "no-residual": "blocks.1.mlp returns the MLP's result without adding its input back",
    "pos-shift": "embed adds the position embedding one token late: the class token gets the "
                 "last position, each patch the one before its own",
    "pool-mean": "the model classifies the mean of all tokens instead of the class token",
    "softmax-scale": "blocks.0.attention scales the scores by 1/sqrt(hidden) instead of "
                     "1/sqrt(head dim)",
    "head-merge": "blocks.2.attention merges the heads back without moving them next to each "
                  "other (reshape without transpose)",
    "qk-swap": "the conversion gives blocks.1's query the k weights and its key the q weights",
    "no-v-bias": "blocks.0.attention.value has no bias: the conversion dropped it",
    "ln-eps": "blocks.0.attention.norm keeps nn.LayerNorm's default eps 1e-5 (torchvision: 1e-6)",
    "gelu-tanh": "blocks.1.mlp.act is the tanh approximation of GELU",
}
# the block each block-level bug is planted in
BUG_BLOCK = {"no-residual": 1, "softmax-scale": 0, "head-merge": 2, "qk-swap": 1,
             "no-v-bias": 0, "ln-eps": 0, "gelu-tanh": 1}
EPS = 1e-6


class PatchEmbed(nn.Module):
    """Image -> tokens: patches, the class token in front, the position embedding added."""

    def __init__(self, cfg, bug):
        super().__init__()
        dim, patch = cfg["hidden_dim"], cfg["patch_size"]
        tokens = (cfg["image_size"] // patch) ** 2 + 1
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        self.bug = bug

    def forward(self, img):
        patches = self.proj(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(img), -1, -1), patches], dim=1)
        if self.bug == "pos-shift":
            return x + self.pos.roll(1, dims=1)
        return x + self.pos


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention with its residual: x + out(attention(norm(x)))."""

    def __init__(self, cfg, bug):
        super().__init__()
        dim = cfg["hidden_dim"]
        self.heads = cfg["num_heads"]
        self.norm = nn.LayerNorm(dim, eps=1e-5 if bug == "ln-eps" else EPS)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim, bias=bug != "no-v-bias")
        self.out = nn.Linear(dim, dim)
        self.scale = (dim if bug == "softmax-scale" else dim // self.heads) ** -0.5
        self.bug = bug

    def split(self, t):
        b, n, d = t.shape
        return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = (self.split(m(h)) for m in (self.query, self.key, self.value))
        ctx = (q @ k.transpose(-2, -1) * self.scale).softmax(-1) @ v
        if self.bug != "head-merge":
            ctx = ctx.transpose(1, 2)
        return x + self.out(ctx.reshape(x.shape))


class FeedForward(nn.Module):
    """Pre-norm MLP with its residual: x + fc2(gelu(fc1(norm(x))))."""

    def __init__(self, cfg, bug):
        super().__init__()
        dim, hidden = cfg["hidden_dim"], cfg["mlp_dim"]
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh" if bug == "gelu-tanh" else "none")
        self.fc2 = nn.Linear(hidden, dim)
        self.bug = bug

    def forward(self, x):
        y = self.fc2(self.act(self.fc1(self.norm(x))))
        return y if self.bug == "no-residual" else x + y


class Block(nn.Module):
    def __init__(self, cfg, bug):
        super().__init__()
        self.attention = SelfAttention(cfg, bug)
        self.mlp = FeedForward(cfg, bug)

    def forward(self, x):
        return self.mlp(self.attention(x))


class TinyViT(nn.Module):
    def __init__(self, cfg, bug=""):
        super().__init__()
        self.embed = PatchEmbed(cfg, bug)
        self.blocks = nn.ModuleList(
            Block(cfg, bug if BUG_BLOCK.get(bug) == i else "") for i in range(cfg["num_layers"]))
        self.norm = nn.LayerNorm(cfg["hidden_dim"], eps=EPS)
        self.classifier = nn.Linear(cfg["hidden_dim"], cfg["num_classes"])
        self.bug = bug

    def forward(self, img):
        x = self.embed(img)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.classifier(x.mean(1) if self.bug == "pool-mean" else x[:, 0])


# a block's modules that hold the reference's weight and bias as they are: port, reference
RENAMED = [("attention.norm", "ln_1"), ("attention.out", "self_attention.out_proj"),
           ("mlp.norm", "ln_2"), ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.3")]


def convert(ref, bug):
    """The reference's state dict in the port's names; nn.MultiheadAttention keeps q, k and v
    stacked in that order in one in_proj, which the port splits."""
    sd = ref.state_dict()
    dim = vit_ref.CONFIG["hidden_dim"]
    out = {
        "embed.proj.weight": sd["conv_proj.weight"], "embed.proj.bias": sd["conv_proj.bias"],
        "embed.cls": sd["class_token"], "embed.pos": sd["encoder.pos_embedding"],
        "norm.weight": sd["encoder.ln.weight"], "norm.bias": sd["encoder.ln.bias"],
        "classifier.weight": sd["heads.head.weight"], "classifier.bias": sd["heads.head.bias"],
    }
    for i in range(vit_ref.CONFIG["num_layers"]):
        src, dst = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        w = sd[src + "self_attention.in_proj_weight"].split(dim)
        b = sd[src + "self_attention.in_proj_bias"].split(dim)
        order = ("key", "query", "value") if bug == "qk-swap" and i == BUG_BLOCK[bug] else \
            ("query", "key", "value")
        for name, wi, bi in zip(order, w, b):
            out[f"{dst}attention.{name}.weight"] = wi
            out[f"{dst}attention.{name}.bias"] = bi
        for mine, theirs in RENAMED:
            out[f"{dst}{mine}.weight"] = sd[f"{src}{theirs}.weight"]
            out[f"{dst}{mine}.bias"] = sd[f"{src}{theirs}.bias"]
    if bug == "no-v-bias":
        del out[f"blocks.{BUG_BLOCK[bug]}.attention.value.bias"]
    return out


def build_port(bug=""):
    port = TinyViT(vit_ref.CONFIG, bug)
    port.load_state_dict(convert(vit_ref.build_reference(), bug))
    return port.eval()


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        common.self_check("vit_port.py", vit_ref.build_reference, build_port, vit_ref.example,
                          BUGS)
    elif sys.argv[1:]:
        sys.exit(f"usage: NNP_PAIR_BUG=NAME {sys.argv[0]} [--check]")
    else:
        common.forward(build_port(common.planted_bug("vit_port.py", BUGS)), vit_ref.example())
