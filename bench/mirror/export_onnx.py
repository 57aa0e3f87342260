#!/usr/bin/python3
"""export_onnx.py CKPT OUT.onnx H W: the inference form of a checkpoint's network as ONNX
(opset 17), whatever its architecture: repghost fused (student.inference_model), as the C
student's stream runs it.

The graph takes one NCHW float32 input "image" of the fixed size 1 x 3 x H x W and returns
"logits" (1 x C x ceil(H/2) x ceil(W/2), half resolution). A fixed size lets ONNX Runtime plan
its buffers once, as the C student does for a steady stream.
"""

import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import student  # noqa: E402


def export(ckpt, out, h, w):
    model = student.inference_model(student.load_checkpoint(ckpt)).eval()
    example = torch.zeros(1, 3, h, w)
    # The exporter warns about the constant target sizes of the resizes; with a fixed input size
    # they are exact.
    warnings.filterwarnings("ignore", message="The shape inference of prim::Constant")
    with torch.no_grad():
        torch.onnx.export(model, example, out, opset_version=17,
                          input_names=["image"], output_names=["logits"])


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: export_onnx.py CKPT OUT.onnx H W")
    export(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))


if __name__ == "__main__":
    main()
