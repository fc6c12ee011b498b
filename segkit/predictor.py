"""``segkit.Predictor``: one object a product calls to segment images.

The predictor puts the pieces of one inference together (ARCHITECTURE.md, "One
inference"): the data subsystem's test-time transform (no random augmentation),
the model (which normalises on its device), :func:`segkit.postprocess.build_inference`
(whole image, sliding window or multi-scale + flip, per ``cfg.TEST``), the
post-processor chain (``cfg.POSTPROCESS.CHAIN``, e.g. dense CRF) and the arg-max,
returning label maps at the size of the image that was passed in.

It also holds the small helpers a product needs around a prediction: reading an
image file in the model's channel order, colouring a label map with the dataset's
palette, blending an overlay and writing palette PNGs.
"""
from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from segkit.utils.device import resolve_device

__all__ = [
    "Predictor",
    "Prediction",
    "PipelineMetadata",
    "pipeline_metadata",
    "default_palette",
    "check_image",
    "read_image",
    "colorize",
    "overlay",
    "save_label_png",
]

logger = logging.getLogger(__name__)

_FORMATS = ("RGB", "BGR")
ImageLike = Union[np.ndarray, torch.Tensor, "PIL.Image.Image"]  # noqa: F821


# ---------------------------------------------------------------------------- #
# Metadata: class names, palette, channel order, normalisation
# ---------------------------------------------------------------------------- #
def default_palette(num_classes: int) -> List[Tuple[int, int, int]]:
    """PASCAL VOC's bit-interleaved palette for ``num_classes`` labels (label 0 is black)."""
    from segkit.data.datasets.voc import voc_palette

    return voc_palette(num_classes)


@dataclass(frozen=True)
class PipelineMetadata:
    """What a caller needs to interpret a pipeline's input and output.

    Attributes:
        class_names: ``K`` names, index = label value.
        palette: ``K`` RGB colours, index = label value.
        input_format: channel order the pipeline expects, ``"RGB"`` or ``"BGR"``.
        pixel_mean: per-channel mean (0-255 scale, ``input_format`` order) the model subtracts.
        pixel_std: per-channel std the model divides by.
        ignore_value: label value that never comes out of the pipeline but marks
            unlabelled pixels in ground truth.
    """

    class_names: Tuple[str, ...]
    palette: Tuple[Tuple[int, int, int], ...]
    input_format: str
    pixel_mean: Tuple[float, ...]
    pixel_std: Tuple[float, ...]
    ignore_value: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
            "input_format": self.input_format,
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
            "ignore_value": self.ignore_value,
            "num_classes": self.num_classes,
        }


def _dataset_classes(cfg) -> Tuple[Optional[List[str]], Optional[List[Tuple[int, int, int]]], str]:
    """Class names and colours of the first test (else train) dataset that has them."""
    try:
        from segkit.data import MetadataCatalog
    except ImportError:
        return None, None, ""
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        meta = MetadataCatalog.get(name)
        classes = meta.get("stuff_classes")
        if classes:
            return list(classes), meta.get("stuff_colors"), name
    return None, None, ""


def pipeline_metadata(cfg) -> PipelineMetadata:
    """Build :class:`PipelineMetadata` from a config and its dataset's metadata.

    Class names and colours come from ``MetadataCatalog`` of ``cfg.DATASETS.TEST``
    (then ``TRAIN``); when none is registered, or its class count differs from
    ``MODEL.NUM_CLASSES``, the names are ``class_0..`` and the palette is
    :func:`default_palette` (with a warning in the mismatch case).
    """
    k = int(cfg.MODEL.NUM_CLASSES)
    names, colors, source = _dataset_classes(cfg)
    if names is not None and len(names) != k:
        warnings.warn(
            f"Dataset '{source}' has {len(names)} classes but MODEL.NUM_CLASSES is {k}; "
            "using generic class names and colours.",
            stacklevel=2,
        )
        names, colors = None, None
    names = names or [f"class_{i}" for i in range(k)]
    if not colors or len(colors) != k:
        colors = default_palette(k)
    return PipelineMetadata(
        class_names=tuple(str(n) for n in names),
        palette=tuple(tuple(int(v) for v in c) for c in colors),
        input_format=str(cfg.INPUT.FORMAT).upper(),
        pixel_mean=tuple(float(v) for v in cfg.MODEL.PIXEL_MEAN),
        pixel_std=tuple(float(v) for v in cfg.MODEL.PIXEL_STD),
        ignore_value=int(cfg.MODEL.IGNORE_VALUE),
    )


