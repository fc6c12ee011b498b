"""Confusion matrix accumulated on the device, and the metrics derived from it.

Definitions follow Long et al., "Fully Convolutional Networks for Semantic
Segmentation" (CVPR 2015), sec. 5: with ``n_ij`` the number of pixels of class ``i``
predicted as ``j`` and ``t_i = sum_j n_ij``,

* pixel accuracy     ``sum_i n_ii / sum_i t_i``
* mean accuracy      ``(1/n_cl) sum_i n_ii / t_i``
* mean IoU           ``(1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency-weighted ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

A class that never occurs in the ground truth has no accuracy, and a class that
occurs neither in the ground truth nor in the predictions has no IoU; such classes
are reported as NaN and left out of the means (the averages run over the classes
that are defined), as detectron2's ``SemSegEvaluator`` does.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist

__all__ = ["ConfusionMatrix", "metrics_from_confusion", "format_per_class_table"]


class ConfusionMatrix:
    """A ``(K, K)`` int64 count matrix (rows: ground truth, columns: prediction).

    It lives on the device of the first predictions it sees, so accumulating never
    copies masks to the host; :meth:`reduce` sums it across distributed processes.

    Args:
        num_classes: ``K``.
        ignore_value: ground-truth label whose pixels are not counted.
    """

    def __init__(self, num_classes: int, ignore_value: int = 255) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.ignore_value = int(ignore_value)
        self.matrix: Optional[torch.Tensor] = None

    def reset(self) -> None:
        self.matrix = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch.

        Args:
            pred: predicted labels ``(N, H, W)`` or ``(H, W)``, integer, in ``[0, K)``.
            target: ground truth of the same shape; pixels equal to ``ignore_value``
                are skipped.

        Raises:
            ValueError: the shapes differ or the ground truth holds a label outside
                ``[0, K) ∪ {ignore_value}``.
        """
        if pred.shape != target.shape:
            raise ValueError(f"Prediction shape {tuple(pred.shape)} != ground-truth shape {tuple(target.shape)}.")
        k = self.num_classes
        target = target.to(pred.device).long()
        pred = pred.long()
        valid = target != self.ignore_value
        t, p = target[valid], pred[valid]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
            bad = torch.unique(t[(t < 0) | (t >= k)]).tolist()
            raise ValueError(
                f"Ground truth holds labels {bad[:10]} outside [0, {k}) and not equal to the ignore value "
                f"{self.ignore_value}; check MODEL.NUM_CLASSES and MODEL.IGNORE_VALUE."
            )
        counts = torch.bincount(t * k + p, minlength=k * k).reshape(k, k)
        self.matrix = counts if self.matrix is None else self.matrix + counts.to(self.matrix.device)

    def reduce(self) -> torch.Tensor:
        """Sum over all processes (when ``torch.distributed`` is initialised); returns the matrix."""
        if self.matrix is None:
            self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # NCCL reduces CUDA tensors and gloo CPU tensors; the matrix is already on
            # the device the backend expects because it follows the model's outputs.
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self.matrix


def _nan_mean(values: torch.Tensor, valid: torch.Tensor) -> float:
    return float(values[valid].mean()) if bool(valid.any()) else float("nan")


def metrics_from_confusion(matrix: torch.Tensor, class_names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Pixel accuracy, mean accuracy, mIoU, fwIoU and per-class IoU/accuracy.

    Args:
        matrix: ``(K, K)`` counts, rows ground truth, columns prediction.
        class_names: ``K`` names for the per-class entries (default ``"0".."K-1"``).

    Returns:
        ``{"pACC", "mACC", "mIoU", "fwIoU", "IoU-<class>", "ACC-<class>"}``, all in
        ``[0, 1]``; per-class entries are NaN for classes that are undefined (see the
        module docstring). Everything is NaN when no pixel was counted.
    """
    m = matrix.detach().to("cpu", torch.float64)
    k = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} confusion matrix.")
    tp = m.diagonal()
    gt = m.sum(dim=1)
    pred = m.sum(dim=0)
    union = gt + pred - tp
    acc_valid, iou_valid = gt > 0, union > 0
    acc = torch.where(acc_valid, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
    iou = torch.where(iou_valid, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    total = float(gt.sum())
    out = {
        "pACC": float(tp.sum()) / total if total > 0 else float("nan"),
        "mACC": _nan_mean(acc, acc_valid),
        "mIoU": _nan_mean(iou, iou_valid),
        "fwIoU": float((gt[iou_valid] * iou[iou_valid]).sum()) / total if total > 0 else float("nan"),
    }
    for i, name in enumerate(names):
        out[f"IoU-{name}"] = float(iou[i])
    for i, name in enumerate(names):
        out[f"ACC-{name}"] = float(acc[i])
    return out


def format_per_class_table(metrics: Dict[str, float], class_names: Sequence[str]) -> str:
    """A fixed-width text table of per-class IoU and accuracy (percent), with the means."""
    width = max([len("class")] + [len(n) for n in class_names])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]

    def pct(v: float) -> str:
        return "   n/a" if v is None or math.isnan(v) else f"{100 * v:6.2f}"

    for name in class_names:
        lines.append(f"{name:<{width}}  {pct(metrics[f'IoU-{name}'])}  {pct(metrics[f'ACC-{name}'])}")
    lines.append("-" * (width + 16))
    lines.append(f"{'mean':<{width}}  {pct(metrics['mIoU'])}  {pct(metrics['mACC'])}")
    lines.append(f"pixel acc {pct(metrics['pACC'])}   fwIoU {pct(metrics['fwIoU'])}")
    return "\n".join(lines)


def confusion_to_list(matrix: torch.Tensor) -> List[List[int]]:
    """The matrix as nested Python ints (for JSON)."""
    return [[int(v) for v in row] for row in matrix.detach().cpu().tolist()]
