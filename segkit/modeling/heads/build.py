"""``build_head(cfg, input_shape)``: the configured head from HEAD_REGISTRY."""
from __future__ import annotations

from typing import Dict, Sequence

from torch import nn

from segkit.layers import ShapeSpec
from segkit.registry import HEAD_REGISTRY

__all__ = ["build_head", "check_in_features"]


def check_in_features(in_features: Sequence[str], input_shape: Dict[str, ShapeSpec], owner: str) -> None:
    """Raise a ValueError naming the missing maps if the backbone does not provide ``in_features``."""
    if not in_features:
        raise ValueError(f"{owner}: MODEL.HEAD.IN_FEATURES is empty; name the backbone maps the head reads.")
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        raise ValueError(
            f"{owner}: MODEL.HEAD.IN_FEATURES asks for {missing}, which the backbone does not return. "
            f"Available: {sorted(input_shape)} (add them to the backbone's OUT_FEATURES)."
        )


def build_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build ``cfg.MODEL.HEAD.NAME`` for a backbone whose ``output_shape()`` is ``input_shape``.

    Returns:
        An ``nn.Module`` mapping the backbone's ``dict[str, Tensor]`` to logits
        ``(N, K, h, w)`` at the stride of its finest input.

    Raises:
        RegistryKeyError: unknown name (with suggestions). TypeError: the registered
        callable did not return an ``nn.Module``.
    """
    name = cfg.MODEL.HEAD.NAME
    head = HEAD_REGISTRY.get(name)(cfg, input_shape)
    if not isinstance(head, nn.Module):
        raise TypeError(
            f"Head '{name}' ({HEAD_REGISTRY.provenance(name).describe()}) returned {type(head).__name__}, "
            "which is not a torch.nn.Module."
        )
    return head
