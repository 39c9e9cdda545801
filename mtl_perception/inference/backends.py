"""Inference backends behind one interface: PyTorch, ONNX Runtime, TensorRT, and `auto` selection.

Every backend takes raw inputs (image RGB 0..255, flow px + confidence) on its device and returns
{"depth": float32 (N,1,H,W) metres, "semantic"/"motion": uint8 (N,H,W) class ids} on the same device.
ONNX Runtime and TensorRT run the static batch-1 graph written by `export.py`; a batch of N is run
sample by sample.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mtl_perception.model import ModelConfig, MultiTaskNet

from . import engine_cache
from .export import export_onnx, model_from_source, read_onnx_metadata

LOG = logging.getLogger("mtl_perception.inference")
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# Input size of a model that has none of its own (a checkpoint, the untrained fallback): TI's 384 x 768.
DEFAULT_INPUT_SIZE = (384, 768)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda:0 when CUDA is available, else cpu; any other value must be a usable cpu/cuda device.

    The one place ``auto`` is resolved (node, demo, flow dataset); ValueError names the bad value.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a torch device: {error}") from error
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine")
    return resolved


def default_cache_dir() -> Path:
    """$MTL_PERCEPTION_CACHE, else ~/.cache/mtl_perception (exported ONNX files and TensorRT engines)."""
    return Path(os.environ.get("MTL_PERCEPTION_CACHE", Path.home() / ".cache" / "mtl_perception"))


class Backend(ABC):
    """Common interface and input validation; subclasses implement `_infer` on validated inputs."""

    name: str = "backend"

    def __init__(self, config: ModelConfig, device: torch.device, input_size: tuple[int, int]) -> None:
        self.config = config
        if device.type == "cuda" and device.index is None:  # pin "cuda" to a concrete device for checks
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.tasks = config.tasks
        self.streams = config.streams
        self.num_semantic_classes = int(config.num_semantic_classes)

    def run(
        self, image: Tensor, flow: Tensor | None = None, *, check_finite: bool = True
    ) -> dict[str, Tensor]:
        """Validate, infer. `flow` is required iff the network has a flow stream (ignored otherwise).

        NaN/Inf inputs raise instead of silently producing NaN depth. The scan costs one device sync on
        CUDA, so a caller whose inputs are finite by construction and that checks the outputs (the
        pipeline: image from uint8, outputs checked after its one download) passes check_finite=False.
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
            for name, x in (("image", image), ("flow", flow)):
                if x is not None and not bool(torch.isfinite(x).all()):
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


def _to_deploy(raw: dict[str, Tensor]) -> dict[str, Tensor]:
    """Raw network outputs -> contract outputs (argmax over classes, uint8 ids, float32 depth)."""
    return {t: v.float() if t == "depth" else v.argmax(dim=1).to(torch.uint8) for t, v in raw.items()}


