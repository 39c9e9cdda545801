"""TensorRT engine cache bookkeeping, in pure Python (unit-tested without TensorRT or a GPU).

An engine is only valid for the exact ONNX file, TensorRT version, GPU model/compute capability, precision,
input shape and input contract (the inputs its network was trained on) it was built for (deserialising a
mismatched plan fails with "Version tag does not match" at
best). So every engine sits next to a key JSON of those facts; the engine is reused only when the key matches
the running system exactly, otherwise it is rebuilt -- never silently used.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mtl_perception.atomic import atomic_write_bytes

KEY_FIELDS = (
    "onnx_sha256",
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "precision",
    "input_shapes",
    "input_contract",
)
RUNTIME_FIELDS = ("tensorrt_version", "gpu_name", "compute_capability")  # what a given .engine must match


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def engine_key(
    onnx_sha256: str,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    precision: str,
    input_shapes: dict[str, tuple[int, ...]],
    input_contract: dict,
) -> dict:
    """The facts an engine depends on, as JSON-ready plain data (``input_contract``: the ONNX file's
    :class:`~mtl_perception.model.contract.InputContract` as a dict)."""
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be 'fp16' or 'fp32', got {precision!r}")
    return {
        "onnx_sha256": onnx_sha256,
        "tensorrt_version": str(tensorrt_version),
        "gpu_name": str(gpu_name),
        "compute_capability": [int(c) for c in compute_capability],
        "precision": precision,
        "input_shapes": {name: [int(d) for d in shape] for name, shape in sorted(input_shapes.items())},
        "input_contract": input_contract,
    }


def key_mismatches(expected: dict, found: dict, fields: tuple[str, ...] = KEY_FIELDS) -> list[str]:
    """Human-readable differences, e.g. ["tensorrt_version: engine 10.0.1, running 10.3.0"]."""
    return [
        f"{f}: engine {found.get(f)!r}, running {expected.get(f)!r}"
        for f in fields
        if found.get(f) != expected.get(f)
    ]


def cache_paths(
    cache_dir: str | os.PathLike, onnx_path: str | os.PathLike, precision: str, input_size: tuple[int, int]
) -> tuple[Path, Path]:
    """(engine path, key path) for an ONNX file; one slot per (model name, precision, size)."""
    h, w = input_size
    engine = Path(cache_dir) / f"{Path(onnx_path).stem}.{precision}.{h}x{w}.engine"
    return engine, key_path_for(engine)


def key_path_for(engine_path: str | os.PathLike) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_key(key_path: str | os.PathLike) -> dict:
    """The stored key; ValueError naming the file if it is not a JSON object."""
    key_path = Path(key_path)
    try:
        data = json.loads(key_path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f"{key_path}: unreadable engine key ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{key_path}: engine key is not a JSON object")
    return data


@dataclass(frozen=True)
class CacheDecision:
    rebuild: bool
    reason: str


def decide(engine_path: str | os.PathLike, expected_key: dict) -> CacheDecision:
    """Reuse the cached engine only when it exists and its key matches `expected_key` field by field."""
    engine_path = Path(engine_path)
    key_path = key_path_for(engine_path)
    if not engine_path.is_file():
        return CacheDecision(True, f"no cached engine at {engine_path}")
    if not key_path.is_file():
        return CacheDecision(True, f"cached engine {engine_path} has no key file {key_path.name}")
    try:
        found = read_key(key_path)
    except ValueError as exc:
        return CacheDecision(True, str(exc))
    mismatches = key_mismatches(expected_key, found)
    if mismatches:
        return CacheDecision(True, f"cached engine {engine_path} does not match: " + "; ".join(mismatches))
    return CacheDecision(False, f"cached engine {engine_path} matches the key")


def check_engine_for_runtime(engine_path: str | os.PathLike, runtime: dict) -> dict:
    """For an .engine given directly: its key file must exist and match the running TensorRT and GPU."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise FileNotFoundError(f"TensorRT engine not found: {engine_path}")
    key_path = key_path_for(engine_path)
    if not key_path.is_file():
        raise ValueError(
            f"{engine_path}: no key file {key_path.name}; cannot prove it was built for this "
            "TensorRT/GPU (pass the .onnx instead to build a matching engine)"
        )
    found = read_key(key_path)
    mismatches = key_mismatches(runtime, found, RUNTIME_FIELDS)
    if mismatches:
        raise ValueError(f"{engine_path} was built for another system: " + "; ".join(mismatches))
    return found


def store_engine(engine_path: str | os.PathLike, plan: bytes, key: dict, extra: dict | None = None) -> None:
    """Engine first, key last: a crash in between leaves an engine without key, which is rebuilt."""
    engine_path = Path(engine_path)
    key_path = key_path_for(engine_path)
    key_path.unlink(missing_ok=True)
    atomic_write_bytes(engine_path, plan)
    atomic_write_bytes(key_path, json.dumps({**(extra or {}), **key}, indent=2).encode())


def key_input_contract(engine_path: str | os.PathLike, stored: dict):
    """The input contract an engine's key file records; ValueError naming the engine when it has none (an
    engine built before contracts existed: rebuild it from its .onnx)."""
    from mtl_perception.model.contract import ContractError, InputContract

    if "input_contract" not in stored:
        raise ValueError(
            f"{engine_path}: its key file records no input contract (built before contracts existed); "
            "pass the .onnx instead to build an engine that carries one"
        )
    try:
        return InputContract.from_dict(stored["input_contract"])
    except ContractError as error:
        raise ValueError(f"{engine_path}: {error}") from error
