#!/usr/bin/python3
"""cnn_ref.py - the reference side of the CNN pair: torchvision's resnet18 (no pretrained
weights: random ones from a fixed seed), eval mode, a fixed 64x64 input, one forward pass recorded
through nnparity.auto() (as `nnparity run --ref` drives it). cnn_port.py is an independently
written port of exactly this model; it builds this reference to take its weights."""
import torch
from torchvision.models import resnet18

import common

MODEL_SEED, IMAGE_SEED = 0, 1
NUM_CLASSES = 10


def build_reference():
    torch.manual_seed(MODEL_SEED)
    model = resnet18(weights=None, num_classes=NUM_CLASSES)
    # A fresh BatchNorm is the identity in eval mode (mean 0, var 1, scale 1, shift 0): a port
    # that folds it wrongly, or forgets it, would match by accident. Random statistics and
    # affine parameters make every BatchNorm do something.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
                m.bias.normal_(0.0, 0.2)
        model.fc.bias.normal_(0.0, 0.1)
    return model.eval()


def example():
    g = torch.Generator().manual_seed(IMAGE_SEED)
    return torch.randn(1, 3, 64, 64, generator=g)


if __name__ == "__main__":
    common.forward(build_reference(), example())
