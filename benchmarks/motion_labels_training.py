"""Are make_motion_labels' labels good enough to learn from? The shipped model's recipe
(scripts/make_shipped_model.sh: lite at 128x256, uncertainty weighting, generated streets at 256x512 with
--annotate all) trained twice on the same data and seeds, once with the generator's exact motion labels and
once with make_motion_labels' labels (train and val: a user of real Cityscapes has no other), both scored on
the held-out split's exact labels (seed 3000, as the shipped model).

    .venv/bin/python benchmarks/motion_labels_training.py [--work DIR] [--epochs 16 --milestones 12]

The two trainings run side by side with one torch thread each (what make_table --jobs 2 does on 2 cores).
Writes benchmarks/results/motion_labels_training.json.
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
from machine import cpu_name, save_result  # benchmarks/machine.py (sys.path[0] when run as a script)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ["--frames", "30", "--height", "256", "--width", "512", "--annotate", "all", "--workers", "2"]
SPLITS = {  # scripts/make_shipped_model.sh's seeds and cities
    "train": ["--seed", "1000", "--city", "synthtrain"],
    "val": ["--sequences", "4", "--seed", "2000", "--city", "synthval"],
    "test": ["--sequences", "4", "--seed", "3000", "--city", "synthheldout"],
}
FLOW = ["--height", "128", "--width", "256", "--device", "cpu"]


def _run(*argv: str, env: dict | None = None) -> None:
    subprocess.run(argv, check=True, env=env)


def _label_scores(exact: Path, generated: Path, split: str) -> dict:
    """The generated labels against the exact ones over a split (256x512)."""
    tp = fp = fn = ignored = moving = 0
    for path in sorted((exact / "gtFine" / split).glob("*/*_gtFine_labelTrainIds_motion.png")):
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
    args = ap.parse_args(argv)
    exact, generated, labels = args.work / "exact", args.work / "generated", args.work / "labels"
    started = time.perf_counter()
    if not (exact / "leftImg8bit" / "test").is_dir():
        shutil.rmtree(args.work, ignore_errors=True)
        for split, flags in SPLITS.items():
            sequences = ["--sequences", str(args.train_sequences)] if split == "train" else []
            _run(
                str(BIN / "make_synthetic_cityscapes"),
                "--out",
                str(exact),
                "--split",
                split,
                *sequences,
                *flags,
                *DATA,
            )
            _run(str(BIN / "make_flow_dataset"), "--root", str(exact), "--split", split, *FLOW)
    data_s = time.perf_counter() - started

    started = time.perf_counter()
    for split in ("train", "val"):
        _run(
            str(BIN / "make_motion_labels"),
            "--root",
            str(exact),
            "--split",
            split,
            "--out",
            str(labels),
            "--workers",
            "2",
        )
    labels_s = time.perf_counter() - started
    shutil.rmtree(generated, ignore_errors=True)
    for path in exact.rglob("*"):  # the same files, hard-linked; the motion labels of train and val replaced
        if path.is_file():
            target = generated / path.relative_to(exact)
            target.parent.mkdir(parents=True, exist_ok=True)
            made = labels / path.relative_to(exact)
            if made.is_file():
                shutil.copyfile(made, target)
            else:
                os.link(path, target)

    recipe = [
        "--preset", "lite", "--img_resize", "128", "256", "--output_size", "256", "512", "--batch_size", "8",
        "--lr", "1e-3", "--warmup_epochs", "1", "--warmup_factor", "0.1", "--epochs", str(args.epochs),
        "--milestones", *map(str, args.milestones), "--multi_task_type", "uncertainty", "--workers", "1",
        "--evaluate_every", "2", "--overwrite",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {name: args.work / f"run_{name}" for name in ("exact", "generated")}
    started = time.perf_counter()
    processes = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(REPO / "training" / "train.py"),
                "--data_path",
                str(root),
                *recipe,
                "--output_dir",
                str(runs[name]),
            ],
            env=env,
        )  # fmt: skip
        for name, root in (("exact", exact), ("generated", generated))
    }
    codes = {name: p.wait() for name, p in processes.items()}
    train_s = time.perf_counter() - started
    if any(codes.values()):
        print(f"training failed: {codes}", file=sys.stderr)
        return 1
    held_out = {}
    for name, run in runs.items():
        scores = args.work / f"held_out_{name}.json"
        _run(
            sys.executable, str(REPO / "training" / "evaluate.py"), "--checkpoint", str(run / "best.pt"),
            "--data_path", str(exact), "--split", "test", "--img_resize", "128", "256",
            "--output_size", "256", "512", "--workers", "1", "--json", str(scores), env=env,
        )  # fmt: skip
        held_out[name] = json.loads(scores.read_text())
    result = {
        "machine": f"{os.cpu_count()}-core {cpu_name()}",
        "recipe": "scripts/make_shipped_model.sh's, with the epochs and milestones below",
        "train_sequences": args.train_sequences,
        "epochs": args.epochs,
        "milestones": args.milestones,
        "labels_vs_exact": {split: _label_scores(exact, generated, split) for split in ("train", "val")},
        "held_out": held_out,
        "seconds": {"data": data_s, "labels": labels_s, "training_side_by_side": train_s},
    }
    out = save_result(result, Path(__file__).resolve().parent / "results" / "motion_labels_training.json")
    for name in runs:
        m = held_out[name]
        print(
            f"{name:>9}: held-out motion mIoU {m['motion_miou']:.4f}, semantic {m['semantic_miou']:.4f}, "
            f"depth ARD {m['depth_ard']:.4f}"
        )
    print(f"labels vs exact: {result['labels_vs_exact']}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
