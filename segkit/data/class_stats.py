"""Class pixel statistics of a dataset: counts only.

The JSON written by :func:`save_class_stats` is what the losses read
(``MODEL.LOSS.CLASS_WEIGHT.STATS_FILE``)::

    {"dataset": "voc_2012_train_aug", "classes": [...], "pixel_counts": [...], "frequency": [...],
     "image_counts": [...], "pixels_where_present": [...], "num_images": 10582}

``pixels_where_present[c]`` is the number of labelled pixels of the images in which
class ``c`` occurs (what median-frequency balancing divides by). Turning counts
into class weights is the job of :mod:`segkit.modeling.losses.class_weights`, the one
place each weighting formula is written.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Optional, Sequence

import numpy as np

from segkit.data.build import get_dataset_records
from segkit.data.catalog import MetadataCatalog
from segkit.data.mapper import DatasetMapper

__all__ = ["count_pixels", "summarize_counts", "compute_class_stats", "compute_dataset_class_stats",
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


def summarize_counts(per_image: np.ndarray) -> Dict[str, list]:
    """Dataset-level counts from per-image counts ``(num_images, K)``.

    Returns:
        ``pixel_counts`` (``n_c``), ``frequency`` (``n_c / sum n``), ``image_counts``
        (images in which ``c`` occurs) and ``pixels_where_present`` (labelled pixels of
        those images), each a list of K numbers.
    """
    per_image = np.asarray(per_image, dtype=np.int64)
    counts = per_image.sum(0)
    image_totals = per_image.sum(1, keepdims=True)
    return {
        "pixel_counts": [int(c) for c in counts],
        "frequency": (counts / max(int(counts.sum()), 1)).tolist(),
        "image_counts": [int(c) for c in (per_image > 0).sum(0)],
        "pixels_where_present": [int(c) for c in ((per_image > 0) * image_totals).sum(0)],
    }


def compute_class_stats(records: Sequence[dict], classes: Sequence[str], dataset: str = "",
                        ignore_value: int = 255, workers: int = 0, progress: bool = True) -> dict:
    """Everything :func:`save_class_stats` writes, for ``records`` of a dataset with ``classes``."""
    per_image = count_pixels(records, len(classes), ignore_value, workers, progress)
    return {"dataset": dataset, "classes": list(classes), **summarize_counts(per_image),
            "num_images": int(per_image.shape[0])}


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
                                workers: int = 0, progress: bool = True) -> dict:
    """Statistics over registered datasets (default ``cfg.DATASETS.TRAIN``), written to ``output`` if given.

    This is what ``tools/dataset_stats.py`` and the trainer (``MODEL.LOSS.CLASS_WEIGHT.COMPUTE``) call,
    after :func:`segkit.data.setup_datasets` registered the config's datasets.
    """
    names = list(dataset_names or cfg.DATASETS.TRAIN)
    records = get_dataset_records(cfg, names)
    classes = MetadataCatalog.get(names[0]).get("stuff_classes")
    for n in names[1:]:
        if MetadataCatalog.get(n).get("stuff_classes") != classes:
            raise ValueError(f"Datasets {names} do not share one class list; compute their statistics separately.")
    if not classes:
        classes = [str(i) for i in range(cfg.MODEL.NUM_CLASSES)]
    stats = compute_class_stats(records, classes, "+".join(names), cfg.MODEL.IGNORE_VALUE, workers, progress)
    if output:
        save_class_stats(stats, output)
    return stats
