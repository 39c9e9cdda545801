"""Farnebäck dense optical flow in PyTorch, numerically matching OpenCV.

The algorithm follows ``docs/flow.md`` / the project's OpenCV spec step by step:

1. level count with the 32-px rule; level sizes ``cvRound(size * pyr_scale**k)`` (round half to even);
2. per level, a Gaussian blur of the *full-resolution* frame (reflect-101) then a bilinear resize;
3. polynomial expansion (replicate borders) -> 5 channels (b_y, b_x, a_yy, a_xx, a_xy);
4. per iteration: matrix update (bilinear gather of frame 2's expansion at x + d, out-of-frame fallback,
   border weights), spatial averaging (box or Gaussian window), 2x2 solve with the +1e-3 regulariser.

Everything is float32 and runs unchanged on CPU and CUDA; no host/device copies happen inside the
iteration loop. Internal tensors are NCHW with flow channels (dx, dy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .params import OPTFLOW_FARNEBACK_GAUSSIAN, FarnebackParams
from .precision import ieee_fp32

MIN_LEVEL_SIZE = 32  # OpenCV stops adding pyramid levels below this many pixels
_BORDER = (0.14, 0.14, 0.4472, 0.4472, 0.4472)  # OpenCV's matrix-update weights near the frame edge
_SMALL_GAUSSIAN = {  # cv::getGaussianKernel's fixed table, used when sigma <= 0 and ksize <= 7
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}
RESIDUAL_EPS = 1.0  # gradient-energy floor of the residual confidence (≈ 0.7 grey levels/px)


# --------------------------------------------------------------------------- per-size constants
def level_plan(height: int, width: int, pyr_scale: float, levels: int) -> list[tuple[int, int, float]]:
    """``[(h_k, w_k, scale_k)]`` for k = 0..L, with OpenCV's 32-px cropping of the level count."""
    scale, used = 1.0, 0
    while used < levels:
        scale *= pyr_scale
        if width * scale < MIN_LEVEL_SIZE or height * scale < MIN_LEVEL_SIZE:
            break
        used += 1
    plan = []
    for k in range(used + 1):
        s = 1.0
        for _ in range(k):
            s *= pyr_scale
        plan.append((round(height * s), round(width * s), s))  # Python round = cvRound (half to even)
    return plan


def gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """``cv::getGaussianKernel(ksize, sigma, CV_32F)`` including its small fixed-kernel table."""
    if sigma <= 0 and ksize in _SMALL_GAUSSIAN:
        taps = np.array(_SMALL_GAUSSIAN[ksize], dtype=np.float32).astype(np.float64)
    else:
        sig = sigma if sigma > 0 else ((ksize - 1) * 0.5 - 1) * 0.3 + 0.8
        x = np.arange(ksize, dtype=np.float64) - (ksize - 1) * 0.5
        taps = np.exp(-0.5 / (sig * sig) * x * x).astype(np.float32).astype(np.float64)
    return (taps * (1.0 / taps.sum())).astype(np.float32)


def pyramid_blur_params(scale: float) -> tuple[int, float]:
    """(ksize, sigma) of the full-resolution blur that precedes the resize to a level of ``scale``."""
    sigma = (1.0 / scale - 1.0) * 0.5
    return max(round(sigma * 5) | 1, 3), sigma


