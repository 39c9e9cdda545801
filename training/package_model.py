"""Put a finished training run into the package as *the* shipped model, with its provenance in the file.

    python training/package_model.py --run RUN_DIR --training-seconds 5400 --held-out held_out.json \
        --data-seeds train=1000 val=2000 --recipe recipe.txt

Reads ``RUN_DIR/best.pt`` (the model), ``RUN_DIR/checkpoint.pt`` (the run's flags) and
``RUN_DIR/metrics.json`` (the validation metrics of the best epoch) and writes into
``mtl_perception/model/weights/`` (``--out-dir``):

* ``shipped.pt``: the weights, config and input contract (``mtl_perception.model.contract``: the size the
  node runs it at and how its flow is made, as the run's ``best.pt`` carries it) and ``provenance``:
  the recipe commands, the run's flags, the git commit, the data seeds, the training time, the machine,
  the validation metrics and the held-out metrics (``training/evaluate.py --json``); loadable with
  ``torch.load(weights_only=True)`` like every checkpoint;
* ``shipped.onnx``: its export at the training size (``mtl_perception.inference.export``);
* ``shipped.json``: the same provenance and input contract, readable without torch, with both files'
  SHA-256.

The three are written into a hidden folder beside ``--out-dir`` that then takes its place in one step
(``mtl_perception.atomic.replaced_folder``): they appear together or not at all, whatever stops the run (a
signal, a full disk, a bad path). One packaging per folder at a time (``--out-dir``/.lock).
``scripts/make_shipped_model.sh`` (``make shipped-model``) runs the whole recipe and then this.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

from mtl_perception.atomic import atomic_write_bytes, replaced_folder
from mtl_perception.cli import positive_float, tool_main
from mtl_perception.folder_lock import folder_lock
from mtl_perception.inference.export import export_onnx
from mtl_perception.learning.finite import NonFiniteError, first_non_finite
from mtl_perception.model import open_checkpoint, save_checkpoint
from mtl_perception.model.shipped import SHIPPED_CHECKPOINT, SHIPPED_ONNX, shipped_folder

REPO = Path(__file__).resolve().parents[1]
PROVENANCE_JSON = "shipped.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(repo: Path) -> str:
    """HEAD of ``repo``, with ``-dirty`` when tracked files differ from it ("unknown" outside git)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def best_epoch_metrics(run: Path, epoch: int) -> dict:
    """The ``val/*`` metrics of ``epoch`` in the run's metrics.json (the epoch best.pt was saved at)."""
    records = json.loads((run / "metrics.json").read_text())
    for record in records:
        if record.get("epoch") == epoch:
            return {k[len("val/") :]: v for k, v in record.items() if k.startswith("val/")}
    raise ValueError(f"{run / 'metrics.json'} has no record of epoch {epoch}, the epoch of best.pt")


def parse_seeds(pairs: list[str]) -> dict[str, int]:
    seeds = {}
    for pair in pairs:
        split, sep, value = pair.partition("=")
        if not sep or not split or not value.isdigit():
            raise ValueError(f"--data-seeds {pair!r}: expected SPLIT=SEED, e.g. train=1000")
        seeds[split] = int(value)
    return seeds


def provenance(args: argparse.Namespace, run: Path, extra: dict) -> dict:
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    flags = state.get("run_config") or {}
    held_out = json.loads(args.held_out.read_text()) if args.held_out else None
    return {
        "recipe": args.recipe.read_text().strip().splitlines() if args.recipe else [],
        "train_flags": flags,
        "git_commit": args.commit or git_commit(REPO),
        "data_seeds": parse_seeds(args.data_seeds),
        "training_seconds": float(args.training_seconds),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"device {flags.get('device') or flags.get('gpus') or 'cpu'}",
        "best_epoch": int(extra["epoch"]),
        "epochs": int(flags.get("epochs", 0)),
        "validation_metrics": best_epoch_metrics(run, int(extra["epoch"])),
        "held_out_metrics": held_out,
    }


