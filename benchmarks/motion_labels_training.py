"""Are make_motion_labels' labels good enough to learn from? The shipped model's recipe
(scripts/make_shipped_model.sh: lite at 128x256, uncertainty weighting, generated streets at 256x512 with
--annotate all) trained twice on the same data and seeds, once with the generator's exact motion labels and
once with make_motion_labels' labels (train and val: a user of real Cityscapes has no other), both scored on
the held-out split's exact labels (seed 3000, as the shipped model).

    .venv/bin/python benchmarks/motion_labels_training.py [--work DIR] [--epochs 16 --milestones 12]
        [--label-size 512x1024] [--train exact generated]

``--label-size HxW``: make the labels where the tool sees better, as on Cityscapes' own 1024x2048 frames:
the same streets (same seeds and cities) rendered at that size, labelled there, and each instance's decision
carried to the 256x512 training maps by its instance id (ids are the scene's, whatever the size). Without
it the tool labels the 256x512 training frames themselves. ``--train`` names the runs to (re)train; a run
left out is scored from its existing best.pt. Two runs train side by side with one torch thread each (what
make_table --jobs 2 does on 2 cores). Writes benchmarks/results/motion_labels_training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from machine import cpu_name, save_result  # benchmarks/machine.py (sys.path[0] when run as a script)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ["--frames", "30", "--annotate", "all", "--workers", "2"]
SPLITS = {  # scripts/make_shipped_model.sh's seeds and cities
    "train": ["--seed", "1000", "--city", "synthtrain"],
    "val": ["--sequences", "4", "--seed", "2000", "--city", "synthval"],
    "test": ["--sequences", "4", "--seed", "3000", "--city", "synthheldout"],
}
FLOW = ["--height", "128", "--width", "256", "--device", "cpu"]
MOTION_MAPS = "*/*_gtFine_labelTrainIds_motion.png"


def _run(*argv: str, env: dict | None = None) -> None:
    subprocess.run(argv, check=True, env=env)


def _generate(root: Path, split: str, size: tuple[int, int], sequences: int) -> None:
    count = ["--sequences", str(sequences)] if split == "train" else []
    _run(str(BIN / "make_synthetic_cityscapes"), "--out", str(root), "--split", split, *count, *SPLITS[split],
         "--height", str(size[0]), "--width", str(size[1]), *DATA)  # fmt: skip


def _carry_by_instance(labelled: Path, labels: Path, target: Path, split: str) -> None:
    """Each instance's label at the labelling size -> the same instance's pixels in ``target``'s maps."""
    for path in sorted((labels / "gtFine" / split).glob(MOTION_MAPS)):
        rel = path.relative_to(labels)
        big = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        big_ids = cv2.imread(str(labelled / str(rel).replace("labelTrainIds_motion", "instanceIds")), -1)
        small_ids = cv2.imread(str(target / str(rel).replace("labelTrainIds_motion", "instanceIds")), -1)
        lut = {int(i): int(np.median(big[big_ids == i])) for i in np.unique(big_ids) if i >= 1000}
        out = np.zeros(small_ids.shape, np.uint8)
        for instance, code in lut.items():
            out[small_ids == instance] = code
        cv2.imwrite(str(target / rel), out)


