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
Every native run builds its lattices from scratch (no caching across runs).

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


def time_native(image, probs, device, iterations):
    from segkit.postprocess import dense_crf

    image_t = torch.from_numpy(image).to(device)
    probs_t = torch.from_numpy(probs).to(device)
    _sync(device)
    start = time.perf_counter()
    q = dense_crf(image_t, probs_t, iterations=iterations)
    _sync(device)
    return time.perf_counter() - start, q.argmax(0).cpu().numpy()


def time_reference(image, probs, iterations):
    from segkit.postprocess import dense_crf

    start = time.perf_counter()
    q = dense_crf(image, probs, iterations=iterations, backend="pydensecrf")
    return time.perf_counter() - start, q.argmax(0)


def run_case(name, args, device):
    size, k, photo = CASES[name]
    image, probs = make_input(size, k, photo)
    time_native(image[:64, :64], probs[:, :64, :64], device, 1)  # warm-up (allocator, kernels)
    native, reference, agreement = [], [], []
    for _ in range(args.repeats):
        t_ref, labels_ref = (None, None) if args.no_reference else time_reference(image, probs, args.iterations)
        t_nat, labels_nat = time_native(image, probs, device, args.iterations)
        native.append(t_nat)
        if t_ref is not None:
            reference.append(t_ref)
            agreement.append(float((labels_ref == labels_nat).mean()))
    row = {
        "case": name, "height": size[1], "width": size[0], "labels": k, "iterations": args.iterations,
        "native_s": native, "native_median_s": statistics.median(native),
        "changed_vs_argmax": float((labels_nat != probs.argmax(0)).mean()),
    }
    if reference:
        row.update({
            "pydensecrf_s": reference, "pydensecrf_median_s": statistics.median(reference),
            "speedup": statistics.median(reference) / statistics.median(native),
            "agreement": agreement, "agreement_min": min(agreement),
        })
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [run_case(name, args, device) for name in args.cases]
    print(f"dense CRF, DeepLab VOC parameters, {args.iterations} iterations; native on {device} "
          f"({torch.get_num_threads()} torch threads), pydensecrf on CPU (1 thread); medians of {args.repeats}")
    print(f"{'case':<11}{'size':>11}{'K':>4}{'pydensecrf s':>14}{'native s':>10}{'speedup':>9}{'agreement %':>13}")
    for r in rows:
        ref = f"{r['pydensecrf_median_s']:.3f}" if "pydensecrf_median_s" in r else "-"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        agree = f"{100 * r['agreement_min']:.4f}" if "agreement_min" in r else "-"
        print(f"{r['case']:<11}{r['width']:>5}x{r['height']:<5}{r['labels']:>4}{ref:>14}{r['native_median_s']:>10.3f}"
              f"{speed:>9}{agree:>13}")
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
