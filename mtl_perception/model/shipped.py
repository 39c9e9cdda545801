"""The model the package ships, and the one rule every tool uses to pick a model when none is given.

``resolve_model(model_file)`` is called by the node (``model_file`` parameter), the demo, ``export_model``
and ``training/evaluate.py``:

* ``""`` / ``None``: the shipped, trained checkpoint ``mtl_perception/model/weights/shipped.pt`` (installed
  with the package as package data). When it is absent, :class:`ShippedModelMissing` says so and names
  ``make shipped-model``; it never falls back to an untrained network silently;
* ``"untrained"``: a seeded random initialisation of a preset, labelled ``UNTRAINED`` wherever it is used
  (logs, /diagnostics, the demo), for plumbing tests only;
* anything else: a model file (.pt, .onnx, .engine) the caller chose.

``scripts/make_shipped_model.sh`` (``make shipped-model``) re-creates the shipped file with its provenance
(the command, commit, data seeds, training time and metrics) in the checkpoint's ``extra["provenance"]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

#: the word that asks for the seeded untrained model (node: ``model_file:=untrained``)
UNTRAINED = "untrained"
SHIPPED_CHECKPOINT = "shipped.pt"
SHIPPED_ONNX = "shipped.onnx"
WEIGHTS_FOLDER = "weights"


class ShippedModelMissing(FileNotFoundError):
    """No model was given and the package carries no trained model file."""


def shipped_folder() -> Path:
    """Where the shipped files live inside the installed package (editable or not)."""
    return Path(str(resources.files("mtl_perception.model") / WEIGHTS_FOLDER))


def shipped_checkpoint_path() -> Path:
    """The shipped checkpoint; ShippedModelMissing (naming ``make shipped-model``) when it is absent."""
    path = shipped_folder() / SHIPPED_CHECKPOINT
    if not path.is_file():
        raise ShippedModelMissing(
            f"no model given and the package ships no trained model ({path} is missing): run "
            "`make shipped-model` to train it, pass a model file (.pt, .onnx, .engine), or ask for the "
            f"seeded untrained network explicitly with model '{UNTRAINED}' (node: model_file:={UNTRAINED})"
        )
    return path


def shipped_onnx_path() -> Path | None:
    """The shipped ONNX export (made for the shipped checkpoint's training size), or None if not shipped."""
    path = shipped_folder() / SHIPPED_ONNX
    return path if path.is_file() else None


@dataclass(frozen=True)
class ResolvedModel:
    """A model choice made concrete: ``path`` None means the seeded untrained ``preset``."""

    path: Path | None
    label: str  # what logs, /diagnostics and the demo print
    trained: bool
    shipped: bool
    preset: str
    seed: int


def resolve_model(
    model_file: str | os.PathLike | None, *, preset: str = "ti", seed: int = 0
) -> ResolvedModel:
    """The one rule: empty = the shipped model, ``untrained`` = seeded random ``preset``, else the file."""
    text = "" if model_file is None else str(model_file).strip()
    if text == "":
        path = shipped_checkpoint_path()
        return ResolvedModel(path, f"shipped {path.name} ({path})", True, True, preset, seed)
    if text.lower() == UNTRAINED:
        label = f"UNTRAINED seeded '{preset}' model (seed {seed}; outputs are meaningless)"
        return ResolvedModel(None, label, False, False, preset, seed)
    path = Path(text).expanduser()
    return ResolvedModel(path, str(path), True, False, preset, seed)
