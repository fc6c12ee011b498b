"""Augmentations: every albumentations transform by name, plus the papers' own pipelines.

``TRANSFORM_REGISTRY`` holds one factory per albumentations transform (``"HorizontalFlip"``,
``"RandomScale"``, ``"OneOf"``, ...) and segkit's :func:`DeepLabRandomScaleCrop`.
A pipeline is configured in YAML as a list of ``{NAME, ARGS}`` entries::

    INPUT:
      TRAIN_TRANSFORMS:
        - {NAME: DeepLabRandomScaleCrop, ARGS: {crop_size: 321, scale_range: [0.5, 1.5]}}
        - {NAME: HorizontalFlip, ARGS: {p: 0.5}}
        - {NAME: OneOf, ARGS: {transforms: [{NAME: Blur}, {NAME: GaussNoise}], p: 0.3}}

The registered objects are the albumentations classes themselves (and segkit's
own). Segmentation defaults are given to every transform, built-in or plugin,
unless ARGS set them (:func:`segmentation_defaults`): masks are resized with
nearest-neighbour interpolation, padded/filled mask pixels get the ignore label,
and padded image pixels get the pixel mean (which normalises to zero, as in
DeepLab's Caffe data layer).
"""
from __future__ import annotations

import inspect
import random
from typing import Any, Dict, Optional, Sequence

import albumentations as A
import cv2
import numpy as np
from albumentations.core.composition import BaseCompose
from albumentations.core.transforms_interface import BasicTransform

from segkit.config.configurable import build_component
from segkit.registry import TRANSFORM_REGISTRY

__all__ = [
    "AlbumentationsFactory", "DeepLabRandomScaleCrop", "RandomScaleCrop", "build_transform", "build_transforms",
    "segmentation_defaults",
    "seed_transforms", "apply_transforms",
]

_BASE_CLASSES = ("BasicTransform", "DualTransform", "ImageOnlyTransform", "Transform3D")
_COMPOSITIONS = ("OneOf", "SomeOf", "Sequential", "OneOrOther", "RandomOrder", "SelectiveChannelTransform")


class AlbumentationsFactory:
    """Kept for code written before the classes themselves were registered.

    ``AlbumentationsFactory(cls)(ignore_value=..., pixel_mean=..., **ARGS)`` builds
    ``cls`` with the segmentation defaults, exactly as :func:`build_transform` does.
    """

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.__name__ = cls.__name__

    def __call__(self, ignore_value: int = 255, pixel_mean: Optional[Sequence[float]] = None, **args: Any):
        given = set(args)
        args = segmentation_defaults(self.cls, args, ignore_value, pixel_mean)
        return _fill_hidden_mask(self.cls(**args), given, ignore_value)


def _init_params(obj: Any) -> Dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return {}


