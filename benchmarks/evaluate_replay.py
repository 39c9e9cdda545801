"""Score the node on a bag replay: depth ARD, semantic and motion mIoU of what it published vs the bag's GT.

    make_synthetic_cityscapes --out /tmp/syn --split val --sequences 2 --frames 20 --height 192 --width 384
    cityscapes_to_bag --root /tmp/syn --split val --out /tmp/syn_bag --with-gt
    python benchmarks/evaluate_replay.py --bag /tmp/syn_bag --model model.onnx

The node runs as its own process (``mtl_perception_node``) with config/params.yaml plus the overrides below
and ``output_size:=input`` (scored at ground-truth resolution, as TI evaluates); ``play_bag`` feeds it; the
metrics are ``mtl_perception.metrics`` (the functions training uses). Writes results/replay_eval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.ros.replay import evaluate, image_stamps, read_ground_truth, run_replay

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bag", required=True, type=Path)
    ap.add_argument(
        "--model", default="", help="checkpoint / ONNX / engine; empty = untrained model of --preset"
    )
    ap.add_argument("--preset", default="ti")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--network-height", type=int, default=384)
    ap.add_argument("--network-width", type=int, default=768)
    ap.add_argument(
        "--rate", type=float, default=0.25, help="playback rate (slow enough to process every frame)"
    )
    ap.add_argument("--params-file", type=Path, default=REPO / "config" / "params.yaml")
    ap.add_argument("--extra", nargs="*", default=[], help="more node parameters, e.g. flow.levels:=3")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "replay_eval.json")
    args = ap.parse_args(argv)
    try:
        truth = read_ground_truth(args.bag)
        stamps = image_stamps(args.bag)
    except (FileNotFoundError, ValueError) as error:
        print(f"evaluate_replay: error: {error}", file=sys.stderr)
        return 2
    node_args = ["--params-file", str(args.params_file)]
    for name, value in [
        ("model_file", args.model),
        ("model_preset", args.preset),
        ("backend", args.backend),
        ("device", args.device),
        ("network_height", args.network_height),
        ("network_width", args.network_width),
        ("output_size", "input"),
    ]:
        node_args += ["-p", f"{name}:={value}" if value != "" else f'{name}:=""']
    for extra in args.extra:
        node_args += ["-p", extra]
    try:
        run = run_replay(bag=args.bag, node_args=node_args, rate=args.rate)
    except RuntimeError as error:  # the node did not start or play_bag failed: the message says which
        print(f"evaluate_replay: error: {error}", file=sys.stderr)
        return 1
    result = evaluate(run.outputs, truth)
    result.update(
        bag=str(args.bag),
        model=args.model or f"UNTRAINED seeded '{args.preset}' model",
        images_in_bag=len(stamps),
        frames_with_outputs=len(run.outputs),
        node_exit_code=run.node_exit_code,
        diagnostics=run.diagnostics,
    )
    atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
    print(
        f"| bag | frames scored | depth ARD | semantic mIoU | motion mIoU |\n|---|---:|---:|---:|---:|\n"
        f"| {args.bag.name} | {result['frames_evaluated']}/{result['frames_with_ground_truth']} | "
        f"{result['depth_ard']:.4f} | {result['semantic_miou']:.4f} | {result['motion_miou']:.4f} |"
    )
    print(f"model: {result['model']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
