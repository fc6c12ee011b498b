"""BACKBONE_REGISTRY: named feature maps whose channels and strides output_shape() promises."""
from typing import Dict

import torch
from torch import nn

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.modeling.backbone import Backbone
from segkit.registry import BACKBONE_REGISTRY


@BACKBONE_REGISTRY.register()
class TinyConvBackbone(Backbone):
    """Two strided conv stages: ``"s4"`` (stride 4) and ``"s8"`` (stride 8).

    Args:
        in_channels: image channels.
        width: channels of ``"s4"``; ``"s8"`` has ``2 * width``.
    """

    @configurable
    def __init__(self, *, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=4, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self._shapes = {"s4": ShapeSpec(channels=width, stride=4), "s8": ShapeSpec(channels=2 * width, stride=8)}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> dict:
        return {"in_channels": input_shape.channels or 3, "width": cfg.MODEL.TINY_CONV.WIDTH}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, C, H, W) normalised image -> {"s4": (N, w, H/4, W/4), "s8": (N, 2w, H/8, W/8)}."""
        s4 = self.stage1(x)
        return {"s4": s4, "s8": self.stage2(s4)}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)
