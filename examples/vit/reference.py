#!/usr/bin/python3
"""reference.py - the reference side of the bundled example: torchvision's VisionTransformer in a
small configuration (fast on two CPU cores), random weights from a fixed seed, eval mode, and a
fixed input image. examples/vit_port.c is a C port of exactly this model.

    reference.py --weights W.safetensors   export the weights in the port's own names, and the
                                           input image as `input`
    reference.py --capture REF.safetensors record every module's inputs and outputs into an
                                           nnparity dump (through python/nnparity), and each
                                           attention's input and fused q/k/v projection as taps

Without --capture, the capture goes to $NNPARITY_CAPTURE when that is set, as `nnparity run
--ref` sets it for the command it runs; with neither, nothing is recorded. Either way the script
prints the logits, as the port does. --weights and --capture may be given together.

Run with a Python that has torch and torchvision (/usr/bin/python3 on Debian). The bridge loads
libnnparity.so from $NNPARITY_LIB, else from the repository's build/.
"""
import argparse
import inspect
import json
import os
import struct
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models import VisionTransformer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import nnparity  # noqa: E402

CONFIG = dict(image_size=32, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
              num_classes=10)
MODEL_SEED, IMAGE_SEED = 0, 1

# Modules the capture leaves out, because the port has nothing to pair them with: dropout is the
# identity in eval mode (the MLP's two dropouts are mlp.2 and mlp.4), and `encoder.layers` and
# `heads` are nn.Sequential containers that only pass their children's results through.
EXCLUDE = ["*dropout", "*.mlp.2", "*.mlp.4", "encoder.layers", "heads"]

# Whether forward pre-hooks can see keyword arguments (torch 2.0 on). torchvision calls
# `self_attention(query=x, key=x, value=x, need_weights=False)`, all keywords, so on torch 1.13
# the bridge's hooks see no input for the attention at all.
HOOKS_SEE_KWARGS = "with_kwargs" in inspect.signature(
    torch.nn.Module.register_forward_pre_hook).parameters


def build_model():
    torch.manual_seed(MODEL_SEED)
    model = VisionTransformer(**CONFIG)
    # torchvision starts the biases, the LayerNorm scales, the class token and the head at
    # constants (zeros or ones). A port that drops or mixes up one of them would then match by
    # accident, so every one of them gets random values too.
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
    """Record two tensors inside every block's self-attention that its hooks cannot show:

    - `in0`, the attention's input (ln_1's output), so that a port's attention can be injected
      with it. Where the bridge's hooks see that input (passed positionally, or from torch 2.0
      on), the bridge records it itself, as in0 (query), in1 (key) and in2 (value), and the tap
      is left out rather than repeat it.
    - `in_proj`, the fused input projection x @ in_proj_weight.T + in_proj_bias: q, k and v side
      by side, [1, tokens, 3 * hidden]. A port that computes them apart is compared with its
      thirds (vit.rules joins them with `concat`). A wrong k bias shows only here: the attention's
      output cannot show it, since softmax cancels it.

    A forward pre-hook would not do: on torch 1.13 it gets only the positional arguments, and
    there are none. So each attention's forward is wrapped, on the instance: the wrapper runs
    inside the module's call, after the bridge's pre-hook, and nnparity.tap() names the records
    after the running module, `encoder.layers.encoder_layer_N.self_attention/in0` and
    `.../in_proj`. The wrapper only reads: the model's results are bit for bit those of the
    unwrapped model, with or without a capture session."""
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


def input_image():
    g = torch.Generator().manual_seed(IMAGE_SEED)
    size = CONFIG["image_size"]
    return torch.randn(1, 3, size, size, generator=g)


def port_weights(model, image):
    """The state dict in the port's names and layouts (GGUF-like, as llama.cpp names tensors):
    the patch convolution as a [hidden, 3*patch*patch] matrix, and each attention's fused
    in_proj split into separate q, k and v."""
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    dim = CONFIG["hidden_dim"]
    out = {
        "token_embd.weight": sd["conv_proj.weight"].reshape(dim, -1),
        "token_embd.bias": sd["conv_proj.bias"],
        "class_embd": sd["class_token"].reshape(dim),
        "position_embd": sd["encoder.pos_embedding"].reshape(-1, dim),
    }
    for i in range(CONFIG["num_layers"]):
        src, dst = f"encoder.layers.encoder_layer_{i}.", f"blk.{i}."
        # nn.MultiheadAttention keeps q, k and v stacked in that order in one in_proj.
        q_w, k_w, v_w = sd[src + "self_attention.in_proj_weight"].split(dim)
        q_b, k_b, v_b = sd[src + "self_attention.in_proj_bias"].split(dim)
        out.update({
            dst + "attn_norm.weight": sd[src + "ln_1.weight"],
            dst + "attn_norm.bias": sd[src + "ln_1.bias"],
            dst + "attn_q.weight": q_w, dst + "attn_q.bias": q_b,
            dst + "attn_k.weight": k_w, dst + "attn_k.bias": k_b,
            dst + "attn_v.weight": v_w, dst + "attn_v.bias": v_b,
            dst + "attn_output.weight": sd[src + "self_attention.out_proj.weight"],
            dst + "attn_output.bias": sd[src + "self_attention.out_proj.bias"],
            dst + "ffn_norm.weight": sd[src + "ln_2.weight"],
            dst + "ffn_norm.bias": sd[src + "ln_2.bias"],
            dst + "ffn_up.weight": sd[src + "mlp.0.weight"],
            dst + "ffn_up.bias": sd[src + "mlp.0.bias"],
            dst + "ffn_down.weight": sd[src + "mlp.3.weight"],
            dst + "ffn_down.bias": sd[src + "mlp.3.bias"],
        })
    out.update({
        "output_norm.weight": sd["encoder.ln.weight"],
        "output_norm.bias": sd["encoder.ln.bias"],
        "output.weight": sd["heads.head.weight"],
        "output.bias": sd["heads.head.bias"],
        "input": image,
    })
    return out


def write_safetensors(path, tensors):
    """float32 tensors to a safetensors file: 8-byte little-endian header length, the JSON
    header (padded with spaces so that the data starts 8-byte aligned), then the data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    tmp.replace(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", metavar="W.safetensors",
                    help="export the weights in the port's names, with the input image")
    ap.add_argument("--capture", metavar="REF.safetensors",
                    help="record every module into this nnparity dump")
    args = ap.parse_args()
    # like the port, the reference records whenever the environment asks it to
    capture = args.capture or os.environ.get("NNPARITY_CAPTURE") or None

    model, image = tap_attention(build_model()), input_image()
    if args.weights:
        write_safetensors(args.weights, port_weights(model, image))
    with torch.no_grad():
        if capture:
            with nnparity.capture(model, capture, exclude=EXCLUDE):
                logits = model(image)
        else:
            logits = model(image)
    print("logits:", " ".join(f"{v:.6f}" for v in logits[0].tolist()))


if __name__ == "__main__":
    main()
