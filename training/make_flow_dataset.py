"""Precompute the flow input of every annotated frame, exactly as the node computes it at run time.

What flow to make is a model's input contract (``mtl_perception.model.contract``): ``--model FILE`` (default:
the shipped model) gives the size, the Farnebäck parameters, the confidence, the partner gap and the frame
rate; ``--height/--width``, ``--params``, ``--confidence``, ``--gap`` and ``--fps`` override one setting
each (for a model yet to be trained: ``train.py --img_resize H W`` needs ``--height H --width W``).

For annotated frame f of a snippet, the node's own flow input (``mtl_perception.pipeline.FlowInput.between``,
the code the node runs): both frames are uploaded to the device and resized there like the node (torch
bilinear, antialiased when shrinking, rounded to grey levels), converted to grey like cv2, and Farnebäck flow
is computed on frame f's grid towards frame f - gap, with the contract's confidence; flow beyond the PNG's
range (a Farnebäck blow-up) is clamped there with confidence 0, as the node does, and counted. Output:
``leftImg8bit_flow_farneback_confidence/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit_flow.png`` (16-bit
KITTI-style PNG, ``mtl_perception.flow.write_flow_png``: R = u, G = v at 1/64 px, B = confidence) plus the
manifest ``{split}/flow_params.json`` (``mtl_perception.data.flow_folder``: the flow contract, the package
version). Finished files are never recomputed (resume), writes are atomic, nothing is overwritten without
``--overwrite``, and a folder made otherwise is refused in one line naming the difference.

Manifest protocol -- every flow PNG in the split's folder was computed with the manifest's contract:

* the manifest is written (``"complete": false``) before the first PNG, ``"complete": true`` after the last;
* ``--overwrite`` first deletes every flow PNG of the split, then writes the new manifest: an interrupted or
  failed ``--overwrite`` run leaves either the old contract with a subset of its files or the new one
  with a subset of its files, never a mix, and a rerun with the new settings finishes the job (one with other
  settings is refused, as always);
* an existing PNG counts as done only if it decodes as a flow PNG of the expected size (a truncated or empty
  file is recomputed, with a warning).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.atomic import atomic_write_bytes, temporary_name_of
from mtl_perception.cli import positive_float, positive_int, tool_main
from mtl_perception.data.cityscapes import FrameId, cityscapes_path
from mtl_perception.data.flow_folder import (
    MANIFEST,
    FlowFolderError,
    make_flow_command,
    manifest_path,
    manifest_record,
    read_manifest,
)
from mtl_perception.device import resolve_device, torch_device
from mtl_perception.flow import CONFIDENCE_MODES, read_flow_png, write_flow_png
from mtl_perception.imageio import read_image
from mtl_perception.inference import inspect_model_file
from mtl_perception.learning.dataset import DEFAULT_ROOT, FLOW_FOLDER, FLOW_SUFFIX, flow_path
from mtl_perception.model.contract import FARNEBACK_PRESETS, FlowContract, farneback_preset_name
from mtl_perception.model.shipped import resolve_model
from mtl_perception.pipeline import FlowInput


def frame_flow(
    flow_input: FlowInput, current_rgb: np.ndarray, earlier_rgb: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 2) flow px and (h, w) confidence of ``current_rgb`` towards ``earlier_rgb``, as the node feeds
    its network (``FlowInput.between``, its clamp included)."""
    if current_rgb.shape != earlier_rgb.shape:
        raise ValueError(f"frames differ in shape: current {current_rgb.shape}, earlier {earlier_rgb.shape}")
    flow, confidence = flow_input.between(current_rgb, earlier_rgb, tuple(size))
    return flow.permute(1, 2, 0).cpu().numpy().astype(np.float32), confidence.cpu().numpy().astype(np.float32)


def flow_contract_for(
    model: str | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
    params: str | None = None,
    confidence: str | None = None,
    gap: int | None = None,
    fps: float | None = None,
) -> FlowContract:
    """The flow ``model`` (None: the shipped model) was trained on, with each given setting replaced."""
    facts = inspect_model_file(resolve_model(model or "").path)
    if facts.contract is None:
        raise ValueError(
            "--model untrained has no input contract: give a model file, or none (the shipped model)"
        )
    base = facts.contract.flow
    changes = {}
    if (height is None) != (width is None):
        raise ValueError("--height and --width go together")
    if height is not None:
        changes["size"] = (height, width)
    if params is not None:
        changes["farneback"] = FARNEBACK_PRESETS[params]
    if confidence is not None:
        changes["confidence"] = confidence
    if gap is not None:
        changes["partner_gap"] = gap
    if fps is not None:
        changes["frame_rate_hz"] = fps
    return replace(base, **changes)


