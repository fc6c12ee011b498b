#!/usr/bin/env python
"""Print parameters and FLOPs per module of a segkit model (fvcore tables).

FLOPs follow fvcore's convention: one multiply-add counts as one flop.

Example::

    python tools/analyze_model.py --config-file configs/fashion_scenes/fcn32s_r18.yaml --size 512x512 --max-depth 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings


def parse_args(argv=None) -> argparse.Namespace:
    from segkit.tools.benchmark import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--size", type=parse_size, default=(512, 512), help="input HxW")
    p.add_argument("--max-depth", type=int, default=3, help="module depth of the table")
    p.add_argument("--json", default=None, help="also write totals and per-module counts here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from segkit.config import load_config
    from segkit.export import build_export_model
    from segkit.export.analysis import analyze_model

    cfg = load_config(args.config_file, args.opts)
    cfg.defrost()
    cfg.TEST.OPTIMIZE_MODEL = False  # count the architecture as trained (BN folding drops its parameters)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="export: no weights given")
        model = build_export_model(cfg, None if not cfg.MODEL.WEIGHTS else cfg.MODEL.WEIGHTS)
    result = analyze_model(model, args.size[0], args.size[1], args.max_depth)
    print(result.table)
    print(f"\nTotal: {result.total_params / 1e6:.3f} M parameters, {result.total_flops / 1e9:.3f} GFLOPs "
          f"(multiply-adds) at {args.size[0]}x{args.size[1]}")
    if result.unsupported_ops:
        print("Not counted (no fvcore formula): " + ", ".join(f"{k} x{v}" for k, v in sorted(result.unsupported_ops.items())))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in result.as_dict().items() if k != "table"}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
