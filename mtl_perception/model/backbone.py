"""MobileNetV2 pieces, torchvision style (no expansion conv when t == 1), split the way TI's two-stream
network needs them: a per-stream stem (blocks 0-3, stride 4) and a shared trunk (blocks 4-17, stride 16).
"""

from __future__ import annotations

from torch import Tensor, nn

# (expansion t, channels c, repeats n, stride s) after the 3x3 stem, as in MobileNetV2 / TI.
# The 160-ch stage uses stride 1 (TI strides (2,2,2,2,1): output stride 16, no dilation).
STEM_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2))
TRUNK_SETTINGS = ((6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 1), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding, so width multipliers give hardware-friendly channel counts."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def activation_layer(name: str) -> nn.Module:
    """`relu` is TI's DefaultAct2d (torch.nn.ReLU); `relu6` is the torchvision / ericsun choice."""
    return nn.ReLU6(inplace=True) if name == "relu6" else nn.ReLU(inplace=True)


class ConvBNAct(nn.Sequential):
    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: str | None = "relu",
    ) -> None:
        padding = (kernel - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if activation is not None:
            layers.append(activation_layer(activation))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """[1x1 expand + BN + act] (skipped when t == 1) -> dw3x3 + BN + act -> 1x1 project + BN (linear)."""

    def __init__(
        self, cin: int, cout: int, stride: int, expansion: int, activation: str, always_expand: bool = False
    ) -> None:
        super().__init__()
        hidden = int(round(cin * expansion))
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expansion != 1 or always_expand:  # always_expand: the "ericsun" block TI's published model used
            layers.append(ConvBNAct(cin, hidden, kernel=1, activation=activation))
        layers += [
            ConvBNAct(hidden, hidden, kernel=3, stride=stride, groups=hidden, activation=activation),
            ConvBNAct(hidden, cout, kernel=1, activation=None),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


def _stage_blocks(
    settings, cin: int, width: float, activation: str, always_expand: bool = False
) -> tuple[list[nn.Module], int]:
    blocks: list[nn.Module] = []
    for t, c, n, s in settings:
        cout = make_divisible(c * width)
        for i in range(n):
            blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, activation, always_expand))
            cin = cout
    return blocks, cin


class StreamStem(nn.Sequential):
    """MobileNetV2 blocks 0-3 (conv3x3 s2 -> 32, IR t1 16, IR t6 24 s2, IR t6 24): 3 -> 24 ch @ stride 4."""

    def __init__(self, width: float = 1.0, activation: str = "relu", always_expand: bool = False) -> None:
        stem_channels = make_divisible(32 * width)
        blocks, out_channels = _stage_blocks(STEM_SETTINGS, stem_channels, width, activation, always_expand)
        super().__init__(ConvBNAct(3, stem_channels, kernel=3, stride=2, activation=activation), *blocks)
        self.out_channels = out_channels


class Trunk(nn.Sequential):
    """MobileNetV2 blocks 4-17 (to 320 ch @ stride 16), without the final 1x1 320 -> 1280 conv."""

    def __init__(self, in_channels: int, width: float = 1.0, activation: str = "relu") -> None:
        blocks, out_channels = _stage_blocks(TRUNK_SETTINGS, in_channels, width, activation)
        super().__init__(*blocks)
        self.out_channels = out_channels


class Fusion(nn.Sequential):
    """TI's stride-4 fusion: concat -> dw3x3 + BN -> 1x1 + BN, deliberately without activation."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, kernel=3, groups=in_channels, activation=None),
            ConvBNAct(in_channels, out_channels, kernel=1, activation=None),
        )
