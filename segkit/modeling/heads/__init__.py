"""Segmentation heads: backbone feature maps -> class logits.

Every built-in head subclasses :class:`SegmentationHead` and registers the class
itself in ``HEAD_REGISTRY``.
"""
from segkit.modeling.heads.base import SegmentationHead, check_in_features
from segkit.modeling.heads.build import build_head
from segkit.modeling.heads.deeplab_v2 import DeepLabV2Head
from segkit.modeling.heads.duc import DUCHead
from segkit.modeling.heads.fcn import FCNHead
from segkit.modeling.heads.refinenet import RefineNetHead

__all__ = [
    "build_head", "check_in_features", "DeepLabV2Head", "DUCHead", "FCNHead", "RefineNetHead", "SegmentationHead",
]
