"""``segkit plot``: loss, learning-rate and mIoU curves of one or more runs on shared axes.

Reads each run's ``metrics.jsonl`` (the file the trainer writes into OUTPUT_DIR) and
draws, with matplotlib, one PNG per quantity in which every run is one line:
``loss.png`` (total loss), ``lr.png``, and ``<metric>.png`` for each evaluation metric
found (``sem_seg/mIoU``, ``sem_seg+DenseCRF/mIoU``, ... ; ``--metrics`` picks others).
Also prints each run's last value of every plotted metric and its best mIoU.

Example::

    segkit plot output/run_a output/run_b --output plots/
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List, Optional, Sequence, Tuple


def _labels(run_dirs: Sequence[str]) -> List[str]:
    """Short distinct labels: the folder names, or longer tails where those collide."""
    parts = [os.path.normpath(os.path.abspath(d)).split(os.sep) for d in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{n}:{d}" for n, d in enumerate(run_dirs)]


def load_runs(run_dirs: Sequence[str]) -> Dict[str, List[dict]]:
    """label -> metrics rows; a missing ``metrics.jsonl`` raises naming the run."""
    from segkit.engine.visualization import read_metrics

    runs = {}
    for label, d in zip(_labels(run_dirs), run_dirs):
        path = d if d.endswith(".jsonl") else os.path.join(d, "metrics.jsonl")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"segkit plot: {d} has no metrics.jsonl (is it a training run's OUTPUT_DIR?)")
        runs[label] = read_metrics(path)
    return runs


def plot_runs(runs: Dict[str, List[dict]], out_dir: str, metrics: Sequence[str] = ()) -> List[str]:
    """Write one PNG per quantity; returns the paths.

    Args:
        runs: label -> rows of ``metrics.jsonl`` (as :func:`load_runs` returns).
        out_dir: output folder.
        metrics: evaluation metrics to plot (default: every ``*/mIoU`` key found).
    """
    from segkit.engine.visualization import draw_curve, metric_series, save_png

    keys = sorted({k for rows in runs.values() for r in rows for k in r})
    metrics = list(metrics) or [k for k in keys if k.endswith("/mIoU")]
    plots: List[Tuple[str, str, str, bool]] = [("total_loss", "training loss", "loss.png", False),
                                               ("lr", "learning rate", "lr.png", False)]
    plots += [(m, m, m.replace("/", "_").replace("+", "_") + ".png", False) for m in metrics]
    paths = []
    for key, title, fname, logy in plots:
        series = {label: metric_series(rows, key) for label, rows in runs.items()}
        series = {k: v for k, v in series.items() if v[0]}
        if series:
            img = draw_curve(series, title, size=(800, 480), ylabel=key, logy=logy)
            paths.append(save_png(os.path.join(out_dir, fname), img))
    return paths


def summary(runs: Dict[str, List[dict]]) -> str:
    lines = []
    for label, rows in runs.items():
        last = rows[-1] if rows else {}
        best = [(r[k], k, r["iteration"] + 1) for r in rows for k in r if k.endswith("/mIoU") and r[k] is not None]
        text = f"{label}: {len(rows)} logged iterations, last iteration {last.get('iteration', -1) + 1}"
        if best:
            v, k, it = max(best)
            text += f"; best {k} {v:.4f} at iteration {it}"
        lines.append(text)
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="segkit plot", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training output folders (or metrics.jsonl files)")
    p.add_argument("--output", default="plots", help="folder for the PNGs (default: ./plots)")
    p.add_argument("--metrics", nargs="*", default=(), help="evaluation metrics to plot (default: every */mIoU)")
    args = p.parse_args(argv)
    runs = load_runs(args.runs)
    paths = plot_runs(runs, args.output, args.metrics)
    print(summary(runs))
    print("Wrote " + ", ".join(paths))
    return 0
