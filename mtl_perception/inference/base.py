"""The interface every inference backend implements, with its input validation."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import Tensor

from mtl_perception.model import InputContract, ModelConfig
from mtl_perception.model.contract import assumed_contract


def default_cache_dir() -> Path:
    """$MTL_PERCEPTION_CACHE, else ~/.cache/mtl_perception (exported ONNX files and TensorRT engines)."""
    return Path(os.environ.get("MTL_PERCEPTION_CACHE", Path.home() / ".cache" / "mtl_perception"))


class Backend(ABC):
    """Common interface and input validation; subclasses implement `_infer` on validated inputs."""

    name: str = "backend"

    def __init__(
        self,
        config: ModelConfig,
        device: torch.device,
        input_size: tuple[int, int],
        contract: InputContract | None = None,
    ) -> None:
        """``contract``: the inputs the network was trained on (the model file's); None: the project's
        flow defaults at ``input_size`` (an untrained network, or one built in code)."""
        self.config = config
        if device.type == "cuda" and device.index is None:  # pin "cuda" to a concrete device for checks
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.contract = contract if contract is not None else assumed_contract(config, self.input_size)
        self.tasks = config.tasks
        self.streams = config.streams
        self.num_semantic_classes = int(config.num_semantic_classes)

    def run(
        self, image: Tensor, flow: Tensor | None = None, *, check_finite: bool = True
    ) -> dict[str, Tensor]:
        """Validate, infer. `flow` is required iff the network has a flow stream (ignored otherwise).

        NaN/Inf inputs raise instead of silently producing NaN depth. The scan costs one device sync on
        CUDA (both inputs read at once), so a caller whose inputs are finite by construction and that
        checks the outputs (the pipeline: image from uint8, outputs checked with its one download)
        passes check_finite=False.
        """
        self._check("image", image)
        if "flow" in self.streams:
            if flow is None:
                raise ValueError(
                    f"flow: {self.name} needs a flow input of shape {self._expected(image.shape[0])}"
                )
            self._check("flow", flow, batch=image.shape[0])
        else:
            flow = None
        if check_finite:
            named = [(name, x) for name, x in (("image", image), ("flow", flow)) if x is not None]
            finite = torch.stack([torch.isfinite(x).all() for _, x in named]).tolist()  # one read, one sync
            for (name, _), ok in zip(named, finite, strict=True):
                if not ok:
                    raise ValueError(f"{name}: contains NaN or Inf values")
        with torch.inference_mode():
            return self._infer(image, flow)

    def _expected(self, batch: int | str = "N") -> str:
        return f"({batch}, 3, {self.input_size[0]}, {self.input_size[1]}) float32 on {self.device}"

    def _check(self, name: str, x: object, batch: int | None = None) -> None:
        expected = self._expected(batch if batch is not None else "N")
        if not isinstance(x, Tensor):
            raise ValueError(f"{name}: expected a tensor {expected}, got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, *self.input_size) or x.shape[0] < 1:
            raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")
        if batch is not None and x.shape[0] != batch:
            raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")
        if x.dtype != torch.float32:
            raise ValueError(f"{name}: expected dtype float32 ({expected}), got {x.dtype}")
        if x.device.type != self.device.type or (
            self.device.type == "cuda" and x.device.index not in (None, self.device.index)
        ):
            raise ValueError(f"{name}: expected a tensor on {self.device}, got {x.device}")

    @abstractmethod
    def _infer(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        """Validated inputs on the device -> contract outputs on the device."""

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"<{type(self).__name__} {self.name} {h}x{w} tasks={self.tasks}>"
