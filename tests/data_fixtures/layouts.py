"""Write tiny datasets in the exact on-disk layouts of the real ones (for tests and benchmarks)."""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np
import scipy.io
from PIL import Image

from segkit.data.datasets.voc import voc_palette

_PALETTE = bytes(c for rgb in voc_palette(256) for c in rgb)


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB with smooth structure (JPEG-friendly)."""
    low = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)


def blob_mask(rng: np.random.Generator, h: int, w: int, labels: Sequence[int], border: Optional[int] = None) -> np.ndarray:
    """(H, W) uint8 mask made of rectangles of ``labels`` (first label fills the canvas)."""
    mask = np.full((h, w), labels[0], np.uint8)
    for lab in labels[1:]:
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        mask[y0:y0 + h // 3 + 1, x0:x0 + w // 3 + 1] = lab
    if border is not None:  # VOC draws a 255 band around objects
        edges = cv2.Canny(mask, 0, 0) > 0
        mask[edges] = border
    return mask


def write_jpg(path: str, image_rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, image_rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def write_png_rgb(path: str, image_rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, image_rgb[:, :, ::-1])


def write_palette_png(path: str, mask: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
    im.putpalette(_PALETTE)
    im.save(path)


def write_grey_png(path: str, mask: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)


def write_sbd_mat(path: str, mask: np.ndarray) -> None:
    """SBD's ``cls/*.mat``: struct GTcls with Segmentation, Boundaries, CategoriesPresent."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    present = np.array([c for c in np.unique(mask) if 0 < c < 255], dtype=np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": mask.astype(np.uint8),
                                      "Boundaries": np.zeros((20, 1), dtype=object) + 0,
                                      "CategoriesPresent": present}})


def write_voc(root: str, splits: Dict[str, Sequence[str]], size=(20, 24), seed: int = 0,
              labels=(0, 1, 15)) -> Dict[str, np.ndarray]:
    """``root/VOCdevkit/VOC2012`` with JPEGImages, SegmentationClass, ImageSets/Segmentation."""
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    masks = {}
    ids = sorted({i for v in splits.values() for i in v})
    for i in ids:
        h, w = size
        write_jpg(os.path.join(voc, "JPEGImages", f"{i}.jpg"), random_image(rng, h, w))
        masks[i] = blob_mask(rng, h, w, labels, border=255)
        write_palette_png(os.path.join(voc, "SegmentationClass", f"{i}.png"), masks[i])
    write_split_lists(os.path.join(voc, "ImageSets", "Segmentation"), splits)
    return masks


def write_split_lists(folder: str, splits: Dict[str, Iterable[str]]) -> None:
    os.makedirs(folder, exist_ok=True)
    for name, ids in splits.items():
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.write("".join(f"{i}\n" for i in ids))