class TorchBackend(Backend):
    """Eager PyTorch, channels_last by default (oneDNN/cuDNN depthwise convs are ~2x faster in NHWC);
    on CUDA optionally fp16, and a CUDA graph for the fixed batch-1 shape."""

    def __init__(
        self,
        model: MultiTaskNet,
        device: torch.device,
        precision: str = "fp32",
        input_size: tuple[int, int] = (384, 768),
        channels_last: bool | None = None,
        cuda_graphs: bool | None = None,
    ) -> None:
        super().__init__(model.config, device, input_size)
        cuda = device.type == "cuda"
        if precision == "fp16" and not cuda:
            raise ValueError("precision fp16: the PyTorch backend supports fp16 only on CUDA")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.memory_format = torch.contiguous_format if channels_last is False else torch.channels_last
        self.model = model.eval().to(device=device, dtype=self.dtype, memory_format=self.memory_format)
        self.use_graphs = cuda if cuda_graphs is None else bool(cuda_graphs and cuda)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_in: list[Tensor] = []
        self._static_out: dict[str, Tensor] = {}
        self.name = f"torch-{device.type}-{precision}" + ("-cudagraph" if self.use_graphs else "")

    def _prepare(self, x: Tensor | None) -> Tensor | None:
        return None if x is None else x.to(dtype=self.dtype, memory_format=self.memory_format)

    def _eager(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        return _to_deploy(self.model(self._prepare(image), self._prepare(flow)))

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


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on CPU, or CUDA with IO binding on torch tensors so data never leaves the GPU."""

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
        super().__init__(config, device, size)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(
                    "onnxruntime: CUDAExecutionProvider is not available (install onnxruntime-gpu)"
                )
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:
            raise ValueError(
                f"{onnx_path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})"
            ) from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs() if o.name in self.tasks]
        self.output_specs = spec["outputs"]
        self.name = f"onnxruntime-{device.type}-fp32"

    def _infer(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        per_sample = [
            self._run_one(image[i : i + 1], None if flow is None else flow[i : i + 1])
            for i in range(image.shape[0])
        ]
        return {k: torch.cat([s[k] for s in per_sample]) for k in per_sample[0]}

    def _feeds(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        named = {"image": image, "flow": flow}
        return {name: named[name].contiguous() for name in self.input_names}

    def _run_one(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        feeds = self._feeds(image, flow)
        if self.device.type != "cuda":
            values = self.session.run(self.output_names, {k: v.numpy() for k, v in feeds.items()})
            raw = {k: torch.from_numpy(v) for k, v in zip(self.output_names, values, strict=True)}
        else:
            raw = self._run_cuda(feeds)
        return {k: v if k == "depth" else v.to(torch.uint8) for k, v in raw.items()}

    def _run_cuda(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        binding = self.session.io_binding()
        index = self.device.index or 0
        for name, tensor in feeds.items():
            binding.bind_input(name, "cuda", index, np.float32, list(tensor.shape), tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            spec = self.output_specs[name]
            dtype = torch.float32 if spec["dtype"] == "float32" else torch.int32
            outputs[name] = torch.empty(spec["shape"], dtype=dtype, device=self.device)
            binding.bind_output(
                name,
                "cuda",
                index,
                np.float32 if dtype == torch.float32 else np.int32,
                spec["shape"],
                outputs[name].data_ptr(),
            )
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch kernels are complete
        self.session.run_with_iobinding(binding)
        return outputs


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
        if model_path.suffix == ".engine":
            stored = engine_cache.check_engine_for_runtime(model_path, runtime_key)
            engine_path = model_path
            precision = stored.get("precision", precision)
        else:
            stored, engine_path = self._cached_engine(
                model_path, runtime_key, precision, cache_dir, workspace_bytes
            )
        config = ModelConfig.from_dict(stored["config"])
        size = tuple(stored["input_size"])
        if input_size is not None and tuple(input_size) != size:
            raise ValueError(
                f"{engine_path}: built for {size[0]}x{size[1]}, requested {input_size[0]}x{input_size[1]}"
            )
        super().__init__(config, device, size)
        plan = engine_path.read_bytes()
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ValueError(
                f"{engine_path}: TensorRT could not deserialise the engine (corrupt or incompatible)"
            )
        self.context = self.engine.create_execution_context()
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
                self.outputs[name] = torch.empty(shape, dtype=dtype, device=device)
                self.context.set_tensor_address(name, self.outputs[name].data_ptr())
        self.name = f"tensorrt-cuda-{precision}"

    def _cached_engine(self, onnx_path: Path, runtime_key: dict, precision: str, cache_dir, workspace_bytes):
        config, spec = read_onnx_metadata(onnx_path)
        size = tuple(spec["input_size"])
        key = engine_cache.engine_key(
            engine_cache.sha256_file(onnx_path),
            runtime_key["tensorrt_version"],
            runtime_key["gpu_name"],
            runtime_key["compute_capability"],
            precision,
            {name: s["shape"] for name, s in spec["inputs"].items()},
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
            plan = self._build(onnx_path, precision, workspace_bytes)
            engine_cache.store_engine(
                engine_path, plan, key, {"config": config.to_dict(), "input_size": list(size)}
            )
            LOG.warning("TensorRT: engine built and cached at %s", engine_path)
        else:
            LOG.info("TensorRT: %s", decision.reason)
        return engine_cache.read_key(engine_cache.key_path_for(engine_path)), engine_path

    def _build(self, onnx_path: Path, precision: str, workspace_bytes: int) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        major = int(trt.__version__.split(".")[0])
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"{onnx_path}: TensorRT ONNX parser failed: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ValueError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see TensorRT log)")
        return bytes(plan)

    def _infer(self, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
        results = []
        stream = torch.cuda.current_stream(self.device)
        for i in range(image.shape[0]):
            named = {
                "image": image[i : i + 1].contiguous(),
                "flow": None if flow is None else flow[i : i + 1].contiguous(),
            }
            for name in self.inputs:
                self.context.set_tensor_address(name, named[name].data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"{self.name}: execute_async_v3 failed")
            results.append(
                {
                    t: self.outputs[t].clone() if t == "depth" else self.outputs[t].to(torch.uint8)
                    for t in self.tasks
                }
            )
        return {k: torch.cat([r[k] for r in results]) for k in results[0]}


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _ort_cuda_available() -> bool:
    if not _module_available("onnxruntime"):
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _model_kind(model_path: Path | None) -> str:
    if model_path is None:
        return "random"
    suffix = model_path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in (".onnx", ".engine"):
        return suffix[1:]
    raise ValueError(f"{model_path}: unknown model file type (expected .pt checkpoint, .onnx or .engine)")


def exported_onnx(
    model_path: Path | None, preset: str, seed: int, input_size: tuple[int, int], cache_dir: Path
) -> Path:
    """Export a checkpoint (or seeded random init) to ONNX once, cached by content + size."""
    h, w = input_size
    if model_path is None:
        name = f"{preset}-seed{seed}-{h}x{w}.onnx"
    else:
        digest = engine_cache.sha256_file(model_path)[:16]
        name = f"{model_path.stem}-{digest}-{h}x{w}.onnx"
    out = cache_dir / "onnx" / name
    if out.is_file():
        problem = _cached_onnx_problem(out)
        if problem is None:
            LOG.info("using cached ONNX export %s", out)
            return out
        # a half-copied or damaged cache file must not send every later start to the torch fallback
        LOG.warning("cached ONNX export %s is unusable (%s); exporting it again", out, problem)
    model, origin = model_from_source(model_path, preset, seed)
    LOG.info("exporting %s to %s", origin, out)
    return export_onnx(model, out, h, w, source=origin, force=True)


def _cached_onnx_problem(path: Path) -> str | None:
    """Why a cached export cannot be used (unreadable, no metadata, an invalid graph), or None."""
    import onnx

    try:
        read_onnx_metadata(path)
        onnx.checker.check_model(str(path))
    except Exception as exc:  # any failure means: rebuild it
        return f"{type(exc).__name__}: {exc}"
    return None


def create_backend(
    model_path: str | os.PathLike | None,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    input_size: tuple[int, int] | None = None,
    preset: str = "ti",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Backend:
    """Open a model (.pt checkpoint, .onnx, .engine, or None = seeded random init of `preset`) on a backend.

    `input_size` None: an exported model's own size, else `DEFAULT_INPUT_SIZE`; a size that an exported
    model (.onnx, .engine) was not made for raises. `device` may be `auto` (`resolve_device`).
    `auto` tries TensorRT -> ONNX Runtime CUDA -> PyTorch CUDA on a CUDA device, and ONNX Runtime CPU ->
    PyTorch CPU on the CPU, skipping what is not installed or cannot run this file, and logs the choice.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = resolve_device(device)
    path = Path(model_path) if model_path is not None else None
    kind = _model_kind(path)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    _check_model_file(path, kind)  # a bad file is the user's error: raise now, never fall back around it
    if input_size is None and kind not in ("onnx", "engine"):  # exported files bring their own size
        input_size = DEFAULT_INPUT_SIZE
    if input_size is not None:
        input_size = (int(input_size[0]), int(input_size[1]))
        if min(input_size) <= 0 or input_size[0] % 16 or input_size[1] % 16:
            raise ValueError(f"input_size must be positive multiples of 16 (H, W), got {input_size}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cuda = device.type == "cuda"

    candidates = (
        [backend]
        if backend != "auto"
        else (["tensorrt", "onnxruntime", "torch"] if cuda else ["onnxruntime", "torch"])
    )
    reasons: list[str] = []
    for choice in candidates:
        why_not = _unsuitable(choice, kind, cuda, precision)
        if why_not:
            if backend != "auto":
                raise ValueError(f"backend {choice!r}: {why_not}")
            reasons.append(f"{choice}: {why_not}")
            continue
        try:
            created = _create(choice, path, kind, device, precision, input_size, preset, seed, cache)
        except Exception as exc:
            if backend != "auto":
                raise
            LOG.warning("auto: %s failed (%s: %s); trying the next backend", choice, type(exc).__name__, exc)
            reasons.append(f"{choice}: failed ({exc})")
            continue
        skipped = f" (skipped: {'; '.join(reasons)})" if reasons else ""
        LOG.info(
            "backend %s chose %s for %s on %s%s",
            backend,
            created.name,
            path or f"random {preset}",
            device,
            skipped,
        )
        return created
    raise ValueError(f"no backend can run {path or 'a random init'} on {device}: " + "; ".join(reasons))


def fixed_input_size(model_path: str | os.PathLike | None) -> tuple[int, int] | None:
    """(H, W) an exported model was made for (ONNX metadata, engine key file); None for a checkpoint or None.

    A checkpoint (and the untrained fallback) runs at any multiple of 16, so only its caller's size counts.
    """
    if model_path is None:
        return None
    path = Path(model_path)
    kind = _model_kind(path)
    if kind == "onnx":
        _, spec = read_onnx_metadata(path)
        stored = spec
    elif kind == "engine":
        key_path = engine_cache.key_path_for(path)
        try:
            stored = engine_cache.read_key(key_path)
        except FileNotFoundError as error:
            raise ValueError(f"{path}: no key file {key_path.name}; cannot tell its input size") from error
    else:
        return None
    size = stored.get("input_size")
    if not isinstance(size, list) or len(size) != 2:
        raise ValueError(f"{path}: records no input_size [H, W] (found {size!r})")
    return int(size[0]), int(size[1])


def _check_model_file(path: Path | None, kind: str) -> None:
    """Fail early, naming the file, when a checkpoint or ONNX file is missing, corrupt or not ours."""
    if kind == "checkpoint":
        from mtl_perception.model.checkpoint import read_checkpoint

        read_checkpoint(path)
    elif kind == "onnx":
        read_onnx_metadata(path)


def _unsuitable(choice: str, kind: str, cuda: bool, precision: str) -> str | None:
    """Why `choice` cannot run this model kind/device/precision, or None if it can."""
    if choice == "tensorrt":
        if not cuda:
            return "needs a CUDA device"
        if not _module_available("tensorrt"):
            return "the tensorrt module is not installed"
        return None
    if kind == "engine":
        return "a .engine file needs the tensorrt backend"
    if choice == "onnxruntime":
        if not _module_available("onnxruntime"):
            return "onnxruntime is not installed"
        if cuda and not _ort_cuda_available():
            return "onnxruntime has no CUDAExecutionProvider"
        if precision != "fp32":
            return "the exported graph is fp32 (use tensorrt or torch for fp16)"
        return None
    if kind == "onnx":
        return "an .onnx file needs onnxruntime or tensorrt"
    if precision == "fp16" and not cuda:
        return "fp16 needs CUDA"
    return None


def _create(
    choice: str,
    path: Path | None,
    kind: str,
    device: torch.device,
    precision: str,
    input_size: tuple[int, int] | None,
    preset: str,
    seed: int,
    cache: Path,
) -> Backend:
    if choice == "torch":
        model, _ = model_from_source(path, preset, seed)
        return TorchBackend(model, device, precision, input_size)
    onnx_path = path if kind in ("onnx", "engine") else exported_onnx(path, preset, seed, input_size, cache)
    if choice == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, device, input_size)
    return TensorRTBackend(onnx_path, device, precision, input_size, cache_dir=cache / "engines")
