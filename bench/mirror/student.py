"""student.py: the student of student/README.md in PyTorch, whatever its architecture, and its
checkpoints.

The mirror exists to check the C student (tests/parity) and to time it against PyTorch and
ONNX Runtime (bench/compare). A checkpoint names its architecture (`__metadata__.arch`) and
configuration; load_checkpoint builds that architecture's module (jitnet.py, mobilenet.py,
repghost.py) and loads the file tensor for tensor with load_state_dict (strict), so that callers
need not know which architecture a file holds.

Checkpoints are safetensors, read and written here in plain Python (Debian 12 packages no
safetensors module): 8-byte little-endian header length, JSON header, raw little-endian F32.
"""

import json
import struct

import numpy as np
import torch
import torch.nn.functional as F

import jitnet
import mobilenet
import repghost
from layers import init_weights

IGNORE_LABEL = 255
ARCHS = {module.Model.arch: module for module in (jitnet, mobilenet, repghost)}


def arch_module(arch):
    if arch not in ARCHS:
        raise ValueError(f"no architecture {arch!r} (there are {', '.join(ARCHS)})")
    return ARCHS[arch]


def default_config(arch, num_classes=2, **overrides):
    """A copy of arch's default configuration with num_classes and the overrides (keys the
    architecture has)."""
    defaults = arch_module(arch).DEFAULT_CONFIG
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise KeyError(f"{arch} has no configuration keys {sorted(unknown)}")
    return json.loads(json.dumps(dict(defaults, num_classes=num_classes, **overrides)))


def new_model(arch, config, seed=None):
    """A network of arch with config; seeded initialisation (student/README.md) when seed is
    given, else torch's own."""
    model = arch_module(arch).Model(config)
    if seed is not None:
        init_weights(model, seed)
    return model


def fuses(arch):
    """Whether arch runs in another form than it trains in (repghost: fused)."""
    return hasattr(arch_module(arch), "fuse")


def inference_model(model):
    """The form a stream runs (student_fused_copy): repghost fused, any other network as it is."""
    return arch_module(model.arch).fuse(model) if fuses(model.arch) else model


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
    """The network of a gst-distill checkpoint: its architecture, configuration and weights."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != "gst-distill":
        raise ValueError(f"{path}: not a gst-distill checkpoint (format "
                         f"{metadata.get('format')!r})")
    try:
        model = new_model(metadata.get("arch"), json.loads(metadata["config"]))
    except (ValueError, KeyError) as err:
        raise ValueError(f"{path}: {err}") from err
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    return model


def save_checkpoint(model, path):
    metadata = {"format": "gst-distill", "version": "1", "arch": model.arch,
                "config": json.dumps(model.config, separators=(",", ":"))}
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    write_safetensors(path, tensors, metadata)
