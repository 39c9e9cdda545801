"""`MultiTaskNet`: TI's two-stream multi-task network (flow + RGB encoders fused at stride 4, a shared
MobileNetV2 trunk, one DeepLabV3+-lite decoder per task), taking raw inputs and returning raw outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backbone import Fusion, StreamStem, Trunk
from .config import ModelConfig, preset_config
from .decoder import DeepLabV3PlusLiteDecoder

STRIDE = 16  # output stride of the trunk; input H and W must be multiples of it


def check_input(name: str, x: object, height: int | None = None, width: int | None = None) -> None:
    """Raise ValueError naming `name` unless x is a floating (N,3,H,W) tensor with H, W multiples of 16."""
    expected = f"(N, 3, {height or 'H'}, {width or 'W'}) floating tensor, H and W multiples of {STRIDE}"
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a {expected}, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype ({expected}), got {x.dtype}")
    h, w = int(x.shape[2]), int(x.shape[3])
    if h % STRIDE or w % STRIDE or h == 0 or w == 0:
        raise ValueError(f"{name}: height and width must be non-zero multiples of {STRIDE}, got {h}x{w}")
    if (height is not None and h != height) or (width is not None and w != width):
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")


class MultiTaskNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        act, norm = config.activation, config.normalization
        self.stems = nn.ModuleDict(
            {s: StreamStem(config.width, act, config.always_expand) for s in config.streams}
        )
        stride4 = next(iter(self.stems.values())).out_channels
        # With one stream there is nothing to fuse: its stride-4 map goes straight on.
        self.fusion = Fusion(stride4 * len(config.streams), stride4) if len(config.streams) > 1 else None
        self.trunk = Trunk(stride4, config.width, act)
        self.decoders = nn.ModuleDict(
            {
                task: DeepLabV3PlusLiteDecoder(
                    self.trunk.out_channels,
                    stride4,
                    config.task_channels(task),
                    config.aspp_channels,
                    config.aspp_dilations,
                    config.skip_channels,
                    config.dropout,
                    act,
                )
                for task in config.tasks
            }
        )
        # Normalisation constants as non-persistent buffers: they follow .to(device) and are baked into ONNX,
        # while the checkpoint keeps them in the config (the single source of truth).
        self.register_buffer("image_mean", torch.full((1, 3, 1, 1), norm.image_mean), persistent=False)
        self.register_buffer("image_std", torch.full((1, 3, 1, 1), norm.image_std), persistent=False)
        self.register_buffer(
            "flow_mean", torch.tensor([0.0, 0.0, norm.confidence_mean]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "flow_std",
            torch.tensor([norm.flow_scale, norm.flow_scale, norm.confidence_std]).view(1, 3, 1, 1),
            persistent=False,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TI's init: conv kaiming_normal(fan_out, relu), bias 0; BN gamma 1, beta 0 (seed: manual_seed)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.tasks

    @property
    def streams(self) -> tuple[str, ...]:
        return self.config.streams

    def forward(
        self, image: Tensor | None, flow: Tensor | None = None, *, return_features: bool = False
    ) -> dict[str, Tensor] | tuple[dict[str, Tensor], tuple[Tensor, Tensor]]:
        """image (N,3,H,W) RGB 0..255; flow (N,3,H,W) = (u, v) px at input resolution + confidence 0..1.

        Each input is required exactly when the network has that stream (image may be None if flow-only).

        Returns {"depth": (N,1,H,W) metres (unclamped), "semantic": (N,C,H,W) logits, "motion": (N,2,H,W)
        logits}, only for the tasks this network was built with.

        With return_features=True returns (outputs, (shared, skip)) for task weighting: `shared` is the
        trunk output (stride 16) and `skip` the fused stride-4 map as the decoders consume it.
        """
        inputs = self._validated_inputs(image, flow)
        features = [self.stems[name](x) for name, x in inputs.items()]
        stride4 = self.fusion(torch.cat(features, dim=1)) if self.fusion is not None else features[0]
        shared = self.trunk(stride4)
        # The decoders read the stride-4 map through its own view node, so a hook on `skip` sees only the
        # decoders' gradient and not the trunk's (the view is free and changes no value).
        skip = stride4.view_as(stride4) if return_features else stride4
        outputs = {task: decoder(shared, skip) for task, decoder in self.decoders.items()}
        if return_features:
            return outputs, (shared, skip)
        return outputs

    def _validated_inputs(self, image: Tensor | None, flow: Tensor | None) -> dict[str, Tensor]:
        """Normalised inputs per stream, in stream order (flow first, as TI); raw inputs are validated."""
        reference = None
        if "image" in self.streams:
            check_input("image", image)
            reference = image
        if "flow" in self.streams:
            if flow is None:
                shape = (
                    f"(N, 3, {reference.shape[2]}, {reference.shape[3]})"
                    if reference is not None
                    else "(N, 3, H, W)"
                )
                raise ValueError(
                    f"flow: this network has a flow stream; expected {shape} "
                    "(u px, v px, confidence 0..1), got None"
                )
            if reference is None:
                check_input("flow", flow)
            else:
                check_input("flow", flow, int(reference.shape[2]), int(reference.shape[3]))
                if flow.shape[0] != reference.shape[0]:
                    raise ValueError(
                        f"flow: batch size {flow.shape[0]} != image batch size {reference.shape[0]}"
                    )
        inputs: dict[str, Tensor] = {}
        for name in self.streams:
            if name == "flow":
                inputs["flow"] = (flow - self.flow_mean) / self.flow_std
            else:
                inputs["image"] = (image - self.image_mean) / self.image_std
        return inputs


def build_model(
    preset: str = "ti",
    tasks=("depth", "semantic", "motion"),
    streams=("flow", "image"),
    num_semantic_classes: int = 5,
    **overrides,
) -> MultiTaskNet:
    """Build a freshly initialised network; call torch.manual_seed first for a reproducible init."""
    config = preset_config(
        preset,
        tasks=tuple(tasks),
        streams=tuple(streams),
        num_semantic_classes=num_semantic_classes,
        **overrides,
    )
    return MultiTaskNet(config)
