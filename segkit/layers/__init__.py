"""Building blocks shared by backbones and heads."""
from segkit.layers.shape_spec import ShapeSpec

__all__ = ["ShapeSpec"]
