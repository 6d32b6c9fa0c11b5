#!/usr/bin/python3
"""vit_bf16.py - a port that computes in bf16 end to end, the usual case on accelerators:
torchvision's VisionTransformer (random weights from a fixed seed, every bias and LayerNorm made
random so that dropping one shows) run once in float32 as the reference and once cast to bf16 as
the port, each one forward pass under nnparity.auto() as `nnparity run` drives it.

    vit_bf16.py                       the float32 reference
    vit_bf16.py --port [--bug NAME]   the bf16 port, with one planted bug (BUGS) or none"""
import argparse
import sys
from pathlib import Path

import torch
from torchvision.models import VisionTransformer

# torch's own kernels, not oneDNN's, on every CPU: oneDNN's bf16 kernels (on CPUs with
# AVX512-BF16) add in float32, and a model run with them in bf16 stays within bf16's tolerances
# of its float32 self, while torch's own show bf16's compute noise, as the tests that need it
# expect, the same on every machine.
torch.backends.mkldnn.enabled = False

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
import nnparity  # noqa: E402

BUGS = {
    "qk-swap": "encoder_layer_1's attention takes the k weights for q and the q weights for k",
    "no-bias": "encoder_layer_1's first MLP linear lost its bias in the conversion",
}
# hidden 128 over 17 tokens: bf16 compute noise passes the bf16 tolerances nowhere near always
CONFIG = dict(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=128,
              mlp_dim=256, num_classes=10)


def build(bug=None):
    torch.manual_seed(0)
    model = VisionTransformer(**CONFIG)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif ".ln" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
        model.class_token.normal_(0.0, 0.02)
        model.heads.head.weight.normal_(0.0, CONFIG["hidden_dim"] ** -0.5)
        layer = model.encoder.layers[1]
        if bug == "qk-swap":
            w, d = layer.self_attention.in_proj_weight, CONFIG["hidden_dim"]
            w[:2 * d] = torch.cat([w[d:2 * d], w[:d]])
        if bug == "no-bias":
            layer.mlp[0].bias.zero_()
    return model.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", action="store_true")
    ap.add_argument("--bug", choices=sorted(BUGS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = build(a.bug)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    if a.port:
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    with torch.no_grad(), nnparity.auto(model):
        y = model(x)
    print("output:", " ".join(f"{v:.4f}" for v in y.float().flatten().tolist()), file=sys.stderr)


if __name__ == "__main__":
    main()
