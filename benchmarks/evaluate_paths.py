"""The same model, the same frames, three paths: PyTorch checkpoint, ONNX Runtime export, the node over DDS.

    python benchmarks/evaluate_paths.py --root ROOT --split val            # the shipped model
    python benchmarks/evaluate_paths.py --root ROOT --split val --checkpoint best.pt [--onnx best.onnx]

ROOT/SPLIT is a Cityscapes-layout split with ground truth (generated with ``--annotate all`` for every
frame) and its flow inputs, made as the model was trained (``make_flow_dataset --root ROOT --split SPLIT
--model MODEL``, which reads the model's input contract; a folder made otherwise is refused, naming the fix)

* ``checkpoint``: ``training/evaluate.py`` on the ``.pt`` (PyTorch backend), the flow PNGs of the dataset;
* ``onnxruntime``: ``training/evaluate.py`` on the ONNX export (the shipped ``.onnx``, or one exported
  here at the checkpoint's training size);
* ``node``: the split written as a bag (``cityscapes_to_bag --with-gt``), played into
  ``mtl_perception_node`` (which computes the flow itself, live), its outputs recorded and scored against
  the bag's ground truth (``mtl_perception.ros.replay``).

All three score at the ground-truth resolution with ``mtl_perception.metrics``. They agree when training
and run time see the same inputs; ``TOLERANCES`` are the differences allowed (absolute, per metric):
ONNX Runtime vs PyTorch differ only in float rounding (a rare argmax near-tie flips); the node also
differs by computing the flow live in float instead of reading the 16-bit flow PNG training used.
Prints the table and writes JSON (``--out``); exit status 1 when a path is outside its tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.data.bag import convert
from mtl_perception.inference.export import export_onnx, file_source
from mtl_perception.model import open_checkpoint
from mtl_perception.model.shipped import resolve_model, shipped_onnx_path
from mtl_perception.ros.replay import node_arguments, score_replay
from mtl_perception_training import evaluate as offline

REPO = Path(__file__).resolve().parents[1]
METRICS = ("depth_ard", "semantic_miou", "motion_miou")
#: allowed |difference| to the checkpoint path, per path and metric
TOLERANCES = {
    "onnxruntime": {"depth_ard": 5e-4, "semantic_miou": 2e-3, "motion_miou": 2e-3},
    "node": {"depth_ard": 5e-3, "semantic_miou": 0.01, "motion_miou": 0.01},
}


def score_offline(model_file: Path, root: Path, split: str) -> dict:
    """training/evaluate.py's evaluation (the .pt on PyTorch, an .onnx on ONNX Runtime), one process."""
    args = offline.parse_args(
        ["--checkpoint", str(model_file), "--data_path", str(root), "--split", split, "--workers", "0"]
        + ["--device", "cpu"]
    )
    result = offline.run(args)
    return {**result["metrics"], "frames": result["setup"]["images"], "backend": result["setup"]["backend"]}


def score_node(
    checkpoint: Path, root: Path, split: str, *, backend: str, flow: str, log: Path | None
) -> dict:
    with tempfile.TemporaryDirectory(prefix="mtl_paths_bag_") as tmp:
        bag = Path(tmp) / "bag"
        convert(root, split, bag, with_gt=True)
        node_args = node_arguments(
            params_file=REPO / "config" / "params.yaml",
            model_file=str(checkpoint),
            backend=backend,
            device="cpu",
            extra=("summary_period:=0.0", f"flow.implementation:={flow}"),
        )
        result = score_replay(bag=bag, node_args=node_args, rate=0.25, log_path=log)
    if result["node_exit_code"] != 0:
        raise RuntimeError(f"the node exited with {result['node_exit_code']} (see --node-log)")
    return {
        **{k: result[k] for k in METRICS},
        "frames": result["frames_evaluated"],
        "frames_with_ground_truth": result["frames_with_ground_truth"],
        "backend": result["diagnostics"].get("backend", backend),
    }


