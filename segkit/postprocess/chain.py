"""The configured chain of post-processors (``POSTPROCESS.CHAIN``)."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from segkit.config.configurable import build_component
from segkit.registry import POSTPROCESSOR_REGISTRY

__all__ = ["PostprocessorChain", "build_postprocessor", "build_postprocessor_chain", "on_valid_regions"]

PostProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PostprocessorChain:
    """Applies post-processors in order; with none it returns the probabilities unchanged.

    Args:
        steps: callables ``(probs (N, K, H, W) float, images (N, 3, H, W) uint8) -> probs``.
    """

    def __init__(self, steps: Sequence[PostProcessor] = ()) -> None:
        self.steps: List[PostProcessor] = list(steps)

    def __call__(self, probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Refine probs (N, K, H, W) given the images (N, 3, H, W) uint8 they came from."""
        for step in self.steps:
            out = step(probs, images)
            if out.shape != probs.shape:
                raise RuntimeError(
                    f"post-processor {step!r} returned shape {tuple(out.shape)}, expected {tuple(probs.shape)}"
                )
            probs = out
        return probs

    def __len__(self) -> int:
        return len(self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __repr__(self) -> str:
        return f"PostprocessorChain({self.steps!r})"


def build_postprocessor(cfg, name: str) -> PostProcessor:
    """Build the post-processor registered as ``name`` (the shared rule of
    :func:`segkit.config.build_component`: ``obj(**obj.from_config(cfg))``, or ``obj()``)."""
    return build_component(POSTPROCESSOR_REGISTRY, name, cfg, expect=_is_postprocessor)


def _is_postprocessor(obj) -> "str | None":
    if callable(obj) and not isinstance(obj, type):
        return None
    return (f"built {type(obj).__name__}, which is not callable as (probs (N, K, H, W), images (N, 3, H, W)) "
            "-> probs; return an object with __call__ (from_config must return a dict of constructor arguments).")


def build_postprocessor_chain(cfg) -> PostprocessorChain:
    """Build ``cfg.POSTPROCESS.CHAIN`` (identity when empty).

    Returns:
        A callable ``(probs (N, K, H, W), images (N, 3, H, W) uint8) -> probs``.
    """
    return PostprocessorChain([build_postprocessor(cfg, name) for name in cfg.POSTPROCESS.CHAIN])


def on_valid_regions(
    post: PostProcessor, probs: torch.Tensor, images: torch.Tensor, sizes: Optional[Sequence[Tuple[int, int]]]
) -> torch.Tensor:
    """Run ``post`` on each image's valid (unpadded) region, so batching never changes a result.

    A test batch of images of different sizes is padded bottom/right to the largest
    one (and to ``size_divisibility``); a post-processor that looks at neighbours (the
    dense CRF) would otherwise see the padding. Images that fill the batch go through
    ``post`` together; every other image alone on its ``[:h, :w]`` crop, handed over
    contiguous (as a whole image would be). Padded pixels keep the input probabilities.

    Args:
        post: ``(probs (N, K, H, W), images (N, 3, H, W) uint8) -> probs``.
        probs: (N, K, H, W) probabilities of the padded batch.
        images: (N, 3, H, W) uint8 padded images.
        sizes: ``(h, w)`` of each image before padding, or None (no padding).

    Returns:
        (N, K, H, W) post-processed probabilities.
    """
    n, _, height, width = probs.shape
    if sizes is None:
        return post(probs, images)
    if len(sizes) != n:
        raise ValueError(f"on_valid_regions: {len(sizes)} sizes for a batch of {n} images")
    full = [i for i, (h, w) in enumerate(sizes) if (h, w) == (height, width)]
    if len(full) == n:
        return post(probs, images)
    out = probs.clone()
    if full:
        index = torch.tensor(full, device=probs.device)
        out[index] = post(probs[index], images[index])
    for i, (h, w) in enumerate(sizes):
        if (h, w) != (height, width):
            if not (0 < h <= height and 0 < w <= width):
                raise ValueError(f"on_valid_regions: image {i} size {(h, w)} outside the batch's {(height, width)}")
            out[i : i + 1, :, :h, :w] = post(probs[i : i + 1, :, :h, :w].contiguous(), images[i : i + 1, :, :h, :w].contiguous())
    return out
