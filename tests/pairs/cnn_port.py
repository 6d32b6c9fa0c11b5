#!/usr/bin/python3
"""cnn_port.py - an independently written port of cnn_ref.py's torchvision resnet18, the way an
inference port looks: every BatchNorm folded into the convolution before it (weight and bias
computed from the BN's statistics, so the convolution's own output, which torchvision records
before its BN, never exists here), the residual add and its ReLU in a module of their own
(`merge`, torchvision: code in BasicBlock.forward), the downsampling shortcut a single folded
convolution, the global pooling done in the head's code. It loads the reference's weights: it
builds the reference with the same seed and folds its state dict.

    NNP_PAIR_BUG=NAME cnn_port.py   run with one planted bug (BUGS below); empty or unset: none
    cnn_port.py --check             the correct port agrees with the reference to float32 noise,
                                    and each bug changes the output

Like cnn_ref.py, one forward pass under nnparity.auto(): `nnparity run --port` drives it."""
import sys

import torch
import torch.nn.functional as F
from torch import nn

import cnn_ref
import common

# name -> what the port gets wrong (tests/pairs/expected.py says where a report should put it)
BUGS = {
    "bgr": "the model feeds the stem the image's channels in BGR order",
    "same-padding": "stem.conv pads like TensorFlow's SAME (2 before, 3 after) instead of 3 and 3",
    "bn-eps": "body.1.branch.conv_a folds its BatchNorm with Keras's eps 1e-3 (torch: 1e-5)",
    "stride-moved": "body.2 puts its stride on conv_b instead of conv_a",
    "no-relu": "body.3.branch does not apply its ReLU between the two convolutions",
    "shortcut-unfolded": "body.4.shortcut holds the 1x1 convolution without its BatchNorm",
    "no-bias": "body.5.branch.conv_b has no bias: the conversion dropped the BatchNorm's shift",
    "kernel-flip": "body.6.branch.conv_a's kernel is flipped (taken from a framework that "
                   "convolves rather than correlates)",
    "no-residual": "body.7.merge returns relu(branch) without adding the shortcut",
    "pool-max": "the head takes the spatial maximum instead of the mean",
}
# the unit (body.N) each unit-level bug is planted in
BUG_UNIT = {"bn-eps": 1, "stride-moved": 2, "no-relu": 3, "shortcut-unfolded": 4, "no-bias": 5,
            "kernel-flip": 6, "no-residual": 7}
# torchvision's resnet18 as (in channels, out channels, stride) per unit: layer1.0 ... layer4.1
UNITS = [(64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1),
         (128, 256, 2), (256, 256, 1), (256, 512, 2), (512, 512, 1)]


class ConvBN(nn.Conv2d):
    """A convolution that carries its folded BatchNorm in its weight and bias. `same_pad`, when
    given, pads (left, right, top, bottom) itself instead of the convolution's symmetric
    padding."""

    def __init__(self, *args, same_pad=None, **kw):
        super().__init__(*args, **kw)
        self.same_pad = same_pad
        if same_pad:
            self.padding = (0, 0)

    def forward(self, x):
        if self.same_pad:
            x = F.pad(x, self.same_pad)
        return super().forward(x)


class Stem(nn.Module):
    def __init__(self, bug):
        super().__init__()
        self.conv = ConvBN(3, 64, 7, stride=2, padding=3,
                           same_pad=(2, 3, 2, 3) if bug == "same-padding" else None)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        return self.pool(self.act(self.conv(x)))


class Branch(nn.Module):
    """The residual unit's main path: conv, ReLU, conv."""

    def __init__(self, cin, cout, stride, bug):
        super().__init__()
        a, b = (1, stride) if bug == "stride-moved" else (stride, 1)
        self.conv_a = ConvBN(cin, cout, 3, stride=a, padding=1)
        self.act = nn.ReLU()
        self.conv_b = ConvBN(cout, cout, 3, stride=b, padding=1, bias=bug != "no-bias")
        self.bug = bug

    def forward(self, x):
        h = self.conv_a(x)
        return self.conv_b(h if self.bug == "no-relu" else self.act(h))


