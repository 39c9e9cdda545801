"""Streaming Farnebäck for a camera node: each new frame is expanded once and reused for two pairs."""

from __future__ import annotations

import logging

import torch

from .api import check_finite
from .confidence import CONFIDENCE_MODES, DEFAULT_CONFIDENCE_MODE, forward_backward_confidence
from .farneback import FarnebackEngine, FrameFeatures
from .params import CUDA_DEFAULTS, OPTFLOW_USE_INITIAL_FLOW, FarnebackParams

LOG = logging.getLogger("mtl_perception.flow")


class StreamingFarneback:
    """Frame-to-frame flow that builds each frame's pyramid + polynomial expansion exactly once.

    ``prepare(gray)`` -> FrameFeatures; ``flow(prev, nxt)`` -> ((2,H,W) flow, (H,W) confidence or None).
    Results equal ``calc_optical_flow_farneback`` on the same pair. A frame of a new size rebuilds the
    per-size constants; mixing features of different sizes raises ValueError.

    ``compile=True`` wraps the per-iteration kernels in ``torch.compile`` (optional; first call pays the
    compile time). ``cuda_graph=True`` (CUDA only) captures the whole coarse-to-fine solve once per
    shape and replays it, removing the per-kernel launch overhead (one flow at 384x768 is ~2,500 kernel
    launches); replays give the eager result. A capture that fails is logged once and the stream runs
    eagerly from then on (``graph_failure`` keeps the reason).
    """

    def __init__(
        self,
        params: FarnebackParams = CUDA_DEFAULTS,
        device="cpu",
        *,
        confidence_mode: str = DEFAULT_CONFIDENCE_MODE,
        compile: bool = False,  # noqa: A002 - mirrors torch.compile
        cuda_graph: bool = False,
    ):
        if confidence_mode not in CONFIDENCE_MODES:
            raise ValueError(f"confidence_mode must be one of {CONFIDENCE_MODES}, got {confidence_mode!r}")
        self.params = params
        self.device = torch.device(device)
        self.confidence_mode = confidence_mode
        self.compile = compile
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda"
        self._engine: FarnebackEngine | None = None
        self._graphs: dict[tuple, tuple] = {}
        self.graph_failure: str | None = None

    def reset(self) -> None:
        """Drop the per-size constants and captured graphs (call when the camera resolution changes)."""
        self._engine = None
        self._graphs.clear()

    @property
    def engine(self) -> FarnebackEngine | None:
        return self._engine

    def prepare(self, gray: torch.Tensor) -> FrameFeatures:
        """(H,W) or (N,1,H,W) grey frame, 0..255 scale, -> its features (one expansion per frame)."""
        if not isinstance(gray, torch.Tensor):
            raise ValueError(f"prepare expects a torch tensor, got {type(gray).__name__}")
        if gray.numel() == 0:
            raise ValueError(f"frame is empty (shape {tuple(gray.shape)})")
        if gray.ndim == 2:
            batch = gray[None, None]
        elif gray.ndim == 4 and gray.shape[1] == 1:
            batch = gray
        else:
            raise ValueError(f"frame must be (H,W) or (N,1,H,W), got shape {tuple(gray.shape)}")
        if not (batch.is_floating_point() or batch.dtype == torch.uint8):
            raise ValueError(f"frame must be float or uint8, got dtype {batch.dtype}")
        check_finite(batch, "frame")  # before the float conversion: a uint8 frame needs no scan (no sync)
        batch = batch.to(device=self.device, dtype=torch.float32)
        h, w = batch.shape[-2:]
        if self._engine is None or self._engine.size != (h, w):
            self.reset()
            self._engine = FarnebackEngine(self.params, h, w, self.device, compile=self.compile)
        feats = self._engine.expand(batch)
        feats.batched = gray.ndim == 4
        return feats

    def flow(
        self,
        prev: FrameFeatures,
        nxt: FrameFeatures,
        confidence: bool = True,
        initial_flow: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flow prev -> nxt in px ((2,H,W), or (N,2,H,W) for batched frames) and confidence in [0, 1]."""
        if prev.size != nxt.size:
            raise ValueError(f"frame features differ in size: prev {prev.size} vs next {nxt.size}")
        if prev.batch != nxt.batch:
            raise ValueError(f"frame features differ in batch size: prev {prev.batch} vs next {nxt.batch}")
        engine = self._engine
        if engine is None or prev.engine_key != engine.key or nxt.engine_key != engine.key:
            current = None if engine is None else engine.size
            raise ValueError(
                f"frame features of size {prev.size} were not made by this stream's current engine "
                f"(current size {current}); call prepare() again after a size change"
            )
        init = None
        if self.params.flags & OPTFLOW_USE_INITIAL_FLOW:
            if initial_flow is None:
                raise ValueError("params set OPTFLOW_USE_INITIAL_FLOW but no initial_flow was given")
            init = initial_flow if initial_flow.ndim == 4 else initial_flow[None]
            if tuple(init.shape) != (prev.batch, 2, *prev.size):
                raise ValueError(f"initial_flow must be (N,2,H,W) = {(prev.batch, 2, *prev.size)}")
            init = init.to(device=self.device, dtype=torch.float32)
        if self.cuda_graph and init is None:
            try:
                out, conf = self._graph_run(prev, nxt, confidence)
            except RuntimeError as error:  # capture refused (an op that syncs, a driver limit): go eager
                self.graph_failure = f"{type(error).__name__}: {error}"
                self.cuda_graph = False
                self._graphs.clear()
                LOG.warning("flow: CUDA graph capture failed (%s); running eagerly", self.graph_failure)
                out, conf = self._run(prev, nxt, confidence, init)
        else:
            out, conf = self._run(prev, nxt, confidence, init)
        if not (prev.batched or nxt.batched):
            return out[0], None if conf is None else conf[0]
        return out, conf

    def _run(self, prev, nxt, confidence, init=None):
        engine = self._engine
        out = engine.flow(prev, nxt, init)
        conf = None
        if confidence and self.confidence_mode == "residual":
            conf = engine.residual_confidence(prev, nxt, out)
        elif confidence:
            conf = forward_backward_confidence(out, engine.flow(nxt, prev))
        return out, conf

    def _graph_run(self, prev, nxt, confidence):
        """Capture (once per shape) and replay the whole solve as one CUDA graph."""
        key = (prev.batch, prev.size, bool(confidence))
        if key not in self._graphs:
            static = [
                [t.clone() for t in prev.expansions],
                [t.clone() for t in nxt.expansions],
            ]

            def run_static():
                sp = FrameFeatures(prev.size, prev.batch, static[0], prev.engine_key)
                sn = FrameFeatures(nxt.size, nxt.batch, static[1], nxt.engine_key)
                return self._run(sp, sn, confidence)

            with torch.cuda.device(self.device):  # torch.cuda.graph captures on the current device
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    for _ in range(2):  # warm-up outside the graph (allocator, cuDNN autotuning)
                        run_static()
                torch.cuda.current_stream(self.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    outputs = run_static()
            self._graphs[key] = (graph, static, outputs)
        graph, static, (out, conf) = self._graphs[key]
        for dst, src in zip(static[0], prev.expansions, strict=True):
            dst.copy_(src)
        for dst, src in zip(static[1], nxt.expansions, strict=True):
            dst.copy_(src)
        graph.replay()
        return out.clone(), None if conf is None else conf.clone()