def _write_manifest(path: Path, flow: FlowContract, *, complete: bool) -> None:
    record = manifest_record(flow, complete=complete)
    atomic_write_bytes(path, json.dumps(record, indent=2, sort_keys=True).encode())


def _is_done(path: Path, size: tuple[int, int]) -> bool:
    """A finished flow PNG: it decodes, and has the requested size."""
    if not path.is_file():
        return False
    try:
        flow, _ = read_flow_png(path)
    except (ValueError, OSError):
        return False
    return flow.shape[:2] == tuple(size)


def _existing_flow_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob(f"*_{FLOW_SUFFIX}") if p.is_file() and not temporary_name_of(p.name)
    )


def _flow_partner(root: Path, split: str, annotated_image: Path, gap: int) -> Path:
    """The sequence frame f - gap that the flow of annotated frame f points to."""
    fid = FrameId.parse(annotated_image)
    return cityscapes_path(root, "image_sequence", split, FrameId(fid.city, fid.seq, fid.frame - gap))


def _check_existing(root: Path, split: str, flow: FlowContract, overwrite: bool) -> None:
    """Refuse a folder made with another contract (or of unknown making) unless ``overwrite``."""
    path = manifest_path(root, split)
    if overwrite:
        return
    try:
        existing = read_manifest(path)
    except FlowFolderError as error:
        raise ValueError(
            f"{error}; recompute the split with: {make_flow_command(root, split, flow, overwrite=True)}"
        ) from error
    if existing is None:
        if _existing_flow_files(path.parent):
            raise ValueError(
                f"{path.parent} holds flow files but no {MANIFEST}: how they were made is unknown; recompute "
                f"them with: {make_flow_command(root, split, flow, overwrite=True)}"
            )
        return
    differences = existing.flow.differences_line(flow, "folder", "requested")
    if differences:
        raise ValueError(
            f"{path.parent} holds flow made otherwise ({differences}): recompute it with: "
            f"{make_flow_command(root, split, flow, overwrite=True)}"
        )


