"""Eager PyTorch backend: BatchNorm folded, channels_last, optional fp16 and a CUDA graph on CUDA."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from mtl_perception.model import InputContract, MultiTaskNet

from .base import Backend
from .half import inference_model

LOG = logging.getLogger("mtl_perception.inference")


def to_deploy(raw: dict[str, Tensor]) -> dict[str, Tensor]:
    """Raw network outputs -> contract outputs (argmax over classes, uint8 ids, float32 depth)."""
    return {t: v.float() if t == "depth" else v.argmax(dim=1).to(torch.uint8) for t, v in raw.items()}


class TorchBackend(Backend):
    """Eager PyTorch, channels_last by default (oneDNN/cuDNN depthwise convs are ~2x faster in NHWC).

    The network runs as a copy with BatchNorm folded into its convolutions (in float32, before any cast:
    see half.py), so the caller's model is never moved or cast. On CUDA: optionally fp16, a CUDA graph
    for the fixed batch-1 shape, and ``torch.backends.cudnn.benchmark`` on (the input size is fixed, so
    cuDNN's autotuning runs once). The network may use TF32 convolutions (PyTorch's default for cuDNN):
    it is trained in float32 and deployed in fp16 anyway; the flow forces IEEE float32 for itself.
    """

    def __init__(
        self,
        model: MultiTaskNet,
        device: torch.device,
        precision: str = "fp32",
        input_size: tuple[int, int] = (384, 768),
        channels_last: bool | None = None,
        cuda_graphs: bool | None = None,
        contract: InputContract | None = None,
    ) -> None:
        super().__init__(model.config, device, input_size, contract=contract)
        cuda = device.type == "cuda"
        if precision == "fp16" and not cuda:
            raise ValueError("precision fp16: the PyTorch backend supports fp16 only on CUDA")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.memory_format = torch.contiguous_format if channels_last is False else torch.channels_last
        self.model = inference_model(model, self.device, self.dtype, self.memory_format)
        if cuda:
            torch.backends.cudnn.benchmark = True
        self.use_graphs = cuda if cuda_graphs is None else bool(cuda_graphs and cuda)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_in: list[Tensor] = []
        self._static_out: dict[str, Tensor] = {}
        self.name = f"torch-{device.type}-{precision}" + ("-cudagraph" if self.use_graphs else "")

    def _prepare(self, x: Tensor | None) -> Tensor | None:
        return None if x is None else x.to(dtype=self.dtype, memory_format=self.memory_format)

    def _eager(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        return to_deploy(self.model(self._prepare(image), self._prepare(flow)))

    def _infer(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        if not self.use_graphs or image.shape[0] != 1:
            return self._eager(image, flow)
        if self._graph is None:
            self._capture(image, flow)
        self._static_in[0].copy_(image)
        if flow is not None:
            self._static_in[1].copy_(flow)
        self._graph.replay()
        return {k: v.clone() for k, v in self._static_out.items()}  # the graph overwrites them next call

    def _capture(self, image: Tensor, flow: Tensor | None) -> None:
        """Warm up on a side stream (cuDNN autotuning, allocator), then capture one batch-1 forward."""
        self._static_in = [image.clone()] + ([flow.clone()] if flow is not None else [])
        static_flow = self._static_in[1] if flow is not None else None
        with torch.cuda.device(self.device):  # torch.cuda.graph captures on the current device
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._eager(self._static_in[0], static_flow)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._static_out = self._eager(self._static_in[0], static_flow)
        self._graph = graph
        LOG.info("%s: captured a CUDA graph for %s", self.name, tuple(image.shape))
