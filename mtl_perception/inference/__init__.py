"""Deployment: ONNX export and inference backends (PyTorch, ONNX Runtime, TensorRT) behind one interface."""

from .backends import (
    Backend,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    create_backend,
    default_cache_dir,
)
from .export import export_onnx, read_onnx_metadata

__all__ = [
    "Backend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchBackend",
    "create_backend",
    "default_cache_dir",
    "export_onnx",
    "read_onnx_metadata",
]
