#!/usr/bin/env python
"""Dense CRF: native PyTorch backend against pydensecrf, time per image and label agreement.

Every case of the speed target: 2, 3, 19 and 21 labels on 480x320, 500x375 and
2048x1024 images, DeepLab v2's VOC parameters (w1=4, θα=121, θβ=5, w2=3, θγ=3,
10 iterations) and the library's default settings (the native backend's thread
policy, segkit.utils.threads; pydensecrf is single-threaded). Inputs are real
photographs (tests/data/photos, CC0, resized) with a noisy colour-based soft
classifier as the network's softmax, so the CRF has real edges to follow.

Two conditions, in the same run: ``quiet`` (nothing started by the benchmark) and
``loaded`` (a competing process doing 2-thread matrix products, started before
the round and stopped after it). Runs of the backends are interleaved; the table
reports medians and minimums and the ratio pydensecrf time / native time (> 1:
native is faster). "native" builds both lattices on every call (cold);
"cached" reuses the smoothness kernel as the default cache does across images of
one size.

Every timed call also measures the CPU time that *other* processes (not this one,
not the competitor) used meanwhile, from /proc; a call during which they used
more than 0.15 cores is marked disturbed. Medians are over undisturbed calls when
there are any, else over all calls and the row says DISTURBED: such a figure is
not a measurement of the code. Load averages are printed and saved.

``--profile`` instead times, per case, the CPU seconds of each stage of both
backends on one thread (minimum over ``--repeats`` calls): the native backend's
setup (unary, features, layout), smoothness lattice build, its normalisation,
appearance lattice build, its normalisation and the mean-field iterations, next
to its whole cold call; pydensecrf's setup, smoothness kernel, appearance kernel
(each its lattice and normalisation, built when the kernel is added) and
inference, next to its whole call. "parts / whole" checks that the stages cover
the call.

Example::

    python benchmarks/crf.py --quick --json benchmarks/results/crf_cpu.json
    python benchmarks/crf.py --profile --repeats 3 --sizes 480x320 2048x1024
    python benchmarks/crf.py --device cuda --conditions quiet --json out/crf_gpu.json
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import Competitor, OtherCPU, disturbed, load_average  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, "tests", "data", "photos")
SIZES = {"480x320": ((480, 320), "chelsea.png"), "500x375": ((500, 375), "chelsea.png"),
         "2048x1024": ((2048, 1024), "rocket.jpg")}
LABELS = (2, 3, 19, 21)
KEYS = ("pydensecrf", "native", "cached")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--labels", nargs="+", type=int, default=list(LABELS))
    p.add_argument("--conditions", nargs="+", default=["quiet", "loaded"], choices=["quiet", "loaded"])
    p.add_argument("--repeats", type=int, default=5, help="interleaved calls per backend, case and condition")
    p.add_argument("--quick", action="store_true", help="2 repeats")
    p.add_argument("--device", default="cpu", help="device of the native backend (cpu, cuda, ...)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for native (0: the library's policy, the default)")
    p.add_argument("--competitor-threads", type=int, default=2)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--no-reference", action="store_true", help="time native only (no pydensecrf)")
    p.add_argument("--json", default="", help="write results here")
    p.add_argument("--profile", action="store_true",
                   help="CPU seconds of each stage of both backends on one thread, instead of the timing rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 2
    return args


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


def _timed(fn, device, exclude):
    _sync(device)
    cpu = time.process_time()
    with OtherCPU(exclude) as meter:
        result = fn()
        _sync(device)
    return {"wall": meter.wall, "cpu": time.process_time() - cpu, "other_cpu": meter.other,
            "disturbed": disturbed(meter)}, result


def _native(image_t, probs_t, iterations, cold):
    from segkit.postprocess import dense_crf
    from segkit.postprocess.dense_crf import set_kernel_cache_size

    if cold:
        set_kernel_cache_size(0)
        set_kernel_cache_size(2)
    return dense_crf(image_t, probs_t, iterations=iterations).argmax(0).cpu().numpy()


def _reference(image, probs, iterations):
    from segkit.postprocess import dense_crf

    return dense_crf(image, probs, iterations=iterations, backend="pydensecrf").argmax(0)


def _summary(runs):
    clean = [r for r in runs if not r["disturbed"]]
    use = clean or runs
    out = {"runs": runs, "undisturbed": len(clean), "disturbed": not clean}
    for clock in ("wall", "cpu"):
        values = [r[clock] for r in use]
        out[f"{clock}_median_s"] = statistics.median(values) if values else None
        out[f"{clock}_min_s"] = min(values) if values else None
    return out


def run_condition(condition, args, device, cases, competitor_pid=None):
    """Interleaved rounds over every case: pydensecrf, native (cold), native (cached)."""
    exclude = [competitor_pid] if competitor_pid else []
    runs = {(size, k): {key: [] for key in KEYS} for size, k, _, _ in cases}
    agreement = {(size, k): [] for size, k, _, _ in cases}
    threads_used = {}
    for _ in range(args.repeats):
        for size, k, image, probs in cases:
            image_t, probs_t = torch.from_numpy(image).to(device), torch.from_numpy(probs).to(device)
            ref = None
            if not args.no_reference:
                timing, ref = _timed(lambda: _reference(image, probs, args.iterations), torch.device("cpu"), exclude)
                runs[(size, k)]["pydensecrf"].append(timing)
                print(f"  {condition} {size} K={k} pydensecrf: {timing['wall']:.3f} s wall, {timing['cpu']:.3f} s CPU, "
                      f"others {timing['other_cpu']:.2f} s CPU", flush=True)
            for key, cold in (("native", True), ("cached", False)):
                seen = []
                timing, labels = _timed(lambda: seen.append(_threads_now(probs.size)) or _native(image_t, probs_t, args.iterations, cold),
                                        device, exclude)
                runs[(size, k)][key].append(timing)
                threads_used[(size, k)] = seen[0]
                print(f"  {condition} {size} K={k} {key}: {timing['wall']:.3f} s wall, {timing['cpu']:.3f} s CPU, "
                      f"others {timing['other_cpu']:.2f} s CPU", flush=True)
                if ref is not None:
                    agreement[(size, k)].append(float((ref == labels).mean()))
    rows = []
    for size, k, image, probs in cases:
        row = {"condition": condition, "size": size, "labels": k, "iterations": args.iterations,
               "native_threads_policy": threads_used[(size, k)]}
        for key in KEYS:
            if runs[(size, k)][key]:
                row[key] = _summary(runs[(size, k)][key])
        if not args.no_reference:
            for key in ("native", "cached"):
                for clock in ("wall", "cpu"):
                    row[f"speedup_{key}_{clock}"] = row["pydensecrf"][f"{clock}_median_s"] / row[key][f"{clock}_median_s"]
                row[f"speedup_{key}_wall_min"] = row["pydensecrf"]["wall_min_s"] / row[key]["wall_min_s"]
            row["agreement_min"] = min(agreement[(size, k)])
        rows.append(row)
    return rows


def _threads_now(work):
    """The thread count the native backend's policy picks for this job (pixels x labels) right now."""
    from segkit.postprocess.dense_crf import _crf_threads

    return torch.get_num_threads() if _FIXED_THREADS[0] else _crf_threads(work)


