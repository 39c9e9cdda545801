"""``make_motion_labels``: motion ground truth for every annotated frame of a Cityscapes split, from what
Cityscapes publishes (frames, partner frames, disparity, camera, vehicle odometry, timestamps, gtFine).

Exit status: 0 every frame labelled; 3 done, but some frames were skipped for missing or corrupt inputs
(one warning line per kind, each frame in the report); 2 a bad argument, a missing folder (named with the
Cityscapes package that provides it), labels the tool did not make, or settings that differ from the
split's earlier run; 130/143 interrupted (a rerun finishes the rest)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from mtl_perception.cli import name_part, non_negative_float, positive_float, positive_int, tool_main
from mtl_perception.device import torch_device

from .frame import Settings
from .records import write_json
from .report import build_report, report_path, summary_line, warning_lines
from .tool import make_motion_labels

EXIT_SKIPPED = 3
_MAY_BE_ZERO = ("moving_sigmas", "fit_sigmas", "min_confidence", "erosion_flow_px")

_HELP = {
    "gap": "flow partner: frame f - gap (TI and make_flow_dataset: 2)",
    "flow_width": "Farnebäck runs at this width (at most the image's), the height by aspect",
    "moving_speed": "m/s: an object whose residual speed is above this is moving ...",
    "moving_sigmas": "... if it is also this many noise-equivalent lateral speeds",
    "fit_moving_speed": "m/s: an object is also moving when its planar fit's speed is above this ...",
    "fit_sigmas": "... by this many standard deviations",
    "static_speed": "m/s: an object whose residual speed is below this is static ...",
    "observe_speed_human": "... if a person walking at this speed (m/s) in its least visible direction would "
    "have shown; else undecided",
    "observe_speed_vehicle": "the same for vehicles (m/s)",
    "min_confidence": "Farnebäck confidence below which a pixel is not used",
    "min_pixels": "fewer usable pixels: the object is undecided",
    "max_samples": "pixels per object the statistics look at",
    "erosion_flow_px": "outline erosion, pixels of the flow grid",
    "max_background_px": "median residual of the static world (px of the flow grid) beyond which the frame's "
    "ego-motion is not trusted and its objects are undecided",
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="make_motion_labels",
        description="Motion labels (gtFine/*_gtFine_labelTrainIds_motion.png: 0 static, 255 moving, 128 "
        "undecided) for every annotated frame of a Cityscapes split, from the flow that the ego-motion does "
        "not explain, decided per object instance.",
    )
    ap.add_argument("--root", required=True, type=Path, help="Cityscapes root (leftImg8bit, gtFine, ...)")
    ap.add_argument("--split", required=True, type=name_part)
    ap.add_argument(
        "--out", type=Path, default=None, help="where the labels and the report go (default: --root)"
    )
    ap.add_argument("--overwrite", action="store_true", help="relabel the split, replacing existing labels")
    ap.add_argument("--workers", type=positive_int, default=1, help="frames labelled in parallel processes")
    ap.add_argument("--device", type=torch_device, default="auto", help="auto | cpu | cuda[:N] for the flow")
    defaults = Settings()
    for f in fields(Settings):
        if isinstance(getattr(defaults, f.name), int):
            kind = positive_int
        else:
            kind = non_negative_float if f.name in _MAY_BE_ZERO else positive_float
        ap.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=kind,
            default=getattr(defaults, f.name),
            help=f"{_HELP[f.name]} (default {getattr(defaults, f.name)})",
        )
    return ap


@tool_main("make_motion_labels")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    out = args.out if args.out is not None else args.root
    result = make_motion_labels(
        args.root,
        args.split,
        out,
        settings=settings,
        overwrite=args.overwrite,
        workers=args.workers,
        device=args.device,
    )
    report = build_report(result, root=args.root, out=out, split=args.split, settings=settings)
    path = report_path(out, args.split)
    write_json(path, report)
    for line in warning_lines(report, path):
        print(line, file=sys.stderr)
    print(summary_line(report, path))
    return EXIT_SKIPPED if result.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
