"""ONNX Runtime backend: CPU, or CUDA with IO bindings made once and run on a stream ordered with torch's."""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import Backend
from .export import onnx_input_contract, read_onnx_metadata

LOG = logging.getLogger("mtl_perception.inference")
CUDA_PROVIDER = "CUDAExecutionProvider"


def installed_onnxruntime_distributions() -> list[str]:
    """Which of the distributions that provide the ``onnxruntime`` module are installed."""
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def _shadowing_hint() -> str:
    if len(installed_onnxruntime_distributions()) < 2:
        return "install onnxruntime-gpu"
    return (
        "both onnxruntime and onnxruntime-gpu are installed and share one module, so the CPU build can "
        "shadow the GPU one: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
    )


def open_session(onnx_path: Path, providers: list, options=None):
    """An InferenceSession that really runs on the first requested provider, or ValueError saying why not.

    ONNX Runtime falls back to the CPU with only a log line when a requested provider is not compiled in
    or its CUDA/cuDNN libraries fail to load; ``session.get_providers()`` (what was really loaded, unlike
    ``get_available_providers()``, what was compiled in) tells.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise ValueError(f"{onnx_path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from exc
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    loaded = session.get_providers()
    if wanted not in loaded:
        hint = _shadowing_hint() if wanted == CUDA_PROVIDER else f"check the {wanted} installation"
        raise ValueError(
            f"{onnx_path}: onnxruntime {ort.__version__} was asked for {wanted} but loaded only {loaded} "
            f"(it would silently run on the CPU; its log above says which library failed to load); {hint}"
        )
    return session


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on CPU, or CUDA with IO binding on torch tensors so data never leaves the GPU.

    On CUDA the session runs on a stream of its own (``user_compute_stream``; ORT ignores stream 0, the
    legacy default stream), ordered against the caller's stream with ``wait_stream``; the IO binding and
    the static input/output buffers are made once; ``disable_synchronize_execution_providers`` keeps
    ``run_with_iobinding`` from waiting for the GPU, so a frame costs no host sync here.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        device: torch.device,
        input_size: tuple[int, int] | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        onnx_path = Path(onnx_path)
        config, spec = read_onnx_metadata(onnx_path)
        size = tuple(spec["input_size"])
        if input_size is not None and tuple(input_size) != size:
            raise ValueError(
                f"{onnx_path}: exported for {size[0]}x{size[1]}, requested {input_size[0]}x"
                f"{input_size[1]}; re-export with export_model --height/--width"
            )
        super().__init__(config, device, size, contract=onnx_input_contract(onnx_path, config, spec))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.output_specs = spec["outputs"]
        self.stream: torch.cuda.Stream | None = None
        if self.device.type == "cuda":
            if CUDA_PROVIDER not in ort.get_available_providers():
                raise ValueError(f"onnxruntime: {CUDA_PROVIDER} is not available ({_shadowing_hint()})")
            self.stream = torch.cuda.Stream(self.device)
            cuda_options = {
                "device_id": self.device.index,
                "user_compute_stream": str(self.stream.cuda_stream),
            }
            providers = [(CUDA_PROVIDER, cuda_options), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = open_session(onnx_path, providers, options)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs() if o.name in self.tasks]
        if self.device.type == "cuda":
            self._bind_cuda(spec)
        self.name = f"onnxruntime-{self.device.type}-fp32"

    def _bind_cuda(self, spec: dict) -> None:
        """One IO binding for the life of the backend, on static device buffers."""
        import onnxruntime as ort

        index = self.device.index or 0
        self.binding = self.session.io_binding()
        self.static_inputs: dict[str, Tensor] = {}
        self.static_outputs: dict[str, Tensor] = {}
        for name in self.input_names:
            shape = spec["inputs"][name]["shape"]
            buffer = torch.empty(shape, dtype=torch.float32, device=self.device)
            self.binding.bind_input(name, "cuda", index, np.float32, list(shape), buffer.data_ptr())
            self.static_inputs[name] = buffer
        for name in self.output_names:
            shape = self.output_specs[name]["shape"]
            dtype = torch.float32 if self.output_specs[name]["dtype"] == "float32" else torch.int32
            buffer = torch.empty(shape, dtype=dtype, device=self.device)
            np_dtype = np.float32 if dtype == torch.float32 else np.int32
            self.binding.bind_output(name, "cuda", index, np_dtype, list(shape), buffer.data_ptr())
            self.static_outputs[name] = buffer
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def _infer(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        per_sample = [
            self._run_one(image[i : i + 1], None if flow is None else flow[i : i + 1])
            for i in range(image.shape[0])
        ]
        return {k: torch.cat([s[k] for s in per_sample]) for k in per_sample[0]}

    def _run_one(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        named = {"image": image, "flow": flow}
        if self.device.type == "cuda":
            return self._run_cuda(named)
        feeds = {name: named[name].contiguous().numpy() for name in self.input_names}
        values = self.session.run(self.output_names, feeds)
        raw = {k: torch.from_numpy(v) for k, v in zip(self.output_names, values, strict=True)}
        return {k: v if k == "depth" else v.to(torch.uint8) for k, v in raw.items()}

    def _run_cuda(self, named: dict[str, Tensor | None]) -> dict[str, Tensor]:
        caller = torch.cuda.current_stream(self.device)
        for name, buffer in self.static_inputs.items():
            buffer.copy_(named[name])  # on the caller's stream, after the kernels that wrote the input
        self.stream.wait_stream(caller)
        self.session.run_with_iobinding(self.binding, self.run_options)
        caller.wait_stream(self.stream)  # the copies below run after ORT's kernels, with no host wait
        # copies: the static buffers are overwritten by the next run
        return {
            name: buffer.clone() if name == "depth" else buffer.to(torch.uint8)
            for name, buffer in self.static_outputs.items()
        }
