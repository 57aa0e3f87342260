#!/usr/bin/python3
"""torch_bench.py CKPT [--size WxH] [--threads N] [--runs N]: times the PyTorch mirror.

Prints two JSON lines: the forward pass (eval mode, no_grad) of the inference form (repghost
fused, as the C student's stream runs it) and the train step (zero_grad, forward, cross-entropy,
backward, SGD-momentum step) of the trained form, each the median of --runs runs after warm-up,
on a fixed random frame, as distill-bench does for the C student; both name the architecture.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import student  # noqa: E402

WARMUP_RUNS = 3
LEARNING_RATE = 1e-3  # distill-bench's: many steps on random labels stay far from overflow
# glibc hands large freed blocks back to the kernel, so every PyTorch frame would page-fault its
# activations in again (about 5,000 faults and 3x the time per 640x360 forward here). PyTorch's
# CPU tuning guides swap in jemalloc or tcmalloc for this; these glibc settings do the same job.
# The C student plans its buffers once and needs neither.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"


def ensure_malloc_tunables():
    """Restarts this script with MALLOC_TUNABLES: glibc reads them only at start-up."""
    if os.environ.get("GLIBC_TUNABLES") != MALLOC_TUNABLES:
        env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLES)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)


def time_runs(fn, runs):
    for _ in range(WARMUP_RUNS):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--size", default="640x360", help="WxH")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    ensure_malloc_tunables()
    w, h = map(int, args.size.split("x"))
    torch.set_num_threads(args.threads)

    model = student.load_checkpoint(args.checkpoint)
    inference = student.inference_model(model).eval()
    gen = torch.Generator().manual_seed(20261122)
    image = torch.rand(1, 3, h, w, generator=gen) - 0.5
    classes = model.config["num_classes"]
    labels = torch.randint(0, classes, (1, -(-h // 2), -(-w // 2)), generator=gen)

    def forward():
        with torch.no_grad():
            inference(image)

    fwd_ms, fwd_min = time_runs(forward, args.runs)

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)

    def train_step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(image), labels,
                                          ignore_index=student.IGNORE_LABEL).backward()
        optimizer.step()

    train_ms, train_min = time_runs(train_step, args.runs)

    common = {"arch": model.arch, "size": f"{w}x{h}", "threads": args.threads, "runs": args.runs,
              "torch": torch.__version__}
    print(json.dumps({"bench": "torch-forward", "ms": round(fwd_ms, 3),
                      "min_ms": round(fwd_min, 3), **common}))
    print(json.dumps({"bench": "torch-train-step", "ms": round(train_ms, 3),
                      "min_ms": round(train_min, 3), **common}))


if __name__ == "__main__":
    main()
