#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_checkpoint (corpus/checkpoint/): small valid checkpoints of every
architecture made by the build's student-io (tiny widths, so that a seed is a few kB; repghost
trained and fused), and damaged copies of them: truncated, a bad header length, headers that are
not JSON or not an object, wrong metadata, configurations and tensor entries, a file of one
architecture named as another, repghost's trained tensors under its fused configuration and the
other way round. The files are committed; run it again after a format change:

    tests/fuzz/make-checkpoint-corpus.py build/tests/student/student-io tests/fuzz/corpus/checkpoint
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

TINY = {"num_classes": 2, "stem": [2, 2], "encoder": [2, 2, 3], "decoder": [2, 2, 2],
        "head": [2, 2], "head_skip": False}
# Blocks with and without expansion, identity shortcuts at both widths.
TINY_MOBILENET = {"num_classes": 2, "stem": [2], "expand": [2, 4, 4, 6, 6, 6, 6],
                  "out": [2, 2, 2, 3, 3, 3, 3], "aspp": [2], "hswish": True}
TINY_REPGHOST = {"num_classes": 2, "stem": [2], "encoder": [2, 2, 3, 3],
                 "encoder_mid": [2, 3, 3, 4], "decoder": [3, 2, 2], "decoder_mid": [3, 3, 2],
                 "head": [2], "fused": False}


def run_student_io(student_io, *args):
    subprocess.run([student_io, *args], check=True, stdout=subprocess.DEVNULL)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def make_valid(student_io, config, seed, arch="jitnet"):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "seed.safetensors")
        run_student_io(student_io, "init", path, "--arch", arch, "--config", json.dumps(config),
                       "--seed", str(seed))
        return read(path)


def make_fused(student_io, config, seed):
    """repghost with config, trained with seed, then fused (student-io fuse)."""
    with tempfile.TemporaryDirectory() as folder:
        trained, fused = os.path.join(folder, "trained"), os.path.join(folder, "fused")
        run_student_io(student_io, "init", trained, "--arch", "repghost", "--config",
                       json.dumps(config), "--seed", str(seed))
        run_student_io(student_io, "fuse", trained, fused)
        return read(fused)


def split(data):
    (length,) = struct.unpack("<Q", data[:8])
    return data[8:8 + length].decode(), data[8 + length:]


def join(header, tensors):
    raw = header.encode()
    return struct.pack("<Q", len(raw)) + raw + tensors


