"""``build_model(cfg)``: the configured meta-architecture on the configured device."""
from __future__ import annotations

from torch import nn

from segkit.config.configurable import build_component
from segkit.registry import META_ARCH_REGISTRY
from segkit.utils.device import resolve_device

__all__ = ["build_model"]


def build_model(cfg) -> nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` and move it to ``MODEL.DEVICE``.

    The model's ``forward(images (N, 3, H, W) 0-255, targets (N, H, W) int64 = None)``
    returns ``loss_*`` terms in training mode with targets, else logits
    ``(N, K, H, W)``. Weights (``MODEL.WEIGHTS``) are loaded by the engine's
    checkpointer, not here.
    """
    model = build_component(
        META_ARCH_REGISTRY, cfg.MODEL.META_ARCHITECTURE, cfg, expect=nn.Module, promise="a torch.nn.Module"
    )
    return model.to(resolve_device(cfg.MODEL.DEVICE))
