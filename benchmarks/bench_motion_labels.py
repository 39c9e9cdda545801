"""make_motion_labels against the exact answer: generated snippets, their exact motion ground truth moved
aside (the tool then sees only the files real Cityscapes publishes), the tool's labels compared with it.

    .venv/bin/python benchmarks/bench_motion_labels.py --size 512x1024 --sequences 24 --seed 700 [--workers 2]
        [--work DIR] [--json benchmarks/results/motion_labels_512x1024.json]

Reports the moving-class IoU over every annotated frame (pixels the tool left undecided excluded), the
share of truly moving pixels left undecided, the same by distance band and class, and the tool's speed
(frames/s, wall clock, this machine) with the projection for Cityscapes train + val (3475 frames).
Each snippet is rendered as the annotated frame and its flow partner only (--frames 3: frame 2 annotated,
partner frame 0; the generator times the traffic around the annotated frame whatever its index).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from machine import cpu_name, save_result  # benchmarks/machine.py (sys.path[0] when run as a script)

from mtl_perception.data.cityscapes import FrameId, cityscapes_path, disparity_to_depth, read_camera
from mtl_perception.data.motion_labels.frame import MOVABLE_LABEL_IDS
from mtl_perception.data.synthetic import generate

CITYSCAPES_TRAIN_VAL_FRAMES = 2975 + 500
BANDS_M = ((0, 10), (10, 20), (20, 40), (40, 80), (80, float("inf")))
SPLIT, CITY = "val", "bench"


def _counts(pred: np.ndarray, truth: np.ndarray, select: np.ndarray) -> np.ndarray:
    """[true positive, false positive, false negative, moving left undecided, moving, undecided] pixels."""
    decided = select & (pred != 128)
    moving = pred == 255
    return np.array(
        [
            (decided & moving & truth).sum(),
            (decided & moving & ~truth).sum(),
            (decided & ~moving & truth).sum(),
            (select & (pred == 128) & truth).sum(),
            (select & truth).sum(),
            (select & (pred == 128)).sum(),
        ],
        np.int64,
    )


def _scores(c: np.ndarray) -> dict:
    tp, fp, fn, ignored, moving, undecided = (int(v) for v in c)
    return {
        "moving_iou": tp / (tp + fp + fn) if tp + fp + fn else None,
        "moving_ignored_share": ignored / moving if moving else None,
        "moving_pixels": moving,
        "static_pixels_labelled_moving": fp,
        "moving_pixels_labelled_static": fn,
        "undecided_pixels": undecided,
    }


def compare(root: Path, out: Path, exact: Path) -> dict:
    """Scores of the labels in ``out`` against the exact motion maps kept in ``exact``."""
    total = np.zeros(6, np.int64)
    cells: dict[tuple[str, str], np.ndarray] = {}
    frames = 0
    for path in sorted((exact / "gtFine" / SPLIT).glob("*/*_gtFine_labelTrainIds_motion.png")):
        fid = FrameId.parse(path)
        truth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) == 255
        pred = cv2.imread(str(cityscapes_path(out, "motion", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
        labels = cv2.imread(str(cityscapes_path(root, "label_ids", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
        camera = read_camera(cityscapes_path(root, "camera", SPLIT, fid))
        disparity = cv2.imread(str(cityscapes_path(root, "disparity", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
        depth = disparity_to_depth(disparity, camera.fx, camera.baseline)
        everywhere = np.ones(truth.shape, bool)
        total += _counts(pred, truth, everywhere)
        frames += 1
        for label_id in MOVABLE_LABEL_IDS:
            of_class = labels == label_id
            if not of_class.any():
                continue
            name = {24: "person", 26: "car"}.get(label_id, str(label_id))
            for lo, hi in BANDS_M:
                band = f"{lo:g}-{hi:g} m"
                select = of_class & (depth >= lo) & (depth < hi)
                cell = cells.setdefault((band, name), np.zeros(6, np.int64))
                cell += _counts(pred, truth, select)
    return {
        "frames": frames,
        "all": _scores(total),
        "by_band_and_class": [{"band": b, "class": c, **_scores(v)} for (b, c), v in sorted(cells.items())],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="512x1024")
    ap.add_argument("--sequences", type=int, default=24)
    ap.add_argument("--seed", type=int, default=700)
    ap.add_argument("--frames", type=int, default=3, help="frames per snippet (the last annotated)")
    ap.add_argument("--workers", type=int, default=2, help="make_motion_labels --workers (and rendering)")
    ap.add_argument("--work", type=Path, help="keep the generated data here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_motion_labels_"))
    root, exact, out = work / "root", work / "exact", work / "labels"
    try:
        if not (root / "leftImg8bit" / SPLIT).is_dir():
            generate(
                root,
                SPLIT,
                args.sequences,
                args.frames,
                h,
                w,
                seed=args.seed,
                city=CITY,
                workers=args.workers,
            )
            for path in sorted((root / "gtFine" / SPLIT).glob("*/*_gtFine_labelTrainIds_motion.png")):
                target = exact / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)  # the exact answer: a file real Cityscapes does not have
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        command = [str(Path(sys.executable).parent / "make_motion_labels"), "--root", str(root)]
        command += ["--split", SPLIT, "--out", str(out), "--workers", str(args.workers)]
        run = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if run.returncode != 0:
            print(run.stdout, run.stderr, file=sys.stderr)
            return run.returncode
        print(run.stdout.strip())
        scores = compare(root, out, exact)
        report = json.loads((out / f"motion_labels_{SPLIT}.json").read_text())
        fps = scores["frames"] / wall
        result = {
            "machine": f"{os.cpu_count()}-core {cpu_name()}",
            "load_average_at_end": os.getloadavg()[0],
            "size": f"{h}x{w}",
            "seed": args.seed,
            "sequences": args.sequences,
            "frames_per_snippet": args.frames,
            "workers": args.workers,
            **scores,
            "wall_s": wall,
            "frames_per_s": fps,
            "cityscapes_train_val_hours": CITYSCAPES_TRAIN_VAL_FRAMES / fps / 3600,
            "tool_report": {k: report[k] for k in ("frames", "instances", "pixels", "background", "flow")},
        }
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    a = result["all"]
    print(
        f"{args.size}: {scores['frames']} frames, moving IoU {a['moving_iou']:.3f}, moving pixels left "
        f"undecided {100 * a['moving_ignored_share']:.1f} %, {fps:.2f} frames/s with {args.workers} workers "
        f"(Cityscapes train+val: {result['cityscapes_train_val_hours']:.2f} h)"
    )
    for row in result["by_band_and_class"]:
        if row["moving_pixels"]:
            iou = "n/a" if row["moving_iou"] is None else f"{row['moving_iou']:.3f}"
            print(
                f"  {row['band']:>9} {row['class']:>6}: IoU {iou}, ignored "
                f"{100 * row['moving_ignored_share']:.1f} % of {row['moving_pixels']} moving px"
            )
    save_result(
        result, args.json or Path(__file__).resolve().parent / "results" / f"motion_labels_{args.size}.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
