"""FashionScenes: segkit's embedded default dataset, composed from real Fashion-MNIST garments.

Each scene is a square canvas (128 px by default) holding 2-5 garments at random
scales and positions on a textured, noisy background; later garments occlude
earlier ones. A garment's mask is its own foreground (pixels brighter than a
threshold in the original grey image), so the 11 classes are background plus
the 10 Fashion-MNIST classes. Train scenes use garments from Fashion-MNIST's
training file and val scenes garments from its test file (disjoint sources).

Scenes are a pure function of ``(GENERATOR_VERSION, params, split, index)``.
They are written once, on first use, in PASCAL VOC layout under
``$SEGKIT_CACHE/fashion_scenes/<key>/`` (``JPEGImages/``, palette
``SegmentationClass/`` PNGs, ``ImageSets/Segmentation/{train,val}.txt``) and
read back through the real VOC reader, so the default path exercises it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np
from PIL import Image

from segkit.data.catalog import default_cache_dir, register_semseg
from segkit.data.datasets.voc import load_voc_semseg, voc_palette

__all__ = [
    "FASHION_SCENES_CLASSES", "FashionScenesParams", "GENERATOR_VERSION",
    "compose_scene", "materialize_fashion_scenes", "register_fashion_scenes", "configure_from_cfg",
]

# Bump whenever compose_scene's output changes: the cache key includes it.
GENERATOR_VERSION = 2
_EMBEDDED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "embedded",
                         "fashion_mnist_subset.npz")
FASHION_SCENES_CLASSES = [
    "background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Grey level above which a Fashion-MNIST pixel belongs to the garment.
_FOREGROUND_THRESHOLD = 24


@dataclass(frozen=True)
class FashionScenesParams:
    """Everything that determines the generated scenes (all part of the cache key)."""

    num_train: int = 10000
    num_val: int = 500
    size: int = 128
    min_garments: int = 2
    max_garments: int = 5
    min_garment_size: int = 28
    max_garment_size: int = 84
    seed: int = 0

    def count(self, split: str) -> int:
        return self.num_train if split == "train" else self.num_val

    def key(self, split: str) -> str:
        """Cache folder name of ``split``: the generator version and every parameter that shapes it.

        The other split's scene count is left out, so that changing
        ``NUM_TRAIN`` does not regenerate the validation scenes.
        """
        params = asdict(self)
        params.pop("num_val" if split == "train" else "num_train")
        blob = json.dumps({"version": GENERATOR_VERSION, "split": split, **params}, sort_keys=True)
        return f"{split}-v{GENERATOR_VERSION}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


@functools.lru_cache(maxsize=1)
def _garments() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    with np.load(_EMBEDDED) as z:
        return {s: (z[f"{s}_images"], z[f"{s}_labels"].astype(np.int64)) for s in ("train", "val")}


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    return np.random.default_rng(20170825).standard_normal((4 * size, 4 * size, 3), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency colour noise + a random stripe texture, float32 (H, W, 3) in [0, 255]."""
    cells = int(rng.integers(2, 9))
    low = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
    low = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 24)
    ramp = np.arange(size, dtype=np.float32) * np.float32(2 * np.pi / period)
    stripes = np.sin(ramp[None, :] * np.float32(np.cos(angle)) + ramp[:, None] * np.float32(np.sin(angle)))
    tint = rng.uniform(-40, 40, 3).astype(np.float32)
    base = np.float32(0.4 * rng.uniform(40, 215))
    return np.clip(np.float32(0.6) * low + base + stripes[..., None] * tint, 0, 255)


