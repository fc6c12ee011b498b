"""``build_head(cfg, input_shape)``: the configured head from HEAD_REGISTRY."""
from __future__ import annotations

from typing import Dict

from torch import nn

from segkit.config.configurable import build_component
from segkit.layers import ShapeSpec
from segkit.modeling.heads.base import check_in_features
from segkit.registry import HEAD_REGISTRY

__all__ = ["build_head", "check_in_features"]


def build_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build ``cfg.MODEL.HEAD.NAME`` for a backbone whose ``output_shape()`` is ``input_shape``.

    Returns:
        An ``nn.Module`` mapping the backbone's ``dict[str, Tensor]`` to logits
        ``(N, K, h, w)`` at the stride of its finest input.

    Raises:
        RegistryKeyError: unknown name (with suggestions). ComponentError: the
        registered object could not be built or did not return an ``nn.Module``.
    """
    return build_component(
        HEAD_REGISTRY, cfg.MODEL.HEAD.NAME, cfg, input_shape=input_shape,
        expect=nn.Module, promise="a torch.nn.Module (subclass segkit.modeling.heads.SegmentationHead)",
    )
