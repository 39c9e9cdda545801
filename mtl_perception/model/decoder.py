"""DeepLabV3+-lite decoder (TI `DeepLabV3PlusEdgeAILiteDecoder`), one instance per task."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import ConvBNAct


class DWASPPLite(nn.Module):
    """TI's DWASPPLiteBlock: a 1x1 branch plus depthwise-separable dilated branches, no image pooling."""

    def __init__(
        self, in_channels: int, channels: int, dilations: tuple[int, ...], dropout: float, activation: str
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvBNAct(in_channels, channels, kernel=1, activation=activation)])
        for d in dilations:
            self.branches.append(
                nn.Sequential(
                    ConvBNAct(
                        in_channels,
                        in_channels,
                        kernel=3,
                        groups=in_channels,
                        dilation=d,
                        activation=activation,
                    ),
                    ConvBNAct(in_channels, channels, kernel=1, activation=activation),
                )
            )
        self.dropout = nn.Dropout2d(dropout)
        self.project = ConvBNAct(channels * len(self.branches), channels, kernel=1, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.dropout(torch.cat([branch(x) for branch in self.branches], dim=1)))


class DeepLabV3PlusLiteDecoder(nn.Module):
    """ASPP @ stride 16 -> x4 -> concat with a 1x1 skip of the stride-4 map -> dw-sep prediction -> x4."""

    def __init__(
        self,
        in_channels: int,
        skip_in_channels: int,
        out_channels: int,
        aspp_channels: int = 256,
        dilations: tuple[int, ...] = (2, 4, 6),
        skip_channels: int = 48,
        dropout: float = 0.2,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.aspp = DWASPPLite(in_channels, aspp_channels, dilations, dropout, activation)
        self.skip = ConvBNAct(skip_in_channels, skip_channels, kernel=1, activation=activation)
        merged = aspp_channels + skip_channels
        # Prediction: dw3x3 + BN (no act) -> 1x1 to the task's channels with no BN, no act, no bias.
        self.predict_dw = ConvBNAct(merged, merged, kernel=3, groups=merged, activation=None)
        self.predict = nn.Conv2d(merged, out_channels, kernel_size=1, bias=False)

    def forward(self, features: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(self.aspp(features), scale_factor=4.0, mode="bilinear", align_corners=False)
        x = torch.cat([x, self.skip(skip)], dim=1)
        x = self.predict(self.predict_dw(x))
        return F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)
