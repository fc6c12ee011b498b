"""``segkit.Predictor``: one object a product calls to segment images.

The predictor is a thin, thread-safe front over
:func:`segkit.engine.inference_pipeline.build_inference_pipeline` (ARCHITECTURE.md,
"One inference"): it validates images, converts them to RGB once (the caller may
declare BGR arrays, as ``cv2.imread`` gives), lets the data mapper prepare them
(:meth:`segkit.data.DatasetMapper.prepare_image`), batches same-size images, runs the
pipeline's inference and post-processor chain, and resizes the probabilities back
to each image's size.

Drawing helpers (``default_palette``, ``colorize``, ``overlay``, ``save_label_png``)
live in :mod:`segkit.utils.visualize` and the pipeline metadata in
:mod:`segkit.engine.metadata`; both are re-exported here for convenience.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from segkit.data.io import as_rgb, read_image as _read_image
from segkit.engine.inference_pipeline import build_inference_pipeline
from segkit.engine.metadata import PipelineMetadata, pipeline_metadata
from segkit.utils.device import resolve_device
from segkit.utils.visualize import colorize, default_palette, overlay, save_label_png
from segkit.utils.threads import choose_threads, intra_op_threads, thread_override

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
# Input pixels per intra-op thread of a model call: below it one thread is faster (see segkit.utils.threads).
_MODEL_GRAIN = 64 * 64
ImageLike = Union[np.ndarray, torch.Tensor, "PIL.Image.Image"]  # noqa: F821


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
        if image.mode.startswith("I;16"):
            # 16-bit grey: keep the top 8 bits, as read_image (OpenCV) does for 16-bit files;
            # PIL's convert("RGB") would clip everything above 255 to white.
            grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2), "RGB"
        if image.mode in ("I", "F"):
            raise TypeError(f"{where} is a PIL image of mode '{image.mode}' (32-bit); convert it to 8-bit RGB "
                            "yourself, choosing how to scale its values.")
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
    """Read an image file as ``(H, W, 3)`` uint8 in ``format`` order (default RGB, what the predictor takes).

    Delegates to :func:`segkit.data.io.read_image` so that predictions see the very
    pixels the data loader would have produced (same decoder, same colour conversion).

    Raises:
        segkit.data.DataError: missing, truncated or undecodable file.
    """
    return _read_image(path, _check_format(format))


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
        if batch_size is None:
            batch_size = int(cfg.TEST.get("IMS_PER_BATCH", 1))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.cfg = cfg.clone()
        self.cfg.freeze()
        # Default channel order of the arrays callers pass (kept from before RGB-end-to-end:
        # a BGR config's users pass BGR arrays); arrays are converted to RGB once, on the way in.
        self.input_format = _check_format(self.cfg.INPUT.FORMAT)
        self.batch_size = int(batch_size)
        self.device = resolve_device(self.cfg.MODEL.DEVICE)  # where build_model put the model
        self.pipeline = build_inference_pipeline(self.cfg, weights, who="Predictor")
        self._num_threads = int(self.cfg.TEST.get("NUM_THREADS", 0))
        # Inputs the model reads, stacked along the channels; the first is passed as ``images``.
        self._modalities = list(self.cfg.INPUT.get("MODALITIES", ["image"]))
        self._lock = threading.Lock()
        self._transform_lock = threading.Lock()

    @property
    def model(self) -> torch.nn.Module:
        return self.pipeline.model

    @property
    def weights(self) -> str:
        return self.pipeline.weights

    @property
    def metadata(self) -> PipelineMetadata:
        return self.pipeline.metadata

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.metadata.class_names

    # -- pre-processing ---------------------------------------------------- #
    def _prepare(self, image: ImageLike, where: str, fmt: str,
                 extras: Optional[Dict[str, ImageLike]] = None) -> Tuple[np.ndarray, Tuple[int, int]]:
        """Validated RGB image after the mapper's test-time preparation, and its original size.

        ``extras``: the other inputs of ``INPUT.MODALITIES`` by name (same size, transformed
        with the same geometry, never channel-swapped); all are stacked along the channels.
        """
        arr, forced = check_image(image, where)
        size = (int(arr.shape[0]), int(arr.shape[1]))
        rgb = as_rgb(arr, forced or fmt)
        others = {n: check_image(v, f"{where} input '{n}'")[0] for n, v in (extras or {}).items()}
        for n, v in others.items():
            if v.shape[:2] != arr.shape[:2]:
                raise ValueError(f"{where}: input '{n}' is {v.shape[1]}x{v.shape[0]} (WxH), the image {size[1]}x{size[0]}.")
        with self._transform_lock:  # albumentations objects are not documented as re-entrant
            rgb, others = self.pipeline.mapper.prepare_inputs(rgb, others, where)
        if others:
            rgb = np.concatenate([rgb] + [others[n] for n in self._modalities[1:]], axis=2)
        return np.ascontiguousarray(rgb), size

    # -- the device part --------------------------------------------------- #
    @torch.inference_mode()
    def _run(self, arrays: List[np.ndarray], sizes: List[Tuple[int, int]], return_probs: bool) -> List[Prediction]:
        # Contiguous NCHW, like the test loader's batches: a channels-last view would pick
        # other convolution kernels and change the results in the last bits.
        # The model moves the batch to its device.
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        with self._lock, thread_override(self._num_threads):
            # Threads for the work and the load (segkit.utils.threads); the CRF picks its own.
            work = batch.shape[0] * batch.shape[2] * batch.shape[3]
            with intra_op_threads(choose_threads(work, _MODEL_GRAIN, ops="long")):
                probs = self.pipeline.inference(batch)
            probs = self.pipeline.postprocess(probs, batch)
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
                default ``cfg.INPUT.FORMAT``. PIL images are always RGB. Arrays are
                turned into RGB once here; the model adapts RGB to its weights.
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
