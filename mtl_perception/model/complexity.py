"""MACs and parameter counts, measured with fvcore's tracer (an independent counter, not our own formula).

What is counted: fvcore's handles for `aten::_convolution`, `aten::linear`, `aten::addmm`, `aten::matmul`,
`aten::mm`, `aten::bmm`, `aten::einsum` (one multiply-accumulate per "flop"). Every other op -- BatchNorm
(folded into the conv at deployment), bilinear upsampling, ReLU, add, concat, dropout, the input
normalisation -- counts zero, which is how TI's `count_flops` reports GMACs. Parameters are all
trainable tensors (conv weights + BN affine), BN running statistics excluded.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.cli import positive_int, tool_main

from .net import MultiTaskNet, build_model

COUNTED_OPS = (
    "aten::_convolution",
    "aten::linear",
    "aten::addmm",
    "aten::matmul",
    "aten::mm",
    "aten::bmm",
    "aten::einsum",
)
TI_SIZE = (384, 768)  # TI reports GMACs at 768x384 per input


@dataclass(frozen=True)
class Complexity:
    gmacs: float
    mparams: float


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: MultiTaskNet, height: int = TI_SIZE[0], width: int = TI_SIZE[1]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (see module docstring for what counts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fvcore applies torch.jit.script at import
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS
        from fvcore.nn.jit_analysis import JitModelAnalysis

    image = torch.full((1, 3, height, width), 128.0)
    flow = torch.zeros(1, 3, height, width) if "flow" in model.streams else None
    was_training = model.training
    model.eval()
    try:
        # Only fvcore's own matrix-product handles are registered; every other op is "unsupported" = 0.
        analysis = JitModelAnalysis(model, (image, flow))
        analysis.set_op_handle(**{op: _DEFAULT_SUPPORTED_OPS[op] for op in COUNTED_OPS})
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fvcore still calls torch.jit tracing APIs
            return int(analysis.total())
    finally:
        model.train(was_training)


def complexity(model: MultiTaskNet, height: int = TI_SIZE[0], width: int = TI_SIZE[1]) -> Complexity:
    return Complexity(count_macs(model, height, width) / 1e9, count_parameters(model) / 1e6)


# (label, build_model kwargs, TI's published GMACs or None)
TABLE_ROWS: tuple[tuple[str, dict, float | None], ...] = (
    ("ti MTL (1,5,2), flow+RGB", dict(preset="ti"), None),
    ("ti MTL (1,19,2), flow+RGB", dict(preset="ti", num_semantic_classes=19), None),
    ("ti MTL (1,19,2), ericsun block", dict(preset="ti", num_semantic_classes=19, always_expand=True), 5.71),
    ("ti depth, RGB only", dict(preset="ti", tasks=("depth",), streams=("image",)), 3.44),
    (
        "ti semantic-19, RGB only",
        dict(preset="ti", tasks=("semantic",), streams=("image",), num_semantic_classes=19),
        3.54,
    ),
    ("ti motion, flow+RGB", dict(preset="ti", tasks=("motion",)), 3.92),
    ("lite MTL (1,5,2), flow+RGB", dict(preset="lite"), None),
)


def complexity_table(height: int = TI_SIZE[0], width: int = TI_SIZE[1]) -> list[dict]:
    rows = []
    for label, kwargs, reference in TABLE_ROWS:
        c = complexity(build_model(**kwargs), height, width)
        rows.append(
            {
                "model": label,
                "config": kwargs,
                "gmacs": round(c.gmacs, 4),
                "mparams": round(c.mparams, 4),
                "ti_published_gmacs": reference,
            }
        )
    return rows


def format_table(rows: list[dict], height: int, width: int) -> str:
    lines = [
        f"Complexity at {height}x{width} per input (fvcore; conv/linear/matmul MACs only)",
        f"{'model':<34} {'GMACs':>7} {'M params':>9} {'TI published':>13}",
        "-" * 66,
    ]
    for r in rows:
        ref = f"{r['ti_published_gmacs']:.2f}" if r["ti_published_gmacs"] is not None else "-"
        lines.append(f"{r['model']:<34} {r['gmacs']:>7.3f} {r['mparams']:>9.3f} {ref:>13}")
    return "\n".join(lines)


@tool_main("model_complexity")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="model_complexity", description="Print GMACs and parameters of the network presets."
    )
    parser.add_argument("--height", type=positive_int, default=TI_SIZE[0])
    parser.add_argument("--width", type=positive_int, default=TI_SIZE[1])
    parser.add_argument("--json", type=Path, help="also write the table to this JSON file")
    args = parser.parse_args(argv)
    if args.json is not None and args.json.is_dir():
        raise IsADirectoryError(f"--json {args.json} is a directory; give the file to write")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    rows = complexity_table(args.height, args.width)
    print(format_table(rows, args.height, args.width))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(rows, indent=2).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
