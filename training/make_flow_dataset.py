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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.data.cityscapes import FrameId, cityscapes_path
from mtl_perception.flow import (
    COMMON,
    CONFIDENCE_MODES,
    CUDA_DEFAULTS,
    DEFAULT_CONFIDENCE_MODE,
    write_flow_png,
)
from mtl_perception.imageio import read_image
from mtl_perception.inference import resolve_device
from mtl_perception.learning.dataset import DEFAULT_ROOT, FLOW_FOLDER, flow_path
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
    try:
        device = resolve_device(device or "auto")
    except ValueError as error:
        raise ValueError(f"--device: {error}") from error
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
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
    sidecar = root / FLOW_FOLDER / split / SIDECAR
    if sidecar.is_file():
        existing = json.loads(sidecar.read_text())
        if existing != record and not overwrite:
            raise ValueError(
                f"{sidecar} records other flow parameters than requested; "
                f"existing {existing}, requested {record} (use --overwrite to recompute everything)"
            )
    _write_json_atomic(sidecar, record)

    flow_input = FlowInput(farneback, device=device, confidence_mode=confidence)
    done = {"computed": 0, "skipped": 0}
    for img_path in tqdm(images, desc=f"flow {split}", unit="frame", disable=not show_progress):
        fid = FrameId.parse(img_path)
        out = flow_path(root, split, fid)
        if out.exists() and not overwrite:
            done["skipped"] += 1
            continue
        earlier = cityscapes_path(root, "image_sequence", split, FrameId(fid.city, fid.seq, fid.frame - gap))
        cur_rgb, prev_rgb = _read_rgb(img_path), _read_rgb(earlier)
        if cur_rgb.shape != prev_rgb.shape:
            raise ValueError(f"{earlier} is {prev_rgb.shape}, {img_path} is {cur_rgb.shape}")
        flow_np, conf_np = frame_flow(flow_input, cur_rgb, prev_rgb, size)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_flow_png(out, flow_np, np.clip(conf_np, 0.0, 1.0), overwrite=overwrite)
        done["computed"] += 1
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make_flow_dataset", description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--split", default="train")
    ap.add_argument("--gap", type=int, default=2, help="flow from frame f to frame f - gap (TI: 2)")
    ap.add_argument(
        "--device", default=None, help="auto | cpu | cuda[:N] (default auto: cuda:0 if available)"
    )
    ap.add_argument(
        "--params",
        choices=sorted(PRESETS),
        default="cuda",
        help="Farneback preset: cuda (cv::cuda defaults, the node's default) or common",
    )
    ap.add_argument("--height", type=int, default=384, help="flow resolution = the node's network size")
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--full-size", action="store_true", help="compute at the image's own size instead")
    ap.add_argument("--confidence", choices=CONFIDENCE_MODES, default=DEFAULT_CONFIDENCE_MODE)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
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
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"make_flow_dataset: error: {exc}", file=sys.stderr)
        return 2
    print(f"make_flow_dataset: computed {done['computed']}, already done {done['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
