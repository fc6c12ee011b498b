"""PASCAL VOC 2012 segmentation and the SBD augmented set.

On-disk layout (as distributed)::

    {root}/VOCdevkit/VOC2012/JPEGImages/{id}.jpg
    {root}/VOCdevkit/VOC2012/SegmentationClass/{id}.png     palette PNG, 255 = ignore
    {root}/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    {root}/SBD/dataset/{img/{id}.jpg, cls/{id}.mat, train.txt, val.txt}
        (``benchmark_RELEASE/dataset`` as extracted from the SBD tarball works too)

``voc_2012_train_aug`` is the set DeepLab trains on (Chen et al. 2016, sec. 4.1:
"augmented by the extra annotations of Hariharan et al."): SBD train + SBD val +
VOC train, minus every VOC val image; 10,582 images in the real data.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from PIL import Image

from segkit.data.catalog import DataError, register_semseg
from segkit.utils.visualize import default_palette

__all__ = ["VOC_CLASSES", "voc_palette", "load_voc_semseg", "load_sbd", "load_voc_train_aug", "read_split_list", "image_size"]

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]


def voc_palette(n: int = 256) -> List[tuple]:
    """The VOC colour map (:func:`segkit.utils.visualize.default_palette`)."""
    return default_palette(n)


def read_split_list(path: str) -> List[str]:
    """Image ids, one per line (blank lines skipped)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: split list not found.")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: split list is not valid UTF-8 (byte {raw[exc.start:exc.start + 1]!r} on line "
                        f"{line}); save it as UTF-8.") from exc
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: split list is empty.")
    return ids


def image_size(path: str) -> tuple:
    """``(height, width)`` from the image header, or ``(None, None)`` if it cannot be read.

    The mapper reports unreadable files with their path when it loads them, so
    that ``DATASETS.SKIP_BAD_RECORDS`` can skip them instead.
    """
    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except (OSError, SyntaxError, ValueError):
        return None, None


def _record(image_id: str, file_name: str, mask: str, size: Optional[tuple] = None) -> dict:
    h, w = size if size is not None else image_size(file_name)
    return {"file_name": file_name, "sem_seg_file_name": mask, "height": h, "width": w, "image_id": image_id}


def find_voc_dir(root: str, year: str = "2012", image_sets: str = "Segmentation", what: str = "PASCAL VOC 2012",
                 hint: str = "Set DATASETS.ROOT or $SEGKIT_DATASETS to the folder holding VOCdevkit/.") -> str:
    """The ``VOC<year>`` folder under ``root`` (``VOCdevkit/VOC<year>``, ``VOC<year>`` or ``root``
    itself) that holds ``ImageSets/<image_sets>``; a :class:`DataError` naming ``what`` otherwise."""
    for cand in (os.path.join(root, "VOCdevkit", f"VOC{year}"), os.path.join(root, f"VOC{year}"), root):
        if os.path.isdir(os.path.join(cand, "ImageSets", image_sets)):
            return cand
    raise DataError(f"{root}: no {what} found (looked for VOCdevkit/VOC{year}/ImageSets/{image_sets}). {hint}")


def _voc_dir(root: str) -> str:
    return find_voc_dir(root)


def load_voc_semseg(voc_dir: str, split: str, image_ext: str = ".jpg", size: Optional[tuple] = None) -> List[dict]:
    """Records of a VOC-layout folder (``voc_dir`` holds ``JPEGImages/`` etc.).

    Args:
        size: ``(height, width)`` shared by every image, when known (generated data);
            otherwise each image header is read.
    """
    ids = read_split_list(os.path.join(voc_dir, "ImageSets", "Segmentation", f"{split}.txt"))
    return [
        _record(i, os.path.join(voc_dir, "JPEGImages", i + image_ext),
                os.path.join(voc_dir, "SegmentationClass", i + ".png"), size)
        for i in ids
    ]


def _sbd_dir(root: str) -> str:
    for cand in (os.path.join(root, "SBD", "dataset"), os.path.join(root, "benchmark_RELEASE", "dataset"),
                 os.path.join(root, "SBD")):
        if os.path.isdir(os.path.join(cand, "cls")):
            return cand
    raise DataError(f"{root}: no SBD found (looked for SBD/dataset/cls and benchmark_RELEASE/dataset/cls).")


def load_sbd(sbd_dir: str, split: str) -> List[dict]:
    """Records of the SBD set (``cls/*.mat`` masks read with scipy)."""
    ids = read_split_list(os.path.join(sbd_dir, f"{split}.txt"))
    return [_record(i, os.path.join(sbd_dir, "img", i + ".jpg"), os.path.join(sbd_dir, "cls", i + ".mat")) for i in ids]


def load_voc_train_aug(root: str) -> List[dict]:
    """SBD train+val plus VOC train minus VOC val, VOC annotations preferred where both exist."""
    voc, sbd = _voc_dir(root), _sbd_dir(root)
    val = set(read_split_list(os.path.join(voc, "ImageSets", "Segmentation", "val.txt")))
    voc_train = read_split_list(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"))
    sbd_ids = read_split_list(os.path.join(sbd, "train.txt")) + read_split_list(os.path.join(sbd, "val.txt"))
    masks: Dict[str, str] = {i: os.path.join(sbd, "cls", i + ".mat") for i in sbd_ids}
    masks.update({i: os.path.join(voc, "SegmentationClass", i + ".png") for i in voc_train})
    records = []
    for i in sorted(k for k in masks if k not in val):
        img = os.path.join(voc, "JPEGImages", i + ".jpg")
        if not os.path.isfile(img):
            img = os.path.join(sbd, "img", i + ".jpg")
        records.append(_record(i, img, masks[i]))
    return records


def _register_all() -> None:
    colors = voc_palette(len(VOC_CLASSES))
    for split in ("train", "val", "trainval"):
        register_semseg(f"voc_2012_{split}", lambda root, s=split: load_voc_semseg(_voc_dir(root), s),
                        VOC_CLASSES, colors, 255)
    register_semseg("voc_2012_train_aug", load_voc_train_aug, VOC_CLASSES, colors, 255)
    for split in ("train", "val"):
        register_semseg(f"sbd_{split}", lambda root, s=split: load_sbd(_sbd_dir(root), s), VOC_CLASSES, colors, 255)


_register_all()