def write_sbd(root: str, splits: Dict[str, Sequence[str]], size=(20, 24), seed: int = 1) -> Dict[str, np.ndarray]:
    """``root/SBD/dataset`` with img/, cls/*.mat, train.txt, val.txt."""
    rng = np.random.default_rng(seed)
    ds = os.path.join(root, "SBD", "dataset")
    masks = {}
    for i in sorted({i for v in splits.values() for i in v}):
        write_jpg(os.path.join(ds, "img", f"{i}.jpg"), random_image(rng, *size))
        masks[i] = blob_mask(rng, *size, labels=(0, 7, 12))
        write_sbd_mat(os.path.join(ds, "cls", f"{i}.mat"), masks[i])
    for name, ids in splits.items():
        with open(os.path.join(ds, f"{name}.txt"), "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
    return masks


def write_cityscapes(root: str, split: str, items: Dict[str, List[str]], size=(16, 32), seed: int = 2,
                     label_ids=(7, 26, 0, 33, 5)) -> Dict[str, np.ndarray]:
    """``root/cityscapes/{leftImg8bit,gtFine}/{split}/{city}/...`` with labelIds masks."""
    rng = np.random.default_rng(seed)
    masks = {}
    for city, stems in items.items():
        for stem in stems:
            write_png_rgb(os.path.join(root, "cityscapes", "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"),
                          random_image(rng, *size))
            masks[stem] = blob_mask(rng, *size, labels=label_ids)
            write_grey_png(os.path.join(root, "cityscapes", "gtFine", split, city, f"{stem}_gtFine_labelIds.png"),
                           masks[stem])
            write_grey_png(os.path.join(root, "cityscapes", "gtFine", split, city, f"{stem}_gtFine_instanceIds.png"),
                           masks[stem])
    return masks


def write_ade20k(root: str, folder: str, stems: Sequence[str], size=(18, 22), seed: int = 3,
                 labels=(0, 1, 150)) -> Dict[str, np.ndarray]:
    """``root/ADEChallengeData2016/{images,annotations}/{folder}/``."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "ADEChallengeData2016")
    masks = {}
    for stem in stems:
        write_jpg(os.path.join(base, "images", folder, f"{stem}.jpg"), random_image(rng, *size))
        masks[stem] = blob_mask(rng, *size, labels=labels)
        write_grey_png(os.path.join(base, "annotations", folder, f"{stem}.png"), masks[stem])
    return masks


def write_nyud(root: str, splits: Dict[str, Sequence[str]], size=(24, 32), seed: int = 4,
               labels=(0, 1, 2, 40)) -> Dict[str, Dict[str, np.ndarray]]:
    """``root/nyud`` as Gupta et al. release it: data/images, data/depth (uint16 mm), segmentation/*.mat, splits."""
    rng = np.random.default_rng(seed)
    nyud = os.path.join(root, "nyud")
    out = {}
    h, w = size
    for i in sorted({i for v in splits.values() for i in v}):
        image = random_image(rng, h, w)
        write_png_rgb(os.path.join(nyud, "data", "images", f"img_{i}.png"), image)
        # A floor seen from above and ahead: depth grows towards the top of the image; a few holes.
        depth_mm = (1500 + 40 * (h - np.arange(h))[:, None] + np.zeros((1, w))).astype(np.uint16)
        depth_mm[0, :3] = 0
        os.makedirs(os.path.join(nyud, "data", "depth"), exist_ok=True)
        cv2.imwrite(os.path.join(nyud, "data", "depth", f"img_{i}.png"), depth_mm)
        mask = blob_mask(rng, h, w, labels)
        os.makedirs(os.path.join(nyud, "segmentation"), exist_ok=True)
        scipy.io.savemat(os.path.join(nyud, "segmentation", f"img_{i}.mat"), {"segmentation": mask})
        out[i] = {"image": image, "depth_mm": depth_mm, "mask": mask}
    for name, ids in splits.items():
        with open(os.path.join(nyud, f"{name}.txt"), "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
    return out


def write_sift_flow(root: str, splits: Dict[str, Sequence[str]], seed: int = 5, size=(256, 256),
                    labels=(0, 1, 17, 28, 33), geo=(-1, 0, 1, 2, 3)) -> Dict[str, Dict[str, np.ndarray]]:
    """``root/sift-flow`` as the LabelMe SiftFlowDataset.zip plus FCN's split lists (int16 ``S`` arrays)."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "sift-flow")
    sub = "spatial_envelope_256x256_static_8outdoorcategories"
    out = {}
    h, w = size
    for i in sorted({i for v in splits.values() for i in v}):
        write_jpg(os.path.join(base, "Images", sub, f"{i}.jpg"), random_image(rng, h, w))
        sem = blob_mask(rng, h, w, labels).astype(np.int16)
        g = blob_mask(rng, h, w, [v + 1 for v in geo]).astype(np.int16) - 1
        for folder, arr in (("SemanticLabels", sem), ("GeoLabels", g)):
            os.makedirs(os.path.join(base, folder, sub), exist_ok=True)
            scipy.io.savemat(os.path.join(base, folder, sub, f"{i}.mat"), {"S": arr})
        out[i] = {"semantic": sem, "geometric": g}
    for name, ids in splits.items():
        with open(os.path.join(base, f"{name}.txt"), "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
    return out


def write_pascal_context(root: str, splits: Dict[str, Sequence[str]], size=(20, 26), seed: int = 6,
                         labels=(0, 1, 37, 59)) -> Dict[str, np.ndarray]:
    """``root/VOCdevkit/VOC2010`` with JPEGImages, SegmentationClassContext (grey PNG, 0..59), ImageSets/SegmentationContext."""
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    masks = {}
    for i in sorted({i for v in splits.values() for i in v}):
        write_jpg(os.path.join(voc, "JPEGImages", f"{i}.jpg"), random_image(rng, *size))
        masks[i] = blob_mask(rng, *size, labels=labels)
        write_grey_png(os.path.join(voc, "SegmentationClassContext", f"{i}.png"), masks[i])
    write_split_lists(os.path.join(voc, "ImageSets", "SegmentationContext"), splits)
    return masks
