"""Evaluate a trained multi-task model on a Cityscapes-layout split: depth ARD, mIoUs and the rest.

    python training/evaluate.py --checkpoint best.pt --data_path ROOT --split val --output_size 1024 2048 \
        --json metrics.json

Without ``--checkpoint`` (and without ``--model untrained``) it scores the model the package ships
(``mtl_perception.model.shipped``; an error naming ``make shipped-model`` when the package carries none).
``--checkpoint`` takes a ``.pt`` checkpoint (run by the PyTorch backend) or an exported ``.onnx`` file (run
by ONNX Runtime): both go through ``mtl_perception.inference`` backends, the path the node uses, so an
export is scored exactly as it will run. The network sees the size it was trained at and the split's flow
must be made as it was trained on (its input contract, ``mtl_perception.model.contract``; a flow folder made
otherwise is refused in one line naming the ``make_flow_dataset`` command that fixes it); the metrics are
computed at ``--output_size`` as TI (``mtl_perception.learning.evaluation``). The JSON holds
every metric as a fraction (``depth_ard``, ``semantic_miou``, ``motion_miou``, ...; NaN written as null)
and a ``setup`` record of what was evaluated.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from mtl_perception.atomic import atomic_write_bytes, check_writable
from mtl_perception.cli import non_negative_int, positive_int, tool_main
from mtl_perception.data.cityscapes import num_semantic_classes as classes_of_mode
from mtl_perception.data.flow_folder import check_flow_folder
from mtl_perception.learning.dataset import DEFAULT_ROOT, FLOW_FOLDER, CityscapesMultiTask, check_split
from mtl_perception.learning.evaluation import EvalResize, collate_by_size, evaluate
from mtl_perception.model.config import PRESETS

DEFAULT_IMG_RESIZE = (384, 768)
HEADLINE = (
    ("depth_ard", "Depth ARD %"),
    ("semantic_miou", "Semantic mIoU %"),
    ("motion_miou", "Motion mIoU %"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="training/evaluate.py", description=__doc__.split("\n")[0])
    source = ap.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint",
        type=Path,
        help="best.pt from training/train.py, or an exported .onnx (default: the shipped model)",
    )
    source.add_argument(
        "--model", choices=("untrained",), help="'untrained': a seeded random init of --preset (a floor)"
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ti", help="network of --model untrained")
    ap.add_argument("--seed", type=int, default=0, help="initialisation seed of --model untrained")
    ap.add_argument("--data_path", type=Path, default=DEFAULT_ROOT, help="Cityscapes-layout root")
    ap.add_argument("--split", default="val", help="split folder under the root (val, test, train)")
    ap.add_argument(
        "--img_resize",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="network input size of --model untrained (default 384 768); a model file runs at the size it "
        "was trained at (its input contract's)",
    )
    ap.add_argument(
        "--output_size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resolution the metrics are computed at (TI: 1024 2048); default: the ground truth's own",
    )
    ap.add_argument("--json", type=Path, help="write the metrics (fractions) and the setup to this file")
    ap.add_argument("--batch_size", type=positive_int, default=4)
    ap.add_argument("--workers", type=non_negative_int, default=2, help="DataLoader worker processes")
    ap.add_argument("--device", default=None, help="cpu | cuda[:i] (default: cuda when available)")
    ap.add_argument(
        "--semantic_mode",
        choices=("auto", "five", "trainid", "ti_five"),
        default="auto",
        help="ground-truth class set: auto = 'five' for a 5-class model, 'trainid' for 19 classes",
    )
    ap.add_argument("--flow_folder", default=FLOW_FOLDER, help="flow folder name under the root")
    return ap.parse_args(argv)


def _semantic_mode(mode: str, classes: int) -> str:
    if mode == "auto":
        mode = {5: "five", 19: "trainid"}.get(classes)
        if mode is None:
            raise ValueError(f"a {classes}-class semantic model needs an explicit --semantic_mode")
    if classes_of_mode(mode) != classes:
        raise ValueError(f"--semantic_mode {mode} has {classes_of_mode(mode)} classes, the model {classes}")
    return mode


def open_model(args: argparse.Namespace, device: str):
    """The backend of --checkpoint (default: the shipped model) or --model untrained, at the size the
    model was trained at; its ``contract`` says how the inputs must be made. Errors name the file or flag."""
    from mtl_perception.inference.backends import create_backend, inspect_model_file
    from mtl_perception.model.shipped import resolve_model

    if args.checkpoint is None and args.model is None:
        args.checkpoint = resolve_model("").path  # ShippedModelMissing names `make shipped-model`
    requested = tuple(args.img_resize) if args.img_resize else None
    if args.checkpoint is None:
        size = requested or DEFAULT_IMG_RESIZE
        return create_backend(None, "torch", device, input_size=size, preset=args.preset, seed=args.seed)
    facts = inspect_model_file(args.checkpoint)
    trained = facts.contract.network_size
    size = facts.fixed_size or trained
    if size != trained:
        raise ValueError(
            f"{args.checkpoint} runs at {size[0]}x{size[1]} but its network was trained at "
            f"{trained[0]}x{trained[1]}: evaluate the checkpoint, or an export at its training size"
        )
    if requested is not None and requested != trained:
        raise ValueError(
            f"--img_resize {requested[0]} {requested[1]} contradicts {args.checkpoint}'s input contract: "
            f"it was trained at {trained[0]}x{trained[1]} and is evaluated at that size "
            "(leave --img_resize out)"
        )
    kind = "onnxruntime" if facts.kind == "onnx" else "torch"
    return create_backend(args.checkpoint, kind, device, input_size=size, facts=facts)


def run(args: argparse.Namespace) -> dict:
    """Evaluate; returns {"metrics": {...}, "setup": {...}}."""
    check_split(args.data_path, args.split)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backend = open_model(args, device)
    config, contract, size = backend.config, backend.contract, backend.input_size
    mode = _semantic_mode(args.semantic_mode, int(config.num_semantic_classes))
    use_flow = "flow" in config.streams
    if use_flow and args.checkpoint is not None:  # flow made otherwise than it learned on: refused
        check_flow_folder(
            args.data_path,
            args.split,
            contract.flow,
            folder=args.flow_folder,
            model=str(args.checkpoint),
            who=str(args.checkpoint),
        )
    dataset = CityscapesMultiTask(
        args.data_path,
        args.split,
        use_flow=use_flow,
        flow_folder=args.flow_folder,
        semantic_mode=mode,
        transform=EvalResize(size),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=False,
        num_workers=args.workers,
        collate_fn=collate_by_size,  # a split may mix cameras: ground truth of several sizes
    )
    metrics = evaluate(
        backend,
        loader,
        tasks=config.tasks,
        device=device,
        output_size=tuple(args.output_size) if args.output_size else None,
        num_semantic_classes=int(config.num_semantic_classes),
        progress=f"evaluate {args.split}",
    )
    setup = {
        "model": str(args.checkpoint) if args.checkpoint else f"untrained {args.preset} seed {args.seed}",
        "backend": backend.name,
        "data_path": str(args.data_path),
        "split": args.split,
        "images": len(dataset),
        "img_resize": list(size),
        "input_contract": contract.to_dict(),
        "output_size": list(args.output_size) if args.output_size else "ground truth resolution",
        "semantic_mode": mode,
        "tasks": list(config.tasks),
    }
    return {"metrics": metrics, "setup": setup}


def format_table(metrics: dict) -> str:
    """Markdown: the seed's three headline columns (in %), then every metric as a fraction."""
    present = [(k, label) for k, label in HEADLINE if k in metrics]
    lines = [
        "| " + " | ".join(label for _, label in present) + " |",
        "|" + "---|" * len(present),
        "| " + " | ".join(f"{100 * metrics[k]:.2f}" for k, _ in present) + " |",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    return "\n".join(lines)


def json_ready(value):
    """NaN / Inf -> None (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


@tool_main("mtl_evaluate")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json:
        check_writable(args.json)  # before the evaluation, not after it
    result = run(args)  # a bad input raises ValueError / OSError: tool_main makes it one line, exit 2
    print(format_table(result["metrics"]))
    if args.json:
        payload = {**result["metrics"], "setup": result["setup"]}
        atomic_write_bytes(args.json, json.dumps(json_ready(payload), indent=2).encode())
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
