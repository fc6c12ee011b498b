"""``segkit zoo``: the configs shipped with segkit, usable as ``segkit://<name>``.

Prints each config's name with its model (meta-architecture, backbone, head) and
dataset; ``--analyze`` adds parameters and GFLOPs at 512x512 (builds
each model with random weights; slow for the big VOC models). Measured results are in
docs/model_zoo.md.
"""
from __future__ import annotations

import argparse
import json
import warnings
from typing import Dict, List, Optional


def describe_config(name: str, analyze: bool = False, size: Optional[int] = None) -> Dict[str, object]:
    """Model, dataset (and with ``analyze``: parameters, GFLOPs) of a shipped config.

    Args:
        name: a :func:`segkit.model_zoo.list_configs` name.
        analyze: build the model (random weights) and count parameters and FLOPs.
        size: square input side for the FLOPs (default 512, the same for every config
            so that rows compare).
    """
    from segkit import model_zoo

    cfg = model_zoo.get_config(name)
    row: Dict[str, object] = {
        "config": name,
        "meta_arch": cfg.MODEL.META_ARCHITECTURE,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "head": cfg.MODEL.HEAD.NAME,
        "dataset": ", ".join(cfg.DATASETS.TRAIN),
        "num_classes": cfg.MODEL.NUM_CLASSES,
    }
    if analyze:
        from segkit.export import build_export_model
        from segkit.export.analysis import analyze_model

        side = size or 512
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAINED = ""
        cfg.MODEL.DEVICE = "cpu"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = analyze_model(build_export_model(cfg, None), side, side, max_depth=0)
        row.update(params_m=round(result.total_params / 1e6, 2), gflops=round(result.total_flops / 1e9, 2),
                   input=f"{side}x{side}")
    return row


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="segkit zoo", description=__doc__.split("\n\n")[0])
    p.add_argument("prefix", nargs="?", default="", help="only configs whose name starts with this (e.g. voc/)")
    p.add_argument("--bases", action="store_true", help="also list the Base-*.yaml files")
    p.add_argument("--analyze", action="store_true", help="also count parameters and GFLOPs (builds each model)")
    p.add_argument("--size", type=int, default=None, help="input side for --analyze (default 512)")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    from segkit import model_zoo

    names = model_zoo.list_configs(args.prefix, include_bases=args.bases)
    rows = [{"config": n} if n.split("/")[-1].startswith("Base-") else describe_config(n, args.analyze, args.size)
            for n in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max([len(r["config"]) for r in rows] + [10]) + 9
    for r in rows:
        ref = f"segkit://{r['config']}"
        if "meta_arch" not in r:
            print(f"{ref:<{width}} (base)")
            continue
        model = f"{r['meta_arch']} / {r['backbone']} / {r['head']}"
        size = f"  {r['params_m']:>7.2f} M  {r['gflops']:>8.2f} GFLOPs @ {r['input']}" if args.analyze else ""
        print(f"{ref:<{width}} {model:<50} {r['dataset']}{size}")
    return 0
    rows = [describe_config(n, args.analyze, args.size) for n in names if not n.split("/")[-1].startswith("Base-")]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"segkit://{r['config']:<48} {r['backbone']:<16} {r['head']:<20} {r['params_m']:>7} M "
                  f"{r['gflops']:>8} GFLOPs @ {r['input']}  {r['dataset']}")
    return 0
