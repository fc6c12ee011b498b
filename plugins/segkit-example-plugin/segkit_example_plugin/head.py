"""A light two-level decoder head, registered from outside segkit."""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import CfgNode, configurable
from segkit.layers import ShapeSpec
from segkit.modeling.heads import SegmentationHead
from segkit.registry import CONFIG_REGISTRY, HEAD_REGISTRY


@CONFIG_REGISTRY.register()
def add_light_decoder_config(cfg: CfgNode) -> None:
    """Add ``MODEL.LIGHT_DECODER.*`` so configs using this head validate."""
    cfg.MODEL.LIGHT_DECODER = CfgNode()
    # Channels of the fused decoder features.
    cfg.MODEL.LIGHT_DECODER.CHANNELS = 64
    # Dropout before the classifier.
    cfg.MODEL.LIGHT_DECODER.DROPOUT = 0.1


@HEAD_REGISTRY.register()
class LightDecoderHead(SegmentationHead):
    """Project a fine and a coarse feature map, upsample the coarse one, add, classify.

    Args:
        input_shape: the backbone's ``output_shape()``.
        in_features: ``[fine, coarse]`` feature names, e.g. ``["res3", "res5"]``.
        num_classes: K.
        channels: decoder width.
        dropout: dropout before the classifier.
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features, num_classes: int,
                 channels: int = 64, dropout: float = 0.1):
        if len(in_features) != 2:
            raise ValueError(f"LightDecoderHead needs two IN_FEATURES [fine, coarse], got {in_features}")
        # The base class checks the names against the backbone, keeps num_classes and the stride.
        super().__init__(input_shape=input_shape, in_features=in_features, num_classes=num_classes)
        fine, coarse = (input_shape[n] for n in self.in_features)
        self.fine_proj = nn.Sequential(nn.Conv2d(fine.channels, channels, 1, bias=False),
                                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.coarse_proj = nn.Sequential(nn.Conv2d(coarse.channels, channels, 1, bias=False),
                                         nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {
            **super().from_config(cfg, input_shape),  # input_shape, IN_FEATURES, NUM_CLASSES
            "channels": cfg.MODEL.LIGHT_DECODER.CHANNELS,
            "dropout": cfg.MODEL.LIGHT_DECODER.DROPOUT,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        fine = self.fine_proj(features[self.in_features[0]])
        coarse = self.coarse_proj(features[self.in_features[1]])
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.dropout(self.fuse(fine + coarse)))

