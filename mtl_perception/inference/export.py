"""ONNX export of a MultiTaskNet with a deployment contract baked in.

Graph contract (static shapes, batch 1 -- TensorRT and TIDL run fixed-shape engines, so a static graph keeps
every backend on its fastest path; re-export for another size):
  inputs  `image` (1,3,H,W) float32 RGB 0..255 and/or `flow` (1,3,H,W) float32 (u px, v px, confidence 0..1),
          only those the network has; normalisation happens inside the graph.
  outputs `depth` (1,1,H,W) float32 metres; `semantic`, `motion` (1,H,W) int32 class ids (argmax inside the
          graph; int32 rather than int64 or uint8 because TensorRT computes ArgMax/TopK indices in int32);
          with --with-probabilities also `semantic_prob`, `motion_prob` (1,C,H,W) float32 softmax.
  metadata_props: `mtl_perception.config` (ModelConfig JSON), `mtl_perception.contract` (the above as JSON),
          `mtl_perception.source` (checkpoint path or seeded random init).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from mtl_perception.atomic import atomic_path
from mtl_perception.cli import non_negative_int, positive_int, tool_main
from mtl_perception.model import ModelConfig, MultiTaskNet, build_model, load_checkpoint
from mtl_perception.model.checkpoint import read_checkpoint, trained_input_size
from mtl_perception.model.shipped import resolve_model

LOG = logging.getLogger("mtl_perception.inference")
CONTRACT_VERSION = 1
META_CONFIG, META_CONTRACT, META_SOURCE = (
    "mtl_perception.config",
    "mtl_perception.contract",
    "mtl_perception.source",
)
SEGMENTATION_TASKS = ("semantic", "motion")


class DeployHead(nn.Module):
    """Wraps the network so the graph ends in deployment outputs (metres, class ids, optional softmax)."""

    def __init__(self, model: MultiTaskNet, with_probabilities: bool = False) -> None:
        super().__init__()
        self.model = model
        self.with_probabilities = with_probabilities
        self.input_names = [s for s in ("image", "flow") if s in model.streams]
        self.output_names = list(model.tasks)
        if with_probabilities:
            self.output_names += [f"{t}_prob" for t in model.tasks if t in SEGMENTATION_TASKS]

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        named = dict(zip(self.input_names, inputs, strict=True))
        raw = self.model(named.get("image"), named.get("flow"))
        outputs = [raw[t] if t == "depth" else raw[t].argmax(dim=1).to(torch.int32) for t in self.model.tasks]
        if self.with_probabilities:
            outputs += [raw[t].softmax(dim=1) for t in self.model.tasks if t in SEGMENTATION_TASKS]
        return tuple(outputs)


def contract(config: ModelConfig, height: int, width: int, with_probabilities: bool) -> dict:
    inputs = {}
    if "image" in config.streams:
        inputs["image"] = {"shape": [1, 3, height, width], "dtype": "float32", "meaning": "RGB 0..255"}
    if "flow" in config.streams:
        inputs["flow"] = {
            "shape": [1, 3, height, width],
            "dtype": "float32",
            "meaning": "u px, v px (at this resolution), confidence 0..1",
        }
    outputs = {}
    for t in config.tasks:
        if t == "depth":
            outputs[t] = {"shape": [1, 1, height, width], "dtype": "float32", "meaning": "depth in metres"}
        else:
            outputs[t] = {
                "shape": [1, height, width],
                "dtype": "int32",
                "meaning": f"class ids 0..{config.task_channels(t) - 1}",
            }
    if with_probabilities:
        for t in config.tasks:
            if t in SEGMENTATION_TASKS:
                outputs[f"{t}_prob"] = {
                    "shape": [1, config.task_channels(t), height, width],
                    "dtype": "float32",
                    "meaning": "softmax probabilities",
                }
    return {
        "version": CONTRACT_VERSION,
        "inputs": inputs,
        "outputs": outputs,
        "input_size": [height, width],
        "normalization": "inside the graph (see config.normalization)",
    }


def export_onnx(
    model: MultiTaskNet,
    out: str | os.PathLike,
    height: int = 384,
    width: int = 768,
    with_probabilities: bool = False,
    opset: int = 17,
    force: bool = False,
    source: str = "",
) -> Path:
    """Export `model` to `out` (written atomically; an existing file is kept unless force=True).

    The graph is traced from a float32 CPU copy in eval mode: the caller's model stays on its device,
    in its dtype and in its train/eval mode.
    """
    import onnx

    out = Path(out)
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    if height <= 0 or width <= 0 or height % 16 or width % 16:
        raise ValueError(f"height and width must be positive multiples of 16, got {height}x{width}")
    head = DeployHead(copy.deepcopy(model).float().cpu(), with_probabilities).eval()
    args = []
    if "image" in model.streams:
        args.append(torch.full((1, 3, height, width), 128.0))
    if "flow" in model.streams:
        args.append(torch.zeros(1, 3, height, width))
    with atomic_path(out, overwrite=force, how_to_overwrite="pass --force (force=True) to replace it") as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notices
            torch.onnx.export(
                head,
                tuple(args),
                str(tmp),
                input_names=head.input_names,
                output_names=head.output_names,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        metadata = {
            META_CONFIG: json.dumps(model.config.to_dict()),
            META_CONTRACT: json.dumps(contract(model.config, height, width, with_probabilities)),
            META_SOURCE: source,
        }
        del proto.metadata_props[:]
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "mtl_perception"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
    LOG.info("exported %s (%dx%d, opset %d, outputs %s)", out, height, width, opset, head.output_names)
    return out


def read_onnx_metadata(path: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """(ModelConfig, contract) from an exported file; errors name the file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_CONFIG not in meta or META_CONTRACT not in meta:
        raise ValueError(f"{path}: no mtl_perception metadata (export it with export_model)")
    try:
        config = ModelConfig.from_dict(json.loads(meta[META_CONFIG]))
        spec = json.loads(meta[META_CONTRACT])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: invalid mtl_perception metadata: {exc}") from exc
    if spec.get("version") != CONTRACT_VERSION:
        raise ValueError(
            f"{path}: contract version {spec.get('version')!r}, this code reads {CONTRACT_VERSION}"
        )
    return config, spec


