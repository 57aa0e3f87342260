"""jitnet.py: the student network of student/README.md in PyTorch, and its checkpoints.

The mirror exists to check the C student (tests/parity) and to time it against PyTorch and
ONNX Runtime (bench/compare). Parameter names and shapes are those of the checkpoint, so a
checkpoint written by the C student loads tensor for tensor with load_state_dict.

Checkpoints are safetensors, read and written here in plain Python (Debian 12 packages no
safetensors module): 8-byte little-endian header length, JSON header, raw little-endian F32.
"""

import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_LABEL = 255

DEFAULT_CONFIG = {
    "num_classes": 2,
    "stem": [8, 32],
    "encoder": [64, 64, 128],
    "decoder": [128, 64, 32],
    "head": [16, 8],
    "head_skip": False,
}


def default_config(num_classes=2, **overrides):
    cfg = json.loads(json.dumps(DEFAULT_CONFIG))
    cfg["num_classes"] = num_classes
    cfg.update(overrides)
    return cfg


def conv(cin, cout, kh, kw, stride=1):
    """A convolution with bias and symmetric zero padding of k/2 per axis."""
    return nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=(kh // 2, kw // 2), bias=True)


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


def up(a, like):
    """Bilinear resize of a to the spatial size of like, half-pixel centres."""
    return F.interpolate(a, size=like.shape[2:], mode="bilinear", align_corners=False)


class JITNet(nn.Module):
    """Input NCHW (1 x 3 x H x W); output logits NCHW at half resolution."""

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

    def init_weights(self, seed):
        """He-normal (fan-in, ReLU gain), conv3 of every block at 0.1 of that, biases zero."""
        gen = torch.Generator().manual_seed(seed)
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                scale = math.sqrt(2.0 / fan_in) * (0.1 if name.endswith("conv3") else 1.0)
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * scale)
                    m.bias.zero_()


def forward_nhwc(model, x_nhwc):
    """x: H x W x 3 (numpy or tensor, float32) -> logits h2 x w2 x C tensor."""
    x = torch.as_tensor(x_nhwc, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)
    return model(x.contiguous())[0].permute(1, 2, 0)


def loss(logits_nchw, labels_hw):
    """Softmax cross-entropy, mean over the pixels whose label is not 255."""
    labels = torch.as_tensor(labels_hw, dtype=torch.int64).unsqueeze(0)
    return F.cross_entropy(logits_nchw, labels, ignore_index=IGNORE_LABEL)


# ---- safetensors -------------------------------------------------------------------------------

def read_safetensors(path):
    """Returns (tensors: name -> float32 numpy array, metadata: dict of strings)."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])
    data = memoryview(blob)[8 + header_len:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} has dtype {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype="<f4").astype(np.float32)
        tensors[name] = arr.reshape(info["shape"])
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    """tensors: name -> array (written F32 LE in the given order); metadata: dict of strings."""
    header = {"__metadata__": metadata}
    chunks, offset = [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(np.asarray(arr, dtype="<f4")).tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(arr)),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned, as safetensors writers do
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in chunks:
            f.write(raw)


def load_checkpoint(path):
    """A JITNet with the configuration and weights of a gst-distill checkpoint."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("arch") != "jitnet":
        raise ValueError(f"{path}: arch {metadata.get('arch')!r}, expected 'jitnet'")
    model = JITNet(json.loads(metadata["config"]))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    return model


def save_checkpoint(model, path):
    metadata = {"format": "gst-distill", "version": "1", "arch": "jitnet",
                "config": json.dumps(model.config, separators=(",", ":"))}
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    write_safetensors(path, tensors, metadata)
