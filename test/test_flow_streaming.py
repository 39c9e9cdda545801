"""StreamingFarneback equals the one-shot API; parameters, size changes and bad input are handled."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mtl_perception.flow import (
    COMMON,
    CUDA_DEFAULTS,
    OPTFLOW_USE_INITIAL_FLOW,
    FarnebackParams,
    StreamingFarneback,
    calc_optical_flow_farneback,
)
from mtl_perception.flow.synthetic import SmoothWarp, texture

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _sequence(h=96, w=128, frames=3):
    img = cv2.cvtColor(texture("astronaut", h, w), cv2.COLOR_BGR2GRAY)
    out = [img]
    for i in range(1, frames):
        out.append(SmoothWarp(h, w, 2.0, seed=i).warp(out[-1]))
    return [torch.from_numpy(f).float() for f in out]


def _args(p: FarnebackParams):
    return (p.pyr_scale, p.levels, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p.flags)


def test_params_contract():
    assert CUDA_DEFAULTS == FarnebackParams(0.5, 5, 13, 10, 5, 1.1, 0, "cpu")
    assert COMMON == FarnebackParams(0.5, 3, 15, 3, 5, 1.2, 0)
    assert FarnebackParams.from_dict(COMMON.to_dict()) == COMMON
    with pytest.raises(ValueError, match="unknown FarnebackParams keys"):
        FarnebackParams.from_dict({"pyr_scale": 0.5, "bogus": 1})


@pytest.mark.parametrize("mode", ["residual", "forward_backward"])
def test_streaming_equals_one_shot(mode):
    frames = _sequence()
    stream = StreamingFarneback(COMMON, "cpu", confidence_mode=mode)
    feats = [stream.prepare(f) for f in frames]
    for i in range(len(frames) - 1):
        flow, conf = stream.flow(feats[i], feats[i + 1])
        ref_flow, ref_conf = calc_optical_flow_farneback(
            frames[i], frames[i + 1], None, *_args(COMMON), confidence=mode
        )
        assert flow.shape == (2, 96, 128) and conf.shape == (96, 128)
        torch.testing.assert_close(flow, ref_flow.permute(2, 0, 1), rtol=0, atol=1e-5)
        torch.testing.assert_close(conf, ref_conf, rtol=0, atol=1e-5)
        assert 0.0 <= float(conf.min()) and float(conf.max()) <= 1.0
    flow, conf = stream.flow(feats[0], feats[1], confidence=False)
    assert conf is None


def test_each_frame_is_expanded_once():
    frames = _sequence(frames=4)
    stream = StreamingFarneback(COMMON)
    feats = [stream.prepare(frames[0])]
    calls = []
    original = stream.engine.expand
    stream.engine.expand = lambda g: calls.append(1) or original(g)
    for f in frames[1:]:
        feats.append(stream.prepare(f))
        stream.flow(feats[-2], feats[-1])
    assert len(calls) == 3


def test_batched_streaming_and_initial_flow():
    frames = _sequence(frames=3)
    batch_a = torch.stack(frames[:2])[:, None]
    batch_b = torch.stack(frames[1:])[:, None]
    params = FarnebackParams(0.5, 3, 15, 3, 5, 1.2, OPTFLOW_USE_INITIAL_FLOW)
    init = torch.full((2, 2, 96, 128), 0.5)
    stream = StreamingFarneback(params)
    flow, conf = stream.flow(stream.prepare(batch_a), stream.prepare(batch_b), initial_flow=init)
    assert flow.shape == (2, 2, 96, 128) and conf.shape == (2, 96, 128)
    ref = calc_optical_flow_farneback(batch_a, batch_b, init, *_args(params))
    torch.testing.assert_close(flow, ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="initial_flow"):
        stream.flow(stream.prepare(batch_a), stream.prepare(batch_b))


def test_size_change_resets_and_mixed_sizes_raise():
    stream = StreamingFarneback(COMMON)
    small = stream.prepare(torch.rand(64, 80) * 255)
    small2 = stream.prepare(torch.rand(64, 80) * 255)
    engine = stream.engine
    big = stream.prepare(torch.rand(72, 96) * 255)
    assert stream.engine is not engine and stream.engine.size == (72, 96)
    with pytest.raises(ValueError, match=r"\(64, 80\).*\(72, 96\)"):
        stream.flow(small, big)
    with pytest.raises(ValueError, match="prepare"):
        stream.flow(small, small2)  # made before the size change
    big2 = stream.prepare(torch.rand(72, 96) * 255)
    flow, _ = stream.flow(big, big2)
    assert flow.shape == (2, 72, 96)
    stream.reset()
    assert stream.engine is None
    with pytest.raises(ValueError):
        stream.flow(big, big2)


GOOD = np.zeros((40, 50), np.uint8)


@pytest.mark.parametrize(
    "prev,nxt,kwargs,match",
    [
        (GOOD, np.zeros((40, 51), np.uint8), {}, "differ in size"),
        (np.zeros((40, 50, 4), np.uint8), GOOD, {}, "HxW"),
        (np.zeros((40, 50), bool), GOOD, {}, "dtype"),
        (np.zeros((0, 50), np.uint8), GOOD, {}, "empty"),
        (np.full((40, 50), np.nan, np.float32), GOOD.astype(np.float32), {}, "NaN"),
        (np.full((40, 50), np.inf, np.float32), GOOD.astype(np.float32), {}, "NaN or inf"),
        (GOOD, GOOD, {"pyr_scale": 1.0}, "pyr_scale"),
        (GOOD, GOOD, {"poly_n": 6}, "poly_n"),
        (GOOD, GOOD, {"winsize": 0}, "winsize"),
        (GOOD, GOOD, {"iterations": 0}, "iterations"),
        (GOOD, GOOD, {"flags": 8}, "flags"),
        (GOOD, GOOD, {"flags": OPTFLOW_USE_INITIAL_FLOW}, "no initial flow"),
        (GOOD, GOOD, {"flags": OPTFLOW_USE_INITIAL_FLOW, "flow": np.zeros((40, 50, 3), np.float32)}, "shape"),
        (GOOD, GOOD, {"resize_mode": "gpu"}, "resize_mode"),
        (GOOD, GOOD, {"confidence": "magic"}, "confidence"),
        (torch.zeros(3, 40, 50), torch.zeros(3, 40, 50), {}, "to_gray"),
        (GOOD, torch.zeros(40, 50), {}, "same kind"),
        ([[1, 2]], GOOD, {}, "numpy array or torch tensor"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(prev, nxt, kwargs, match):
    call = dict(
        zip(
            ["pyr_scale", "levels", "winsize", "iterations", "poly_n", "poly_sigma", "flags"],
            _args(COMMON),
            strict=True,
        )
    )
    flow = kwargs.pop("flow", None)
    extra = {k: kwargs.pop(k) for k in ("resize_mode", "confidence") if k in kwargs}
    call.update(kwargs)
    with pytest.raises(ValueError, match=match):
        calc_optical_flow_farneback(prev, nxt, flow, *call.values(), **extra)


def test_streaming_bad_frames():
    stream = StreamingFarneback()
    with pytest.raises(ValueError, match="shape"):
        stream.prepare(torch.zeros(3, 40, 50))
    with pytest.raises(ValueError, match="NaN"):
        stream.prepare(torch.full((40, 50), float("nan")))
    with pytest.raises(ValueError, match="torch tensor"):
        stream.prepare(np.zeros((40, 50), np.float32))
    with pytest.raises(ValueError, match="confidence_mode"):
        StreamingFarneback(confidence_mode="nope")


def test_outputs_stay_on_input_type_and_are_float32():
    a = np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8)
    b = np.roll(a, 1, axis=1)
    out = calc_optical_flow_farneback(a, b, None, *_args(COMMON))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (48, 64, 2)
    flow, conf = calc_optical_flow_farneback(
        torch.from_numpy(a), torch.from_numpy(b), None, *_args(COMMON), confidence="residual"
    )
    assert flow.dtype == torch.float32 and flow.shape == (48, 64, 2) and conf.shape == (48, 64)
    np.testing.assert_allclose(flow.numpy(), out, atol=1e-6)


@pytest.mark.parametrize("flags", [0, 256])
def test_cpu_row_banding_is_bit_identical(flags):
    """Large CPU levels are processed in row bands for cache locality; results must not change at all."""
    frames = _sequence(h=120, w=160, frames=2)
    params = FarnebackParams(0.5, 2, 15, 3, 5, 1.2, flags)
    whole = StreamingFarneback(params)
    fa, fb = whole.prepare(frames[0]), whole.prepare(frames[1])
    whole.engine.band_pixels = 0
    ref, _ = whole.flow(fa, fb)
    banded = StreamingFarneback(params)
    ga, gb = banded.prepare(frames[0]), banded.prepare(frames[1])
    banded.engine.band_pixels = 160 * 19  # 19-row bands, 7-row halos, a short last band
    out, _ = banded.flow(ga, gb)
    assert torch.equal(out, ref)


def test_functional_iteration_used_for_compile_matches_eager():
    from mtl_perception.flow.farneback import _iteration, _iteration_functional

    frames = _sequence(h=64, w=96, frames=2)
    for flags in (0, 256):
        stream = StreamingFarneback(FarnebackParams(0.5, 1, 15, 3, 5, 1.2, flags))
        fa, fb = stream.prepare(frames[0]), stream.prepare(frames[1])
        engine = stream.engine
        gx, gy, border = engine._levels[0]
        flow = torch.randn(1, 2, 64, 96)
        args = (fa.expansions[0], fb.expansions[0], flow, gx, gy, border, engine._win)
        torch.testing.assert_close(_iteration_functional(*args), _iteration(*args), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compiled_stream_matches_eager():
    """compile=True (torch.compile, ~40 s on 2 cores) gives the eager result."""
    frames = _sequence(h=64, w=96, frames=2)
    stream = StreamingFarneback(COMMON, compile=True)
    flow, conf = stream.flow(stream.prepare(frames[0]), stream.prepare(frames[1]))
    ref, ref_conf = calc_optical_flow_farneback(
        frames[0], frames[1], None, *_args(COMMON), confidence="residual"
    )
    torch.testing.assert_close(flow, ref.permute(2, 0, 1), rtol=0, atol=1e-3)
    torch.testing.assert_close(conf, ref_conf, rtol=0, atol=1e-3)
