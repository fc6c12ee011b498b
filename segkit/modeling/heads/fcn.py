"""FCN heads: FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer, Darrell, CVPR 2015).

One class covers the family: ``in_features`` lists the maps fine to coarse, e.g.
``["fc7"]`` is FCN-32s, ``["pool4", "fc7"]`` FCN-16s and ``["pool3", "pool4", "fc7"]``
FCN-8s on VGG-16; ``["res5"]`` (or ``["res4", "res5"]``) is the FCN head on a
dilated ResNet. The head returns scores at the finest input's stride; the final
upsampling to the image is the meta-architecture's fixed bilinear interpolation,
as in the paper (sec. 4.3, "the final layer deconvolutional filters are fixed to
bilinear interpolation").
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.layers.norm import get_norm
from segkit.layers.upsample import BilinearDeconv
from segkit.modeling.heads.base import SegmentationHead
from segkit.registry import HEAD_REGISTRY

__all__ = ["FCNHead", "build_fcn_head"]


def _score_layer(in_channels: int, num_classes: int, hidden: int, norm: str, dropout: float) -> nn.Module:
    layers: List[nn.Module] = []
    if hidden > 0:
        # torchvision's FCN head: 3x3 conv-norm-ReLU-dropout before the classifier.
        norm_layer = get_norm(norm, hidden)
        layers += [nn.Conv2d(in_channels, hidden, 3, padding=1, bias=norm_layer is None)]
        layers += [norm_layer] if norm_layer is not None else []
        layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_channels = hidden
    # FCN sec. 4.3: "We zero-initialize the class scoring convolution layer"; the
    # skip scores start at zero so fusion starts from the coarser net (sec. 4.2).
    layers.append(SegmentationHead.init_classifier(nn.Conv2d(in_channels, num_classes, 1), std=0))
    return nn.Sequential(*layers)


@HEAD_REGISTRY.register()
class FCNHead(SegmentationHead):
    """Score layers on one or more maps, fused coarse to fine by learnt 2x upsampling.

    ``forward(features)``: each ``features[name]`` is ``(N, C_name, H/s, W/s)``;
    returns logits ``(N, K, h, w)`` at the finest map's size (stride ``self.stride``).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: Dict[str, ShapeSpec],
        in_features: Sequence[str],
        num_classes: int,
        hidden_channels: int = 0,
        dropout: float = 0.1,
        norm: str = "BN",
        learn_upsample: bool = True,
    ) -> None:
        super().__init__(input_shape=input_shape, in_features=in_features, num_classes=num_classes)
        strides = [input_shape[f].stride for f in self.in_features]
        if any(a > b for a, b in zip(strides, strides[1:])):
            raise ValueError(f"FCNHead: IN_FEATURES must go fine to coarse; strides are {strides}.")
        self.scores = nn.ModuleDict(
            {
                f: _score_layer(input_shape[f].channels, num_classes, hidden_channels, norm, dropout)
                for f in self.in_features
            }
        )
        # upsample[f] brings the running score from the next coarser map to f's grid.
        self.upsample = nn.ModuleDict()
        for fine, coarse, s_fine, s_coarse in zip(self.in_features, self.in_features[1:], strides, strides[1:]):
            if s_coarse % s_fine:
                raise ValueError(f"FCNHead: stride {s_coarse} of '{coarse}' is not a multiple of {s_fine} of '{fine}'.")
            self.upsample[fine] = BilinearDeconv(num_classes, s_coarse // s_fine, learnable=learn_upsample)
        self.stride = strides[0]

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        score = self.scores[self.in_features[-1]](features[self.in_features[-1]])
        for name in reversed(self.in_features[:-1]):
            skip = self.scores[name](features[name])
            # FCN sec. 4.2: upsample the coarser score, crop it to the finer grid, sum.
            score = self.upsample[name](score, size=skip.shape[-2:]) + skip
        return score

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        return {
            **super().from_config(cfg, input_shape),
            "hidden_channels": cfg.MODEL.FCN.HIDDEN_CHANNELS,
            "dropout": cfg.MODEL.FCN.DROPOUT,
            "norm": cfg.MODEL.FCN.NORM,
            "learn_upsample": cfg.MODEL.FCN.LEARN_UPSAMPLE,
        }


def build_fcn_head(cfg, input_shape: Dict[str, ShapeSpec]) -> FCNHead:
    """``FCNHead(cfg, input_shape)``; kept for code written before the class was registered."""
    return FCNHead(cfg, input_shape)
