"""Pictures of a run, drawn with OpenCV and NumPy (no matplotlib).

* :func:`draw_prediction_panel`: image | ground truth | prediction(s), coloured
  labels blended over the image, with a legend of the classes present;
* :func:`draw_confusion_matrix`: row-normalised (recall) heat map with counts;
* :func:`draw_curve`: a line plot with axes, used for the loss and mIoU curves.

Images are ``(H, W, 3)`` uint8 RGB arrays; files are written as PNG. Label maps
are coloured by :mod:`segkit.utils.visualize` (palette, colorize, overlay).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from segkit.utils.visualize import default_palette, overlay

__all__ = [
    "draw_prediction_panel",
    "draw_confusion_matrix",
    "draw_curve",
    "save_png",
    "save_training_curves",
]

FONT = cv2.FONT_HERSHEY_SIMPLEX
# Weight of the label colours in the prediction panels.
_ALPHA = 0.55


def _title(panel: np.ndarray, text: str, height: int = 18) -> np.ndarray:
    bar = np.full((height, panel.shape[1], 3), 255, dtype=np.uint8)
    scale = min(0.45, 0.45 * panel.shape[1] / max(8 * len(text), 1))
    cv2.putText(bar, text, (3, height - 5), FONT, max(scale, 0.25), (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def _legend(class_ids: Sequence[int], class_names: Sequence[str], palette, width: int) -> np.ndarray:
    row_h, per_row = 16, max(1, width // 110)
    rows = max(1, -(-len(class_ids) // per_row))
    legend = np.full((rows * row_h + 4, width, 3), 255, dtype=np.uint8)
    for n, c in enumerate(class_ids):
        x, y = (n % per_row) * 110 + 4, (n // per_row) * row_h + 3
        cv2.rectangle(legend, (x, y), (x + 11, y + 11), tuple(int(v) for v in palette[c]), -1)
        cv2.putText(legend, str(class_names[c])[:14], (x + 15, y + 10), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return legend


def draw_prediction_panel(
    image: np.ndarray,
    gt: np.ndarray,
    preds: Dict[str, np.ndarray],
    palette,
    class_names: Sequence[str],
    ignore_value: int = 255,
    min_side: int = 160,
) -> np.ndarray:
    """Image, ground truth and each prediction side by side, with a legend.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        gt: ``(H, W)`` labels.
        preds: title -> ``(H, W)`` labels.
        min_side: small images are enlarged (nearest) to at least this height.
    """
    scale = max(1, int(np.ceil(min_side / max(image.shape[0], 1))))
    big = lambda a: np.kron(a, np.ones((scale, scale) + (1,) * (a.ndim - 2), dtype=a.dtype))  # noqa: E731
    tiles = [_title(big(image), "image"), _title(big(overlay(image, gt, palette, _ALPHA, ignore_value)), "ground truth")]
    for name, pred in preds.items():
        tiles.append(_title(big(overlay(image, pred, palette, _ALPHA, ignore_value)), name))
    sep = np.full((tiles[0].shape[0], 4, 3), 255, dtype=np.uint8)
    row = np.concatenate([t for tile in tiles for t in (tile, sep)][:-1], axis=1)
    present = sorted({int(v) for a in [gt, *preds.values()] for v in np.unique(a) if 0 <= v < len(class_names)})
    return np.concatenate([row, _legend(present, class_names, palette, row.shape[1])], axis=0)


def draw_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], cell: int = 44) -> np.ndarray:
    """Row-normalised confusion matrix (rows ground truth, columns prediction) as an RGB image."""
    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    margin_l, margin_t = 110, 100
    img = np.full((margin_t + k * cell + 30, margin_l + k * cell + 10, 3), 255, dtype=np.uint8)
    for i in range(k):
        for j in range(k):
            shade = int(255 * (1 - norm[i, j]))
            color = (shade, shade, 255) if i != j else (shade, 255, shade)
            x, y = margin_l + j * cell, margin_t + i * cell
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), color, -1)
            text = f"{100 * norm[i, j]:.0f}"
            tcol = (255, 255, 255) if norm[i, j] > 0.6 else (0, 0, 0)
            cv2.putText(img, text, (x + 6, y + cell // 2 + 5), FONT, 0.4, tcol, 1, cv2.LINE_AA)
        name = str(class_names[i])[:14]
        cv2.putText(img, name, (4, margin_t + i * cell + cell // 2 + 4), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    # Column names: drawn horizontally on a (k*cell, margin_t-5) strip, then rotated 90 degrees
    # counter-clockwise so that they read bottom-up above their columns.
    strip = np.full((k * cell, margin_t - 5, 3), 255, dtype=np.uint8)
    for j in range(k):
        cv2.putText(strip, str(class_names[j])[:14], (4, j * cell + cell // 2 + 4), FONT, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
    img[5:margin_t, margin_l : margin_l + k * cell] = np.rot90(strip, 1)
    cv2.putText(img, "rows: ground truth, columns: prediction (% of row)", (4, img.shape[0] - 10), FONT, 0.4,
                (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _nice_ticks(lo: float, hi: float, n: int = 5) -> np.ndarray:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((s * mag for s in (1, 2, 5, 10) if s * mag >= raw), default=raw)
    return np.arange(np.ceil(lo / step) * step, hi + step * 1e-6, step)


def draw_curve(
    series: Dict[str, Tuple[Sequence[float], Sequence[float]]],
    title: str,
    size: Tuple[int, int] = (640, 400),
    xlabel: str = "iteration",
) -> np.ndarray:
    """Line plot of ``{name: (xs, ys)}`` with axes, ticks and a legend; RGB uint8."""
    w, h = size
    left, right, top, bottom = 60, 15, 30, 40
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    xs_all = np.concatenate([np.asarray(x, float) for x, _ in series.values()] or [np.zeros(1)])
    ys_all = np.concatenate([np.asarray(y, float) for _, y in series.values()] or [np.zeros(1)])
    ys_all = ys_all[np.isfinite(ys_all)] if np.isfinite(ys_all).any() else np.zeros(1)
    x0, x1 = float(xs_all.min()), float(max(xs_all.max(), xs_all.min() + 1))
    y0, y1 = float(min(ys_all.min(), 0.0)), float(ys_all.max() * 1.05 + 1e-9)
    px = lambda x: int(left + (x - x0) / (x1 - x0) * (w - left - right))  # noqa: E731
    py = lambda y: int(h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))  # noqa: E731
    for t in _nice_ticks(y0, y1):
        cv2.line(img, (left, py(t)), (w - right, py(t)), (230, 230, 230), 1)
        cv2.putText(img, f"{t:.3g}", (4, py(t) + 4), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    for t in _nice_ticks(x0, x1):
        cv2.putText(img, f"{t:.0f}", (px(t) - 10, h - bottom + 15), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    for n, (name, (xs, ys)) in enumerate(series.items()):
        pts = np.array([(px(x), py(y)) for x, y in zip(xs, ys) if np.isfinite(y)], dtype=np.int32)
        color = colors[n % len(colors)]
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, color, 2, cv2.LINE_AA)
        for p in pts if len(pts) < 40 else []:
            cv2.circle(img, tuple(int(v) for v in p), 3, color, -1)
        cv2.putText(img, name, (left + 8, top + 16 + 16 * n), FONT, 0.45, color, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 20), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, (w // 2 - 30, h - 8), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def save_png(path: str, rgb: np.ndarray) -> str:
    """Write an RGB array as PNG (OpenCV wants BGR)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"Could not write {path}")
    return path


