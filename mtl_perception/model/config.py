"""`ModelConfig`: all that is needed to rebuild a `MultiTaskNet` (kept in checkpoints, ONNX metadata)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

TASK_NAMES = ("depth", "semantic", "motion")
STREAM_NAMES = ("flow", "image")
ACTIVATIONS = ("relu", "relu6")


@dataclass(frozen=True)
class Normalization:
    """Input normalisation applied *inside* the network, so every backend sees raw inputs.

    TI normalises both inputs with (x - 128) / 64 (`image_mean=128, image_scale=1/64`) on 8-bit PNGs.
    Our image input is RGB 0..255, so the image constants are TI's exactly.
    Our flow input is (u, v) in pixels plus a confidence in 0..1, not TI's 8-bit code u' = 128 + s*u; TI's
    normalised value is (u' - 128) / 64 = u * s / 64, so `flow_scale` = 64 / s pixels. We choose 16 px
    (s = 4 code steps per pixel, +-32 px representable in 8 bit), which keeps typical Cityscapes flow
    (|u| < 40 px at 768x384) in the same +-2.5 range as the normalised image.
    Confidence: (c - 0.5) / 0.5 maps 0..1 to -1..1 (TI's (255c - 128) / 64 would map it to -2..2; the
    difference is one per-channel scale the first conv absorbs when training from scratch).
    """

    image_mean: float = 128.0
    image_std: float = 64.0
    flow_scale: float = 16.0
    confidence_mean: float = 0.5
    confidence_std: float = 0.5


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters. Presets: `ti` (TI's network) and `lite` (cheaper, for CPUs)."""

    preset: str = "ti"
    tasks: tuple[str, ...] = TASK_NAMES
    streams: tuple[str, ...] = STREAM_NAMES
    num_semantic_classes: int = 5
    width: float = 1.0
    aspp_channels: int = 256
    aspp_dilations: tuple[int, ...] = (2, 4, 6)
    skip_channels: int = 48
    dropout: float = 0.2
    activation: str = "relu"
    # True: the "ericsun" MobileNetV2 block (1x1 expansion conv even when t == 1) that TI's published MTL
    # model used; False (default): the torchvision block, TI's public twin `..._mobilenetv2_tv_edgeailite`.
    always_expand: bool = False
    normalization: Normalization = field(default_factory=Normalization)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "streams", tuple(self.streams))
        object.__setattr__(self, "aspp_dilations", tuple(int(d) for d in self.aspp_dilations))
        if isinstance(self.normalization, dict):
            object.__setattr__(self, "normalization", Normalization(**self.normalization))
        if (
            not self.tasks
            or any(t not in TASK_NAMES for t in self.tasks)
            or len(set(self.tasks)) != len(self.tasks)
        ):
            raise ValueError(f"tasks must be a non-empty subset of {TASK_NAMES}, got {self.tasks}")
        if (
            not self.streams
            or any(s not in STREAM_NAMES for s in self.streams)
            or len(set(self.streams)) != len(self.streams)
        ):
            raise ValueError(f"streams must be a non-empty subset of {STREAM_NAMES}, got {self.streams}")
        # Canonical order (flow first, as TI's image_folders) so the same set always builds the same network.
        object.__setattr__(self, "tasks", tuple(t for t in TASK_NAMES if t in self.tasks))
        object.__setattr__(self, "streams", tuple(s for s in STREAM_NAMES if s in self.streams))
        if int(self.num_semantic_classes) < 2:
            raise ValueError(f"num_semantic_classes must be >= 2, got {self.num_semantic_classes}")
        if not 0.0 < self.width <= 4.0:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.aspp_channels < 1 or self.skip_channels < 1 or not self.aspp_dilations:
            raise ValueError("aspp_channels, skip_channels must be >= 1 and aspp_dilations non-empty")

    def task_channels(self, task: str) -> int:
        return {"depth": 1, "semantic": int(self.num_semantic_classes), "motion": 2}[task]

    def to_dict(self) -> dict:
        """Plain JSON/`weights_only`-safe types (lists, not tuples)."""
        d = asdict(self)
        for key in ("tasks", "streams", "aspp_dilations"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)}")
        d = dict(d)
        if "normalization" in d and isinstance(d["normalization"], dict):
            d["normalization"] = Normalization(**d["normalization"])
        return cls(**d)


PRESETS: dict[str, dict] = {
    # TI's network: MobileNetV2 1.0, DW-ASPP-lite 256 ch, dilations (2, 4, 6), 48-ch skip.
    "ti": {},
    # Cheaper variant for CPUs / small GPUs: half-width backbone, 128-ch ASPP, 32-ch skip.
    "lite": {"width": 0.5, "aspp_channels": 128, "skip_channels": 32},
}


def preset_config(preset: str = "ti", **overrides) -> ModelConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(preset=preset, **{**PRESETS[preset], **overrides})