def segmentation_defaults(obj: Any, args: Dict[str, Any], ignore_value: int = 255,
                          pixel_mean: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """``args`` completed with the segmentation defaults that ``obj``'s constructor accepts.

    The same for built-in and plugin transforms, whatever their own defaults are:
    ``mask_interpolation`` -> nearest; ``fill_mask`` and ``ignore_value`` -> the
    ignore label (a ``fill_mask`` defaulting to None, "mask untouched", keeps that
    meaning); ``fill`` (when it takes a per-channel tuple) and ``pixel_mean`` -> the
    pixel mean. Values set in ``args`` always win.
    """
    args = dict(args)
    p = _init_params(obj)
    if "mask_interpolation" in p:
        args.setdefault("mask_interpolation", cv2.INTER_NEAREST)
    if "fill_mask" in p and p["fill_mask"].default is not None:
        args.setdefault("fill_mask", ignore_value)
    if "ignore_value" in p:
        args.setdefault("ignore_value", ignore_value)
    if "fill" in p and pixel_mean is not None and "tuple" in str(p["fill"].annotation).lower():
        args.setdefault("fill", tuple(float(m) for m in pixel_mean))
    if "pixel_mean" in p:
        args.setdefault("pixel_mean", pixel_mean)
    return args


def _fill_hidden_mask(transform: Any, given: set, ignore_value: int) -> Any:
    # Some transforms (FrequencyMasking, TimeMasking, a plugin's own DualTransform)
    # fill the mask with a value they do not take as an argument (0 is a real class):
    # point them at the ignore label unless ARGS chose a value.
    if "fill_mask" not in given and "fill_mask" not in _init_params(type(transform)) \
            and getattr(transform, "fill_mask", None) is not None:
        transform.fill_mask = ignore_value
    return transform


class RandomScaleCrop(A.DualTransform):
    """Random scale, pad bottom/right, random crop, in one pass.

    Same result as ``RandomScale`` -> ``PadIfNeeded(position="top_left")`` ->
    ``RandomCrop``: one ``cv2.resize`` (bilinear image), then the crop window is
    copied straight into the output, whose outside-the-image part holds the pad
    values; no padded intermediate image is built. Masks are resized with
    ``INTER_NEAREST_EXACT`` (half-pixel centres, the sample positions the
    bilinear image uses; plain ``INTER_NEAREST`` is shifted by up to half a pixel).

    Args:
        crop_size: output side (or ``(height, width)``).
        scale_range: ``(low, high)`` of the uniform scale factor.
        fill: image value of padded pixels (per channel).
        fill_mask: mask value of padded pixels (the ignore label).
    """

    def __init__(self, crop_size=321, scale_range=(0.5, 1.5), fill=0.0, fill_mask=255, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.crop_size = (int(crop_size), int(crop_size)) if np.isscalar(crop_size) else tuple(map(int, crop_size))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"RandomScaleCrop: scale_range must be 0 < low <= high, got {scale_range}.")
        self.fill, self.fill_mask = fill, fill_mask

    def get_params_dependent_on_data(self, params: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = params["shape"][:2]
        ch, cw = self.crop_size
        s = self.py_random.uniform(*self.scale_range)
        sh, sw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        y0 = self.py_random.randint(0, max(sh, ch) - ch)
        x0 = self.py_random.randint(0, max(sw, cw) - cw)
        return {"scaled_hw": (sh, sw), "offset": (y0, x0), "scale": s}

    def _scale_crop(self, arr: np.ndarray, scaled_hw, offset, interp: int, fill) -> np.ndarray:
        (sh, sw), (y0, x0), (ch, cw) = scaled_hw, offset, self.crop_size
        scaled = arr if (sh, sw) == arr.shape[:2] else cv2.resize(arr, (sw, sh), interpolation=interp)
        if scaled.ndim < arr.ndim:
            scaled = scaled[..., None]
        vh, vw = min(ch, sh - y0), min(cw, sw - x0)
        out = np.empty((ch, cw) + arr.shape[2:], arr.dtype)
        out[:vh, :vw] = scaled[y0:y0 + vh, x0:x0 + vw]
        if vh < ch or vw < cw:  # outside the scaled image: DeepLab's padding
            out[vh:] = fill
            out[:vh, vw:] = fill
        return out

    def apply(self, img: np.ndarray, scaled_hw=None, offset=None, **params: Any) -> np.ndarray:
        fill = np.asarray(self.fill, dtype=np.float64)
        if np.issubdtype(img.dtype, np.integer):  # 123.675 -> 124, as PadIfNeeded does
            fill = np.clip(np.round(fill), 0, np.iinfo(img.dtype).max)
        return self._scale_crop(img, scaled_hw, offset, cv2.INTER_LINEAR, fill.astype(img.dtype))

    def apply_to_mask(self, mask: np.ndarray, scaled_hw=None, offset=None, **params: Any) -> np.ndarray:
        return self._scale_crop(mask, scaled_hw, offset, cv2.INTER_NEAREST_EXACT, self.fill_mask)

    def apply_to_bboxes(self, bboxes, *args, **params):
        raise NotImplementedError("RandomScaleCrop transforms images and masks only.")

    def apply_to_keypoints(self, keypoints, *args, **params):
        raise NotImplementedError("RandomScaleCrop transforms images and masks only.")

    def get_transform_init_args_names(self):
        return ("crop_size", "scale_range", "fill", "fill_mask")


def DeepLabRandomScaleCrop(
    crop_size: int = 321,
    scale_range: Sequence[float] = (0.5, 1.5),
    ignore_value: int = 255,
    pixel_mean: Optional[Sequence[float]] = None,
) -> RandomScaleCrop:
    """DeepLab's training augmentation: random scale, pad, then random crop.

    Chen et al., DeepLab (TPAMI 2017) sec. 4.1: images are randomly scaled by a
    factor in [0.5, 1.5] and cropped to 321x321 (513 in the final VOC runs).
    The Caffe data layer pads at the bottom/right with the mean colour
    (image) and the ignore label (mask) when the scaled image is smaller than
    the crop.

    Returns:
        A :class:`RandomScaleCrop` (image bilinear, mask nearest).
    """
    fill = tuple(float(m) for m in pixel_mean) if pixel_mean is not None else 0.0
    return RandomScaleCrop(crop_size=crop_size, scale_range=scale_range, fill=fill, fill_mask=ignore_value, p=1.0)


def build_transform(spec: Dict[str, Any], ignore_value: int = 255, pixel_mean: Optional[Sequence[float]] = None,
                    cfg: Any = None):
    """One ``{NAME, ARGS}`` entry -> transform (names looked up in ``TRANSFORM_REGISTRY``).

    The shared construction rule (:func:`segkit.config.build_component`) with
    ``ARGS`` completed by :func:`segmentation_defaults`; nested ``transforms`` of a
    composition are built the same way first.
    """
    if isinstance(spec, (BasicTransform, BaseCompose)):
        return spec
    if not isinstance(spec, dict) or "NAME" not in spec:
        raise ValueError(f"A transform entry must be a mapping with NAME (and optional ARGS); got {spec!r}.")
    unknown = set(spec) - {"NAME", "ARGS"}
    if unknown:
        raise ValueError(f"Transform entry {spec!r} has unknown keys {sorted(unknown)}; use NAME and ARGS.")
    name = spec["NAME"]
    obj = TRANSFORM_REGISTRY.get(name)
    args = dict(spec.get("ARGS") or {})
    given = set(args)
    if isinstance(args.get("transforms"), (list, tuple)):  # compositions: nested {NAME, ARGS} entries
        args["transforms"] = [build_transform(t, ignore_value, pixel_mean, cfg) for t in args["transforms"]]
    args = segmentation_defaults(obj, args, ignore_value, pixel_mean)
    try:
        transform = build_component(
            TRANSFORM_REGISTRY, name, cfg, args, expect=(BasicTransform, BaseCompose),
            promise="an albumentations transform (BasicTransform or a composition)",
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Cannot build transform {name} with ARGS {args}: {exc}") from exc
    return _fill_hidden_mask(transform, given, ignore_value)


def build_transforms(specs: Sequence[Dict[str, Any]], ignore_value: int = 255,
                     pixel_mean: Optional[Sequence[float]] = None,
                     additional_targets: Optional[Dict[str, str]] = None) -> A.Compose:
    """A list of ``{NAME, ARGS}`` entries -> ``albumentations.Compose`` (masks: nearest).

    ``additional_targets`` (e.g. ``{"hha": "image", "mask_geometric": "mask"}``) get the
    same geometric transforms as ``image`` / ``mask`` (albumentations' mechanism).
    """
    transforms = [build_transform(s, ignore_value, pixel_mean) for s in specs]
    return A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST, is_check_shapes=True,
                     additional_targets=additional_targets)


def seed_transforms(pipeline: Any, seed: int) -> None:
    """Give every transform in ``pipeline`` its own generator derived from ``seed``.

    albumentations' ``set_random_seed`` hands every child the *same* seed, which
    correlates their draws (the flip decision would equal the scale draw); here
    transform number ``k`` in depth-first order gets ``SeedSequence([seed, k])``.
    """
    counter = [0]

    def visit(t: Any) -> None:
        k = counter[0]
        counter[0] += 1
        ss = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, k])
        t.random_generator = np.random.default_rng(ss)
        t.py_random = random.Random(int(ss.generate_state(1, np.uint64)[0]))
        for child in getattr(t, "transforms", None) or []:
            if isinstance(child, (BasicTransform, BaseCompose)):
                visit(child)

    visit(pipeline)


