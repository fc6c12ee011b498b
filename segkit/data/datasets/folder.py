"""A generic folder format, so that a user's own images and masks need no code.

A small YAML (or JSON) file describes the dataset; paths are relative to it::

    name: my_parts               # datasets are registered as my_parts_<split>
    classes: [background, scratch, dent]
    palette: [[0, 0, 0], [255, 0, 0], [0, 255, 0]]   # optional; required for rgb masks
    ignore_label: 255            # optional, default 255
    mask_format: index           # index (grey or palette PNG indices) or rgb (colour-coded)
    ignore_colors: [[255, 255, 255]]   # rgb masks only: colours mapped to the ignore label
    splits:
      train: {images: images, masks: masks, list: splits/train.txt}   # list: optional stems
      val:   {images: images/val, masks: masks/val}

Images and masks are matched by file stem (``images/a.jpg`` <-> ``masks/a.png``).
Register it from Python with :func:`register_folder_dataset` or, with no code,
list the file in ``DATASETS.FOLDER_DATASETS``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from segkit.data.catalog import DataError, DatasetCatalog, MetadataCatalog, register_semseg
from segkit.data.datasets.voc import image_size, read_split_list, voc_palette

__all__ = ["load_folder", "register_folder_dataset", "read_dataset_description"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTS = (".png", ".bmp", ".tif", ".tiff")


def _by_stem(folder: str, exts: Sequence[str]) -> Dict[str, str]:
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: folder not found.")
    out: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in exts and stem not in out:
            out[stem] = os.path.join(folder, name)
    return out


def load_folder(image_dir: str, mask_dir: str, split_list: Optional[str] = None,
                extra: Optional[Dict[str, Any]] = None) -> List[dict]:
    """Records pairing ``image_dir/<stem>.*`` with ``mask_dir/<stem>.*``.

    Without ``split_list`` every image in ``image_dir`` is used; an image whose
    mask is missing keeps the expected mask path, so loading reports it (or
    skips it under ``DATASETS.SKIP_BAD_RECORDS``). ``extra`` is merged into
    every record (e.g. ``mask_colors`` for colour-coded masks).
    """
    images = _by_stem(image_dir, IMAGE_EXTS)
    masks = _by_stem(mask_dir, MASK_EXTS)
    stems = read_split_list(split_list) if split_list else sorted(images)
    records = []
    for stem in stems:
        img = images.get(stem, os.path.join(image_dir, stem + ".jpg"))
        h, w = image_size(img)
        records.append({"file_name": img, "sem_seg_file_name": masks.get(stem, os.path.join(mask_dir, stem + ".png")),
                        "height": h, "width": w, "image_id": stem, **(extra or {})})
    return records


def read_dataset_description(path: str) -> Dict[str, Any]:
    """Parse and check a folder-dataset description (YAML or JSON)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: dataset description not found.")
    desc = _read_description_file(path)
    if not isinstance(desc, dict):
        raise DataError(f"{path}: a dataset description must be a mapping.")
    missing = [k for k in ("name", "classes", "splits") if k not in desc]
    if missing:
        raise DataError(f"{path}: dataset description lacks {missing} (needs name, classes, splits).")
    fmt = desc.get("mask_format", "index")
    if fmt not in ("index", "rgb"):
        raise DataError(f"{path}: mask_format must be 'index' or 'rgb', got {fmt!r}.")
    palette = desc.get("palette")
    if palette is not None and len(palette) != len(desc["classes"]):
        raise DataError(f"{path}: palette has {len(palette)} colours for {len(desc['classes'])} classes.")
    if fmt == "rgb" and palette is None:
        raise DataError(f"{path}: mask_format 'rgb' needs a palette (one colour per class).")
    _check_splits(path, desc["splits"])
    return desc


def _read_description_file(path: str) -> Any:
    from segkit.config.config import ConfigError, read_yaml_file

    if not path.endswith(".json"):
        try:
            return read_yaml_file(path)  # safe, UTF-8, no duplicate keys or alias bombs
        except ConfigError as exc:
            raise DataError(f"dataset description {exc}".replace("Config file ", "")) from exc
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {raw[exc.start:exc.start + 1]!r} at offset {exc.start}); "
                        "save the description as UTF-8.") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from exc


def _check_splits(path: str, splits: Any) -> None:
    example = "splits: {train: {images: images, masks: masks}}"
    if not isinstance(splits, dict) or not splits:
        raise DataError(f"{path}: 'splits' must map each split name to its folders, e.g. {example}; "
                        f"got {type(splits).__name__} {splits!r}.")
    for split, spec in splits.items():
        if not isinstance(spec, dict):
            raise DataError(f"{path}: split '{split}' must be a mapping with 'images' and 'masks' folders, e.g. "
                            f"{example}; got {spec!r}.")
        lacking = [k for k in ("images", "masks") if not isinstance(spec.get(k), str)]
        if lacking:
            raise DataError(f"{path}: split '{split}' lacks {' and '.join(repr(k) for k in lacking)} "
                            "(folder paths relative to the description).")


def register_folder_dataset(description: str) -> List[str]:
    """Register every split of a described folder dataset; returns the names (``<name>_<split>``).

    Registering the same file again is a no-op.
    """
    desc = read_dataset_description(description)
    base = os.path.dirname(os.path.abspath(description))
    colors = [tuple(c) for c in desc.get("palette") or voc_palette(len(desc["classes"]))]
    ignore = int(desc.get("ignore_label", 255))
    extra: Dict[str, Any] = {}
    if desc.get("mask_format", "index") == "rgb":
        extra = {"mask_colors": [list(c) for c in colors],
                 "mask_ignore_colors": [list(c) for c in desc.get("ignore_colors", [])]}
    names = []
    for split, spec in desc["splits"].items():
        name = f"{desc['name']}_{split}"
        names.append(name)
        if name in DatasetCatalog and MetadataCatalog.get(name).get("description") == os.path.abspath(description):
            continue
        paths = {k: os.path.join(base, v) for k, v in spec.items() if k in ("images", "masks", "list")}

        def load(root, _p=paths):  # paths are relative to the description, not to the dataset root
            return load_folder(_p["images"], _p["masks"], _p.get("list"), extra)

        register_semseg(name, load, desc["classes"], colors, ignore, description=os.path.abspath(description))
    return names
