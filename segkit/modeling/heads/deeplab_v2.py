"""DeepLab v2 heads: LargeFOV and ASPP (Chen et al., TPAMI 2018, sec. 3.1-3.2).

Parallel atrous branches on one map, each ending in class scores, fused by sum
(sec. 3.2, Fig. 4). Rates ``[12]`` with 1024-channel branches is DeepLab-LargeFOV;
``[2, 4, 8, 12]`` is ASPP-S and ``[6, 12, 18, 24]`` ASPP-L. On VGG-16 each branch is
fc6 (3x3, dilated) - fc7 (1x1) - fc8 with 1024 channels; on ResNet-101 each branch
is a single dilated 3x3 convolution to the classes (the released
``ResNet-101 ASPP`` prototxt), selected with ``branch_channels=0``.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.modeling.heads.base import SegmentationHead
from segkit.registry import HEAD_REGISTRY

__all__ = ["DeepLabV2Head", "build_deeplab_v2_head"]


def _classifier(conv: nn.Conv2d) -> nn.Conv2d:
    # DeepLab's prototxt: classifier weights gaussian std 0.01, bias 0.
    return SegmentationHead.init_classifier(conv, std=0.01)


def _branch(in_channels: int, num_classes: int, rate: int, channels: int, dropout: float) -> nn.Module:
    if channels == 0:
        return _classifier(nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate))
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=rate, dilation=rate),  # fc6
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Conv2d(channels, channels, 1),  # fc7
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        _classifier(nn.Conv2d(channels, num_classes, 1)),  # fc8
    )


@HEAD_REGISTRY.register()
class DeepLabV2Head(SegmentationHead):
    """Atrous branches summed: ``(N, C, h, w) -> (N, K, h, w)`` (same stride as the input map)."""

    @configurable
    def __init__(
        self,
        *,
        input_shape: Dict[str, ShapeSpec],
        in_features: Sequence[str],
        num_classes: int,
        rates: Sequence[int] = (6, 12, 18, 24),
        branch_channels: int = 0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(input_shape=input_shape, in_features=in_features, num_classes=num_classes)
        if len(in_features) != 1:
            raise ValueError(f"DeepLabV2Head reads one map; MODEL.HEAD.IN_FEATURES is {list(in_features)}.")
        if not rates or any(r < 1 for r in rates):
            raise ValueError(f"MODEL.DEEPLAB.RATES must be positive integers, got {list(rates)}.")
        self.in_feature = in_features[0]
        in_channels = self.in_channels()
        self.rates = list(rates)
        self.branches = nn.ModuleList(
            _branch(in_channels, num_classes, r, branch_channels, dropout) for r in self.rates
        )

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.in_feature]
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)  # sec. 3.2: branch scores fused by sum
        return out

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        return {
            **super().from_config(cfg, input_shape),
            "rates": list(cfg.MODEL.DEEPLAB.RATES),
            "branch_channels": cfg.MODEL.DEEPLAB.BRANCH_CHANNELS,
            "dropout": cfg.MODEL.DEEPLAB.DROPOUT,
        }


def build_deeplab_v2_head(cfg, input_shape: Dict[str, ShapeSpec]) -> DeepLabV2Head:
    """``DeepLabV2Head(cfg, input_shape)``; kept for code written before the class was registered."""
    return DeepLabV2Head(cfg, input_shape)