def model_from_source(
    checkpoint: str | os.PathLike | None, preset: str = "ti", seed: int = 0, **build_kwargs
) -> tuple[MultiTaskNet, str]:
    """A checkpoint's network, or a seeded random init of `preset` (untrained; for tests and benchmarks)."""
    if checkpoint is not None:
        model, _ = load_checkpoint(checkpoint)
        return model.eval(), f"checkpoint {Path(checkpoint).resolve()}"
    torch.manual_seed(seed)
    return build_model(preset=preset, **build_kwargs).eval(), f"random init preset={preset} seed={seed}"


def _opset(text: str) -> int:
    """--opset: what export_onnx supports (>= 17) and the TorchScript exporter can write."""
    import argparse

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
        "--height", type=positive_int, help="default: the checkpoint's training height, else 384"
    )
    parser.add_argument(
        "--width", type=positive_int, help="default: the checkpoint's training width, else 768"
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
    default = (384, 768)
    if args.checkpoint is not None and (args.height is None or args.width is None):
        default = trained_input_size(read_checkpoint(args.checkpoint)["extra"]) or default
    size = (args.height or default[0], args.width or default[1])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, origin = model_from_source(checkpoint=args.checkpoint, preset=args.preset or "ti", seed=args.seed)
    path = export_onnx(
        model=model,
        out=args.out,
        height=size[0],
        width=size[1],
        with_probabilities=args.with_probabilities,
        opset=args.opset,
        force=args.force,
        source=origin,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
