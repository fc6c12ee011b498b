"""Learnable upsampling initialised to bilinear interpolation (FCN sec. 3.3)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["bilinear_kernel", "BilinearDeconv"]


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The (k, k) kernel, k = 2f - f % 2, with which a stride-f deconvolution interpolates bilinearly."""
    size = 2 * factor - factor % 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    filt = 1 - (og - center).abs() / factor
    return (filt[:, None] * filt[None, :]).float()


class BilinearDeconv(nn.Module):
    """Stride-``factor`` transposed convolution initialised to bilinear upsampling.

    FCN sec. 3.3: upsampling by a fractional stride is a deconvolution whose filter
    is learnable and initialised to bilinear interpolation. As in the reference
    (``surgery.interp``), the weight is a full ``(C, C, k, k)`` tensor with the
    bilinear kernel on the diagonal, so training may also mix classes.

    Borders: the input is padded by one replicated pixel before the deconvolution
    and the result cropped, so at initialisation the output equals
    ``F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)``
    everywhere (including the borders, which plain zero-padded deconvolution
    darkens). The crop is the alignment FCN's ``crop`` layers compute from the
    network's padding; segkit's convolutions are "same"-padded, so the offset is
    the same at every fusion and is fixed here.
    """

    def __init__(self, channels: int, factor: int, learnable: bool = True) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"BilinearDeconv factor must be >= 1, got {factor}.")
        self.factor = factor
        if factor == 1:  # nothing to upsample: no parameters (DDP rejects unused ones)
            self.deconv = None
            return
        kernel = bilinear_kernel(factor)
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel.shape[-1], stride=factor, bias=False)
        with torch.no_grad():
            self.deconv.weight.zero_()
            for c in range(channels):
                self.deconv.weight[c, c] = kernel
        self.deconv.weight.requires_grad_(learnable)

    def max_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        """Largest output that stays exact for an input of spatial ``size``."""
        return tuple(self.factor * s + self.factor // 2 for s in size)

    def forward(self, x: torch.Tensor, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """x: (N, C, h, w) -> (N, C, H, W), ``(H, W) = size`` or ``(f*h, f*w)``.

        ``size`` may exceed ``f * h`` by up to ``f // 2`` (the stride-f cells that an
        odd-sized finer map has beyond the coarse map's last one).
        """
        f = self.factor
        h, w = x.shape[-2:]
        size = tuple(size) if size is not None else (f * h, f * w)
        limit = self.max_size((h, w))
        if size[0] > limit[0] or size[1] > limit[1]:
            raise ValueError(f"BilinearDeconv x{f} of a {h}x{w} map reaches {limit}, not {size}.")
        if f == 1:
            return x
        y = self.deconv(F.pad(x, (1, 1, 1, 1), mode="replicate"))
        off = (3 * f - f % 2) // 2
        return y[..., off : off + size[0], off : off + size[1]]
