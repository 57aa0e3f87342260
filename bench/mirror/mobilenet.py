"""mobilenet.py: the architecture "mobilenet" of student/README.md in PyTorch: MobileNetV3-style
inverted residuals and a Lite R-ASPP head whose low-level classifiers reach half resolution.

Parameter names and shapes are those of the checkpoint (student.py reads and writes them).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from layers import conv, dwconv, up

BLOCK_STRIDES = [2, 2, 1, 2, 1, 1, 1]
FIRST_HSWISH_BLOCK = 3  # blocks from this one on, and the stem, use hard-swish when asked to
LOW8_BLOCK, LOW4_BLOCK = 2, 0  # the low-level features of the classifiers at H/8 and H/4

DEFAULT_CONFIG = {
    "num_classes": 2,
    "stem": [16],
    "expand": [16, 64, 72, 96, 120, 120, 144],
    "out": [16, 24, 24, 40, 40, 40, 48],
    "aspp": [64],
    "hswish": True,
}


class InvertedResidual(nn.Module):
    """project(act(dw3x3/s(act(expand(x))))) (+ x at stride 1 with equal widths)."""

    def __init__(self, cin, expansion, cout, stride, act):
        super().__init__()
        self.act = act
        # Without expansion (expansion == cin) the depthwise convolution reads the input.
        self.expand = conv(cin, expansion, 1, 1) if expansion != cin else None
        self.dw = dwconv(expansion, stride)
        self.project = conv(expansion, cout, 1, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.act(self.expand(x)) if self.expand is not None else x
        y = self.project(self.act(self.dw(h)))
        return y + x if self.residual else y


class MobileNet(nn.Module):
    """Input NCHW (1 x 3 x H x W); output logits NCHW at half resolution."""

    arch = "mobilenet"

    def __init__(self, config):
        super().__init__()
        self.config = config
        classes, stem, out = config["num_classes"], config["stem"][0], config["out"]
        self.stem_act = F.hardswish if config["hswish"] else F.relu
        self.stem = conv(3, stem, 3, 3, 2)
        self.blocks = nn.ModuleList()
        for i, (expansion, cout) in enumerate(zip(config["expand"], out)):
            act = F.hardswish if config["hswish"] and i >= FIRST_HSWISH_BLOCK else F.relu
            self.blocks.append(InvertedResidual(out[i - 1] if i else stem, expansion, cout,
                                                BLOCK_STRIDES[i], act))
        aspp = config["aspp"][0]
        self.aspp = nn.ModuleDict({"conv": conv(out[-1], aspp, 1, 1),
                                   "gate": conv(out[-1], aspp, 1, 1)})
        self.classifier = nn.ModuleDict({
            "high": conv(aspp, classes, 1, 1),
            "low8": conv(out[LOW8_BLOCK], classes, 1, 1),
            "low4": conv(out[LOW4_BLOCK], classes, 1, 1),
            "low2": conv(stem, classes, 1, 1)})

    def forward(self, x):
        s0 = self.stem_act(self.stem(x))
        b = []
        for block in self.blocks:
            b.append(block(b[-1] if b else s0))
        gate = torch.sigmoid(self.aspp["gate"](F.adaptive_avg_pool2d(b[-1], 1)))
        a = F.relu(self.aspp["conv"](b[-1])) * gate
        c = self.classifier
        o8 = up(c["high"](a), b[LOW8_BLOCK]) + c["low8"](b[LOW8_BLOCK])
        o4 = up(o8, b[LOW4_BLOCK]) + c["low4"](b[LOW4_BLOCK])
        return up(o4, s0) + c["low2"](s0)

    def small_init_layers(self):
        """The project of every block with an identity shortcut (student/README.md)."""
        return {f"blocks.{i}.project" for i, block in enumerate(self.blocks) if block.residual}


Model = MobileNet
