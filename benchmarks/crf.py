#!/usr/bin/env python
"""Dense CRF: native PyTorch backend against pydensecrf, time per image and label agreement.

Two cases, as in the issue: VOC-sized (500x375, 21 labels) and Cityscapes-sized
(2048x1024, 19 labels), both with DeepLab v2's VOC parameters (w1=4, θα=121, θβ=5,
w2=3, θγ=3, 10 iterations). Inputs are real photographs (tests/data/photos, CC0,
resized) with a noisy colour-based soft classifier as the network's softmax, so the
CRF has real edges to follow. Runs of the two backends are interleaved and
repeated; the table reports medians and ratios (pydensecrf time / native time, so
> 1 means native is faster) and JSON is written with every run.

pydensecrf is single-threaded, so native runs with ``--threads 1`` by default on the
CPU for a like-for-like comparison; pass ``--threads 0`` to keep torch's default.
"native" builds both lattices from scratch on every run; "native (cached)" reuses
the smoothness kernel, whose lattice depends only on the image size and θγ (the
native backend keeps the last two in memory, as it would across a dataset of
equal-sized images). The machine this ran on may be shared: CPU time of the
process is reported beside wall time, and both backends are measured alike.

Example::

    python benchmarks/crf.py --repeats 5 --json out/crf.json
    python benchmarks/crf.py --device cuda --json out/crf_gpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import cv2
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, "tests", "data", "photos")
CASES = {"voc": ((500, 375), 21, "chelsea.png"), "cityscapes": ((2048, 1024), 19, "rocket.jpg")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per backend and case")
    p.add_argument("--device", default="cpu", help="device of the native backend (cpu, cuda, ...)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--no-reference", action="store_true", help="time native only (no pydensecrf)")
    p.add_argument("--json", default="", help="write results here")
    return p.parse_args(argv)


def make_input(size, k, photo, seed=0):
    """(H, W, 3) uint8 photo and a noisy colour soft classifier (k, H, W) over it."""
    image = cv2.cvtColor(cv2.imread(os.path.join(PHOTOS, photo)), cv2.COLOR_BGR2RGB)
    image = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
    rng = np.random.default_rng(seed)
    centres = image.reshape(-1, 3)[rng.choice(image.shape[0] * image.shape[1], k, replace=False)].astype(np.float32)
    dist = ((image[None].astype(np.float32) - centres[:, None, None]) ** 2).sum(-1)
    logits = -dist / 1500.0 + rng.normal(0.0, 1.0, dist.shape)
    probs = np.exp(logits - logits.max(0))
    return image, (probs / probs.sum(0)).astype(np.float32)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device=None):
    if device is not None:
        _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device is not None:
        _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def time_native(image, probs, device, iterations, cold=True):
    from segkit.postprocess import dense_crf
    from segkit.postprocess.dense_crf import set_kernel_cache_size

    if cold:
        set_kernel_cache_size(0)
    set_kernel_cache_size(2)
    image_t = torch.from_numpy(image).to(device)
    probs_t = torch.from_numpy(probs).to(device)
    wall, cpu, q = _timed(lambda: dense_crf(image_t, probs_t, iterations=iterations), device)
    return wall, cpu, q.argmax(0).cpu().numpy()


def time_reference(image, probs, iterations):
    from segkit.postprocess import dense_crf

    wall, cpu, q = _timed(lambda: dense_crf(image, probs, iterations=iterations, backend="pydensecrf"))
    return wall, cpu, q.argmax(0)


def _median(values):
    return statistics.median(values) if values else None


def run_case(name, args, device):
    size, k, photo = CASES[name]
    image, probs = make_input(size, k, photo)
    time_native(image[:64, :64], probs[:, :64, :64], device, 1)  # warm-up (allocator, kernels)
    runs = {"pydensecrf": ([], []), "native": ([], []), "native_cached": ([], [])}
    agreement = []
    for _ in range(args.repeats):
        if not args.no_reference:
            wall, cpu, labels_ref = time_reference(image, probs, args.iterations)
            runs["pydensecrf"][0].append(wall)
            runs["pydensecrf"][1].append(cpu)
        for key, cold in (("native", True), ("native_cached", False)):
            wall, cpu, labels = time_native(image, probs, device, args.iterations, cold=cold)
            runs[key][0].append(wall)
            runs[key][1].append(cpu)
            if not args.no_reference:
                agreement.append(float((labels_ref == labels).mean()))
    row = {"case": name, "height": size[1], "width": size[0], "labels": k, "iterations": args.iterations,
           "changed_vs_argmax": float((labels != probs.argmax(0)).mean())}
    for key, (walls, cpus) in runs.items():
        row[f"{key}_wall_s"], row[f"{key}_cpu_s"] = walls, cpus
        row[f"{key}_wall_median_s"], row[f"{key}_cpu_median_s"] = _median(walls), _median(cpus)
    if not args.no_reference:
        for key in ("native", "native_cached"):
            for clock in ("wall", "cpu"):
                row[f"speedup_{key}_{clock}"] = row[f"pydensecrf_{clock}_median_s"] / row[f"{key}_{clock}_median_s"]
        row["agreement"], row["agreement_min"] = agreement, min(agreement)
    return row


def _fmt(value, spec):
    return format(value, spec) if value is not None else "-"


def print_table(rows, args, device):
    print(f"dense CRF, DeepLab VOC parameters, {args.iterations} iterations; native on {device} "
          f"({torch.get_num_threads()} torch threads), pydensecrf on CPU (1 thread); medians of {args.repeats}; "
          "speedup = pydensecrf time / native time")
    head = (f"{'case':<11}{'size':>10}{'K':>4} {'clock':<5}{'pydensecrf s':>13}{'native s':>10}{'speedup':>9}"
            f"{'cached s':>10}{'speedup':>9}{'agree %':>10}")
    print(head)
    for r in rows:
        for clock in ("wall", "cpu"):
            print(f"{r['case']:<11}{r['width']:>5}x{r['height']:<4}{r['labels']:>4} {clock:<5}"
                  f"{_fmt(r[f'pydensecrf_{clock}_median_s'], '.3f'):>13}{_fmt(r[f'native_{clock}_median_s'], '.3f'):>10}"
                  f"{_fmt(r.get(f'speedup_native_{clock}'), '.2f'):>8}x"
                  f"{_fmt(r[f'native_cached_{clock}_median_s'], '.3f'):>10}"
                  f"{_fmt(r.get(f'speedup_native_cached_{clock}'), '.2f'):>8}x"
                  f"{_fmt(100 * r['agreement_min'] if 'agreement_min' in r else None, '.3f'):>10}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [run_case(name, args, device) for name in args.cases]
    print_table(rows, args, device)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        meta = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                "load_avg": os.getloadavg(), "repeats": args.repeats}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
