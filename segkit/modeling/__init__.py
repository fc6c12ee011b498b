"""Models: backbones, heads, losses and meta-architectures.

``build_model(cfg)`` builds ``MODEL.META_ARCHITECTURE`` (default
``SemanticSegmentor``) on ``MODEL.DEVICE``.
"""
from segkit.modeling.backbone import Backbone, build_backbone
from segkit.modeling.heads import build_head
from segkit.modeling.meta_arch import MultiScaleSegmentor, SemanticSegmentor, build_model

__all__ = ["Backbone", "build_backbone", "build_head", "build_model", "MultiScaleSegmentor", "SemanticSegmentor"]