def truncated_in_tensors(data):
    """data without the second half of its tensors' bytes."""
    return data[:len(data) - len(split(data)[1]) // 2]


def edited(data, old, new):
    header, tensors = split(data)
    assert old in header, old
    return join(header.replace(old, new, 1), tensors)


def edited_json(data, change):
    header, tensors = split(data)
    parsed = json.loads(header)
    change(parsed)
    return join(json.dumps(parsed, separators=(",", ":")), tensors)


def main():
    student_io, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    valid = make_valid(student_io, TINY, 1)
    skip = make_valid(student_io, dict(TINY, num_classes=3, head_skip=True), 2)
    header, tensors = split(valid)
    config = json.dumps(TINY, separators=(",", ":"))
    mobilenet = make_valid(student_io, TINY_MOBILENET, 3, "mobilenet")
    relu = make_valid(student_io, dict(TINY_MOBILENET, num_classes=3, hswish=False), 4,
                      "mobilenet")
    repghost = make_valid(student_io, TINY_REPGHOST, 5, "repghost")
    fused = make_fused(student_io, TINY_REPGHOST, 5)
    seeds = {
        "valid-2class": valid,
        "valid-3class-head-skip": skip,
        "truncated-empty": b"",
        "truncated-in-length": valid[:5],
        "truncated-length-only": valid[:8],
        "truncated-in-header": valid[:8 + len(header) // 2],
        "truncated-header-only": valid[:8 + len(header)],
        "truncated-in-tensors": valid[:8 + len(header) + len(tensors) // 2],
        "truncated-last-byte": valid[:-1],
        "bad-header-length-huge": struct.pack("<Q", 1 << 63) + valid[8:],
        "bad-header-length-zero": struct.pack("<Q", 0) + valid[8:],
        "bad-header-garbage": join("#" * len(header), tensors),
        "bad-header-array": join("[" + header + "]", tensors),
        "bad-header-duplicate-key": edited(valid, '"stem.0.bias"', '"stem.0.weight"'),
        "bad-no-metadata": edited(valid, '"__metadata__"', '"__metadata_x"'),
        "bad-metadata-not-object": edited_json(valid, lambda h: h.update(__metadata__=[1])),
        "bad-format": edited(valid, '"format":"gst-distill"', '"format":"other"'),
        "bad-version": edited(valid, '"version":"1"', '"version":"2"'),
        "bad-version-number": edited(valid, '"version":"1"', '"version":1'),
        "bad-arch": edited(valid, '"arch":"jitnet"', '"arch":"resnet"'),
        "bad-config-not-json": edited_json(
            valid, lambda h: h["__metadata__"].update(config="{num_classes")),
        "bad-config-huge-widths": edited_json(
            valid, lambda h: h["__metadata__"].update(
                config=config.replace('"encoder":[2,2,3]', '"encoder":[65536,65536,65536]'))),
        "bad-config-unknown-key": edited_json(
            valid, lambda h: h["__metadata__"].update(config='{"depth":3}')),
        "bad-config-classes": edited_json(
            valid, lambda h: h["__metadata__"].update(
                config=config.replace('"num_classes":2', '"num_classes":300'))),
        "bad-dtype": edited(valid, '"dtype":"F32"', '"dtype":"F16"'),
        "bad-shape": edited(valid, '"shape":[2,3,3,3]', '"shape":[2,3,3,1]'),
        "bad-shape-negative": edited(valid, '"shape":[2,3,3,3]', '"shape":[2,-3,3,3]'),
        "bad-offsets-reversed": edited(valid, '"data_offsets":[0,216]', '"data_offsets":[216,0]'),
        "bad-offsets-negative": edited(valid, '"data_offsets":[0,216]', '"data_offsets":[-8,208]'),
        "bad-offsets-past-end": edited_json(
            valid, lambda h: h["stem.0.bias"].update(data_offsets=[1 << 40, (1 << 40) + 8])),
        "bad-offsets-huge": edited_json(
            valid, lambda h: h["stem.0.bias"].update(data_offsets=[2 ** 63 - 8, 2 ** 63])),
        "bad-offsets-float": edited(valid, '"data_offsets":[0,216]', '"data_offsets":[0.0,216]'),
        "bad-missing-tensor": edited_json(valid, lambda h: h.pop("stem.0.bias")),
        "bad-extra-tensor": edited_json(
            valid, lambda h: h.update(extra={"dtype": "F32", "shape": [1],
                                             "data_offsets": [0, 4]})),
        "bad-tensor-not-object": edited_json(valid, lambda h: h.update({"stem.0.bias": "x"})),
        "valid-mobilenet": mobilenet,
        "valid-mobilenet-relu-3class": relu,
        "valid-repghost": repghost,
        "valid-repghost-fused": fused,
        "truncated-mobilenet-in-tensors": truncated_in_tensors(mobilenet),
        "truncated-repghost-in-tensors": truncated_in_tensors(repghost),
        "bad-arch-mobilenet-as-jitnet": edited(mobilenet, '"arch":"mobilenet"', '"arch":"jitnet"'),
        "bad-arch-repghost-as-mobilenet": edited(repghost, '"arch":"repghost"',
                                                 '"arch":"mobilenet"'),
        "bad-config-hswish-not-flag": edited(mobilenet, '\\"hswish\\":true', '\\"hswish\\":1'),
        "bad-config-repghost-short-widths": edited(
            repghost, '\\"encoder\\":[2,2,3,3]', '\\"encoder\\":[2,2,3]'),
        "bad-repghost-trained-as-fused": edited(repghost, '\\"fused\\":false',
                                                '\\"fused\\":true'),
        "bad-repghost-fused-as-trained": edited(fused, '\\"fused\\":true',
                                                '\\"fused\\":false'),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