_FIXED_THREADS = [False]


NATIVE_STAGES = ("setup", "smoothness lattice", "smoothness normalisation", "appearance lattice",
                 "appearance normalisation", "mean field")
REFERENCE_STAGES = ("setup", "smoothness kernel", "appearance kernel", "mean field")


def _cpu_min(fn, repeats):
    """(minimum CPU seconds of this process over ``repeats`` calls of fn, fn's last result)."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best, result


def profile_native(image, probs, iterations=10, repeats=3):
    """CPU seconds of each stage of the native backend on one thread, and of its whole cold call.

    Args:
        image: (H, W, 3) uint8.
        probs: (K, H, W) float32 softmax.

    Returns:
        ``{stage: seconds}`` for every name in NATIVE_STAGES, plus ``"whole"``.
    """
    from segkit.postprocess.permutohedral import PermutohedralLattice
    from segkit.utils.threads import intra_op_threads, thread_override

    dc = _crf_module()
    params = dc.CRFParams(iterations=iterations)
    images, probs_t = torch.from_numpy(image).permute(2, 0, 1)[None], torch.from_numpy(probs)[None]
    k, h, w = probs.shape

    def setup():
        unary = dc._unary_from_probs(probs_t)
        smooth, appearance = dc._features(images.permute(0, 2, 3, 1).contiguous(), params)
        return smooth[:1], appearance, unary.permute(0, 2, 3, 1).reshape(h * w, k).contiguous()

    cache = dc._CACHE_SIZE[0]
    times = {}
    with thread_override(1), intra_op_threads(1):
        times["setup"], (smooth, appearance, rows) = _cpu_min(setup, repeats)
        ops = []
        for name, feats, weight in (("smoothness", smooth, params.w2), ("appearance", appearance, params.w1)):
            times[f"{name} lattice"], lattice = _cpu_min(lambda: PermutohedralLattice(feats), repeats)
            times[f"{name} normalisation"], op = _cpu_min(lambda: dc._normalised_operator(lattice, weight), repeats)
            ops.append(op)
        times["mean field"], _ = _cpu_min(lambda: dc._mean_field(rows, ops, iterations), repeats)
        dc.set_kernel_cache_size(0)  # cold: both lattices built in the call
        try:
            times["whole"], _ = _cpu_min(lambda: dc.dense_crf_batch(images, probs_t, params), repeats)
        finally:
            dc.set_kernel_cache_size(cache)
    return times


def profile_reference(image, probs, iterations=10, repeats=3):
    """CPU seconds of each stage of pydensecrf (single-threaded) and of its whole call; None without it.

    Returns:
        ``{stage: seconds}`` for every name in REFERENCE_STAGES, plus ``"whole"``.
    """
    dc = _crf_module()
    try:
        dcrf = dc._import_pydensecrf()
    except ImportError:
        return None
    params = dc.CRFParams(iterations=iterations)
    k, h, w = probs.shape
    rgb = np.ascontiguousarray(image)
    best = dict.fromkeys(REFERENCE_STAGES, float("inf"))
    for _ in range(max(1, repeats)):
        # Each stage needs the previous ones on the same object: time them in sequence, keep each minimum.
        marks = [time.process_time()]
        crf = dcrf.DenseCRF2D(w, h, k)
        crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, dc._PROB_FLOOR, 1.0)).reshape(k, -1)))
        marks.append(time.process_time())
        crf.addPairwiseGaussian(sxy=params.theta_gamma, compat=params.w2)
        marks.append(time.process_time())
        crf.addPairwiseBilateral(sxy=params.theta_alpha, srgb=params.theta_beta, rgbim=rgb, compat=params.w1)
        marks.append(time.process_time())
        crf.inference(iterations)
        marks.append(time.process_time())
        for i, stage in enumerate(REFERENCE_STAGES):
            best[stage] = min(best[stage], marks[i + 1] - marks[i])
    best["whole"], _ = _cpu_min(lambda: dc.dense_crf(image, probs, iterations=iterations, backend="pydensecrf"),
                                repeats)
    return best


def _crf_module():
    # segkit.postprocess exports the function dense_crf under the module's name.
    return importlib.import_module("segkit.postprocess.dense_crf")


def profile_rows(cases, iterations, repeats):
    """One row per case: both backends' stage times (see profile_native / profile_reference)."""
    rows = []
    for size, k, image, probs in cases:
        native = profile_native(image, probs, iterations, repeats)
        reference = profile_reference(image, probs, iterations, repeats)
        row = {"size": size, "labels": k, "iterations": iterations, "repeats": repeats, "threads": 1,
               "native": native, "pydensecrf": reference,
               "native_parts_over_whole": sum(native[s] for s in NATIVE_STAGES) / native["whole"]}
        if reference is not None:
            row["pydensecrf_parts_over_whole"] = sum(reference[s] for s in REFERENCE_STAGES) / reference["whole"]
        rows.append(row)
        print(f"  profiled {size} K={k}", flush=True)
    return rows


