"""Models: backbones, heads, losses and meta-architectures."""
from segkit.modeling.backbone import Backbone, build_backbone

__all__ = ["Backbone", "build_backbone"]
