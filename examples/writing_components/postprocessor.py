"""POSTPROCESSOR_REGISTRY: probs (N, K, H, W), images (N, 3, H, W) uint8 RGB -> refined probs."""
import torch

from segkit.config import configurable
from segkit.registry import POSTPROCESSOR_REGISTRY


@POSTPROCESSOR_REGISTRY.register()
class Sharpen:
    """Raise probabilities to ``power`` and renormalise (``POSTPROCESS.CHAIN: [Sharpen]``).

    Args:
        power: > 1 sharpens, < 1 smooths.
    """

    @configurable
    def __init__(self, *, power: float = 2.0) -> None:
        self.power = power

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {"power": 2.0}

    def __call__(self, probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        p = probs.clamp_min(0) ** self.power
        return p / p.sum(1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