class AddReLU(nn.Module):
    """Where the residual joins the main path: relu(branch + shortcut)."""

    def __init__(self, bug):
        super().__init__()
        self.bug = bug

    def forward(self, branch, shortcut):
        return torch.relu(branch if self.bug == "no-residual" else branch + shortcut)


class Unit(nn.Module):
    def __init__(self, cin, cout, stride, bug):
        super().__init__()
        self.branch = Branch(cin, cout, stride, bug)
        self.shortcut = ConvBN(cin, cout, 1, stride=stride) if stride != 1 or cin != cout \
            else None
        self.merge = AddReLU(bug)

    def forward(self, x):
        return self.merge(self.branch(x), x if self.shortcut is None else self.shortcut(x))


class Head(nn.Module):
    """Global pooling and the classifier."""

    def __init__(self, bug):
        super().__init__()
        self.fc = nn.Linear(512, cnn_ref.NUM_CLASSES)
        self.bug = bug

    def forward(self, x):
        return self.fc(x.amax((2, 3)) if self.bug == "pool-max" else x.mean((2, 3)))


class ResNet18Port(nn.Module):
    def __init__(self, bug=""):
        super().__init__()
        self.stem = Stem(bug)
        self.body = nn.Sequential(*(Unit(*u, bug if BUG_UNIT.get(bug) == i else "")
                                    for i, u in enumerate(UNITS)))
        self.head = Head(bug)
        self.bug = bug

    def forward(self, img):
        return self.head(self.body(self.stem(img.flip(1) if self.bug == "bgr" else img)))


def fold(sd, conv, bn, eps=None):
    """conv followed by bn (eval mode) as one convolution: scale each output channel by
    gamma / sqrt(var + eps), shift it by beta - mean * that scale."""
    scale = sd[bn + ".weight"] / torch.sqrt(sd[bn + ".running_var"] + (eps or 1e-5))
    return (sd[conv + ".weight"] * scale[:, None, None, None],
            sd[bn + ".bias"] - sd[bn + ".running_mean"] * scale)


def convert(ref, bug):
    """The reference's state dict folded into the port's convolutions, in the port's names."""
    sd = ref.state_dict()
    out = {}

    def put(dst, weight_bias):
        out[dst + ".weight"], out[dst + ".bias"] = weight_bias

    put("stem.conv", fold(sd, "conv1", "bn1"))
    for i in range(len(UNITS)):
        src, dst = f"layer{i // 2 + 1}.{i % 2}.", f"body.{i}."
        mine = bug if BUG_UNIT.get(bug) == i else ""
        put(dst + "branch.conv_a", fold(sd, src + "conv1", src + "bn1",
                                       eps=1e-3 if mine == "bn-eps" else None))
        put(dst + "branch.conv_b", fold(sd, src + "conv2", src + "bn2"))
        if src + "downsample.0.weight" in sd:
            put(dst + "shortcut", fold(sd, src + "downsample.0", src + "downsample.1"))
            if mine == "shortcut-unfolded":
                w = sd[src + "downsample.0.weight"]
                put(dst + "shortcut", (w, torch.zeros(w.shape[0])))
        if mine == "no-bias":
            del out[dst + "branch.conv_b.bias"]
        if mine == "kernel-flip":
            out[dst + "branch.conv_a.weight"] = out[dst + "branch.conv_a.weight"].flip(-2, -1)
    put("head.fc", (sd["fc.weight"], sd["fc.bias"]))
    return out


def build_port(bug=""):
    port = ResNet18Port(bug)
    port.load_state_dict(convert(cnn_ref.build_reference(), bug))
    return port.eval()


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        common.self_check("cnn_port.py", cnn_ref.build_reference, build_port, cnn_ref.example,
                          BUGS)
    elif sys.argv[1:]:
        sys.exit(f"usage: NNP_PAIR_BUG=NAME {sys.argv[0]} [--check]")
    else:
        common.forward(build_port(common.planted_bug("cnn_port.py", BUGS)), cnn_ref.example())
