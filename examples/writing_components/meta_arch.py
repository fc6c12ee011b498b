"""META_ARCH_REGISTRY: images (N, 3, H, W) 0-255 -> loss_* terms (training) or logits (N, K, H, W)."""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import configurable
from segkit.modeling import build_backbone, build_head
from segkit.modeling.losses import build_loss
from segkit.registry import META_ARCH_REGISTRY


@META_ARCH_REGISTRY.register()
class PlainSegmentor(nn.Module):
    """Normalise, backbone, head, bilinear upsampling to the input, losses (``MODEL.LOSS.TERMS``).

    Args:
        backbone, head, loss: built from the config by ``from_config``.
        pixel_mean, pixel_std: normalisation on the 0-255 scale.
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, head: nn.Module, loss: nn.Module,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        super().__init__()
        self.backbone, self.head, self.loss = backbone, head, loss
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        return {"backbone": backbone, "head": build_head(cfg, backbone.output_shape()), "loss": build_loss(cfg),
                "pixel_mean": list(cfg.MODEL.PIXEL_MEAN), "pixel_std": list(cfg.MODEL.PIXEL_STD)}

    def forward(self, images: torch.Tensor, targets: torch.Tensor = None):
        x = (images.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std
        logits = self.head(self.backbone(x))
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.training and targets is not None:
            return self.loss(logits, targets.to(logits.device))
        return logits
