"""DATASET_REGISTRY: records pointing to images and masks, and the metadata that names the classes."""
import os
from typing import List

import numpy as np
from PIL import Image

from segkit.data import DatasetCatalog, MetadataCatalog

CLASSES = ["background", "square"]


def load_squares(root: str) -> List[dict]:
    """Records of ``<root>/squares/{images,masks}/*.png`` (``file_name``, ``sem_seg_file_name``, size)."""
    folder = os.path.join(root, "squares")
    records = []
    for i, name in enumerate(sorted(os.listdir(os.path.join(folder, "images")))):
        image = os.path.join(folder, "images", name)
        width, height = Image.open(image).size
        records.append({"file_name": image, "sem_seg_file_name": os.path.join(folder, "masks", name),
                        "height": height, "width": width, "image_id": i})
    return records


def make_squares(root: str, count: int = 4, size: int = 32) -> None:
    """Write ``count`` images with one bright square each, and their masks (255 = ignore border)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, "squares", sub), exist_ok=True)
    for i in range(count):
        y, x = rng.integers(0, size // 2, 2)
        image = np.full((size, size, 3), 40, np.uint8)
        image[y:y + size // 2, x:x + size // 2] = 220
        mask = (image[..., 0] > 128).astype(np.uint8)
        mask[0] = 255
        Image.fromarray(image).save(os.path.join(root, "squares", "images", f"{i}.png"))
        Image.fromarray(mask).save(os.path.join(root, "squares", "masks", f"{i}.png"))


DatasetCatalog.register("squares_train", load_squares)
MetadataCatalog.get("squares_train").set(stuff_classes=CLASSES, stuff_colors=[(0, 0, 0), (255, 0, 0)],
                                         ignore_label=255)
