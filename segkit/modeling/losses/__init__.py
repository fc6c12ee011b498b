"""Losses: per-term modules in ``LOSS_REGISTRY`` and ``build_loss(cfg)`` that sums them."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from segkit.registry import LOSS_REGISTRY

__all__ = ["CrossEntropy", "build_loss"]


@LOSS_REGISTRY.register()
class CrossEntropy(nn.Module):
    """Pixel-wise cross-entropy averaged over the pixels that are not ignored."""

    def __init__(self, ignore_value: int = 255) -> None:
        super().__init__()
        self.ignore_value = ignore_value

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, K, H, W); target: (N, H, W) int64. Returns a scalar."""
        return F.cross_entropy(logits, target, ignore_index=self.ignore_value)


class CombinedLoss(nn.Module):
    """Maps ``(logits, target)`` to ``{"loss_<term>": weighted scalar}``."""

    def __init__(self, terms: Dict[str, nn.Module]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {f"loss_{k}": term(logits, target) for k, term in self.terms.items()}


def build_loss(cfg) -> nn.Module:
    """Build the configured loss; ``forward(logits, target)`` returns a dict of scalars."""
    return CombinedLoss({"cross_entropy": CrossEntropy(ignore_value=cfg.MODEL.IGNORE_VALUE)})
