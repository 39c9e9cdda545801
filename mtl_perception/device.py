"""Which torch device a setting names: the one place ``auto`` is resolved (node, demo, tools).

Imports torch and nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import argparse

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda:0 when CUDA is available, else cpu; any other value must be a usable cpu/cuda device.

    The one place ``auto`` is resolved (node, demo, flow dataset); ValueError names the bad value.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a torch device: {error}") from error
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine")
    return resolved


def torch_device(text: str) -> str:
    """argparse ``type=``: 'auto', 'cpu' or 'cuda[:N]' that this machine has (checked by resolve_device)."""
    try:
        resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
