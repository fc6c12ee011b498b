"""A 2-D convolution that runs as one GEMM with pre-packed weights where that is faster.

oneDNN's direct convolution is slow on maps with few pixels and large weights:
FCN's fc6 (7x7x512 -> 4096 on VGG-16's 11x11 ``pool5`` at 321x321) ran at
~80 GFLOP/s per core here, against ~240 for the same arithmetic written as
``im2col`` followed by oneDNN's matrix product (inner product) on a weight packed
once into oneDNN's blocked layout. :class:`GemmConv2d` is an ``nn.Conv2d`` (same
parameters, ``state_dict`` and results up to float rounding) whose inference
forward takes that route on CPU where it pays off (:meth:`GemmConv2d.route`), for
convolutions of at least :attr:`GemmConv2d.min_gemm_macs` multiply-adds per call:

* a convolution whose output has at most :attr:`GemmConv2d.max_im2col_pixels`
  pixels (N x H_out x W_out), where the ``im2col`` copy is small;
* a 1x1 convolution with at least :attr:`GemmConv2d.min_gemm_weight` weights
  (C_in x C_out; ResNet's bottleneck 1x1s from 256 x 1024 up), at any size: the
  GEMM needs no ``im2col`` (an NHWC map *is* the ``(pixels, channels)`` matrix) and
  matched or beat the convolution there (1x1s with fewer weights on large maps,
  e.g. MobileNet's, were slower as GEMMs);
* a k x k convolution with few output channels (at most
  :attr:`GemmConv2d.max_tap_channels`, e.g. DeepLab's dilated 3x3 classifiers
  2048 -> 21, 3x faster so; with 64 channels it was slower) and at least k*k*C_out
  input channels: one GEMM computes every tap's contribution at every input pixel
  (``C_in -> k*k*C_out``, a 1x1 convolution), then the k*k shifted maps are summed
  ("tap" route; no ``im2col``; the per-tap map is no larger than the input).

Everything else (other devices, other dtypes, autograd, grouped convolutions,
TorchScript tracing/scripting, ONNX export, ``torch.compile``) uses
``nn.Conv2d.forward`` unchanged, so exported graphs contain ordinary convolutions.
The packed weight is a cache (never saved), rebuilt when the weight changes
(in-place update, ``load_state_dict``, a device move) and dropped by ``deepcopy``
and pickling; it holds a second copy of the weight (411 MB for FCN's fc6).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GemmConv2d", "gemm_available"]


def gemm_available() -> bool:
    """True when this torch build has oneDNN's packed inner product (``torch.ops.mkldnn``)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def _gemm(rows: torch.Tensor, packed, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``rows @ W.T (+ bias)`` with ``W`` packed by oneDNN (the one call of its private inner product)."""
    return torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")


def _exporting() -> bool:
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    onnx = getattr(torch, "onnx", None)
    if onnx is not None and getattr(onnx, "is_in_onnx_export", lambda: False)():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


class GemmConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose CPU inference runs as ``im2col`` + one packed oneDNN GEMM where faster.

    ``forward(x: (N, C_in, H, W)) -> (N, C_out, H_out, W_out)``, the same values as
    ``nn.Conv2d`` up to float rounding; on the GEMM route the output is a
    channels-last tensor. Build one with :meth:`convert` (in place, keeps the
    module's parameters, hooks and name).
    """

    #: k x k convolutions (k > 1) take the GEMM route up to this many output pixels.
    max_im2col_pixels: int = 256
    #: Convolutions with fewer multiply-adds per call keep ``nn.Conv2d`` (MobileNetV3's squeeze-excitation
    #: 1x1s on 1x1 maps were slower as GEMMs).
    min_gemm_macs: int = 1 << 20
    #: 1x1 convolutions with at least this many weights (C_in x C_out) take the GEMM route at any size.
    min_gemm_weight: int = 1 << 18
    #: k x k convolutions on larger maps with at most this many output channels take the tap route.
    max_tap_channels: int = 32
    # oneDNN lays the packed weight out for this many rows; 512 used both cores
    # (121, the real row count of FCN's fc6, ran single-threaded).
    _PACK_ROWS: int = 512

    # {kind: ((weight, data_ptr, version), packed weight(s))}, one entry per route used.
    _packed: Optional[Dict[str, Tuple[tuple, object]]] = None

    @classmethod
    def convert(cls, conv: nn.Conv2d) -> bool:
        """Turn ``conv`` (an exact ``nn.Conv2d``) into a :class:`GemmConv2d` in place.

        Returns:
            False (and leaves it alone) for grouped, non-zero-padded or string-padded
            convolutions, or when the torch build lacks oneDNN's packed GEMM.
        """
        if (type(conv) is not nn.Conv2d or conv.groups != 1 or conv.padding_mode != "zeros"
                or isinstance(conv.padding, str) or not gemm_available()):
            return False
        conv.__class__ = cls
        return True

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_packed", None)  # a oneDNN tensor: not copyable, and rebuilt on demand
        return state

    def _out_size(self, h: int, w: int) -> Tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def route(self, x: torch.Tensor) -> str:
        """How ``forward(x)`` runs: ``"im2col"``, ``"taps"`` (packed GEMM) or ``"conv"`` (``nn.Conv2d``)."""
        if (x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or _exporting()
                or self.weight.dtype != torch.float32 or self.weight.device.type != "cpu"):
            return "conv"
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return "conv"
        ho, wo = self._out_size(x.shape[2], x.shape[3])
        pixels = x.shape[0] * ho * wo
        if pixels * self.in_channels * self.out_channels * self.kernel_size[0] * self.kernel_size[1] < self.min_gemm_macs:
            return "conv"  # too little work to pay for the route's Python and layout overhead
        if pixels <= self.max_im2col_pixels:
            return "im2col"
        if self.kernel_size == (1, 1):
            return "im2col" if self.in_channels * self.out_channels >= self.min_gemm_weight else "conv"
        taps = self.kernel_size[0] * self.kernel_size[1]
        if self.out_channels <= self.max_tap_channels and self.in_channels >= taps * self.out_channels:
            return "taps"
        return "conv"

    def use_gemm(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` takes a packed-GEMM route (see the module docstring)."""
        return self.route(x) != "conv"

    def _packed_weight(self, kind: str):
        """The weight packed for ``kind``: "im2col", "taps", or "rows" (a list, one per kernel row)."""
        w = self.weight
        key = (w.data_ptr(), w._version)
        if self._packed is None:
            self._packed = {}
        cached = self._packed.get(kind)
        # The weight object itself is part of the key (held, so its address is not reused).
        if cached is None or cached[0][0] is not w or cached[0][1:] != key:
            def pack(matrix):
                return torch.ops.mkldnn._reorder_linear_weight(matrix.contiguous(), self._PACK_ROWS)

            wd = w.detach()
            if kind == "taps":  # (kh, kw, C_out, C_in): row t * C_out + o of the tap GEMM's output
                packed = pack(wd.permute(2, 3, 0, 1).reshape(-1, w.shape[1]))
            elif kind == "rows":  # per kernel row a: (C_out, kw, C_in)
                packed = [pack(wd[:, :, a].permute(0, 2, 1).reshape(w.shape[0], -1)) for a in range(w.shape[2])]
            else:  # (C_out, kh, kw, C_in): the column order of the NHWC im2col below
                packed = pack(wd.permute(0, 2, 3, 1).reshape(w.shape[0], -1))
            cached = self._packed[kind] = ((w,) + key, packed)
        return cached[1]

    def _row_ranges(self, h: int):
        """Per kernel row a: the output rows [i0, i1) whose tap row a reads the input, not the padding."""
        (kh, _), (sh, _), (ph, _), (dh, _) = self.kernel_size, self.stride, self.padding, self.dilation
        ho = self._out_size(h, 1)[0]
        # Output row i reads input row i * sh + a * dh - ph; keep 0 <= that < h.
        return [(min(max(0, -(-(ph - a * dh) // sh)), ho), min(ho, max(0, (h - 1 + ph - a * dh) // sh + 1)))
                for a in range(kh)]

    def _skip_padding_rows(self, h: int) -> bool:
        """Whether splitting the GEMM by kernel row skips >= 10% of the work (taps reading only padding)."""
        if self.kernel_size[0] == 1 or self.padding[0] == 0:
            return False
        ho = self._out_size(h, 1)[0]
        used = sum(max(0, i1 - i0) for i0, i1 in self._row_ranges(h))
        return used <= 0.9 * ho * self.kernel_size[0]

    def _gemm_by_kernel_row(self, x: torch.Tensor) -> torch.Tensor:
        """The im2col GEMM split by kernel row, each over only the output rows it reaches: (N, H_out, W_out, C_out)."""
        n, c, h, w = x.shape
        (_, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        ho, wo = self._out_size(h, w)
        nhwc = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph)).contiguous()
        s_n, s_h, s_w, s_c = nhwc.stride()
        out = x.new_zeros(n, ho, wo, self.out_channels)
        if self.bias is not None:
            out += self.bias
        for a, ((i0, i1), packed) in enumerate(zip(self._row_ranges(h), self._packed_weight("rows"))):
            if i1 <= i0:
                continue
            cols = nhwc.as_strided((n, i1 - i0, wo, kw, c), (s_n, s_h * sh, s_w * sw, s_w * dw, s_c),
                                   nhwc.storage_offset() + (i0 * sh + a * dh) * s_h)
            y = _gemm(cols.reshape(-1, kw * c), packed)
            out[:, i0:i1] += y.view(n, i1 - i0, wo, self.out_channels)
        return out

    def _im2col(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N * H_out * W_out, kh * kw * C), rows in NHWC pixel order."""
        n, c = x.shape[:2]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        ho, wo = self._out_size(x.shape[2], x.shape[3])
        nhwc = x.permute(0, 2, 3, 1)
        if ph or pw:
            nhwc = F.pad(nhwc, (0, 0, pw, pw, ph, ph))
        nhwc = nhwc.contiguous()
        s_n, s_h, s_w, s_c = nhwc.stride()
        if self.kernel_size == (1, 1) and self.stride == (1, 1):
            return nhwc.view(n * ho * wo, c)
        windows = nhwc.as_strided((n, ho, wo, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c))
        return windows.reshape(n * ho * wo, kh * kw * c)

    def _taps(self, x: torch.Tensor) -> torch.Tensor:
        """Every tap's contribution at every input pixel by one GEMM, then the shifted sum (N, H_out, W_out, C_out)."""
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        ho, wo = self._out_size(h, w)
        o = self.out_channels
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        z = _gemm(rows, self._packed_weight("taps"))
        # Output (i, j) reads input (i * sh - ph + a * dh, j * sw - pw + b * dw) through tap (a, b);
        # zero padding of the per-tap map equals zero padding of the input.
        z = F.pad(z.view(n, h, w, kh * kw * o), (0, 0, pw, pw, ph, ph)).view(n, h + 2 * ph, w + 2 * pw, kh, kw, o)
        out = None
        for a in range(kh):
            for b in range(kw):
                part = z[:, a * dh: a * dh + (ho - 1) * sh + 1: sh, b * dw: b * dw + (wo - 1) * sw + 1: sw, a, b]
                out = part.clone() if out is None else out.add_(part)
        if self.bias is not None:
            out.add_(self.bias)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self.route(x)
        if route == "conv":
            return super().forward(x)
        if route == "taps":
            out = self._taps(x)
        elif self._skip_padding_rows(x.shape[2]):
            out = self._gemm_by_kernel_row(x)
        else:
            ho, wo = self._out_size(x.shape[2], x.shape[3])
            out = _gemm(self._im2col(x), self._packed_weight("im2col"), self.bias)
            out = out.view(x.shape[0], ho, wo, self.out_channels)
        return out.permute(0, 3, 1, 2)
