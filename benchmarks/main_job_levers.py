#!/usr/bin/env python
"""The main job's levers (issue 15): mIoU against CPU seconds, one curve per training recipe.

Reads the measurements kept in ``benchmarks/results/main_job_levers.json`` (each run's
evaluations, the CPU seconds spent up to each, and the load), prints them as a table with
the test-time levers (multi-scale/flip inputs, dense CRF parameters from
``tools/crf_search.py``) and draws ``docs/images/main_job_levers.png``.

The runs themselves are single-threaded training runs of ``configs/fashion_scenes/main.yaml``
with the changes their labels name (``OMP_NUM_THREADS=1``, ``DATALOADER.NUM_WORKERS 0``,
``POSTPROCESS.CHAIN []``), timed with ``/usr/bin/time``; see docs/engine.md.

    python benchmarks/main_job_levers.py [--results FILE] [--out PNG]
"""
from __future__ import annotations

import argparse
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "main_job_levers.json")
OUT = os.path.join(ROOT, "docs", "images", "main_job_levers.png")


def table(results: dict) -> str:
    """The measurements as text: one line per run evaluation, then the test-time levers."""
    lines = [f"{'run':60s} {'iteration':>9s} {'CPU s':>7s} {'mIoU':>6s}"]
    for run in results["runs"].values():
        for it, cpu, miou in run["points"]:
            lines.append(f"{run['label'][:60]:60s} {it:9d} {cpu:7.0f} {miou:6.3f}")
    lines.append("")
    for row in results.get("test_time", {}).get("rows", []):
        cpu = "" if row["cpu_seconds"] is None else f"{row['cpu_seconds']:.1f} CPU s"
        lines.append(f"test-time inputs: {row['lever']:45s} mIoU {row['mIoU']:.3f} {cpu}")
    search = results.get("crf_search")
    if search:
        d, b = search["deeplab_voc_values"], search["best"]
        lines.append(f"dense CRF on held-out train: none {search['no_crf']:.3f}, DeepLab's VOC values {d['mIoU']:.3f}, "
                     f"searched (w1 {b['w1']:g}, theta_alpha {b['theta_alpha']:g}, theta_beta {b['theta_beta']:g}) "
                     f"{b['mIoU']:.3f}")
    return "\n".join(lines)


def plot(results: dict, out: str) -> str:
    """mIoU against CPU seconds, a line per run; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for run in results["runs"].values():
        xs = [0.0] + [p[1] for p in run["points"]]
        ys = [0.0] + [p[2] for p in run["points"]]
        ax.plot(xs, ys, marker="o", label=f"{run['label']} (load {run['load_avg_1min_at_end']:g})")
    ax.axhline(0.65, color="grey", linestyle="--", linewidth=1)
    ax.text(5, 0.655, "target 0.65", color="grey", fontsize=8)
    ax.set_xlabel("CPU seconds (single-threaded run)")
    ax.set_ylabel("val mIoU (network, one scale)")
    ax.set_ylim(0, 0.7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=RESULTS, help="measurements JSON")
    parser.add_argument("--out", default=OUT, help="picture to write")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        results = json.load(f)
    print(table(results))
    print(f"wrote {plot(results, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
