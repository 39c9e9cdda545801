"""The flow folder's manifest: how the flow inputs of a split were made, and the check every consumer runs.

``make_flow_dataset`` writes ``{root}/{flow folder}/{split}/flow_params.json``: the
:class:`~mtl_perception.model.contract.FlowContract` the files were made with (size, Farnebäck parameters,
confidence, clamp, partner gap, frame rate, flow code version), whether the split is complete, and the
package version. ``train.py`` records it in the model's input contract; ``evaluate.py``, ``make_table``,
``evaluate_paths`` and ``train.py`` (against the run it resumes) call :func:`check_flow_folder` before the
first batch: a folder made otherwise is refused in one line that names the difference and the
``make_flow_dataset`` command that fixes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from mtl_perception.data.cityscapes import FLOW_FOLDER
from mtl_perception.model.contract import (
    DEFAULT_FRAME_RATE_HZ,
    ContractError,
    FlowContract,
    farneback_preset_name,
)

MANIFEST = "flow_params.json"
FORMAT = "mtl_perception.flow_folder"
DIRECTION = "flow on frame f's grid pointing to frame f - gap (StreamingFarneback.flow(f, f - gap))"
ENCODING = "16-bit KITTI PNG: u,v = (R,G - 32768)/64 px, confidence = B/65535"


class FlowFolderError(ValueError):
    """A flow folder that does not hold what a consumer needs; the message names the fixing command."""


@dataclass(frozen=True)
class Manifest:
    flow: FlowContract
    complete: bool
    made_by: str  # the package version that made it


def manifest_path(root: str | Path, split: str, folder: str = FLOW_FOLDER) -> Path:
    return Path(root) / folder / split / MANIFEST


def manifest_record(flow: FlowContract, *, complete: bool) -> dict:
    from mtl_perception import __version__

    return {
        "format": FORMAT,
        "flow": flow.to_dict(),
        "complete": bool(complete),
        "made_by": f"mtl_perception {__version__}",
        "direction": DIRECTION,
        "encoding": ENCODING,
    }


def read_manifest(path: str | Path) -> Manifest | None:
    """The manifest at ``path`` (None when there is none); ValueError naming the file when unreadable.

    A sidecar of the earlier format (``farneback``, ``gap``, ``size``, ``confidence``, made before flow
    folders recorded a frame rate, always at 17 Hz) is read as the same contract."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FlowFolderError(f"{path}: unreadable flow manifest ({error})") from error
    if not isinstance(data, dict):
        raise FlowFolderError(f"{path}: not a flow manifest (a JSON object)")
    try:
        if data.get("format") == FORMAT:
            return Manifest(
                FlowContract.from_dict(data["flow"]), bool(data["complete"]), str(data["made_by"])
            )
        if data.get("size") is None:
            raise FlowFolderError(f"{path}: flow made at the images' own size, which no network runs at")
        flow = FlowContract(
            size=tuple(data["size"]),
            farneback=data["farneback"],
            confidence=data["confidence"],
            partner_gap=data["gap"],
            frame_rate_hz=DEFAULT_FRAME_RATE_HZ,
        )
        return Manifest(flow, bool(data.get("complete")), "mtl_perception before flow manifests")
    except (KeyError, TypeError, ContractError) as error:
        raise FlowFolderError(f"{path}: not a flow manifest of this code ({error})") from error


def make_flow_command(
    root: str | Path, split: str, flow: FlowContract, *, model: str | None = None, overwrite: bool = False
) -> str:
    """The ``make_flow_dataset`` command that makes ``flow`` for ``split``, every setting spelled out
    (``--model`` where the Farnebäck parameters are no preset's, so it derives them)."""
    words = ["make_flow_dataset", "--root", str(root), "--split", split]
    preset = farneback_preset_name(flow.farneback)
    if model is not None:
        words += ["--model", str(model)]
    words += ["--height", str(flow.size[0]), "--width", str(flow.size[1])]
    if preset is not None:
        words += ["--params", preset]
    words += [
        "--confidence",
        flow.confidence,
        "--gap",
        str(flow.partner_gap),
        "--fps",
        f"{flow.frame_rate_hz:g}",
    ]
    if overwrite:
        words.append("--overwrite")
    return " ".join(words)


def check_flow_folder(
    root: str | Path,
    split: str,
    expected: FlowContract,
    *,
    folder: str = FLOW_FOLDER,
    model: str | None = None,
    who: str = "the model",
) -> FlowContract:
    """Refuse a split whose flow was not made as ``expected`` (what ``who`` was trained on), in one line
    naming the difference and the command that fixes it; returns the folder's flow contract."""
    path = manifest_path(root, split, folder)
    manifest = read_manifest(path)
    if manifest is None:
        raise FlowFolderError(
            f"{path.parent} has no flow manifest ({MANIFEST}): make the flow inputs of split {split!r} "
            f"with: {make_flow_command(root, split, expected, model=model, overwrite=path.parent.is_dir())}"
        )
    if not manifest.complete:
        raise FlowFolderError(
            f"the flow of split {split!r} in {path.parent} is incomplete (make_flow_dataset was stopped): "
            f"finish it with: {make_flow_command(root, split, manifest.flow, model=model)}"
        )
    differences = manifest.flow.differences_line(expected, "folder", "model")
    if differences:
        raise FlowFolderError(
            f"{path.parent} holds flow made otherwise than {who} was trained on ({differences}): recompute "
            f"it with: {make_flow_command(root, split, expected, model=model, overwrite=True)}"
        )
    return manifest.flow


def check_training_flow(
    root: str | Path, splits: list[str], size: tuple[int, int], *, folder: str = FLOW_FOLDER
) -> FlowContract:
    """The flow contract a network trained at ``size`` on ``splits`` learns: every split's manifest is
    complete, made at ``size``, and made like the first split's; FlowFolderError names the fixing command."""
    first: FlowContract | None = None
    for split in splits:
        path = manifest_path(root, split, folder)
        manifest = read_manifest(path)
        wanted = first or FlowContract(size=tuple(size))
        if manifest is None:
            raise FlowFolderError(
                f"{path.parent}: no flow inputs made for split {split!r} ({MANIFEST} is missing); make them "
                f"with: {make_flow_command(root, split, wanted, overwrite=path.parent.is_dir())}"
            )
        if not manifest.complete:
            raise FlowFolderError(
                f"the flow of split {split!r} in {path.parent} is incomplete (make_flow_dataset stopped): "
                f"finish it with: {make_flow_command(root, split, manifest.flow)}"
            )
        if manifest.flow.size != tuple(size):
            fixed = replace(manifest.flow, size=tuple(size))
            raise FlowFolderError(
                f"{path.parent} holds flow made at {manifest.flow.size[0]}x{manifest.flow.size[1]}, but the "
                f"network trains at --img_resize {size[0]} {size[1]} (the flow is computed at the network's "
                f"size, as the node does): recompute it with: "
                f"{make_flow_command(root, split, fixed, overwrite=True)}"
            )
        differences = first and manifest.flow.differences_line(first, split, splits[0])
        if differences:
            raise FlowFolderError(
                f"{path.parent} holds flow made otherwise than split {splits[0]!r}'s ({differences}): "
                f"recompute it with: {make_flow_command(root, split, first, overwrite=True)}"
            )
        first = first or manifest.flow
    return first
