"""Precompute the flow input of every annotated frame, exactly as the node computes it at run time.

For annotated frame f of a snippet, the node's own flow input (``mtl_perception.pipeline.FlowInput.between``,
the code the node runs): both frames are uploaded to the device and resized there like the node (torch
bilinear, antialiased when shrinking, rounded to grey levels), converted to grey like cv2, and Farnebäck flow
is computed on frame f's grid towards frame f - gap, with the confidence of ``--confidence`` (default
``residual``, the node's ``DEFAULT_CONFIDENCE_MODE``; ``forward_backward`` is TI's choice), clipped to
[0, 1]. Output: ``leftImg8bit_flow_farneback_confidence/{split}/{city}/
{city}_{seq}_{frame}_leftImg8bit_flow.png`` (16-bit KITTI-style PNG, ``mtl_perception.flow.write_flow_png``:
R = u, G = v at 1/64 px, B = confidence) plus the sidecar ``{split}/flow_params.json`` recording the
Farnebäck parameters, gap, size and confidence mode. Finished files are never recomputed (resume), writes
are atomic, nothing is overwritten without ``--overwrite``, and a sidecar with other parameters is refused.

Sidecar protocol -- every flow PNG in the split's folder was computed with the sidecar's parameters:

* the sidecar is written (``"complete": false``) before the first PNG, ``"complete": true`` after the last;
* ``--overwrite`` first deletes every flow PNG of the split, then writes the new sidecar: an interrupted or
  failed ``--overwrite`` run leaves either the old parameters with a subset of their files or the new ones
  with a subset of theirs, never a mix, and a rerun with the new parameters finishes the job (one with other
  parameters is refused, as always);
* an existing PNG counts as done only if it decodes as a flow PNG of the expected size (a truncated or empty
  file is recomputed, with a warning).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.atomic import atomic_write_bytes, temporary_name_of
from mtl_perception.cli import positive_int, tool_main, torch_device
from mtl_perception.data.cityscapes import FrameId, cityscapes_path
from mtl_perception.flow import (
    COMMON,
    CONFIDENCE_MODES,
    CUDA_DEFAULTS,
    DEFAULT_CONFIDENCE_MODE,
    read_flow_png,
    write_flow_png,
)
from mtl_perception.imageio import read_image
from mtl_perception.inference import resolve_device
from mtl_perception.learning.dataset import DEFAULT_ROOT, FLOW_FOLDER, FLOW_SUFFIX, flow_path
from mtl_perception.pipeline import FlowInput

PRESETS = {"cuda": CUDA_DEFAULTS, "common": COMMON}
SIDECAR = "flow_params.json"


def frame_flow(
    flow_input: FlowInput, current_rgb: np.ndarray, earlier_rgb: np.ndarray, size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 2) flow px and (h, w) confidence of ``current_rgb`` towards ``earlier_rgb``, as the node feeds
    its network (``FlowInput.between``); ``size`` None = the frames' own size."""
    if current_rgb.shape != earlier_rgb.shape:
        raise ValueError(f"frames differ in shape: current {current_rgb.shape}, earlier {earlier_rgb.shape}")
    flow, confidence = flow_input.between(current_rgb, earlier_rgb, tuple(size or current_rgb.shape[:2]))
    return flow.permute(1, 2, 0).cpu().numpy().astype(np.float32), confidence.cpu().numpy().astype(np.float32)


def _read_rgb(path: Path) -> np.ndarray:
    return read_image(path, cv2.IMREAD_COLOR)[..., ::-1]


def _write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode())


def _read_sidecar(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: unreadable flow sidecar ({error}); pass --overwrite to recompute the split"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: not a flow sidecar (a JSON object); pass --overwrite to recompute the split"
        )
    return data


def _is_done(path: Path, size: tuple[int, int] | None) -> bool:
    """A finished flow PNG: it decodes, and has the requested size (any size with ``size`` None)."""
    if not path.is_file():
        return False
    try:
        flow, _ = read_flow_png(path)
    except (ValueError, OSError):
        return False
    return size is None or flow.shape[:2] == tuple(size)


def _existing_flow_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob(f"*_{FLOW_SUFFIX}") if p.is_file() and not temporary_name_of(p.name)
    )


def _flow_partner(root: Path, split: str, annotated_image: Path, gap: int) -> Path:
    """The sequence frame f - gap that the flow of annotated frame f points to."""
    fid = FrameId.parse(annotated_image)
    return cityscapes_path(root, "image_sequence", split, FrameId(fid.city, fid.seq, fid.frame - gap))


