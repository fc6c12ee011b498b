"""NYU Depth v2 with the 40-class labels of Gupta et al. (ECCV 2014): RGB, depth and HHA.

On-disk layout (Gupta et al.'s release, the one FCN's ``nyud_layers.py`` reads)::

    {root}/nyud/data/images/img_{id}.png      RGB, 425 x 560 (or 480 x 640)
    {root}/nyud/data/depth/img_{id}.png       uint16 depth in millimetres, 0 = missing
    {root}/nyud/segmentation/img_{id}.mat     array ``segmentation``: 0 = unlabelled, 1..40 = classes
    {root}/nyud/{train,val,trainval,test}.txt ids (5001 ...), one per line

``nyudv2_40_trainval`` (795 images) and ``nyudv2_40_test`` (654) are the split FCN
trains and tests on (FCN sec. 5 "NYUDv2"); Gupta's ``train`` (381) and ``val``
(414) are registered too. Label 0 is ignored; class ``k`` becomes train id ``k - 1``.

Records carry ``depth_file_name``, ``camera`` (``fx, fy, cx, cy``) and
``hha_file_name``: the HHA image (:mod:`segkit.data.hha`) is computed from the
depth on first use and cached there, written atomically, in
``$SEGKIT_CACHE/nyudv2_hha/<key>/`` when ``SEGKIT_CACHE`` is set, else in
``{root}/nyud/cache/hha/<key>/`` (``key`` hashes the dataset folder, the
intrinsics and the encoding version, so a change of any of them recomputes).
A model reads it by listing ``"hha"`` in ``INPUT.MODALITIES``.
"""
from __future__ import annotations

import hashlib
import os
from typing import List, Optional, Sequence

import cv2
import numpy as np

from segkit.data.catalog import DataError, register_semseg
from segkit.data.datasets.voc import image_size, read_split_list
from segkit.data.hha import NYU_INTRINSICS, depth_to_hha
from segkit.data.io import read_image, register_input_reader, register_label_map
from segkit.utils.fileio import atomic_write

__all__ = ["NYUDV2_40_CLASSES", "NYUDV2_40_COLORS", "load_nyudv2", "read_depth", "read_hha", "nyud_camera"]

NYUDV2_40_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop",
]
NYUDV2_40_COLORS = [tuple(int(c) for c in row) for row in np.random.default_rng(40).integers(0, 256, (40, 3))]

# Stored label 0 = unlabelled -> ignore; k -> k - 1 (shared by NYUDv2 and SIFT Flow).
_SHIFT = np.arange(256, dtype=np.int64) - 1
_SHIFT[0] = 255
register_label_map("shift_zero_ignored", _SHIFT)

# Depth PNG units per metre (millimetres).
DEPTH_UNITS_PER_METRE = 1000.0
# Bumped when the HHA encoding changes, so that cached images are recomputed.
_HHA_VERSION = 1
_FULL_FRAME = (480, 640)
_SPLITS = ("train", "val", "trainval", "test")


def nyud_camera(height: int, width: int, camera: Sequence[float] = NYU_INTRINSICS) -> List[float]:
    """``(fx, fy, cx, cy)`` for an ``height`` x ``width`` frame.

    The intrinsics are those of the 640 x 480 Kinect frame; a smaller image is taken
    to be a centred crop of it (Gupta et al.'s 425 x 560 frames cut the borders the
    depth does not cover), which moves the principal point by half the size difference.
    """
    fx, fy, cx, cy = (float(v) for v in camera)
    return [fx, fy, cx - (_FULL_FRAME[1] - width) / 2.0, cy - (_FULL_FRAME[0] - height) / 2.0]


def read_depth(path: str, units_per_metre: float = DEPTH_UNITS_PER_METRE) -> np.ndarray:
    """``(H, W)`` float64 depth in metres from a 16-bit PNG (0 = missing)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: depth file not found.")
    depth = cv2.imread(path, cv2.IMREAD_ANYDEPTH)
    if depth is None or depth.ndim != 2:
        raise DataError(f"{path}: depth cannot be read as a single-channel 16-bit PNG.")
    return depth.astype(np.float64) / units_per_metre


def read_hha(record) -> np.ndarray:
    """The record's HHA image ``(H, W, 3)`` uint8, computed from its depth and cached on first use."""
    path = record["hha_file_name"]
    if os.path.isfile(path):
        return read_image(path, "RGB")
    hha = depth_to_hha(read_depth(record["depth_file_name"]), record["camera"])

    ok, png = cv2.imencode(".png", np.ascontiguousarray(hha[:, :, ::-1]))
    if not ok:
        raise DataError(f"{path}: cannot encode the HHA cache file.")
    atomic_write(path, png.tobytes())
    return hha


register_input_reader("hha", read_hha)


def _nyud_dir(root: str) -> str:
    for cand in (os.path.join(root, "nyud"), os.path.join(root, "NYUDv2"), root):
        if os.path.isdir(os.path.join(cand, "segmentation")) and os.path.isdir(os.path.join(cand, "data", "images")):
            return cand
    raise DataError(f"{root}: no NYUDv2 found (looked for nyud/segmentation and nyud/data/images). "
                    "Set DATASETS.ROOT or $SEGKIT_DATASETS to the folder holding nyud/.")


def _hha_cache_dir(nyud_dir: str, camera: Sequence[float]) -> str:
    key = hashlib.sha1(repr((os.path.abspath(nyud_dir), tuple(round(c, 4) for c in camera), _HHA_VERSION))
                       .encode()).hexdigest()[:12]
    env = os.environ.get("SEGKIT_CACHE", "")
    base = os.path.join(os.path.expanduser(env), "nyudv2_hha") if env else os.path.join(nyud_dir, "cache", "hha")
    return os.path.join(base, key)


def load_nyudv2(nyud_dir: str, split: str, camera: Optional[Sequence[float]] = None) -> List[dict]:
    """Records of one split (``train``, ``val``, ``trainval`` or ``test``)."""
    ids = read_split_list(os.path.join(nyud_dir, f"{split}.txt"))
    records = []
    for i in ids:
        img = os.path.join(nyud_dir, "data", "images", f"img_{i}.png")
        h, w = image_size(img)
        cam = nyud_camera(h or _FULL_FRAME[0], w or _FULL_FRAME[1], camera or NYU_INTRINSICS)
        records.append({
            "file_name": img, "sem_seg_file_name": os.path.join(nyud_dir, "segmentation", f"img_{i}.mat"),
            "height": h, "width": w, "image_id": str(i), "label_map": "shift_zero_ignored",
            "depth_file_name": os.path.join(nyud_dir, "data", "depth", f"img_{i}.png"),
            "camera": cam, "hha_file_name": os.path.join(_hha_cache_dir(nyud_dir, cam), f"img_{i}.png"),
        })
    return records


for _split in _SPLITS:
    register_semseg(f"nyudv2_40_{_split}", lambda root, s=_split: load_nyudv2(_nyud_dir(root), s),
                    NYUDV2_40_CLASSES, NYUDV2_40_COLORS, 255, inputs=("image", "hha"))
