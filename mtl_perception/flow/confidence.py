"""Per-pixel flow confidence in [0, 1].

Two measures (see docs/flow.md):

* ``"residual"`` (default, nearly free): the relative polynomial residual of the final Farnebäck solve,
  ``rel = (box|b¹(x) − b²(x+d)|² + ε) / (box(|b¹|² + |b²(x+d)|²) + ε)``, ``conf = 1 − min(rel, 1)``;
  computed by ``FarnebackEngine.residual_confidence``.
* ``"forward_backward"`` (one extra flow pass): the Sundaram et al. (2010) consistency test turned into a
  soft score, ``r = |f + b̂|² / (0.01 (|f|² + |b̂|²) + 0.5)``, ``conf = 1 / (1 + r)`` with b̂ the backward
  flow sampled at x + f(x); so conf ≥ 0.5 exactly where the classic test passes, and conf = 0 where
  x + f(x) leaves the frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONFIDENCE_MODES = ("residual", "forward_backward")
# The one default for the node, the flow dataset and the streaming engine: training and run time must
# agree, and the residual is nearly free while forward-backward computes the flow twice.
DEFAULT_CONFIDENCE_MODE = "residual"


def forward_backward_confidence(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) forward and backward flows -> (N, H, W) soft Sundaram consistency score."""
    n, _, h, w = forward.shape
    gx = torch.arange(w, device=forward.device, dtype=forward.dtype).view(1, 1, w)
    gy = torch.arange(h, device=forward.device, dtype=forward.dtype).view(1, h, 1)
    px, py = gx + forward[:, 0], gy + forward[:, 1]
    grid = torch.stack([px * (2.0 / max(w - 1, 1)) - 1.0, py * (2.0 / max(h - 1, 1)) - 1.0], dim=-1)
    sampled = F.grid_sample(backward, grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    diff = (forward + sampled).square().sum(1)
    tol = 0.01 * (forward.square().sum(1) + sampled.square().sum(1)) + 0.5
    return torch.where(inside, 1.0 / (1.0 + diff / tol), 0.0)
