"""``make_synthetic_cityscapes``: write synthetic snippets in the Cityscapes layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtl_perception.cli import name_part, non_negative_int, positive_float, positive_int, tool_main

from .annotation import ANNOTATE_MODES, DEFAULT_FLOW_GAP
from .writer import generate


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="make_synthetic_cityscapes",
        description="Synthetic Cityscapes-like driving sequences with exact depth, semantic and motion "
        "ground truth.",
    )
    ap.add_argument(
        "--out", required=True, type=Path, help="dataset root (Cityscapes layout is written below)"
    )
    ap.add_argument("--split", default="train", type=name_part)
    ap.add_argument("--sequences", type=positive_int, default=4)
    ap.add_argument("--frames", type=positive_int, default=30, help="frames per snippet")
    ap.add_argument("--height", type=positive_int, default=1024)
    ap.add_argument("--width", type=positive_int, default=2048)
    ap.add_argument("--seed", type=non_negative_int, default=0)
    ap.add_argument("--city", default="synthetic", type=name_part)
    ap.add_argument("--fps", type=positive_float, default=17.0)
    ap.add_argument(
        "--annotate",
        choices=ANNOTATE_MODES,
        default="cityscapes",
        help="cityscapes: ground truth for frame 19 of each snippet (as Cityscapes); all: for every frame "
        "that has its flow partner (frame f - flow gap)",
    )
    ap.add_argument(
        "--flow-gap",
        type=int,  # generate() names the rule it breaks (it depends on --annotate and --frames)
        default=DEFAULT_FLOW_GAP,
        help="with --annotate all, frames f >= this are annotated; use make_flow_dataset's --gap",
    )
    ap.add_argument(
        "--overwrite", action="store_true", help="replace the city's output of the split as a whole"
    )
    ap.add_argument(
        "--workers", type=positive_int, default=1, help="processes rendering snippets in parallel"
    )
    return ap


@tool_main("make_synthetic_cityscapes")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    generate(
        root=args.out,
        split=args.split,
        sequences=args.sequences,
        frames=args.frames,
        height=args.height,
        width=args.width,
        seed=args.seed,
        city=args.city,
        fps=args.fps,
        overwrite=args.overwrite,
        workers=args.workers,
        annotate=args.annotate,
        flow_gap=args.flow_gap,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
