#!/usr/bin/python3
"""test_parity.py STUDENT_IO TMPDIR: the C student against its PyTorch mirror (bench/mirror).

For every architecture (jitnet in two configurations and at two odd input sizes, mobilenet in two
configurations, repghost) and two checkpoints each (student-io init, and the same weights with
every term non-zero written by the mirror: harness.perturbed_checkpoint), it compares:
  - logits of `student-io forward` with the mirror's;
  - loss and every parameter gradient of `student-io grad` with torch autograd;
  - weights after one SGD-momentum step with weight decay (`student-io step sgd`) with
    torch.optim.SGD run on torch's own gradients;
  - weights after one Adam step with weight decay (`student-io step adam`) with torch.optim.Adam
    given the C gradients: Adam's first step is about lr * sign(g), so a gradient element within
    rounding of zero may flip sign between two correct implementations; feeding both optimisers
    the same gradients keeps the comparison exact.
Where the inference form differs from the trained one (repghost), `student-io fuse` against the
mirror's fuse: the fused weights, the fused forward against the trained mirror's logits, and on
the perturbed checkpoint the same gradients and steps as above, of the fused network.
And, on CPUs with AVX512-BF16, the mixed-precision training path (`--bf16`: the backward pass's
products in bfloat16, sums in fp32) against the same fp32 mirror: loss as tight as fp32 (the
forward pass stays fp32), gradients within a tolerance set by bfloat16's 8-bit significand
(relative rounding 2^-9 per operand, compounded over the layers of the backward pass).
Output is TAP; the figures of each comparison are on its line. Exits 1 on any failure.
"""

import sys

import numpy as np
import torch

from harness import guarded, main, make_frame, max_diff, perturbed_checkpoint, student

ODD, EVEN = (45, 37), (48, 64)  # H, W
# name, architecture, configuration (over its defaults), seed, input sizes
CASES = [
    ("jitnet", "jitnet", {}, 7, [ODD, EVEN]),
    ("jitnet head_skip/3 classes", "jitnet", {"num_classes": 3, "head_skip": True}, 11,
     [ODD, EVEN]),
    ("mobilenet", "mobilenet", {}, 13, [ODD]),
    ("mobilenet relu/3 classes", "mobilenet", {"num_classes": 3, "hswish": False}, 17, [EVEN]),
    ("repghost", "repghost", {}, 19, [ODD]),
]
SGD_LR, SGD_DECAY = 0.01, 1e-3
ADAM_LR, ADAM_DECAY = 1e-3, 1e-2

# Tolerances, all relative to the size of what is compared.
LOGIT_TOL = 1e-4  # max |diff| <= tol * max(1, max |logit|)
FUSE_TOL = 1e-6   # fused weights: max |diff| <= tol * max(1, max |weight|)
LOSS_TOL = 1e-5   # |diff| <= tol * max(1, |loss|)
GRAD_TOL = 1e-3   # ||diff|| <= tol * ||grad|| per tensor
STEP_TOL = 1e-3   # ||diff of weights|| <= tol * ||update|| + float32 rounding of the weights
BF16_GRAD_TOL = 3e-2
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def rel_norm(diff, ref):
    ref_norm = float(np.linalg.norm(ref))
    return float(np.linalg.norm(diff)) / ref_norm if ref_norm > 0 else float(np.linalg.norm(diff))


def worst_tensor(errors):
    name = max(errors, key=errors.get)
    return errors[name], name


class Reference:
    """The mirror on one checkpoint and frame: logits (NHWC), loss and gradients."""

    def __init__(self, ckpt, image, labels):
        self.model = student.load_checkpoint(ckpt)
        x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).contiguous()
        logits = self.model(x)
        loss = student.loss(logits, torch.from_numpy(labels))
        loss.backward()
        self.logits = logits.detach()[0].permute(1, 2, 0).numpy()
        self.loss = float(loss)
        self.grads = {n: p.grad.numpy() for n, p in self.model.named_parameters()}


def check_forward(tap, sio, label, ckpt, files, ref_logits):
    h, w = files["size"]
    shape = sio.run("forward", ckpt, files["image"], h, w, files["logits"])
    got = np.fromfile(files["logits"], dtype=np.float32)
    if [shape.get("h"), shape.get("w"), shape.get("c")] != list(ref_logits.shape) or \
            got.size != ref_logits.size:
        tap.check(False, f"{label} forward logits", f"shape {shape}, {got.size} floats, "
                  f"mirror {list(ref_logits.shape)}")
        return
    diff, scale = max_diff(got.reshape(ref_logits.shape), ref_logits)
    tap.check(diff <= LOGIT_TOL * scale, f"{label} forward logits {list(ref_logits.shape)}",
              f"max|diff| {diff:.3g} (tolerance {LOGIT_TOL * scale:.3g}, max|logit| "
              f"{float(np.abs(ref_logits).max()):.3g})")


