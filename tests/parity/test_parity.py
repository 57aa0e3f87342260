#!/usr/bin/python3
"""test_parity.py STUDENT_IO TMPDIR: the C student against its PyTorch mirror (bench/mirror).

For two configurations (the default; head_skip with 3 classes), two checkpoints each (student-io
init, and the same weights with random biases and full-scale conv3 written by the mirror, so that
no term of the network is zero and the C loader reads a file it did not write) and two odd input
sizes, it compares:
  - logits of `student-io forward` with the mirror's;
  - loss and every parameter gradient of `student-io grad` with torch autograd;
  - weights after one SGD-momentum step with weight decay (`student-io step sgd`) with
    torch.optim.SGD run on torch's own gradients;
  - weights after one Adam step with weight decay (`student-io step adam`) with torch.optim.Adam
    given the C gradients: Adam's first step is about lr * sign(g), so a gradient element within
    rounding of zero may flip sign between two correct implementations; feeding both optimisers
    the same gradients keeps the comparison exact.
And, on CPUs with AVX512-BF16, the mixed-precision training path (`--bf16`: the backward pass's
products in bfloat16, sums in fp32) against the same fp32 mirror: loss as tight as fp32 (the
forward pass stays fp32), gradients within a tolerance set by bfloat16's 8-bit significand
(relative rounding 2^-9 per operand, compounded over the layers of the backward pass).
Output is TAP; the figures of each comparison are on its line. Exits 1 on any failure.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "mirror"))
import jitnet  # noqa: E402

SIZES = [(45, 37), (48, 64)]  # H, W
THREADS = "2"
SGD_LR, SGD_DECAY = 0.01, 1e-3
ADAM_LR, ADAM_DECAY = 1e-3, 1e-2

# Tolerances, all relative to the size of what is compared.
LOGIT_TOL = 1e-4  # max |diff| <= tol * max(1, max |logit|)
LOSS_TOL = 1e-5   # |diff| <= tol * max(1, |loss|)
GRAD_TOL = 1e-3   # ||diff|| <= tol * ||grad|| per tensor
STEP_TOL = 1e-3   # ||diff of weights|| <= tol * ||update|| + float32 rounding of the weights
BF16_GRAD_TOL = 3e-2
FLOAT32_EPS = float(np.finfo(np.float32).eps)


class Tap:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, figures):
        self.passed += ok
        self.failed += not ok
        print(f"{'ok' if ok else 'not ok'} {self.passed + self.failed} - {what}: {figures}",
              flush=True)

    def finish(self):
        print(f"1..{self.passed + self.failed}")
        print(f"# {self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


class StudentIo:
    def __init__(self, exe, tmp):
        self.exe = exe
        self.tmp = tmp

    def path(self, name):
        return os.path.join(self.tmp, name)

    def run(self, *args, threads=THREADS):
        cmd = [self.exe, *map(str, args), "--threads", threads]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
        lines = [ln for ln in done.stdout.splitlines() if ln.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else {}


def perturbed_checkpoint(src, dst, seed):
    """The weights of src with random biases and conv3 at full He scale, written by the mirror."""
    model = jitnet.load_checkpoint(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif name.endswith("conv3.weight"):
                p.mul_(10.0)
    jitnet.save_checkpoint(model, dst)


def make_frame(rng, h, w, num_classes):
    image = (rng.random((h, w, 3), dtype=np.float32) - 0.5).astype(np.float32)
    h2, w2 = -(-h // 2), -(-w // 2)
    labels = rng.integers(0, num_classes, size=(h2, w2)).astype(np.uint8)
    labels[rng.random((h2, w2)) < 0.2] = jitnet.IGNORE_LABEL
    return image, labels


def rel_norm(diff, ref):
    ref_norm = float(np.linalg.norm(ref))
    return float(np.linalg.norm(diff)) / ref_norm if ref_norm > 0 else float(np.linalg.norm(diff))


def worst_tensor(errors):
    name = max(errors, key=errors.get)
    return errors[name], name


def check_forward(tap, sio, label, ckpt, files, image):
    h, w = image.shape[:2]
    shape = sio.run("forward", ckpt, files["image"], h, w, files["logits"])
    model = jitnet.load_checkpoint(ckpt).eval()
    with torch.no_grad():
        ref = jitnet.forward_nhwc(model, image).numpy()
    got = np.fromfile(files["logits"], dtype=np.float32)
    if [shape.get("h"), shape.get("w"), shape.get("c")] != list(ref.shape) or got.size != ref.size:
        tap.check(False, f"{label} forward logits", f"shape {shape}, {got.size} floats, "
                  f"mirror {list(ref.shape)}")
        return
    scale = max(1.0, float(np.abs(ref).max()))
    diff = float(np.abs(got.reshape(ref.shape) - ref).max())
    tap.check(diff <= LOGIT_TOL * scale, f"{label} forward logits {list(ref.shape)}",
              f"max|diff| {diff:.3g} (tolerance {LOGIT_TOL * scale:.3g}, max|logit| "
              f"{float(np.abs(ref).max()):.3g})")


def torch_gradients(ckpt, image, labels):
    model = jitnet.load_checkpoint(ckpt)
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).contiguous()
    loss = jitnet.loss(model(x), torch.from_numpy(labels))
    loss.backward()
    return model, float(loss), {n: p.grad.numpy() for n, p in model.named_parameters()}


def check_gradients(tap, sio, label, ckpt, files, image, labels, threads=THREADS, bf16=False):
    """Compares loss and gradients; returns the C gradients (None when they are unusable)."""
    h, w = image.shape[:2]
    grad_tol = BF16_GRAD_TOL if bf16 else GRAD_TOL
    out = sio.run("grad", ckpt, files["image"], h, w, files["labels"], files["grads"],
                  *(["--bf16"] if bf16 else []), threads=threads)
    _, ref_loss, ref = torch_gradients(ckpt, image, labels)
    got, _ = jitnet.read_safetensors(files["grads"])
    c_loss = float(out.get("loss", float("nan")))
    loss_diff = abs(c_loss - ref_loss)
    tap.check(loss_diff <= LOSS_TOL * max(1.0, abs(ref_loss)), f"{label} loss",
              f"C {c_loss:.7g} torch {ref_loss:.7g} |diff| {loss_diff:.3g}")
    if set(got) != set(ref) or any(got[n].shape != ref[n].shape for n in ref):
        tap.check(False, f"{label} gradients", "tensor names or shapes differ from the mirror's: "
                  f"{sorted(set(got) ^ set(ref))}")
        return None
    errors = {n: rel_norm(got[n] - ref[n], ref[n]) for n in ref}
    err, name = worst_tensor(errors)
    tap.check(err <= grad_tol, f"{label} gradients of {len(ref)} tensors",
              f"worst ||diff||/||grad|| {err:.3g} ({name}; tolerance {grad_tol:g})")
    return got


def compare_steps(tap, what, before, after_c, after_ref):
    if set(after_c) != set(after_ref):
        tap.check(False, what, f"tensor names differ: {sorted(set(after_c) ^ set(after_ref))}")
        return
    # Measured in units of the allowed error, so that one figure covers every tensor.
    ratios = {n: float(np.linalg.norm(after_c[n] - after_ref[n])) /
              (STEP_TOL * float(np.linalg.norm(after_ref[n] - before[n])) +
               FLOAT32_EPS * float(np.linalg.norm(after_ref[n])) + 1e-30)
              for n in after_ref}
    ratio, name = worst_tensor(ratios)
    err = rel_norm(after_c[name] - after_ref[name], after_ref[name] - before[name])
    tap.check(ratio <= 1.0, what, f"worst ||diff||/||update|| {err:.3g} ({name}; tolerance "
              f"{STEP_TOL:g} + float32 rounding of the weights)")


def check_sgd_step(tap, sio, label, ckpt, files, image, labels):
    h, w = image.shape[:2]
    sio.run("step", ckpt, files["image"], h, w, files["labels"], "sgd", SGD_LR, SGD_DECAY,
            files["stepped"])
    model, _, _ = torch_gradients(ckpt, image, labels)
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=0.9, weight_decay=SGD_DECAY).step()
    after_ref = {n: p.detach().numpy() for n, p in model.named_parameters()}
    after_c, _ = jitnet.read_safetensors(files["stepped"])
    compare_steps(tap, f"{label} SGD-momentum step (lr {SGD_LR:g}, decay {SGD_DECAY:g})",
                  before, after_c, after_ref)


def check_adam_step(tap, sio, label, ckpt, files, image, labels, c_grads):
    # One thread for this grad and step: the same summation order, so the same gradients.
    h, w = image.shape[:2]
    sio.run("step", ckpt, files["image"], h, w, files["labels"], "adam", ADAM_LR, ADAM_DECAY,
            files["stepped"], threads="1")
    model = jitnet.load_checkpoint(ckpt)
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = torch.from_numpy(c_grads[n].copy())
    torch.optim.Adam(model.parameters(), lr=ADAM_LR, betas=(0.9, 0.999), eps=1e-8,
                     weight_decay=ADAM_DECAY).step()
    after_ref = {n: p.detach().numpy() for n, p in model.named_parameters()}
    after_c, _ = jitnet.read_safetensors(files["stepped"])
    compare_steps(tap, f"{label} Adam step (lr {ADAM_LR:g}, decay {ADAM_DECAY:g}, "
                  "C gradients)", before, after_c, after_ref)


def has_bf16():
    """The CPU flag the C kernels look for (kernels_have_bf16)."""
    with open("/proc/cpuinfo") as f:
        return "avx512_bf16" in f.read().split()


def check_checkpoint(tap, sio, name, ckpt, num_classes, rng, bf16):
    for h, w in SIZES:
        label = f"{name} {w}x{h}"
        image, labels = make_frame(rng, h, w, num_classes)
        files = {k: sio.path(f"{k}.bin") for k in ("image", "labels", "logits", "grads",
                                                      "stepped")}
        image.tofile(files["image"])
        labels.tofile(files["labels"])
        check_forward(tap, sio, label, ckpt, files, image)
        check_gradients(tap, sio, label, ckpt, files, image, labels)
        check_sgd_step(tap, sio, label, ckpt, files, image, labels)
        c_grads = check_gradients(tap, sio, label + " (1 thread)", ckpt, files, image, labels,
                                  threads="1")
        if c_grads is not None:
            check_adam_step(tap, sio, label, ckpt, files, image, labels, c_grads)
        if bf16:
            check_gradients(tap, sio, label + " bf16", ckpt, files, image, labels, bf16=True)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: test_parity.py STUDENT_IO TMPDIR")
    os.makedirs(sys.argv[2], exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="parity-", dir=sys.argv[2])
    sio = StudentIo(os.path.abspath(sys.argv[1]), tmp)
    torch.set_num_threads(2)
    rng = np.random.default_rng(20261122)
    tap = Tap()
    configs = [("default", jitnet.default_config(2), 7),
               ("head_skip/3 classes", jitnet.default_config(3, head_skip=True), 11)]
    bf16 = has_bf16()
    print(f"# student-io {sio.exe}; torch {torch.__version__}; bf16 "
          f"{'checked' if bf16 else 'not checked: no AVX512-BF16 on this CPU'}")
    for name, cfg, seed in configs:
        init = sio.path(f"init-{seed}.safetensors")
        perturbed = sio.path(f"perturbed-{seed}.safetensors")
        try:
            sio.run("init", init, "--classes", cfg["num_classes"], "--seed", seed,
                    "--config", json.dumps(cfg, separators=(",", ":")))
            perturbed_checkpoint(init, perturbed, seed)
            check_checkpoint(tap, sio, f"{name} init", init, cfg["num_classes"], rng, bf16)
            check_checkpoint(tap, sio, f"{name} perturbed", perturbed, cfg["num_classes"], rng,
                             bf16)
        except (RuntimeError, OSError, ValueError, KeyError) as err:
            tap.check(False, f"{name}", f"error: {err}")
    status = tap.finish()
    if status == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
