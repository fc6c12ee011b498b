"""Building blocks shared by backbones and heads."""
from segkit.layers.norm import get_norm, norm_factory
from segkit.layers.shape_spec import ShapeSpec
from segkit.layers.upsample import BilinearDeconv, bilinear_kernel

__all__ = ["BilinearDeconv", "ShapeSpec", "bilinear_kernel", "get_norm", "norm_factory"]