def make_flow_dataset(
    root: str | Path = DEFAULT_ROOT,
    split: str = "train",
    *,
    flow: FlowContract,
    device: str | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict[str, int]:
    """Compute the missing flow files of ``split`` as ``flow`` says; returns {"computed": n, "skipped": m,
    "clamped_frames": k, "clamped_pixels": p} (frames with flow beyond the clamp, and their pixels)."""
    from tqdm import tqdm

    root = Path(root)
    try:
        device = resolve_device(device or "auto")
    except ValueError as error:
        raise ValueError(f"--device: {error}") from error
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    images = [p for p in images if not temporary_name_of(p.name)]
    if not images:
        raise FileNotFoundError(
            f"no annotated frames (*_leftImg8bit.png) under {root / 'leftImg8bit' / split}"
        )
    gap = flow.partner_gap
    lacking = [p for p in images if not _flow_partner(root, split, p, gap).is_file()]
    if lacking:  # checked before anything is written
        raise FileNotFoundError(
            f"{len(lacking)} of {len(images)} annotated frames lack frame f - {gap} for the flow, e.g. "
            f"{lacking[0]} needs {_flow_partner(root, split, lacking[0], gap)}; pass a smaller --gap "
            f"(synthetic data: make_synthetic_cityscapes --annotate all --flow-gap {gap})"
        )
    _check_existing(root, split, flow, overwrite)

    folder = root / FLOW_FOLDER / split
    manifest = manifest_path(root, split)
    if overwrite:  # delete first, then record the new contract: never a new contract over old files
        try:
            previous = read_manifest(manifest)
        except FlowFolderError:
            previous = None  # a damaged manifest is replaced below
        if previous is not None and previous.complete:
            _write_manifest(manifest, previous.flow, complete=False)  # its files are about to go
        for old in _existing_flow_files(folder):
            old.unlink()
    _write_manifest(manifest, flow, complete=False)

    flow_input = FlowInput(
        flow.farneback, device=device, confidence_mode=flow.confidence, clamp_px=flow.clamp_px
    )
    done = {"computed": 0, "skipped": 0, "clamped_frames": 0, "clamped_pixels": 0}
    for img_path in tqdm(images, desc=f"flow {split}", unit="frame", disable=not show_progress):
        fid = FrameId.parse(img_path)
        out = flow_path(root, split, fid)
        earlier = _flow_partner(root, split, img_path, gap)
        if out.exists():
            if _is_done(out, flow.size):
                done["skipped"] += 1
                continue
            print(
                f"make_flow_dataset: warning: {out} is damaged or of another size; recomputing",
                file=sys.stderr,
            )
        cur_rgb, prev_rgb = _read_rgb(img_path), _read_rgb(earlier)
        if cur_rgb.shape != prev_rgb.shape:
            raise ValueError(f"{earlier} is {prev_rgb.shape}, {img_path} is {cur_rgb.shape}")
        flow_np, conf_np = frame_flow(flow_input, cur_rgb, prev_rgb, flow.size)
        clamped = int((np.abs(flow_np) >= flow.clamp_px).any(axis=-1).sum())
        if clamped:
            done["clamped_frames"] += 1
            done["clamped_pixels"] += clamped
        out.parent.mkdir(parents=True, exist_ok=True)
        write_flow_png(out, flow_np, np.clip(conf_np, 0.0, 1.0), overwrite=True)
        done["computed"] += 1
    _write_manifest(manifest, flow, complete=True)
    return done


def _read_rgb(path: Path) -> np.ndarray:
    return read_image(path, cv2.IMREAD_COLOR)[..., ::-1]


def _shipped_flow() -> FlowContract | None:
    """The shipped model's flow, for --help (None when the package ships no model)."""
    try:
        return flow_contract_for(None)
    except (OSError, ValueError):
        return None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every default shown; an unset override says which model value it leaves in place."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


@tool_main("make_flow_dataset")
def main(argv: list[str] | None = None) -> int:
    shipped = _shipped_flow()

    def model_default(name: str, value) -> str:
        return (
            f"(default: the model's {name}"
            + ("" if shipped is None else f"; the shipped model's: {value}")
            + ")"
        )

    ap = argparse.ArgumentParser(
        prog="make_flow_dataset", description=__doc__.split("\n")[0], formatter_class=_HelpFormatter
    )
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="Cityscapes-layout root")
    ap.add_argument("--split", default="train", help="split folder under the root")
    ap.add_argument(
        "--model",
        help="the model file whose input contract says what flow to make (default: the shipped model)",
    )
    size = shipped.size if shipped else (None, None)
    ap.add_argument(
        "--height", type=positive_int, help="flow size = the network's " + model_default("height", size[0])
    )
    ap.add_argument(
        "--width", type=positive_int, help="flow size = the network's " + model_default("width", size[1])
    )
    preset = shipped and (farneback_preset_name(shipped.farneback) or "none of the presets")
    ap.add_argument(
        "--params",
        choices=sorted(FARNEBACK_PRESETS),
        help="Farnebäck preset: cuda (cv::cuda defaults) or common " + model_default("parameters", preset),
    )
    ap.add_argument(
        "--confidence",
        choices=CONFIDENCE_MODES,
        help="flow confidence " + model_default("confidence", shipped and shipped.confidence),
    )
    ap.add_argument(
        "--gap",
        type=positive_int,
        help="flow from frame f to frame f - gap " + model_default("gap", shipped and shipped.partner_gap),
    )
    ap.add_argument(
        "--fps",
        type=positive_float,
        help="the recording's frame rate, Hz " + model_default("rate", shipped and shipped.frame_rate_hz),
    )
    ap.add_argument(
        "--device",
        default="auto",
        type=torch_device,
        help="auto | cpu | cuda[:N] (auto: cuda:0 if available)",
    )
    ap.add_argument("--overwrite", action="store_true", help="delete the split's flow files and recompute")
    args = ap.parse_args(argv)
    flow = flow_contract_for(
        args.model,
        height=args.height,
        width=args.width,
        params=args.params,
        confidence=args.confidence,
        gap=args.gap,
        fps=args.fps,
    )
    done = make_flow_dataset(
        root=args.root, split=args.split, flow=flow, device=args.device, overwrite=args.overwrite
    )
    clamped = ""
    if done["clamped_frames"]:
        clamped = (
            f"; {done['clamped_pixels']} pixels in {done['clamped_frames']} frames had flow beyond "
            f"±{flow.clamp_px:g} px and were clamped there with confidence 0 (as the node does)"
        )
    print(
        f"make_flow_dataset: computed {done['computed']}, already done {done['skipped']} "
        f"({flow.size[0]}x{flow.size[1]}, {flow.confidence} confidence, gap {flow.partner_gap}){clamped}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