def apply_transforms(pipeline: Any, image: np.ndarray, mask: np.ndarray, seed: Optional[int] = None):
    """Apply ``pipeline`` jointly; with ``seed`` the result is a pure function of the inputs and seed."""
    if seed is not None:
        seed_transforms(pipeline, seed)
    out = pipeline(image=image, mask=mask)
    return out["image"], out["mask"]


class _GridElasticDeform(A.GridElasticDeform):
    """``GridElasticDeform`` whose mask seams get the ignore label instead of 0.

    albumentations warps each grid cell separately and leaves the pixels that no
    warped cell covers at 0, which in a mask is a real class; here the mask is
    shifted by one before warping so uncovered pixels can be told apart.
    """

    fill_mask = 0  # replaced by the ignore value by build_transform

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        shifted = super().apply_to_mask(mask.astype(np.uint16) + 1, **params)
        out = shifted.astype(np.int64) - 1
        out[shifted == 0] = self.fill_mask
        return out.astype(mask.dtype)


_REPLACEMENTS = {"GridElasticDeform": _GridElasticDeform}


def _register_albumentations() -> None:
    for name in sorted(dir(A)):
        obj = getattr(A, name)
        if not inspect.isclass(obj) or inspect.isabstract(obj):
            continue
        is_transform = issubclass(obj, BasicTransform) and name not in _BASE_CLASSES
        if is_transform or name in _COMPOSITIONS:
            TRANSFORM_REGISTRY.register(_REPLACEMENTS.get(name, obj), name=name, source=__name__)


_register_albumentations()
TRANSFORM_REGISTRY.register(DeepLabRandomScaleCrop)
TRANSFORM_REGISTRY.register(RandomScaleCrop)
