"""Class pixel statistics of a dataset and the class weights derived from them.

The JSON written by :func:`save_class_stats` is what the losses read
(``MODEL.LOSS.*`` class-weight keys)::

    {"dataset": "voc_2012_train_aug", "classes": [...], "pixel_counts": [...], "frequency": [...],
     "weights": {"inverse_frequency": [...], "median_frequency": [...], "effective_number": [...]},
     "beta": 0.9999, "num_images": 10582, "image_counts": [...]}

Weights of classes that never occur are 0 (they never appear in a target, so
their weight is never used; a finite value keeps the file valid JSON).
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np

from segkit.data.mapper import DatasetMapper

__all__ = ["count_pixels", "class_weights", "compute_class_stats", "compute_dataset_class_stats",
           "save_class_stats", "load_class_stats"]


def _count_one(args) -> np.ndarray:
    mapper, record, num_classes = args
    _, mask = mapper.read(record)
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=max(256, num_classes))
    return counts[:num_classes]  # the ignore label (and only it: read() validated) falls outside


def count_pixels(records: Sequence[dict], num_classes: int, ignore_value: int = 255, workers: int = 0,
                 progress: bool = True) -> np.ndarray:
    """Per-image class pixel counts, ignore label excluded.

    Args:
        records: dataset records (masks read, label-mapped and validated as in training).
        workers: processes (0 = ``os.cpu_count()``; 1 = in this process).

    Returns:
        (num_images, num_classes) int64.
    """
    from tqdm import tqdm

    mapper = DatasetMapper(ignore_value=ignore_value, num_classes=num_classes)
    jobs = [(mapper, r, num_classes) for r in records]
    workers = workers or os.cpu_count() or 1
    bar = dict(total=len(jobs), disable=not progress, desc="class pixels", unit="img")
    if workers == 1:
        rows = [_count_one(j) for j in tqdm(jobs, **bar)]
    else:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(tqdm(pool.map(_count_one, jobs, chunksize=max(1, len(jobs) // (workers * 16))), **bar))
    return np.stack(rows).astype(np.int64) if rows else np.zeros((0, num_classes), np.int64)


def _normalise(w: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.zeros_like(w, dtype=np.float64)
    out[present] = w[present] / w[present].mean()  # mean weight 1 over the classes that occur
    return out


def class_weights(per_image: np.ndarray, beta: float = 0.9999) -> Dict[str, List[float]]:
    """Weights from per-image counts ``(num_images, K)``.

    * ``inverse_frequency``: ``1 / f_c`` with ``f_c`` the class's share of labelled pixels.
    * ``median_frequency``: Eigen & Fergus (ICCV 2015, sec. 4.1): ``median(freq) / freq(c)``
      where ``freq(c)`` is class c's pixels divided by the pixels of the images in which c occurs.
    * ``effective_number``: Cui et al. (CVPR 2019, sec. 3): ``(1 - beta) / (1 - beta^n_c)``.

    All three are scaled to mean 1 over the classes that occur.
    """
    counts = per_image.sum(0).astype(np.float64)
    present = counts > 0
    total = counts.sum()
    freq = counts / max(total, 1.0)
    inv = np.where(present, 1.0 / np.where(present, freq, 1.0), 0.0)
    image_totals = per_image.sum(1, keepdims=True).astype(np.float64)
    pixels_where_present = ((per_image > 0) * image_totals).sum(0)
    freq_present = np.where(present, counts / np.where(present, pixels_where_present, 1.0), 0.0)
    median = np.median(freq_present[present]) if present.any() else 0.0
    med = np.where(present, median / np.where(present, freq_present, 1.0), 0.0)
    if not 0.0 < beta < 1.0:
        raise ValueError(f"Effective-number beta must be in (0, 1), got {beta}.")
    # 1 - beta**n as -expm1(n log beta): accurate for beta close to 1 and large n.
    effective = np.where(present, (1.0 - beta) / -np.expm1(np.maximum(counts, 1.0) * np.log(beta)), 0.0)
    return {
        "inverse_frequency": _normalise(inv, present).tolist(),
        "median_frequency": _normalise(med, present).tolist(),
        "effective_number": _normalise(effective, present).tolist(),
    }


def compute_class_stats(records: Sequence[dict], classes: Sequence[str], dataset: str = "",
                        ignore_value: int = 255, beta: float = 0.9999, workers: int = 0,
                        progress: bool = True) -> dict:
    """Everything :func:`save_class_stats` writes, for ``records`` of a dataset with ``classes``."""
    per_image = count_pixels(records, len(classes), ignore_value, workers, progress)
    counts = per_image.sum(0)
    return {
        "dataset": dataset,
        "classes": list(classes),
        "pixel_counts": [int(c) for c in counts],
        "frequency": (counts / max(int(counts.sum()), 1)).tolist(),
        "weights": class_weights(per_image, beta),
        "beta": beta,
        "num_images": int(per_image.shape[0]),
        "image_counts": [int(c) for c in (per_image > 0).sum(0)],  # images in which each class occurs
    }


def save_class_stats(stats: dict, path: str) -> str:
    """Write ``stats`` as JSON atomically; returns ``path``."""
    from segkit.utils.fileio import atomic_write

    return atomic_write(path, json.dumps(stats, indent=1))


def load_class_stats(path: str, expected_classes: Optional[int] = None) -> dict:
    """Read a stats file; with ``expected_classes``, check it matches the model's class count."""
    with open(path, "r", encoding="utf-8") as f:
        stats = json.load(f)
    if expected_classes is not None and len(stats["classes"]) != expected_classes:
        raise ValueError(f"{path}: class statistics are for {len(stats['classes'])} classes "
                         f"({stats.get('dataset')}), but the model has {expected_classes}.")
    return stats


def compute_dataset_class_stats(cfg, dataset_names: Optional[Sequence[str]] = None, output: str = "",
                                beta: Optional[float] = None, workers: int = 0, progress: bool = True) -> dict:
    """Statistics over registered datasets (default ``cfg.DATASETS.TRAIN``), written to ``output`` if given.

    This is what ``tools/dataset_stats.py`` and the trainer (``MODEL.LOSS.CLASS_WEIGHT.COMPUTE``) call.
    """
    from segkit.data.build import get_dataset_records
    from segkit.data.catalog import MetadataCatalog

    names = list(dataset_names or cfg.DATASETS.TRAIN)
    classes = MetadataCatalog.get(names[0]).get("stuff_classes")
    for n in names[1:]:
        if MetadataCatalog.get(n).get("stuff_classes") != classes:
            raise ValueError(f"Datasets {names} do not share one class list; compute their statistics separately.")
    if not classes:
        classes = [str(i) for i in range(cfg.MODEL.NUM_CLASSES)]
    if beta is None:
        beta = float(cfg.MODEL.LOSS.CLASS_WEIGHT.BETA) if "LOSS" in cfg.MODEL else 0.9999
    records = get_dataset_records(cfg, names)
    stats = compute_class_stats(records, classes, "+".join(names), cfg.MODEL.IGNORE_VALUE, beta, workers, progress)
    if output:
        save_class_stats(stats, output)
    return stats
