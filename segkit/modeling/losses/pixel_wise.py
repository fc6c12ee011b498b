"""Pixel-wise losses: cross-entropy and focal, with class weights, loss sampling or OHEM."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import configurable
from segkit.modeling.losses.class_weights import class_weights_from_config
from segkit.modeling.losses.selection import LossSampler, OhemSelector
from segkit.registry import LOSS_REGISTRY

__all__ = ["PixelWiseLoss", "CrossEntropy", "Focal", "OhemCrossEntropy", "build_selector", "check_inputs"]

SELECTIONS = ("none", "sampling", "ohem")


def check_inputs(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a readable error when logits (N, K, H, W) and target (N, H, W) disagree."""
    if logits.dim() != 4 or target.dim() != 3:
        raise ValueError(
            "Losses take logits (N, K, H, W) and target (N, H, W); "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}."
        )
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in batch or spatial size; "
            "upsample the logits to the target size before the loss."
        )
    if target.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise TypeError(f"target must hold integer class labels, got {target.dtype}.")


def build_selector(cfg, selection: Optional[str] = None):
    """The pixel selector of ``MODEL.LOSS.SAMPLING`` / ``MODEL.LOSS.OHEM`` (or ``selection``)."""
    loss_cfg = cfg.MODEL.LOSS
    if selection is None:
        if loss_cfg.SAMPLING.ENABLED and loss_cfg.OHEM.ENABLED:
            raise ValueError("MODEL.LOSS.SAMPLING.ENABLED and MODEL.LOSS.OHEM.ENABLED are both True; enable one.")
        selection = "sampling" if loss_cfg.SAMPLING.ENABLED else "ohem" if loss_cfg.OHEM.ENABLED else "none"
    selection = str(selection).lower()
    if selection == "none":
        return None
    if selection == "ohem":
        return OhemSelector(loss_cfg.OHEM.THRESH, loss_cfg.OHEM.MIN_KEPT)
    if selection == "sampling":
        s = loss_cfg.SAMPLING
        seed = s.SEED if s.SEED >= 0 else -1
        return LossSampler(s.RATE, s.MODE.lower(), s.CELL_SIZE, s.BALANCE, seed)
    raise ValueError(f"Unknown pixel selection '{selection}'; choose one of {SELECTIONS}.")


