"""OpenCV's ``cv2.calcOpticalFlowFarneback`` behind the streaming interface, and the choice between the two.

On a CPU the torch port (``StreamingFarneback``: one expansion per frame, reused) can be slower than OpenCV
computing both expansions in its optimised C++ (docs/benchmarks.md). :class:`Cv2StreamingFarneback` has the
same ``prepare`` / ``flow`` / ``reset`` as ``StreamingFarneback`` and gives cv2's flow; the torch port is
numerically interchangeable with it (test_flow_parity), so either may feed the network. The residual
confidence needs the level-0 polynomial expansions, which cv2 does not expose: they come from a one-level
torch engine with the same ``poly_n`` / ``poly_sigma`` / window (the same values the full port uses).

:func:`choose_implementation` is ``auto``: the torch port on CUDA (or for ``resize_mode='cuda'``, which cv2
cannot reproduce), otherwise whichever computed one streaming frame faster at the frame size, measured.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .confidence import CONFIDENCE_MODES, forward_backward_confidence
from .farneback import FrameFeatures
from .params import OPTFLOW_USE_INITIAL_FLOW, FarnebackParams
from .streaming import StreamingFarneback

IMPLEMENTATIONS = ("auto", "torch", "cv2")


@dataclass
class Cv2Features:
    """One frame for :class:`Cv2StreamingFarneback`: its uint8 grey image and level-0 expansion."""

    gray: np.ndarray  # (H, W) uint8
    level0: FrameFeatures | None  # for the residual confidence (None in forward_backward mode)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.gray.shape)


class Cv2StreamingFarneback:
    """``cv2.calcOpticalFlowFarneback`` with the ``StreamingFarneback`` interface (host CPU, one frame)."""

    def __init__(self, params: FarnebackParams, device="cpu", *, confidence_mode: str = "residual") -> None:
        why_not = cv2_unsuitable(params)
        if why_not:
            raise ValueError(f"cv2 flow: {why_not}")
        if confidence_mode not in CONFIDENCE_MODES:
            raise ValueError(f"confidence_mode must be one of {CONFIDENCE_MODES}, got {confidence_mode!r}")
        self.params = params
        self.device = torch.device(device)
        self.confidence_mode = confidence_mode
        self._level0 = (
            StreamingFarneback(dataclasses.replace(params, levels=0), device=self.device)
            if confidence_mode == "residual"
            else None
        )

    def reset(self) -> None:
        if self._level0 is not None:
            self._level0.reset()

    def prepare(self, gray: torch.Tensor) -> Cv2Features:
        """(H, W) grey frame, whole 0..255 values -> what :meth:`flow` needs of it."""
        if gray.ndim != 2 or gray.numel() == 0:
            raise ValueError(f"cv2 flow expects one (H, W) grey frame, got shape {tuple(gray.shape)}")
        host = (
            gray.round().clamp(0, 255).to(torch.uint8) if gray.is_floating_point() else gray.to(torch.uint8)
        )
        level0 = None if self._level0 is None else self._level0.prepare(gray)
        return Cv2Features(gray=host.cpu().numpy(), level0=level0)

    def _cv2(self, prev: np.ndarray, nxt: np.ndarray) -> torch.Tensor:
        p = self.params
        flow = cv2.calcOpticalFlowFarneback(
            prev, nxt, None, p.pyr_scale, p.levels, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p.flags
        )
        return torch.from_numpy(flow).permute(2, 0, 1).to(self.device)

    def flow(
        self, prev: Cv2Features, nxt: Cv2Features, confidence: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flow prev -> nxt in px (2, H, W) on prev's grid, and its confidence (H, W) in [0, 1]."""
        if prev.size != nxt.size:
            raise ValueError(f"frames differ in size: prev {prev.size} vs next {nxt.size}")
        flow = self._cv2(prev.gray, nxt.gray)
        if not confidence:
            return flow, None
        if self._level0 is not None:
            conf = self._level0.engine.residual_confidence(prev.level0, nxt.level0, flow[None])[0]
        else:
            conf = forward_backward_confidence(flow[None], self._cv2(nxt.gray, prev.gray)[None])[0]
        return flow, conf


def cv2_unsuitable(params: FarnebackParams) -> str | None:
    """Why cv2 cannot compute this flow (None when it can)."""
    if params.resize_mode != "cpu":
        return f"resize_mode {params.resize_mode!r} is cv::cuda's convention; cv2 reproduces 'cpu' only"
    if params.flags & OPTFLOW_USE_INITIAL_FLOW:
        return "OPTFLOW_USE_INITIAL_FLOW has no place in streaming flow"
    return None


def _frame_cost(stream, gray: torch.Tensor, partner, repeats: int) -> float:
    """Seconds for one streaming frame: prepare the new frame, flow (with confidence) to the partner."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        current = stream.prepare(gray)
        stream.flow(current, partner, confidence=True)
        best = min(best, time.perf_counter() - start)
    return best


def choose_implementation(
    params: FarnebackParams,
    device: torch.device,
    confidence_mode: str,
    size: tuple[int, int],
    repeats: int = 2,
) -> tuple[str, dict[str, float]]:
    """``auto``: (the faster implementation here, {name: ms per frame measured}); torch on CUDA."""
    device = torch.device(device)
    if device.type != "cpu" or cv2_unsuitable(params):
        return "torch", {}
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (*size, 1), dtype=np.uint8), (5, 5), 1.5)
    shifted = np.roll(texture, (1, 2), axis=(0, 1))
    frames = [torch.from_numpy(np.ascontiguousarray(a)).float() for a in (texture, shifted)]
    costs = {}
    for name, stream in (
        ("torch", StreamingFarneback(params, device=device, confidence_mode=confidence_mode)),
        ("cv2", Cv2StreamingFarneback(params, device, confidence_mode=confidence_mode)),
    ):
        partner = stream.prepare(frames[0])
        stream.flow(stream.prepare(frames[1]), partner)  # one-off set-up costs, not timed
        costs[name] = _frame_cost(stream, frames[1], partner, repeats) * 1e3
    return min(costs, key=costs.get), costs
