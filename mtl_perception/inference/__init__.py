"""Deployment: ONNX export and inference backends (PyTorch, ONNX Runtime, TensorRT) behind one interface."""

from .backends import (
    BACKENDS,
    DEFAULT_INPUT_SIZE,
    PRECISIONS,
    Backend,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    create_backend,
    default_cache_dir,
    fixed_input_size,
    resolve_device,
)
from .export import export_onnx, read_onnx_metadata

__all__ = [
    "BACKENDS",
    "DEFAULT_INPUT_SIZE",
    "PRECISIONS",
    "Backend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchBackend",
    "create_backend",
    "default_cache_dir",
    "export_onnx",
    "fixed_input_size",
    "read_onnx_metadata",
    "resolve_device",
]
