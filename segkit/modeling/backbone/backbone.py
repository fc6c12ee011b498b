"""The backbone contract: named feature maps with promised channels and strides."""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Dict, Optional

import torch
from torch import nn

from segkit.config.configurable import build_component
from segkit.layers import ShapeSpec
from segkit.registry import BACKBONE_REGISTRY

__all__ = ["Backbone", "build_backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """Base class of every backbone.

    ``forward(x: (N, C, H, W))`` returns ``dict[str, Tensor]`` of named feature maps
    (``"res2"``..``"res5"``, ``"conv3"``..``"fc7"``) and ``output_shape()`` promises
    each one's channels and stride. Heads select their inputs by name.
    """

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    @abstractmethod
    def output_shape(self) -> Dict[str, ShapeSpec]:
        """``{name: ShapeSpec(channels, stride)}`` for every map ``forward`` returns."""
        raise NotImplementedError

    @property
    def size_divisibility(self) -> int:
        """Input sizes must be a multiple of this (0 = any size works)."""
        return 0


def build_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """Build ``cfg.MODEL.BACKBONE.NAME`` from BACKBONE_REGISTRY."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    backbone = build_component(
        BACKBONE_REGISTRY, cfg.MODEL.BACKBONE.NAME, cfg, input_shape=input_shape,
        expect=Backbone, promise="a segkit.modeling.backbone.Backbone (subclass it)",
    )
    on_gridding = cfg.MODEL.HDC.GRIDDING_CHECK
    if on_gridding != "off":
        # HDC (Wang et al. 2018): warn about (or refuse) dilated stacks that leave holes.
        from segkit.modeling.gridding import check_model_gridding

        check_model_gridding(backbone, on_gridding=on_gridding)
    return backbone
