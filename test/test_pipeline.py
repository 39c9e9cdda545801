"""PerceptionPipeline: partner choice, resets, flow fed to the network, postprocessing.

A recording backend observes exactly what the pipeline hands to the network (the real backends are
exercised in test_pipeline_backend.py); flow is checked against the FLOW module's one-shot function
(itself tested against cv2) and against cv2.calcOpticalFlowFarneback directly.
"""

import cv2
import numpy as np
import pytest
import torch
from contracts import contract_of

from mtl_perception import device_io
from mtl_perception.colormap import colorize, overlay_mask
from mtl_perception.flow import COMMON, CONFIDENCE_MODES, DEFAULT_CONFIDENCE_MODE, calc_optical_flow_farneback
from mtl_perception.model import ModelConfig
from mtl_perception.pipeline import (
    FlowInput,
    NonFiniteOutputError,
    PerceptionPipeline,
    StageTimer,
)
from mtl_perception.pipeline_config import ConfigError, Override, PipelineConfig

H, W = 48, 64
PARAMS = COMMON  # 3 levels: quick on the CPU


class RecordingBackend:
    """Implements the Backend contract; returns outputs derived from the inputs and records every call."""

    name = "recording"
    device = torch.device("cpu")
    tasks = ("depth", "semantic", "motion")
    streams = ("flow", "image")
    num_semantic_classes = 5

    def __init__(self, input_size=(H, W), depth_value=None):
        self.input_size = input_size
        self.contract = contract_of(ModelConfig(), size=input_size, farneback=PARAMS)
        self.calls = []
        self.input_scans = []  # check_finite of every call: the pipeline checks its outputs instead
        self.depth_value = depth_value

    def run(self, image, flow, *, check_finite=True):
        self.calls.append((image.clone(), None if flow is None else flow.clone()))
        self.input_scans.append(check_finite)
        n, _, h, w = image.shape
        depth = image[:, :1] / 10.0 - 5.0  # some pixels <= 0 -> must become NaN
        if self.depth_value is not None:
            depth = torch.full_like(depth, self.depth_value)
        semantic = (image[:, 0] // 52).to(torch.uint8)  # ids 0..4
        motion = (image[:, 1] > 128).to(torch.uint8)
        return {"depth": depth, "semantic": semantic, "motion": motion}


def torch_config(**settings) -> PipelineConfig:
    """The port computes the flow (what the flow dataset uses), whatever auto would measure on this CPU."""
    return PipelineConfig(flow_implementation="torch", **settings)


def textured_frames(count, shift=(1.5, 0.75), size=(H, W), seed=0):
    """Smooth random texture translated by `shift` pixels per frame (RGB uint8)."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (size[0] * 2, size[1] * 2, 3)).astype(np.float32), (0, 0), 3)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
    frames = []
    for i in range(count):
        m = np.float32([[1, 0, -20 + shift[0] * i], [0, 1, -10 + shift[1] * i]])
        frames.append(cv2.warpAffine(base, m, (size[1], size[0])).round().astype(np.uint8))
    return frames


def test_first_frame_zero_flow_zero_confidence_then_partner_flow():
    backend = RecordingBackend()
    pipe = PerceptionPipeline(backend, torch_config(flow_dt=0.1))
    frames = textured_frames(3)
    first = pipe.process(frames[0], 10.0, want_flow=True)
    assert first.reset and first.reset_reason == "first frame" and first.partner_dt is None
    flow_in = backend.calls[0][1]
    assert tuple(flow_in.shape) == (1, 3, H, W) and not flow_in.any()  # u = v = confidence = 0
    np.testing.assert_array_equal(backend.calls[0][0][0].permute(1, 2, 0).numpy(), frames[0])

    second = pipe.process(frames[1], 10.1, want_flow=True)
    assert not second.reset and second.partner_dt == pytest.approx(0.1)
    flow_in = backend.calls[1][1][0]
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames[:2]]
    # flow on the current frame's grid pointing back to the partner frame, the default confidence
    args = list(PARAMS.to_dict().values())[:7]
    expected, conf = calc_optical_flow_farneback(
        gray[1], gray[0], None, *args, resize_mode=PARAMS.resize_mode, confidence=DEFAULT_CONFIDENCE_MODE
    )
    np.testing.assert_allclose(flow_in[:2].permute(1, 2, 0).numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(flow_in[2].numpy(), conf, atol=1e-4)
    oracle = cv2.calcOpticalFlowFarneback(gray[1], gray[0], None, *args)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(flow_in[:2].permute(1, 2, 0).numpy()[inner] - oracle[inner]).mean() < 0.05
    # the frames move by (+1.5, +0.75) px per frame, so pointing back gives about (-1.5, -0.75)
    np.testing.assert_allclose(np.median(second.flow[inner], axis=(0, 1)), [-1.5, -0.75], atol=0.15)
    assert backend.input_scans == [False, False]  # no per-call input scan (a device sync on CUDA)


@pytest.mark.parametrize("rate, expected_gap", [(30.0, 4), (17.0, 2), (10.0, 1), (60.0, 7)])
def test_partner_is_closest_to_flow_dt(rate, expected_gap):
    backend = RecordingBackend()
    pipe = PerceptionPipeline(backend, torch_config(max_history=8))
    frames = textured_frames(10)
    for i, frame in enumerate(frames):
        result = pipe.process(frame, 100.0 + i / rate)
    assert result.partner_dt == pytest.approx(expected_gap / rate)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"size": (H // 2, W)}, "image size or encoding changed"),
        ({"encoding": "bgr8"}, "image size or encoding changed"),
        ({"stamp": 0.5}, "stamp did not increase"),
        ({"stamp": 1.0 + 0.05}, "stamp did not increase"),  # equal to the previous stamp
        ({"stamp": 1.05 + 10 * 0.1 + 0.01}, "gap"),
    ],
)
def test_resets(change, reason):
    backend = RecordingBackend()
    pipe = PerceptionPipeline(backend, torch_config(flow_dt=0.1, reset_gap_factor=10))
    frames = textured_frames(3)
    first = pipe.process(frames[0], 1.0)
    second = pipe.process(frames[1], 1.05)
    assert not second.reset
    frame = frames[2]
    if "size" in change:
        frame = np.ascontiguousarray(frame[: change["size"][0]])
    result = pipe.process(frame, change.get("stamp", 1.1), change.get("encoding", "rgb8"))
    assert result.reset and reason in result.reset_reason and result.partner_dt is None
    assert not backend.calls[-1][1].any()
    assert [r.reset for r in (first, second, result)] == [True, False, True]  # the first frame counts


def test_depth_postprocessing_and_nonfinite_rejection():  # the one finiteness check, after the download
    backend = RecordingBackend()
    pipe = PerceptionPipeline(backend, torch_config())
    frame = textured_frames(1)[0]
    result = pipe.process(frame, 1.0)
    raw = frame[:, :, 0].astype(np.float32) / 10 - 5
    assert result.depth.dtype == np.float32 and result.depth.shape == (H, W)
    np.testing.assert_array_equal(np.isnan(result.depth), raw <= 0)
    np.testing.assert_allclose(result.depth[raw > 0], raw[raw > 0], rtol=1e-6)
    assert result.semantic.dtype == np.uint8 and result.motion.dtype == np.uint8
    assert {"preprocess", "flow", "network", "postprocess"} <= set(result.timings)

    bad = PerceptionPipeline(RecordingBackend(depth_value=float("nan")), torch_config())
    with pytest.raises(NonFiniteOutputError, match=f"{H * W} non-finite"):
        bad.process(frame, 1.0)
    assert not bad.history  # a rejected frame never becomes a flow partner


def test_output_size_input_resizes_outputs():
    backend = RecordingBackend(input_size=(H, W))
    pipe = PerceptionPipeline(backend, torch_config(output_size="input"))
    frame = textured_frames(1, size=(2 * H, 2 * W))[0]
    result = pipe.process(frame, 1.0, want_flow=True, want_image=True)
    assert result.size == (2 * H, 2 * W)
    assert result.flow.shape == (2 * H, 2 * W, 2) and result.image.shape == (2 * H, 2 * W, 3)
    net_image = backend.calls[0][0][0]
    assert tuple(net_image.shape) == (3, H, W)
    # class ids upsampled with nearest neighbour: every output id exists in the network output
    net_ids = (net_image[0] // 52).to(torch.uint8).numpy()
    np.testing.assert_array_equal(
        result.semantic, cv2.resize(net_ids, (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)
    )
    # network input: antialiased downscale of the frame, close to cv2's area average for a factor of 2
    area = cv2.resize(frame, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(net_image.permute(1, 2, 0).numpy() - area).mean() < 2.0


def test_tensor_input_and_bad_input():
    pipe = PerceptionPipeline(RecordingBackend(), torch_config())
    frame = textured_frames(1)[0]
    result = pipe.process(torch.from_numpy(frame), 1.0)
    assert result.depth.shape == (H, W)
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 RGB image"):
        pipe.process(frame.astype(np.float32), 2.0)
    with pytest.raises(ValueError, match="output_size"):
        PerceptionPipeline(RecordingBackend(), torch_config(output_size="full"))
    with pytest.raises(ConfigError, match="flow_dt") as error:
        PerceptionPipeline(RecordingBackend(), torch_config(flow_dt=0))
    assert error.value.name == "flow_dt"


def test_colorize_and_overlay():
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    ids = np.array([[0, 1], [2, 255]], np.uint8)
    np.testing.assert_array_equal(
        colorize(ids, palette), [[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [0, 0, 0]]]
    )
    image = np.full((2, 2, 3), 100, np.uint8)
    out = overlay_mask(image, np.array([[1, 0], [0, 0]], np.uint8), color=(255, 0, 0), alpha=0.5)
    expected = cv2.addWeighted(image, 0.5, np.full_like(image, (255, 0, 0)), 0.5, 0)
    np.testing.assert_array_equal(out[0, 0], expected[0, 0])
    np.testing.assert_array_equal(out[1:], image[1:])


def test_stage_timer_accumulates(monkeypatch):
    """Two timings of one stage add up (a timer that kept only the last one, or none, fails)."""
    clock = iter([10.0, 10.25, 20.0, 20.5])  # perf_counter at start / end of each block, seconds
    monkeypatch.setattr(device_io.time, "perf_counter", lambda: next(clock))
    timer = StageTimer("cpu")
    with timer("a"):
        pass
    with timer("a"):
        pass
    assert set(timer.times) == {"a"} and timer.times["a"] == pytest.approx(750.0)


@pytest.mark.parametrize("confidence_mode", CONFIDENCE_MODES)
def test_a_frame_pair_gives_identical_flow_in_the_node_and_in_the_flow_dataset(confidence_mode):
    """make_flow_dataset.py feeds the network exactly what the node does (bit-identical on the CPU)."""
    make_flow_dataset = pytest.importorskip("mtl_perception_training.make_flow_dataset")
    earlier, current = textured_frames(2, size=(2 * H + 6, 2 * W + 10))  # not the network size: resized
    backend = RecordingBackend()
    pipe = PerceptionPipeline(backend, torch_config(flow_dt=0.1, flow_confidence=confidence_mode))
    pipe.process(earlier, 1.0)
    result = pipe.process(current, 1.1, want_flow=True)
    assert result.partner_dt == pytest.approx(0.1)
    node_input = backend.calls[1][1][0]  # (3, H, W): u, v, confidence handed to the network

    flow_input = FlowInput(PARAMS, torch.device("cpu"), confidence_mode)
    flow, confidence = make_flow_dataset.frame_flow(flow_input, current, earlier, (H, W))
    assert flow.shape == (H, W, 2) and confidence.shape == (H, W)
    np.testing.assert_array_equal(flow, node_input[:2].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(confidence, node_input[2].numpy())
    np.testing.assert_array_equal(flow, result.flow)
    assert np.abs(flow).max() > 0.5 and confidence.max() > 0  # a real pair, not two zero fields


def test_warmup_leaves_no_state_behind():
    backend = RecordingBackend()
    pipe = PerceptionPipeline(backend, torch_config())
    pipe.warmup()
    assert len(backend.calls) == 2 and backend.calls[1][1].any()  # the second warm-up frame had a partner
    assert not pipe.history
    result = pipe.process(textured_frames(1)[0], 5.0)
    assert result.reset and result.reset_reason == "first frame"


def test_resize_for_network_is_antialiased_bilinear_like_pillow_in_whole_grey_levels():
    """The uint8 CPU resize against Pillow's antialiased bilinear (the filter torch's antialias ports)."""
    from PIL import Image as PILImage

    from mtl_perception.pipeline import resize_for_network, upload_rgb

    rgb = np.random.default_rng(3).integers(0, 256, (256, 512, 3), dtype=np.uint8)
    rgb = cv2.GaussianBlur(rgb, (5, 5), 1.5)  # camera-like content, not per-pixel noise
    out = resize_for_network(upload_rgb(rgb, torch.device("cpu")), (96, 192))
    assert out.dtype == torch.float32 and out.shape == (1, 3, 96, 192)
    ours = out[0].permute(1, 2, 0).numpy()
    assert np.array_equal(ours, np.round(ours))  # whole grey levels
    pillow = np.asarray(PILImage.fromarray(rgb).resize((192, 96), PILImage.BILINEAR), dtype=np.float32)
    assert np.abs(ours - pillow).max() <= 1.0
    # a float frame holding the same grey levels gives the same pixels (the training path passes floats)
    as_float = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    assert torch.equal(resize_for_network(as_float, (96, 192)), out)
    # the float-kernel result (what a CUDA device computes) is at most one grey level away
    float_kernel = torch.nn.functional.interpolate(as_float, size=(96, 192), mode="bilinear", antialias=True)
    float_kernel = float_kernel.round()
    assert (float_kernel - out).abs().max() <= 1.0


def test_flow_settings_come_from_the_model_contract_and_each_override_is_listed():
    backend = (
        RecordingBackend()
    )  # trained (says its contract) on COMMON, residual confidence, 2 frames at 17 Hz
    followed = PerceptionPipeline(backend, torch_config())
    assert followed.flow_params == COMMON and followed.flow_dt == pytest.approx(2 / 17)
    assert followed.flow_input.confidence_mode == DEFAULT_CONFIDENCE_MODE and followed.overrides == ()
    overridden = PerceptionPipeline(
        backend,
        torch_config(flow_levels=5, flow_gaussian=True, flow_confidence="forward_backward", flow_dt=0.2),
    )
    assert overridden.flow_params.levels == 5 and overridden.flow_params.flags == 256
    assert overridden.flow_input.confidence_mode == "forward_backward" and overridden.flow_dt == 0.2
    assert overridden.overrides == (
        Override("flow.levels", 3, 5),
        Override("flow.gaussian", False, True),
        Override("flow.confidence", "residual", "forward_backward"),
        Override("flow_dt", round(2 / 17, 6), 0.2),
    )
    # a value equal to the model's is no contradiction
    assert PerceptionPipeline(backend, torch_config(flow_levels=3, flow_winsize=15)).overrides == ()
    with pytest.raises(ConfigError) as error:
        PerceptionPipeline(backend, torch_config(flow_poly_n=4))
    assert error.value.name == "flow.poly_n"


def test_flow_beyond_the_clamp_is_clamped_there_with_zero_confidence():
    """A Farnebäck blow-up is stored the same way by the node and the flow dataset: at the clamp, with no
    confidence; the rest of the field is untouched."""
    earlier, current = textured_frames(2, shift=(3.0, 1.5))
    free = FlowInput(PARAMS, torch.device("cpu"), DEFAULT_CONFIDENCE_MODE, clamp_px=1000.0)
    clamped = FlowInput(PARAMS, torch.device("cpu"), DEFAULT_CONFIDENCE_MODE, clamp_px=2.0)
    flow, confidence = free.between(current, earlier, (H, W))
    flow_c, confidence_c = clamped.between(current, earlier, (H, W))
    beyond = flow.abs().amax(0) > 2.0
    assert 0 < int(beyond.sum()) < beyond.numel()  # some pixels move more than 2 px, some less
    torch.testing.assert_close(flow_c, flow.clamp(-2.0, 2.0), rtol=0, atol=0)
    assert (confidence_c[beyond] == 0).all()
    torch.testing.assert_close(confidence_c[~beyond], confidence[~beyond], rtol=0, atol=0)
