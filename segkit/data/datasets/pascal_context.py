"""PASCAL-Context (Mottaghi et al., CVPR 2014): the 59 most frequent classes plus background on VOC 2010.

The annotations come as one file, ``trainval_merged.json`` of the Detail API
(all 459 classes); the common practice (MMSegmentation's
``tools/dataset_converters/pascal_context.py``, which DeepLab v2's and RefineNet's
59-class protocol matches) converts it once to one PNG per image with the 59
classes. segkit reads that converted layout::

    {root}/VOCdevkit/VOC2010/JPEGImages/{id}.jpg
    {root}/VOCdevkit/VOC2010/SegmentationClassContext/{id}.png   0 = background, 1..59 = classes
    {root}/VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt   4,998 / 5,105 ids

``pascal_context_59_{train,val}`` have 60 classes, background included (DeepLab v2
sec. 4.2 and RefineNet sec. 5 score "59 classes + background"); 255, if present, is ignored.
"""
from __future__ import annotations

import os
from typing import List

from segkit.data.catalog import register_semseg
from segkit.data.datasets.voc import _record, find_voc_dir, read_split_list, voc_palette

__all__ = ["PASCAL_CONTEXT_59_CLASSES", "load_pascal_context"]

PASCAL_CONTEXT_59_CLASSES = [
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain",
    "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light",
    "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep",
    "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor",
    "wall", "water", "window", "wood",
]


def _voc2010_dir(root: str) -> str:
    return find_voc_dir(root, "2010", "SegmentationContext", "PASCAL-Context",
                        "Convert trainval_merged.json to SegmentationClassContext/ PNGs first (docs/data.md).")


def load_pascal_context(voc2010_dir: str, split: str) -> List[dict]:
    """Records of ``train`` or ``val`` in the converted layout."""
    ids = read_split_list(os.path.join(voc2010_dir, "ImageSets", "SegmentationContext", f"{split}.txt"))
    return [_record(i, os.path.join(voc2010_dir, "JPEGImages", f"{i}.jpg"),
                    os.path.join(voc2010_dir, "SegmentationClassContext", f"{i}.png")) for i in ids]


for _split in ("train", "val"):
    register_semseg(f"pascal_context_59_{_split}", lambda root, s=_split: load_pascal_context(_voc2010_dir(root), s),
                    PASCAL_CONTEXT_59_CLASSES, voc_palette(len(PASCAL_CONTEXT_59_CLASSES)), 255)
