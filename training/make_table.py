"""Train and evaluate every row of the seed's results table, over several seeds: markdown + JSON.

    python training/make_table.py --out table/              # lite preset on generated data (< 1 h, 2 cores)
    python training/make_table.py --out table/ --preset ti --data_path ./data/datasets/cityscapes/data \
        --gpus 0 1                                         # TI's sizes and recipe on Cityscapes
    python training/make_table.py --out table/ --quick      # about a minute: every cell from a real run

Rows: single task x3 (depth and semantic on RGB, motion on RGB + flow, as TI), vanilla MTL, TI's
GradNorm (``pseudo_grad_norm``), uncertainty, and one beyond-TI method (``--beyond``, default
``nash_mtl``; ``--beyond best`` screens all of them on the first seed and keeps the lowest Δm). Every
(row, seed) is one ``training/train.py`` process (so its peak memory is its own), then ``best.pt`` is scored
by ``training/evaluate.py``'s code on ``--split`` at ``--output_size``; ``--jobs`` runs train side by side.
Finished runs (``result.json``, with the flags train.py got) are kept, so an interrupted table continues
where it stopped; a kept run whose flags differ from this command's is an error, not a silent reuse. Without
``--data_path`` a synthetic Cityscapes set is generated under ``--out`` (``make_synthetic_cityscapes``) with
its flow (``make_flow_dataset`` at ``--img_resize``). Definitions (Δm, std):
``mtl_perception.learning.results_table``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.cli import tool_main
from mtl_perception.data.flow_folder import check_training_flow
from mtl_perception.folder_lock import folder_lock
from mtl_perception.learning.results_table import (
    BEYOND_TI,
    SINGLE_ROWS,
    TI_ROWS,
    Row,
    baseline_values,
    beyond_row,
    format_markdown,
    pick_beyond,
    summarize,
    table_rows,
)
from mtl_perception.model import FlowContract
from mtl_perception_training.evaluate import json_ready

TRAIN_SCRIPT = Path(__file__).resolve().parent / "train.py"
RESULT = "result.json"

# The lite table on 2 CPU cores in under an hour (docs/training.md, "Results table"); --quick: seconds.
SETTINGS = {
    "lite": {
        "train_sequences": 240,
        "val_sequences": 96,
        "data_size": (192, 384),
        "img_resize": (96, 192),
        "output_size": (192, 384),
        "epochs": 20,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup_epochs": 1,
        "milestones": (8, 16),  # TI's x0.5 at 100 and 200 of 250 epochs, scaled to 20
        "evaluate_every": 5,
        "seeds": (0, 1, 2),
        "workers": 1,
        # Two single-threaded runs side by side do 1.5-1.7x the work of one two-threaded run on 2 cores:
        # the lite network's small convolutions do not keep two threads busy (docs/training.md).
        "jobs": 2,
    },
    "quick": {
        "train_sequences": 4,
        "val_sequences": 2,
        "data_size": (64, 128),
        "img_resize": (32, 64),
        "output_size": (64, 128),
        "epochs": 1,
        "batch_size": 2,
        "lr": 1e-3,
        "warmup_epochs": 0,
        "milestones": (),
        "evaluate_every": 1,
        "seeds": (0, 1),
        "workers": 0,
        "jobs": 2,
    },
    # TI's recipe (train.py's defaults) on the user's data; only the sizes are the seed's.
    "ti": {
        "img_resize": (384, 768),
        "output_size": (1024, 2048),
        "epochs": 250,
        "batch_size": 16,
        "lr": 1e-4,
        "warmup_epochs": 5,
        "milestones": (100, 200),
        "evaluate_every": 1,
        "seeds": (0, 1, 2),
        "workers": 8,
        "jobs": 1,  # each run takes every GPU of --gpus
    },
}
SYNTHETIC_FRAMES = 3  # a 3-frame snippet annotates its last frame; its flow partner (gap 2) is frame 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="training/make_table.py", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for data/, runs/, table.md, table.json")
    ap.add_argument("--preset", choices=("lite", "ti"), default="lite", help="network preset and setting")
    ap.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, 2 seeds: checks the pipeline")
    ap.add_argument("--data_path", type=Path, help="existing Cityscapes-layout root (default: generate)")
    ap.add_argument("--split", default="val", help="split the table is evaluated on (train.py's --val_split)")
    ap.add_argument(
        "--beyond",
        default="nash_mtl",
        help="the beyond-TI weighting method of the last row; 'best': train the first seed of every "
        f"beyond-TI method ({', '.join(BEYOND_TI)}), keep the lowest Δm, train its other seeds (about 2x the "
        "time)",
    )
    ap.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2; --quick 0 1)")
    sizes = {
        "img_resize": "network input size (train.py --img_resize)",
        "output_size": "resolution the metrics are computed at (train.py, evaluate.py --output_size)",
        "data_size": "resolution of the generated frames (no --data_path)",
    }
    for flag, text in sizes.items():
        ap.add_argument(f"--{flag}", type=int, nargs=2, metavar=("H", "W"), help=text)
    for flag, kind in (("epochs", int), ("batch_size", int), ("lr", float), ("warmup_epochs", int)):
        ap.add_argument(f"--{flag}", type=kind, help=f"train.py --{flag}")
    ap.add_argument("--milestones", type=int, nargs="*", help="epochs where the LR halves (train.py)")
    ap.add_argument("--evaluate_every", type=int, help="validation (best.pt selection) every N epochs")
    ap.add_argument("--train_sequences", type=int, help="generated training samples (one per snippet)")
    ap.add_argument("--val_sequences", type=int, help="generated validation samples")
    ap.add_argument("--workers", type=int, help="DataLoader workers of each run (lite 1, quick 0, ti 8)")
    ap.add_argument(
        "--jobs",
        type=int,
        help="runs trained at once, each with (CPU cores / jobs) torch threads (lite 2, ti 1)",
    )
    ap.add_argument("--gpus", type=int, nargs="+", help="passed to train.py (DDP); leave out for the CPU")
    ap.add_argument(
        "--device",
        default=None,
        help="passed to train.py; evaluation device (default: cuda with --gpus, else cpu)",
    )
    ap.epilog = "Unset values come from the setting (--preset lite / ti, or --quick): " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {v}" for k, v in values.items()) for name, values in SETTINGS.items()
    )
    args = ap.parse_args(argv)
    if args.beyond not in (*BEYOND_TI, "best"):
        ap.error(f"--beyond {args.beyond!r}: choose 'best' or a method beyond TI's: {', '.join(BEYOND_TI)}")
    setting = SETTINGS["quick" if args.quick else args.preset]
    for key, value in setting.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.preset == "ti" and args.data_path is None:
        ap.error("--preset ti trains TI's network on real data: pass --data_path (the Cityscapes root)")
    if args.jobs < 1:
        ap.error(f"--jobs: at least 1, got {args.jobs}")
    if len(args.seeds) < 2:
        ap.error(f"--seeds: mean ± std needs at least 2 seeds, got {args.seeds}")
    return args


def generate_data(args) -> Path:
    """The synthetic train/val splits and their flow, once (an existing, complete folder is reused)."""
    from mtl_perception.data.synthetic import generate
    from mtl_perception_training.make_flow_dataset import make_flow_dataset

    root = args.out / "data"
    done = root / "generated.json"
    record = {
        "train_sequences": args.train_sequences,
        "val_sequences": args.val_sequences,
        "frames": SYNTHETIC_FRAMES,
        "size": list(args.data_size),
        "flow_size": list(args.img_resize),
    }
    if done.is_file():
        if json.loads(done.read_text()) != record:
            raise ValueError(f"{root} holds data generated with other settings ({done}); use another --out")
        return root
    h, w = args.data_size
    for split, count, seed in (("train", args.train_sequences, 0), (args.split, args.val_sequences, 1)):
        generate(
            root, split, count, SYNTHETIC_FRAMES, h, w, seed=seed, overwrite=True, show_progress=False,
            workers=min(count, os.cpu_count() or 1),
        )  # fmt: skip
        flow = FlowContract(size=tuple(args.img_resize))  # the project's flow defaults at the network size
        make_flow_dataset(root, split, flow=flow, device="cpu", overwrite=True, show_progress=False)
    atomic_write_bytes(done, json.dumps(record, indent=2).encode())
    return root


def train_argv(args, row: Row, seed: int, data: Path, out: Path) -> list[str]:
    argv = [
        "--data_path", str(data), "--val_split", args.split, "--preset", args.preset,
        "--tasks", *row.tasks, "--multi_task_type", row.method, "--seed", str(seed),
        "--img_resize", *map(str, args.img_resize), "--output_size", *map(str, args.output_size),
        "--epochs", str(args.epochs), "--batch_size", str(args.batch_size), "--lr", str(args.lr),
        "--warmup_epochs", str(args.warmup_epochs), "--milestones", *map(str, args.milestones),
        "--evaluate_every", str(args.evaluate_every),
        "--workers", str(args.workers), "--output_dir", str(out), "--overwrite",
        "--tensorboard_images", "0", "--no-export_onnx",
    ]  # fmt: skip
    if args.gpus:
        argv += ["--gpus", *map(str, args.gpus)]
    if args.device:
        argv += ["--device", args.device]
    return argv


def _train_record(metrics_file: Path) -> dict:
    """Time per step (mean over the epochs after the first, which pays worker start-up; the first alone for
    a 1-epoch run) and the peak memory (max over epochs) that train.py logged."""
    if not metrics_file.is_file():
        raise FileNotFoundError(f"train.py wrote no {metrics_file}")
    epochs = json.loads(metrics_file.read_text())
    for key in ("time_per_step_s", "peak_memory_mb"):
        if not epochs or any(key not in e for e in epochs):
            raise ValueError(f"{metrics_file}: every epoch needs {key!r}")
    steady = epochs[1:] or epochs
    return {
        "time_per_step_s": float(np.mean([e["time_per_step_s"] for e in steady])),
        "peak_memory_mb": float(max(e["peak_memory_mb"] for e in epochs)),
        "epochs": len(epochs),
    }


_GMACS: dict[str, float] = {}


def gmacs(checkpoint: Path) -> float:
    """GMACs at TI's 384x768 of the checkpoint's network, counted once per architecture (seeds share it)."""
    from mtl_perception.model import load_checkpoint
    from mtl_perception.model.complexity import TI_SIZE, count_macs

    model, _ = load_checkpoint(checkpoint)
    key = json.dumps(model.config.to_dict(), sort_keys=True)
    if key not in _GMACS:
        _GMACS[key] = count_macs(model, *TI_SIZE) / 1e9
    return _GMACS[key]


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def check_cached_flags(path: Path, *, saved: list[str] | None, current: list[str]) -> None:
    """A cached run is reused only if train.py got the same flags (a changed --epochs, --lr or method option
    in the same --out must not reuse the old runs). --output_dir is left out: the folder may move."""

    def flags(argv: list[str]) -> dict[str, list[str]]:
        parsed: dict[str, list[str]] = {}
        name = None
        for item in argv:
            if item.startswith("--"):
                name = item
                parsed[name] = []
            elif name is not None:
                parsed[name].append(item)
        parsed.pop("--output_dir", None)
        return parsed

    if saved is None:
        raise ValueError(f"{path} does not record the flags it was trained with; use another --out")
    old, new = flags(saved), flags(current)
    changed = [
        f"{name} {' '.join(old.get(name, ['(absent)']))} (now: {' '.join(new.get(name, ['(absent)']))})"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]
    if changed:
        raise ValueError(
            f"{path} was trained with other flags: {'; '.join(changed)}; use another --out or delete that run"
        )


def run_one(args, row: Row, seed: int, data: Path) -> dict:
    """Train (subprocess), evaluate best.pt, count GMACs; cached in runs/<row>/seed<k>/result.json."""
    from mtl_perception_training import evaluate as evaluate_cli

    out = args.out / "runs" / row.key / f"seed{seed}"
    argv = train_argv(args, row, seed, data, out)
    cached = out / RESULT
    if cached.is_file():
        result = json.loads(cached.read_text())
        check_cached_flags(cached, saved=result.get("train_argv"), current=argv)
        return result
    start = time.perf_counter()
    command = [sys.executable, str(TRAIN_SCRIPT), *argv]
    print(f"make_table: {row.key} seed {seed}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    env = dict(os.environ)
    if args.jobs > 1:  # a user's own OMP_NUM_THREADS wins
        env.setdefault("OMP_NUM_THREADS", str(threads_per_job(args.jobs)))
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"train.py failed for {row.key} seed {seed} (exit {done.returncode}):\n{tail}")
    trained_s = time.perf_counter() - start
    best = out / "best.pt"
    eval_args = evaluate_cli.parse_args(
        [
            "--checkpoint", str(best), "--data_path", str(data), "--split", args.split,
            "--img_resize", *map(str, args.img_resize), "--output_size", *map(str, args.output_size),
            "--workers", "0", "--device", args.device or ("cuda" if args.gpus else "cpu"),
        ]
    )  # fmt: skip
    evaluated = evaluate_cli.run(eval_args)
    result = {
        "row": row.key,
        "seed": seed,
        "metrics": evaluated["metrics"],
        **_train_record(out / "metrics.json"),
        "gmacs": gmacs(best),
        "train_wall_s": trained_s,
        "total_wall_s": time.perf_counter() - start,
        "jobs": args.jobs,
        "train_argv": argv,
    }
    atomic_write_bytes(cached, json.dumps(result, indent=2).encode())
    return result


def run_all(args, jobs: list[tuple[Row, int]], data: Path) -> dict[str, list[dict]]:
    """Every (row, seed) of ``jobs``, ``--jobs`` at a time; the first failure cancels those not yet started.
    Returns each row's results in seed order."""
    if args.jobs == 1:
        results = [run_one(args, row, seed, data) for row, seed in jobs]
    else:
        import torch

        torch.set_num_threads(threads_per_job(args.jobs))  # the evaluations run in this process's threads
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_one, args, row, seed, data) for row, seed in jobs]
            try:
                results = [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    by_row: dict[str, list[dict]] = {}
    for (row, _), result in zip(jobs, results, strict=True):
        by_row.setdefault(row.key, []).append(result)
    return by_row


def every_seed(rows, seeds) -> list[tuple[Row, int]]:
    return [(row, seed) for row in rows for seed in seeds]


def run_table(args, data: Path) -> tuple[tuple[Row, ...], dict[str, list[dict]], dict | None]:
    """The rows, their runs, and (``--beyond best``) the screening that chose the last row."""
    if args.beyond != "best":
        rows = table_rows(args.beyond)
        return rows, run_all(args, every_seed(rows, args.seeds), data), None
    first, others = args.seeds[0], args.seeds[1:]
    candidates = [beyond_row(method) for method in BEYOND_TI]
    runs = run_all(
        args, every_seed((*SINGLE_ROWS, *TI_ROWS), args.seeds) + every_seed(candidates, [first]), data
    )
    screening = {row.method: runs.pop(row.key)[0] for row in candidates}
    method, scores = pick_beyond(screening, baseline_values(runs))
    label = f"{method} (beyond TI; lowest Δm of {len(candidates)} on seed {first})"
    winner = beyond_row(method, label)
    runs[winner.key] = [screening[method], *run_all(args, every_seed([winner], others), data)[winner.key]]
    record = {"seed": first, "delta_m": scores, "chosen": method}
    return (*SINGLE_ROWS, *TI_ROWS, winner), runs, record


@tool_main("mtl_make_table")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with folder_lock(args.out, flag="--out"):
        return _make_table(args)


def _make_table(args) -> int:
    try:
        started = time.perf_counter()
        data = args.data_path or generate_data(args)
        # every run would refuse flow made otherwise; say it once, before the first run starts
        check_training_flow(data, ["train", args.split], tuple(args.img_resize))
        rows, runs, screening = run_table(args, data)
        table = summarize(rows, runs)
        if screening:
            table["beyond_screening"] = screening
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"make_table: error: {exc}", file=sys.stderr)
        return 2
    table["setup"] = {
        k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
        for k, v in vars(args).items()
    }
    table["setup"]["data_path"] = str(data)
    table["setup"]["wall_s"] = time.perf_counter() - started
    markdown = format_markdown(table)
    atomic_write_bytes(args.out / "table.json", json.dumps(json_ready(table), indent=2).encode())
    atomic_write_bytes(args.out / "table.md", (markdown + "\n").encode())
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
