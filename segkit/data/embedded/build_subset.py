"""Rebuild ``fashion_mnist_subset.npz`` from the Fashion-MNIST idx files (maintainers only).

Usage: ``python -m segkit.data.embedded.build_subset /usr/share/datasets/fashion-mnist``
(Debian package ``dataset-fashion-mnist``). Train garments come from the
Fashion-MNIST training file and val garments from its test file, so the
FashionScenes splits never share a source garment.
"""
from __future__ import annotations

import gzip
import os
import sys

import numpy as np

PER_CLASS = {"train": 600, "val": 100}
SOURCES = {"train": "train", "val": "t10k"}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def build(src: str, out: str) -> None:
    arrays = {"class_names": np.array(CLASS_NAMES)}
    rng = np.random.default_rng(20170825)  # Fashion-MNIST's release date: a fixed, arbitrary seed
    for split, prefix in SOURCES.items():
        images = _idx(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"))
        labels = _idx(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"))
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: PER_CLASS[split]] for c in range(10)])
        keep.sort()
        arrays[f"{split}_images"] = images[keep]
        arrays[f"{split}_labels"] = labels[keep]
        arrays[f"{split}_source_index"] = keep.astype(np.int32)  # index in the original file
    np.savez_compressed(out, **arrays)


if __name__ == "__main__":
    build(sys.argv[1], os.path.join(os.path.dirname(os.path.abspath(__file__)), "fashion_mnist_subset.npz"))
