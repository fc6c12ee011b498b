"""Which pixels a pixel-wise loss sums over: FCN loss sampling and OHEM.

A selector receives the per-pixel weights of the full loss and returns new
per-pixel weights ``a`` and a normaliser ``z``; the loss is
``sum(a * loss_map) / z``. Without a selector ``a = w`` and ``z = sum(w)``, the
(class-)weighted mean over the pixels that are not ignored.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["LossSampler", "OhemSelector"]


class OhemSelector:
    """Online hard example mining over pixels (batch-wise).

    Keeps the pixels whose softmax probability of the true class is below
    ``thresh``; when fewer than ``min_kept`` are, keeps the ``min_kept`` pixels with
    the lowest true-class probability instead (ties at that probability are all
    kept). The loss is the weighted mean over the kept pixels.

    Args:
        thresh: probability threshold in (0, 1].
        min_kept: minimum number of pixels kept in the batch (all valid pixels if
            there are fewer).
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 100000) -> None:
        if not 0.0 < thresh <= 1.0:
            raise ValueError(f"OHEM threshold must be in (0, 1], got {thresh}.")
        if min_kept < 0:
            raise ValueError(f"OHEM min_kept must be >= 0, got {min_kept}.")
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)

    def __repr__(self) -> str:
        return f"OhemSelector(thresh={self.thresh}, min_kept={self.min_kept})"

    def keep_mask(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Boolean (N, H, W) of the pixels kept; ``target`` has ignored pixels replaced by 0."""
        with torch.no_grad():
            prob = F.softmax(logits.float(), dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
            prob = prob.masked_fill(~valid, math.inf)
            keep = prob < self.thresh
            k = min(self.min_kept, prob.numel())
            if k > 0:
                # k-th smallest probability; invalid pixels are +inf so never reach it
                # unless fewer than k pixels are valid, in which case all valid are kept.
                kth = prob.flatten().kthvalue(k).values
                keep |= prob <= kth
            return keep & valid

    def __call__(self, logits, target, valid, weight) -> Tuple[torch.Tensor, torch.Tensor]:
        a = weight * self.keep_mask(logits, target, valid)
        return a, a.sum()


class LossSampler:
    """FCN loss sampling (Long et al., CVPR 2015, sec. 3.4).

    FCN shows that patchwise training is whole-image training with a loss that
    ignores a random subset of the final layer's spatial cells. Each cell of
    ``cell_size`` x ``cell_size`` pixels (1 = every pixel; the network's output stride
    reproduces the paper's final-layer cells) is kept:

    * ``mode="bernoulli"``: independently with probability ``rate``;
    * ``mode="fraction"``: exactly ``round(rate * n)`` of the ``n`` valid cells of each image
      (at least one), uniformly without replacement: the cells with the lowest uniform draws.

    Kept pixels are weighted by the inverse of their inclusion probability
    (Horvitz-Thompson), and the sum is divided by the full loss's normaliser, so the
    expectation of the sampled loss equals the full loss exactly; ``rate=1`` gives the
    full loss.

    With ``balance=True`` the inclusion probability depends on the cell's class (the
    most frequent valid label in it): each class present in an image gets the same
    expected number of kept cells, ``rate * n / C_present`` (all cells of rarer
    classes). Kept cells are then not re-weighted, and the sampled loss is an unbiased
    estimate of the per-image class-balanced loss (pixel weights multiplied by the
    inclusion probabilities), which is what balancing is for.

    Args:
        rate: p (bernoulli) or the fraction kept (fraction), in (0, 1].
        mode: ``"bernoulli"`` or ``"fraction"``.
        cell_size: side of a sampling cell in pixels.
        balance: class-balanced sampling as above.
        seed: >= 0 draws from a private generator seeded with it (reproducible on its
            own; offset by the process rank under torch.distributed); < 0 draws from
            torch's global generator (seeded by the trainer from ``SEED``, like dropout).
    """

    def __init__(
        self, rate: float = 0.5, mode: str = "bernoulli", cell_size: int = 1, balance: bool = False, seed: int = -1
    ) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"Loss sampling rate must be in (0, 1], got {rate}.")
        if mode not in ("bernoulli", "fraction"):
            raise ValueError(f"Loss sampling mode must be 'bernoulli' or 'fraction', got '{mode}'.")
        if cell_size < 1:
            raise ValueError(f"Loss sampling cell_size must be >= 1, got {cell_size}.")
        self.rate, self.mode, self.cell_size = float(rate), mode, int(cell_size)
        self.balance, self.seed = bool(balance), int(seed)
        self._generator: Optional[torch.Generator] = None

    def __repr__(self) -> str:
        return (f"LossSampler(rate={self.rate}, mode={self.mode!r}, cell_size={self.cell_size}, "
                f"balance={self.balance}, seed={self.seed})")

    # -- randomness -------------------------------------------------------------
    def _uniform(self, shape, device) -> torch.Tensor:
        if self.seed < 0:
            return torch.rand(shape, device=device)
        if self._generator is None or self._generator.device != torch.device(device):
            # Each distributed process samples its own images: offset the seed by the rank
            # so that the processes' masks are not the same pattern.
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            self._generator = torch.Generator(device=device).manual_seed(self.seed + 1_000_003 * rank)
        return torch.rand(shape, device=device, generator=self._generator)

    # -- cells -------------------------------------------------------------------
    def _cells(self, target: torch.Tensor, valid: torch.Tensor, num_classes: int):
        """Per-cell validity (N, h, w) bool and class (N, h, w) int64."""
        s = self.cell_size
        if s == 1:
            return valid, target
        onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).float() * valid.unsqueeze(1)
        counts = F.avg_pool2d(onehot, s, s, ceil_mode=True)
        return counts.sum(1) > 0, counts.argmax(1)

    def _to_pixels(self, cell_values: torch.Tensor, size) -> torch.Tensor:
        s = self.cell_size
        if s == 1:
            return cell_values
        up = cell_values.repeat_interleave(s, dim=1).repeat_interleave(s, dim=2)
        return up[:, : size[0], : size[1]]

    # -- inclusion probabilities ---------------------------------------------------
    def _kept_per_group(self, cell_valid, cell_class, num_classes):
        """Group id per cell, expected kept count per group, group sizes."""
        n = cell_valid.shape[0]
        image = torch.arange(n, device=cell_valid.device).view(n, 1, 1).expand_as(cell_class)
        n_valid = cell_valid.flatten(1).sum(1).to(torch.float32)  # (N,)
        if not self.balance:
            sizes = n_valid
            return image, self.rate * sizes, sizes
        groups = image * num_classes + cell_class
        # valid cells per (image, class), without data-dependent shapes (no host sync)
        sizes = (F.one_hot(cell_class, num_classes) * cell_valid.unsqueeze(-1)).sum((1, 2)).flatten().to(torch.float32)
        present = (sizes.view(n, num_classes) > 0).sum(1).clamp_min(1)
        per_class = (self.rate * n_valid / present).repeat_interleave(num_classes)
        return groups, torch.minimum(per_class, sizes), sizes

    def _draw(self, groups, cell_valid, expected, sizes):
        """Inclusion probability q and kept mask m per cell."""
        u = self._uniform(groups.shape, groups.device)
        if self.mode == "bernoulli":
            q = (expected / sizes.clamp_min(1))[groups]
            return q, (u < q) & cell_valid
        k = torch.where(sizes > 0, expected.round().clamp(min=1), torch.zeros_like(sizes))
        k = torch.minimum(k, sizes)
        q = (k / sizes.clamp_min(1))[groups]
        # Exactly k[g] cells per group g: rank cells by a random key within their group.
        g = torch.where(cell_valid, groups, torch.full_like(groups, sizes.numel())).flatten()
        order = torch.argsort(g.double() + u.flatten().double())
        g_sorted = g[order]
        rank = torch.arange(g.numel(), device=g.device) - torch.searchsorted(g_sorted, g_sorted)
        k_ext = torch.cat([k, k.new_zeros(1)])
        kept_sorted = rank < k_ext[g_sorted]
        m = torch.zeros_like(kept_sorted).scatter(0, order, kept_sorted)
        return q, m.view_as(groups) & cell_valid

    def __call__(self, logits, target, valid, weight) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            num_classes = logits.shape[1]
            cell_valid, cell_class = self._cells(target, valid, num_classes)
            groups, expected, sizes = self._kept_per_group(cell_valid, cell_class, num_classes)
            q, m = self._draw(groups, cell_valid, expected, sizes)
            q = self._to_pixels(q, target.shape[1:]).to(weight.dtype)
            m = self._to_pixels(m, target.shape[1:]) & valid
        if self.balance:
            return weight * m, (weight * q).sum()
        return torch.where(m, weight / q.clamp_min(1e-12), torch.zeros_like(weight)), weight.sum()
