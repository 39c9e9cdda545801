"""One camera frame in, depth + semantic + motion out: resize -> Farnebäck flow -> network -> postprocess.

This is the whole per-frame algorithm of the node, kept free of ROS so that the demo, the benchmarks and
the tests run it directly. Tensors stay on the pipeline's device from the upload of the camera frame to
the final download of the outputs: one host->device copy in, one device->host copy out.

Settings. :class:`~mtl_perception.pipeline_config.PipelineConfig` holds every setting; the flow input's
(Farnebäck parameters, confidence, ``flow_dt``, clamp, network size) come from the model's input contract
(``backend.contract``) unless the config overrides them (:attr:`PerceptionPipeline.overrides` lists what).

Flow partner. The network learned flow over a fixed time gap (its contract's partner gap at the
recording's rate: two frames at 17 Hz in TI's Cityscapes data, ``flow_dt = 2/17`` s). The pipeline keeps
the expanded features of the last few processed frames and pairs the current frame with the one whose
stamp is closest to ``stamp - flow_dt``, so the flow's time scale stays the same whatever the camera rate
or the number of frames dropped upstream.

Resets. The history is cleared when the input size or encoding changes, when the stamp does not
increase (a looping bag, a restarted camera) or when the gap to the previous frame exceeds
``reset_gap_factor * flow_dt`` (flow across a long pause is meaningless to the network). The first
frame after a reset is still processed and published, with zero flow and *zero confidence*: zero
confidence is how the flow stream says "no motion evidence" (the same value Farnebäck gives pixels it
could not track), depth and semantics still come from the RGB stream, and every input keeps getting
every output, so exact-time synchronisers downstream never stall. ``PipelineResult.reset`` marks it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mtl_perception.device_io import (
    HostStaging,
    NonFiniteOutputError,  # noqa: F401 - raised by process(); imported from here by the node
    StageTimer,
    download_checked,
)
from mtl_perception.flow import FarnebackParams, FrameFeatures, StreamingFarneback, to_gray
from mtl_perception.flow.codecs import FLOW_PNG_LIMIT_PX
from mtl_perception.flow.cv2_flow import IMPLEMENTATIONS as FLOW_IMPLEMENTATIONS
from mtl_perception.flow.cv2_flow import Cv2StreamingFarneback, choose_implementation
from mtl_perception.pipeline_config import FlowSettings, Override, PipelineConfig

STAGES = ("preprocess", "flow", "network", "postprocess")  # the keys of PipelineResult.timings


@dataclass
class PipelineResult:
    """Host arrays at the output size (network or input resolution)."""

    depth: np.ndarray | None  # (H, W) float32 metres, NaN = invalid (REP 118)
    semantic: np.ndarray | None  # (H, W) uint8 class ids
    motion: np.ndarray | None  # (H, W) uint8, 1 = moving
    flow: np.ndarray | None  # (H, W, 2) float32 pixels at the output size, when requested
    image: np.ndarray | None  # (H, W, 3) uint8 RGB input at the output size, when requested (overlays)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    reset: bool = False  # first frame after a reset: zero flow, zero confidence
    reset_reason: str | None = None
    partner_dt: float | None = None  # seconds between this frame and its flow partner

    @property
    def size(self) -> tuple[int, int]:
        for array in (self.depth, self.semantic, self.motion):
            if array is not None:
                return array.shape[:2]
        raise ValueError("result holds no output")


@dataclass
class _HistoryEntry:
    stamp: float
    features: FrameFeatures


def upload_rgb(image, device: torch.device, staging: HostStaging | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 RGB (numpy or tensor) -> (1, 3, H, W) uint8 on ``device`` (one copy, no conversion).

    The result is a channels-last view of the frame, what :func:`resize_for_network` resizes fastest.
    With ``staging`` a host frame bound for CUDA goes through its pinned buffer as an asynchronous copy;
    a copy from pageable memory would make the host wait for it (one more sync per frame).
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {tuple(image.shape)} {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"zero-size image {tuple(image.shape)}")
    device = torch.device(device)
    if staging is not None and device.type == "cuda" and image.device.type == "cpu":
        image = staging.to_device(image, device)
    return image.to(device).permute(2, 0, 1).unsqueeze(0)


class FlowInput:
    """The network's flow stream, computed one way for the node and the training flow dataset.

    A frame at network size (the output of :func:`resize_for_network`) -> uint8 grey, bit-exact with
    ``cv2.cvtColor`` -> Farnebäck features (:meth:`prepare`, once per frame); a pair of features ->
    flow on the current frame's grid pointing to where each pixel was in the partner frame, with the
    confidence of ``confidence_mode`` (:meth:`pair`). No partner: zero flow and zero confidence. Flow
    beyond ``clamp_px`` (a Farnebäck blow-up; the flow PNG's range by default) is clamped there with
    confidence 0, the same way for the node and the training flow dataset.
    """

    def __init__(
        self,
        params: FarnebackParams,
        device: torch.device,
        confidence_mode: str,
        implementation: str = "torch",
        cuda_graph: bool = True,
        clamp_px: float = FLOW_PNG_LIMIT_PX,
    ) -> None:
        """``implementation``: ``torch`` (the port; what the training flow dataset uses), ``cv2``
        (``cv2.calcOpticalFlowFarneback``, CPU) or ``auto`` (measured at the first frame's size, see
        :func:`mtl_perception.flow.cv2_flow.choose_implementation`)."""
        if implementation not in FLOW_IMPLEMENTATIONS:
            raise ValueError(
                f"flow implementation must be one of {FLOW_IMPLEMENTATIONS}, got {implementation!r}"
            )
        self.device = torch.device(device)
        self.params, self.confidence_mode = params, confidence_mode
        self.cuda_graph, self.clamp_px = cuda_graph, float(clamp_px)
        self.measured_ms: dict[str, float] = {}  # what auto measured, per implementation
        self._decided = implementation != "auto"
        self.implementation = "torch" if implementation == "auto" else implementation
        self.flow = self._stream(self.implementation)

    def _stream(self, implementation: str):
        if implementation == "cv2":
            return Cv2StreamingFarneback(self.params, self.device, confidence_mode=self.confidence_mode)
        # A CUDA graph replays the ~2,500 kernel launches of one flow at once (eager, the flow is bound
        # by Python launch overhead); StreamingFarneback falls back to eager if the capture fails.
        return StreamingFarneback(
            self.params, device=self.device, confidence_mode=self.confidence_mode, cuda_graph=self.cuda_graph
        )

    def reset(self) -> None:
        """Drop the per-size constants (the camera resolution changed); the implementation stays."""
        self.flow.reset()

    def prepare(self, net_image: torch.Tensor) -> FrameFeatures:
        """(1, 3, h, w) float RGB 0..255 at network size -> its Farnebäck features."""
        gray = to_gray(net_image[0].to(torch.uint8), order="rgb")
        if not self._decided:  # auto: once, at the first frame, before any features exist
            self._decided = True
            chosen, self.measured_ms = choose_implementation(
                self.params, self.device, self.confidence_mode, tuple(gray.shape)
            )
            if chosen != self.implementation:
                self.implementation, self.flow = chosen, self._stream(chosen)
        return self.flow.prepare(gray)

    def pair(
        self, current: FrameFeatures, partner: FrameFeatures | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """((2, h, w) flow in px, (h, w) confidence in [0, 1]) of ``current`` towards ``partner``."""
        if partner is None:
            h, w = current.size
            return torch.zeros(2, h, w, device=self.device), torch.zeros(h, w, device=self.device)
        flow, confidence = self.flow.flow(current, partner, confidence=True)
        # a blow-up beyond the clamp keeps its direction's sign but no confidence (device ops, no sync)
        beyond = flow.abs().amax(0) > self.clamp_px
        return flow.clamp(-self.clamp_px, self.clamp_px), confidence.masked_fill(beyond, 0.0)

    def between(self, current_rgb, partner_rgb, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Two (H, W, 3) uint8 RGB frames -> :meth:`pair` at ``size``, through the node's upload + resize."""
        current, partner = (
            self.prepare(resize_for_network(upload_rgb(rgb, self.device), size))
            for rgb in (current_rgb, partner_rgb)
        )
        return self.pair(current, partner)


class PerceptionPipeline:
    """Stateful per-camera pipeline; call :meth:`process` once per frame in stamp order."""

    def __init__(self, backend, config: PipelineConfig | None = None) -> None:
        """``backend``: the network (its ``contract`` is the model's input contract); ``config``: the
        settings (validated here; the model-related ones are the factory's business). ConfigError names
        a bad value."""
        config = config or PipelineConfig()
        config.validate()
        self.config = config
        self.backend = backend
        self.device = torch.device(backend.device)
        self.network_size = tuple(int(v) for v in backend.input_size)
        self.settings: FlowSettings = config.resolve(backend.contract, self.network_size)
        self.flow_params = self.settings.farneback
        self.flow_dt = self.settings.flow_dt
        self.output_size = config.output_size
        self.reset_gap = config.reset_gap_factor * self.flow_dt
        self.uses_flow = "flow" in tuple(getattr(backend, "streams", ("flow", "image")))
        self.flow_input = FlowInput(
            self.flow_params,
            self.device,
            self.settings.confidence,
            config.flow_implementation,
            clamp_px=self.settings.clamp_px,
        )
        self.staging = HostStaging()
        self.history: deque[_HistoryEntry] = deque(maxlen=int(config.max_history))
        self._key: tuple | None = None
        self._last_stamp: float | None = None

    @property
    def overrides(self) -> tuple[Override, ...]:
        """The settings that contradict the model's input contract (empty when it is followed)."""
        return self.settings.overrides

    @property
    def flow_implementation(self) -> str:
        """Which Farnebäck implementation computes the flow stream."""
        return self.flow_input.implementation

    # ----------------------------------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget the history (the next frame gets zero flow)."""
        self.history.clear()
        self._key = None
        self._last_stamp = None

    def warmup(self) -> None:
        """Run two textured frames through every stage, then forget them.

        The first real frame otherwise pays one-off costs (flow kernels per size, backend initialisation,
        allocator growth): seconds on a CPU. The history is left as if nothing had run.
        """
        h, w = self.network_size
        texture = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        for stamp in (0.0, self.flow_dt):
            self.process(texture, stamp, encoding="warmup")
        self.reset()

    def _check_reset(self, key: tuple, stamp: float) -> str | None:
        if self._key is None:
            return "first frame"
        if key != self._key:
            return "image size or encoding changed"
        if stamp <= self._last_stamp:
            return "stamp did not increase (looping bag or restarted source)"
        if stamp - self._last_stamp > self.reset_gap:
            return f"gap {stamp - self._last_stamp:.3f} s > {self.reset_gap:.3f} s"
        return None

    def _partner(self, stamp: float) -> _HistoryEntry | None:
        if not self.history:
            return None
        goal = stamp - self.flow_dt
        return min(self.history, key=lambda entry: abs(entry.stamp - goal))

    # ---------------------------------------------------------------------------------------- frame
    def process(
        self,
        image,
        stamp: float,
        encoding: str = "rgb8",
        *,
        want_flow: bool = False,
        want_image: bool = False,
        timings: dict[str, float] | None = None,
    ) -> PipelineResult:
        """Run one frame (see :meth:`_process`) with the pipeline's GPU as the current device.

        CUDA graph capture and the current stream follow the current device, so a pipeline on cuda:1
        must not run its frames with cuda:0 current.
        """
        options = {"want_flow": want_flow, "want_image": want_image, "timings": timings}
        if self.device.type != "cuda":
            return self._process(image, stamp, encoding, **options)
        with torch.cuda.device(self.device):
            return self._process(image, stamp, encoding, **options)

    @torch.inference_mode()
    def _process(
        self,
        image,
        stamp: float,
        encoding: str = "rgb8",
        *,
        want_flow: bool = False,
        want_image: bool = False,
        timings: dict[str, float] | None = None,
    ) -> PipelineResult:
        """Run one frame. ``image``: (H, W, 3) uint8 RGB numpy array or tensor (any device).

        ``stamp`` is the capture time in seconds; ``encoding`` is the source encoding (a change resets
        the flow history). ``timings`` carries stages measured by the caller (e.g. ``convert``).
        Raises ``NonFiniteOutputError`` when an output is not finite (the frame is rejected and the
        history is left as it was): the one finiteness check per frame, counted on the device and read
        with the single download. On CUDA the frame costs one host sync, that download.
        """
        timer = StageTimer(self.device)
        if timings:
            timer.times.update(timings)
        with timer("preprocess"):
            frame = upload_rgb(image, self.device, self.staging)
            input_size = tuple(frame.shape[-2:])
            net_image = resize_for_network(frame, self.network_size)
        key = (input_size, encoding)
        reason = self._check_reset(key, stamp)
        if reason is not None:
            if self._key is not None and key[0] != self._key[0]:
                self.flow_input.reset()
            self.reset()

        flow_input = None
        flow = None
        partner = None
        features = None
        with timer("flow"):
            if self.uses_flow or want_flow:
                features = self.flow_input.prepare(net_image)
                partner = self._partner(stamp)
                partner_features = None if partner is None else partner.features
                flow, confidence = self.flow_input.pair(features, partner_features)
                flow_input = torch.cat([flow, confidence.unsqueeze(0)], 0).unsqueeze(0)
        with timer("network"):
            # inputs finite by construction (uint8 image, Farnebäck of it): the outputs are checked instead
            outputs = self.backend.run(net_image, flow_input if self.uses_flow else None, check_finite=False)
        with timer("postprocess"):
            device_arrays = self._postprocess(outputs, net_image, flow, input_size, want_flow, want_image)
        # Outside every stage: each stage's CUDA events precede this copy, so reading them waits for nothing.
        arrays = download_checked(device_arrays)
        timer.finish()

        # Only a frame that produced valid outputs enters the history.
        self._key, self._last_stamp = key, stamp
        if features is not None:
            self.history.append(_HistoryEntry(stamp, features))
        return PipelineResult(
            **arrays,
            timings=timer.times,
            reset=reason is not None,
            reset_reason=reason,
            partner_dt=None if partner is None else stamp - partner.stamp,
        )

    def _postprocess(
        self, outputs, net_image, flow, input_size, want_flow, want_image
    ) -> dict[str, torch.Tensor]:
        """Device tensors at the output size, ready for :func:`~mtl_perception.device_io.download_checked`."""
        out_size = self.network_size if self.output_size == "network" else input_size
        resize = tuple(out_size) != tuple(self.network_size)
        device_arrays: dict[str, torch.Tensor] = {}
        depth = outputs.get("depth")
        if depth is not None:
            depth = depth[0, 0].float()
            if resize:
                depth = F.interpolate(depth[None, None], size=out_size, mode="bilinear", align_corners=False)[
                    0, 0
                ]
            device_arrays["depth"] = depth
        for task in ("semantic", "motion"):
            ids = outputs.get(task)
            if ids is not None:
                ids = ids[0]
                if resize:
                    ids = F.interpolate(ids[None, None].float(), size=out_size, mode="nearest")[0, 0]
                device_arrays[task] = ids.to(torch.uint8)
        if want_flow and flow is not None:
            flow_out = flow
            if resize:
                sy, sx = out_size[0] / flow.shape[-2], out_size[1] / flow.shape[-1]
                flow_out = F.interpolate(flow[None], size=out_size, mode="bilinear", align_corners=False)[0]
                # scaled per channel by Python floats: a tensor made from a list is a host->device copy
                flow_out = torch.stack((flow_out[0] * sx, flow_out[1] * sy))
            device_arrays["flow"] = flow_out.permute(1, 2, 0)
        if want_image:
            image = net_image
            if resize:
                image = F.interpolate(net_image, size=out_size, mode="bilinear", align_corners=False)
            device_arrays["image"] = image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)

        return device_arrays


