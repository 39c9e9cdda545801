"""TensorRT backend: an engine built from the exported ONNX, cached with a key (engine_cache.py).

Precision, per installed version (see :func:`build_settings`): TensorRT 11 removed the weak-typing
builder flags (``BuilderFlag.FP16`` and the rest; every network is strongly typed), so fp16 there is
built from a float16 copy of the graph (half.py). TensorRT 8-10 keep the proven path: the float32 graph
with ``BuilderFlag.FP16``. Inference runs on a stream of the backend's own, ordered against the caller's
with ``wait_stream`` (enqueueing on the legacy default stream makes TensorRT synchronise on every call).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mtl_perception.model import ModelConfig

from . import engine_cache
from .base import Backend, default_cache_dir
from .export import onnx_input_contract, read_onnx_metadata
from .half import fp16_onnx

LOG = logging.getLogger("mtl_perception.inference")


@dataclass(frozen=True)
class BuildSettings:
    """How to build an engine of one precision with the installed TensorRT."""

    graph_precision: str  # "fp32": parse the exported graph; "fp16": parse its float16 copy
    network_flags: int  # INetworkDefinition creation flags
    builder_flags: tuple[str, ...]  # names of trt.BuilderFlag members to set


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def build_settings(trt, precision: str) -> BuildSettings:
    """The build recipe for ``precision`` on this ``trt`` module (TensorRT 8, 10 or 11+).

    TensorRT >= 11 (or any build whose BuilderFlag lacks FP16): strongly typed, the precision comes from
    the graph's types. TensorRT 10: explicit batch is implicit, FP16 by flag. TensorRT < 10: the
    EXPLICIT_BATCH creation flag, FP16 by flag.
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    major = trt_major(trt)
    creation = trt.NetworkDefinitionCreationFlag
    if major >= 11 or not hasattr(trt.BuilderFlag, "FP16"):
        strongly_typed = getattr(creation, "STRONGLY_TYPED", None)  # accepted and ignored on 11
        flags = 0 if strongly_typed is None else 1 << int(strongly_typed)
        return BuildSettings(graph_precision=precision, network_flags=flags, builder_flags=())
    flags = 0 if major >= 10 else 1 << int(creation.EXPLICIT_BATCH)
    return BuildSettings(
        graph_precision="fp32", network_flags=flags, builder_flags=("FP16",) if precision == "fp16" else ()
    )


def _trt_torch_dtype(trt, dtype) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    for name, torch_dtype in (("int64", torch.int64), ("uint8", torch.uint8)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = torch_dtype
    return table[dtype]


class TensorRTBackend(Backend):
    """TensorRT engine built from the exported ONNX (fp16 by default), cached with a key (engine_cache.py)."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: torch.device,
        precision: str = "fp16",
        input_size: tuple[int, int] | None = None,
        cache_dir: str | os.PathLike | None = None,
        workspace_bytes: int = 1 << 30,
    ) -> None:
        import tensorrt as trt

        if device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError("tensorrt: needs a CUDA device")
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        model_path = Path(model_path)
        index = device.index if device.index is not None else torch.cuda.current_device()
        device = torch.device("cuda", index)
        runtime_key = {
            "tensorrt_version": trt.__version__,
            "gpu_name": torch.cuda.get_device_name(index),
            "compute_capability": list(torch.cuda.get_device_capability(index)),
        }
        # Build, deserialise and create the context on the backend's GPU (TensorRT uses the current one).
        with torch.cuda.device(index):
            if model_path.suffix == ".engine":
                stored = engine_cache.check_engine_for_runtime(model_path, runtime_key)
                engine_path = model_path
                precision = stored.get("precision", precision)
            else:
                stored, engine_path = self._cached_engine(
                    model_path, runtime_key, precision, cache_dir, workspace_bytes
                )
            config = ModelConfig.from_dict(stored["config"])
            contract = engine_cache.key_input_contract(engine_path, stored)
            size = tuple(stored["input_size"])
            if input_size is not None and tuple(input_size) != size:
                raise ValueError(
                    f"{engine_path}: built for {size[0]}x{size[1]}, requested {input_size[0]}x{input_size[1]}"
                )
            super().__init__(config, device, size, contract=contract)
            self._load(engine_path)
        self.name = f"tensorrt-cuda-{precision}"

    def _load(self, engine_path: Path) -> None:
        trt = self.trt
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ValueError(
                f"{engine_path}: TensorRT could not deserialise the engine (corrupt or incompatible)"
            )
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        self.inputs: dict[str, tuple[int, ...]] = {}
        self.outputs: dict[str, Tensor] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs[name] = shape
                self.context.set_input_shape(name, shape)
            else:
                dtype = _trt_torch_dtype(trt, self.engine.get_tensor_dtype(name))
                self.outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self.context.set_tensor_address(name, self.outputs[name].data_ptr())

    def _cached_engine(self, onnx_path: Path, runtime_key: dict, precision: str, cache_dir, workspace_bytes):
        config, spec = read_onnx_metadata(onnx_path)
        contract = onnx_input_contract(onnx_path, config, spec)
        size = tuple(spec["input_size"])
        key = engine_cache.engine_key(
            engine_cache.sha256_file(onnx_path),
            runtime_key["tensorrt_version"],
            runtime_key["gpu_name"],
            runtime_key["compute_capability"],
            precision,
            {name: s["shape"] for name, s in spec["inputs"].items()},
            contract.to_dict(),
        )
        engine_path, _ = engine_cache.cache_paths(
            cache_dir or default_cache_dir(), onnx_path, precision, size
        )
        decision = engine_cache.decide(engine_path, key)
        if decision.rebuild:
            LOG.warning(
                "TensorRT: building a %s engine for %s (%s); this can take several minutes",
                precision,
                onnx_path,
                decision.reason,
            )
            plan = self._build(onnx_path, precision, workspace_bytes, engine_path)
            engine_cache.store_engine(
                engine_path, plan, key, {"config": config.to_dict(), "input_size": list(size)}
            )
            LOG.warning("TensorRT: engine built and cached at %s", engine_path)
        else:
            LOG.info("TensorRT: %s", decision.reason)
        return engine_cache.read_key(engine_cache.key_path_for(engine_path)), engine_path

    def _build(self, onnx_path: Path, precision: str, workspace_bytes: int, engine_path: Path) -> bytes:
        trt = self.trt
        settings = build_settings(trt, precision)
        graph = onnx_path
        if settings.graph_precision == "fp16":
            graph = fp16_onnx(onnx_path, engine_path.with_name(engine_path.stem + ".fp16.onnx"))
        builder = trt.Builder(self.logger)
        network = builder.create_network(settings.network_flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(graph)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"{graph}: TensorRT ONNX parser failed: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        for flag in settings.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ValueError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see TensorRT log)")
        return bytes(plan)

    def _infer(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        results = []
        caller = torch.cuda.current_stream(self.device)
        for i in range(image.shape[0]):
            named = {
                "image": image[i : i + 1].contiguous(),
                "flow": None if flow is None else flow[i : i + 1].contiguous(),
            }
            for name in self.inputs:
                self.context.set_tensor_address(name, named[name].data_ptr())
            self.stream.wait_stream(caller)  # inputs are written by the caller's kernels
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.name}: execute_async_v3 failed")
            caller.wait_stream(self.stream)  # the copies below (and input reuse) wait for the engine
            results.append(
                {
                    t: self.outputs[t].clone() if t == "depth" else self.outputs[t].to(torch.uint8)
                    for t in self.tasks
                }
            )
        return {k: torch.cat([r[k] for r in results]) for k in results[0]}
