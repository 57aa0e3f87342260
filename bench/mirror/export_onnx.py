#!/usr/bin/python3
"""export_onnx.py CKPT OUT.onnx H W: the mirror of a checkpoint as ONNX (opset 17).

The graph takes one NCHW float32 input "image" of the fixed size 1 x 3 x H x W and returns
"logits" (1 x C x ceil(H/2) x ceil(W/2), half resolution). A fixed size lets ONNX Runtime plan
its buffers once, as the C student does for a steady stream.
"""

import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jitnet  # noqa: E402


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: export_onnx.py CKPT OUT.onnx H W")
    ckpt, out, h, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    model = jitnet.load_checkpoint(ckpt).eval()
    example = torch.zeros(1, 3, h, w)
    # The exporter warns about the constant target sizes of the resizes; with a fixed input size
    # they are exact.
    warnings.filterwarnings("ignore", message="The shape inference of prim::Constant")
    with torch.no_grad():
        torch.onnx.export(model, example, out, opset_version=17,
                          input_names=["image"], output_names=["logits"])


if __name__ == "__main__":
    main()
