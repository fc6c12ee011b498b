"""Record -> training/test sample: read, validate, map labels, augment."""
from __future__ import annotations

import random
from typing import Any, Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np
import torch

from segkit.config.configurable import configurable
from segkit.data.catalog import DataError, MetadataCatalog
from segkit.data.io import apply_label_map, read_image, read_mask, rgb_to_index
from segkit.data.transforms import apply_transforms, build_transforms

__all__ = ["DatasetMapper", "check_labels", "stream_seed", "rgb_pixel_mean"]


def rgb_pixel_mean(pixel_mean: Sequence[float], weights_format: str = "RGB") -> List[float]:
    """``MODEL.PIXEL_MEAN`` (given in ``INPUT.FORMAT``, the weights' order) in RGB order.

    Images are RGB from the reader to the model, so padding colours are RGB too.
    """
    mean = [float(v) for v in pixel_mean]
    return mean[::-1] if str(weights_format).upper() == "BGR" else mean


def stream_seed(seed: int, position: int) -> int:
    """The augmentation seed of stream position ``position`` under global ``seed`` (64-bit)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(position)]).generate_state(1, np.uint64)[0])


def check_labels(mask: np.ndarray, num_classes: int, ignore_value: int, path: str = "") -> None:
    """Raise :class:`DataError` if ``mask`` holds a value outside ``[0, num_classes) ∪ {ignore}``."""
    if mask.dtype == np.uint8:
        # Fast path: a validity look-up table and a count (~5x faster than a histogram
        # on real masks, whose long runs of one label stall histogram updates).
        valid = np.zeros(256, np.uint8)
        valid[: min(num_classes, 256)] = 1
        if 0 <= ignore_value < 256:
            valid[ignore_value] = 1
        if cv2.countNonZero(cv2.LUT(np.ascontiguousarray(mask), valid)) == mask.size:
            return
    present = np.unique(mask)
    bad = [int(v) for v in present if not (0 <= v < num_classes or v == ignore_value)]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise DataError(
            f"{path}: mask holds label values {{{shown}}} outside the {num_classes} classes [0, {num_classes - 1}] "
            f"and the ignore value {ignore_value}."
        )


def _check_uint8(image: np.ndarray, where: str) -> None:
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(
            f"The input transforms turned {where} into {image.dtype} {image.shape}; they must keep uint8 (H x W x 3). "
            "Normalisation happens on the device from MODEL.PIXEL_MEAN / MODEL.PIXEL_STD."
        )


class DatasetMapper:
    """Turns a record into ``{"image": uint8 (3, H, W), "sem_seg": (H, W), "record": dict}``.

    The image is RGB and *not* normalised: the model normalises on its device and,
    for weights trained on BGR input (``INPUT.FORMAT: BGR``), flips the channels
    there. ``sem_seg`` is uint8 when every label fits (4-8x less inter-process
    traffic) and is widened to int64 by the collate.

    :meth:`prepare_image` is the test-time preparation of a bare image (no mask),
    what :class:`segkit.Predictor` calls.
    """

    @configurable
    def __init__(
        self,
        *,
        transforms: Sequence[Mapping[str, Any]] = (),
        image_format: str = "RGB",
        ignore_value: int = 255,
        num_classes: int = 21,
        classes_per_dataset: Optional[Mapping[str, int]] = None,
        pixel_mean: Optional[Sequence[float]] = None,
    ) -> None:
        self.image_format = str(image_format).upper()  # the weights' order; images stay RGB here
        self.ignore_value = int(ignore_value)
        self.num_classes = int(num_classes)
        self.classes_per_dataset = dict(classes_per_dataset or {})
        mean_rgb = rgb_pixel_mean(pixel_mean, self.image_format) if pixel_mean is not None else None
        self.pipeline = build_transforms(list(transforms), self.ignore_value, mean_rgb) if transforms else None

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_names: Sequence[str] = ()) -> dict:
        """Keyword arguments for ``cfg``; ``DatasetMapper(cfg, is_train, dataset_names)`` builds it."""
        per_dataset = {}
        for name in dataset_names:
            classes = MetadataCatalog.get(name).get("stuff_classes")
            if classes:
                per_dataset[name] = len(classes)
        return dict(
            transforms=cfg.INPUT.TRAIN_TRANSFORMS if is_train else cfg.INPUT.TEST_TRANSFORMS,
            image_format=cfg.INPUT.FORMAT,
            ignore_value=cfg.MODEL.IGNORE_VALUE,
            num_classes=cfg.MODEL.NUM_CLASSES,
            classes_per_dataset=per_dataset,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
        )

    def prepare_image(self, image: np.ndarray, where: str = "image") -> np.ndarray:
        """Test-time preparation of one RGB image without a mask: the configured transforms.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            where: how to name the image in errors.

        Returns:
            ``(H, W, 3)`` uint8 RGB, contiguous (possibly resized by the transforms).
        """
        if self.pipeline is not None:
            image = self.pipeline(image=np.ascontiguousarray(image))["image"]
            _check_uint8(image, where)
        return np.ascontiguousarray(image)

    def read(self, record: Mapping[str, Any]):
        """Read and validate one record: ((H, W, 3) uint8 RGB image, (H, W) label mask)."""
        image = read_image(record["file_name"], "RGB")
        mask_path = record["sem_seg_file_name"]
        mask = read_mask(mask_path)
        if mask.ndim == 3:
            if "mask_colors" not in record:
                raise DataError(f"{mask_path}: mask is a colour image but the dataset defines no palette "
                                "(index or palette-PNG masks are expected).")
            mask = rgb_to_index(mask, record["mask_colors"], self.ignore_value,
                                record.get("mask_ignore_colors", ()), mask_path)
        mask = apply_label_map(mask, record.get("label_map"), mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image "
                f"{record['file_name']} ({image.shape[1]}x{image.shape[0]})."
            )
        k = self.classes_per_dataset.get(record.get("dataset_name"), self.num_classes)
        check_labels(mask, k, self.ignore_value, mask_path)
        return image, mask

    def __call__(self, record: Mapping[str, Any], seed: Optional[int] = None) -> Dict[str, Any]:
        """Map one record. ``seed`` makes random transforms a pure function of it."""
        image, mask = self.read(record)
        out_record = dict(record, height=image.shape[0], width=image.shape[1])
        if seed is not None:  # also covers user transforms that draw from the global generators
            random.seed(seed)
            np.random.seed(seed & 0xFFFFFFFF)
        if self.pipeline is not None:
            image, mask = apply_transforms(self.pipeline, image, mask, seed)
            _check_uint8(image, "the image")
        dtype = np.uint8 if self.ignore_value <= 255 and mask.dtype == np.uint8 else np.int64
        return {
            # A (3, H, W) view of the HWC array: the collate's copy into the batch is the only one.
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "sem_seg": torch.from_numpy(np.ascontiguousarray(mask, dtype=dtype)),
            "record": out_record,
        }
