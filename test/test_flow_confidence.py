"""Confidence ranks errors: a pasted textured occluder and noise, with the true error known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.stats import spearmanr

from mtl_perception.flow import calc_optical_flow_farneback
from mtl_perception.flow.synthetic import endpoint_error, make_pair, texture

# Measured (256x320, amp 6, 80x80 occluder, σ=2 noise): residual ρ 0.61 / 0.65, forward-backward 0.38 / 0.58.
MIN_SPEARMAN = {"residual": 0.5, "forward_backward": 0.3}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _occluded_pair(name: str, h=256, w=320, size=80):
    prev, nxt, gt = make_pair(name, h, w, 6.0, seed=2)
    nxt = nxt.copy()
    y0, x0 = h // 3, w // 3
    nxt[y0 : y0 + size, x0 : x0 + size] = texture("camera", size, size)
    occluded = np.zeros((h, w), bool)
    occluded[y0 : y0 + size, x0 : x0 + size] = True
    rng = np.random.default_rng(0)
    a, b = (
        cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32) + rng.normal(0, 2, (h, w)).astype(np.float32)
        for x in (prev, nxt)
    )
    return a, b, gt, occluded


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
@pytest.mark.parametrize("mode", ["residual", "forward_backward"])
def test_confidence_ranks_true_error(name, mode):
    a, b, gt, occluded = _occluded_pair(name)
    flow, conf = calc_optical_flow_farneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0, confidence=mode)
    assert conf.shape == gt.shape[:2] and conf.dtype == np.float32
    assert conf.min() >= 0.0 and conf.max() <= 1.0
    err = endpoint_error(flow, gt)
    rho = spearmanr(1.0 - conf.ravel(), err.ravel())[0]
    print(
        f"[confidence] {name} {mode}: spearman {rho:.3f}, mean conf occluded {conf[occluded].mean():.3f} "
        f"vs rest {conf[~occluded].mean():.3f}"
    )
    assert rho >= MIN_SPEARMAN[mode]
    assert conf[occluded].mean() < conf[~occluded].mean() - 0.2


def test_residual_confidence_is_zero_where_flow_leaves_the_frame():
    """Pixels whose match x + d falls outside the frame have no data term: rel = 1, conf = 0."""
    a = np.random.default_rng(0).integers(0, 255, (64, 96)).astype(np.float32)
    a = cv2.GaussianBlur(a, (0, 0), 2) * 4
    init = np.zeros((64, 96, 2), np.float32)
    init[..., 0] = 40.0  # a large known shift pushes the left part outside the frame
    flow, conf = calc_optical_flow_farneback(a, a, init, 0.5, 0, 15, 1, 5, 1.2, 4, confidence="residual")
    outside = (np.arange(96)[None, :] + flow[..., 0] > 95) | (np.arange(96)[None, :] + flow[..., 0] < 0)
    assert outside.any()
    assert conf[outside & (np.arange(96)[None, :] > 75)].max() < 0.05
