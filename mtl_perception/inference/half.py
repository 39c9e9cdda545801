"""Reduced precision for inference, done the way the runtimes expect it.

* PyTorch: BatchNorm folded into the preceding convolution (in float32) *before* a cast to float16. A
  model cast whole keeps BatchNorm in half precision (``running_var`` near 0 turns ``1/sqrt(var+eps)``
  large, and a following ReLU passes the overflow on as inf) and runs a separate BatchNorm kernel.
* TensorRT 11 builds strongly typed networks only (``BuilderFlag.FP16`` is gone): the precision lives in
  the graph. :func:`fp16_onnx` turns an exported float32 graph (BatchNorm already folded into the convs
  by the exporter) into a float16 graph with float32 inputs and outputs, with ONNX Runtime's converter.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mtl_perception.atomic import atomic_path


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every Conv2d -> BatchNorm2d pair fused into one Conv2d.

    The caller's model is left untouched. ValueError names a BatchNorm that follows no convolution
    (it could not be fused and would stay in the precision of the rest of the model).
    """
    fused = copy.deepcopy(model).eval()
    with torch.no_grad():
        for parent in fused.modules():
            names = list(parent._modules)
            for first, second in zip(names, names[1:], strict=False):
                conv, norm = parent._modules[first], parent._modules[second]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    parent._modules[first] = fuse_conv_bn_eval(conv, norm)
                    parent._modules[second] = nn.Identity()
    left = [name for name, module in fused.named_modules() if isinstance(module, nn.BatchNorm2d)]
    if left:
        raise ValueError(f"BatchNorm layers that follow no Conv2d cannot be folded: {left}")
    return fused


def inference_model(
    model: nn.Module, device: torch.device, dtype: torch.dtype, memory_format: torch.memory_format
) -> nn.Module:
    """The network as a backend runs it: BatchNorm folded in float32, then moved and cast (a copy)."""
    return fold_batchnorm(model).to(device=device, dtype=dtype, memory_format=memory_format)


def fp16_onnx(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a float16 copy of the float32 graph ``source`` to ``out`` (atomically), float32 I/O kept.

    Inputs are cast to float16 at the graph's entry and the float outputs back to float32 at its exit,
    so the contract of ``export.py`` (float32 image/flow/depth, int32 ids) is unchanged.
    """
    import onnx
    import onnx_ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source, out = Path(source), Path(out)
    half = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    # The converter appends its Cast nodes at the end; ONNX (and TensorRT's parser) want them in order.
    graph = onnx_ir.from_proto(half)
    graph.graph.sort()
    half = onnx_ir.to_proto(graph)
    onnx.checker.check_model(half, full_check=True)
    with atomic_path(out, overwrite=True) as tmp:
        onnx.save(half, str(tmp))
    return out
