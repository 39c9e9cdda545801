"""``export_model``: a checkpoint (default: the shipped model) or a seeded untrained preset to ONNX.

The graph is made at the size the network was trained at (its input contract's), unless ``--height`` /
``--width`` ask for another; the export then says that the contract's size is overridden, and so does the
node that runs it. The library is :mod:`mtl_perception.inference.export`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mtl_perception.cli import non_negative_int, positive_int, tool_main
from mtl_perception.model.shipped import resolve_model

from .export import LOG, export_onnx, model_from_source


def _opset(text: str) -> int:
    """--opset: what export_onnx supports (>= 17) and the TorchScript exporter can write."""
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as highest

    value = positive_int(text)
    if not 17 <= value <= highest:
        raise argparse.ArgumentTypeError(f"expected an opset from 17 to {highest}, got {text!r}")
    return value


@tool_main("export_model")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="export_model", description="Export a MultiTaskNet to ONNX with argmax outputs and metadata."
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint", type=Path, help="checkpoint written by save_checkpoint (default: the shipped model)"
    )
    source.add_argument("--preset", choices=("ti", "lite"), help="export a seeded random init (UNTRAINED)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--height", type=positive_int, help="default: the height the model was trained at (untrained: 384)"
    )
    parser.add_argument(
        "--width", type=positive_int, help="default: the width the model was trained at (untrained: 768)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output .onnx path")
    parser.add_argument("--with-probabilities", action="store_true", help="also output softmax probabilities")
    parser.add_argument("--opset", type=_opset, default=17)
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    if args.out.is_dir():  # checked before the network is built
        raise IsADirectoryError(f"--out {args.out} is a directory; give the .onnx file to write")
    if args.out.exists() and not args.force:
        raise FileExistsError(f"{args.out} already exists; pass --force to replace it")
    if args.checkpoint is None and args.preset is None:
        args.checkpoint = resolve_model("").path  # ShippedModelMissing names `make shipped-model`
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, origin, contract = model_from_source(
        checkpoint=args.checkpoint,
        preset=args.preset or "ti",
        seed=args.seed,
        input_size=(args.height, args.width) if args.height and args.width else None,
    )
    height, width = args.height or contract.network_size[0], args.width or contract.network_size[1]
    if args.checkpoint is not None and (height, width) != contract.network_size:
        LOG.warning(
            "exporting at %dx%d; the model was trained at %dx%d: whoever runs this file runs it with its "
            "contract overridden",
            height,
            width,
            *contract.network_size,
        )
    path = export_onnx(
        model=model,
        out=args.out,
        contract=contract,
        height=height,
        width=width,
        with_probabilities=args.with_probabilities,
        opset=args.opset,
        force=args.force,
        source=origin,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
