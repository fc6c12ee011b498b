"""``SegmentationHead``: what every head repeats, in one base class."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from torch import nn

from segkit.layers import ShapeSpec

__all__ = ["SegmentationHead", "check_in_features"]


def check_in_features(in_features: Sequence[str], input_shape: Dict[str, ShapeSpec], owner: str) -> None:
    """Raise a ValueError naming the missing maps if the backbone does not provide ``in_features``."""
    if not in_features:
        raise ValueError(f"{owner}: MODEL.HEAD.IN_FEATURES is empty; name the backbone maps the head reads.")
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        raise ValueError(
            f"{owner}: MODEL.HEAD.IN_FEATURES asks for {missing}, which the backbone does not return. "
            f"Available: {sorted(input_shape)} (add them to the backbone's OUT_FEATURES)."
        )


class SegmentationHead(nn.Module):
    """Base class of segmentation heads (built-in and plugin).

    It owns what every head repeats: reading ``MODEL.HEAD.IN_FEATURES`` from the
    backbone's ``output_shape()`` (with an error naming what is missing),
    ``MODEL.NUM_CLASSES``, the output ``stride`` and the classifier initialisation.
    It adds no parameters or buffers, so subclasses keep their ``state_dict`` keys.

    Subclasses decorate their ``__init__`` with ``@configurable``, call
    ``super().__init__(input_shape=..., in_features=..., num_classes=...)`` and
    extend :meth:`from_config`::

        @classmethod
        def from_config(cls, cfg, input_shape):
            return {**super().from_config(cfg, input_shape), "channels": cfg.MODEL.MY_HEAD.CHANNELS}

    ``forward(features: dict[str, Tensor]) -> (N, num_classes, H / stride, W / stride)``.

    Args:
        input_shape: the backbone's ``output_shape()``.
        in_features: names of the maps the head reads.
        num_classes: K.

    Attributes:
        in_features: list of the names read.
        feature_shapes: ``{name: ShapeSpec}`` of those maps.
        num_classes: K.
        stride: the stride of the logits (default: the finest input's; a head that
            upsamples sets its own).
    """

    def __init__(self, *, input_shape: Dict[str, ShapeSpec], in_features: Sequence[str], num_classes: int) -> None:
        super().__init__()
        check_in_features(in_features, input_shape, type(self).__name__)
        if int(num_classes) < 1:
            raise ValueError(f"{type(self).__name__}: MODEL.NUM_CLASSES must be >= 1, got {num_classes}.")
        self.in_features = list(in_features)
        self.feature_shapes = {f: input_shape[f] for f in self.in_features}
        self.num_classes = int(num_classes)
        self.stride = min(int(input_shape[f].stride or 1) for f in self.in_features)

    def in_channels(self, name: Optional[str] = None) -> int:
        """Channels of map ``name`` (default: the only, or first, input)."""
        return int(self.feature_shapes[name or self.in_features[0]].channels)

    @staticmethod
    def init_classifier(conv: nn.Conv2d, std: float = 0.01) -> nn.Conv2d:
        """Gaussian weights with ``std`` (zeros when ``std`` is 0), zero bias; returns ``conv``."""
        if std == 0:
            nn.init.zeros_(conv.weight)
        else:
            nn.init.normal_(conv.weight, std=std)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        return conv

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        """The base arguments: ``input_shape``, ``MODEL.HEAD.IN_FEATURES``, ``MODEL.NUM_CLASSES``."""
        return {
            "input_shape": input_shape,
            "in_features": list(cfg.MODEL.HEAD.IN_FEATURES),
            "num_classes": cfg.MODEL.NUM_CLASSES,
        }