def poly_expansion_constants(poly_n: int, poly_sigma: float) -> tuple[np.ndarray, ...]:
    """``FarnebackPrepareGaussian``: kernels g, xg, xxg (float32) and ig11, ig03, ig33, ig55 of G⁻¹."""
    n = poly_n
    sigma = poly_sigma if poly_sigma >= np.finfo(np.float32).eps else n * 0.3
    x = np.arange(-n, n + 1)
    g = np.exp(-(x * x) / (2.0 * sigma * sigma)).astype(np.float32)
    g = (g.astype(np.float64) * (1.0 / g.astype(np.float64).sum())).astype(np.float32)
    xg = (x * g).astype(np.float32)
    xxg = (x * x * g).astype(np.float32)
    gy, gx = np.meshgrid(g, g, indexing="ij")
    yy, xx = np.meshgrid(x, x, indexing="ij")
    w = (gy * gx).astype(np.float32)
    G = np.zeros((6, 6))
    G[0, 0] = w.astype(np.float64).sum()
    G[1, 1] = (w * xx * xx).astype(np.float32).astype(np.float64).sum()
    G[3, 3] = (w * xx * xx * xx * xx).astype(np.float32).astype(np.float64).sum()
    G[5, 5] = (w * xx * xx * yy * yy).astype(np.float32).astype(np.float64).sum()
    G[2, 2] = G[0, 3] = G[0, 4] = G[3, 0] = G[4, 0] = G[1, 1]
    G[4, 4] = G[3, 3]
    G[3, 4] = G[4, 3] = G[5, 5]
    ig = np.linalg.inv(G)
    return g, xg, xxg, np.array([ig[1, 1], ig[0, 3], ig[3, 3], ig[5, 5]])


def border_weight_map(height: int, width: int) -> np.ndarray:
    """Per-pixel scale of the matrix-update terms near the frame edge, incl. OpenCV's < 10 px quirk.

    OpenCV tests ``(unsigned)(x - 5) >= (unsigned)(W - 10)``; for W < 10 the wrap-around means most
    pixels get no scaling at all, which we reproduce with explicit modular arithmetic.
    """

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.arange(n)
        lo = np.array([_BORDER[i] if i < 5 else 1.0 for i in idx], dtype=np.float32)
        hi = np.array([_BORDER[n - 1 - i] if i >= n - 5 else 1.0 for i in idx], dtype=np.float32)
        near = ((idx - 5) % 2**32) >= ((n - 10) % 2**32)
        return lo, hi, near

    ylo, yhi, ny = axis(height)
    xlo, xhi, nx = axis(width)
    # Same float32 product order as OpenCV: left · right · top · bottom.
    scale = (xlo * xhi)[None, :] * ylo[:, None] * yhi[:, None]
    return np.where(nx[None, :] | ny[:, None], scale, np.float32(1.0)).astype(np.float32)


def area_resize_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """(n_dst, n_src) weights of OpenCV INTER_AREA downscaling (exact fractional-overlap averaging)."""
    if n_dst > n_src:
        raise ValueError(f"INTER_AREA weights are only defined here for downscaling ({n_src} -> {n_dst})")
    scale = n_src / n_dst
    mat = np.zeros((n_dst, n_src), dtype=np.float32)
    for d in range(n_dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_src - f1)
        s1, s2 = math.ceil(f1), math.floor(f2)
        s2 = min(s2, n_src - 1)
        s1 = min(s1, s2)
        if s1 - f1 > 1e-3:
            mat[d, s1 - 1] = np.float32((s1 - f1) / cell)
        for s in range(s1, s2):
            mat[d, s] = np.float32(1.0 / cell)
        if f2 - s2 > 1e-3:
            mat[d, s2] = np.float32(min(min(f2 - s2, 1.0), cell) / cell)
    return mat


