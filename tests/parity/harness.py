"""harness.py: what the parity tests share: TAP output, student-io, the PyTorch mirror
(bench/mirror) on the import path, checkpoints with every term non-zero, random frames."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "mirror"))
import student  # noqa: E402

THREADS = "2"
# The factor perturbed_checkpoint puts on the layers that start small: 10, their full He scale,
# but 3 for repghost, whose logits reach 1e4 at 10 (seven bottlenecks, each module with its
# identity branch).
SMALL_INIT_GAIN = {"repghost": 3.0}


class Tap:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def number(self):
        return self.passed + self.failed + self.skipped

    def check(self, ok, what, figures):
        self.passed += ok
        self.failed += not ok
        print(f"{'ok' if ok else 'not ok'} {self.number()} - {what}: {figures}", flush=True)

    def skip(self, what, why):
        self.skipped += 1
        print(f"ok {self.number()} - {what} # SKIP {why}", flush=True)

    def finish(self):
        print(f"1..{self.number()}")
        print(f"# {self.passed} passed, {self.failed} failed, {self.skipped} skipped")
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

    def init(self, path, arch, config, seed):
        self.run("init", path, "--arch", arch, "--seed", seed,
                 "--config", json.dumps(config, separators=(",", ":")))


def perturbed_checkpoint(src, dst, seed):
    """The weights of src with random biases, the layers that start small (student/README.md,
    "Initialisation") scaled up (SMALL_INIT_GAIN) and random fusion scales about 1, written by
    the mirror: no term of the network is zero or an identity, and the C loader reads a file it
    did not write."""
    model = student.load_checkpoint(src)
    small = {layer + ".weight" for layer in model.small_init_layers()}
    gain = SMALL_INIT_GAIN.get(model.arch, 10.0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif name.endswith(".fusion"):
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.5)
            elif name in small:
                p.mul_(gain)
    student.save_checkpoint(model, dst)


def make_frame(rng, h, w, num_classes):
    """An image in [-0.5, 0.5) and labels at the logits' size, a fifth of them ignored."""
    image = (rng.random((h, w, 3), dtype=np.float32) - 0.5).astype(np.float32)
    h2, w2 = -(-h // 2), -(-w // 2)
    labels = rng.integers(0, num_classes, size=(h2, w2)).astype(np.uint8)
    labels[rng.random((h2, w2)) < 0.2] = student.IGNORE_LABEL
    return image, labels


def max_diff(got, ref):
    """max |got - ref| and the scale it is judged against: max(1, max |ref|)."""
    return float(np.abs(got - ref).max()), max(1.0, float(np.abs(ref).max()))


def guarded(tap, what, check, *args):
    """check(*args), an error of the tools or files it uses being a failed check."""
    try:
        check(*args)
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        tap.check(False, what, f"error: {err}")


def main(script, run):
    """The command line STUDENT_IO TMPDIR of a parity test: run(tap, sio) with its files in a new
    folder of TMPDIR, kept when a check fails; returns the exit status."""
    if len(sys.argv) != 3:
        sys.exit(f"usage: {script} STUDENT_IO TMPDIR")
    os.makedirs(sys.argv[2], exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.splitext(script)[0] + "-", dir=sys.argv[2])
    sio = StudentIo(os.path.abspath(sys.argv[1]), tmp)
    torch.set_num_threads(2)
    tap = Tap()
    run(tap, sio)
    status = tap.finish()
    if status == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    return status