# ---------------------------------------------------------------------------- #
# Images in, pictures out
# ---------------------------------------------------------------------------- #
def _check_format(fmt: str) -> str:
    up = str(fmt).upper()
    if up not in _FORMATS:
        raise ValueError(f"Unknown channel order '{fmt}'; use one of {', '.join(_FORMATS)}.")
    return up


def _as_array(image: ImageLike, where: str) -> Tuple[np.ndarray, Optional[str]]:
    """Return ``(array, forced_format)``; PIL images are always RGB."""
    if isinstance(image, np.ndarray):
        return image, None
    if isinstance(image, torch.Tensor):
        return image.detach().cpu().numpy(), None
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")), "RGB"
    raise TypeError(
        f"{where}: expected an H x W x 3 uint8 numpy array (or torch tensor / PIL image), "
        f"got {type(image).__name__}."
    )


def check_image(image: ImageLike, where: str = "image") -> Tuple[np.ndarray, Optional[str]]:
    """Validate one input image and return it as a contiguous ``(H, W, 3)`` uint8 array.

    Args:
        image: ``(H, W, 3)`` uint8 array, tensor or PIL image.
        where: how to name the image in error messages (e.g. ``"image 3"``).

    Returns:
        ``(array, forced_format)``: ``forced_format`` is ``"RGB"`` for PIL images
        (whose channel order is known) and None otherwise.

    Raises:
        TypeError: not an array/tensor/PIL image, or not uint8.
        ValueError: wrong number of dimensions or channels, or an empty image.
    """
    arr, forced = _as_array(image, where)
    if arr.dtype != np.uint8:
        hint = " (scale 0-1 floats with (img * 255).round().astype(np.uint8))" if arr.dtype.kind == "f" else ""
        raise TypeError(f"{where} has dtype {arr.dtype}; the predictor expects uint8 pixels 0-255{hint}.")
    if arr.ndim == 2:
        raise ValueError(
            f"{where} is a single-channel {arr.shape} image; expected H x W x 3. "
            "Replicate grey images to 3 channels (np.repeat(img[..., None], 3, axis=2))."
        )
    if arr.ndim != 3:
        hint = "; for a batch pass a list of images (list(batch))" if arr.ndim == 4 else ""
        raise ValueError(f"{where} has shape {arr.shape}; expected H x W x 3 (one image, channels last){hint}.")
    if arr.shape[2] != 3:
        if arr.shape[0] == 3:
            hint = "it looks channels-first; pass img.transpose(1, 2, 0)"
        elif arr.shape[2] == 4:
            hint = "drop the alpha channel (img[..., :3])"
        else:
            hint = "convert it to 3 channels"
        raise ValueError(f"{where} has shape {arr.shape} with {arr.shape[2]} channels; expected 3: {hint}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{where} is empty (shape {arr.shape}).")
    return np.ascontiguousarray(arr), forced


