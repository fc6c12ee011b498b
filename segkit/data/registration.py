"""Dataset set-up of a run: register the config's datasets and check its class list, once.

Every entry point (training, ``--eval-only``, the tools, :class:`segkit.Predictor`,
export) calls :func:`setup_datasets` right after loading the config:

1. the built-in FashionScenes datasets follow ``DATASETS.FASHION_SCENES``, and every
   ``DATASETS.FOLDER_DATASETS`` description is registered (so that its class names
   and colours are known to every consumer, not only to the training loader);
2. the class list of each dataset named in ``DATASETS.TRAIN`` / ``DATASETS.TEST`` is
   checked against ``MODEL.NUM_CLASSES``: a disagreement is an error naming both,
   unless ``DATASETS.ALLOW_NUM_CLASSES_MISMATCH`` is set (a deliberate override, for
   example training a 21-class head on a dataset that uses fewer labels).

The class names and colours a run shows come from :func:`dataset_classes`.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

from segkit.data.catalog import MetadataCatalog
from segkit.data.datasets.fashion_scenes import configure_from_cfg
from segkit.data.datasets.folder import register_folder_dataset

__all__ = ["setup_datasets", "register_datasets", "check_num_classes", "dataset_classes"]

logger = logging.getLogger(__name__)


def register_datasets(cfg) -> List[str]:
    """Register the datasets a config describes; returns the folder-dataset names registered.

    Idempotent: registering the same description again is a no-op.
    """
    configure_from_cfg(cfg)
    names: List[str] = []
    for description in cfg.DATASETS.FOLDER_DATASETS:
        names.extend(register_folder_dataset(description))
    return names


def _named_datasets(cfg) -> List[str]:
    seen: List[str] = []
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in seen:
            seen.append(name)
    return seen


def check_num_classes(cfg) -> None:
    """Raise ``ValueError`` when a named dataset's class count differs from ``MODEL.NUM_CLASSES``.

    Datasets without a class list (or not registered) are not checked. With
    ``DATASETS.ALLOW_NUM_CLASSES_MISMATCH`` the disagreement is logged instead.
    """
    k = int(cfg.MODEL.NUM_CLASSES)
    for name in _named_datasets(cfg):
        classes = MetadataCatalog.get(name).get("stuff_classes")
        if not classes or len(classes) == k:
            continue
        msg = (f"Dataset '{name}' has {len(classes)} classes but MODEL.NUM_CLASSES is {k}. "
               f"Set MODEL.NUM_CLASSES {len(classes)}, or DATASETS.ALLOW_NUM_CLASSES_MISMATCH True if the "
               "difference is deliberate.")
        if not bool(cfg.DATASETS.get("ALLOW_NUM_CLASSES_MISMATCH", False)):
            raise ValueError(msg)
        logger.warning("%s (allowed by DATASETS.ALLOW_NUM_CLASSES_MISMATCH)", msg)


def setup_datasets(cfg) -> None:
    """:func:`register_datasets` then :func:`check_num_classes`; what every entry point calls."""
    register_datasets(cfg)
    check_num_classes(cfg)


def dataset_classes(cfg, names: Optional[Sequence[str]] = None
                    ) -> Tuple[Optional[List[str]], Optional[List[Tuple[int, int, int]]], str]:
    """Class names and colours of the first dataset (``DATASETS.TEST`` then ``TRAIN``) that has them.

    Returns:
        ``(names, colours, dataset)``; ``(None, None, "")`` when no named dataset has a
        class list, or when its class count differs from ``MODEL.NUM_CLASSES`` (only
        possible under ``DATASETS.ALLOW_NUM_CLASSES_MISMATCH``).
    """
    k = int(cfg.MODEL.NUM_CLASSES)
    for name in names if names is not None else list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        meta = MetadataCatalog.get(name)
        classes = meta.get("stuff_classes")
        if classes and len(classes) == k:
            colors = meta.get("stuff_colors")
            return list(classes), (list(colors) if colors else None), name
    return None, None, ""
