#!/usr/bin/env python
"""The model zoo's numbers: parameters, GFLOPs and CPU latency of each shipped config.

For every config of :func:`segkit.model_zoo.list_configs` (random weights: the
numbers do not depend on them): parameters and fvcore GFLOPs (multiply-adds, as
``segkit analyze``) of one 512x512 image. For the configs named by ``--latency``
(default: every FashionScenes config, i.e. the ResNet-18/VGG CPU models next to the
timm MobileNetV3/ConvNeXt ones): the whole exported pipeline (uint8 image ->
labels) is exported to ONNX and timed with onnxruntime on the CPU at 512x512,
batch 1, ``--threads`` threads (p50 over ``--iters`` runs). Load average before and
after is recorded: on a shared machine the latencies are inflated alike.

    python benchmarks/model_zoo.py --out benchmarks/results/model_zoo_cpu.json

Prints a Markdown table (docs/model_zoo.md) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import warnings


def latency_ms(name: str, size: int, threads: int, iters: int) -> float:
    """p50 latency in ms of the exported ONNX pipeline of a shipped config."""
    import torch

    from segkit import model_zoo
    from segkit.export import export
    from segkit.export.benchmark import benchmark_runner, make_runner

    opts = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAINED", "", "POSTPROCESS.CHAIN", "[]"]
    cfg = model_zoo.get_config(name, opts)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export(cfg, None, "onnx", os.path.join(tmp, "model.onnx"))
        run = make_runner("onnx", torch.device("cpu"), bundle=path, threads=threads)
        (result,) = benchmark_runner(run, [(size, size)], [1], torch.device("cpu"), "onnx", warmup=1, iters=iters)
    return result.p50_ms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--latency", nargs="*", default=None, help="configs to time (default: fashion_scenes/*)")
    p.add_argument("--out", default=None, help="JSON file to write")
    args = p.parse_args(argv)
    from segkit import model_zoo
    from segkit.tools.zoo import describe_config

    names = model_zoo.list_configs()
    timed = set(args.latency if args.latency is not None else model_zoo.list_configs("fashion_scenes/"))
    load_before = os.getloadavg()
    rows = []
    for name in names:
        row = describe_config(name, analyze=True, size=args.size)
        if name in timed:
            row["onnx_cpu_p50_ms"] = round(latency_ms(name, args.size, args.threads, args.iters), 1)
        rows.append(row)
        print(f"{name}: {row}", file=sys.stderr, flush=True)
    meta = {"size": args.size, "threads": args.threads, "iters": args.iters,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(f"| config | model | params (M) | GFLOPs @{args.size} | ONNX CPU p50 ms @{args.size} ({args.threads} thread) | dataset |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        lat = r.get("onnx_cpu_p50_ms", "")
        print(f"| `segkit://{r['config']}` | {r['meta_arch']} / {r['backbone']} / {r['head']} | {r['params_m']:.2f} | "
              f"{r['gflops']:.2f} | {lat} | {r['dataset']} |")
    print(f"\nload average before {meta['loadavg_before']}, after {meta['loadavg_after']}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
