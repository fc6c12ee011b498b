"""SemanticSegmentor: normalise, backbone, head, upsample to the input, losses."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import configurable
from segkit.modeling.backbone import Backbone, build_backbone
from segkit.modeling.heads import build_head
from segkit.modeling.losses import build_loss
from segkit.registry import META_ARCH_REGISTRY

__all__ = ["SemanticSegmentor", "segmentor_args", "upsample_logits"]


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (``align_corners=False``) resize of ``(N, K, h, w)`` logits to ``size``."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def segmentor_args(cfg) -> dict:
    """The constructor arguments every segmentor takes from a config: loss, normalisation,
    class count, ignore value and the weights' channel order (``INPUT.FORMAT``)."""
    return {
        "loss": build_loss(cfg),
        "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
        "pixel_std": list(cfg.MODEL.PIXEL_STD),
        "num_classes": cfg.MODEL.NUM_CLASSES,
        "ignore_value": cfg.MODEL.IGNORE_VALUE,
        "input_format": cfg.INPUT.FORMAT,
    }


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(nn.Module):
    """Backbone + head, at the input resolution.

    ``forward(images, targets=None)``:

    * ``images``: uint8 or float ``(N, 3, H, W)`` on the 0-255 scale, RGB, on any
      device: :meth:`normalize` moves them to the model's device, flips them to BGR
      when the weights expect BGR (``input_format``, from ``INPUT.FORMAT``) and
      normalises them. The segmentor is the only place that moves its inputs or
      changes their channel order.
    * training mode with ``targets`` (``(N, H, W)`` int64, ignore value allowed):
      returns ``dict[str, Tensor]`` of scalar ``loss_*`` terms;
    * otherwise: logits ``(N, K, H, W)`` (no softmax), export-friendly.

    A head may return a dict instead of a tensor: ``"sem_seg"`` holds the main
    logits and every other entry is an auxiliary output whose loss terms get the
    suffix ``_<name>`` and the loss's ``aux_weight`` (1.0 if it has none); only
    the main logits are returned at inference.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        loss: Optional[nn.Module],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        num_classes: int,
        ignore_value: int = 255,
        input_format: str = "RGB",
    ) -> None:
        super().__init__()
        if str(input_format).upper() not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got '{input_format}'.")
        # The channel order the weights were trained on; images always arrive RGB.
        self.input_format = str(input_format).upper()
        self.backbone, self.head, self.loss = backbone, head, loss
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"MODEL.PIXEL_MEAN {list(pixel_mean)} and PIXEL_STD {list(pixel_std)} differ in length.")
        # Not persistent: checkpoints hold weights only; normalisation is config.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, -1, 1, 1), persistent=False)
        self.num_classes, self.ignore_value = num_classes, ignore_value

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        return {"backbone": backbone, "head": build_head(cfg, backbone.output_shape()), **segmentor_args(cfg)}

    @property
    def size_divisibility(self) -> int:
        """Input sizes must be multiples of this (0 = any size); the backbone's."""
        return self.backbone.size_divisibility

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float RGB ``(N, 3, H, W)`` on 0-255 -> float ``(N, 3, H, W)`` normalised, on the model's device.

        ``pixel_mean``/``pixel_std`` are in the weights' channel order; for BGR-trained
        weights the channels are flipped first, on the device (as MMSegmentation's data
        preprocessor's ``bgr_to_rgb``, in the other direction).
        """
        if images.device != self.device:  # a trace then records no fixed device move
            images = images.to(self.device, non_blocking=True)
        if self.input_format == "BGR":
            images = images.flip(1)
        images = images.float()
        return (images - self.pixel_mean) / self.pixel_std

    def head_outputs(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Normalised ``(N, 3, H, W)`` -> (main logits ``(N, K, h, w)``, auxiliary logits by name)."""
        out = self.head(self.backbone(x))
        if isinstance(out, torch.Tensor):
            return out, {}
        if not isinstance(out, dict) or "sem_seg" not in out:
            raise TypeError(
                f"{type(self.head).__name__} returned {type(out).__name__}; a head returns logits or a dict "
                "with the main logits under 'sem_seg' and auxiliary logits under other names."
            )
        return out["sem_seg"], {k: v for k, v in out.items() if k != "sem_seg"}

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(N, 3, H, W)`` -> head logits at the head's stride ``(N, K, h, w)``."""
        return self.head_outputs(x)[0]

    def compute_losses(
        self, logits: torch.Tensor, targets: torch.Tensor, suffix: str = "", weight: float = 1.0
    ) -> Dict[str, torch.Tensor]:
        """Upsample ``logits`` to the targets' size and apply the configured loss terms."""
        if self.loss is None:
            raise RuntimeError("This model was built without a loss; pass loss=build_loss(cfg) to train it.")
        targets = targets.to(logits.device, non_blocking=True)
        losses = self.loss(upsample_logits(logits, targets.shape[-2:]), targets)
        return {f"{k}{suffix}": v * weight if weight != 1.0 else v for k, v in losses.items()}

    def forward(
        self, images: torch.Tensor, targets: Optional[torch.Tensor] = None
    ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        x = self.normalize(images)
        logits, aux = self.head_outputs(x)
        if self.training and targets is not None:
            losses = self.compute_losses(logits, targets)
            aux_weight = float(getattr(self.loss, "aux_weight", 1.0))
            for name, aux_logits in aux.items():
                losses.update(self.compute_losses(aux_logits, targets, f"_{name}", aux_weight))
            return losses
        return upsample_logits(logits, x.shape[-2:])
