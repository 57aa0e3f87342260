#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_reply (corpus/reply/): valid KServe v2 replies with every form
of the mask DESIGN.md allows, binary and JSON, and a few malformed ones, each behind the 8-byte
prefix fuzz_reply.c reads. Run it again after changing the prefix; the files are committed."""
import json
import os
import struct
import sys

W, H = 5, 4
OUT_W, OUT_H = 7, 3
CONFIDENCE = 153  # 0.6 * 255, the client's default


def prefix(header_length, check_id=True, out_w=OUT_W, out_h=OUT_H):
    flags = (1 if header_length is not None else 0) | (2 if check_id else 0)
    return struct.pack("<BIBBB", flags, header_length or 0, out_w - 1, out_h - 1, CONFIDENCE)


def labels(n, bound=2):
    return [(i * 7 + i // W) % bound for i in range(n)]


def probabilities(channels):
    values = []
    for c in range(max(channels, 1)):
        for i in range(H * W):
            p = ((i * 13 + c * 5) % 17) / 16.0
            values.append(p if channels == 1 else p / channels + (0.5 if c == i % channels else 0))
    return values


FORMS = {  # datatype, channels (0: class indices), struct code
    "uint8": ("UINT8", 0, "B"),
    "int32": ("INT32", 0, "i"),
    "int64": ("INT64", 0, "q"),
    "fp32-c1": ("FP32", 1, "f"),
    "fp32-c2": ("FP32", 2, "f"),
    "fp32-c3": ("FP32", 3, "f"),
}


def values_of(datatype, channels):
    return probabilities(channels) if datatype == "FP32" else labels(H * W, 3)


def shape_of(channels):
    return [1, channels, H, W] if channels else [1, H, W]


def header(outputs, reply_id="cam0:7"):
    return json.dumps({"id": reply_id, "model_name": "teacher", "model_version": "1",
                       "outputs": outputs}, separators=(",", ":")).encode()


def binary_reply(datatype, channels, code, extra_first=None):
    values = values_of(datatype, channels)
    data = struct.pack("<%d%s" % (len(values), code), *values)
    outputs, tensors = [], b""
    if extra_first is not None:  # another output's binary data comes first in the body
        outputs.append({"name": "scores", "datatype": "FP32", "shape": [1, 3],
                        "parameters": {"binary_data_size": len(extra_first)}})
        tensors += extra_first
    outputs.append({"name": "mask", "datatype": datatype, "shape": shape_of(channels),
                    "parameters": {"binary_data_size": len(data)}})
    head = header(outputs)
    return prefix(len(head)) + head + tensors + data


def json_reply(datatype, channels, nested=False):
    values = values_of(datatype, channels)
    if nested:  # rows as nested arrays, as some servers write them
        values = [values[i:i + W] for i in range(0, len(values), W)]
    head = header([{"name": "mask", "datatype": datatype, "shape": shape_of(channels),
                    "data": values}])
    return prefix(None) + head


def seeds():
    for name, (datatype, channels, code) in FORMS.items():
        yield "valid-%s-binary" % name, binary_reply(datatype, channels, code)
        yield "valid-%s-json" % name, json_reply(datatype, channels)
    yield "valid-uint8-json-nested", json_reply("UINT8", 0, nested=True)
    yield "valid-uint8-after-other-output", binary_reply("UINT8", 0, "B",
                                                         struct.pack("<3f", 0.1, 0.2, 0.7))
    yield "valid-uint8-ignore-labels", (lambda head, data: prefix(len(head)) + head + data)(
        header([{"name": "mask", "datatype": "UINT8", "shape": [1, 2, 2],
                 "parameters": {"binary_data_size": 4}}]), bytes([0, 255, 1, 255]))
    yield "valid-int64-negative-labels-json", prefix(None) + header(
        [{"name": "mask", "datatype": "INT64", "shape": [1, 1, 3], "data": [-1, 0, 1]}])

    good = binary_reply("UINT8", 0, "B")
    yield "bad-truncated-binary", good[:-3]
    yield "bad-header-length-past-end", prefix(len(good)) + good[8:]
    yield "bad-whole-body-not-json", prefix(None) + good[8:]
    yield "bad-garbage", prefix(None) + b"<html>502 Bad Gateway</html>"
    yield "bad-error-reply", prefix(None) + b'{"error":"model overloaded, retry later"}'
    yield "bad-id-mismatch", prefix(None) + header(
        [{"name": "mask", "datatype": "UINT8", "shape": [1, 1, 2], "data": [0, 1]}], "cam1:9")
    yield "bad-no-mask-output", prefix(None) + header(
        [{"name": "logits", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]}])
    yield "bad-shape-rank", prefix(None) + header(
        [{"name": "mask", "datatype": "UINT8", "shape": [1, 2, 2, 1], "data": [0, 1, 0, 1]}])
    yield "bad-datatype-fp16", prefix(None) + header(
        [{"name": "mask", "datatype": "FP16", "shape": [1, 1, 2], "data": [0, 1]}])
    yield "bad-label-above-254", prefix(None) + header(
        [{"name": "mask", "datatype": "INT32", "shape": [1, 1, 2], "data": [1, 300]}])
    nan = struct.pack("<2f", 0.5, float("nan"))
    head = header([{"name": "mask", "datatype": "FP32", "shape": [1, 1, 1, 2],
                    "parameters": {"binary_data_size": len(nan)}}])
    yield "bad-fp32-nan", prefix(len(head)) + head + nan
    yield "bad-data-count", prefix(None) + header(
        [{"name": "mask", "datatype": "UINT8", "shape": [1, 2, 2], "data": [0, 1, 1]}])


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                                "corpus", "reply")
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