def resize_for_network(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) uint8 or float 0..255 -> (N, 3, h, w) float 0..255: bilinear, antialiased when shrinking,
    in whole grey levels.

    The project's one camera-frame resize: the node's network input and the training flow dataset
    (``training/make_flow_dataset.py``, through :meth:`FlowInput.between`) see identical pixels. On the CPU
    it runs torch's uint8 channels-last kernel (a float input is taken as the whole grey levels it holds):
    ~5-10x faster than in float at 2048x1024 -> 192x384, at most one grey level apart from the float
    result. Elsewhere (CUDA has no uint8 kernel) it resizes in float and rounds.
    """
    h, w = int(size[0]), int(size[1])
    if tuple(image.shape[-2:]) == (h, w):
        return image.float()
    downscale = image.shape[-2] > h or image.shape[-1] > w
    if image.device.type == "cpu":
        if image.dtype != torch.uint8:
            image = image.round().clamp_(0.0, 255.0).to(torch.uint8)
        image = image.contiguous(memory_format=torch.channels_last)  # a no-op for an uploaded frame
        resized = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False, antialias=downscale)
        return resized.float()
    resized = F.interpolate(
        image.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=downscale
    )
    # Rounded to whole grey levels: the same values an offline uint8 resize of the frame gives.
    return resized.round_().clamp_(0.0, 255.0)
