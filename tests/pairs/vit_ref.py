#!/usr/bin/python3
"""vit_ref.py - the reference side of the ViT pair: torchvision's VisionTransformer in a tiny
configuration, random weights from a fixed seed, eval mode, a fixed input image, one forward
pass recorded through nnparity.auto() (as `nnparity run --ref` drives it). vit_port.py is an
independently written port of exactly this model; it builds this reference to take its weights.

Besides its modules, each attention records two taps that its hooks cannot show (as
examples/vit/reference.py does, and for the same reasons): its input `in0` (torchvision passes it
by keyword, which torch 1.13's hooks do not see) and `in_proj`, its fused q/k/v projection, the
only place a port's separate q, k and v can be compared."""
import inspect

import torch
import torch.nn.functional as F
from torchvision.models import VisionTransformer

import common
from common import nnparity

CONFIG = dict(image_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_dim=48, mlp_dim=96,
              num_classes=10)
MODEL_SEED, IMAGE_SEED = 0, 1

HOOKS_SEE_KWARGS = "with_kwargs" in inspect.signature(
    torch.nn.Module.register_forward_pre_hook).parameters


def build_reference():
    torch.manual_seed(MODEL_SEED)
    model = VisionTransformer(**CONFIG)
    # torchvision starts biases, LayerNorm scales, the class token and the head at constants: a
    # port that drops or mixes up one of them would match by accident, so all of them are random.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
        for name, p in model.named_parameters():
            if name.endswith("bias") and ".ln" not in name:
                p.normal_(0.0, 0.1)
        model.class_token.normal_(0.0, 0.02)
        model.heads.head.weight.normal_(0.0, CONFIG["hidden_dim"] ** -0.5)
    return model.eval()


def tap_attention(model):
    """Wrap each attention's forward (on the instance) to tap its input and fused projection
    inside the module's call; the wrapper only reads, so results are bit for bit the same."""
    for block in model.encoder.layers:
        attn = block.self_attention

        def forward_tapped(*args, attn=attn, forward=attn.forward, **kwargs):
            query = args[0] if args else kwargs["query"]
            if not args and not HOOKS_SEE_KWARGS:
                nnparity.tap("in0", query)
            nnparity.tap("in_proj", F.linear(query, attn.in_proj_weight, attn.in_proj_bias))
            return forward(*args, **kwargs)

        attn.forward = forward_tapped
    return model


def example():
    g = torch.Generator().manual_seed(IMAGE_SEED)
    return torch.randn(1, 3, CONFIG["image_size"], CONFIG["image_size"], generator=g)


if __name__ == "__main__":
    common.forward(tap_attention(build_reference()), example())
