"""ONNX export of a MultiTaskNet with a deployment contract baked in.

Graph contract (static shapes, batch 1 -- TensorRT and TIDL run fixed-shape engines, so a static graph keeps
every backend on its fastest path; re-export for another size):
  inputs  `image` (1,3,H,W) float32 RGB 0..255 and/or `flow` (1,3,H,W) float32 (u px, v px, confidence 0..1),
          only those the network has; normalisation happens inside the graph.
  outputs `depth` (1,1,H,W) float32 metres; `semantic`, `motion` (1,H,W) int32 class ids (argmax inside the
          graph; int32 rather than int64 or uint8 because TensorRT computes ArgMax/TopK indices in int32);
          with --with-probabilities also `semantic_prob`, `motion_prob` (1,C,H,W) float32 softmax.
  metadata_props: `mtl_perception.config` (ModelConfig JSON), `mtl_perception.contract` (the above as JSON),
          `mtl_perception.input_contract` (the input contract the network was trained on:
          ``mtl_perception.model.contract``, Farnebäck parameters included), `mtl_perception.source` (the
          checkpoint's file name and SHA-256, or the seeded random init; never a path of the machine).

The command line ``export_model`` is ``mtl_perception.inference.export_cli``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from mtl_perception.atomic import atomic_path
from mtl_perception.model import ModelConfig, MultiTaskNet, build_model, open_checkpoint
from mtl_perception.model.contract import ContractError, InputContract, assumed_contract, stored_contract

LOG = logging.getLogger("mtl_perception.inference")
CONTRACT_VERSION = 1
META_CONFIG, META_CONTRACT, META_INPUT_CONTRACT, META_SOURCE = (
    "mtl_perception.config",
    "mtl_perception.contract",
    "mtl_perception.input_contract",
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


def graph_contract(config: ModelConfig, height: int, width: int, with_probabilities: bool) -> dict:
    """The graph's inputs and outputs (names, shapes, dtypes, meaning) and its size."""
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
    *,
    contract: InputContract,
    height: int | None = None,
    width: int | None = None,
    with_probabilities: bool = False,
    opset: int = 17,
    force: bool = False,
    source: str = "",
) -> Path:
    """Export `model`, trained on `contract`'s inputs, to `out` (written atomically; an existing file is
    kept unless force=True). The graph's size is the contract's network size unless `height`/`width` say
    otherwise (the node then reports the contract as overridden).

    The graph is traced from a float32 CPU copy in eval mode: the caller's model stays on its device,
    in its dtype and in its train/eval mode.
    """
    import onnx

    out = Path(out)
    contract.check_model(model.config)
    height = int(height or contract.network_size[0])
    width = int(width or contract.network_size[1])
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
            META_CONTRACT: json.dumps(graph_contract(model.config, height, width, with_probabilities)),
            META_INPUT_CONTRACT: json.dumps(contract.to_dict()),
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
    """(ModelConfig, graph contract) from an exported file; errors name the file. The graph contract's
    ``input_contract`` entry holds the input contract's dict when the file has one (see
    :func:`onnx_input_contract`)."""
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
        if META_INPUT_CONTRACT in meta:
            spec["input_contract"] = json.loads(meta[META_INPUT_CONTRACT])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: invalid mtl_perception metadata: {exc}") from exc
    if spec.get("version") != CONTRACT_VERSION:
        raise ValueError(
            f"{path}: contract version {spec.get('version')!r}, this code reads {CONTRACT_VERSION}"
        )
    return config, spec


def onnx_input_contract(
    path: str | os.PathLike, config: ModelConfig, spec: dict, warn: Callable[[str], None] = LOG.warning
) -> InputContract:
    """The input contract in an exported file's metadata (from :func:`read_onnx_metadata`); a file exported
    before contracts existed gets the project's flow defaults at its graph size, and ``warn`` says so."""
    try:
        return stored_contract(
            spec.get("input_contract"),
            config=config,
            source=f"ONNX model {path}",
            assumed_size=tuple(spec["input_size"]),
            warn=warn,
        )
    except ContractError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def file_source(path: str | os.PathLike) -> str:
    """How an export names its checkpoint: file name and SHA-256, never a path of the machine."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return f"checkpoint {Path(path).name} sha256 {digest}"


def model_from_source(
    checkpoint: str | os.PathLike | None,
    preset: str = "ti",
    seed: int = 0,
    *,
    input_size: tuple[int, int] | None = None,
    warn: Callable[[str], None] = LOG.warning,
    **build_kwargs,
) -> tuple[MultiTaskNet, str, InputContract]:
    """(network, source, input contract) of a checkpoint, or of a seeded random init of `preset`
    (untrained, for tests and benchmarks: the project's flow defaults at `input_size`)."""
    if checkpoint is not None:
        model, _, contract = open_checkpoint(checkpoint, warn=warn)
        return model.eval(), file_source(checkpoint), contract
    from mtl_perception.model.contract import DEFAULT_NETWORK_SIZE

    torch.manual_seed(seed)
    model = build_model(preset=preset, **build_kwargs).eval()
    contract = assumed_contract(model.config, tuple(input_size or DEFAULT_NETWORK_SIZE))
    return model, f"random init preset={preset} seed={seed}", contract
