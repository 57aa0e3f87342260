#!/usr/bin/python3
"""test_onnx.py STUDENT_IO TMPDIR: the ONNX export of every architecture (bench/mirror/
export_onnx.py: the inference form, repghost fused) run by ONNX Runtime with its full graph
optimisation (bench/ort-forward.mjs, as bench/compare times it), against `student-io forward`.

For each architecture, on a checkpoint with every term non-zero (harness.perturbed_checkpoint; for
repghost the trained form, which the export fuses) and an odd input size: the logits, and for
repghost that the graph holds no `.fusion` tensor. onnxruntime-node comes from bench/node_modules
(bench/compare installs it) or teacher-server/node_modules (scripts/setup-deps installs it); without
node or either, the checks are skipped. Output is TAP. Exits 1 on any failure.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import torch

from harness import ROOT, guarded, main, make_frame, max_diff, perturbed_checkpoint, student
import export_onnx  # noqa: E402  (bench/mirror: harness puts it on the path)

H, W = 45, 37
LOGIT_TOL = 1e-4  # max |diff| <= tol * max(1, max |logit|)
ORT_FORWARD = os.path.join(ROOT, "bench", "ort-forward.mjs")
NODE_MODULES = [os.path.join(ROOT, folder, "node_modules")
                for folder in ("bench", "teacher-server")]


def onnxruntime_modules():
    """The node_modules folder that holds onnxruntime-node, or None."""
    return next((folder for folder in NODE_MODULES
                 if os.path.isdir(os.path.join(folder, "onnxruntime-node"))), None)


def ort_logits(onnx, image_nchw, out, node_modules):
    """ONNX Runtime's logits of image (ort-forward.mjs: graph optimisation "all"), NHWC."""
    done = subprocess.run(["node", ORT_FORWARD, onnx, "--input", image_nchw, "--logits-out", out,
                           "--runs", "1", "--warmup", "0"], capture_output=True, text=True,
                          env=dict(os.environ, NODE_PATH=node_modules))
    if done.returncode != 0:
        raise RuntimeError(f"ort-forward.mjs exited {done.returncode}: {done.stderr.strip()}")
    return np.fromfile(out, dtype=np.float32)


def check_arch(tap, sio, rng, arch, seed, node_modules):
    cfg = student.default_config(arch)
    init, ckpt = sio.path(f"init-{arch}.safetensors"), sio.path(f"{arch}.safetensors")
    onnx = sio.path(f"{arch}.onnx")
    sio.init(init, arch, cfg, seed)
    perturbed_checkpoint(init, ckpt, seed)
    export_onnx.export(ckpt, onnx, H, W)
    if student.fuses(arch):
        with open(onnx, "rb") as f:
            fused = b".fusion" not in f.read()
        tap.check(fused, f"{arch} ONNX graph fused", "no .fusion tensor" if fused else
                  "the graph holds .fusion tensors: the trained form was exported")

    image, _ = make_frame(rng, H, W, cfg["num_classes"])
    files = {k: sio.path(f"{k}-{arch}.f32") for k in ("image", "nchw", "c", "ort")}
    image.tofile(files["image"])
    np.ascontiguousarray(image.transpose(2, 0, 1)).tofile(files["nchw"])
    shape = sio.run("forward", ckpt, files["image"], H, W, files["c"])
    want = np.fromfile(files["c"], dtype=np.float32).reshape(shape["h"], shape["w"], shape["c"])
    got = ort_logits(onnx, files["nchw"], files["ort"], node_modules)
    if got.size != want.size:
        tap.check(False, f"{arch} ONNX Runtime logits", f"{got.size} floats, C {list(want.shape)}")
        return
    got = got.reshape(want.shape[2], want.shape[0], want.shape[1]).transpose(1, 2, 0)
    diff, scale = max_diff(got, want)
    tap.check(diff <= LOGIT_TOL * scale, f"{arch} ONNX Runtime logits {list(want.shape)} {W}x{H}",
              f"max|diff| {diff:.3g} against student-io forward (tolerance "
              f"{LOGIT_TOL * scale:.3g})")


def run(tap, sio):
    rng = np.random.default_rng(20261206)
    node_modules = onnxruntime_modules()
    missing = ("node" if not shutil.which("node") else
               "onnxruntime-node (scripts/setup-deps installs it)" if not node_modules else None)
    print(f"# student-io {sio.exe}; torch {torch.__version__}; onnxruntime-node in {node_modules}")
    for seed, arch in enumerate(student.ARCHS, start=1):
        if missing:
            tap.skip(f"{arch} ONNX Runtime logits", f"no {missing}")
        else:
            guarded(tap, arch, check_arch, tap, sio, rng, arch, seed, node_modules)


if __name__ == "__main__":
    sys.exit(main("test_onnx.py", run))
