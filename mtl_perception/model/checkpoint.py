"""Self-describing checkpoints: weights + full ModelConfig + input contract + format version in one file.

Loaded with `torch.load(weights_only=True)`, so a file can only contain tensors and plain data; a pickle
that tries to run code is refused before anything executes. Format version 2 carries the input contract
(``mtl_perception.model.contract``); version 1 files (made before it) are still read, and their contract is
assumed with one warning naming the assumption.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from mtl_perception.atomic import atomic_path

from .config import ModelConfig
from .contract import DEFAULT_NETWORK_SIZE, ContractError, InputContract, stored_contract
from .net import MultiTaskNet

LOG = logging.getLogger("mtl_perception.model")
FORMAT = "mtl_perception.checkpoint"
VERSION = 2  # 2: with the input contract; 1: before it (still read)
READABLE_VERSIONS = (1, 2)
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """The file exists but is not a valid checkpoint for this code (corrupt, wrong format, mismatched)."""


def _check_plain(value, where: str) -> None:
    """`extra` must survive weights_only loading: plain types, lists/tuples/dicts of them and tensors."""
    if isinstance(value, _PLAIN) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"{where}: dict keys must be str or int, got {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise ValueError(f"{where}: {type(value).__name__} cannot be stored in a weights_only checkpoint")


def atomic_torch_save(obj, path: Path, overwrite: bool) -> None:
    """torch.save through mtl_perception.atomic: a crash never leaves a half-written checkpoint.

    Serialised in memory and written by Python: torch's own file writer turns a full disk into "[enforce
    fail at inline_container.cc] unexpected pos", Python's write into OSError ENOSPC, which names the file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as handle:
        handle.write(buffer.getbuffer())


def save_checkpoint(
    path: str | os.PathLike,
    model: MultiTaskNet,
    *,
    contract: InputContract,
    overwrite: bool = False,
    **extra,
) -> Path:
    """Save weights + config + the input contract the network was trained on (+ plain-data ``extra``, e.g.
    epoch, metrics) atomically; returns the path."""
    path = Path(path)
    _check_plain(extra, "extra")
    contract.check_model(model.config)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "contract": contract.to_dict(),
        "state_dict": state,
        "extra": extra,
    }
    atomic_torch_save(payload, path, overwrite)
    return path


def _recorded_size(extra: dict) -> tuple[int, int] | None:
    """The (H, W) a format-1 checkpoint was trained at, when its ``extra`` records it (``img_resize``, or
    in ``provenance``); the size of a format-2 file is its contract's."""
    size = extra.get("img_resize")
    if size is None and isinstance(extra.get("provenance"), dict):
        size = extra["provenance"].get("img_resize")
    if size is None:
        return None
    if not isinstance(size, (list, tuple)) or len(size) != 2 or any(int(v) <= 0 or int(v) % 16 for v in size):
        raise CheckpointError(f"img_resize {size!r} in the checkpoint is not two positive multiples of 16")
    return int(size[0]), int(size[1])


def _unpickling_reason(error: Exception) -> str:
    """The reason in torch's weights-only error, without its advice and links (their wording varies)."""
    advice = ("weights_only", "Weights only", "documentation", "file an issue")
    for line in str(error).splitlines():
        line = line.replace("WeightsUnpickler error:", "").strip()
        if line and not any(word in line for word in advice):
            return line
    return "not a weights-only pickle"


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load and validate the payload dict (format, version, keys) without building a network."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a directory, expected a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False: never the right advice for a file that failed here;
        # keep only its reason (an unsupported global, a bad opcode)
        raise CheckpointError(
            f"{path}: not a weights-only checkpoint ({_unpickling_reason(exc)}); do not load it with "
            f"weights_only=False unless you trust its source"
        ) from exc
    except Exception as exc:  # RuntimeError (bad zip), EOFError (truncated), ...
        raise CheckpointError(
            f"{path}: not a loadable weights-only checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: format is {found!r}, expected {FORMAT!r}")
    if payload.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: format version {payload.get('version')!r}, this code reads {list(READABLE_VERSIONS)}"
        )
    for key, kind in (("config", dict), ("state_dict", dict), ("extra", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path}: missing or invalid {key!r} entry")
    return payload


def _config(payload: dict, path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc


def checkpoint_contract(
    payload: dict, path: str | os.PathLike, warn: Callable[[str], None] = LOG.warning
) -> InputContract:
    """The input contract of a payload from :func:`read_checkpoint`. A format-1 file gets the project's
    flow defaults at its recorded training size (else the default network size), and ``warn`` says so."""
    try:
        return stored_contract(
            payload.get("contract"),
            config=_config(payload, path),
            source=f"checkpoint {path}",
            assumed_size=_recorded_size(payload["extra"]) or DEFAULT_NETWORK_SIZE,
            warn=warn,
        )
    except ContractError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[MultiTaskNet, dict]:
    """Rebuild the exact network from the file alone; returns (model in eval mode, extra)."""
    return _build(read_checkpoint(path, map_location), path, map_location)


def open_checkpoint(
    path: str | os.PathLike, map_location="cpu", warn: Callable[[str], None] = LOG.warning
) -> tuple[MultiTaskNet, dict, InputContract]:
    """:func:`load_checkpoint` plus the file's input contract, from one read of the file."""
    payload = read_checkpoint(path, map_location)
    contract = checkpoint_contract(payload, path, warn)
    model, extra = _build(payload, path, map_location)
    return model, extra, contract


def _build(payload: dict, path, map_location) -> tuple[MultiTaskNet, dict]:
    config = _config(payload, path)
    model = MultiTaskNet(config)
    expected = model.state_dict()
    found = payload["state_dict"]
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: state_dict does not match its config: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    for key, tensor in expected.items():
        value = found[key]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(
                f"{path}: {key} has shape {shape}, the config expects {tuple(tensor.shape)}"
            )
    model.load_state_dict(found)
    model.to(map_location).eval()
    return model, payload["extra"]
