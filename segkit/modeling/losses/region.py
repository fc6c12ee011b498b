"""Region losses that optimise overlap directly: soft Dice and Lovász-Softmax."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import configurable
from segkit.modeling.losses.class_weights import class_weights_from_config
from segkit.modeling.losses.pixel_wise import check_inputs
from segkit.registry import LOSS_REGISTRY

__all__ = ["Dice", "LovaszSoftmax", "lovasz_grad"]

_CLASS_MODES = ("all", "present")


class _RegionLoss(nn.Module):
    """Shared plumbing: probabilities and one-hot targets with ignored pixels zeroed.

    Args:
        ignore_value: label that never contributes.
        class_weight: per-class weights (K,) for the average over classes, or None.
        classes: ``"all"`` averages over every class, ``"present"`` over the classes
            that occur in the target (of the batch or of each image).
        per_image: compute the loss per image and average over images, instead of
            over the whole batch as one set of pixels.
    """

    @configurable
    def __init__(
        self,
        ignore_value: int = 255,
        class_weight: Optional[Union[Sequence[float], torch.Tensor]] = None,
        classes: str = "all",
        per_image: bool = False,
    ) -> None:
        super().__init__()
        if classes not in _CLASS_MODES:
            raise ValueError(f"classes must be one of {_CLASS_MODES}, got '{classes}'.")
        self.ignore_value = int(ignore_value)
        self.classes = classes
        self.per_image = bool(per_image)
        weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", weight, persistent=False)

    @classmethod
    def from_config(cls, cfg, **kwargs) -> dict:
        args = {"ignore_value": cfg.MODEL.IGNORE_VALUE}
        if "class_weight" not in kwargs:  # a term's own CLASS_WEIGHT replaces the config's
            args["class_weight"] = class_weights_from_config(cfg)
        args.update(kwargs)
        return args

    def extra_repr(self) -> str:
        weighted = "none" if self.class_weight is None else [round(w, 4) for w in self.class_weight.tolist()]
        return f"ignore_value={self.ignore_value}, class_weight={weighted}, classes={self.classes!r}, " \
               f"per_image={self.per_image}"

    def _probs_and_onehot(self, logits, target) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N, K, P) probabilities and one-hot labels, both 0 at ignored pixels."""
        check_inputs(logits, target)
        target = target.long()
        valid = (target != self.ignore_value).flatten(1).unsqueeze(1)  # (N, 1, P)
        safe = torch.where(target != self.ignore_value, target, torch.zeros_like(target))
        k = logits.shape[1]
        probs = F.softmax(logits.float(), dim=1).flatten(2) * valid
        onehot = F.one_hot(safe.flatten(1), k).permute(0, 2, 1).float() * valid
        return probs, onehot

    def _reduce(self, per_class: torch.Tensor, gt_count: torch.Tensor,
                classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Average per-class losses (..., C) over classes, then over images.

        ``classes`` (C,) are the class indices of the last dimension when it is a subset.
        """
        weight = torch.ones_like(per_class)
        if self.class_weight is not None:
            cw = self.class_weight if classes is None else self.class_weight[classes]
            weight = weight * cw.to(per_class)
        if self.classes == "present":
            weight = weight * (gt_count > 0)
        per_group = (per_class * weight).sum(-1) / weight.sum(-1).clamp_min(torch.finfo(torch.float32).tiny)
        return per_group.mean()


@LOSS_REGISTRY.register()
class Dice(_RegionLoss):
    """Soft multi-class Dice loss, ``1 - mean_c dice_c``.

    ``dice_c = (2 sum_i p_ic g_ic + smooth) / (sum_i p_ic ** e + sum_i g_ic + smooth)``
    over the pixels that are not ignored; ``e = 2`` is V-Net's squared form
    (Milletari et al., 3DV 2016, eq. 1), ``e = 1`` the plain soft Dice.

    Args:
        smooth: added to numerator and denominator (keeps empty classes finite).
        exponent: power of the probabilities in the denominator, 1 or 2.
        **kwargs: see ``_RegionLoss`` (``classes`` defaults to ``"all"``).
    """

    @configurable
    def __init__(self, smooth: float = 1.0, exponent: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if smooth < 0 or exponent not in (1, 2):
            raise ValueError(f"Dice needs smooth >= 0 and exponent 1 or 2, got {smooth}, {exponent}.")
        self.smooth, self.exponent = float(smooth), int(exponent)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, exponent={self.exponent}, " + super().extra_repr()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, K, H, W); target: (N, H, W) int64. Returns a scalar."""
        probs, onehot = self._probs_and_onehot(logits, target)
        dims = (2,) if self.per_image else (0, 2)
        inter = (probs * onehot).sum(dims)
        denom = (probs**self.exponent).sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (denom + self.smooth).clamp_min(torch.finfo(torch.float32).tiny)
        return self._reduce(1.0 - dice, onehot.sum(dims))


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss (Berman et al., CVPR 2018, Alg. 1).

    Args:
        gt_sorted: (..., P) 0/1 ground truth of one class, ordered by decreasing error.

    Returns:
        (..., P) the weights ``g_i = Delta_J(1..i) - Delta_J(1..i-1)``.
    """
    gts = gt_sorted.sum(-1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(-1)
    union = gts + (1.0 - gt_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


@LOSS_REGISTRY.register()
class LovaszSoftmax(_RegionLoss):
    """Lovász-Softmax loss (Berman et al., CVPR 2018, sec. 3.2, eq. 12).

    For each class c the pixel errors ``m_i(c) = |g_ic - p_ic|`` are sorted in
    decreasing order and dotted with :func:`lovasz_grad`, the tight convex surrogate
    of ``1 - IoU_c``. Ignored pixels get error 0 and label 0: they sort last and add
    nothing, without changing the other pixels' weights.

    Args:
        **kwargs: see ``_RegionLoss`` (``classes`` defaults to ``"present"``, as in
            the paper's experiments).
    """

    @configurable
    def __init__(self, classes: str = "present", **kwargs) -> None:
        super().__init__(classes=classes, **kwargs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, K, H, W); target: (N, H, W) int64. Returns a scalar."""
        probs, onehot = self._probs_and_onehot(logits, target)
        if not self.per_image:  # one set of pixels: (1, K, N * P)
            probs = probs.permute(1, 0, 2).reshape(1, probs.shape[1], -1)
            onehot = onehot.permute(1, 0, 2).reshape(1, onehot.shape[1], -1)
        classes = None
        if self.classes == "present":
            # Sorting dominates the cost: sort only classes that occur somewhere (one host sync).
            classes = (onehot.sum(-1) > 0).any(0).nonzero().squeeze(1)
            probs, onehot = probs[:, classes], onehot[:, classes]
        errors = (onehot - probs).abs()
        errors_sorted, order = errors.sort(dim=-1, descending=True)
        per_class = (errors_sorted * lovasz_grad(onehot.gather(-1, order))).sum(-1)
        return self._reduce(per_class, onehot.sum(-1), classes)
