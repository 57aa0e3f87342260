"""repghost.py: the architecture "repghost" of student/README.md in PyTorch: a U-Net of RepGhost
bottlenecks, in its trainable form (each module's identity branch apart, scaled by ".fusion") and
its fused form (config "fused": the fusion added to the centre tap of the depthwise ".cheap"
weights), with fuse() from the one to the other.

Parameter names and shapes are those of the checkpoint (student.py reads and writes them).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from layers import conv, dwconv, up

DEFAULT_CONFIG = {
    "num_classes": 2,
    "stem": [16],
    "encoder": [24, 40, 64, 96],
    "encoder_mid": [48, 72, 120, 192],
    "decoder": [64, 40, 24],
    "decoder_mid": [96, 72, 48],
    "head": [16],
    "fused": False,
}


def no_activation(x):
    return x


class GhostModule(nn.Module):
    """p = act(conv1x1(x)); act(dw3x3(p) + fusion * p), or act(dw3x3(p)) fused."""

    def __init__(self, cin, cout, act, fused):
        super().__init__()
        self.act = act
        self.conv = conv(cin, cout, 1, 1)
        self.cheap = dwconv(cout)
        self.fusion = None if fused else nn.Parameter(torch.ones(cout))

    def forward(self, x):
        p = self.act(self.conv(x))
        y = self.cheap(p)
        if self.fusion is not None:
            y = y + self.fusion.view(1, -1, 1, 1) * p
        return self.act(y)


class GhostBottleneck(nn.Module):
    """ghost2(down(ghost1(x))) + the input or conv1x1(dw3x3/s(x))."""

    def __init__(self, cin, mid, cout, stride, fused):
        super().__init__()
        self.ghost1 = GhostModule(cin, mid, F.relu, fused)
        self.down = dwconv(mid, 2) if stride == 2 else None
        self.ghost2 = GhostModule(mid, cout, no_activation, fused)
        self.identity = stride == 1 and cin == cout
        self.shortcut_dw = None if self.identity else dwconv(cin, stride)
        self.shortcut_pw = None if self.identity else conv(cin, cout, 1, 1)

    def forward(self, x):
        m = self.ghost1(x)
        if self.down is not None:
            m = self.down(m)
        y = self.ghost2(m)
        return y + (x if self.identity else self.shortcut_pw(self.shortcut_dw(x)))


class RepGhost(nn.Module):
    """Input NCHW (1 x 3 x H x W); output logits NCHW at half resolution."""

    arch = "repghost"

    def __init__(self, config):
        super().__init__()
        self.config = config
        stem, enc, dec = config["stem"][0], config["encoder"], config["decoder"]
        fused = config["fused"]
        self.stem = conv(3, stem, 3, 3, 2)
        self.encoder = nn.ModuleList([
            GhostBottleneck(enc[i - 1] if i else stem, mid, cout, 2, fused)
            for i, (mid, cout) in enumerate(zip(config["encoder_mid"], enc))])
        # Decoder stage i concatenates the skip (e2, e1, e0) and the coarser map (e3, d0, d1).
        skips, coarser = enc[-2::-1], [enc[-1]] + dec[:-1]
        self.decoder = nn.ModuleList([
            GhostBottleneck(skip + c, mid, cout, 1, fused)
            for skip, c, mid, cout in zip(skips, coarser, config["decoder_mid"], dec)])
        self.head = GhostModule(stem + dec[-1], config["head"][0], F.relu, fused)
        self.classifier = conv(config["head"][0], config["num_classes"], 1, 1)

    def forward(self, x):
        s0 = F.relu(self.stem(x))
        e = []
        for block in self.encoder:
            e.append(block(e[-1] if e else s0))
        d = e[-1]
        for block, skip in zip(self.decoder, e[-2::-1]):
            d = block(torch.cat([skip, up(d, skip)], 1))
        return self.classifier(self.head(torch.cat([s0, up(d, s0)], 1)))

    def small_init_layers(self):
        """ghost2.conv of every bottleneck (student/README.md, "Initialisation")."""
        return {name for name, _ in self.named_modules() if name.endswith("ghost2.conv")}


Model = RepGhost


def fuse_state_dict(state):
    """The fused form's tensors from the trainable form's: each fusion scale added to the centre
    tap of its module's depthwise weights (cheap[c][0][1][1] += fusion[c]), the rest as is."""
    fused = {}
    for name, t in state.items():
        if name.endswith(".fusion"):
            continue
        if name.endswith(".cheap.weight"):
            t = t.clone()
            t[:, 0, 1, 1] += state[name[:-len("cheap.weight")] + "fusion"]
        fused[name] = t
    return fused


def fuse(model):
    """The fused form of a RepGhost (student_fuse): the same function, without the .fusion
    tensors. A fused model is returned as it is."""
    if model.config["fused"]:
        return model
    fused = RepGhost(dict(model.config, fused=True))
    fused.load_state_dict(fuse_state_dict(model.state_dict()), strict=True)
    return fused.train(model.training)
