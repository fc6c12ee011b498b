"""Record -> training/test sample: read, validate, map labels, augment."""
from __future__ import annotations

import random
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from segkit.config.configurable import configurable
from segkit.data.catalog import DataError, MetadataCatalog
from segkit.data.io import apply_label_map, read_image, read_input, read_mask, rgb_to_index
from segkit.data.transforms import apply_transforms, build_transforms, seed_transforms

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

    Several inputs (``inputs``, e.g. ``("image", "hha")``, read by
    :func:`segkit.data.io.read_input`) go through the same geometric transforms
    (albumentations ``additional_targets``) and are stacked along the channels:
    ``"image"`` is then ``(3 * len(inputs), H, W)`` in ``inputs`` order. Extra label
    sets (``label_sets``, e.g. ``[("geometric", 3)]``, read from the record's
    ``<name>_sem_seg_file_name`` and ``<name>_label_map``) are transformed with the
    mask and stacked after it: ``"sem_seg"`` is then ``(1 + len(label_sets), H, W)``.
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
        inputs: Sequence[str] = ("image",),
        label_sets: Sequence[Tuple[str, int]] = (),
    ) -> None:
        self.inputs = [str(n) for n in inputs]
        self.label_sets = [(str(n), int(k)) for n, k in label_sets]
        if not self.inputs or len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"INPUT.MODALITIES must name distinct inputs, got {self.inputs}.")
        if len(self.inputs) > 1 and pixel_mean is not None:
            pixel_mean = list(pixel_mean)[:3]  # transforms pad every input with the first input's mean
        targets = {n: "image" for n in self.inputs[1:]}
        targets.update({f"mask_{n}": "mask" for n, _ in self.label_sets})
        self.image_format = str(image_format).upper()  # the weights' order; images stay RGB here
        self.ignore_value = int(ignore_value)
        self.num_classes = int(num_classes)
        self.classes_per_dataset = dict(classes_per_dataset or {})
        mean_rgb = rgb_pixel_mean(pixel_mean, self.image_format) if pixel_mean is not None else None
        self.pipeline = build_transforms(list(transforms), self.ignore_value, mean_rgb,
                                         additional_targets=targets or None) if transforms else None

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
            inputs=cfg.INPUT.MODALITIES,
            label_sets=[(s["NAME"], s["NUM_CLASSES"]) for s in cfg.MODEL.MULTI_TASK.EXTRA_LABEL_SETS],
        )

    def prepare_image(self, image: np.ndarray, where: str = "image") -> np.ndarray:
        """Test-time preparation of one RGB image without a mask: the configured transforms.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            where: how to name the image in errors.

        Returns:
            ``(H, W, 3)`` uint8 RGB, contiguous (possibly resized by the transforms).
        """
        return self.prepare_inputs(image, {}, where)[0]

    def prepare_inputs(self, image: np.ndarray, extras: Mapping[str, np.ndarray],
                       where: str = "image") -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """:meth:`prepare_image` for a model reading several inputs (``INPUT.MODALITIES``).

        Args:
            image: ``(H, W, 3)`` uint8 RGB, the first input.
            extras: the other inputs by name, ``(H, W, 3)`` uint8 each, moved with the
                same geometry as ``image`` (never channel-swapped).
            where: how to name the image in errors.

        Returns:
            ``(image, extras)``, contiguous.
        """
        extras = {n: np.ascontiguousarray(v) for n, v in extras.items()}
        if self.pipeline is not None:
            res = self.pipeline(image=np.ascontiguousarray(image), **extras)
            image = res["image"]
            _check_uint8(image, where)
            extras = {n: np.ascontiguousarray(res[n]) for n in extras}
        return np.ascontiguousarray(image), extras

    def read(self, record: Mapping[str, Any]):
        """Read and validate one record: ((H, W, 3) uint8 RGB image, (H, W) label mask)."""
        image = read_image(record["file_name"], "RGB")
        mask = self._read_main_mask(record, image.shape[:2], record["file_name"])
        return image, mask

    def _read_main_mask(self, record: Mapping[str, Any], size, source: str) -> np.ndarray:
        """The record's mask in train ids, checked against ``size`` (H, W) of ``source`` and the class count."""
        mask_path = record["sem_seg_file_name"]
        mask = read_mask(mask_path)
        if mask.ndim == 3:
            if "mask_colors" not in record:
                raise DataError(f"{mask_path}: mask is a colour image but the dataset defines no palette "
                                "(index or palette-PNG masks are expected).")
            mask = rgb_to_index(mask, record["mask_colors"], self.ignore_value,
                                record.get("mask_ignore_colors", ()), mask_path)
        mask = apply_label_map(mask, record.get("label_map"), mask_path)
        if mask.shape != tuple(size):
            raise DataError(
                f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image "
                f"{source} ({size[1]}x{size[0]})."
            )
        k = self.classes_per_dataset.get(record.get("dataset_name"), self.num_classes)
        check_labels(mask, k, self.ignore_value, mask_path)
        return mask

    def __call__(self, record: Mapping[str, Any], seed: Optional[int] = None) -> Dict[str, Any]:
        """Map one record. ``seed`` makes random transforms a pure function of it."""
        if self.inputs != ["image"] or self.label_sets:
            return self._map_multi(record, seed)
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

    def _read_label_set(self, record: Mapping[str, Any], name: str, k: int, shape) -> np.ndarray:
        key = f"{name}_sem_seg_file_name"
        if key not in record:
            raise DataError(f"{record.get('file_name')}: the config asks for label set '{name}' "
                            f"(MODEL.MULTI_TASK.EXTRA_LABEL_SETS) but the record has no '{key}'.")
        path = record[key]
        mask = apply_label_map(read_mask(path), record.get(f"{name}_label_map"), path)
        if mask.ndim != 2 or mask.shape != shape:
            raise DataError(f"{path}: label set '{name}' has shape {mask.shape}, its image {record['file_name']} "
                            f"is {shape} (HxW).")
        check_labels(mask, k, self.ignore_value, path)
        return mask

    def _read_multi(self, record: Mapping[str, Any]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """Every input ``(H, W, 3)`` uint8 (``self.inputs`` order) and every mask (main first), validated."""
        arrays = {name: read_input(record, name) for name in self.inputs}
        for name, arr in arrays.items():
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise DataError(f"{record.get('file_name')}: input '{name}' is {arr.dtype} {arr.shape}; "
                                "every input must be H x W x 3 uint8.")
        first = self.inputs[0]
        size = arrays[first].shape[:2]
        for name, arr in arrays.items():
            if arr.shape[:2] != size:
                raise DataError(f"{record.get('file_name')}: input '{name}' is {arr.shape[1]}x{arr.shape[0]} (WxH), "
                                f"input '{first}' {size[1]}x{size[0]}.")
        mask = self._read_main_mask(record, size, f"{record.get('file_name')} (input '{first}')")
        masks = [mask] + [self._read_label_set(record, n, k, mask.shape) for n, k in self.label_sets]
        return [arrays[n] for n in self.inputs], masks

    def _map_multi(self, record: Mapping[str, Any], seed: Optional[int]) -> Dict[str, Any]:
        inputs, masks = self._read_multi(record)
        out_record = dict(record, height=masks[0].shape[0], width=masks[0].shape[1])
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed & 0xFFFFFFFF)
        if self.pipeline is not None:
            if seed is not None:
                seed_transforms(self.pipeline, seed)
            data = {"image": inputs[0], "mask": masks[0]}
            data.update({n: a for n, a in zip(self.inputs[1:], inputs[1:])})
            data.update({f"mask_{n}": m for (n, _), m in zip(self.label_sets, masks[1:])})
            res = self.pipeline(**data)
            inputs = [res["image"]] + [res[n] for n in self.inputs[1:]]
            masks = [res["mask"]] + [res[f"mask_{n}"] for n, _ in self.label_sets]
            if any(a.dtype != np.uint8 for a in inputs):
                raise ValueError("The input transforms turned an input into a non-uint8 array; they must keep uint8.")
        stacked = np.concatenate(inputs, axis=2)
        seg = masks[0] if not self.label_sets else np.stack(masks)
        dtype = np.uint8 if self.ignore_value <= 255 and all(m.dtype == np.uint8 for m in masks) else np.int64
        return {
            "image": torch.from_numpy(np.ascontiguousarray(stacked)).permute(2, 0, 1),
            "sem_seg": torch.from_numpy(np.ascontiguousarray(seg, dtype=dtype)),
            "record": out_record,
        }
