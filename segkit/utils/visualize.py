"""Drawing label maps: the palette, colouring and blending, with one meaning everywhere.

The engine's evaluation pictures, :class:`segkit.Predictor` users, ``tools/predict.py``
and exported bundles' metadata all use these three functions, so that a label map
looks the same wherever it is drawn. Images are ``(H, W, 3)`` uint8 RGB arrays.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ["default_palette", "colorize", "overlay", "save_label_png", "NO_COLOR"]

#: Colour of pixels without a class colour (ignore value, negative or out-of-palette labels).
NO_COLOR = (0, 0, 0)


def default_palette(num_classes: int) -> List[Tuple[int, int, int]]:
    """PASCAL VOC's bit-interleaved palette for ``num_classes`` labels (label 0 is black).

    The bits of the class index are spread over R, G, B from the high bit down, so
    neighbouring labels get clearly different colours.
    """
    colors = []
    for i in range(num_classes):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]], ignore_value: int = 255) -> np.ndarray:
    """Colour a label map.

    Args:
        labels: ``(H, W)`` integer labels.
        palette: RGB colour per label value (any length).
        ignore_value: label that marks unlabelled pixels.

    Returns:
        ``(H, W, 3)`` uint8 RGB; the ignore value and labels without a colour
        (negative or ``>= len(palette)``) are :data:`NO_COLOR` (black).
    """
    colors = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    labels = np.asarray(labels).astype(np.int64)
    valid = (labels >= 0) & (labels < len(colors)) & (labels != ignore_value)
    out = colors[np.where(valid, labels, 0)] if len(colors) else np.zeros(labels.shape + (3,), np.uint8)
    out[~valid] = NO_COLOR
    return out


def overlay(image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5,
            ignore_value: int = 255) -> np.ndarray:
    """Blend the coloured labels over an RGB image: ``(1 - alpha) * image + alpha * colour``.

    Pixels whose colour is black keep the image unchanged: the ignore value, labels
    without a colour, and classes coloured black (VOC-style background), so the
    background is not darkened and objects stand out.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        labels: ``(H, W)`` labels of the same size.
        palette: RGB colour per label.
        alpha: weight of the colour, in [0, 1].
        ignore_value: label that marks unlabelled pixels.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size.")
    color = colorize(labels, palette, ignore_value)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)
    keep = color.max(axis=-1) == 0
    blended[keep] = image[keep]
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_label_png(path: str, labels: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """Write labels as an 8-bit palette PNG: pixel values are the labels, viewers show colours.

    Raises:
        ValueError: a label does not fit in 8 bits (more than 256 classes).
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"Labels span [{labels.min()}, {labels.max()}]; palette PNGs hold 0-255 only.")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [v for color in list(palette)[:256] for v in color]
    img.putpalette(flat + [0] * (768 - len(flat)))
    img.save(path)
