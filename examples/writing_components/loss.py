"""LOSS_REGISTRY: logits (N, K, H, W), target (N, H, W) -> scalar; ignored pixels never count."""
import torch
from torch import nn

from segkit.config import configurable
from segkit.registry import LOSS_REGISTRY


@LOSS_REGISTRY.register()
class SoftDiceLoss(nn.Module):
    """1 - mean soft Dice over classes present in the batch.

    In YAML: ``MODEL.LOSS.TERMS: [{NAME: SoftDiceLoss, WEIGHT: 0.5, ARGS: {SMOOTH: 1.0}}]``.

    Args:
        ignore_value: target value that never counts (``MODEL.IGNORE_VALUE``).
        smooth: added to numerator and denominator.
    """

    @configurable
    def __init__(self, *, ignore_value: int = 255, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_value, self.smooth = ignore_value, smooth

    @classmethod
    def from_config(cls, cfg, **args) -> dict:
        return {"ignore_value": cfg.MODEL.IGNORE_VALUE, **args}  # ARGS (lower-cased) override

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_value
        if not valid.any():
            return logits.sum() * 0.0  # 0 with zero gradient, never NaN
        probs = logits.softmax(1) * valid.unsqueeze(1)
        onehot = torch.zeros_like(probs).scatter_(1, (target * valid).unsqueeze(1), 1.0) * valid.unsqueeze(1)
        inter, total = (probs * onehot).sum((0, 2, 3)), (probs + onehot).sum((0, 2, 3))
        present = onehot.sum((0, 2, 3)) > 0
        dice = (2 * inter + self.smooth) / (total + self.smooth)
        return 1.0 - dice[present].mean()
