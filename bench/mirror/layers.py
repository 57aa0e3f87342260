"""layers.py: the pieces every architecture of the mirror is made of, in standard torch modules.

Every convolution has a bias and symmetric zero padding of k/2 per axis (student/README.md), so
that a stride-2 layer maps a size n to ceil(n/2); a depthwise convolution is nn.Conv2d with
groups equal to its channels. Initialisation follows student/README.md, "Initialisation".
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(cin, cout, kh, kw, stride=1):
    """A convolution with bias and symmetric zero padding of k/2 per axis."""
    return nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=(kh // 2, kw // 2), bias=True)


def dwconv(channels, stride=1):
    """A depthwise 3x3 convolution with bias (one filter per channel, padding 1)."""
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=True)


def up(a, like):
    """Bilinear resize of a to the spatial size of like, half-pixel centres."""
    return F.interpolate(a, size=like.shape[2:], mode="bilinear", align_corners=False)


def init_weights(model, seed):
    """He-normal convolution weights (fan-in, ReLU gain; a depthwise filter's fan-in is its 9
    taps), at a tenth of that scale for the model's small_init_layers(); biases zero; every other
    parameter (RepGhost's fusion scales) one."""
    gen = torch.Generator().manual_seed(seed)
    convs = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    small = model.small_init_layers()
    with torch.no_grad():
        for name, p in model.named_parameters():
            layer, _, kind = name.rpartition(".")
            if layer in convs and kind == "weight":
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                scale = math.sqrt(2.0 / fan_in) * (0.1 if layer in small else 1.0)
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            elif layer in convs:
                p.zero_()
            else:
                p.fill_(1.0)