def _place_garment(canvas: np.ndarray, mask: np.ndarray, garment: np.ndarray, label: int,
                   rng: np.random.Generator, p: FashionScenesParams) -> None:
    side = min(int(rng.integers(p.min_garment_size, p.max_garment_size + 1)), p.size)  # small canvases
    aspect = rng.uniform(0.8, 1.25)
    h, w = min(max(8, int(side * aspect)), p.size), side
    grey = cv2.resize(garment, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        grey = grey[:, ::-1]
    y, x = int(rng.integers(0, p.size - h + 1)), int(rng.integers(0, p.size - w + 1))
    fg = grey > _FOREGROUND_THRESHOLD
    color = rng.uniform(30, 255, 3).astype(np.float32)
    shade = (0.35 + 0.65 * grey.astype(np.float32) / 255.0)[..., None] * color
    np.copyto(canvas[y:y + h, x:x + w], shade, where=fg[..., None])
    np.copyto(mask[y:y + h, x:x + w], np.uint8(label + 1), where=fg)  # class 0 is background


def compose_scene(p: FashionScenesParams, split: str, index: int) -> Tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of ``split``: ((S, S, 3) uint8 RGB image, (S, S) uint8 labels 0..10)."""
    images, labels = _garments()[split]
    rng = np.random.default_rng([p.seed, 0 if split == "train" else 1, index, GENERATOR_VERSION])
    canvas = _background(rng, p.size)
    mask = np.zeros((p.size, p.size), np.uint8)
    for _ in range(int(rng.integers(p.min_garments, p.max_garments + 1))):
        g = int(rng.integers(len(images)))
        _place_garment(canvas, mask, images[g], int(labels[g]), rng, p)
    # Sensor-like noise: a random window of a fixed Gaussian field (drawing fresh
    # normals per scene costs more than the rest of the scene).
    bank = _noise_bank(p.size)
    oy, ox = (int(v) for v in rng.integers(0, bank.shape[0] - p.size + 1, 2))
    canvas += bank[oy:oy + p.size, ox:ox + p.size] * np.float32(rng.uniform(3, 12))
    return np.clip(canvas, 0, 255).astype(np.uint8), mask


_PALETTE_BYTES = bytes(c for rgb in voc_palette(256) for c in rgb)


def _write_scenes(args: Tuple[FashionScenesParams, str, int, int, str]) -> List[str]:
    p, split, start, stop, out = args
    ids = []
    for i in range(start, stop):
        image, mask = compose_scene(p, split, i)
        name = f"{split}_{i:06d}"
        cv2.imwrite(os.path.join(out, "JPEGImages", name + ".jpg"), image[:, :, ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        png = Image.fromarray(mask, mode="L")
        png = png.convert("P")
        png.putpalette(_PALETTE_BYTES)
        png.save(os.path.join(out, "SegmentationClass", name + ".png"), optimize=False, compress_level=1)
        ids.append(name)
    return ids


def _generate(p: FashionScenesParams, split: str, out: str, workers: int) -> None:
    for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    from tqdm import tqdm

    n = p.count(split)
    # Small chunks so that the progress bar moves; each scene depends on its index only.
    chunk = max(1, min(-(-n // (4 * max(1, workers))), 100))
    jobs = [(p, split, s, min(n, s + chunk), out) for s in range(0, n, chunk)]
    # A progress bar (in scenes) on first use: generating 10,000 scenes takes about a minute.
    bar = tqdm(total=n, desc=f"FashionScenes {split}: generating scenes", unit="scene", mininterval=1.0)
    ids = []
    with bar:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for part in pool.map(_write_scenes, jobs):
                    ids += part
                    bar.update(len(part))
        else:
            for job in jobs:
                part = _write_scenes(job)
                ids += part
                bar.update(len(part))
    with open(os.path.join(out, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    with open(os.path.join(out, "fashion_scenes.json"), "w") as f:
        json.dump({"generator_version": GENERATOR_VERSION, "split": split, **asdict(p)}, f, indent=1)


def materialize_fashion_scenes(p: FashionScenesParams = FashionScenesParams(), split: str = "train",
                               cache_dir: str = "", workers: int = 0) -> str:
    """Write the scenes of ``split`` once into the cache (VOC layout) and return that folder.

    Generation goes to a temporary folder renamed into place, so concurrent
    processes (distributed ranks, several test sessions) never see a half-written set.
    """
    if split not in ("train", "val"):
        raise ValueError(f"FashionScenes has splits 'train' and 'val', not '{split}'.")
    base = os.path.join(cache_dir or default_cache_dir(), "fashion_scenes")
    final = os.path.join(base, p.key(split))
    if os.path.isdir(final):
        return final
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{p.key(split)}-", dir=base)
    try:
        _generate(p, split, tmp, workers or min(4, os.cpu_count() or 1))
        os.rename(tmp, final)
    except OSError:
        if not os.path.isdir(final):  # a real failure, not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def register_fashion_scenes(prefix: str = "fashion_scenes", cache_dir: str = "", **params) -> None:
    """Register ``{prefix}_train`` and ``{prefix}_val`` with the given :class:`FashionScenesParams`.

    Example: ``register_fashion_scenes("fs_small", num_train=2000, num_val=200)``.
    The built-in ``fashion_scenes_*`` pair follows ``DATASETS.FASHION_SCENES.*``
    instead (see :func:`configure_from_cfg`).
    """
    holder = _ParamsHolder(FashionScenesParams(**params))
    _register_pair(prefix, holder, cache_dir)


class _ParamsHolder:
    def __init__(self, params: FashionScenesParams) -> None:
        self.params = params


def _register_pair(prefix: str, holder: _ParamsHolder, cache_dir: str) -> None:
    colors = voc_palette(len(FASHION_SCENES_CLASSES))
    for split in ("train", "val"):
        def load(root, _split=split):  # root is unused: the set is generated, not downloaded
            p = holder.params
            folder = materialize_fashion_scenes(p, _split, cache_dir)
            return load_voc_semseg(folder, _split, size=(p.size, p.size))  # all canvases are size x size

        register_semseg(f"{prefix}_{split}", load, FASHION_SCENES_CLASSES, colors, 255)


_BUILTIN = _ParamsHolder(FashionScenesParams())
_register_pair("fashion_scenes", _BUILTIN, "")


def configure_from_cfg(cfg) -> None:
    """Point the built-in ``fashion_scenes_*`` at ``cfg.DATASETS.FASHION_SCENES`` (scene counts, seed)."""
    fs = cfg.DATASETS.FASHION_SCENES
    _BUILTIN.params = FashionScenesParams(num_train=int(fs.NUM_TRAIN), num_val=int(fs.NUM_VAL), size=int(fs.SIZE),
                                          seed=int(fs.SEED))
