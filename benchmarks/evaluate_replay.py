"""Score the node on a bag replay: depth ARD, semantic and motion mIoU of what it published vs the bag's GT.

One command from a Cityscapes-layout split (real, or generated with ``--annotate all``) to the metrics:

    make_synthetic_cityscapes --out /tmp/held --split val --sequences 2 --frames 20 --height 256 \
        --width 512 --seed 3000 --city heldout --annotate all
    python benchmarks/evaluate_replay.py --cityscapes /tmp/held --split val      # the shipped model

``--cityscapes ROOT --split S`` writes the bag (``cityscapes_to_bag --with-gt``) into a temporary folder;
``--bag BAG`` replays a bag you already have. The node runs as its own process (``mtl_perception_node``)
with config/params.yaml plus the overrides below and ``output_size:=input`` (scored at ground-truth
resolution, as TI evaluates); ``play_bag`` feeds it; the metrics are ``mtl_perception.metrics`` (the
functions training uses). ``--model`` empty (default) = the shipped model, ``untrained`` = the seeded
untrained preset. Writes benchmarks/results/replay_eval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.data.bag import convert
from mtl_perception.ros.replay import node_arguments, score_replay

REPO = Path(__file__).resolve().parents[1]


def table(result: dict, name: str) -> str:
    return (
        f"| bag | frames scored | depth ARD | semantic mIoU | motion mIoU |\n|---|---:|---:|---:|---:|\n"
        f"| {name} | {result['frames_evaluated']}/{result['frames_with_ground_truth']} | "
        f"{result['depth_ard']:.4f} | {result['semantic_miou']:.4f} | {result['motion_miou']:.4f} |"
    )


def replay(args: argparse.Namespace, bag: Path) -> dict:
    node_args = node_arguments(
        params_file=args.params_file,
        model_file=args.model,
        preset=args.preset,
        backend=args.backend,
        device=args.device,
        network_size=(args.network_height, args.network_width),
        extra=args.extra,
    )
    return score_replay(bag=bag, node_args=node_args, rate=args.rate, log_path=args.node_log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--bag", type=Path, help="a bag written by cityscapes_to_bag --with-gt")
    source.add_argument("--cityscapes", type=Path, help="a Cityscapes-layout root: convert --split first")
    ap.add_argument("--split", default="val", help="split of --cityscapes")
    ap.add_argument("--model", default="", help="checkpoint / ONNX / engine; empty = the shipped model")
    ap.add_argument("--preset", default="ti", help="architecture of --model untrained")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--network-height", type=int, default=0, help="0 = the model's own size")
    ap.add_argument("--network-width", type=int, default=0, help="0 = the model's own size")
    ap.add_argument(
        "--rate", type=float, default=0.25, help="playback rate (slow enough to process every frame)"
    )
    ap.add_argument("--params-file", type=Path, default=REPO / "config" / "params.yaml")
    ap.add_argument("--extra", nargs="*", default=[], help="more node parameters, e.g. flow.levels:=3")
    ap.add_argument("--node-log", type=Path, help="write the node's output here")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "replay_eval.json")
    args = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="mtl_replay_bag_") as tmp:
            bag = args.bag
            if args.cityscapes is not None:
                bag = Path(tmp) / "bag"
                convert(args.cityscapes, args.split, bag, with_gt=True)
            result = replay(args, bag)
    except (FileNotFoundError, ValueError) as error:
        print(f"evaluate_replay: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # the node did not start or play_bag failed: the message says which
        print(f"evaluate_replay: error: {error}", file=sys.stderr)
        return 1
    if args.cityscapes is not None:
        result["bag"] = f"{args.cityscapes} split {args.split} (converted with cityscapes_to_bag --with-gt)"
    atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
    print(table(result, (args.bag or args.cityscapes).name))
    print(f"model: {result['model']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
