"""One way to build a :class:`~mtl_perception.pipeline.PerceptionPipeline` from a :class:`PipelineConfig`.

The node (from its ROS parameters), the demo, ``mtl_infer`` and through the node the replay tools and the
benchmarks build their pipeline here: the config is validated (:meth:`PipelineConfig.validate`, a
:class:`ConfigError` naming the parameter), the model file is read once, the backend is opened, and the
settings that contradict the model's input contract are reported, each once, through ``warn``.

``model_file`` is resolved by :func:`mtl_perception.model.shipped.resolve_model`: empty = the shipped trained
checkpoint (a clear ConfigError naming ``make shipped-model`` when the package carries none), ``untrained``
= the seeded random ``model_preset`` (labelled UNTRAINED), else the file.

The loaded model is the single source of its input size, flow settings, tasks, classes and architecture
(its input contract, ``mtl_perception.model.contract``). ``network_height`` / ``network_width`` run a
checkpoint at another size (an override) or shape the untrained network; an exported model (.onnx, .engine)
runs at the size it was made for, and a set size that disagrees gets one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mtl_perception.device import resolve_device
from mtl_perception.inference import DEFAULT_INPUT_SIZE, create_backend, inspect_model_file
from mtl_perception.inference.backends import ModelFile
from mtl_perception.model.shipped import ResolvedModel, ShippedModelMissing, resolve_model
from mtl_perception.pipeline import PerceptionPipeline
from mtl_perception.pipeline_config import ConfigError, PipelineConfig

LOG = logging.getLogger("mtl_perception.pipeline_factory")
PALETTES = ("five", "trainid")


@dataclass(frozen=True)
class ModelChoice:
    """The model a config names, resolved and read once: which model, and what its file says."""

    model: ResolvedModel
    file: ModelFile


def choose_model(config: PipelineConfig, warn: Callable[[str], None] = LOG.warning) -> ModelChoice:
    """Resolve ``config.model_file`` (module doc) and read what the file says about itself; ConfigError
    names a missing shipped model or an unreadable file."""
    try:
        resolved = resolve_model(config.model_file, preset=config.model_preset, seed=config.seed)
    except ShippedModelMissing as error:
        raise ConfigError("model_file", f"parameter model_file is empty: {error}") from error
    try:
        facts = inspect_model_file(resolved.path, warn=warn)
    except FileNotFoundError as error:
        raise ConfigError("model_file", f"model_file {str(resolved.path)!r} not found: {error}") from error
    except (ValueError, OSError) as error:
        raise ConfigError("model_file", f"cannot load model {str(resolved.path)!r}: {error}") from error
    return ModelChoice(resolved, facts)


def network_size_for(
    config: PipelineConfig, facts: ModelFile, warn: Callable[[str], None] = LOG.warning
) -> tuple[int, int] | None:
    """The size to ask the backend for: None for a fixed-size model (it brings its own), else the set size
    (unset: the size the model was trained at, the untrained network's DEFAULT_INPUT_SIZE)."""
    requested = config.requested_size()
    if facts.fixed_size is None:
        trained = facts.contract.network_size if facts.contract is not None else DEFAULT_INPUT_SIZE
        return requested or trained
    if requested is not None and requested != facts.fixed_size:
        fixed = facts.fixed_size
        warn(
            f"model_file {facts.path} was made for {fixed[0]}x{fixed[1]}; it runs at that size and "
            f"network_height/width {requested[0]}x{requested[1]} is ignored (it only shapes checkpoints "
            "and the untrained model)"
        )
    return None


def build_pipeline(
    config: PipelineConfig, warn: Callable[[str], None] = LOG.warning, choice: ModelChoice | None = None
) -> PerceptionPipeline:
    """Check ``config``, load the model on its backend and return the pipeline; ConfigError names a bad value.

    Cheap checks come first, so a typo fails before seconds of model loading. ``warn`` receives the
    warnings: a set network size an exported model ignores, and each setting that overrides the trained
    model's input contract. ``choice``: the model already chosen by :func:`choose_model` (read once).
    """
    config.validate()
    try:
        device = resolve_device(config.device)
    except ValueError as error:
        raise ConfigError("device", f"parameter device={config.device!r}: {error}") from error
    choice = choice or choose_model(config, warn)
    size = network_size_for(config, choice.file, warn)
    model_file = str(choice.model.path) if choice.model.path is not None else None
    try:
        backend = create_backend(
            model_file,
            backend=config.backend,
            device=device,
            precision=config.precision,
            input_size=size,
            preset=config.model_preset,
            seed=config.seed,
            facts=choice.file,
        )
    except FileNotFoundError as error:
        raise ConfigError("model_file", f"model_file {model_file!r} not found: {error}") from error
    except (ValueError, RuntimeError, OSError, KeyError) as error:
        raise ConfigError(
            "model_file" if model_file else "model_preset",
            f"cannot load model {model_file or config.model_preset!r} "
            f"with backend {config.backend!r}: {error}",
        ) from error
    pipeline = PerceptionPipeline(backend, config)
    if choice.model.trained:  # nothing was learnt by an untrained network, so nothing is overridden
        for override in pipeline.overrides:
            warn(
                f"{override.name}={override.value} overrides the model's input contract: "
                f"{choice.model.label} was trained with {override.name}={override.model}; "
                "its outputs may be wrong"
            )
    return pipeline


def semantic_colors(palette: str, palette_rgb, backend) -> np.ndarray:
    """(C, 3) uint8 colours of ``semantic/color``: ``palette_rgb`` (0xRRGGBB; [] or [0] = off) or ``palette``.

    ConfigError when a colour is out of range or the palette has fewer colours than the model has classes.
    """
    from mtl_perception.data import semantic_palette

    if palette not in PALETTES:
        raise ConfigError("palette", f"parameter palette={palette!r} must be one of {PALETTES}")
    custom = [int(v) for v in palette_rgb]
    if custom not in ([], [0]):
        if any(v < 0 or v > 0xFFFFFF for v in custom):
            raise ConfigError("palette_rgb", "palette_rgb entries must be 0xRRGGBB integers in [0, 16777215]")
        colors = np.array([[(v >> 16) & 255, (v >> 8) & 255, v & 255] for v in custom], np.uint8)
    else:
        colors = np.asarray(semantic_palette(palette), np.uint8)
    classes = int(backend.num_semantic_classes)
    if "semantic" in tuple(backend.tasks) and len(colors) < classes:
        raise ConfigError(
            "palette_rgb" if custom not in ([], [0]) else "palette",
            f"palette has {len(colors)} colours but the model predicts {classes} classes",
        )
    return colors
