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
    inspect_model_file,
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
    "inspect_model_file",
    "read_onnx_metadata",
]
