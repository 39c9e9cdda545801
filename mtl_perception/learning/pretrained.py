"""``--pretrained PATH``: initialise the two-stream network from an RGB network, as TI does.

TI loads a single-stream Cityscapes DeepLabV3+Lite checkpoint with the rename ``features.`` -> both
``stream0.`` and ``stream1.``, ``decoders.0.`` -> every decoder, and ``ignore_size=True`` so the last conv
of a decoder with another number of classes is skipped; the fusion layer stays randomly initialised.
Here the same, from two key layouts:

* this project's checkpoints (``save_checkpoint`` files, e.g. a ``--tasks semantic`` run, or a bare
  ``state_dict`` of a ``MultiTaskNet``): the RGB stem (``stems.image``) goes to every stream, the trunk to
  the trunk, and each decoder from the source decoder of the same task, else the source's first decoder;
* torchvision's ``mobilenet_v2`` ``state_dict`` (ImageNet; ``features.0`` .. ``features.18``,
  ``classifier``): ``features.0-3`` to every stream's stem, ``features.4-17`` to the trunk; the final
  1x1 conv ``features.18`` and the classifier have no counterpart and are skipped. Decoders stay random.

Tensors whose shape differs from the target (another class count, another width) are skipped and listed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mtl_perception.model import MultiTaskNet
from mtl_perception.model.checkpoint import FORMAT as CHECKPOINT_FORMAT

#: torchvision MobileNetV2: features.0 = stem conv, 1..17 inverted residuals, 18 = 1x1 conv to 1280
STEM_BLOCKS = 4  # features.0-3 form each stream's stem (TI's num_input_blocks)


@dataclass
class PretrainedReport:
    path: Path
    layout: str
    loaded: list[str] = field(default_factory=list)
    skipped_shape: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        skipped = ", ".join(self.skipped_shape[:4]) + (", ..." if len(self.skipped_shape) > 4 else "")
        return (
            f"--pretrained {self.path} ({self.layout} layout): {len(self.loaded)} tensors loaded, "
            f"{len(self.skipped_shape)} skipped for a shape mismatch{f' ({skipped})' if skipped else ''}, "
            f"{len(self.unused)} source tensors without a counterpart"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a project checkpoint, a bare state_dict, or a {'state_dict'|'model': ...} wrapper."""
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"--pretrained {path}: not a weights-only torch file ({type(exc).__name__})"
        ) from exc
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        payload = payload["state_dict"]
    elif isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload:
        raise ValueError(f"--pretrained {path}: holds no state_dict")
    tensors = {k.removeprefix("module."): v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"--pretrained {path}: holds no tensors")
    return tensors


def _torchvision_block_key(rest: str, expands: bool) -> str | None:
    """torchvision InvertedResidual keys (``conv.0.0`` ConvBNReLU ..., then a bare projection ``conv.N``
    conv and ``conv.N+1`` BN) -> this project's keys (the projection is one ConvBNAct ``conv.k.0/1``)."""
    m = re.fullmatch(r"conv\.(\d+)\.(.+)", rest)
    if m is None:
        return None
    index, tail = int(m[1]), m[2]
    convbn = 2 if expands else 1  # ConvBNReLU modules before the projection: (expand,) depthwise
    if index < convbn:
        return f"conv.{index}.{tail}"
    if index == convbn:  # the projection conv (weight only, no bias)
        return f"conv.{convbn}.0.{tail}"
    if index == convbn + 1:  # its BatchNorm
        return f"conv.{convbn}.1.{tail}"
    return None


def _map_torchvision(source: dict, model: MultiTaskNet) -> dict[str, str]:
    """target key -> source key."""
    mapping: dict[str, str] = {}
    for key in source:
        m = re.fullmatch(r"features\.(\d+)\.(.+)", key)
        if m is None:
            continue
        block, rest = int(m[1]), m[2]
        if block == 0:
            targets = [f"stems.{s}.0.{rest}" for s in model.streams]
        elif block < STEM_BLOCKS:
            # torchvision's block 1 (t = 1) has no expansion conv; probe the source to know.
            expands = f"features.{block}.conv.3.weight" in source
            local = _torchvision_block_key(rest, expands)
            targets = [f"stems.{s}.{block}.{local}" for s in model.streams] if local else []
        else:
            expands = f"features.{block}.conv.3.weight" in source
            local = _torchvision_block_key(rest, expands)
            targets = [f"trunk.{block - STEM_BLOCKS}.{local}"] if local else []
        for target in targets:
            mapping[target] = key
    return mapping


def _map_project(source: dict, model: MultiTaskNet) -> dict[str, str]:
    mapping: dict[str, str] = {}
    source_stream = "image" if any(k.startswith("stems.image.") for k in source) else "flow"
    source_tasks = list(dict.fromkeys(k.split(".")[1] for k in source if k.startswith("decoders.")))
    for target in model.state_dict():
        if target.startswith("stems."):
            _, _, rest = target.split(".", 2)
            mapping[target] = f"stems.{source_stream}.{rest}"
        elif target.startswith("trunk.") or target.startswith("fusion."):
            # The fusion of a single-stream source does not exist; of a two-stream source it fits.
            mapping[target] = target
        elif target.startswith("decoders.") and source_tasks:
            _, task, rest = target.split(".", 2)
            mapping[target] = f"decoders.{task if task in source_tasks else source_tasks[0]}.{rest}"
    return mapping


def load_pretrained(model: MultiTaskNet, path: str | os.PathLike) -> PretrainedReport:
    """Copy the matching tensors of ``path`` into ``model`` in place; raise ValueError if none match."""
    path = Path(path)
    source = read_state_dict(path)
    if any(k.startswith("features.") for k in source):
        layout, mapping = "torchvision MobileNetV2", _map_torchvision(source, model)
    elif any(k.startswith(("stems.", "trunk.")) for k in source):
        layout, mapping = "mtl_perception", _map_project(source, model)
    else:
        raise ValueError(
            f"--pretrained {path}: key layout not recognised (first keys: {list(source)[:3]}); expected a "
            "mtl_perception checkpoint or a torchvision mobilenet_v2 state_dict"
        )
    report = PretrainedReport(path=path, layout=layout)
    target_state = model.state_dict()
    update = {}
    for target, key in mapping.items():
        if key not in source or target not in target_state:
            continue
        if source[key].shape != target_state[target].shape:
            report.skipped_shape.append(target)
            continue
        update[target] = source[key]
        report.loaded.append(target)
    used = set(mapping[t] for t in report.loaded) | {mapping[t] for t in report.skipped_shape}
    report.unused = sorted(k for k in source if k not in used)
    if not update:
        raise ValueError(f"--pretrained {path}: no tensor fits this network ({report.summary()})")
    with torch.no_grad():
        for target, tensor in update.items():
            target_state[target].copy_(tensor)
    return report
