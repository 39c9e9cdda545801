"""Writing snippets in the Cityscapes layout: every frame's image, vehicle.json and timestamp, and the
annotated frames' image, label ids, instance ids, motion mask, disparity and camera file. Existing files are
never overwritten unless asked (checked before anything is written); snippets render in parallel processes on
request, each deterministic from (seed, city, sequence).

A run renders into a hidden staging folder inside the dataset root and moves its output into place only
when every snippet is written, so a failed or interrupted run leaves the dataset as it was. With
``overwrite`` the city's folders of the split are replaced as a whole (a shorter rerun leaves no frames of
the earlier one behind), and make_flow_dataset's flow of that city and split goes with them: it was
computed from the replaced images, and a rerun of make_flow_dataset would otherwise keep it as done."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.atomic import staging_directory
from mtl_perception.data.cityscapes import (
    FLOW_FOLDER,
    LAYOUT,
    FrameId,
    cityscapes_path,
    depth_to_disparity,
)
from mtl_perception.signals import WorkerPool, signals_deferred

from .annotation import DEFAULT_FLOW_GAP, annotated_frames
from .geometry import cityscapes_like_camera
from .render import render_frame
from .street import make_scene
from .world import Scene

EVERY_FRAME_KINDS = ("image_sequence", "vehicle", "timestamp")
ANNOTATED_FRAME_KINDS = ("image", "label_ids", "instance_ids", "motion", "disparity", "camera")
#: the top-level folders a run writes into (each holds ``{split}/{city}/``)
GENERATED_FOLDERS = tuple(dict.fromkeys(LAYOUT[k][0] for k in EVERY_FRAME_KINDS + ANNOTATED_FRAME_KINDS))


def _sequence_rng(seed: int, city: str, seq: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(city.encode()), seq])


def sequence_outputs(
    root: Path,
    split: str,
    city: str,
    seq: int,
    num_frames: int,
    *,
    annotate: str = "cityscapes",
    flow_gap: int = DEFAULT_FLOW_GAP,
) -> list[Path]:
    """Every file ``generate_sequence`` writes for this snippet."""
    paths = []
    for f in range(num_frames):
        fid = FrameId(city, seq, f)
        paths += [cityscapes_path(root, k, split, fid) for k in EVERY_FRAME_KINDS]
    for f in annotated_frames(num_frames, annotate, flow_gap):
        paths += [cityscapes_path(root, k, split, FrameId(city, seq, f)) for k in ANNOTATED_FRAME_KINDS]
    return paths


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = array[..., ::-1] if array.ndim == 3 else array
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise OSError(f"could not write {path}")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _vehicle_json(scene: Scene, i: int) -> dict:
    x, y, psi = scene.poses[i]
    lat0, lon0 = 50.7753, 6.0839  # a reference point; positions follow the world x (north-ish) / y
    return {
        "gpsHeading": float(np.degrees(-psi) % 360.0),
        "gpsLatitude": lat0 + x / 111_320.0,
        "gpsLongitude": lon0 - y / (111_320.0 * np.cos(np.radians(lat0))),
        "outsideTemperature": 18.5,
        "speed": float(scene.speeds[i]),
        "yawRate": float(scene.yaw_rates[i]),
    }


def generate_sequence(
    root: Path,
    split: str,
    city: str,
    seq: int,
    num_frames: int,
    height: int,
    width: int,
    seed: int,
    fps: float = 17.0,
    progress=None,
    *,
    annotate: str = "cityscapes",
    flow_gap: int = DEFAULT_FLOW_GAP,
) -> None:
    """Render and write one snippet in the Cityscapes layout."""
    scene = make_scene(_sequence_rng(seed, city, seq), num_frames, fps)
    cam = cityscapes_like_camera(height, width)
    annotated = set(annotated_frames(num_frames, annotate, flow_gap))
    for i in range(num_frames):
        fid = FrameId(city, seq, i)
        frame = render_frame(scene, i, cam, height, width)
        _write_png(cityscapes_path(root, "image_sequence", split, fid), frame.image)
        _write_text(
            cityscapes_path(root, "vehicle", split, fid), json.dumps(_vehicle_json(scene, i), indent=2)
        )
        _write_text(cityscapes_path(root, "timestamp", split, fid), f"{int(scene.timestamps_ns[i])}\n")
        if i in annotated:
            _write_png(cityscapes_path(root, "image", split, fid), frame.image)
            _write_png(cityscapes_path(root, "label_ids", split, fid), frame.label_ids)
            _write_png(cityscapes_path(root, "instance_ids", split, fid), frame.instance_ids)
            _write_png(cityscapes_path(root, "motion", split, fid), frame.motion)
            _write_png(
                cityscapes_path(root, "disparity", split, fid),
                depth_to_disparity(frame.depth, cam.fx, cam.baseline),
            )
            _write_text(cityscapes_path(root, "camera", split, fid), json.dumps(cam.to_json(), indent=2))
        if progress is not None:
            progress.update(1)


def generate(
    root: str | Path,
    split: str = "train",
    sequences: int = 4,
    frames: int = 30,
    height: int = 1024,
    width: int = 2048,
    seed: int = 0,
    city: str = "synthetic",
    fps: float = 17.0,
    overwrite: bool = False,
    show_progress: bool = True,
    workers: int = 1,
    annotate: str = "cityscapes",
    flow_gap: int = DEFAULT_FLOW_GAP,
) -> None:
    """Write ``sequences`` snippets of ``frames`` frames; refuses to overwrite existing files unless asked,
    and with ``overwrite`` replaces the city's output of the split as a whole.

    ``annotate="cityscapes"`` writes ground truth for one frame per snippet (frame 19 of 30, as
    Cityscapes); ``"all"`` for every frame f >= ``flow_gap`` (those whose flow input f - flow_gap exists).
    """
    from tqdm import tqdm

    root = Path(root)
    if frames < 1 or sequences < 1 or height < 8 or width < 8 or workers < 1:
        raise ValueError(
            f"need frames, sequences, workers >= 1 and an image of at least 8x8, got "
            f"{sequences=} {frames=} {height=} {width=} {workers=}"
        )
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if not city or "_" in city or "/" in city or city.strip() != city:
        raise ValueError(f"city names must be non-empty without '_', '/' or surrounding spaces: {city!r}")
    if not split or "/" in split:
        raise ValueError(f"split must be a non-empty folder name, got {split!r}")
    annotated_frames(frames, annotate, flow_gap)  # a bad mode or gap fails here, before anything is written
    if not overwrite:
        for s in range(sequences):
            for p in sequence_outputs(root, split, city, s, frames, annotate=annotate, flow_gap=flow_gap):
                if p.exists():
                    raise FileExistsError(f"{p} exists; pass --overwrite to replace the generated files")
    bar = tqdm(
        total=sequences * frames, desc=f"render {city}/{split}", unit="frame", disable=not show_progress
    )
    with staging_directory(root / f"{city}-{split}") as stage, bar:
        snippet = dict(
            root=stage,
            split=split,
            city=city,
            num_frames=frames,
            height=height,
            width=width,
            seed=seed,
            fps=fps,
            annotate=annotate,
            flow_gap=flow_gap,
        )
        if workers <= 1 or sequences == 1:
            for s in range(sequences):
                generate_sequence(seq=s, progress=bar, **snippet)
        else:
            # one process per snippet: every snippet is independent and deterministic from (seed, city, seq)
            from concurrent.futures import as_completed

            with WorkerPool(workers) as pool:
                jobs = [pool.submit(generate_sequence, seq=s, **snippet) for s in range(sequences)]
                for job in as_completed(jobs):
                    job.result()
                    bar.update(frames)
        _publish(stage=stage, root=root, split=split, city=city, replace=overwrite)


def _publish(*, stage: Path, root: Path, split: str, city: str, replace: bool) -> None:
    """Move the staged ``{folder}/{split}/{city}`` folders into ``root``: whole (``replace``: the old ones go
    to the staging folder, deleted with it) or, beside existing files of other runs, file by file (those
    were checked not to collide). Signals wait until every folder is in place."""
    with signals_deferred():
        stale_flow = root / FLOW_FOLDER / split / city
        if replace and stale_flow.exists():
            # make_flow_dataset's flow of the frames being replaced: kept, a rerun of it would count those
            # files as done and train the new images on the old world's flow.
            stale_flow.rename(stage / f"replaced-{FLOW_FOLDER}")
        for folder in GENERATED_FOLDERS:
            new, target = stage / folder / split / city, root / folder / split / city
            if replace and target.exists():
                target.rename(stage / f"replaced-{folder}")
            if not new.is_dir():
                continue
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                new.rename(target)
                continue
            for item in sorted(new.rglob("*")):
                if item.is_file():
                    destination = target / item.relative_to(new)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    item.rename(destination)