def compare(rows: dict[str, dict]) -> dict[str, dict]:
    """Per path: the difference to the checkpoint path per metric, its tolerance and whether it holds."""
    reference = rows["checkpoint"]
    checks = {}
    for path, tolerance in TOLERANCES.items():
        if path not in rows:
            continue
        deltas = {m: abs(rows[path][m] - reference[m]) for m in METRICS}
        checks[path] = {
            "deltas": deltas,
            "tolerances": tolerance,
            "within": all(deltas[m] <= tolerance[m] for m in METRICS),
        }
    return checks


def format_table(rows: dict[str, dict], checks: dict[str, dict]) -> str:
    lines = [
        "| path | backend | frames | depth ARD | semantic mIoU | motion mIoU | max |Δ| / tolerance |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for path, row in rows.items():
        check = checks.get(path)
        verdict = "reference"
        if check:
            worst = max(METRICS, key=lambda m: check["deltas"][m] / check["tolerances"][m])
            verdict = (
                f"{check['deltas'][worst]:.4f} / {check['tolerances'][worst]} ({worst}) "
                f"{'ok' if check['within'] else 'OUTSIDE'}"
            )
        lines.append(
            f"| {path} | {row['backend']} | {row['frames']} | {row['depth_ard']:.4f} | "
            f"{row['semantic_miou']:.4f} | {row['motion_miou']:.4f} | {verdict} |"
        )
    return "\n".join(lines)


def evaluate_paths(
    *,
    root: Path,
    split: str,
    checkpoint: Path,
    onnx: Path | None,
    node: bool = True,
    node_backend: str = "auto",
    node_flow: str = "auto",
    node_log: Path | None = None,
) -> dict:
    """Score every path; returns {"rows": {path: metrics}, "checks": {path: ...}, "model": ...}."""
    with tempfile.TemporaryDirectory(prefix="mtl_paths_") as tmp:
        if onnx is None:  # export with its input contract (its training size), as train.py does
            model, _, contract = open_checkpoint(checkpoint)
            source = file_source(checkpoint)
            onnx = export_onnx(model, Path(tmp) / "model.onnx", contract=contract, source=source)
        rows = {
            "checkpoint": score_offline(checkpoint, root, split),
            "onnxruntime": score_offline(onnx, root, split),
        }
    if node:
        rows["node"] = score_node(checkpoint, root, split, backend=node_backend, flow=node_flow, log=node_log)
    checks = compare(rows)
    return {"model": str(checkpoint), "root": str(root), "split": split, "rows": rows, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="Cityscapes-layout root with flow inputs")
    ap.add_argument("--split", default="val")
    ap.add_argument("--checkpoint", type=Path, help="default: the shipped model")
    ap.add_argument("--onnx", type=Path, help="default: the shipped .onnx, else exported here")
    ap.add_argument("--node-backend", default="auto", help="the node's backend (auto: ONNX Runtime on CPU)")
    ap.add_argument(
        "--node-flow", default="auto", help="the node's flow.implementation (default: auto, as the node)"
    )
    ap.add_argument("--no-node", action="store_true", help="only the two offline paths")
    ap.add_argument("--node-log", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "evaluate_paths.json")
    args = ap.parse_args(argv)
    try:
        checkpoint = args.checkpoint or resolve_model("").path
        onnx = args.onnx or (shipped_onnx_path() if args.checkpoint is None else None)
        report = evaluate_paths(
            root=args.root,
            split=args.split,
            checkpoint=checkpoint,
            onnx=onnx,
            node=not args.no_node,
            node_backend=args.node_backend,
            node_flow=args.node_flow,
            node_log=args.node_log,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"evaluate_paths: error: {error}", file=sys.stderr)
        return 2
    atomic_write_bytes(args.out, json.dumps(offline.json_ready(report), indent=2).encode())
    print(format_table(report["rows"], report["checks"]))
    print(f"model: {report['model']}; wrote {args.out}")
    return 0 if all(c["within"] for c in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
