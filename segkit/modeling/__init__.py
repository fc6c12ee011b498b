"""Models: backbones, heads, losses and meta-architectures.

``build_model(cfg)`` builds ``MODEL.META_ARCHITECTURE`` (default
``SemanticSegmentor``) on ``MODEL.DEVICE``.
"""
from segkit.modeling.backbone import VGG, Backbone, ResNet, build_backbone
from segkit.modeling.heads import DeepLabV2Head, FCNHead, build_head
from segkit.modeling.meta_arch import MultiScaleSegmentor, SemanticSegmentor, build_model
from segkit.modeling.meta_arch import LateFusionSegmentor, MultiTaskSegmentor, split_label_sets, upsample_logits

# Importing the package registers every modeling built-in, losses included.
from segkit.modeling import losses  # noqa: E402,F401  (after meta_arch: losses may import modeling)

__all__ = [
    "Backbone",
    "build_backbone",
    "ResNet",
    "VGG",
    "build_head",
    "FCNHead",
    "DeepLabV2Head",
    "build_model",
    "MultiScaleSegmentor",
    "SemanticSegmentor",
    "LateFusionSegmentor",
    "MultiTaskSegmentor",
    "split_label_sets",
    "upsample_logits",
]
