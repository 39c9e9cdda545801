"""``checkpoint.pt``: everything ``--resume`` needs to continue a run bit-exactly on the CPU.

Model, optimizer, LR scheduler, task-weighting state, sampler state, the epoch and step counters, the best
validation score so far, and the RNG states (torch CPU and CUDA, numpy's global generator, Python's
``random``, the DataLoader's generator). The file is written atomically (``mtl_perception.atomic``) and
read with ``torch.load(weights_only=True)``, so it holds only tensors and plain data (the numpy state is
converted to a tensor for that reason).

``run_config`` records the flags that define the run; resuming with different values is refused (the
optimizer and scheduler state would silently override them, or the weights would not fit). The flags in
``RESUMABLE_FLAGS`` may change: how long to train, where and on what to run, how often to evaluate.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mtl_perception.model.checkpoint import CheckpointError, atomic_torch_save
from mtl_perception.model.contract import ContractError, InputContract

FORMAT = "mtl_perception.training_state"
VERSION = 1

#: flags that may differ between a run and its resumption
RESUMABLE_FLAGS = frozenset(
    {
        "epochs",
        "workers",
        "prefetch_factor",
        "output_dir",
        "resume",
        "overwrite",
        "evaluate_every",
        "gpus",
        "device",
        "data_path",
        "export_onnx",
        "tensorboard_images",
        "loss_warn_factor",
    }
)


def capture_rng_state(loader_generator: torch.Generator | None = None) -> dict:
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global generator other code may use
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def restore_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def save_training_state(
    path: str | os.PathLike,
    *,
    model,
    optimizer,
    scheduler,
    weighting,
    sampler,
    epoch: int,
    global_step: int,
    best: dict | None,
    history: list[dict],
    loader_generator: torch.Generator | None,
    run_config: dict,
    contract: InputContract,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Atomically write the run's state after ``epoch`` completed epochs (the previous file is replaced
    only once the new one is complete). ``model`` is the bare network, not its DDP wrapper."""
    path = Path(path)
    state = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.state_dict(),
        "model_config": model.config.to_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "weighting": weighting.state_dict(),
        "sampler": sampler.state_dict(),
        "epoch": int(epoch),
        "global_step": int(global_step),
        "best": best,
        "history": history,
        "rng": capture_rng_state(loader_generator),
        "run_config": run_config,
        "contract": contract.to_dict(),  # what the run trains on: a resume must train on the same
    }
    if grad_scaler is not None:  # --amp_dtype float16: the loss scale and its growth tracker
        state["grad_scaler"] = grad_scaler.state_dict()
    atomic_torch_save(state, path, overwrite=True)
    return path


def restore_training_state(
    state: dict, *, model, optimizer, scheduler, weighting, sampler, loader_generator, grad_scaler=None
) -> tuple[int, int, dict | None, list[dict]]:
    """Load a saved state into freshly built objects; returns (epoch, global_step, best, history)."""
    if grad_scaler is not None:
        if "grad_scaler" not in state:
            raise CheckpointError("the checkpoint holds no GradScaler state (--amp_dtype float16)")
        grad_scaler.load_state_dict(state["grad_scaler"])
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    weighting.load_state_dict(state["weighting"])
    sampler.load_state_dict(state["sampler"])
    restore_rng_state(state["rng"], loader_generator)
    return state["epoch"], state["global_step"], state["best"], list(state["history"])


def load_training_state(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign files: name the file, not a zip-reader internals
        raise CheckpointError(
            f"--resume {path}: not a loadable training checkpoint ({type(exc).__name__})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        hint = " (best.pt is a model checkpoint: resume from checkpoint.pt)" if found else ""
        raise CheckpointError(f"--resume {path}: format {found!r}, expected {FORMAT!r}{hint}")
    if state.get("version") != VERSION:
        raise CheckpointError(f"--resume {path}: version {state.get('version')!r}, this code reads {VERSION}")
    return state


def check_resume_compatible(path: str | os.PathLike, saved: dict, current: dict) -> None:
    """Raise CheckpointError naming every flag whose value differs from the checkpoint's run."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_FLAGS:
            continue
        if saved.get(key) != current.get(key):
            differences.append(f"--{key} {_show(saved.get(key))} (this run: {_show(current.get(key))})")
    if differences:
        raise CheckpointError(
            f"--resume {path}: the checkpoint comes from another configuration: it was trained with "
            + "; ".join(differences)
            + ". Resume with the same flags, or start a new run (--pretrained to initialise from it)"
        )


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def check_resume(
    path: str | os.PathLike, current: dict, *, resolve: Callable[[dict], dict] = lambda config: config
) -> dict:
    """Load ``path`` and refuse it when it comes from another configuration; returns the state. ``resolve``
    brings the saved flags to the form of ``current`` (defaults that stand for a value, as the value)."""
    state = load_training_state(path)
    check_resume_compatible(path, resolve(state.get("run_config", {})), current)
    return state


def check_resume_contract(path: str | os.PathLike, state: dict, contract: InputContract) -> None:
    """Refuse to resume a run on inputs made otherwise than the ones it started on (the flow folder was
    recomputed with other settings since); a state saved before runs recorded it is taken as it is."""
    if "contract" not in state:
        return
    try:
        saved = InputContract.from_dict(state["contract"])
    except ContractError as error:
        raise CheckpointError(f"--resume {path}: {error}") from error
    differences = saved.flow.differences(contract.flow)
    if saved.semantic_mode != contract.semantic_mode:
        differences.append(f"semantic mode {saved.semantic_mode} vs {contract.semantic_mode}")
    if differences:
        raise CheckpointError(
            f"--resume {path}: the run started on other inputs than the data now holds ("
            + "; ".join(differences)
            + " (run vs data)); resume on the data it started on, or start a new run"
        )