def check_gradients(tap, sio, label, ckpt, files, ref, threads="2", bf16=False):
    """Compares loss and gradients; returns the C gradients (None when they are unusable)."""
    h, w = files["size"]
    grad_tol = BF16_GRAD_TOL if bf16 else GRAD_TOL
    out = sio.run("grad", ckpt, files["image"], h, w, files["labels"], files["grads"],
                  *(["--bf16"] if bf16 else []), threads=threads)
    got, _ = student.read_safetensors(files["grads"])
    c_loss = float(out.get("loss", float("nan")))
    loss_diff = abs(c_loss - ref.loss)
    tap.check(loss_diff <= LOSS_TOL * max(1.0, abs(ref.loss)), f"{label} loss",
              f"C {c_loss:.7g} torch {ref.loss:.7g} |diff| {loss_diff:.3g}")
    if set(got) != set(ref.grads) or any(got[n].shape != ref.grads[n].shape for n in ref.grads):
        tap.check(False, f"{label} gradients", "tensor names or shapes differ from the mirror's: "
                  f"{sorted(set(got) ^ set(ref.grads))}")
        return None
    errors = {n: rel_norm(got[n] - ref.grads[n], ref.grads[n]) for n in ref.grads}
    err, name = worst_tensor(errors)
    tap.check(err <= grad_tol, f"{label} gradients of {len(ref.grads)} tensors",
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


def step_and_compare(tap, what, sio, ckpt, files, optimizer, model, threads="2"):
    """One C step (student-io step) against one step of optimizer over model, whose gradients
    are set."""
    h, w = files["size"]
    kind, lr, decay = optimizer
    sio.run("step", ckpt, files["image"], h, w, files["labels"], kind, lr, decay,
            files["stepped"], threads=threads)
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    if kind == "sgd":
        torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=decay).step()
    else:
        torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                         weight_decay=decay).step()
    after_ref = {n: p.detach().numpy() for n, p in model.named_parameters()}
    after_c, _ = student.read_safetensors(files["stepped"])
    compare_steps(tap, what, before, after_c, after_ref)


def check_frame(tap, sio, label, ckpt, files, image, labels, bf16):
    ref = Reference(ckpt, image, labels)
    check_forward(tap, sio, label, ckpt, files, ref.logits)
    check_gradients(tap, sio, label, ckpt, files, ref)
    # One thread for this grad and the Adam step: the same summation order, so the same
    # gradients.
    c_grads = check_gradients(tap, sio, label + " (1 thread)", ckpt, files, ref, threads="1")
    if c_grads is not None:
        model = student.load_checkpoint(ckpt)
        for n, p in model.named_parameters():
            p.grad = torch.from_numpy(c_grads[n].copy())
        step_and_compare(tap, f"{label} Adam step (lr {ADAM_LR:g}, decay {ADAM_DECAY:g}, "
                         "C gradients)", sio, ckpt, files, ("adam", ADAM_LR, ADAM_DECAY), model,
                         threads="1")
    if bf16:
        check_gradients(tap, sio, label + " bf16", ckpt, files, ref, bf16=True)
    # Last: the step moves the reference's weights.
    step_and_compare(tap, f"{label} SGD-momentum step (lr {SGD_LR:g}, decay {SGD_DECAY:g})",
                     sio, ckpt, files, ("sgd", SGD_LR, SGD_DECAY), ref.model)


def check_fuse(tap, sio, label, ckpt, fused_ckpt, files, image):
    """student-io fuse against the mirror's inference form: weights, and the fused C forward
    against the trained mirror's logits (the same function). Returns False when the fused
    checkpoint is unusable."""
    sio.run("fuse", ckpt, fused_ckpt)
    model = student.load_checkpoint(ckpt)
    want = student.inference_model(model).state_dict()
    got, _ = student.read_safetensors(fused_ckpt)
    if set(got) != set(want):
        tap.check(False, f"{label} fused weights", "tensor names differ from the mirror's: "
                  f"{sorted(set(got) ^ set(want))}")
        return False
    diffs = {n: max_diff(got[n], want[n].numpy()) for n in want}
    name = max(diffs, key=lambda n: diffs[n][0] / diffs[n][1])
    diff, scale = diffs[name]
    tap.check(diff <= FUSE_TOL * scale, f"{label} fused weights of {len(want)} tensors",
              f"worst max|diff| {diff:.3g} ({name}; tolerance {FUSE_TOL * scale:.3g})")
    with torch.no_grad():
        trained_logits = student.forward_nhwc(model.eval(), image).numpy()
    check_forward(tap, sio, f"{label} fused against trained", fused_ckpt, files, trained_logits)
    return True


def has_bf16():
    """The CPU flag the C kernels look for (kernels_have_bf16)."""
    with open("/proc/cpuinfo") as f:
        return "avx512_bf16" in f.read().split()


def write_frame(sio, rng, size, num_classes):
    image, labels = make_frame(rng, *size, num_classes)
    files = {k: sio.path(f"{k}.bin") for k in ("image", "labels", "logits", "grads", "stepped")}
    files["size"] = size
    image.tofile(files["image"])
    labels.tofile(files["labels"])
    return image, labels, files


def check_case(tap, sio, rng, bf16, name, arch, overrides, seed, sizes):
    cfg = student.default_config(arch, **overrides)
    init = sio.path(f"init-{seed}.safetensors")
    perturbed = sio.path(f"perturbed-{seed}.safetensors")
    sio.init(init, arch, cfg, seed)
    perturbed_checkpoint(init, perturbed, seed)
    for kind, ckpt in (("init", init), ("perturbed", perturbed)):
        for h, w in sizes:
            label = f"{name} {kind} {w}x{h}"
            image, labels, files = write_frame(sio, rng, (h, w), cfg["num_classes"])
            check_frame(tap, sio, label, ckpt, files, image, labels, bf16)
            if not student.fuses(arch):
                continue
            fused = sio.path(f"fused-{kind}-{seed}.safetensors")
            if check_fuse(tap, sio, label, ckpt, fused, files, image) and kind == "perturbed":
                check_frame(tap, sio, f"{label} fused", fused, files, image, labels, bf16)


def run(tap, sio):
    rng = np.random.default_rng(20261122)
    bf16 = has_bf16()
    print(f"# student-io {sio.exe}; torch {torch.__version__}; bf16 "
          f"{'checked' if bf16 else 'not checked: no AVX512-BF16 on this CPU'}")
    for case in CASES:
        guarded(tap, case[0], check_case, tap, sio, rng, bf16, *case)


if __name__ == "__main__":
    sys.exit(main("test_parity.py", run))
