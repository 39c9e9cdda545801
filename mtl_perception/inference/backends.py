"""Inference backends behind one interface: PyTorch, ONNX Runtime, TensorRT, and `auto` selection.

Every backend takes raw inputs (image RGB 0..255, flow px + confidence) on its device and returns
{"depth": float32 (N,1,H,W) metres, "semantic"/"motion": uint8 (N,H,W) class ids} on the same device.
ONNX Runtime and TensorRT run the static batch-1 graph written by `export.py`; a batch of N is run
sample by sample. The backends live in torch_backend.py, onnxruntime_backend.py, tensorrt_backend.py;
this module opens a model on one of them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from . import engine_cache
from .base import Backend, default_cache_dir
from .export import export_onnx, model_from_source, read_onnx_metadata
from .onnxruntime_backend import OnnxRuntimeBackend
from .tensorrt_backend import TensorRTBackend
from .torch_backend import TorchBackend

LOG = logging.getLogger("mtl_perception.inference")
__all__ = ["Backend", "OnnxRuntimeBackend", "TensorRTBackend", "TorchBackend", "create_backend"]
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# Input size of a model that has none of its own (a checkpoint, the untrained fallback): TI's 384 x 768.
DEFAULT_INPUT_SIZE = (384, 768)


class BackendError(ValueError):
    """A backend failed to start for a reason of its own (a library error, a missing API, a driver error)."""


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
        except Exception as exc:  # noqa: BLE001 - a backend fails in its own ways (AttributeError, ...)
            if backend != "auto":
                if isinstance(exc, ValueError):
                    raise
                raise BackendError(
                    f"backend {choice!r} cannot run {path or f'a random {preset}'} on {device} "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
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
