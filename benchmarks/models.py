#!/usr/bin/env python
"""Model benchmark: parameters, GFLOPs, inference and training-step time, % of matmul peak.

For every built-in model (each ``configs/voc/*.yaml``) and the torchvision peers
(``fcn_resnet50`` against segkit's FCN head on a dilated ResNet-50 with the same
architecture, and ``deeplabv3_resnet50`` for reference), at one input size:

* parameters, and GFLOP of one forward pass (fvcore ``FlopCountAnalysis`` counts
  multiply-adds; reported here x2 so that it is comparable with the matmul's 2*n^3);
* median inference time (``torch.inference_mode``, eval) and training-step time
  (forward + loss + backward, train mode); the peers' runs are interleaved so that
  machine load drifts hit them alike, and each built-in model is then measured on
  its own (built, timed, freed: they do not all fit in memory at once);
* achieved GFLOP/s in inference as a fraction of a 2048x2048 float32 matmul's
  GFLOP/s measured in the same run (before, between the repeats, and after).

segkit models run eagerly and through :func:`segkit.modeling.optimize.optimize_for_inference`
(batch norm folded, channels-last); training runs NCHW and channels-last. Models
short of the peak target get a profile of where their inference time goes.

    python benchmarks/models.py --quick                 # ~10 minutes on a 2-core CPU
    python benchmarks/models.py --size 321 --repeats 5  # the issue's setting

Prints a table and writes JSON (``--out``).
"""
from __future__ import annotations

import argparse
import gc
import glob
import json
import logging
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import get_cfg, load_config
from segkit.modeling import build_model
from segkit.modeling.optimize import freeze_traced, optimize_for_inference
from segkit.utils.device import resolve_device

ROOT = Path(__file__).resolve().parents[1]
# segkit's FCN head on a dilated ResNet-50 laid out exactly as torchvision's fcn_resnet50:
# torchvision keeps the previous rate in the first block of a dilated stage (layer3.0
# rate 1, layer4.0 rate 2), and its FCNHead is 3x3 conv(512, no bias)-BN-ReLU-dropout 0.1-1x1.
SEGKIT_FCN_R50 = [
    "MODEL.BACKBONE.NAME", "ResNet", "MODEL.RESNETS.DEPTH", 50, "MODEL.RESNETS.OUTPUT_STRIDE", 8,
    "MODEL.RESNETS.RES4_DILATIONS", [1, 2, 2, 2, 2, 2], "MODEL.RESNETS.RES5_DILATIONS", [2, 4, 4],
    "MODEL.RESNETS.OUT_FEATURES", ["res5"], "MODEL.RESNETS.NORM", "BN",
    "MODEL.HEAD.NAME", "FCNHead", "MODEL.HEAD.IN_FEATURES", ["res5"],
    "MODEL.FCN.HIDDEN_CHANNELS", 512, "MODEL.FCN.DROPOUT", 0.1, "MODEL.FCN.NORM", "BN",
    "MODEL.NUM_CLASSES", 21, "MODEL.BACKBONE.PRETRAINED", "",
]


@dataclass
class Entry:
    """One model variant: how to run inference and a training step on it."""

    name: str
    model: nn.Module
    infer: Callable[[], object]
    train: Optional[Callable[[], object]]
    group: str
    flop_model: nn.Module
    infer_times: List[float] = field(default_factory=list)
    train_times: List[float] = field(default_factory=list)


class _Logits(nn.Module):
    """torchvision segmentation models return ``{"out": ...}``; fvcore wants a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out["out"] if isinstance(out, dict) else out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of an ``n x n`` float32 matmul (``2 n^3`` flops)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    times = [_timed(lambda: torch.mm(a, b), device) for _ in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e9


def count_gflop(model: nn.Module, x: torch.Tensor) -> float:
    """2 x fvcore's multiply-add count of one forward (elementwise ops are not counted)."""
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, (x,))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analysis.total()
    model.train(was_training)
    return 2 * total / 1e9


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _zero_grad(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


def _segkit_entries(name: str, cfg, images: torch.Tensor, targets: torch.Tensor, group: str,
                    variants: bool, jit: bool) -> List[Entry]:
    model = build_model(cfg).eval()
    device = next(model.parameters()).device
    x, t = images.to(device), targets.to(device)
    fast = optimize_for_inference(model)

    def train_step(m: nn.Module, inp: torch.Tensor) -> None:
        m.train()
        _zero_grad(m)
        sum(m(inp, t).values()).backward()

    def infer(m: nn.Module, inp: torch.Tensor) -> Callable[[], object]:
        def run():
            m.eval()
            with torch.inference_mode():
                return m(inp)
        return run

    entries = [Entry(f"{name} [optimized]", fast, infer(fast, x), None, group, model)]
    if jit:
        frozen = freeze_traced(fast, x)
        entries.append(Entry(f"{name} [jit-frozen]", frozen, infer(frozen, x), None, group, model))
    if variants:
        entries.append(Entry(f"{name} [eager]", model, infer(model, x), lambda: train_step(model, x), group, model))
        cl = build_model(cfg).to(memory_format=torch.channels_last)
        cl.load_state_dict(model.state_dict())
        x_cl = x.contiguous(memory_format=torch.channels_last)
        entries.append(Entry(f"{name} [channels-last]", cl, infer(cl, x_cl), lambda: train_step(cl, x_cl),
                             group, model))
    else:
        entries[0].train = lambda: train_step(model, x)
    return entries


def _torchvision_entry(name: str, builder: Callable[..., nn.Module], images: torch.Tensor, targets: torch.Tensor,
                       device: torch.device, group: str) -> Entry:
    model = builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=False).to(device).eval()
    mean = torch.tensor([123.675, 116.28, 103.53], device=device).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375], device=device).view(1, 3, 1, 1)
    x, t = (images.to(device) - mean) / std, targets.to(device)  # torchvision expects normalised input

    def infer():
        model.eval()
        with torch.inference_mode():
            return model(x)["out"]

    def train():
        model.train()
        _zero_grad(model)
        F.cross_entropy(model(x)["out"], t, ignore_index=255).backward()

    # deeplabv3's image-pooling branch has BatchNorm over a 1x1 map: training needs batch > 1.
    trainable = images.shape[0] > 1 or "deeplab" not in name
    return Entry(name, model, infer, train if trainable else None, group, _Logits(model))