def _read_metrics(metrics_file: str) -> List[dict]:
    rows = []
    with open(metrics_file, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    # A resumed run re-logs iterations after its checkpoint; keep the last record of each.
    by_iter: Dict[int, dict] = {}
    for r in rows:
        by_iter.setdefault(r["iteration"], {}).update(r)
    return [by_iter[k] for k in sorted(by_iter)]


def save_training_curves(metrics_file: str, out_dir: str, metric_names: Sequence[str] = ()) -> List[str]:
    """``loss_curve.png`` (total and per-term loss) and one PNG per metric from ``metrics.jsonl``."""
    rows = _read_metrics(metrics_file)
    paths = []
    terms = sorted({k for r in rows for k in r if k.startswith("loss")})
    # With one loss term the total is the same curve; draw it only when it adds something.
    loss_keys = (["total_loss"] if len(terms) > 1 else []) + terms
    if loss_keys:
        series = {k: ([r["iteration"] + 1 for r in rows if r.get(k) is not None],
                      [r[k] for r in rows if r.get(k) is not None]) for k in loss_keys}
        paths.append(save_png(os.path.join(out_dir, "loss_curve.png"), draw_curve(series, "training loss")))
    for name in metric_names:
        pts = [(r["iteration"] + 1, r[name]) for r in rows if r.get(name) is not None]
        if pts:
            xs, ys = zip(*pts)
            fname = name.replace("/", "_").replace("+", "_") + "_curve.png"
            paths.append(save_png(os.path.join(out_dir, fname), draw_curve({name: (xs, ys)}, name)))
    return paths


def to_rgb(image_chw) -> np.ndarray:
    """``(3, H, W)`` uint8 RGB tensor/array -> ``(H, W, 3)`` RGB array (images are RGB end to end)."""
    arr = np.asarray(image_chw.cpu() if hasattr(image_chw, "cpu") else image_chw).transpose(1, 2, 0)
    return np.ascontiguousarray(arr).astype(np.uint8)


def save_evaluation_pictures(
    evaluator, out_dir: str, palette: Optional[Sequence[Tuple[int, int, int]]] = None
) -> List[str]:
    """Prediction panels of the evaluator's kept samples and one confusion-matrix PNG per variant."""
    names = evaluator.class_names
    palette = list(palette) if palette else default_palette(len(names))
    paths = []
    for n, s in enumerate(evaluator.samples):
        preds = {k: v.numpy() for k, v in s["pred"].items()}
        panel = draw_prediction_panel(to_rgb(s["image"]), s["sem_seg"].numpy(), preds, palette, names,
                                      evaluator.ignore_value)
        paths.append(save_png(os.path.join(out_dir, f"{evaluator.dataset_name}_pred_{n:02d}.png"), panel))
    for key, matrix in getattr(evaluator, "confusion", {}).items():
        fname = f"{evaluator.dataset_name}_confusion_{key.replace('+', '_')}.png"
        paths.append(save_png(os.path.join(out_dir, fname), draw_confusion_matrix(matrix.numpy(), names)))
    return paths
