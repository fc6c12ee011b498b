"""Losses: terms in ``LOSS_REGISTRY`` and ``build_loss(cfg)``, their weighted sum.

``build_loss(cfg)(logits (N, K, H, W), target (N, H, W) int64)`` returns a dict of
weighted ``loss_<term>`` scalars, one per entry of ``MODEL.LOSS.TERMS``.
"""
from segkit.modeling.losses.build import CombinedLoss, build_loss, build_loss_term
from segkit.modeling.losses.class_weights import (
    CLASS_WEIGHT_METHODS,
    class_stats_file,
    class_weights_from_config,
    class_weights_from_counts,
    load_class_weights,
)
from segkit.modeling.losses.pixel_wise import CrossEntropy, Focal, OhemCrossEntropy, PixelWiseLoss, build_selector
from segkit.modeling.losses.region import Dice, LovaszSoftmax, lovasz_grad
from segkit.modeling.losses.selection import LossSampler, OhemSelector

__all__ = [
    "CLASS_WEIGHT_METHODS",
    "CombinedLoss",
    "CrossEntropy",
    "Dice",
    "Focal",
    "LossSampler",
    "LovaszSoftmax",
    "OhemCrossEntropy",
    "OhemSelector",
    "PixelWiseLoss",
    "build_loss",
    "build_loss_term",
    "build_selector",
    "class_stats_file",
    "class_weights_from_config",
    "class_weights_from_counts",
    "load_class_weights",
    "lovasz_grad",
]
