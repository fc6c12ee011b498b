"""``build_model(cfg)``: the configured meta-architecture on the configured device."""
from __future__ import annotations

from torch import nn

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
    name = cfg.MODEL.META_ARCHITECTURE
    builder = META_ARCH_REGISTRY.get(name)
    from_config = getattr(builder, "from_config", None)
    model = builder(**from_config(cfg)) if from_config is not None else builder(cfg)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"Meta-architecture '{name}' ({META_ARCH_REGISTRY.provenance(name).describe()}) returned "
            f"{type(model).__name__}, which is not a torch.nn.Module."
        )
    return model.to(resolve_device(cfg.MODEL.DEVICE))
