"""Backbones: named feature maps with ShapeSpecs."""
from segkit.modeling.backbone.backbone import Backbone, build_backbone

__all__ = ["Backbone", "build_backbone"]
