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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mtl_perception.device import resolve_device
from mtl_perception.model import InputContract
from mtl_perception.model.checkpoint import checkpoint_contract, read_checkpoint
from mtl_perception.model.contract import DEFAULT_NETWORK_SIZE

from . import engine_cache
from .base import Backend, default_cache_dir
from .export import export_onnx, model_from_source, onnx_input_contract, read_onnx_metadata
from .onnxruntime_backend import OnnxRuntimeBackend
from .tensorrt_backend import TensorRTBackend
from .torch_backend import TorchBackend

LOG = logging.getLogger("mtl_perception.inference")
__all__ = ["Backend", "OnnxRuntimeBackend", "TensorRTBackend", "TorchBackend", "create_backend"]
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# Input size of the untrained network (and of a format-1 checkpoint that records none): TI's 384 x 768.
DEFAULT_INPUT_SIZE = DEFAULT_NETWORK_SIZE


class BackendError(ValueError):
    """A backend failed to start for a reason of its own (a library error, a missing API, a driver error)."""


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
    model, origin, contract = model_from_source(model_path, preset, seed, input_size=input_size)
    LOG.info("exporting %s to %s", origin, out)
    return export_onnx(model, out, contract=contract, height=h, width=w, source=origin, force=True)


def _cached_onnx_problem(path: Path) -> str | None:
    """Why a cached export cannot be used (unreadable, no metadata, an invalid graph), or None."""
    import onnx

    try:
        _, spec = read_onnx_metadata(path)
        onnx.checker.check_model(str(path))
    except Exception as exc:  # any failure means: rebuild it
        return f"{type(exc).__name__}: {exc}"
    if "input_contract" not in spec:
        return "exported before models carried their input contract"
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
    facts: ModelFile | None = None,
) -> Backend:
    """Open a model (.pt checkpoint, .onnx, .engine, or None = seeded random init of `preset`) on a backend;
    the backend's ``contract`` is the file's input contract.

    `input_size` None: the size the model was trained at (its contract's) for a checkpoint, an exported
    model's own size, `DEFAULT_INPUT_SIZE` for the untrained network; a size that an exported model (.onnx,
    .engine) was not made for raises. `device` may be `auto` (`resolve_device`).
    `auto` tries TensorRT -> ONNX Runtime CUDA -> PyTorch CUDA on a CUDA device, and ONNX Runtime CPU ->
    PyTorch CPU on the CPU, skipping what is not installed or cannot run this file, and logs the choice.
    `facts`: what :func:`inspect_model_file` already read of this file (its header is then not read again).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = resolve_device(device)
    if backend != "auto" and model_path is not None:  # a backend that cannot run this kind of file at all
        why_not = _unsuitable(backend, _model_kind(Path(model_path)), device.type == "cuda", precision)
        if why_not:
            raise ValueError(f"backend {backend!r}: {why_not}")
    if facts is None or facts.path != (Path(model_path) if model_path is not None else None):
        facts = inspect_model_file(model_path)  # a bad file is the user's error: raise now, never fall back
    path, kind = facts.path, facts.kind
    if input_size is None and facts.fixed_size is None:  # exported files bring their own size
        input_size = facts.contract.network_size if facts.contract is not None else DEFAULT_INPUT_SIZE
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


@dataclass(frozen=True)
class ModelFile:
    """What a model file says about itself, read once: its kind, its input contract (None for the
    untrained network) and, for an exported graph (.onnx, .engine), the one size it runs at."""

    path: Path | None
    kind: str  # checkpoint | onnx | engine | random
    contract: InputContract | None
    fixed_size: tuple[int, int] | None


def inspect_model_file(
    model_path: str | os.PathLike | None, warn: Callable[[str], None] = LOG.warning
) -> ModelFile:
    """Read a checkpoint's payload, an ONNX file's metadata or an engine's key file (not the weights); a
    file that is missing, corrupt or not ours raises, naming it. A file without an input contract gets the
    assumed one, and ``warn`` says so (once per file and process)."""
    if model_path is None:
        return ModelFile(None, "random", None, None)
    path = Path(model_path)
    kind = _model_kind(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if kind == "checkpoint":
        return ModelFile(path, kind, checkpoint_contract(read_checkpoint(path), path, warn), None)
    if kind == "onnx":
        config, stored = read_onnx_metadata(path)
        contract = onnx_input_contract(path, config, stored, warn)
    else:
        key_path = engine_cache.key_path_for(path)
        try:
            stored = engine_cache.read_key(key_path)
        except FileNotFoundError as error:
            raise ValueError(
                f"{path}: no key file {key_path.name}; cannot tell what it was built from"
            ) from error
        contract = engine_cache.key_input_contract(path, stored)
    size = stored.get("input_size")
    if not isinstance(size, list) or len(size) != 2:
        raise ValueError(f"{path}: records no input_size [H, W] (found {size!r})")
    return ModelFile(path, kind, contract, (int(size[0]), int(size[1])))


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
        model, _, contract = model_from_source(path, preset, seed, input_size=input_size)
        return TorchBackend(model, device, precision, input_size, contract=contract)
    onnx_path = path if kind in ("onnx", "engine") else exported_onnx(path, preset, seed, input_size, cache)
    if choice == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, device, input_size)
    return TensorRTBackend(onnx_path, device, precision, input_size, cache_dir=cache / "engines")