def corner_resize_index(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``cv::cuda::resize`` INTER_LINEAR: src = dst·(n_src/n_dst) in float32, far neighbour clamped."""
    ratio = np.float32(1.0 / (n_dst / n_src))
    src = np.arange(n_dst, dtype=np.float32) * ratio
    i0 = np.floor(src).astype(np.int64)
    frac = (src - i0.astype(np.float32)).astype(np.float32)
    i0 = np.minimum(i0, n_src - 1)
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, frac


def linear_resize_matrix(n_src: int, n_dst: int, mode: str = "cpu") -> np.ndarray:
    """(n_dst, n_src) weights of a 1-D bilinear resize: OpenCV CPU half-pixel (``"cpu"``) or
    ``cv::cuda::resize`` corner-aligned (``"cuda"``), both with OpenCV's edge clamping."""
    mat = np.zeros((n_dst, n_src), dtype=np.float64)
    if mode == "cpu":
        scale = n_src / n_dst
        for d in range(n_dst):
            src = (d + 0.5) * scale - 0.5
            i0 = math.floor(src)
            a = src - i0
            if i0 < 0:
                i0, a = 0, 0.0
            if i0 >= n_src - 1:
                i0, a = n_src - 1, 0.0
            mat[d, i0] += 1.0 - a
            if a:
                mat[d, i0 + 1] += a
        return mat
    i0, i1, frac = corner_resize_index(n_src, n_dst)
    for d in range(n_dst):
        mat[d, i0[d]] += 1.0 - float(frac[d])
        mat[d, i1[d]] += float(frac[d])
    return mat


def blur_matrix(n: int, taps: np.ndarray) -> np.ndarray:
    """(n, n) matrix of a 1-D correlation with ``taps`` under BORDER_REFLECT_101."""
    r = len(taps) // 2
    idx = _reflect101_index(n, r)
    mat = np.zeros((n, n), dtype=np.float64)
    rows = np.arange(n)
    for t, tap in enumerate(taps):
        np.add.at(mat, (rows, idx[rows + t]), float(tap))
    return mat


def _reflect101_index(n: int, pad: int) -> np.ndarray:
    """Source indices of ``cv::borderInterpolate(BORDER_REFLECT_101)`` for positions -pad..n+pad-1."""
    out = []
    for p in range(-pad, n + pad):
        if n == 1:
            out.append(0)
            continue
        while p < 0 or p >= n:
            p = -p if p < 0 else 2 * (n - 1) - p
        out.append(p)
    return np.array(out, dtype=np.int64)


# --------------------------------------------------------------------------- the engine
@dataclass
class FrameFeatures:
    """Polynomial expansion of one frame at every pyramid level (what ``StreamingFarneback.prepare`` makes).

    ``expansions[k]`` is (N, 5, h_k, w_k) in OpenCV's channel order (b_y, b_x, a_yy, a_xx, a_xy);
    ``engine_key`` ties the features to the parameters, size and device that made them; ``batched`` is
    False for frames given as (H, W), so results drop the batch dimension.
    """

    size: tuple[int, int]
    batch: int
    expansions: list[torch.Tensor]
    engine_key: tuple
    batched: bool = True


class FarnebackEngine:
    """All per-(params, size, device) constants and the numerical steps, cached for reuse across frames."""

    def __init__(
        self,
        params: FarnebackParams,
        height: int,
        width: int,
        device: torch.device | str = "cpu",
        compile: bool = False,  # noqa: A002 - mirrors torch.compile
    ):
        self.params = params
        self.size = (int(height), int(width))
        self.device = torch.device(device)
        self.key = (params, self.size, str(self.device))
        self.plan = level_plan(height, width, params.pyr_scale, params.levels)
        dev, f32 = self.device, torch.float32
        # Level 0: the fixed [1/4, 1/2, 1/4] blur as shifted slices (reflect-101 indices cached).
        # Levels k >= 1: blur-then-resize is linear and separable, so each axis is one cached
        # (n_k x n) matrix = resize @ blur, applied as two matrix products (far cheaper than a
        # full-resolution blur with up to 79 taps followed by a resize).
        self._level0_index = (
            torch.from_numpy(_reflect101_index(height, 1)).to(dev),
            torch.from_numpy(_reflect101_index(width, 1)).to(dev),
        )
        self._pyramid = [None]
        for h, w, scale in self.plan[1:]:
            ksize, sigma = pyramid_blur_params(scale)
            taps = gaussian_kernel(ksize, sigma)
            ay = linear_resize_matrix(height, h, params.resize_mode) @ blur_matrix(height, taps)
            ax = linear_resize_matrix(width, w, params.resize_mode) @ blur_matrix(width, taps)
            self._pyramid.append(
                (
                    torch.from_numpy(ay.astype(np.float32)).to(dev),
                    torch.from_numpy(ax.T.astype(np.float32)).to(dev),
                )
            )
        g, xg, xxg, (ig11, ig03, ig33, ig55) = poly_expansion_constants(params.poly_n, params.poly_sigma)
        self._poly_n = params.poly_n
        self._poly_v = torch.from_numpy(np.stack([g, xg, xxg])[:, None, :, None].copy()).to(dev)
        g64, xg64, xxg64 = (a.astype(np.float64) for a in (g, xg, xxg))
        zero = np.zeros_like(g64)
        # Horizontal pass straight to the 5 output channels (input channels: v0, v1, v2).
        hk = np.array(
            [
                [zero, g64 * ig11, zero],  # b_y = b3·ig11
                [xg64 * ig11, zero, zero],  # b_x = b2·ig11
                [g64 * ig03, zero, g64 * ig33],  # a_yy = b1·ig03 + b5·ig33
                [g64 * ig03 + xxg64 * ig33, zero, zero],  # a_xx = b1·ig03 + b4·ig33
                [zero, xg64 * ig55, zero],  # a_xy = b6·ig55
            ]
        )
        self._poly_h = torch.from_numpy(hk[:, :, None, :].astype(np.float32)).to(dev)
        m = params.winsize // 2
        self._m = m
        if params.flags & OPTFLOW_FARNEBACK_GAUSSIAN:
            sig = m * 0.3
            taps = [1.0] + [float(np.float32(math.exp(-i * i / (2 * sig * sig)))) for i in range(1, m + 1)]
            s = 1.0 / (1.0 + 2.0 * sum(taps[1:])) if m > 0 else 1.0
            half = np.array([np.float32(t * s) for t in taps], dtype=np.float32)
            win = np.concatenate([half[:0:-1], half])
        else:
            norm = params.winsize if params.resize_mode == "cpu" else 2 * m + 1
            win = np.full(2 * m + 1, 1.0 / norm, dtype=np.float32)
        self._win = tuple(float(v) for v in win.astype(np.float32))
        self._levels = []  # per level: grid x, grid y, border map
        for h, w, _ in self.plan:
            self._levels.append(
                (
                    torch.arange(w, device=dev, dtype=f32).view(1, 1, w),
                    torch.arange(h, device=dev, dtype=f32).view(1, h, 1),
                    torch.from_numpy(border_weight_map(h, w)).to(dev),
                )
            )
        self._resize_cache: dict[tuple, tuple] = {}
        self._step: Callable = _iteration
        # CPU cache blocking for large levels (bit-identical results; GPUs want whole-frame kernels).
        self.band_pixels = 1 << 17 if self.device.type == "cpu" else 0
        if compile:
            # One graph for every level: dynamic shapes avoid a recompile per pyramid size.
            self._step = torch.compile(_iteration_functional, dynamic=True)

    # ---------------------------------------------------------------- resizes
    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bilinear resize in the configured convention (OpenCV CPU half-pixel or CUDA corner-aligned)."""
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        if self.params.resize_mode == "cpu":
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self._corner_resize(x, size)

    def _corner_resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        key = ("corner", tuple(x.shape[-2:]), tuple(size))
        if key not in self._resize_cache:
            tabs = []
            for n_src, n_dst in zip(x.shape[-2:], size, strict=True):
                i0, i1, a = corner_resize_index(n_src, n_dst)
                tabs.append(tuple(torch.from_numpy(t).to(self.device) for t in (i0, i1, a)))
            self._resize_cache[key] = tuple(tabs)
        (y0, y1, ay), (x0, x1, ax) = self._resize_cache[key]
        rows = torch.lerp(x.index_select(-2, y0), x.index_select(-2, y1), ay.view(-1, 1))
        return torch.lerp(rows.index_select(-1, x0), rows.index_select(-1, x1), ax)

    def _area_resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        key = ("area", tuple(x.shape[-2:]), tuple(size))
        if key not in self._resize_cache:
            self._resize_cache[key] = (
                torch.from_numpy(area_resize_matrix(x.shape[-2], size[0])).to(self.device),
                torch.from_numpy(area_resize_matrix(x.shape[-1], size[1])).to(self.device),
            )
        wy, wx = self._resize_cache[key]
        return wy @ x @ wx.T

    # ---------------------------------------------------------------- per-frame expansion
    @ieee_fp32()  # TF32 convolutions would break the parity with cv2 (precision.py)
    def expand(self, gray: torch.Tensor) -> FrameFeatures:
        """(N, 1, H, W) float32 frame -> its polynomial expansion at every level."""
        n = self._poly_n
        iy, ix = self._level0_index
        out = []
        for k in range(len(self.plan)):
            if k == 0:
                rows = gray.index_select(-2, iy)
                v = (rows[..., :-2, :] + rows[..., 2:, :]).mul_(0.25).add_(rows[..., 1:-1, :], alpha=0.5)
                cols = v.index_select(-1, ix)
                level = (cols[..., :-2] + cols[..., 2:]).mul_(0.25).add_(cols[..., 1:-1], alpha=0.5)
            else:
                ay, ax_t = self._pyramid[k]
                level = ay @ gray @ ax_t
            v = F.conv2d(F.pad(level, (0, 0, n, n), mode="replicate"), self._poly_v)
            out.append(F.conv2d(F.pad(v, (n, n, 0, 0), mode="replicate"), self._poly_h))
        return FrameFeatures(self.size, gray.shape[0], out, self.key)

    # ---------------------------------------------------------------- iterations
    def blur(self, m: torch.Tensor) -> torch.Tensor:
        """Spatial averaging of the matrix entries (box or Gaussian window, replicate border).

        Box windows use doubling partial sums (O(log winsize) adds per axis), Gaussian windows weighted
        shifted slices: on the CPU both beat ``conv2d`` with 1-D kernels and ``avg_pool2d``, and unlike a
        float32 cumsum they lose no precision on wide frames.
        """
        return _separable_window(m, self._win)

    def level_flow(self, r0: torch.Tensor, r1: torch.Tensor, flow: torch.Tensor, k: int) -> torch.Tensor:
        """``iterations`` rounds of update -> average -> solve at level k (OpenCV's schedule exactly)."""
        gx, gy, border = self._levels[k]
        h, w = flow.shape[-2:]
        band = max(self.band_pixels // max(w, 1), 2 * self._m + 1)
        banded = 0 < self.band_pixels < h * w and band < h and self._step is _iteration
        for _ in range(self.params.iterations):
            if banded:
                flow = _iteration_banded(r0, r1, flow, gx, gy, border, self._win, band)
            else:
                flow = self._step(r0, r1, flow, gx, gy, border, self._win)
        return flow

    @ieee_fp32()
    def flow(
        self, prev: FrameFeatures, nxt: FrameFeatures, initial_flow: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Coarse-to-fine flow (N, 2, H, W) from prev to nxt, optionally seeded (OPTFLOW_USE_INITIAL_FLOW)."""
        flow = None
        for k in range(len(self.plan) - 1, -1, -1):
            h, w, scale = self.plan[k]
            if flow is not None:
                flow = self._resize(flow, (h, w)) * (1.0 / self.params.pyr_scale)
            elif initial_flow is not None:
                if self.params.resize_mode == "cpu":
                    flow = self._area_resize(initial_flow, (h, w)) * scale
                else:
                    flow = self._resize(initial_flow, (h, w)) * scale
            else:
                flow = torch.zeros(prev.batch, 2, h, w, device=self.device, dtype=torch.float32)
            flow = self.level_flow(prev.expansions[k], nxt.expansions[k], flow, k)
        return flow

    def residual_confidence(
        self, prev: FrameFeatures, nxt: FrameFeatures, flow: torch.Tensor
    ) -> torch.Tensor:
        """conf = 1 − min(rel, 1), rel = (box|b¹−b²(x+d)|² + ε) / (box(|b¹|²+|b²(x+d)|²) + ε).

        b = (b_y, b_x) of the level-0 polynomial expansions, b²(x+d) bilinearly sampled (0 out of frame,
        so pixels that leave the frame get rel = 1). ε = RESIDUAL_EPS keeps flat regions at low confidence.
        """
        gx, gy, _ = self._levels[0]
        b1 = prev.expansions[0][:, :2]
        b2 = _sample(nxt.expansions[0][:, :2], flow, gx, gy)[0]
        num = (b1 - b2).square().sum(1, keepdim=True)
        den = (b1.square() + b2.square()).sum(1, keepdim=True)
        both = self.blur(torch.cat([num, den], dim=1))
        rel = (both[:, 0] + RESIDUAL_EPS) / (both[:, 1] + RESIDUAL_EPS)
        return 1.0 - rel.clamp(max=1.0)


def _sample(r1: torch.Tensor, flow: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor):
    """Bilinear sample of frame 2's expansion at x + d; zero where the 2x2 footprint leaves the frame.

    ``grid_sample`` gives the same 4-tap bilinear weights as OpenCV whenever the whole footprint is inside
    (0 <= floor(x) < W-1, same in y); everywhere else OpenCV drops the data term, so the sample is masked.
    """
    n, _, rows, cols = flow.shape  # may be a band of rows; the frame size comes from r1
    h, w = r1.shape[-2:]
    dx, dy = flow[:, 0], flow[:, 1]
    fx, fy = gx + dx, gy + dy
    inside = (fx >= 0) & (fx < w - 1) & (fy >= 0) & (fy < h - 1)
    grid = torch.empty((n, rows, cols, 2), dtype=flow.dtype, device=flow.device)
    torch.mul(fx, 2.0 / max(w - 1, 1), out=grid[..., 0]).sub_(1.0)
    torch.mul(fy, 2.0 / max(h - 1, 1), out=grid[..., 1]).sub_(1.0)
    s = F.grid_sample(r1, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return s.mul_(inside.unsqueeze(1)), inside, dx, dy


def _update_matrices(r0, r1, flow, gx, gy, border):
    """``FarnebackUpdateMatrices``: the per-pixel normal equations (G11, G12, G22, h1, h2) for flow d.

    With S = frame 2's expansion at x + d (zero outside) and, per pixel, ``twice`` = 1 inside / 2 outside:
    A = [[r4, r6], [r6, r5]] = mean of both frames' quadratic terms (frame 1's own outside),
    Δb = (b¹ − S_b)/2 + A·d, all scaled by the border weight; M = (AᵀA, AᵀΔb) entries.
    In-place ops and ``out=`` writes keep the number of full-frame passes low (memory-bound on CPU).
    """
    s, inside, dx, dy = _sample(r1, flow, gx, gy)  # s: N, 5, h, w (zero outside)
    twice = torch.where(inside, 1.0, 2.0)
    half_b, quarter_b = border * 0.5, border * 0.25
    r4 = torch.addcmul(s[:, 2], r0[:, 2], twice).mul_(half_b)
    r5 = torch.addcmul(s[:, 3], r0[:, 3], twice).mul_(half_b)
    r6 = torch.addcmul(s[:, 4], r0[:, 4], twice).mul_(quarter_b)
    r2 = torch.sub(r0[:, 0], s[:, 0]).mul_(half_b).addcmul_(r4, dy).addcmul_(r6, dx)
    r3 = torch.sub(r0[:, 1], s[:, 1]).mul_(half_b).addcmul_(r6, dy).addcmul_(r5, dx)
    m = torch.empty_like(s)
    torch.mul(r4, r4, out=m[:, 0]).addcmul_(r6, r6)
    torch.add(r4, r5, out=m[:, 1]).mul_(r6)
    torch.mul(r5, r5, out=m[:, 2]).addcmul_(r6, r6)
    torch.mul(r4, r2, out=m[:, 3]).addcmul_(r6, r3)
    torch.mul(r6, r2, out=m[:, 4]).addcmul_(r5, r3)
    return m


def _replicate_pad(x: torch.Tensor, r: int, dim: int, after: int | None = None) -> torch.Tensor:
    """Replicate-pad ``r`` entries before and ``after`` (default r) entries after, along ``dim``."""
    after = r if after is None else after
    n = x.shape[dim]
    parts = [x]
    if r:
        shape = list(x.shape)
        shape[dim] = r
        parts.insert(0, x.narrow(dim, 0, 1).expand(shape))
    if after:
        shape = list(x.shape)
        shape[dim] = after
        parts.append(x.narrow(dim, n - 1, 1).expand(shape))
    return torch.cat(parts, dim) if len(parts) > 1 else x


def _box_sum(xp: torch.Tensor, length: int, n: int, dim: int) -> torch.Tensor:
    """Sums of ``length`` consecutive entries along ``dim`` (n outputs) with O(log length) adds.

    Partial sums over power-of-two spans are built by doubling, then combined per binary digit of
    ``length``; float32 tree sums, so no cumsum-style precision loss on wide frames.
    """
    spans = {1: xp}
    span = 1
    while span * 2 <= length:
        prev = spans[span]
        m = prev.shape[dim] - span
        spans[span * 2] = prev.narrow(dim, 0, m) + prev.narrow(dim, span, m)
        span *= 2
    parts, offset = [], 0
    while span >= 1:
        if length & span:
            parts.append(spans[span].narrow(dim, offset, n))
            offset += span
        span //= 2
    if len(parts) == 1:
        return parts[0].clone()
    out = parts[0] + parts[1]
    for part in parts[2:]:
        out.add_(part)
    return out


def _separable_window(
    x: torch.Tensor, taps: tuple[float, ...], pad_top: int | None = None, pad_bottom: int | None = None
) -> torch.Tensor:
    """Correlate every channel with ``taps`` along H then W, replicate border (OpenCV BORDER_REPLICATE).

    A uniform (box) window uses the doubling box sum, then one scale; a Gaussian window uses weighted
    shifted slices. On the CPU both are several times faster than ``conv2d`` with a 1-D kernel.
    ``pad_top``/``pad_bottom`` (default r) let a band of rows carry its own halo: only rows at the
    frame's real edges are replicated, and ``x.shape[-2] + pad_top + pad_bottom − 2r`` rows come out.
    """
    r = len(taps) // 2
    if r == 0:
        return x * (taps[0] * taps[0])
    top = r if pad_top is None else pad_top
    bottom = r if pad_bottom is None else pad_bottom
    h, w = x.shape[-2] + top + bottom - 2 * r, x.shape[-1]
    if all(t == taps[0] for t in taps):
        v = _box_sum(_replicate_pad(x, top, x.ndim - 2, bottom), 2 * r + 1, h, x.ndim - 2)
        out = _box_sum(_replicate_pad(v, r, x.ndim - 1), 2 * r + 1, w, x.ndim - 1)
        return out.mul_(taps[0] * taps[0])
    xp = _replicate_pad(x, top, x.ndim - 2, bottom)
    acc = xp[..., 0:h, :] * taps[0]
    for i in range(1, 2 * r + 1):
        acc.add_(xp[..., i : i + h, :], alpha=taps[i])
    xp = _replicate_pad(acc, r, x.ndim - 1)
    out = xp[..., 0:w] * taps[0]
    for i in range(1, 2 * r + 1):
        out.add_(xp[..., i : i + w], alpha=taps[i])
    return out


def _iteration(r0, r1, flow, gx, gy, border, win: tuple[float, ...]) -> torch.Tensor:
    """One Farnebäck iteration. OpenCV updates M after each solve except the last; composing
    update -> blur -> solve per iteration, starting from the incoming flow, is the same sequence."""
    return _solve(_separable_window(_update_matrices(r0, r1, flow, gx, gy, border), win))


def _iteration_banded(r0, r1, flow, gx, gy, border, win: tuple[float, ...], band: int) -> torch.Tensor:
    """``_iteration`` computed in horizontal bands of ``band`` rows (plus the window's halo).

    Gives bit-identical results (every output depends only on its window, and the box sums are formed
    from the same partial sums) while each band's temporaries stay in the CPU cache; on large frames
    this is markedly faster than whole-frame passes.
    """
    h = flow.shape[-2]
    r = len(win) // 2
    out = torch.empty_like(flow)
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        e0, e1 = max(0, y0 - r), min(h, y1 + r)
        m = _update_matrices(r0[..., e0:e1, :], r1, flow[..., e0:e1, :], gx, gy[:, e0:e1], border[e0:e1])
        mb = _separable_window(m, win, r - (y0 - e0), r - (e1 - y1))
        out[..., y0:y1, :] = _solve(mb)
    return out


def _iteration_functional(r0, r1, flow, gx, gy, border, win: tuple[float, ...]) -> torch.Tensor:
    """``_iteration`` written without in-place/``out=`` ops, for ``torch.compile`` (which fuses it anyway;
    inductor rejects ``out=`` writes into views)."""
    n, _, rows, cols = flow.shape
    h, w = r1.shape[-2:]
    dx, dy = flow[:, 0], flow[:, 1]
    fx, fy = gx + dx, gy + dy
    inside = (fx >= 0) & (fx < w - 1) & (fy >= 0) & (fy < h - 1)
    grid = torch.stack([fx * (2.0 / max(w - 1, 1)) - 1.0, fy * (2.0 / max(h - 1, 1)) - 1.0], dim=-1)
    s = F.grid_sample(r1, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    s = s * inside.unsqueeze(1)
    twice = torch.where(inside, 1.0, 2.0)
    r4 = (s[:, 2] + r0[:, 2] * twice) * (border * 0.5)
    r5 = (s[:, 3] + r0[:, 3] * twice) * (border * 0.5)
    r6 = (s[:, 4] + r0[:, 4] * twice) * (border * 0.25)
    r2 = (r0[:, 0] - s[:, 0]) * (border * 0.5) + r4 * dy + r6 * dx
    r3 = (r0[:, 1] - s[:, 1]) * (border * 0.5) + r6 * dy + r5 * dx
    m = torch.stack(
        [r4 * r4 + r6 * r6, (r4 + r5) * r6, r5 * r5 + r6 * r6, r4 * r2 + r6 * r3, r6 * r2 + r5 * r3], dim=1
    )
    g11, g12, g22, h1, h2 = _separable_window(m, win).unbind(1)
    idet = 1.0 / (g11 * g22 - g12 * g12 + 1e-3)
    return torch.stack([(g11 * h2 - g12 * h1) * idet, (g22 * h1 - g12 * h2) * idet], dim=1)


def _solve(mb: torch.Tensor) -> torch.Tensor:
    """``FarnebackUpdateFlow``: solve the averaged 2x2 systems, regularised by +1e-3 like OpenCV."""
    g11, g12, g22, h1, h2 = mb.unbind(1)
    idet = torch.mul(g11, g22).addcmul_(g12, g12, value=-1.0).add_(1e-3).reciprocal_()
    out = torch.empty((mb.shape[0], 2, *mb.shape[2:]), dtype=mb.dtype, device=mb.device)
    torch.mul(g11, h2, out=out[:, 0]).addcmul_(g12, h1, value=-1.0).mul_(idet)
    torch.mul(g22, h1, out=out[:, 1]).addcmul_(g12, h2, value=-1.0).mul_(idet)
    return out
