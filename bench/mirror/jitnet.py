"""jitnet.py: the architecture "jitnet" of student/README.md in PyTorch.

The mirror exists to check the C student (tests/parity) and to time it against PyTorch and
ONNX Runtime (bench/compare). Parameter names and shapes are those of the checkpoint, so a
checkpoint written by the C student loads tensor for tensor with load_state_dict; student.py
reads and writes checkpoints and picks the architecture a checkpoint names.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from layers import conv, up

DEFAULT_CONFIG = {
    "num_classes": 2,
    "stem": [8, 16],
    "encoder": [32, 32, 64],
    "decoder": [64, 32, 16],
    "head": [16, 8],
    "head_skip": False,
}


class Block(nn.Module):
    """relu(conv3x1(conv1x3(relu(conv3x3/s(x)))) + shortcut(x))."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        self.conv1 = conv(cin, cout, 3, 3, stride)
        self.conv2 = conv(cout, cout, 1, 3)
        self.conv3 = conv(cout, cout, 3, 1)
        # Equal widths need no weights: identity at stride 1, subsampling at stride 2.
        self.shortcut = conv(cin, cout, 1, 1, stride) if cin != cout else None

    def forward(self, x):
        r = self.conv3(self.conv2(F.relu(self.conv1(x))))
        if self.shortcut is not None:
            sc = self.shortcut(x)
        elif self.stride == 2:
            sc = x[:, :, ::2, ::2]
        else:
            sc = x
        return F.relu(r + sc)


class JITNet(nn.Module):
    """Input NCHW (1 x 3 x H x W); output logits NCHW at half resolution."""

    arch = "jitnet"

    def __init__(self, config):
        super().__init__()
        self.config = config
        stem, enc, dec, head = config["stem"], config["encoder"], config["decoder"], config["head"]
        self.stem = nn.ModuleList([conv(3, stem[0], 3, 3, 2), conv(stem[0], stem[1], 3, 3, 2)])
        self.encoder = nn.ModuleList([
            Block(stem[1], enc[0], 2), Block(enc[0], enc[1], 2), Block(enc[1], enc[2], 2)])
        self.decoder = nn.ModuleList([
            Block(enc[2], dec[0], 1), Block(enc[1] + dec[0], dec[1], 1),
            Block(enc[0] + dec[1], dec[2], 1)])
        head_in = dec[2] + (stem[0] if config["head_skip"] else 0)
        self.head = nn.ModuleList([conv(head_in, head[0], 3, 3), conv(head[0], head[1], 3, 3)])
        self.classifier = conv(head[1], config["num_classes"], 1, 1)

    def forward(self, x):
        s0 = F.relu(self.stem[0](x))
        s1 = F.relu(self.stem[1](s0))
        e0 = self.encoder[0](s1)
        e1 = self.encoder[1](e0)
        e2 = self.encoder[2](e1)
        d0 = self.decoder[0](e2)
        d1 = self.decoder[1](torch.cat([e1, up(d0, e1)], 1))
        d2 = self.decoder[2](torch.cat([e0, up(d1, e0)], 1))
        h = up(d2, s0)
        if self.config["head_skip"]:
            h = torch.cat([s0, h], 1)
        h = F.relu(self.head[0](h))
        h = F.relu(self.head[1](h))
        return self.classifier(h)

    def small_init_layers(self):
        """The last convolution of every residual branch (student/README.md, "Initialisation")."""
        return {name for name, _ in self.named_modules() if name.endswith("conv3")}


Model = JITNet
