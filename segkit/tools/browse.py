"""``segkit browse``: look at a dataset as the loader yields it (MMSeg's browse_dataset).

Writes one PNG per image: the image, its mask blended over it, and a legend of the
classes present (names and colours from the dataset's metadata). With
``--augmented`` the images come from the training loader, after the configured
``INPUT.TRAIN_TRANSFORMS`` (random scale, crop, flip, colour ...), padded as in a
batch; without it, from the test loader (test transforms only).

Example::

    segkit browse --config-file segkit://fashion_scenes/main.yaml --augmented --num 8 --output browse/
"""
from __future__ import annotations

import argparse
import itertools
import os
from typing import Iterator, List, Optional, Tuple

import numpy as np


def iterate_samples(cfg, dataset: str, augmented: bool) -> Iterator[Tuple[np.ndarray, np.ndarray, dict]]:
    """``(image (H, W, 3) uint8 RGB, labels (H, W), record)`` as the loader yields them."""
    from segkit.data import build_test_loader, build_train_loader
    from segkit.engine.visualization import to_rgb

    if augmented:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TRAIN = (dataset,)
        loader = build_train_loader(cfg)
    else:
        loader = build_test_loader(cfg, dataset, batch_size=1)
    for batch in loader:
        for i, record in enumerate(batch["records"]):
            if augmented:  # the whole (padded) crop the network sees
                image, labels = batch["image"][i], batch["sem_seg"][i]
            else:
                h, w = int(record["height"]), int(record["width"])
                image, labels = batch["image"][i, :, :h, :w], batch["sem_seg"][i, :h, :w]
            yield to_rgb(image), labels.numpy(), record  # images are RGB end to end


def browse(cfg, dataset: str, output: str, num: int, augmented: bool) -> List[str]:
    """Write ``num`` overlay panels of ``dataset`` into ``output``; returns the paths."""
    from tqdm import tqdm

    from segkit.data import dataset_classes
    from segkit.engine.visualization import draw_prediction_panel, save_png
    from segkit.utils.visualize import default_palette

    names, palette, _ = dataset_classes(cfg, [dataset])
    names = list(names or [str(k) for k in range(cfg.MODEL.NUM_CLASSES)])
    palette = list(palette or default_palette(len(names)))
    paths = []
    samples = itertools.islice(iterate_samples(cfg, dataset, augmented), num)
    for n, (image, labels, record) in enumerate(tqdm(samples, total=num, desc="browse", unit="img")):
        stem = os.path.splitext(os.path.basename(str(record.get("file_name", n))))[0]
        panel = draw_prediction_panel(image, labels, {}, palette, names, cfg.MODEL.IGNORE_VALUE)
        suffix = "_aug" if augmented else ""
        paths.append(save_png(os.path.join(output, f"{n:04d}_{stem}{suffix}.png"), panel))
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="segkit browse", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="config (path or segkit://...)")
    p.add_argument("--dataset", default=None, help="registered dataset (default: DATASETS.TRAIN[0])")
    p.add_argument("--augmented", action="store_true", help="after the training transforms (training loader)")
    p.add_argument("--num", type=int, default=16, help="how many images")
    p.add_argument("--output", default="browse", help="folder for the PNGs (default: ./browse)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    from segkit.config import load_config
    from segkit.data import setup_datasets

    cfg = load_config(args.config_file, args.opts)
    setup_datasets(cfg)  # folder datasets too; NUM_CLASSES checked against the classes
    dataset = args.dataset or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None)
    if not dataset:
        p.error("give --dataset: the config has no DATASETS.TRAIN")
    paths = browse(cfg, dataset, args.output, args.num, args.augmented)
    print(f"Wrote {len(paths)} picture(s) of {dataset}{' (augmented)' if args.augmented else ''} to {args.output}")
    return 0
