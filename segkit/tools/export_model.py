#!/usr/bin/env python
"""Export a trained model's whole inference pipeline to TorchScript and/or ONNX.

The file takes a uint8 RGB image batch (``image``: N x H x W x 3 by default, any H
and W; a model trained on BGR input flips it itself) and returns ``labels`` (N x H x W int64), plus
``probs`` with ``--with-probs``. Class names, palette, channel order, layout and
mean/std travel inside the file. ``--verify`` runs the bundle and PyTorch on
validation images of several sizes and prints their agreement.

Example::

    python tools/export_model.py --config-file configs/fashion_scenes/fcn32s_r18.yaml \\
        --weights output/model_final.pth --format onnx torchscript --output exported/ --verify
"""
from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default=None, help="checkpoint (default: MODEL.WEIGHTS of the config)")
    p.add_argument("--format", nargs="+", choices=("torchscript", "onnx"), default=["onnx"])
    p.add_argument("--output", required=True, help="output folder (model.onnx / model.ts), or a file for one format")
    p.add_argument("--input-layout", choices=("NHWC", "NCHW"), default="NHWC")
    p.add_argument("--with-probs", action="store_true", help="also output (N, K, H, W) probabilities")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--device", default="cpu", help="device a TorchScript bundle is traced for and runs on (ONNX: always cpu)")
    p.add_argument("--verify", action="store_true", help="compare with PyTorch on DATASETS.TEST images")
    p.add_argument("--verify-images", type=int, default=4, help="how many test images --verify uses")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def verification_images(cfg, count: int):
    """``count`` RGB images of the first test dataset, plus crops and a mosaic for other sizes.

    The dataset is read as the test loader reads it (``DATASETS.ROOT``, folder datasets).
    """
    import numpy as np

    from segkit.data import get_dataset_records
    from segkit.data.io import read_image

    if not cfg.DATASETS.TEST:
        raise SystemExit("--verify needs DATASETS.TEST to name a dataset with images.")
    records = get_dataset_records(cfg, [cfg.DATASETS.TEST[0]])[:count]
    images = [read_image(r["file_name"]) for r in records]
    first = images[0]
    h, w = first.shape[:2]
    images.append(np.ascontiguousarray(first[h // 7 : h - h // 5, w // 9 : w - w // 3]))  # odd crop
    images.append(np.ascontiguousarray(np.concatenate(images[: min(2, len(records))], axis=1)))  # wide mosaic
    return images


def main(argv=None) -> int:
    args = parse_args(argv)
    from segkit.config import load_config
    from segkit.data import setup_datasets
    from segkit.export import FORMATS, check_parity, export

    cfg = load_config(args.config_file, args.opts)
    setup_datasets(cfg)
    single_file = len(args.format) == 1 and os.path.splitext(args.output)[1] != ""
    if not single_file:
        os.makedirs(args.output, exist_ok=True)
    images = verification_images(cfg, args.verify_images) if args.verify else None
    for fmt in args.format:
        out = args.output if single_file else os.path.join(args.output, "model" + FORMATS[fmt])
        path = export(cfg, args.weights, fmt, out, input_layout=args.input_layout, with_probs=args.with_probs,
                      opset=args.opset, device=args.device)
        print(f"{fmt}: wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
        if images is not None:
            r = check_parity(cfg, args.weights, path, images)
            diff = "n/a (no probs output)" if r.max_prob_diff is None else f"{r.max_prob_diff:.2e}"
            sizes = ", ".join(f"{h}x{w}" for h, w in r.sizes)
            print(f"  parity vs PyTorch on {len(images)} images ({sizes}): pixel agreement {r.pixel_agreement:.6f}, "
                  f"max |prob diff| {diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
