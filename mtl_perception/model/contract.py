"""The input contract: everything a trained network assumes about its inputs, carried in the model file.

A network learns on inputs made one particular way: the camera frame resized to its input size, and the
Farnebäck flow of that resized frame towards a partner frame a fixed time earlier, with one kind of
confidence, clamped to one range. Feed it flow made another way (another size, other Farnebäck
parameters, another confidence, another time gap) and it still runs, and silently scores far worse. So
the model file carries the contract, as a Hugging Face model carries its preprocessor config:

* :class:`FlowContract`: how the flow input is made (size, the seven Farnebäck parameters with the window
  type and the resize convention, confidence, clamp, partner gap in frames and the recording's frame rate,
  hence the node's ``flow_dt``, and the version of the flow code). A flow folder of
  ``make_flow_dataset`` records exactly this (``mtl_perception.data.flow_folder``);
* :class:`InputContract`: the flow contract plus the image encoding, the normalisation inside the network,
  the tasks, the streams and the semantic classes.

Every checkpoint ``train.py`` writes, every ONNX export (metadata) and every TensorRT engine's key carry it;
the node, the demo, replay, evaluation, training and ``make_flow_dataset`` read it from the model instead
of repeating it. Files made before the contract existed get :func:`assumed_contract` and one warning that
names the assumption.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields

from mtl_perception.flow.codecs import FLOW_PNG_LIMIT_PX
from mtl_perception.flow.confidence import CONFIDENCE_MODES, DEFAULT_CONFIDENCE_MODE
from mtl_perception.flow.params import (
    COMMON,
    CUDA_DEFAULTS,
    OPTFLOW_FARNEBACK_GAUSSIAN,
    FarnebackParams,
)

from .config import TASK_NAMES, ModelConfig, Normalization

LOG = logging.getLogger("mtl_perception.model")
CONTRACT_VERSION = 1
#: the version of the flow code's numerics (the Farnebäck port, the resize, the grey conversion); a flow
#: folder made by another version is refused like one made with other parameters
FLOW_CODE_VERSION = 1
#: Cityscapes' sequences (and the generated ones) are recorded at 17 Hz
DEFAULT_FRAME_RATE_HZ = 17.0
DEFAULT_PARTNER_GAP = 2  # TI's flow: frame f against frame f - 2
#: TI's network input size: the untrained network's, and a format-1 checkpoint's that records none
DEFAULT_NETWORK_SIZE = (384, 768)
FARNEBACK_PRESETS = {"cuda": CUDA_DEFAULTS, "common": COMMON}
IMAGE_ENCODING = (
    "RGB uint8 0..255, resized to network_size (bilinear, antialiased when shrinking, whole levels)"
)
SEMANTIC_CLASS_NAMES = {
    "five": ("road", "sky", "pedestrian", "vehicle", "background"),
    "ti_five": ("road", "sky", "pedestrian", "vehicle", "background"),
}


class ContractError(ValueError):
    """A contract that cannot be read (wrong version, missing or impossible values); the message names it."""


CUSTOM_SEMANTIC_MODE = "custom"  # a class set of the user's own: the contract lists its names


def semantic_class_names(mode: str) -> tuple[str, ...]:
    """The class names of a semantic mode (five classes, TI's five, or Cityscapes' 19 trainIds)."""
    if mode in SEMANTIC_CLASS_NAMES:
        return SEMANTIC_CLASS_NAMES[mode]
    if mode == "trainid":
        from cityscapesscripts.helpers.labels import labels

        return tuple(lab.name for lab in sorted(labels, key=lambda x: x.trainId) if 0 <= lab.trainId < 19)
    raise ContractError(f"unknown semantic mode {mode!r} (five, ti_five or trainid)")


def farneback_preset_name(params: FarnebackParams) -> str | None:
    """``cuda`` or ``common`` when ``params`` are that preset, else None."""
    return next((name for name, preset in FARNEBACK_PRESETS.items() if preset == params), None)


def window_name(params: FarnebackParams) -> str:
    return "gaussian" if int(params.flags) & OPTFLOW_FARNEBACK_GAUSSIAN else "box"


@dataclass(frozen=True)
class FlowContract:
    """How the flow input is made: the Farnebäck flow of the current frame at ``size`` towards the frame
    ``partner_gap`` frames earlier at ``frame_rate_hz`` (so ``flow_dt`` seconds earlier), with ``confidence``,
    values beyond ``clamp_px`` clamped with confidence 0 there."""

    size: tuple[int, int]
    farneback: FarnebackParams = CUDA_DEFAULTS
    confidence: str = DEFAULT_CONFIDENCE_MODE
    partner_gap: int = DEFAULT_PARTNER_GAP
    frame_rate_hz: float = DEFAULT_FRAME_RATE_HZ
    clamp_px: float = FLOW_PNG_LIMIT_PX
    code_version: int = FLOW_CODE_VERSION

    def __post_init__(self) -> None:
        try:
            size = tuple(int(v) for v in self.size)
        except (TypeError, ValueError):
            raise ContractError(f"flow size must be (height, width), got {self.size!r}") from None
        if len(size) != 2 or min(size) <= 0:
            raise ContractError(f"flow size must be two positive integers, got {self.size!r}")
        object.__setattr__(self, "size", size)
        if isinstance(self.farneback, dict):
            try:
                object.__setattr__(self, "farneback", FarnebackParams.from_dict(self.farneback))
            except (TypeError, ValueError) as error:
                raise ContractError(f"Farnebäck parameters: {error}") from None
        if self.confidence not in CONFIDENCE_MODES:
            raise ContractError(f"confidence must be one of {CONFIDENCE_MODES}, got {self.confidence!r}")
        if int(self.partner_gap) != self.partner_gap or self.partner_gap < 1:
            raise ContractError(f"partner gap must be a positive number of frames, got {self.partner_gap!r}")
        if not float(self.frame_rate_hz) > 0 or self.frame_rate_hz == float("inf"):
            raise ContractError(f"frame rate must be a positive number of Hz, got {self.frame_rate_hz!r}")
        if not float(self.clamp_px) > 0 or self.clamp_px > FLOW_PNG_LIMIT_PX:
            raise ContractError(f"flow clamp must be in (0, {FLOW_PNG_LIMIT_PX}] px, got {self.clamp_px!r}")

    @property
    def flow_dt(self) -> float:
        """Seconds between a frame and its flow partner (the node's ``flow_dt``)."""
        return self.partner_gap / self.frame_rate_hz

    def to_dict(self) -> dict:
        return {
            "size": list(self.size),
            "farneback": self.farneback.to_dict(),
            "window": window_name(self.farneback),
            "confidence": self.confidence,
            "partner_gap": int(self.partner_gap),
            "frame_rate_hz": float(self.frame_rate_hz),
            "flow_dt": self.flow_dt,
            "clamp_px": float(self.clamp_px),
            "code_version": int(self.code_version),
        }

    @classmethod
    def from_dict(cls, data: dict) -> FlowContract:
        if not isinstance(data, dict):
            raise ContractError(f"a flow contract is a JSON object, got {type(data).__name__}")
        derived = {"window", "flow_dt"}  # written for readers; recomputed from the rest
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - derived)
        if unknown:
            raise ContractError(f"unknown flow contract entries {unknown}")
        missing = sorted(known - set(data))
        if missing:
            raise ContractError(f"flow contract lacks {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def differences(self, other: FlowContract) -> list[str]:
        """What differs, one phrase each, ``self``'s value first: ``["size 384x768 vs 128x256", ...]``."""
        out = []
        if self.size != other.size:
            out.append(f"size {self.size[0]}x{self.size[1]} vs {other.size[0]}x{other.size[1]}")
        mine, theirs = self.farneback.to_dict(), other.farneback.to_dict()
        out += [f"Farnebäck {k} {mine[k]} vs {theirs[k]}" for k in mine if mine[k] != theirs[k]]
        for name, label, unit in (
            ("confidence", "confidence", ""),
            ("partner_gap", "partner gap", " frames"),
            ("frame_rate_hz", "frame rate", " Hz"),
            ("clamp_px", "clamp", " px"),
            ("code_version", "flow code version", ""),
        ):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out.append(f"{label} {a} vs {b}{unit}")
        return out

    def differences_line(self, other: FlowContract, mine: str, theirs: str) -> str:
        """:meth:`differences` as one phrase list naming whose value is whose ("" when none):
        ``size 384x768 vs 128x256 (folder vs model); confidence ...``."""
        found = self.differences(other)
        if not found:
            return ""
        return "; ".join([f"{found[0]} ({mine} vs {theirs})", *found[1:]])


@dataclass(frozen=True)
class InputContract:
    """What a trained network takes: :class:`FlowContract` (its ``size`` is the network input size) plus
    the image encoding, the normalisation applied inside the network, tasks, streams and classes."""

    flow: FlowContract
    tasks: tuple[str, ...] = TASK_NAMES
    streams: tuple[str, ...] = ("flow", "image")
    semantic_mode: str = "five"
    class_names: tuple[str, ...] = SEMANTIC_CLASS_NAMES["five"]
    normalization: Normalization = field(default_factory=Normalization)
    image: str = IMAGE_ENCODING
    version: int = CONTRACT_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.flow, dict):
            object.__setattr__(self, "flow", FlowContract.from_dict(self.flow))
        if isinstance(self.normalization, dict):
            try:
                object.__setattr__(self, "normalization", Normalization(**self.normalization))
            except TypeError as error:
                raise ContractError(f"normalization: {error}") from None
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "streams", tuple(self.streams))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.version != CONTRACT_VERSION:
            raise ContractError(
                f"input contract version {self.version!r}, this code reads {CONTRACT_VERSION}"
            )
        if self.semantic_mode == CUSTOM_SEMANTIC_MODE:
            if len(self.class_names) < 2:
                raise ContractError(f"a custom class set needs >= 2 names, got {list(self.class_names)}")
        elif len(self.class_names) != len(semantic_class_names(self.semantic_mode)):
            raise ContractError(
                f"semantic mode {self.semantic_mode!r} has {len(semantic_class_names(self.semantic_mode))} "
                f"classes, the contract names {len(self.class_names)}"
            )

    @property
    def network_size(self) -> tuple[int, int]:
        """(H, W) the network was trained at; the flow is computed at this size too."""
        return self.flow.size

    def to_dict(self) -> dict:
        data = asdict(self)
        data["flow"] = self.flow.to_dict()
        for key in ("tasks", "streams", "class_names"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> InputContract:
        if not isinstance(data, dict):
            raise ContractError(f"an input contract is a JSON object, got {type(data).__name__}")
        if data.get("version") != CONTRACT_VERSION:
            raise ContractError(
                f"input contract version {data.get('version')!r}, this code reads {CONTRACT_VERSION}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ContractError(f"unknown input contract entries {unknown}")
        try:
            return cls(**data)
        except TypeError as error:
            raise ContractError(f"input contract: {error}") from None

    def check_model(self, config: ModelConfig) -> None:
        """ContractError when the contract does not describe this network (tasks, streams, classes,
        normalisation): a file whose two records disagree is not trusted."""
        problems = []
        if self.tasks != config.tasks:
            problems.append(f"tasks {list(self.tasks)} vs the network's {list(config.tasks)}")
        if self.streams != config.streams:
            problems.append(f"streams {list(self.streams)} vs the network's {list(config.streams)}")
        if "semantic" in config.tasks and len(self.class_names) != int(config.num_semantic_classes):
            problems.append(f"{len(self.class_names)} classes vs the network's {config.num_semantic_classes}")
        if self.normalization != config.normalization:
            problems.append("normalisation differs from the network's")
        if problems:
            raise ContractError("input contract does not match the network: " + "; ".join(problems))

    def summary(self) -> str:
        """One line for logs and /diagnostics."""
        f = self.flow
        preset = farneback_preset_name(f.farneback)
        params = (
            f"Farnebäck {preset}"
            if preset
            else "Farnebäck " + ",".join(f"{k}={v}" for k, v in f.farneback.to_dict().items())
        )
        return (
            f"{f.size[0]}x{f.size[1]}, {params}, {window_name(f.farneback)} window, "
            f"resize {f.farneback.resize_mode}, "
            f"confidence {f.confidence}, partner {f.partner_gap} frames at {f.frame_rate_hz:g} Hz "
            f"(flow_dt {f.flow_dt:.4f} s), classes {self.semantic_mode}"
        )


def contract_for(
    config: ModelConfig,
    flow: FlowContract,
    semantic_mode: str | None = None,
) -> InputContract:
    """The contract of ``config``'s network trained on ``flow``; ``semantic_mode`` None: by class count (5:
    five, 19: trainid, else a custom set named ``class 0``, ``class 1``, ...)."""
    classes = int(config.num_semantic_classes)
    mode = semantic_mode or {5: "five", 19: "trainid"}.get(classes, CUSTOM_SEMANTIC_MODE)
    names = (
        tuple(f"class {i}" for i in range(classes))
        if mode == CUSTOM_SEMANTIC_MODE
        else semantic_class_names(mode)
    )
    return InputContract(
        flow=flow,
        tasks=config.tasks,
        streams=config.streams,
        semantic_mode=mode,
        class_names=names,
        normalization=config.normalization,
    )


def assumed_contract(config: ModelConfig, size: tuple[int, int]) -> InputContract:
    """The contract of a file made before contracts existed: the project's flow defaults at ``size``."""
    return contract_for(config, FlowContract(size=size))


_warned: set[str] = set()


def stored_contract(
    record: dict | None, *, config: ModelConfig, source: str, assumed_size: tuple[int, int], warn=LOG.warning
) -> InputContract:
    """The contract a model file stores (``record``; None: a file made before contracts, which gets
    :func:`assumed_contract` at ``assumed_size`` and one warning naming ``source``), checked against the
    network it describes; ContractError when unreadable or contradicting the network."""
    if record is None:
        contract = assumed_contract(config, assumed_size)
        warn_assumed(source, contract, warn)
        return contract
    contract = InputContract.from_dict(record)
    contract.check_model(config)
    return contract


def warn_assumed(source: str, contract: InputContract, warn=LOG.warning) -> None:
    """The one warning for a model file without a contract, naming what is assumed (once per file and
    process: a tool that reads the file's header, then its weights, says it once)."""
    if source in _warned:
        return
    _warned.add(source)
    warn(
        f"{source} records no input contract (made before contracts existed); assuming "
        f"{contract.summary()}: if its flow was made otherwise, its outputs are wrong"
    )
