"""cv2.calcOpticalFlowFarneback behind the streaming interface, and ``auto``'s choice by measurement."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from mtl_perception.flow import COMMON, StreamingFarneback
from mtl_perception.flow.cv2_flow import Cv2StreamingFarneback, choose_implementation, cv2_unsuitable
from mtl_perception.pipeline import FlowInput

H, W = 64, 96


def frames():
    rng = np.random.default_rng(1)
    first = cv2.GaussianBlur(rng.integers(0, 256, (H + 8, W + 8), dtype=np.uint8), (7, 7), 2.0)
    return first[4 : 4 + H, 4 : 4 + W].copy(), first[3 : 3 + H, 6 : 6 + W].copy()  # shifted by (1, -2)


def test_flow_is_cv2s_and_the_residual_confidence_is_the_ports():
    a, b = frames()
    p = COMMON
    ours = Cv2StreamingFarneback(COMMON, "cpu")
    flow, conf = ours.flow(ours.prepare(torch.from_numpy(a)), ours.prepare(torch.from_numpy(b)))
    ref = cv2.calcOpticalFlowFarneback(
        a, b, None, p.pyr_scale, p.levels, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p.flags
    )
    np.testing.assert_array_equal(flow.permute(1, 2, 0).numpy(), ref)
    port = StreamingFarneback(COMMON, "cpu")
    port_flow, port_conf = port.flow(port.prepare(torch.from_numpy(a)), port.prepare(torch.from_numpy(b)))
    assert conf.shape == (H, W) and float(conf.min()) >= 0 and float(conf.max()) <= 1
    assert float((conf - port_conf).abs().mean()) < 0.02  # same level-0 expansions, near-identical flows
    assert float((flow - port_flow).abs().max()) < 0.5


def test_forward_backward_confidence_and_refusals():
    a, b = frames()
    ours = Cv2StreamingFarneback(COMMON, "cpu", confidence_mode="forward_backward")
    flow, conf = ours.flow(ours.prepare(torch.from_numpy(a)), ours.prepare(torch.from_numpy(b)))
    assert float(conf[8:-8, 8:-8].mean()) > 0.5  # a consistent translation
    cuda_style = dataclasses.replace(COMMON, resize_mode="cuda")
    assert "resize_mode" in cv2_unsuitable(cuda_style)
    with pytest.raises(ValueError, match="resize_mode"):
        Cv2StreamingFarneback(cuda_style)
    assert choose_implementation(cuda_style, torch.device("cpu"), "residual", (H, W)) == ("torch", {})


def test_auto_measures_once_and_flow_input_reports_the_choice():
    chosen, costs = choose_implementation(COMMON, torch.device("cpu"), "residual", (H, W), repeats=1)
    assert (
        chosen in ("torch", "cv2") and set(costs) == {"torch", "cv2"} and chosen == min(costs, key=costs.get)
    )
    a, b = frames()
    rgb = [np.repeat(x[..., None], 3, axis=2) for x in (a, b)]
    auto = FlowInput(COMMON, torch.device("cpu"), "residual", implementation="auto")
    auto.between(rgb[0], rgb[1], (H, W))
    assert auto.implementation in ("torch", "cv2") and set(auto.measured_ms) == {"torch", "cv2"}
    flow, _ = FlowInput(COMMON, torch.device("cpu"), "residual", implementation="cv2").between(
        rgb[0], rgb[1], (H, W)
    )
    p = COMMON
    ref = cv2.calcOpticalFlowFarneback(
        a, b, None, p.pyr_scale, p.levels, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p.flags
    )
    np.testing.assert_array_equal(flow.permute(1, 2, 0).numpy(), ref)
    with pytest.raises(ValueError, match="implementation"):
        FlowInput(COMMON, torch.device("cpu"), "residual", implementation="opencl")
