"""Dense upsampling convolution (DUC; Wang et al., "Understanding Convolution for
Semantic Segmentation", WACV 2018, sec. 3.1).

Instead of bilinearly upsampling a stride-``d`` score map, DUC predicts ``d*d``
scores per class at every feature-map position and reshapes them into the
``d x d`` sub-pixel block they stand for: a ``(N, K*d*d, H/d, W/d)`` map becomes
``(N, K, H, W)``. The reshape is :func:`torch.nn.functional.pixel_shuffle`:
channel ``k*d*d + i*d + j`` at cell ``(y, x)`` lands on pixel ``(y*d + i, x*d + j)``
of class ``k`` (tested). The authors' released ResNet-DUC-HDC models
(TuSimple-DUC) compute the ``K*d*d`` channels as the sum of four 3x3 convolutions
with dilations 6, 12, 18, 24 on res5; ``dilations=[1]`` is the single plain conv
the paper's Fig. 1 draws.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.modeling.heads.base import SegmentationHead
from segkit.registry import HEAD_REGISTRY

__all__ = ["DUCHead"]


@HEAD_REGISTRY.register()
class DUCHead(SegmentationHead):
    """Dense upsampling convolution head.

    Args:
        input_shape: the backbone's ``output_shape()``.
        in_features: one feature name, e.g. ``["res5"]``.
        num_classes: K.
        dilations: one summed 3x3 conv branch per rate.
        upscale: pixel-shuffle factor ``d``; 0 = the feature's stride, so the
            logits come out at the input resolution.

    ``forward(features)`` returns logits ``(N, K, H_f*d, W_f*d)`` for a feature of
    size ``(H_f, W_f)``.
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: Sequence[str], num_classes: int,
                 dilations: Sequence[int] = (6, 12, 18, 24), upscale: int = 0) -> None:
        if len(in_features) != 1 or in_features[0] not in input_shape:
            raise ValueError(
                f"DUCHead reads exactly one feature map; IN_FEATURES is {list(in_features)} and the "
                f"backbone provides {sorted(input_shape)}."
            )
        if not dilations:
            raise ValueError("MODEL.DUC.DILATIONS must name at least one rate (e.g. [1]).")
        super().__init__(input_shape=input_shape, in_features=in_features, num_classes=num_classes)
        self.in_feature = in_features[0]
        spec = input_shape[self.in_feature]
        self.upscale = int(upscale or spec.stride or 1)
        out = num_classes * self.upscale ** 2
        self.branches = nn.ModuleList(
            nn.Conv2d(spec.channels, out, kernel_size=3, padding=r, dilation=r) for r in dilations
        )
        self.stride = max(1, (spec.stride or 1) // self.upscale)
        for conv in self.branches:
            self.init_classifier(conv, std=0.01)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        return {
            **super().from_config(cfg, input_shape),
            "dilations": list(cfg.MODEL.DUC.DILATIONS),
            "upscale": cfg.MODEL.DUC.UPSCALE,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """features[in_feature]: (N, C, h, w) -> logits (N, K, h*d, w*d)."""
        x = features[self.in_feature]
        scores = self.branches[0](x)
        for conv in self.branches[1:]:
            scores = scores + conv(x)
        return F.pixel_shuffle(scores, self.upscale)
