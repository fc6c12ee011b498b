"""HEAD_REGISTRY: backbone features -> logits (N, K, h, w), on the SegmentationHead base class."""
from typing import Dict

import torch
from torch import nn

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.modeling.heads import SegmentationHead
from segkit.registry import HEAD_REGISTRY


@HEAD_REGISTRY.register()
class SimpleHead(SegmentationHead):
    """3x3 conv, ReLU, 1x1 classifier on the first of ``MODEL.HEAD.IN_FEATURES``.

    The base class reads ``IN_FEATURES`` (checked against the backbone's
    ``output_shape()``), ``NUM_CLASSES`` and sets ``self.stride``.

    Args:
        input_shape, in_features, num_classes: see ``SegmentationHead``.
        channels: hidden channels.
    """

    @configurable
    def __init__(self, *, input_shape: Dict[str, ShapeSpec], in_features, num_classes: int,
                 channels: int = 16) -> None:
        super().__init__(input_shape=input_shape, in_features=in_features, num_classes=num_classes)
        self.hidden = nn.Sequential(nn.Conv2d(self.in_channels(), channels, 3, padding=1), nn.ReLU())
        self.classifier = self.init_classifier(nn.Conv2d(channels, num_classes, 1), std=0.01)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        return {**super().from_config(cfg, input_shape), "channels": 16}

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """features[in_features[0]]: (N, C, h, w) -> logits (N, K, h, w)."""
        return self.classifier(self.hidden(features[self.in_features[0]]))
