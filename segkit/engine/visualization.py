"""Pictures of a run.

* :func:`draw_prediction_panel`: image | ground truth | prediction(s), coloured
  labels blended over the image, with a legend of the classes present (OpenCV);
* :func:`draw_confusion_matrix`: row-normalised (recall) heat map with a colour
  bar, percentages and class names (matplotlib);
* :func:`draw_curve`: a line plot with axes and a legend outside the data, used for
  the loss, learning-rate and mIoU curves and by ``segkit plot`` (matplotlib, Agg).

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
    "read_metrics",
    "metric_series",
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


def _figure_to_rgb(fig) -> np.ndarray:
    """Render a matplotlib figure (Agg) to an ``(H, W, 3)`` uint8 RGB array and close it."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def _pyplot():
    """pyplot on the Agg backend: no display needed, safe in worker processes and CI."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def draw_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str = "",
                          dpi: int = 100) -> np.ndarray:
    """Row-normalised confusion matrix (rows ground truth, columns prediction) as an RGB image.

    Each cell shows the percentage of its row (the class's recall on the diagonal); the
    colour bar gives the scale, the axes carry the class names.

    Args:
        matrix: ``(K, K)`` pixel counts, rows ground truth.
        class_names: ``K`` names.
        title: drawn above the matrix.
    """
    plt = _pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    norm = 100.0 * m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.45 * k + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=dpi, layout="constrained")
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the ground-truth row")
    names = [str(n) for n in class_names]
    ax.set_xticks(range(k), names, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if k <= 30:  # numbers stay readable up to about 30 classes
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 60 else "black")
    if title:
        ax.set_title(title)
    return _figure_to_rgb(fig)


def draw_curve(
    series: Dict[str, Tuple[Sequence[float], Sequence[float]]],
    title: str,
    size: Tuple[int, int] = (640, 400),
    xlabel: str = "iteration",
    ylabel: str = "",
    logy: bool = False,
) -> np.ndarray:
    """Line plot of ``{name: (xs, ys)}`` with axes and a legend placed outside the data; RGB uint8.

    Args:
        series: label -> x values and y values (non-finite y values are skipped).
        size: ``(width, height)`` in pixels.
        logy: logarithmic y axis (for learning rates).
    """
    plt = _pyplot()
    dpi = 100
    fig, ax = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, layout="constrained")
    for name, (xs, ys) in series.items():
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        keep = np.isfinite(ys)
        ax.plot(xs[keep], ys[keep], marker="o" if keep.sum() < 40 else None, markersize=3, linewidth=1.5,
                label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if series:
        # Below the axes, never over the lines (the OpenCV version wrote labels over the data).
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(len(series), 3), fontsize=8,
                  frameon=False)
    return _figure_to_rgb(fig)


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


def metric_series(rows: Sequence[dict], key: str) -> Tuple[List[int], List[float]]:
    """``(iterations counted from 1, values)`` of ``key`` in ``metrics.jsonl`` rows, skipping rows without it."""
    pts = [(r["iteration"] + 1, r[key]) for r in rows if r.get(key) is not None]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def save_training_curves(metrics_file: str, out_dir: str, metric_names: Sequence[str] = ()) -> List[str]:
    """``loss_curve.png`` (total and per-term loss), ``lr_curve.png`` and one PNG per metric from ``metrics.jsonl``."""
    rows = _read_metrics(metrics_file)
    paths = []
    terms = sorted({k for r in rows for k in r if k.startswith("loss")})
    # With one loss term the total is the same curve; draw it only when it adds something.
    loss_keys = (["total_loss"] if len(terms) > 1 else []) + terms
    if loss_keys:
        series = {k: metric_series(rows, k) for k in loss_keys}
        loss = draw_curve(series, "training loss", ylabel="loss")
        paths.append(save_png(os.path.join(out_dir, "loss_curve.png"), loss))
    if any(r.get("lr") is not None for r in rows):
        lr = draw_curve({"lr": metric_series(rows, "lr")}, "learning rate", ylabel="lr")
        paths.append(save_png(os.path.join(out_dir, "lr_curve.png"), lr))
    for name in metric_names:
        xs, ys = metric_series(rows, name)
        if xs:
            fname = name.replace("/", "_").replace("+", "_") + "_curve.png"
            paths.append(save_png(os.path.join(out_dir, fname), draw_curve({name: (xs, ys)}, name, ylabel=name)))
    return paths


def read_metrics(metrics_file: str) -> List[dict]:
    """Rows of a ``metrics.jsonl``, one per iteration (a resumed run's re-logged iterations merged)."""
    return _read_metrics(metrics_file)


def to_rgb(image_chw) -> np.ndarray:
    """``(3, H, W)`` uint8 RGB tensor/array -> ``(H, W, 3)`` RGB array (images are RGB end to end)."""
    arr = np.asarray(image_chw.cpu() if hasattr(image_chw, "cpu") else image_chw).transpose(1, 2, 0)
    return np.ascontiguousarray(arr).astype(np.uint8)


def publish_image(name: str, rgb: np.ndarray) -> bool:
    """Queue a picture for TensorBoard when a training loop is running; returns whether it was."""
    from segkit.engine.events import _CURRENT

    if not _CURRENT:
        return False
    _CURRENT[-1].put_image(name, rgb)
    return True


def save_evaluation_pictures(
    evaluator, out_dir: str, palette: Optional[Sequence[Tuple[int, int, int]]] = None
) -> List[str]:
    """Prediction panels of the evaluator's kept samples and one confusion-matrix PNG per variant.

    During training the same pictures also go to TensorBoard (``<dataset>/pred_<n>``,
    ``<dataset>/confusion/<variant>``).
    """
    names = evaluator.class_names
    palette = list(palette) if palette else default_palette(len(names))
    paths = []
    for n, s in enumerate(evaluator.samples):
        preds = {k: v.numpy() for k, v in s["pred"].items()}
        panel = draw_prediction_panel(to_rgb(s["image"]), s["sem_seg"].numpy(), preds, palette, names,
                                      evaluator.ignore_value)
        paths.append(save_png(os.path.join(out_dir, f"{evaluator.dataset_name}_pred_{n:02d}.png"), panel))
        publish_image(f"{evaluator.dataset_name}/pred_{n:02d}", panel)
    for key, matrix in getattr(evaluator, "confusion", {}).items():
        fname = f"{evaluator.dataset_name}_confusion_{key.replace('+', '_')}.png"
        picture = draw_confusion_matrix(matrix.numpy(), names, f"{evaluator.dataset_name}: {key}")
        paths.append(save_png(os.path.join(out_dir, fname), picture))
        publish_image(f"{evaluator.dataset_name}/confusion/{key}", picture)
    return paths
