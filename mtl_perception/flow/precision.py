"""IEEE float32 for the flow's convolutions and matrix products, whatever the process-wide TF32 setting.

On Ampere and newer GPUs cuDNN convolutions default to TF32 (``torch.backends.cudnn.conv.fp32_precision``
is ``"tf32"``), which keeps 10 mantissa bits: the polynomial expansion's ``conv2d`` would then lose the
1e-3 px parity with ``cv2.calcOpticalFlowFarneback``. cuBLAS matmuls (the pyramid's blur-and-resize
matrices) follow ``torch.backends.cuda.matmul.fp32_precision``, which a user's
``torch.set_float32_matmul_precision("high")`` turns to TF32 as well. The flow sets both to ``"ieee"``
while it runs and restores the caller's values after, so the network keeps whatever the process chose.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _settings() -> list[object]:
    """The per-operator precision settings of this torch (the ``fp32_precision`` API, torch >= 2.9)."""
    backends = torch.backends
    return [
        holder
        for holder in (getattr(backends.cudnn, "conv", None), getattr(backends.cuda, "matmul", None))
        if holder is not None and hasattr(holder, "fp32_precision")
    ]


@contextmanager
def ieee_fp32() -> Iterator[None]:
    """Run the block with IEEE float32 convolutions and matmuls; the previous settings come back after.

    Only the new per-operator API is touched (mixing it with the legacy ``allow_tf32`` flags makes torch
    refuse to read the legacy ones); torch builds without it fall back to the legacy flags.
    """
    holders = _settings()
    # cudnn.benchmark (which the network's backend turns on) may pick an FFT or Winograd algorithm with
    # its own rounding; the flow keeps cuDNN's heuristic choice, the one its parity is tested with.
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    if holders:
        saved = [holder.fp32_precision for holder in holders]
        try:
            for holder in holders:
                holder.fp32_precision = "ieee"
            yield
        finally:
            for holder, value in zip(holders, saved, strict=True):
                holder.fp32_precision = value
            torch.backends.cudnn.benchmark = benchmark
        return
    saved_legacy = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_legacy
        torch.backends.cudnn.benchmark = benchmark


def current_precision() -> dict[str, str | bool]:
    """{"conv": ..., "matmul": ..., "benchmark": ...} as torch reports them now (tests, the GPU report)."""
    backends = torch.backends
    conv = getattr(getattr(backends.cudnn, "conv", None), "fp32_precision", None)
    matmul = getattr(getattr(backends.cuda, "matmul", None), "fp32_precision", None)
    if conv is None:
        conv = "tf32" if backends.cudnn.allow_tf32 else "ieee"
    if matmul is None:
        matmul = "tf32" if backends.cuda.matmul.allow_tf32 else "ieee"
    return {"conv": conv, "matmul": matmul, "benchmark": bool(backends.cudnn.benchmark)}
