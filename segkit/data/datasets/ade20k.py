"""ADE20K SceneParsing (the MIT Scene Parsing Benchmark, 150 classes).

On-disk layout (``ADEChallengeData2016.zip``)::

    {root}/ADEChallengeData2016/images/{training,validation}/ADE_*_########.jpg
    {root}/ADEChallengeData2016/annotations/{training,validation}/ADE_*_########.png

Annotation value 0 means "other / unlabelled" and is ignored; class ``k``
(1..150) becomes train id ``k - 1`` (Zhou et al., CVPR 2017, sec. 4.1: the
benchmark evaluates the 150 classes, excluding unlabelled pixels).
"""
from __future__ import annotations

import glob
import os
from typing import List

import numpy as np

from segkit.data.catalog import DataError, register_semseg
from segkit.data.datasets.voc import image_size
from segkit.data.io import register_label_map

__all__ = ["ADE20K_CLASSES", "ADE20K_COLORS", "load_ade20k"]

ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
]
# A fixed, well-spread palette for visualisation (the benchmark ships colours only in a .mat file).
ADE20K_COLORS = [tuple(int(c) for c in row) for row in np.random.default_rng(150).integers(0, 256, (150, 3))]

_SHIFT = np.arange(256, dtype=np.int64) - 1
_SHIFT[0] = 255  # "other" -> ignore
register_label_map("ade20k_shift", _SHIFT)

_SPLITS = {"train": "training", "val": "validation"}


def _ade_dir(root: str) -> str:
    for cand in (os.path.join(root, "ADEChallengeData2016"), root):
        if os.path.isdir(os.path.join(cand, "images")) and os.path.isdir(os.path.join(cand, "annotations")):
            return cand
    raise DataError(f"{root}: no ADE20K found (looked for ADEChallengeData2016/images and annotations).")


def load_ade20k(ade_dir: str, split: str) -> List[dict]:
    """Records of ``training`` or ``validation`` (``split`` may also be ``train``/``val``)."""
    folder = _SPLITS.get(split, split)
    image_dir = os.path.join(ade_dir, "images", folder)
    if not os.path.isdir(image_dir):
        raise DataError(f"{image_dir}: ADE20K split folder not found.")
    records = []
    for img in sorted(glob.glob(os.path.join(image_dir, "*.jpg"))):
        stem = os.path.splitext(os.path.basename(img))[0]
        h, w = image_size(img)
        records.append({"file_name": img, "sem_seg_file_name": os.path.join(ade_dir, "annotations", folder, stem + ".png"),
                        "height": h, "width": w, "image_id": stem, "label_map": "ade20k_shift"})
    return records


for _split in ("train", "val"):
    register_semseg(f"ade20k_sem_seg_{_split}", lambda root, s=_split: load_ade20k(_ade_dir(root), s),
                    ADE20K_CLASSES, ADE20K_COLORS, 255)
