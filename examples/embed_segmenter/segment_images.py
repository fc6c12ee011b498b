#!/usr/bin/env python
"""A downstream program that embeds a segkit pipeline and reports per-class areas.

Two ways to embed, same output:

* ``--bundle model.onnx`` (or a TorchScript ``model.ts``): the product ships one
  file exported by ``tools/export_model.py``. This path needs only numpy, Pillow
  and onnxruntime (or torch for TorchScript) -- *not* segkit: everything the
  program needs to know (class names, palette, channel order, layout) is read
  from the file's metadata.
* ``--config-file cfg.yaml --weights model_final.pth``: a Python service with
  segkit installed uses ``segkit.Predictor`` (which also runs the configured
  post-processors, e.g. dense CRF, and test-time augmentation).

Examples::

    python examples/embed_segmenter/segment_images.py --bundle exported/model.onnx photos/*.jpg
    python examples/embed_segmenter/segment_images.py --config-file examples/embed_segmenter/tiny_fcn.yaml \\
        --weights output/model_final.pth photos/*.jpg --json areas.json --save-dir masks/
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Dict, List

import numpy as np
from PIL import Image


def _run_torchscript(torch, module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = module(torch.from_numpy(batch))
    return (out[0] if isinstance(out, (tuple, list)) else out).cpu().numpy()  # "labels" comes first


class BundleSegmenter:
    """Segment images with an exported segkit bundle, without importing segkit."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            is_torchscript = f.read(2) == b"PK"  # TorchScript files are zip archives
        if is_torchscript:
            import torch

            files = {"segkit_metadata.json": ""}
            with warnings.catch_warnings():  # torch.jit is deprecated in recent torch, still supported
                warnings.simplefilter("ignore", FutureWarning)
                # Weights go back to the device the bundle was traced for (its metadata's "device");
                # the graph moves the CPU input there itself.
                self._module = torch.jit.load(path, _extra_files=files)
            raw = json.loads(files["segkit_metadata.json"])
            self._run = lambda batch: _run_torchscript(torch, self._module, batch)
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            raw = dict(session.get_modelmeta().custom_metadata_map)
            self._run = lambda batch: session.run(["labels"], {"image": batch})[0]
        meta = {k: json.loads(v) for k, v in raw.items() if k != "config"}
        self.class_names: List[str] = meta["class_names"]
        self.palette = meta["palette"]
        self.input_format: str = meta["input_format"]
        self.input_layout: str = meta["input_layout"]

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` labels."""
        image = rgb[:, :, ::-1] if self.input_format == "BGR" else rgb
        batch = image[None] if self.input_layout == "NHWC" else image.transpose(2, 0, 1)[None]
        return np.asarray(self._run(np.array(batch, order="C")))[0]  # a writable copy for torch.from_numpy


class PredictorSegmenter:
    """Segment images with ``segkit.Predictor`` (segkit installed)."""

    def __init__(self, config_file: str, weights: str, opts=()):
        import segkit
        from segkit.config import load_config

        self._predictor = segkit.Predictor(load_config(config_file, list(opts)), weights=weights)
        self.class_names = list(self._predictor.metadata.class_names)
        self.palette = [list(c) for c in self._predictor.metadata.palette]

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        return self._predictor(rgb, format="RGB").labels


def class_areas(labels: np.ndarray, class_names: List[str]) -> Dict[str, float]:
    """Fraction of the image covered by each class (classes that occur only)."""
    counts = np.bincount(labels.ravel(), minlength=len(class_names))
    return {class_names[k]: counts[k] / labels.size for k in np.flatnonzero(counts)}


def save_mask(path: str, labels: np.ndarray, palette) -> None:
    """Palette PNG: pixel values are labels, viewers show the class colours."""
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [int(v) for c in palette for v in c]
    img.putpalette(flat + [0] * (768 - len(flat)))
    img.save(path)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--bundle", help="exported .onnx or TorchScript file")
    p.add_argument("--config-file", help="segkit config (Predictor path)")
    p.add_argument("--weights", help="segkit checkpoint (Predictor path)")
    p.add_argument("--json", help="write {image: {class: area fraction}} here")
    p.add_argument("--save-dir", help="also write palette PNG masks here")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides (Predictor path)")
    args = p.parse_args(argv)
    if bool(args.bundle) == bool(args.config_file):
        p.error("give either --bundle, or --config-file and --weights")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.bundle:
        segmenter = BundleSegmenter(args.bundle)
    else:
        segmenter = PredictorSegmenter(args.config_file, args.weights, args.opts)
    report = {}
    for path in args.images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        labels = segmenter.segment(rgb)
        areas = class_areas(labels, segmenter.class_names)
        report[path] = areas
        print(f"{path} ({rgb.shape[1]}x{rgb.shape[0]}):")
        for name, frac in sorted(areas.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<16}{100 * frac:6.2f} %")
        if args.save_dir:
            os.makedirs(args.save_dir, exist_ok=True)
            save_mask(os.path.join(args.save_dir, os.path.splitext(os.path.basename(path))[0] + ".png"), labels, segmenter.palette)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