def package(args: argparse.Namespace) -> dict:
    run = args.run
    for name in ("best.pt", "checkpoint.pt", "metrics.json"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} not found: --run must be a finished train.py output_dir")
    for name in (SHIPPED_CHECKPOINT, SHIPPED_ONNX, PROVENANCE_JSON):
        if (args.out_dir / name).is_dir():
            raise IsADirectoryError(f"{args.out_dir / name} is a directory; the shipped file goes there")
    model, extra, contract = open_checkpoint(run / "best.pt")
    bad = first_non_finite(model.state_dict().items())
    if bad:
        raise NonFiniteError(f"{run / 'best.pt'}: non-finite {bad}; not packaged")
    record = provenance(args, run, extra)
    record = portable(record, work=work_folder(run, record["train_flags"]))
    # one packaging per folder; the three files appear together or not at all
    with folder_lock(args.out_dir, flag="--out-dir"), replaced_folder(args.out_dir) as out:
        checkpoint = save_checkpoint(
            out / SHIPPED_CHECKPOINT,
            model,
            contract=contract,
            overwrite=True,
            epoch=int(extra["epoch"]),
            metric=str(extra["metric"]),
            value=float(extra["value"]),
            provenance=record,
        )
        onnx = export_onnx(
            model,
            out / SHIPPED_ONNX,
            contract=contract,
            force=True,
            source=f"shipped model, commit {record['git_commit']}, checkpoint sha256 {sha256(checkpoint)}",
        )
        summary = {
            **record,
            "input_contract": contract.to_dict(),
            "files": {p.name: sha256(p) for p in (checkpoint, onnx)},
        }
        atomic_write_bytes(out / PROVENANCE_JSON, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def work_folder(run: Path, flags: dict) -> Path:
    """The folder the recipe worked in: the nearest one holding both the run and its training data."""
    data = Path(flags.get("data_path") or run.parent)
    return Path(os.path.commonpath([run.resolve(), data.resolve()]))


def portable(record, *, work: Path):
    """``record`` with every path of this machine written as ``$WORK/...`` (the recipe's folder), relative
    to the repository, or under ``~``: the shipped files name no path of the machine that built them."""
    prefixes = sorted(
        ((str(work), "$WORK"), (str(REPO), "."), (str(Path.home()), "~")), key=lambda p: -len(p[0])
    )
    patterns = [
        (re.compile(re.escape(prefix) + r"(?=/|\s|$|['\"])"), name)
        for prefix, name in prefixes
        if prefix != "/"
    ]

    def rewrite(value):
        if isinstance(value, str):
            for pattern, name in patterns:
                value = pattern.sub(name, value)
            return value
        if isinstance(value, dict):
            return {key: rewrite(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        return value

    return rewrite(record)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="training/package_model.py", description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="train.py --output_dir of the finished run")
    ap.add_argument("--training-seconds", type=positive_float, required=True, help="wall time of train.py")
    ap.add_argument("--held-out", type=Path, help="training/evaluate.py --json of the held-out set")
    ap.add_argument("--recipe", type=Path, help="text file: the commands that made the data and the model")
    ap.add_argument("--data-seeds", nargs="*", default=[], metavar="SPLIT=SEED")
    ap.add_argument("--commit", default="", help="git commit the run trained at (default: this repo's HEAD)")
    ap.add_argument("--out-dir", type=Path, default=shipped_folder(), help="default: the package's weights/")
    return ap.parse_args(argv)


@tool_main("package_model")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = package(args)  # a bad input raises ValueError / OSError: tool_main makes it one line, exit 2
    metrics = summary["held_out_metrics"] or summary["validation_metrics"]
    print(
        f"wrote {args.out_dir / SHIPPED_CHECKPOINT}, {SHIPPED_ONNX}, {PROVENANCE_JSON}: epoch "
        f"{summary['best_epoch']}/{summary['epochs']}, depth ARD {metrics.get('depth_ard')}, semantic mIoU "
        f"{metrics.get('semantic_miou')}, motion mIoU {metrics.get('motion_miou')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