def read_image(path: str, format: str = "RGB") -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 in ``format`` order, decoded as training decodes it.

    Delegates to :func:`segkit.data.io.read_image` so that predictions see the very
    pixels the data loader would have produced (same decoder, same colour conversion).

    Raises:
        segkit.data.DataError: missing, truncated or undecodable file.
    """
    from segkit.data.io import read_image as _read

    return _read(path, _check_format(format))


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Colour a label map.

    Args:
        labels: ``(H, W)`` integer labels.
        palette: RGB colour per label value.

    Returns:
        ``(H, W, 3)`` uint8 RGB image; labels without a colour (e.g. the ignore
        value) are black.
    """
    lut = np.zeros((max(256, len(palette)), 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    idx = np.clip(np.asarray(labels), 0, len(lut) - 1).astype(np.int64)
    return lut[idx]


def overlay(image_rgb: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured labels over an RGB image: ``(1 - alpha) * image + alpha * colour``.

    Args:
        image_rgb: ``(H, W, 3)`` uint8, RGB.
        labels: ``(H, W)`` labels of the same size.
        palette: RGB colour per label.
        alpha: weight of the colour, in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    if image_rgb.shape[:2] != np.asarray(labels).shape:
        raise ValueError(f"image {image_rgb.shape[:2]} and labels {np.asarray(labels).shape} differ in size.")
    color = colorize(labels, palette).astype(np.float32)
    out = (1.0 - alpha) * image_rgb.astype(np.float32) + alpha * color
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def save_label_png(path: str, labels: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """Write labels as an 8-bit palette PNG: pixel values are the labels, viewers show colours.

    Raises:
        ValueError: a label does not fit in 8 bits (more than 256 classes).
    """
    from PIL import Image

    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"Labels span [{labels.min()}, {labels.max()}]; palette PNGs hold 0-255 only.")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [v for color in list(palette)[:256] for v in color]
    img.putpalette(flat + [0] * (768 - len(flat)))
    img.save(path)


# ---------------------------------------------------------------------------- #
# The predictor
# ---------------------------------------------------------------------------- #
@dataclass
class Prediction:
    """The result for one image.

    Attributes:
        labels: ``(H, W)`` int64 label map at the input image's size.
        probs: ``(K, H, W)`` float32 class probabilities at the input size (after
            the post-processor chain), or None unless asked for.
    """

    labels: np.ndarray
    probs: Optional[np.ndarray] = None


def _load_test_transform(cfg):
    """The data subsystem's test-time pipeline (``INPUT.TEST_TRANSFORMS``), or None when empty.

    Built exactly as the test loader builds it (:class:`segkit.data.DatasetMapper`
    with ``is_train=False``), so a prediction sees the pixels evaluation sees. The
    pipeline maps an RGB ``(H, W, 3)`` uint8 image to an RGB uint8 image (possibly
    resized; the predictor resizes probabilities back).
    """
    if not list(cfg.INPUT.get("TEST_TRANSFORMS", [])):
        return None
    from segkit.data import DatasetMapper

    return DatasetMapper.from_config(cfg, is_train=False).pipeline


class Predictor:
    """Segment images with a trained segkit model, exactly as it is evaluated.

    Example::

        cfg = segkit.config.load_config("configs/fashion_scenes/main.yaml")
        predictor = segkit.Predictor(cfg, weights="output/model_final.pth")
        pred = predictor(image_rgb)                 # Prediction(labels=(H, W) int64)
        preds = predictor([a, b], return_probs=True)  # list; .probs is (K, H, W)

    Thread safety: the predictor can be shared between threads. Validation and
    pre-processing run concurrently; the device work is serialised by a lock
    because the inference callables and post-processors may keep per-call state.

    Args:
        cfg: a segkit config; cloned and frozen.
        weights: checkpoint path; overrides ``cfg.MODEL.WEIGHTS``. When neither is
            set the model keeps its initial weights (a warning says so).
        batch_size: how many same-size images of a list go through the model together;
            default ``cfg.TEST.IMS_PER_BATCH``.
    """

    def __init__(self, cfg, weights: Optional[str] = None, batch_size: Optional[int] = None) -> None:
        from segkit.modeling import build_model
        from segkit.postprocess import build_inference, build_postprocessor_chain

        if batch_size is None:
            batch_size = int(cfg.TEST.get("IMS_PER_BATCH", 1))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.device = resolve_device(self.cfg.MODEL.DEVICE)
        self.input_format = _check_format(self.cfg.INPUT.FORMAT)
        self.batch_size = int(batch_size)
        self.model = build_model(self.cfg)
        self.weights = self._load_weights(weights)
        self.model.eval()
        self.metadata = pipeline_metadata(self.cfg)
        self._inference = build_inference(self.cfg, self.model)
        self._chain = build_postprocessor_chain(self.cfg)
        self._transform = _load_test_transform(self.cfg)
        # Inputs the model reads, stacked along the channels; the first is passed as ``images``.
        self._modalities = list(self.cfg.INPUT.get("MODALITIES", ["image"]))
        self._lock = threading.Lock()
        self._transform_lock = threading.Lock()

    def _load_weights(self, weights: Optional[str]) -> str:
        path = weights if weights is not None else self.cfg.MODEL.WEIGHTS
        if not path:
            warnings.warn("Predictor: no weights given (weights=None, MODEL.WEIGHTS empty); the model is untrained.", stacklevel=3)
            return ""
        from segkit.engine.checkpoint import load_model_weights

        load_model_weights(self.model, path)
        return path

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.metadata.class_names

    # -- pre-processing ---------------------------------------------------- #
    def _prepare(self, image: ImageLike, where: str, fmt: str,
                 extras: Optional[Dict[str, ImageLike]] = None) -> Tuple[np.ndarray, Tuple[int, int]]:
        """Validated image in the model's channel order after the test transform, and its original size.

        ``extras``: the other inputs of ``INPUT.MODALITIES`` by name (same size, transformed
        with the same geometry, never channel-swapped); all are stacked along the channels.
        """
        arr, forced = check_image(image, where)
        size = (int(arr.shape[0]), int(arr.shape[1]))
        fmt = forced or fmt
        others = {n: check_image(v, f"{where} input '{n}'")[0] for n, v in (extras or {}).items()}
        for n, v in others.items():
            if v.shape[:2] != arr.shape[:2]:
                raise ValueError(f"{where}: input '{n}' is {v.shape[1]}x{v.shape[0]} (WxH), the image {size[1]}x{size[0]}.")
        swap = fmt != self.input_format
        if self._transform is not None:  # data transforms run on RGB, like the mapper's
            rgb = arr[:, :, ::-1] if fmt == "BGR" else arr
            with self._transform_lock:  # albumentations objects are not documented as re-entrant
                res = self._transform(image=np.ascontiguousarray(rgb), **others)
            arr, fmt, others = res["image"], "RGB", {n: res[n] for n in others}
            swap = fmt != self.input_format
            if arr.dtype != np.uint8 or arr.ndim != 3:
                raise ValueError(f"INPUT.TEST_TRANSFORMS turned {where} into {arr.dtype} {arr.shape}; they must keep H x W x 3 uint8.")
        if swap and self._modalities[0] == "image":
            arr = arr[:, :, ::-1]
        if others:
            arr = np.concatenate([arr] + [others[n] for n in self._modalities[1:]], axis=2)
        return np.ascontiguousarray(arr), size

    # -- the device part --------------------------------------------------- #
    @torch.inference_mode()
    def _run(self, arrays: List[np.ndarray], sizes: List[Tuple[int, int]], return_probs: bool) -> List[Prediction]:
        # Contiguous NCHW, like the test loader's batches: a channels-last view would pick
        # other convolution kernels and change the results in the last bits.
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous().to(self.device)
        with self._lock:
            probs = self._inference(batch)
            probs = self._chain(probs, batch)
        out = []
        for i, (h, w) in enumerate(sizes):
            p = probs[i : i + 1]
            if p.shape[-2:] != (h, w):  # undo the test transform's resize
                p = F.interpolate(p.float(), size=(h, w), mode="bilinear", align_corners=False)
            labels = p[0].argmax(0).to(torch.int64).cpu().numpy()
            out.append(Prediction(labels, p[0].float().cpu().numpy() if return_probs else None))
        return out

    def __call__(
        self,
        images: Union[ImageLike, Sequence[ImageLike]],
        *,
        format: Optional[str] = None,
        return_probs: bool = False,
        inputs: Optional[Dict[str, Any]] = None,
    ) -> Union[Prediction, List[Prediction]]:
        """Segment one image or a list of images.

        Args:
            images: one ``(H, W, 3)`` uint8 image, or a list/tuple of them (sizes may differ);
                the first input of ``INPUT.MODALITIES`` (the RGB image, or e.g. HHA for an HHA-only model).
            inputs: the other inputs of ``INPUT.MODALITIES`` by name, each one ``(H, W, 3)``
                uint8 array (or a list matching ``images``), e.g. ``{"hha": depth_to_hha(depth, camera)}``.
            format: channel order of the given arrays, ``"RGB"`` or ``"BGR"``;
                default ``cfg.INPUT.FORMAT``. PIL images are always RGB.
            return_probs: also return the ``(K, H, W)`` probabilities.

        Returns:
            A :class:`Prediction` for one image, a list of them for a list.
        """
        fmt = _check_format(format) if format is not None else self.input_format
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        where = (lambda i: "image") if single else (lambda i: f"image {i}")
        extras = self._extra_inputs(inputs, single, len(items))
        prepared, sizes = zip(*[self._prepare(img, where(i), fmt, extras[i]) for i, img in enumerate(items)]) if items else ((), ())
        results: List[Prediction] = []
        for start, stop in self._groups(prepared):
            results.extend(self._run(list(prepared[start:stop]), list(sizes[start:stop]), return_probs))
        return results[0] if single else results

    def _extra_inputs(self, inputs: Optional[Dict[str, Any]], single: bool, n: int) -> List[Dict[str, Any]]:
        """Per image, the inputs besides the first of ``INPUT.MODALITIES``; raises naming what is missing."""
        inputs = dict(inputs or {})
        needed = self._modalities[1:]
        if sorted(inputs) != sorted(needed):
            raise ValueError(f"This model reads INPUT.MODALITIES {self._modalities}: pass the first as images and "
                             f"inputs={{{', '.join(repr(k) + ': ...' for k in needed)}}}; got inputs for {sorted(inputs)}.")
        if single:
            return [inputs]
        for k, v in inputs.items():
            if not isinstance(v, (list, tuple)) or len(v) != n:
                raise ValueError(f"inputs['{k}'] must be a list of {n} arrays, one per image.")
        return [{k: v[i] for k, v in inputs.items()} for i in range(n)]

    def _groups(self, arrays: List[np.ndarray]):
        """Consecutive runs of same-size arrays, at most ``batch_size`` long."""
        start = 0
        while start < len(arrays):
            stop = start + 1
            while stop < len(arrays) and stop - start < self.batch_size and arrays[stop].shape == arrays[start].shape:
                stop += 1
            yield start, stop
            start = stop
