"""Normalisation layers chosen by name in configs ("BN", "FrozenBN", "SyncBN", "GN")."""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["FrozenBatchNorm2d", "get_norm", "norm_factory"]

_NORMS = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    # Fixed statistics and affine parameters: DeepLab v2 fine-tunes with batch norm
    # frozen because its batches are too small to estimate statistics.
    "FrozenBN": FrozenBatchNorm2d,
    "GN": lambda channels: nn.GroupNorm(32, channels),
}


def norm_factory(name: str) -> Optional[Callable[[int], nn.Module]]:
    """Return ``channels -> nn.Module`` for ``name``; ``None`` for ``""`` (no norm).

    Raises:
        ValueError: ``name`` is not one of "BN", "FrozenBN", "SyncBN", "GN" or "".
    """
    if name in ("", None):
        return None
    if name not in _NORMS:
        raise ValueError(f"Unknown norm '{name}'. Use one of {sorted(_NORMS)} or '' for none.")
    return _NORMS[name]


def get_norm(name: str, channels: int) -> Optional[nn.Module]:
    """A normalisation layer over ``channels`` (``None`` when ``name`` is ``""``)."""
    factory = norm_factory(name)
    return None if factory is None else factory(channels)
