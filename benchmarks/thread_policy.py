#!/usr/bin/env python
"""Thread counts and OpenMP wait settings for the Predictor's model call, quiet and under load.

Measures the data behind the model thread policy (segkit/utils/threads.py): the
model call of ``segkit.Predictor`` (FCN on a dilated ResNet-50, 321x321, the
product benchmark's model) with each intra-op thread count, interleaved, on a quiet
machine and beside the competing 2-thread process of ``benchmarks/_machine.py``;
torchvision's ``fcn_resnet50`` at the process default (one thread per core) is
timed in the same rounds as the peer. OpenMP's wait settings (``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``) are read once when the OpenMP runtime loads, so each setting
runs in its own worker process that sets them before torch is imported; the
workers run one after the other and the list is run forwards then backwards, so
drifts hit every setting alike.

Per cell: median and minimum wall seconds, median process CPU seconds (all of its
threads; spinning at barriers shows here), the load average; calls during which
other processes (the competitor excepted) used more than 0.15 cores are left out
of the medians (``_machine.disturbed``) unless every call was.

    python benchmarks/thread_policy.py --threads 1 2 4 6 --repeats 4 --waits default PASSIVE SPIN0
    python benchmarks/thread_policy.py --threads 2 4 --waits default --split-batch --ort --no-torchvision

``--split-batch`` adds a batch of two images, in one call or split across two Python
threads with one intra-op thread each; ``--ort`` adds the exported bundle in ONNX
Runtime with its own thread pool, spinning on and off. Results of 2026-11-30:
``benchmarks/results/thread_policy_cpu.json``; what they mean: ``docs/embedding.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

WAITS = {
    "default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "SPIN0": {"GOMP_SPINCOUNT": "0"},
    "SPIN10k": {"GOMP_SPINCOUNT": "10000"},
}


def _worker(args) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import Competitor, OtherCPU, disturbed  # noqa: E402
    from models import SEGKIT_FCN_R50  # noqa: E402

    import segkit
    from segkit.config import get_cfg
    from segkit.utils.threads import choose_threads, intra_op_threads

    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # read at import; the competitor keeps the default
        os.environ.pop(key, None)
    cfg = get_cfg()
    cfg.merge_from_list([v if isinstance(v, str) else str(v) for v in SEGKIT_FCN_R50] + ["MODEL.DEVICE", "cpu"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = segkit.Predictor(cfg)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    arr, _ = predictor._prepare(image, "image", "RGB")
    batch = torch.from_numpy(arr[None]).permute(0, 3, 1, 2).contiguous()
    default_threads = torch.get_num_threads()
    runners = {}
    for n in args.threads:
        def run(n=n):
            with torch.inference_mode(), intra_op_threads(n):
                predictor.pipeline.inference(batch)
        runners[f"predictor model, {n} threads"] = run
    if args.split_batch:
        # A batch of two images: one call with n threads, or split across two Python threads
        # (the GIL is released in the ops), one image and one intra-op thread each.
        from concurrent.futures import ThreadPoolExecutor

        pair = batch.repeat(2, 1, 1, 1)
        for n in args.threads:
            def run_pair(n=n):
                with torch.inference_mode(), intra_op_threads(n):
                    predictor.pipeline.inference(pair)
            runners[f"batch of 2, one call, {n} threads"] = run_pair
        pool = ThreadPoolExecutor(2)

        def one_image():
            torch.set_num_threads(1)  # this thread's OpenMP teams
            with torch.inference_mode():
                predictor.pipeline.inference(batch)

        def run_split():
            for f in [pool.submit(one_image) for _ in range(2)]:
                f.result()
            torch.set_num_threads(default_threads)
        runners["batch of 2, split across 2 Python threads x 1"] = run_split
    if args.ort:
        # The exported bundle in ONNX Runtime: its own thread pool, with and without spinning.
        import tempfile

        import onnxruntime as ort

        from segkit.export import export

        tmp = tempfile.mkdtemp()
        path = export(cfg, None, "onnx", os.path.join(tmp, "m.onnx"))
        feed = np.ascontiguousarray(arr[None])
        for n, spin in ((2, "1"), (2, "0"), (4, "1")):
            options = ort.SessionOptions()
            options.intra_op_num_threads = n
            options.add_session_config_entry("session.intra_op.allow_spinning", spin)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name

            def run_ort(session=session, name=name):
                session.run(None, {name: feed})
            runners[f"onnxruntime, {n} threads, spinning {'on' if spin == '1' else 'off'}"] = run_ort
    if args.torchvision:
        import torchvision.models.segmentation as tvseg

        tv = tvseg.fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False).eval()
        x = torch.randn(1, 3, args.size, args.size)

        def run_tv():
            with torch.inference_mode():
                tv(x)
        runners[f"torchvision fcn_resnet50, default {default_threads} threads"] = run_tv
    for fn in runners.values():
        fn()
        fn()
    cells = []
    for condition in ("quiet", "loaded"):
        comp = Competitor(args.competitor_threads) if condition == "loaded" else None
        if comp:
            comp.__enter__()
        try:
            chosen = choose_threads(args.size * args.size, 64 * 64)
            load = os.getloadavg()
            times = {name: [] for name in runners}
            for _ in range(args.repeats):
                for name, fn in runners.items():
                    c0 = time.process_time()
                    with OtherCPU([comp.pid] if comp else []) as meter:
                        fn()
                    times[name].append((meter.wall, time.process_time() - c0, disturbed(meter)))
        finally:
            if comp:
                comp.__exit__(None, None, None)
        for name, all_runs in times.items():
            runs = [(w, c) for w, c, bad in all_runs if not bad] or [(w, c) for w, c, _ in all_runs]
            cells.append({"undisturbed": sum(not bad for _, _, bad in all_runs), "of": len(all_runs),
                          "wait": args.wait, "condition": condition, "runner": name,
                          "median_s": round(statistics.median(w for w, _ in runs), 4),
                          "min_s": round(min(w for w, _ in runs), 4),
                          "cpu_median_s": round(statistics.median(c for _, c in runs), 4),
                          "runs_s": [round(w, 4) for w, _, _ in all_runs], "loadavg": [round(v, 2) for v in load],
                          "policy_choice": chosen})
    return {"wait": args.wait, "env": WAITS[args.wait], "default_threads": default_threads,
            "interop_threads": torch.get_num_interop_threads(), "cells": cells}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--waits", nargs="+", default=["default", "PASSIVE"], choices=sorted(WAITS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2, help="passes over --waits (alternately forwards and backwards)")
    p.add_argument("--size", type=int, default=321)
    p.add_argument("--competitor-threads", type=int, default=2, help="threads of the competing process")
    p.add_argument("--no-torchvision", dest="torchvision", action="store_false")
    p.add_argument("--ort", action="store_true", help="also the exported bundle in ONNX Runtime, spinning on/off")
    p.add_argument("--split-batch", action="store_true", help="also a batch of 2: one call, or one image per thread")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--wait", default="default", help=argparse.SUPPRESS)
    p.add_argument("--out", default="output/benchmarks/thread_policy.json")
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(_worker(args)))
        return 0
    results = []
    print(f"competitor: {args.competitor_threads} threads; load {os.getloadavg()}", flush=True)
    for r in range(args.rounds):
        for wait in (args.waits if r % 2 == 0 else list(reversed(args.waits))):
            env = dict(os.environ, **WAITS[wait])
            env.pop("OMP_NUM_THREADS", None)  # the process default: one thread per core
            cmd = [sys.executable, __file__, "--worker", "--wait", wait, "--repeats", str(args.repeats),
                   "--size", str(args.size), "--competitor-threads", str(args.competitor_threads),
                   "--threads", *map(str, args.threads)]
            if not args.torchvision:
                cmd.append("--no-torchvision")
            cmd += ["--split-batch"] if args.split_batch else []
            cmd += ["--ort"] if args.ort else []
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            res = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            res["round"] = r
            results.append(res)
            for c in res["cells"]:
                print(f"round {r} {wait:<8} {c['condition']:<6} {c['runner']:<48} median {c['median_s']:.3f} "
                      f"min {c['min_s']:.3f} cpu {c['cpu_median_s']:.3f}  load {c['loadavg'][0]:.2f} "
                      f"policy {c['policy_choice']} clean {c['undisturbed']}/{c['of']}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"results": results, "cpu_count": os.cpu_count()}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
