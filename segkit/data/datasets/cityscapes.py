"""Cityscapes fine annotations, 19 evaluation classes.

On-disk layout (as distributed in ``leftImg8bit_trainvaltest.zip`` / ``gtFine_trainvaltest.zip``)::

    {root}/cityscapes/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    {root}/cityscapes/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

The ``labelIds`` masks hold the 34 Cityscapes label ids; the 19 classes used
for training and evaluation (Cordts et al., CVPR 2016, sec. 3) are mapped to
train ids 0..18 and every other id (void, rare classes) to the ignore label,
at load time through a look-up table, so no ``*_labelTrainIds.png`` files need
to be generated beforehand.
"""
from __future__ import annotations

import glob
import os
from typing import List

import numpy as np

from segkit.data.catalog import DataError, register_semseg
from segkit.data.datasets.voc import image_size
from segkit.data.io import register_label_map

__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_COLORS", "CITYSCAPES_LABEL_TO_TRAIN", "load_cityscapes"]

# (label id, name, colour) of the 19 train classes, in train-id order.
_TRAIN_CLASSES = [
    (7, "road", (128, 64, 128)), (8, "sidewalk", (244, 35, 232)), (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)), (13, "fence", (190, 153, 153)), (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)), (20, "traffic sign", (220, 220, 0)), (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)), (23, "sky", (70, 130, 180)), (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)), (26, "car", (0, 0, 142)), (27, "truck", (0, 0, 70)), (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)), (32, "motorcycle", (0, 0, 230)), (33, "bicycle", (119, 11, 32)),
]
CITYSCAPES_CLASSES = [name for _, name, _ in _TRAIN_CLASSES]
CITYSCAPES_COLORS = [color for _, _, color in _TRAIN_CLASSES]
CITYSCAPES_LABEL_TO_TRAIN = np.full(256, 255, dtype=np.int64)
for _train_id, (_label_id, _, _) in enumerate(_TRAIN_CLASSES):
    CITYSCAPES_LABEL_TO_TRAIN[_label_id] = _train_id
register_label_map("cityscapes_label_ids", CITYSCAPES_LABEL_TO_TRAIN)

_IMAGE_SUFFIX = "_leftImg8bit.png"


def _cityscapes_dir(root: str) -> str:
    for cand in (os.path.join(root, "cityscapes"), root):
        if os.path.isdir(os.path.join(cand, "leftImg8bit")):
            return cand
    raise DataError(f"{root}: no Cityscapes found (looked for cityscapes/leftImg8bit). "
                    "Set DATASETS.ROOT or $SEGKIT_DATASETS to the folder holding cityscapes/.")


def load_cityscapes(city_dir: str, split: str) -> List[dict]:
    """Records of one split, sorted by file name; masks are ``*_gtFine_labelIds.png``."""
    image_dir = os.path.join(city_dir, "leftImg8bit", split)
    if not os.path.isdir(image_dir):
        raise DataError(f"{image_dir}: Cityscapes split folder not found.")
    records = []
    for img in sorted(glob.glob(os.path.join(image_dir, "*", "*" + _IMAGE_SUFFIX))):
        city = os.path.basename(os.path.dirname(img))
        stem = os.path.basename(img)[: -len(_IMAGE_SUFFIX)]
        mask = os.path.join(city_dir, "gtFine", split, city, f"{stem}_gtFine_labelIds.png")
        h, w = image_size(img)
        records.append({"file_name": img, "sem_seg_file_name": mask, "height": h, "width": w,
                        "image_id": stem, "label_map": "cityscapes_label_ids"})
    return records


for _split in ("train", "val", "test"):
    register_semseg(f"cityscapes_fine_{_split}", lambda root, s=_split: load_cityscapes(_cityscapes_dir(root), s),
                    CITYSCAPES_CLASSES, CITYSCAPES_COLORS, 255)
