#!/usr/bin/env python
"""Class pixel counts of a dataset, written as the JSON the losses read.

Counts every mask of the dataset (in parallel, with a progress bar) and writes the
counts; the table printed shows the inverse-frequency, median-frequency-balancing
and effective-number weights the losses derive from them
(``segkit.modeling.losses.class_weights_from_counts``).

Example::

    python tools/dataset_stats.py --dataset voc_2012_train_aug --output output/voc_class_stats.json
    python tools/dataset_stats.py --config-file my.yaml --output stats.json DATASETS.ROOT /data
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=None, help="config (for DATASETS.*, MODEL.IGNORE_VALUE, ...)")
    p.add_argument("--dataset", action="append", default=None, help="registered name (repeatable); default DATASETS.TRAIN")
    p.add_argument("--output", required=True, help="JSON file to write")
    p.add_argument("--beta", type=float, default=None,
                   help="effective-number beta of the printed table (default MODEL.LOSS.CLASS_WEIGHT.BETA)")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from segkit.config import load_config
    from segkit.data import register_datasets, setup_datasets
    from segkit.data.class_stats import compute_dataset_class_stats
    from segkit.modeling.losses import class_weights_from_counts

    cfg = load_config(args.config_file, args.opts)
    # Counting named datasets needs no model: only check NUM_CLASSES when counting the config's own.
    setup_datasets(cfg) if not args.dataset else register_datasets(cfg)
    stats = compute_dataset_class_stats(cfg, args.dataset, args.output, args.workers, not args.no_progress)
    beta = float(cfg.MODEL.LOSS.CLASS_WEIGHT.BETA if args.beta is None else args.beta)
    counts, where = stats["pixel_counts"], stats["pixels_where_present"]
    w = {m: class_weights_from_counts(counts, m, beta, where) if sum(counts) else [0.0] * len(counts)
         for m in ("inverse_frequency", "median_frequency", "effective_number")}
    width = max(len(c) for c in stats["classes"])
    print(f"{stats['dataset']}: {stats['num_images']} images -> {args.output}")
    print(f"{'class':<{width}}  {'pixels':>12}  {'freq':>8}  {'inv':>8}  {'median':>8}  {'effnum':>8}")
    for i, name in enumerate(stats["classes"]):
        print(f"{name:<{width}}  {stats['pixel_counts'][i]:>12d}  {stats['frequency'][i]:>8.4f}  "
              f"{w['inverse_frequency'][i]:>8.3f}  {w['median_frequency'][i]:>8.3f}  {w['effective_number'][i]:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
