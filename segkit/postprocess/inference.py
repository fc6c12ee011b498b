"""Whole-image, sliding-window and multi-scale + flip test-time inference.

* Sliding window (for images larger than the training crop): overlapping crops of
  ``CROP_SIZE`` every ``STRIDE`` pixels, the last one flush with the border, sent
  through the model in batches; the softmax of every window is added into the
  full-size map and divided by how many windows covered each pixel (as
  MMSegmentation's ``slide_inference``, averaging probabilities).
* Multi-scale + flip (DeepLab v2 sec. 4.1 "multi-scale inputs", and common test
  practice): the input is resized by each factor (bilinear), optionally flipped,
  predicted, and the softmax maps are brought back to the input size and averaged.

Both combine; the CRF chain (:func:`segkit.postprocess.build_postprocessor_chain`)
runs on the averaged probabilities.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from segkit.postprocess.chain import build_postprocessor_chain
from segkit.config.configurable import configurable

__all__ = ["SegmentationInference", "build_inference", "window_starts"]


def window_starts(size: int, crop: int, stride: int) -> List[int]:
    """Start offsets of windows of length ``crop`` every ``stride``, covering ``size``.

    The last window is moved back to end at the border; a dimension not larger than
    the crop gets one window over all of it.
    """
    if crop <= 0 or stride <= 0:
        raise ValueError(f"sliding window: crop ({crop}) and stride ({stride}) must be positive")
    if size <= crop:
        return [0]
    if stride > crop:
        raise ValueError(f"sliding window: stride {stride} > crop {crop} would leave pixels uncovered")
    count = math.ceil((size - crop) / stride) + 1
    return sorted({min(i * stride, size - crop) for i in range(count)})


class SegmentationInference:
    """Test-time inference around a segmentation model returning logits at input size.

    Args:
        model: ``model(images (N, 3, H, W) uint8/float 0-255) -> logits (N, K, H, W)``
            in eval mode.
        scales: resize factors for multi-scale testing; ``(1.0,)`` for none.
        flip: also predict the horizontally flipped input.
        crop_size: ``(h, w)`` sliding-window size, or None for whole-image inference.
        stride: ``(h, w)`` window step (defaults to 2/3 of the crop).
        window_batch: windows per forward pass.
        postprocessor: optional callable ``(probs, images) -> probs`` applied last
            (e.g. the CRF chain).
    """

    @configurable
    def __init__(
        self,
        model: nn.Module,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        crop_size: Optional[Tuple[int, int]] = None,
        stride: Optional[Tuple[int, int]] = None,
        window_batch: int = 4,
        postprocessor=None,
    ) -> None:
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"test-time augmentation: scales must be positive factors, got {list(scales)}")
        if window_batch < 1:
            raise ValueError(f"sliding window: window_batch must be >= 1, got {window_batch}")
        self.model = model
        self.scales = [float(s) for s in scales]
        self.flip = bool(flip)
        self.crop_size = tuple(int(c) for c in crop_size) if crop_size else None
        if self.crop_size is not None:
            stride = stride or tuple(max(1, c * 2 // 3) for c in self.crop_size)
            self.stride = tuple(int(s) for s in stride)
            if any(s <= 0 or s > c for s, c in zip(self.stride, self.crop_size)):
                raise ValueError(
                    f"sliding window: STRIDE {list(self.stride)} must be positive and at most CROP_SIZE "
                    f"{list(self.crop_size)} (a larger step would leave pixels uncovered)"
                )
        else:
            self.stride = None
        self.window_batch = int(window_batch)
        self.postprocessor = postprocessor

    @classmethod
    def from_config(cls, cfg, model: nn.Module, postprocessor=None) -> dict:
        """Keyword arguments for ``cfg``; ``SegmentationInference(cfg, model)`` builds it."""
        aug, sw = cfg.TEST.AUG, cfg.TEST.SLIDING_WINDOW
        return dict(
            model=model,
            scales=aug.SCALES if aug.ENABLED else (1.0,),
            flip=aug.FLIP if aug.ENABLED else False,
            crop_size=tuple(sw.CROP_SIZE) if sw.ENABLED else None,
            stride=tuple(sw.STRIDE) if sw.ENABLED else None,
            window_batch=sw.BATCH_SIZE,
            postprocessor=postprocessor,
        )

    # ----------------------------------------------------------------- one view
    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        if logits.shape[-2:] != images.shape[-2:]:
            raise RuntimeError(
                f"model returned logits of size {tuple(logits.shape[-2:])} for input {tuple(images.shape[-2:])}; "
                "the inference contract is logits at the input size"
            )
        return logits

    def _whole(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self._logits(images).float(), dim=1)

    def _sliding(self, images: torch.Tensor) -> torch.Tensor:
        """Average of window softmaxes: images (N, 3, H, W) -> probs (N, K, H, W)."""
        n, _, h, w = images.shape
        ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        boxes = [
            (y, x) for y in window_starts(h, ch, self.stride[0]) for x in window_starts(w, cw, self.stride[1])
        ]
        if len(boxes) == 1:
            return self._whole(images)
        total = count = None
        for i in range(0, len(boxes), self.window_batch):
            chunk = boxes[i : i + self.window_batch]
            crops = torch.cat([images[:, :, y : y + ch, x : x + cw] for y, x in chunk], dim=0)
            probs = self._whole(crops).reshape(len(chunk), n, -1, ch, cw)
            if total is None:  # on the model's device, where its outputs are
                total = torch.zeros(n, probs.shape[2], h, w, device=probs.device)
                count = torch.zeros(1, 1, h, w, device=probs.device)
            for (y, x), p in zip(chunk, probs):
                total[:, :, y : y + ch, x : x + cw] += p
                count[:, :, y : y + ch, x : x + cw] += 1
        return total / count

    def _view(self, images: torch.Tensor) -> torch.Tensor:
        return self._whole(images) if self.crop_size is None else self._sliding(images)

    # ----------------------------------------------------------------- all views
    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Predict probabilities for RGB images (N, 3, H, W) uint8 -> (N, K, H, W) float32.

        ``(N, 3B, H, W)`` when ``B`` inputs are stacked (``INPUT.MODALITIES``). The
        images stay where they are (the model moves them to its device); the
        probabilities are on the model's device.
        """
        if images.dim() != 4 or images.shape[1] % 3:
            raise ValueError(f"inference: images must be (N, 3, H, W) (or (N, 3B, H, W) for B stacked inputs); "
                             f"got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        total, views = None, 0
        for scale in self.scales:
            scaled = images
            if scale != 1.0:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                scaled = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
            for flipped in (False, True) if self.flip else (False,):
                view = scaled.flip(-1) if flipped else scaled
                probs = self._view(view)
                if flipped:
                    probs = probs.flip(-1)
                if scale != 1.0:
                    probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
                total = probs if total is None else total + probs
                views += 1
        probs = total if views == 1 else total / views
        if self.postprocessor is not None:
            probs = self.postprocessor(probs, images)
        return probs


def build_inference(cfg, model: nn.Module, postprocess: bool = False) -> SegmentationInference:
    """Inference per ``cfg.TEST.AUG`` and ``cfg.TEST.SLIDING_WINDOW`` (softmax applied).

    Args:
        cfg: the config.
        model: the segmentation model (put in eval mode here).
        postprocess: also apply ``POSTPROCESS.CHAIN`` to the averaged probabilities.

    Returns:
        A callable ``images (N, 3, H, W) uint8 -> probs (N, K, H, W)``.
    """
    model.eval()
    chain = build_postprocessor_chain(cfg) if postprocess else None
    return SegmentationInference(cfg, model, postprocessor=chain or None)