def _voc_configs(pattern: str) -> List[str]:
    # Base-*.yaml are fragments other configs inherit, not models.
    return sorted(p for p in glob.glob(str(ROOT / pattern)) if not Path(p).name.startswith("Base-"))


def _inputs(args):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=g) * 255
    targets = torch.randint(0, 21, (args.batch, args.size, args.size), generator=g)
    return images, targets


def peer_entries(args, device: torch.device) -> List[Entry]:
    """torchvision's fcn_resnet50 and deeplabv3_resnet50, segkit's FCN-R50 in its variants."""
    import torchvision.models.segmentation as tvseg

    images, targets = _inputs(args)
    entries = [_torchvision_entry("torchvision fcn_resnet50", tvseg.fcn_resnet50, images, targets, device, "peer")]
    cfg = get_cfg()
    cfg.merge_from_list([v if isinstance(v, str) else str(v) for v in SEGKIT_FCN_R50] + ["MODEL.DEVICE", str(device)])
    entries += _segkit_entries("segkit FCN dilated R50", cfg, images, targets, "peer", variants=True, jit=True)
    entries.append(_torchvision_entry("torchvision deeplabv3_resnet50", tvseg.deeplabv3_resnet50, images, targets,
                                      device, "reference"))
    return entries


def config_entries(args, device: torch.device, path: str) -> List[Entry]:
    """segkit's model of one config (optimised inference, eager training step)."""
    images, targets = _inputs(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(path, ["MODEL.DEVICE", str(device), "MODEL.BACKBONE.PRETRAINED", ""])
        return _segkit_entries(Path(path).stem, cfg, images, targets, "built-in", variants=False,
                               jit=not args.quick)


def profile_limits(entry: Entry, top: int = 6) -> List[Dict[str, object]]:
    """Where one inference run spends its time: the top ops by self time (share of total)."""
    from torch.profiler import profile

    with profile() as prof:
        entry.infer()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3)} for e in events[:top]]


def measure(entries: List[Entry], args, device: torch.device, peaks: List[float]) -> List[dict]:
    """Warm up, then time the entries' runs interleaved; a matmul peak between repeats."""
    flops = {}
    for e in entries:
        x = torch.rand(args.batch, 3, args.size, args.size, device=device) * 255
        flops[e.name] = count_gflop(e.flop_model, (x - 120) / 58 if e.name.startswith("torchvision") else x)
    for e in entries:  # warm-up (allocator, oneDNN/cuDNN algorithm choice)
        for _ in range(args.warmup):
            e.infer()
            if e.train:
                e.train()
    for rep in range(args.repeats):
        for e in entries:
            e.infer_times.append(_timed(e.infer, device))
        peaks.append(matmul_gflops(device))
        for e in entries:
            if e.train:
                e.train_times.append(_timed(e.train, device))
    peak = statistics.median(peaks)
    rows = []
    for e in entries:
        row = _row(e, flops[e.name])
        if row["gflop"] / row["infer_s"] / peak < args.target and "[optimized]" in e.name and not args.no_profile:
            row["time_by_op"] = profile_limits(e)
        rows.append(row)
        logging.info("%s: %.3f s inference, %s s training", e.name, row["infer_s"], row["train_s"])
    return rows


