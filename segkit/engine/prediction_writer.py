"""``--save-predictions DIR``: every prediction of an evaluation, and its IoU, on disk.

:class:`PredictionWriter` wraps an evaluator (same ``reset/process/evaluate``): for
each image of the test loader it writes, under ``DIR``,

* ``<variant>/<stem>.png`` -- 8-bit palette PNG whose pixel values are the labels;
* ``<variant>/<stem>_overlay.jpg`` -- the colours blended over the image;
* ``per_image_iou.csv`` -- one row per image and variant: pixel accuracy, mIoU over the
  classes present in the ground truth or the prediction, and each class's IoU
  (empty when the class is absent from both), sorted worst mIoU first, so the
  images to look at are at the top.

``<variant>`` is ``sem_seg`` for the network, ``sem_seg+DenseCRF`` etc. for
post-processed outputs; ``<stem>`` is the image's file name without extension.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from segkit.engine.comm import is_main_process
from segkit.engine.visualization import to_rgb
from segkit.utils.visualize import overlay, save_label_png

__all__ = ["PredictionWriter", "per_image_iou"]


def per_image_iou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_value: int) -> Dict[str, Any]:
    """IoU of one image.

    Args:
        pred, target: ``(H, W)`` integer labels; target pixels equal to ``ignore_value``
            are not counted.
        num_classes: ``K``.

    Returns:
        ``{"pixel_acc": float, "mIoU": float, "iou": [K floats or None]}``; a class absent
        from both prediction and ground truth has IoU ``None`` and is left out of the
        mean (``mIoU`` is NaN when nothing is counted).
    """
    valid = target != ignore_value
    p, t = pred[valid].astype(np.int64), target[valid].astype(np.int64)
    ious: List[Optional[float]] = []
    for k in range(num_classes):
        inter = int(np.count_nonzero((p == k) & (t == k)))
        union = int(np.count_nonzero((p == k) | (t == k)))
        ious.append(inter / union if union else None)
    present = [v for v in ious if v is not None]
    return {
        "pixel_acc": float((p == t).mean()) if t.size else float("nan"),
        "mIoU": float(np.mean(present)) if present else float("nan"),
        "iou": ious,
    }


class PredictionWriter:
    """An evaluator wrapper that also writes each prediction (see the module docstring).

    Args:
        evaluator: the evaluator to feed (its ``num_classes``, ``ignore_value`` and
            ``class_names`` are used).
        output_dir: folder to write into (created).
        palette: ``K`` RGB colours.
        alpha: weight of the colours in the overlays.
    """

    def __init__(self, evaluator, output_dir: str, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> None:
        self.evaluator = evaluator
        self.output_dir = output_dir
        self.palette = [tuple(int(v) for v in c) for c in palette]
        self.alpha = alpha
        self.rows: List[Dict[str, Any]] = []
        os.makedirs(output_dir, exist_ok=True)

    def __getattr__(self, name: str):  # dataset_name, samples, ... of the wrapped evaluator
        return getattr(self.__dict__["evaluator"], name)

    def reset(self) -> None:
        self.evaluator.reset()
        self.rows = []

    def process(self, inputs: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]) -> None:
        """Write the batch's predictions, then let the wrapped evaluator count it."""
        records = inputs.get("records") or [{} for _ in range(int(inputs["sem_seg"].shape[0]))]
        for key, out in outputs.items():
            labels = (out.argmax(dim=1) if out.dim() == 4 else out).detach().cpu().numpy()
            for i, record in enumerate(records):
                self._write_one(key, i, record, labels[i], inputs)
        self.evaluator.process(inputs, outputs)

    def _write_one(self, key: str, i: int, record: Mapping[str, Any], labels: np.ndarray, inputs) -> None:
        from PIL import Image


        h = int(record.get("height", labels.shape[0]))
        w = int(record.get("width", labels.shape[1]))
        stem = os.path.splitext(os.path.basename(str(record.get("file_name", f"image_{len(self.rows):06d}"))))[0]
        labels = labels[:h, :w]
        target = inputs["sem_seg"][i, :h, :w].cpu().numpy()
        folder = os.path.join(self.output_dir, key)
        os.makedirs(folder, exist_ok=True)
        save_label_png(os.path.join(folder, stem + ".png"), labels, self.palette)
        rgb = to_rgb(inputs["image"][i, :, :h, :w].cpu())  # images are RGB end to end
        Image.fromarray(overlay(rgb, labels, self.palette, alpha=self.alpha,
                                ignore_value=self.evaluator.ignore_value)).save(
            os.path.join(folder, stem + "_overlay.jpg"), quality=92)
        score = per_image_iou(labels, target, self.evaluator.num_classes, self.evaluator.ignore_value)
        self.rows.append({"file_name": record.get("file_name", stem), "variant": key, **score})

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """Write ``per_image_iou.csv`` (worst first), then return the wrapped evaluator's results."""
        self.write_table()
        return self.evaluator.evaluate()

    def write_table(self) -> Optional[str]:
        """Write ``per_image_iou.csv`` (main process only: each process writes its own images)."""

        if not is_main_process():
            return None
        path = os.path.join(self.output_dir, "per_image_iou.csv")
        names = list(getattr(self.evaluator, "class_names", [])) or [str(k) for k in range(self.evaluator.num_classes)]
        rows = sorted(self.rows, key=lambda r: (np.nan_to_num(r["mIoU"], nan=2.0), r["variant"], str(r["file_name"])))
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["file_name", "variant", "mIoU", "pixel_acc", *[f"IoU/{n}" for n in names]])
            for r in rows:
                out.writerow([r["file_name"], r["variant"], f"{r['mIoU']:.6f}", f"{r['pixel_acc']:.6f}",
                              *["" if v is None else f"{v:.6f}" for v in r["iou"]]])
        return path
