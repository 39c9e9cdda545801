"""Toy multi-task problems and the LibMTL 1.1.5 loader shared by the weighting tests."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn


class ToyNet(nn.Module):
    """Encoder -> (shared, skip) like MultiTaskNet: shared = MLP output, skip = a view of the first layer."""

    def __init__(self, tasks=("depth", "semantic"), width: int = 8, inputs: int = 4) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.first = nn.Linear(inputs, width)
        self.second = nn.Linear(width, width)
        self.heads = nn.ModuleDict({t: nn.Linear(2 * width, 1) for t in self.tasks})

    def forward(self, x, *, return_features: bool = False):
        low = torch.tanh(self.first(x))
        shared = torch.tanh(self.second(low))
        skip = low.view_as(low)
        outputs = {t: head(torch.cat([shared, skip], dim=1)).squeeze(1) for t, head in self.heads.items()}
        return (outputs, (shared, skip)) if return_features else outputs


def toy_batch(seed: int, n: int = 16, scales=(1.0, 10.0), inputs: int = 4):
    """Regression targets of very different scale: the second task is 10x harder (a 10x larger loss)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, inputs, generator=g)
    targets = [s * torch.sin(x @ torch.randn(inputs, generator=g)) for s in scales]
    return x, targets


def toy_losses(outputs: dict, targets, tasks) -> dict:
    return {t: (outputs[t] - y).pow(2).mean() for t, y in zip(tasks, targets, strict=True)}


def load_libmtl_weighting(name: str):
    """LibMTL 1.1.5's own LibMTL/weighting/<name>.py, the real file. Its packages' __init__ files import
    the whole library, which fails on current torchvision (mtl_weighting.md §2.3), so the two packages are
    entered as bare namespace modules pointing at LibMTL's folders. Returns the module."""
    if not getattr(sys.modules.get("LibMTL"), "_namespace_only", False):
        spec = importlib.util.find_spec("LibMTL")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError("libmtl 1.1.5 missing: pip install --no-deps -r requirements/no-deps.txt")
        root = Path(next(iter(spec.submodule_search_locations)))
        for package, path in (("LibMTL", root), ("LibMTL.weighting", root / "weighting")):
            namespace = types.ModuleType(package)
            namespace.__path__ = [str(path)]
            namespace._namespace_only = True
            sys.modules[package] = namespace
    return importlib.import_module(f"LibMTL.weighting.{name}")