def _label_scores(exact: Path, generated: Path, split: str) -> dict:
    """The generated labels against the exact ones over a split (256x512)."""
    tp = fp = fn = ignored = moving = 0
    for path in sorted((exact / "gtFine" / split).glob(MOTION_MAPS)):
        truth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) == 255
        label = cv2.imread(str(generated / path.relative_to(exact)), cv2.IMREAD_UNCHANGED)
        decided = label != 128
        tp += int((decided & (label == 255) & truth).sum())
        fp += int((decided & (label == 255) & ~truth).sum())
        fn += int((decided & (label == 0) & truth).sum())
        ignored += int((~decided & truth).sum())
        moving += int(truth.sum())
    return {"moving_iou": tp / (tp + fp + fn), "moving_ignored_share": ignored / moving}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / "data" / "motion_labels_training")
    ap.add_argument("--train-sequences", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--milestones", type=int, nargs="*", default=[12])
    ap.add_argument("--label-size", default=None, help="HxW to label at (default: the training frames' own)")
    ap.add_argument("--train", nargs="*", choices=("exact", "generated"), default=["exact", "generated"])
    args = ap.parse_args(argv)
    exact, generated = args.work / "exact", args.work / "generated"
    seconds = {}
    started = time.perf_counter()
    if not (exact / "leftImg8bit" / "test").is_dir():
        shutil.rmtree(args.work, ignore_errors=True)
        for split in SPLITS:
            _generate(exact, split, (256, 512), args.train_sequences)
            _run(str(BIN / "make_flow_dataset"), "--root", str(exact), "--split", split, *FLOW)
    seconds["data"] = time.perf_counter() - started

    started = time.perf_counter()
    tag = args.label_size or "256x512"
    labelled = exact if args.label_size is None else args.work / f"render_{tag}"
    labels = args.work / f"labels_{tag}"
    for split in ("train", "val"):
        if args.label_size is not None and not (labelled / "leftImg8bit" / split).is_dir():
            _generate(labelled, split, tuple(int(v) for v in tag.split("x")), args.train_sequences)
        _run(str(BIN / "make_motion_labels"), "--root", str(labelled), "--split", split, "--out", str(labels),
             "--workers", "2")  # fmt: skip
    seconds["labels"] = time.perf_counter() - started
    shutil.rmtree(generated, ignore_errors=True)
    for path in exact.rglob(
        "*"
    ):  # the same files, hard-linked; the motion maps of train and val replaced below
        if path.is_file():
            target = generated / path.relative_to(exact)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    for split in ("train", "val"):
        for path in (generated / "gtFine" / split).glob(MOTION_MAPS):
            path.unlink()
        if args.label_size is None:
            for path in (labels / "gtFine" / split).glob(MOTION_MAPS):
                shutil.copyfile(path, generated / path.relative_to(labels))
        else:
            _carry_by_instance(labelled, labels, generated, split)

    recipe = [
        "--preset", "lite", "--img_resize", "128", "256", "--output_size", "256", "512", "--batch_size", "8",
        "--lr", "1e-3", "--warmup_epochs", "1", "--warmup_factor", "0.1", "--epochs", str(args.epochs),
        "--milestones", *map(str, args.milestones), "--multi_task_type", "uncertainty", "--workers", "1",
        "--evaluate_every", "2", "--overwrite",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    roots = {"exact": exact, "generated": generated}
    runs = {name: args.work / f"run_{name}" for name in roots}
    started = time.perf_counter()
    processes = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(REPO / "training" / "train.py"),
                "--data_path",
                str(roots[name]),
                *recipe,
                "--output_dir",
                str(runs[name]),
            ],
            env=env,
        )  # fmt: skip
        for name in args.train
    }
    codes = {name: p.wait() for name, p in processes.items()}
    seconds["training_side_by_side"] = time.perf_counter() - started
    if any(codes.values()):
        print(f"training failed: {codes}", file=sys.stderr)
        return 1
    held_out = {}
    for name, run in runs.items():
        scores = args.work / f"held_out_{name}.json"
        _run(sys.executable, str(REPO / "training" / "evaluate.py"), "--checkpoint", str(run / "best.pt"),
             "--data_path", str(exact), "--split", "test", "--img_resize", "128", "256",
             "--output_size", "256", "512", "--workers", "1", "--json", str(scores), env=env)  # fmt: skip
        held_out[name] = json.loads(scores.read_text())
    result = {
        "machine": f"{os.cpu_count()}-core {cpu_name()}",
        "recipe": "scripts/make_shipped_model.sh's, with the epochs and milestones below",
        "train_sequences": args.train_sequences,
        "epochs": args.epochs,
        "milestones": args.milestones,
        "label_size": tag,
        "trained_this_run": args.train,
        "labels_vs_exact": {split: _label_scores(exact, generated, split) for split in ("train", "val")},
        "held_out": held_out,
        "seconds": seconds,
    }
    out = save_result(
        result, Path(__file__).resolve().parent / "results" / f"motion_labels_training_{tag}.json"
    )
    for name in runs:
        m = held_out[name]
        print(f"{name:>9}: held-out motion mIoU {m['motion_miou']:.4f}, semantic {m['semantic_miou']:.4f}, "
              f"depth ARD {m['depth_ard']:.4f}")  # fmt: skip
    print(f"labels vs exact: {result['labels_vs_exact']}; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
