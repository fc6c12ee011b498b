"""ShapeSpec: what a feature map promises (channels, stride), as in detectron2."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["ShapeSpec"]


@dataclass(frozen=True)
class ShapeSpec:
    """Shape of a named feature map.

    Attributes:
        channels: number of channels.
        stride: input pixels per feature-map pixel (output stride), e.g. 8 for res5
            of a dilated ResNet at output stride 8.
        height, width: optional fixed spatial size.
    """

    channels: Optional[int] = None
    stride: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
