#!/usr/bin/env python
"""Gridding report for a stack of dilation rates or for a config's backbone.

Examples:
    python tools/gridding.py --rates 2 2 2            # holes: a checkerboard
    python tools/gridding.py --rates 1 2 5 --map      # HDC sawtooth: no holes
    python tools/gridding.py --config configs/voc/deeplabv2_resnet101_hdc_duc.yaml
    python tools/gridding.py --rates 1 2 9 --json

Exit status 1 when a stack grids (handy in CI for a config collection).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from segkit.modeling.gridding import GriddingReport, analyze_stack, check_model_gridding


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rates", type=int, nargs="+", help="dilation rate of each layer, bottom to top")
    src.add_argument("--config", help="a segkit YAML config; its backbone's dilated stacks are analysed")
    p.add_argument("--kernel", type=int, default=3, help="kernel size of every layer (default 3)")
    p.add_argument("--map", action="store_true", help="print the receptive field as '#' (read) / '.' (hole)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... (with --config)")
    return p


def _reports(args) -> List[GriddingReport]:
    if args.rates:
        return [analyze_stack(args.rates, args.kernel)]
    from segkit.config import load_config
    from segkit.modeling.backbone import build_backbone

    cfg = load_config(args.config, args.opts)
    cfg.MODEL.BACKBONE.PRETRAINED = ""
    return check_model_gridding(build_backbone(cfg), on_gridding="off")


def _as_dict(r: GriddingReport) -> dict:
    return {
        "where": r.where, "rates": list(r.rates), "kernel_sizes": list(r.kernel_sizes),
        "receptive_field": r.receptive_field, "offsets": list(r.offsets), "holes": list(r.holes),
        "used_fraction": r.used_fraction, "max_distances": list(r.max_distances),
        "common_factor": r.common_factor, "violations": r.violations(),
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    reports = _reports(args)
    if args.json:
        print(json.dumps([_as_dict(r) for r in reports], indent=2))
    else:
        if not reports:
            print("No dilated stack found (no convolution with dilation > 1).")
        for r in reports:
            print(r.summary())
            if args.map and r.grid_map():
                print(r.grid_map())
    return int(any(r.grids for r in reports))


if __name__ == "__main__":
    sys.exit(main())
