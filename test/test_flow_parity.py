"""Parity of calc_optical_flow_farneback with cv2.calcOpticalFlowFarneback (the oracle) on real textures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mtl_perception.flow import (
    OPTFLOW_FARNEBACK_GAUSSIAN,
    OPTFLOW_USE_INITIAL_FLOW,
    calc_optical_flow_farneback,
    to_gray,
)
from mtl_perception.flow.synthetic import endpoint_error, make_pair

MEAN_TOL, P999_TOL, GT_TOL = 1e-3, 0.05, 1e-3


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _gray(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def _assert_parity(ours: np.ndarray, ref: np.ndarray, gt: np.ndarray | None, label: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == np.float32
    epe = endpoint_error(ours, ref)
    mean, p999 = float(epe.mean()), float(np.percentile(epe, 99.9))
    line = f"[parity] {label}: mean {mean:.2e} px, p99.9 {p999:.2e} px"
    if gt is not None:
        gt_ours, gt_cv2 = float(endpoint_error(ours, gt).mean()), float(endpoint_error(ref, gt).mean())
        line += f", GT-EPE ours {gt_ours:.4f} / cv2 {gt_cv2:.4f}"
        assert abs(gt_ours - gt_cv2) <= GT_TOL, line
    print(line)
    assert mean <= MEAN_TOL, line
    assert p999 <= P999_TOL, line


CASES = [  # (texture, h, w, amp, args)
    ("astronaut", 256, 320, 4.0, (0.5, 5, 13, 10, 5, 1.1, 0)),
    ("coffee", 240, 320, 3.0, (0.5, 3, 15, 3, 5, 1.2, 0)),
    ("chelsea", 200, 300, 4.0, (0.5, 3, 15, 3, 5, 1.2, OPTFLOW_FARNEBACK_GAUSSIAN)),
    ("camera", 256, 256, 3.0, (0.5, 3, 15, 3, 7, 1.5, 0)),
    ("astronaut", 241, 333, 3.0, (0.3, 3, 14, 3, 5, 0.0, 0)),
    ("coffee", 175, 251, 3.0, (0.8, 5, 10, 3, 5, 1.1, 0)),
    ("chelsea", 121, 163, 2.0, (0.5, 4, 9, 4, 5, 1.1, OPTFLOW_FARNEBACK_GAUSSIAN)),
]


@pytest.mark.parametrize("name,h,w,amp,args", CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}-{c[4]}" for c in CASES])
def test_parity_uint8(name, h, w, amp, args):
    prev, nxt, gt = make_pair(name, h, w, amp, seed=h)
    a, b = _gray(prev), _gray(nxt)
    ref = cv2.calcOpticalFlowFarneback(a, b, None, *args)
    ours = calc_optical_flow_farneback(a, b, None, *args)
    _assert_parity(ours, ref, gt, f"{name} {h}x{w} {args}")


def test_parity_float32_input():
    prev, nxt, gt = make_pair("camera", 200, 240, 3.0, seed=3)
    a, b = _gray(prev).astype(np.float32) * 0.9 + 7.25, _gray(nxt).astype(np.float32) * 0.9 + 7.25
    args = (0.5, 3, 15, 3, 5, 1.2, 0)
    _assert_parity(
        calc_optical_flow_farneback(a, b, None, *args),
        cv2.calcOpticalFlowFarneback(a, b, None, *args),
        gt,
        "float32 input",
    )


@pytest.mark.parametrize("h,w", [(30, 45), (8, 9), (6, 20), (20, 6), (31, 64)])
def test_parity_small_inputs(h, w):
    """Below 32 px no pyramid levels are added, and below 10 px OpenCV's border-weight quirk kicks in."""
    prev, nxt, _ = make_pair("astronaut", h, w, 1.0, seed=w)
    a, b = _gray(prev), _gray(nxt)
    for args in [(0.5, 3, 15, 3, 5, 1.2, 0), (0.5, 5, 5, 4, 7, 1.5, OPTFLOW_FARNEBACK_GAUSSIAN)]:
        ref = cv2.calcOpticalFlowFarneback(a, b, None, *args)
        _assert_parity(calc_optical_flow_farneback(a, b, None, *args), ref, None, f"{h}x{w} {args}")


@pytest.mark.parametrize("levels,pyr_scale", [(3, 0.5), (2, 0.7)])
def test_parity_initial_flow(levels, pyr_scale):
    """OPTFLOW_USE_INITIAL_FLOW: the seed is INTER_AREA-downscaled by non-integer factors (250x333)."""
    prev, nxt, gt = make_pair("coffee", 250, 333, 4.0, seed=7)
    a, b = _gray(prev), _gray(nxt)
    rng = np.random.default_rng(0)
    init = (gt + rng.normal(scale=0.5, size=gt.shape)).astype(np.float32)
    args = (pyr_scale, levels, 15, 3, 5, 1.2, OPTFLOW_USE_INITIAL_FLOW)
    ref = cv2.calcOpticalFlowFarneback(a, b, init.copy(), *args)
    buf = init.copy()
    ours = calc_optical_flow_farneback(a, b, buf, *args)
    assert ours is buf, "like cv2, the result is written into a float32 HxWx2 flow argument"
    _assert_parity(ours, ref, gt, f"initial flow levels={levels} pyr={pyr_scale}")


def test_parity_colour_inputs():
    prev, nxt, gt = make_pair("chelsea", 192, 256, 3.0, seed=11)
    args = (0.5, 3, 15, 3, 5, 1.2, 0)
    ref = cv2.calcOpticalFlowFarneback(_gray(prev), _gray(nxt), None, *args)
    _assert_parity(calc_optical_flow_farneback(prev, nxt, None, *args), ref, gt, "BGR numpy input")
    rgb_prev, rgb_next = torch.from_numpy(prev[..., ::-1].copy()), torch.from_numpy(nxt[..., ::-1].copy())
    ours = calc_optical_flow_farneback(to_gray(rgb_prev, "rgb"), to_gray(rgb_next, "rgb"), None, *args)
    assert isinstance(ours, torch.Tensor) and ours.shape == (192, 256, 2)
    _assert_parity(ours.numpy(), ref, gt, "RGB tensor via to_gray")


def test_parity_batched_tensors():
    pairs = [make_pair(n, 160, 224, 3.0, seed=i) for i, n in enumerate(("astronaut", "coffee", "camera"))]
    args = (0.5, 5, 13, 10, 5, 1.1, 0)
    prev = torch.stack([torch.from_numpy(_gray(p)) for p, _, _ in pairs])[:, None].float()
    nxt = torch.stack([torch.from_numpy(_gray(q)) for _, q, _ in pairs])[:, None].float()
    ours = calc_optical_flow_farneback(prev, nxt, None, *args)
    assert ours.shape == (3, 2, 160, 224) and ours.dtype == torch.float32
    for i, (p, q, gt) in enumerate(pairs):
        ref = cv2.calcOpticalFlowFarneback(_gray(p), _gray(q), None, *args)
        _assert_parity(ours[i].permute(1, 2, 0).numpy(), ref, gt, f"batch item {i}")


def test_parity_384x768_common_settings():
    prev, nxt, gt = make_pair("astronaut", 384, 768, 8.0, seed=5)
    a, b = _gray(prev), _gray(nxt)
    for args in [(0.5, 3, 15, 3, 5, 1.2, 0), (0.5, 5, 13, 10, 5, 1.1, 0)]:
        ref = cv2.calcOpticalFlowFarneback(a, b, None, *args)
        _assert_parity(calc_optical_flow_farneback(a, b, None, *args), ref, gt, f"384x768 amp 8 {args}")
