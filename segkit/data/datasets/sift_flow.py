"""SIFT Flow (Liu, Yuen, Torralba, CVPR 2009): 2,688 outdoor scenes, 33 semantic and 3 geometric classes.

On-disk layout (the LabelMe distribution ``SiftFlowDataset.zip`` with FCN's split lists,
the one FCN's ``siftflow_layers.py`` reads)::

    {root}/sift-flow/Images/spatial_envelope_256x256_static_8outdoorcategories/{id}.jpg
    {root}/sift-flow/SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/{id}.mat   S: 0..33
    {root}/sift-flow/GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/{id}.mat        S: -1..3
    {root}/sift-flow/{trainval,test}.txt      ids (coast_arnat59, ...), 2,488 / 200

In both label files 0 (and -1 in GeoLabels) is unlabelled and ignored; class
``k`` becomes train id ``k - 1``. ``sift_flow_{trainval,test}`` yield the semantic
labels as ``sem_seg`` and the geometric ones (sky, horizontal, vertical) as the
extra label set ``geometric`` (``geometric_sem_seg_file_name``), which a
two-headed model reads through ``MODEL.MULTI_TASK`` (FCN sec. 5 "SIFT Flow").
"""
from __future__ import annotations

import os
from typing import List

import numpy as np

from segkit.data.catalog import DataError, register_semseg
from segkit.data.datasets import nyudv2  # noqa: F401  (registers the "shift_zero_ignored" label map)
from segkit.data.datasets.voc import read_split_list

__all__ = ["SIFT_FLOW_CLASSES", "SIFT_FLOW_GEO_CLASSES", "load_sift_flow"]

SIFT_FLOW_CLASSES = [
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk", "desert", "door",
    "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole", "river", "road", "rock", "sand", "sea",
    "sidewalk", "sign", "sky", "staircase", "streetlight", "sun", "tree", "window",
]
SIFT_FLOW_GEO_CLASSES = ["sky", "horizontal", "vertical"]
SIFT_FLOW_COLORS = [tuple(int(c) for c in row) for row in np.random.default_rng(33).integers(0, 256, (33, 3))]
SIFT_FLOW_GEO_COLORS = [(70, 130, 180), (128, 64, 128), (220, 220, 0)]

_SUB = "spatial_envelope_256x256_static_8outdoorcategories"


def _sift_flow_dir(root: str) -> str:
    for cand in (os.path.join(root, "sift-flow"), os.path.join(root, "SiftFlow"), root):
        if os.path.isdir(os.path.join(cand, "SemanticLabels")) and os.path.isdir(os.path.join(cand, "Images")):
            return cand
    raise DataError(f"{root}: no SIFT Flow found (looked for sift-flow/Images and sift-flow/SemanticLabels). "
                    "Set DATASETS.ROOT or $SEGKIT_DATASETS to the folder holding sift-flow/.")


def load_sift_flow(sift_dir: str, split: str) -> List[dict]:
    """Records of ``trainval`` or ``test``; every image is 256 x 256."""
    ids = read_split_list(os.path.join(sift_dir, f"{split}.txt"))
    return [{
        "file_name": os.path.join(sift_dir, "Images", _SUB, f"{i}.jpg"),
        "sem_seg_file_name": os.path.join(sift_dir, "SemanticLabels", _SUB, f"{i}.mat"),
        "geometric_sem_seg_file_name": os.path.join(sift_dir, "GeoLabels", _SUB, f"{i}.mat"),
        "label_map": "shift_zero_ignored", "geometric_label_map": "shift_zero_ignored",
        "height": 256, "width": 256, "image_id": i,
    } for i in ids]


for _split in ("trainval", "test"):
    register_semseg(f"sift_flow_{_split}", lambda root, s=_split: load_sift_flow(_sift_flow_dir(root), s),
                    SIFT_FLOW_CLASSES, SIFT_FLOW_COLORS, 255,
                    label_sets={"geometric": list(SIFT_FLOW_GEO_CLASSES)},
                    label_set_colors={"geometric": list(SIFT_FLOW_GEO_COLORS)})
