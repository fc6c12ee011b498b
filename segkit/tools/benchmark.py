#!/usr/bin/env python
"""Measure inference latency (p50/p90/p99), throughput and peak memory.

Runs the whole pipeline (uint8 image -> normalisation -> model -> upsampling ->
arg-max) at every ``--sizes`` x ``--batch-sizes`` setting on random images, on any
device, in eager PyTorch or from an exported TorchScript/ONNX bundle. Prints a
table and writes the rows as JSON.

Examples::

    python tools/benchmark.py --config-file configs/fashion_scenes/fcn32s_r18.yaml \\
        --sizes 256x256 512x512 --batch-sizes 1 4 --iters 50 --json bench.json
    python tools/benchmark.py --backend onnx --bundle model.onnx --sizes 512x512
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def parse_size(text: str):
    """``"HxW"`` or ``"S"`` (square) -> ``(H, W)``."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size '{text}' is not HxW (e.g. 512x1024) or S.")
    return tuple(parts)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=None, help="config of the model (backend pytorch)")
    p.add_argument("--weights", default=None, help="checkpoint; timings do not depend on it")
    p.add_argument("--backend", choices=("pytorch", "predictor", "torchscript", "onnx"), default="pytorch",
                   help="pytorch: model + upsampling + arg-max; predictor: segkit.Predictor end to end "
                        "(TTA/CRF as configured); torchscript/onnx: an exported --bundle")
    p.add_argument("--bundle", default=None, help="exported file (backends torchscript/onnx)")
    p.add_argument("--device", default=None, help="device (default: MODEL.DEVICE, else auto)")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[(512, 512)], help="HxW sizes")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1])
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per setting before the timed ones")
    p.add_argument("--iters", type=int, default=20,
                   help="timed calls per setting: exactly this many, each timed alone (torch.utils.benchmark)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of torch and onnxruntime (0 = their defaults)")
    p.add_argument("--amp", choices=("off", "fp16", "bf16"), default="off", help="autocast (backend pytorch)")
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from segkit.export.benchmark import benchmark_runner, format_table, make_runner
    from segkit.utils.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    model = predictor = None
    if args.backend in ("pytorch", "predictor"):
        if not args.config_file:
            sys.exit(f"--config-file is required for --backend {args.backend}")
        import warnings

        import segkit
        from segkit.config import load_config
        from segkit.export import build_export_model

        cfg = load_config(args.config_file, args.opts)
        if args.device:
            cfg.MODEL.DEVICE = args.device
        device = resolve_device(cfg.MODEL.DEVICE)
        with warnings.catch_warnings():  # timings do not depend on the weights
            warnings.filterwarnings("ignore", message=".*no weights given")
            if args.backend == "pytorch":
                model = build_export_model(cfg, args.weights)
            else:
                predictor = segkit.Predictor(cfg, weights=args.weights)
    else:
        if not args.bundle:
            sys.exit(f"--bundle is required for --backend {args.backend}")
        device = resolve_device(args.device or "auto")
    run = make_runner(args.backend, device, model=model, bundle=args.bundle, predictor=predictor,
                      threads=args.threads or None, amp=args.amp)
    results = benchmark_runner(run, args.sizes, args.batch_sizes, device, args.backend, args.warmup, args.iters)
    print(format_table(results))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "amp": args.amp,
                       "timer": "torch.utils.benchmark (timer + Measurement, one call per measurement)",
                       "results": [r.as_dict() for r in results]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