def make_flow_dataset(
    root: str | Path = DEFAULT_ROOT,
    split: str = "train",
    gap: int = 2,
    device: str | None = None,
    params: str = "cuda",
    size: tuple[int, int] | None = (384, 768),
    confidence: str = DEFAULT_CONFIDENCE_MODE,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict[str, int]:
    """Compute the missing flow files; returns {"computed": n, "skipped": m}."""
    from tqdm import tqdm

    root = Path(root)
    if gap < 1:
        raise ValueError(f"--gap must be >= 1, got {gap}")
    if params not in PRESETS:
        raise ValueError(f"--params must be one of {sorted(PRESETS)}, got {params!r}")
    if confidence not in CONFIDENCE_MODES:
        raise ValueError(f"--confidence must be one of {CONFIDENCE_MODES}, got {confidence!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"--height and --width must be positive, got {size}")
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
    lacking = [p for p in images if not _flow_partner(root, split, p, gap).is_file()]
    if lacking:  # checked before anything is written
        raise FileNotFoundError(
            f"{len(lacking)} of {len(images)} annotated frames lack frame f - {gap} for the flow, e.g. "
            f"{lacking[0]} needs {_flow_partner(root, split, lacking[0], gap)}; pass a smaller --gap "
            f"(synthetic data: make_synthetic_cityscapes --annotate all --flow-gap {gap})"
        )

    farneback = PRESETS[params]
    record = {
        "farneback": farneback.to_dict(),
        "gap": gap,
        "size": list(size) if size else None,
        "confidence": confidence,
        "direction": "flow on frame f's grid pointing to frame f - gap (StreamingFarneback.flow(f, f - gap))",
        "encoding": "16-bit KITTI PNG: u,v = (R,G - 32768)/64 px, confidence = B/65535",
        "resize": "torch bilinear, antialias when shrinking, rounded (as mtl_perception.pipeline)",
    }
    folder = root / FLOW_FOLDER / split
    sidecar = folder / SIDECAR
    existing = None if overwrite else _read_sidecar(sidecar)
    if existing is not None:
        recorded = {k: v for k, v in existing.items() if k != "complete"}
        if recorded != record:
            raise ValueError(
                f"{sidecar} records other flow parameters than requested; "
                f"existing {recorded}, requested {record} (use --overwrite to recompute everything)"
            )
    elif not overwrite and _existing_flow_files(folder):
        raise ValueError(
            f"{folder} holds flow files but no {SIDECAR}: their parameters are unknown "
            f"(use --overwrite to recompute everything)"
        )
    if overwrite:  # delete first, then record the new parameters: never new parameters over old files
        try:
            previous = _read_sidecar(sidecar)
        except ValueError:
            previous = None  # a damaged sidecar is replaced below
        if previous is not None and previous.get("complete") is not False:
            _write_json_atomic(sidecar, {**previous, "complete": False})  # its files are about to go
        for old in _existing_flow_files(folder):
            old.unlink()
    _write_json_atomic(sidecar, {**record, "complete": False})

    flow_input = FlowInput(farneback, device=device, confidence_mode=confidence)
    done = {"computed": 0, "skipped": 0}
    for img_path in tqdm(images, desc=f"flow {split}", unit="frame", disable=not show_progress):
        fid = FrameId.parse(img_path)
        out = flow_path(root, split, fid)
        earlier = cityscapes_path(root, "image_sequence", split, FrameId(fid.city, fid.seq, fid.frame - gap))
        if out.exists():
            expected = size or _read_rgb(img_path).shape[:2]
            if _is_done(out, expected):
                done["skipped"] += 1
                continue
            print(
                f"make_flow_dataset: warning: {out} is damaged or of another size; recomputing",
                file=sys.stderr,
            )
        cur_rgb, prev_rgb = _read_rgb(img_path), _read_rgb(earlier)
        if cur_rgb.shape != prev_rgb.shape:
            raise ValueError(f"{earlier} is {prev_rgb.shape}, {img_path} is {cur_rgb.shape}")
        flow_np, conf_np = frame_flow(flow_input, cur_rgb, prev_rgb, size)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_flow_png(out, flow_np, np.clip(conf_np, 0.0, 1.0), overwrite=True)
        done["computed"] += 1
    _write_json_atomic(sidecar, {**record, "complete": True})
    return done


@tool_main("make_flow_dataset")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make_flow_dataset", description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--split", default="train")
    ap.add_argument("--gap", type=positive_int, default=2, help="flow from frame f to frame f - gap (TI: 2)")
    ap.add_argument(
        "--device",
        default=None,
        type=torch_device,
        help="auto | cpu | cuda[:N] (default auto: cuda:0 if available)",
    )
    ap.add_argument(
        "--params",
        choices=sorted(PRESETS),
        default="cuda",
        help="Farneback preset: cuda (cv::cuda defaults, the node's default) or common",
    )
    ap.add_argument(
        "--height", type=positive_int, default=384, help="flow resolution = the node's network size"
    )
    ap.add_argument("--width", type=positive_int, default=768)
    ap.add_argument("--full-size", action="store_true", help="compute at the image's own size instead")
    ap.add_argument("--confidence", choices=CONFIDENCE_MODES, default=DEFAULT_CONFIDENCE_MODE)
    ap.add_argument("--overwrite", action="store_true", help="delete the split's flow files and recompute")
    args = ap.parse_args(argv)
    done = make_flow_dataset(
        root=args.root,
        split=args.split,
        gap=args.gap,
        device=args.device,
        params=args.params,
        size=None if args.full_size else (args.height, args.width),
        confidence=args.confidence,
        overwrite=args.overwrite,
    )
    print(f"make_flow_dataset: computed {done['computed']}, already done {done['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