def _row(e: Entry, gflop: float) -> dict:
    infer = statistics.median(e.infer_times)
    return {
        "model": e.name, "group": e.group, "params_M": round(_params(e.flop_model) / 1e6, 2),
        "gflop": round(gflop, 1), "infer_s": round(infer, 4), "infer_min_s": round(min(e.infer_times), 4),
        "infer_runs_s": [round(t, 4) for t in e.infer_times],
        "train_s": round(statistics.median(e.train_times), 4) if e.train_times else None,
        "train_runs_s": [round(t, 4) for t in e.train_times], "gflops_per_s": round(gflop / infer, 1),
    }


def run(args) -> Dict[str, object]:
    """Peers measured together (interleaved); then each config's model alone, freed after."""
    device = resolve_device(args.device)
    torch.manual_seed(0)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    peaks = [matmul_gflops(device)]
    rows = measure(peer_entries(args, device), args, device, peaks)
    for path in ([] if args.peers_only else _voc_configs(args.configs)):
        try:
            entries = config_entries(args, device, path)
        except Exception as exc:  # noqa: BLE001 - a config that does not build is reported, not fatal
            logging.warning("skipping %s: %s: %s", Path(path).stem, type(exc).__name__, exc)
            continue
        rows += measure(entries, args, device, peaks)
        del entries
        gc.collect()
    peaks.append(matmul_gflops(device))
    peak = statistics.median(peaks)
    for r in rows:
        r["fraction_of_peak"] = round(r["gflops_per_s"] / peak, 3)
    return {
        "size": args.size, "batch": args.batch, "repeats": args.repeats, "device": str(device),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "matmul_gflops_runs": [round(p, 1) for p in peaks],
        "matmul_gflops": round(peak, 1), "loadavg_before": load_before,
        "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None, "models": rows,
        "ratios": _ratios(rows), "target_fraction": args.target,
    }


def _ratios(rows: List[dict]) -> Dict[str, Optional[float]]:
    by = {r["model"]: r for r in rows}
    tv = by.get("torchvision fcn_resnet50")
    out = {}
    if tv is None:
        return out
    for name in ("segkit FCN dilated R50 [optimized]", "segkit FCN dilated R50 [jit-frozen]",
                 "segkit FCN dilated R50 [eager]", "segkit FCN dilated R50 [channels-last]"):
        r = by.get(name)
        if r:
            out[f"inference speedup {name} vs torchvision"] = round(tv["infer_s"] / r["infer_s"], 3)
            out[f"inference speedup (min times) {name} vs torchvision"] = round(tv["infer_min_s"] / r["infer_min_s"], 3)
            if r["train_s"]:
                out[f"training speedup {name} vs torchvision"] = round(tv["train_s"] / r["train_s"], 3)
    return out


def format_table(result: Dict[str, object]) -> str:
    head = (f"{'model':<44} {'params M':>9} {'GFLOP':>7} {'infer s':>8} {'train s':>8} {'GFLOP/s':>8} "
            f"{'% peak':>7} {'min inf s':>9}")
    lines = [f"input {result['batch']}x3x{result['size']}x{result['size']} on {result['device']} "
             f"({result['threads']} threads), matmul 2048^2 fp32: {result['matmul_gflops']} GFLOP/s "
             f"(runs {result['matmul_gflops_runs']}), load avg {result['loadavg_before']} -> "
             f"{result['loadavg_after']}", head, "-" * len(head)]
    for r in result["models"]:
        train = f"{r['train_s']:.3f}" if r["train_s"] else "-"
        lines.append(f"{r['model']:<44} {r['params_M']:>9.2f} {r['gflop']:>7.1f} {r['infer_s']:>8.3f} {train:>8} "
                     f"{r['gflops_per_s']:>8.1f} {100 * r['fraction_of_peak']:>6.1f}% {r['infer_min_s']:>9.3f}")
    lines.append("")
    lines += [f"{k}: {v:.3f}x" for k, v in result["ratios"].items()]
    short = [r for r in result["models"] if r.get("time_by_op")]
    for r in short:
        ops = ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in r["time_by_op"])
        lines.append(f"below {100 * result['target_fraction']:.0f}% of peak: {r['model']}: time by op: {ops}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="segkit model benchmark (see module docstring)")
    p.add_argument("--size", type=int, default=None, help="square input side (default 321, DeepLab's VOC crop; "
                   "193 with --quick)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed runs per model (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--configs", default="configs/voc/*.yaml", help="glob of built-in model configs")
    p.add_argument("--peers-only", action="store_true", help="only the torchvision/segkit FCN comparison")
    p.add_argument("--quick", action="store_true", help="short run: input 193 (unless --size), 3 repeats, no "
                   "TorchScript variant of the built-in models")
    p.add_argument("--target", type=float, default=0.6, help="fraction of matmul peak a model should reach")
    p.add_argument("--no-profile", action="store_true", help="skip the per-op profile of slow models")
    p.add_argument("--out", default="output/benchmarks/models.json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = min(args.repeats, 3), 1
    args.size = args.size or (193 if args.quick else 321)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("segkit").setLevel(logging.WARNING)
    result = run(args)
    print(format_table(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