def print_profile(rows):
    print("CPU seconds per stage, one thread, minimum over the repeats; 'parts/whole': the stages' sum over the "
          "whole call (near 1: the stages cover the call)")
    for r in rows:
        nat, ref = r["native"], r["pydensecrf"]
        stages = " | ".join(f"{s} {nat[s]:.3f}" for s in NATIVE_STAGES)
        print(f"{r['size']:>9} K={r['labels']:<3} native whole {nat['whole']:.3f} ({stages}; parts/whole "
              f"{r['native_parts_over_whole']:.2f})")
        if ref is None:
            print(f"{'':>9} {'':<5} pydensecrf: not installed")
        else:
            stages = " | ".join(f"{s} {ref[s]:.3f}" for s in REFERENCE_STAGES)
            print(f"{'':>9} {'':<5} pydensecrf whole {ref['whole']:.3f} ({stages}; parts/whole "
                  f"{r['pydensecrf_parts_over_whole']:.2f}); pydensecrf / native {ref['whole'] / nat['whole']:.2f}x")


def _fmt(value, spec):
    return format(value, spec) if value is not None else "-"


def print_table(rows, args, device, loads):
    print(f"dense CRF, DeepLab VOC parameters, {args.iterations} iterations; native on {device} "
          f"(threads: {'policy' if not args.threads else args.threads}), pydensecrf on CPU (1 thread); "
          f"{args.repeats} interleaved calls per case; speedup = pydensecrf time / native time (> 1: native faster)")
    print(f"load average before/after each condition: {loads}")
    head = (f"{'cond':<7}{'size':>10}{'K':>4}{'thr':>4} {'ref med/min s':>15}{'native med/min s':>18}{'x med':>7}{'x min':>7}"
            f"{'cached med s':>13}{'x med':>7}{'x cpu':>7}{'agree %':>9}  clean runs (ref/native/cached)")
    print(head)
    for r in rows:
        ref, nat, cac = r.get("pydensecrf"), r["native"], r["cached"]
        flag = " DISTURBED" if any(x and x["disturbed"] for x in (ref, nat, cac)) else ""
        print(f"{r['condition']:<7}{r['size']:>10}{r['labels']:>4}{r['native_threads_policy']:>4} "
              f"{_fmt(ref and ref['wall_median_s'], '.3f'):>7}/{_fmt(ref and ref['wall_min_s'], '.3f'):<7}"
              f"{_fmt(nat['wall_median_s'], '.3f'):>10}/{_fmt(nat['wall_min_s'], '.3f'):<7}"
              f"{_fmt(r.get('speedup_native_wall'), '.2f'):>6}x{_fmt(r.get('speedup_native_wall_min'), '.2f'):>6}x"
              f"{_fmt(cac['wall_median_s'], '.3f'):>13}{_fmt(r.get('speedup_cached_wall'), '.2f'):>6}x"
              f"{_fmt(r.get('speedup_native_cpu'), '.2f'):>6}x"
              f"{_fmt(100 * r['agreement_min'] if 'agreement_min' in r else None, '.3f'):>9}  "
              f"{ref['undisturbed'] if ref else '-'}/{nat['undisturbed']}/{cac['undisturbed']}{flag}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        os.environ["SEGKIT_NUM_THREADS"] = str(args.threads)
        _FIXED_THREADS[0] = True
    device = torch.device(args.device)
    cases = []
    for size in args.sizes:
        (wh, photo) = SIZES[size]
        for k in args.labels:
            image, probs = make_input(wh, k, photo)
            cases.append((size, k, image, probs))
    _native(torch.from_numpy(cases[0][2][:64, :64]).to(device), torch.from_numpy(cases[0][3][:, :64, :64]).to(device), 1, True)
    if args.profile:
        return _profile_main(args, cases)
    rows, loads = [], {}
    for condition in args.conditions:
        before = load_average()
        if condition == "loaded":
            with Competitor(args.competitor_threads) as comp:
                rows += run_condition(condition, args, device, cases, comp.pid)
        else:
            rows += run_condition(condition, args, device, cases)
        loads[condition] = {"before": before, "after": load_average()}
    print_table(rows, args, device, loads)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        meta = {"torch": torch.__version__, "device": str(device), "threads": args.threads or "policy",
                "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                "load_avg": loads, "repeats": args.repeats, "competitor_threads": args.competitor_threads,
                "disturbed_threshold_cores": 0.15,
                "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def _profile_main(args, cases) -> int:
    before = load_average()
    rows = profile_rows(cases, args.iterations, args.repeats)
    loads = {"before": before, "after": load_average()}
    print_profile(rows)
    print(f"load average before/after: {loads}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        meta = {"torch": torch.__version__, "threads": 1, "clock": "process CPU time", "load_avg": loads,
                "cpu": platform.processor() or platform.machine(), "repeats": args.repeats,
                "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "profile": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