class PixelWiseLoss(nn.Module):
    """Base of losses that are a (weighted) mean of a per-pixel loss map.

    Subclasses implement :meth:`pixel_loss`. The reduction is
    ``sum(a * loss_map) / z`` with ``a = w`` and ``z = sum(w)`` by default, where
    ``w`` is the class weight of each pixel's label (1 without class weights) and 0
    at ignored pixels; a selector (:class:`LossSampler`, :class:`OhemSelector`)
    changes ``a`` and ``z``. An all-ignored batch gives 0 (with a gradient of 0).

    Args:
        ignore_value: label that never contributes.
        class_weight: per-class weights (K,), or None.
        selector: None, a :class:`LossSampler` or an :class:`OhemSelector`.
        normalize: True divides by ``z``; False divides by the batch size only, a
            per-image sum over pixels, as Caffe's ``SoftmaxWithLoss`` with
            ``normalize: false`` that FCN's reference nets train with (their
            learning rates assume it).
    """

    @configurable
    def __init__(
        self,
        ignore_value: int = 255,
        class_weight: Optional[Union[Sequence[float], torch.Tensor]] = None,
        selector: Optional[Union[LossSampler, OhemSelector]] = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.ignore_value = int(ignore_value)
        self.selector = selector
        self.normalize = bool(normalize)
        weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        # Not persistent: weights come from the config, so checkpoints stay loadable across configs.
        self.register_buffer("class_weight", weight, persistent=False)

    @classmethod
    def from_config(cls, cfg, selection: Optional[str] = None, **kwargs) -> dict:
        args = {"ignore_value": cfg.MODEL.IGNORE_VALUE, "selector": build_selector(cfg, selection)}
        if "class_weight" not in kwargs:  # a term's own CLASS_WEIGHT replaces the config's
            args["class_weight"] = class_weights_from_config(cfg)
        args.update(kwargs)
        return args

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel loss (N, H, W) for logits (N, K, H, W) and labels (N, H, W) in [0, K)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        weighted = "none" if self.class_weight is None else [round(w, 4) for w in self.class_weight.tolist()]
        return f"ignore_value={self.ignore_value}, class_weight={weighted}, selector={self.selector}, " \
               f"normalize={self.normalize}"

    def pixel_weights(self, target: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Weight of each pixel in the full loss: its class weight, 0 where ignored."""
        if self.class_weight is None:
            return valid.to(dtype)
        return self.class_weight.to(dtype)[target] * valid

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, K, H, W); target: (N, H, W) int64. Returns a scalar."""
        check_inputs(logits, target)
        target = target.long()
        valid = target != self.ignore_value
        safe = torch.where(valid, target, torch.zeros_like(target))
        weight = self.pixel_weights(safe, valid, torch.float32)
        if self.selector is None:
            a, z = weight, weight.sum()
        else:
            a, z = self.selector(logits.detach(), safe, valid, weight)
        loss_map = self.pixel_loss(logits, safe).float()
        # where() keeps non-finite values at ignored pixels out of the sum and the gradient.
        total = torch.where(a > 0, loss_map * a, torch.zeros_like(loss_map)).sum()
        if not self.normalize:
            return total / target.shape[0]
        return total / z.clamp_min(torch.finfo(torch.float32).tiny)


@LOSS_REGISTRY.register()
class CrossEntropy(PixelWiseLoss):
    """Softmax cross-entropy, ``-log softmax(logits)[target]`` per pixel."""

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, K, H, W); target: (N, H, W) int64. Returns a scalar."""
        if self.selector is not None:
            return super().forward(logits, target)
        # Without a selector one fused call does the weighted sum (same value and gradient), in float32.
        check_inputs(logits, target)
        target = target.long()
        weight = None if self.class_weight is None else self.class_weight.float()
        total = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=self.ignore_value, reduction="sum")
        if not self.normalize:
            return total / target.shape[0]
        valid = target != self.ignore_value
        if self.class_weight is None:
            z = valid.sum().to(torch.float32)
        else:
            z = (self.class_weight[torch.where(valid, target, torch.zeros_like(target))] * valid).sum()
        return total / z.clamp_min(torch.finfo(torch.float32).tiny)


@LOSS_REGISTRY.register()
class OhemCrossEntropy(CrossEntropy):
    """Cross-entropy over hard pixels only: :class:`CrossEntropy` with OHEM selection.

    The threshold and minimum come from ``MODEL.LOSS.OHEM`` (``ENABLED`` need not be set).
    """

    @classmethod
    def from_config(cls, cfg, selection: Optional[str] = "ohem", **kwargs) -> dict:
        return super().from_config(cfg, selection=selection, **kwargs)


@LOSS_REGISTRY.register()
class Focal(PixelWiseLoss):
    """Focal loss (Lin et al., ICCV 2017, sec. 3.2), multi-class.

    ``-alpha_t (1 - p_t) ** gamma * log p_t`` with ``p_t`` the softmax probability of
    the true class; the class weights play the role of ``alpha_t``. ``gamma=0`` is
    cross-entropy.

    Args:
        gamma: focusing parameter >= 0 (the paper's best: 2).
        **kwargs: see :class:`PixelWiseLoss`.
    """

    @configurable
    def __init__(self, gamma: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if gamma < 0:
            raise ValueError(f"Focal gamma must be >= 0, got {gamma}.")
        self.gamma = float(gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, " + super().extra_repr()

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_pt = F.log_softmax(logits.float(), dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        return -((1.0 - log_pt.exp()) ** self.gamma) * log_pt
