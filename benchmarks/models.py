#!/usr/bin/env python
"""Model benchmark: parameters, GFLOPs, inference and training-step time, fraction of the machine's peak.

For every built-in model (each ``configs/voc/*.yaml``) and the torchvision peers
(``fcn_resnet50`` against segkit's FCN head on a dilated ResNet-50 with the same
architecture, and ``deeplabv3_resnet50`` for reference), at 321x321 by default:

* parameters, and GFLOP of one forward pass (fvcore ``FlopCountAnalysis`` counts
  multiply-adds; reported here x2 so that it is comparable with a GEMM's 2*m*n*k);
* median and minimum inference time (``torch.inference_mode``, eval) and
  training-step time; the peers' runs are interleaved so that machine load drifts
  hit them alike, and each built-in model is then measured on its own;
* achieved GFLOP/s in inference as a fraction of the machine's peak, defined as the
  best GEMM rate measured in the same run: the fastest of many runs of ``torch.mm``
  and of oneDNN convolutions of GEMM shape (1x1 and 3x3, channels-last), before the
  models, between their rounds and after them (:func:`gemm_rates`).

Disturbance: every timed inference also reads from /proc how much CPU time other
processes used meanwhile; a run during which they used more than 0.15 cores is
disturbed. Medians are over undisturbed runs; a model with none gets no fraction of
peak (the table says DISTURBED) instead of a wrong figure.

Products (:func:`product_comparison`): ``segkit.Predictor`` with default settings
(optimised model, thread policy), the exported ONNX Runtime bundle and torchvision's
``fcn_resnet50`` wrapped the way a product would (to tensor, normalise, forward,
arg-max), end to end on the same image, interleaved, quiet and then with a competing
2-thread process the benchmark starts and stops itself.

segkit models run through :func:`segkit.modeling.optimize.optimize_for_inference`
(batch norm folded, channels-last; the Predictor's default), and for the FCN-R50
peer also eagerly, channels-last only and jit-frozen. Models short of the target
get a profile of where their inference time goes.

    python benchmarks/models.py --quick --out benchmarks/results/models_quick_cpu.json
    python benchmarks/models.py --products-only --repeats 5
    python benchmarks/models.py --repeats 5               # the issue's setting
    python benchmarks/models.py --configs "configs/voc/fcn*_vgg16.yaml" --no-peers --no-products --no-train

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

import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import get_cfg, load_config
from segkit.modeling import build_model
from segkit.modeling.optimize import freeze_traced, optimize_for_inference
from segkit.utils.device import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import Competitor, OtherCPU, disturbed  # noqa: E402

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
    # A random-weight model of no dataset: the default (FashionScenes, 11 classes) would not match.
    "DATASETS.TRAIN", [], "DATASETS.TEST", [],
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
    infer_disturbed: List[bool] = field(default_factory=list)


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


def _timed_checked(fn: Callable[[], object], device: torch.device, exclude=()):
    """(seconds, disturbed): disturbed when other processes used > 0.15 cores meanwhile (from /proc)."""
    with OtherCPU(exclude) as meter:
        _sync(device)
        fn()
        _sync(device)
    return meter.wall, disturbed(meter)


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of an ``n x n`` float32 matmul (``2 n^3`` flops)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    times = [_timed(lambda: torch.mm(a, b), device) for _ in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e9


def gemm_rates(device: torch.device, repeats: int = 10) -> Dict[str, float]:
    """Best GFLOP/s (fastest of ``repeats`` runs) of the same 2048^3 GEMM three ways.

    ``torch.mm`` (MKL/cuBLAS), and oneDNN/cuDNN convolutions of GEMM shape in
    channels-last: a 1x1 convolution (2048 -> 2048 channels over 2048 pixels) and a
    3x3 one (512 -> 512 channels, 9 taps, over 2048 pixels: 2 x 2048 x 4608 x 512
    flops). The machine's ceiling is the best of them: models run on convolutions,
    not on ``torch.mm``. The best run, not the median: a rate can only be
    under-measured by interference.
    """
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    x1 = torch.randn(1, n, 32, 64, device=device).contiguous(memory_format=torch.channels_last)
    w1 = torch.randn(n, n, 1, 1, device=device).contiguous(memory_format=torch.channels_last)
    x3 = torch.randn(1, 512, 32, 64, device=device).contiguous(memory_format=torch.channels_last)
    w3 = torch.randn(512, 512, 3, 3, device=device).contiguous(memory_format=torch.channels_last)
    cases = {
        "torch.mm": (lambda: torch.mm(a, b), 2 * n**3),
        "conv1x1": (lambda: F.conv2d(x1, w1), 2 * n**3),
        "conv3x3": (lambda: F.conv2d(x3, w3, padding=1), 2 * 2048 * 512 * 9 * 512),
    }
    rates = {}
    with torch.inference_mode():
        for name, (fn, flop) in cases.items():
            fn()
            rates[name] = flop / min(_timed(fn, device) for _ in range(repeats)) / 1e9
    return rates


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


def _product_runners(args, device: torch.device, tmpdir: str):
    """The three products on the same architecture and image: callables taking an (H, W, 3) uint8 image."""
    import torchvision.models.segmentation as tvseg

    import segkit
    from segkit.export import ExportedSegmenter, export

    cfg = get_cfg()
    cfg.merge_from_list([v if isinstance(v, str) else str(v) for v in SEGKIT_FCN_R50] + ["MODEL.DEVICE", str(device)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = segkit.Predictor(cfg)  # default settings: optimised model, thread policy
        runners = {"segkit Predictor": lambda img: predictor(img).labels}
        try:
            onnx_path = export(cfg, None, "onnx", os.path.join(tmpdir, "fcn_r50.onnx"))
            ort = ExportedSegmenter(onnx_path)
            runners["segkit ONNX Runtime"] = lambda img: ort(img)["labels"]
        except Exception as exc:  # noqa: BLE001 - onnx/onnxruntime missing: reported, not fatal
            logging.warning("ONNX Runtime pipeline skipped: %s: %s", type(exc).__name__, exc)
    tv = tvseg.fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False).to(device).eval()
    mean = torch.tensor([123.675, 116.28, 103.53], device=device).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375], device=device).view(1, 3, 1, 1)

    def torchvision_pipeline(img: np.ndarray) -> np.ndarray:
        # What a product writes around torchvision's model: to tensor, normalise, forward, arg-max.
        with torch.inference_mode():
            x = torch.from_numpy(img).permute(2, 0, 1)[None].to(device).float()
            return tv((x - mean) / std)["out"].argmax(1)[0].cpu().numpy()

    runners["torchvision fcn_resnet50"] = torchvision_pipeline

    def torchvision_policy(img: np.ndarray) -> np.ndarray:
        # The same, with segkit's thread policy: separates the policy's share of a gain from the model's.
        from segkit.utils.threads import choose_threads, intra_op_threads

        with intra_op_threads(choose_threads(img.shape[0] * img.shape[1], 64 * 64, ops="long")):
            return torchvision_pipeline(img)

    runners["torchvision + segkit threads"] = torchvision_policy
    return runners


def product_comparison(args, device: torch.device) -> List[dict]:
    """Predictor vs torchvision's fcn_resnet50 vs the ONNX Runtime bundle, end to end, same architecture.

    Interleaved calls on one photo-sized image, quiet and then with a competing
    2-thread process started here; per condition the median and minimum of the
    undisturbed calls (or of all, flagged, when every call was disturbed).
    """
    import tempfile

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.product_size, args.product_size, 3), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        runners = _product_runners(args, device, tmpdir)
        for fn in runners.values():
            fn(image)  # warm-up
        for condition in ("quiet", "loaded"):
            comp = Competitor(2) if condition == "loaded" else None
            if comp:
                comp.__enter__()
            try:
                times = {name: [] for name in runners}
                load = os.getloadavg()
                for _ in range(args.repeats):
                    for name, fn in runners.items():
                        times[name].append(_timed_checked(lambda: fn(image), device, [comp.pid] if comp else []))
            finally:
                if comp:
                    comp.__exit__(None, None, None)
            for name, runs in times.items():
                clean = [t for t, bad in runs if not bad]
                use = clean or [t for t, _ in runs]
                rows.append({"product": name, "condition": condition, "median_s": round(statistics.median(use), 4),
                             "min_s": round(min(use), 4), "runs_s": [round(t, 4) for t, _ in runs],
                             "undisturbed_runs": len(clean), "disturbed": not clean, "loadavg": list(load)})
    return rows


def format_products(rows: List[dict]) -> List[str]:
    if not rows:
        return []
    lines = ["", "products end to end (uint8 image -> labels), FCN on dilated ResNet-50, interleaved; "
             "speed = torchvision time / this time"]
    by = {(r["product"], r["condition"]): r for r in rows}
    for r in rows:
        tv = by.get(("torchvision fcn_resnet50", r["condition"]))
        ratio = f"{tv['median_s'] / r['median_s']:.2f}x (min {tv['min_s'] / r['min_s']:.2f}x)" if tv else "-"
        flag = " DISTURBED" if r["disturbed"] else ""
        lines.append(f"  {r['condition']:<7} {r['product']:<26} median {r['median_s']:.3f} s  min {r['min_s']:.3f} s"
                     f"  vs torchvision {ratio}  clean {r['undisturbed_runs']}/{len(r['runs_s'])}{flag}")
    for name in {r["product"] for r in rows}:
        q, l_ = by.get((name, "quiet")), by.get((name, "loaded"))
        if q and l_:
            lines.append(f"  slowdown under one competing process, {name}: {l_['median_s'] / q['median_s']:.2f}x")
    return lines


def _voc_configs(patterns) -> List[str]:
    # Base-*.yaml are fragments other configs inherit, not models.
    patterns = [patterns] if isinstance(patterns, str) else patterns
    found = {p for pattern in patterns for p in glob.glob(str(ROOT / pattern))}
    return sorted(p for p in found if not Path(p).name.startswith("Base-"))


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
            if e.train and not args.no_train:
                e.train()
    for rep in range(args.repeats):
        for e in entries:
            wall, bad = _timed_checked(e.infer, device)
            e.infer_times.append(wall)
            e.infer_disturbed.append(bad)
        peaks.append(max(gemm_rates(device, repeats=3).values()))
        for e in entries:
            if e.train and not args.no_train:
                e.train_times.append(_timed(e.train, device))
    peak = max(peaks)
    rows = []
    for e in entries:
        row = _row(e, flops[e.name])
        if (row["gflop"] / row["infer_s"] / peak < args.target and "[optimized]" in e.name and not args.no_profile
                and not row["disturbed"]):
            row["time_by_op"] = profile_limits(e)
        rows.append(row)
        logging.info("%s: %.3f s inference, %s s training", e.name, row["infer_s"], row["train_s"])
    return rows


def _row(e: Entry, gflop: float) -> dict:
    # Only undisturbed runs count; with none, the row is kept but flagged and gets no fraction of peak.
    clean = [t for t, bad in zip(e.infer_times, e.infer_disturbed) if not bad]
    use = clean or e.infer_times
    infer = statistics.median(use)
    return {
        "model": e.name, "group": e.group, "params_M": round(_params(e.flop_model) / 1e6, 2),
        "gflop": round(gflop, 1), "infer_s": round(infer, 4), "infer_min_s": round(min(use), 4),
        "infer_runs_s": [round(t, 4) for t in e.infer_times], "infer_runs_disturbed": e.infer_disturbed,
        "undisturbed_runs": len(clean), "disturbed": not clean,
        "train_s": round(statistics.median(e.train_times), 4) if e.train_times else None,
        "train_runs_s": [round(t, 4) for t in e.train_times], "gflops_per_s": round(gflop / infer, 1),
    }


def run(args) -> Dict[str, object]:
    """Peers measured together (interleaved); then each config's model alone, freed after."""
    device = resolve_device(args.device)
    torch.manual_seed(0)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    gemm_before = gemm_rates(device, repeats=args.gemm_repeats)
    peaks = [max(gemm_before.values())]
    peers = not (args.products_only or args.no_peers)
    rows = measure(peer_entries(args, device), args, device, peaks) if peers else []
    for path in ([] if (args.peers_only or args.products_only) else _voc_configs(args.configs)):
        try:
            entries = config_entries(args, device, path)
        except Exception as exc:  # noqa: BLE001 - a config that does not build is reported, not fatal
            logging.warning("skipping %s: %s: %s", Path(path).stem, type(exc).__name__, exc)
            continue
        rows += measure(entries, args, device, peaks)
        del entries
        gc.collect()
    gemm_after = gemm_rates(device, repeats=args.gemm_repeats)
    peaks.append(max(gemm_after.values()))
    peak = max(peaks)
    for r in rows:
        # A disturbed round is not reported as a fraction of the machine's peak.
        r["fraction_of_peak"] = None if r["disturbed"] else round(r["gflops_per_s"] / peak, 3)
    products = product_comparison(args, device) if not args.no_products else []
    return {
        "gemm_gflops_before": {k: round(v, 1) for k, v in gemm_before.items()},
        "gemm_gflops_after": {k: round(v, 1) for k, v in gemm_after.items()},
        "best_gemm_gflops": round(peak, 1), "products": products,
        "size": args.size, "batch": args.batch, "repeats": args.repeats, "device": str(device),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "matmul_gflops_runs": [round(p, 1) for p in peaks],
        "matmul_gflops": round(peak, 1), "peak_definition": "best of torch.mm, 1x1 and 3x3 conv GEMMs",
        "loadavg_before": load_before,
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
             f"({result['threads']} threads); machine peak = best GEMM rate {result['best_gemm_gflops']} GFLOP/s "
             f"(before {result['gemm_gflops_before']}, after {result['gemm_gflops_after']}, between rounds "
             f"{result['matmul_gflops_runs']}); load avg {result['loadavg_before']} -> {result['loadavg_after']}",
             head, "-" * len(head)]
    for r in result["models"]:
        train = f"{r['train_s']:.3f}" if r["train_s"] else "-"
        frac = "DISTURB" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:>6.1f}%"
        lines.append(f"{r['model']:<44} {r['params_M']:>9.2f} {r['gflop']:>7.1f} {r['infer_s']:>8.3f} {train:>8} "
                     f"{r['gflops_per_s']:>8.1f} {frac:>7} {r['infer_min_s']:>9.3f}")
    lines.append("")
    lines += [f"{k}: {v:.3f}x" for k, v in result["ratios"].items()]
    disturbed_rows = [r["model"] for r in result["models"] if r["disturbed"]]
    if disturbed_rows:
        lines.append(f"DISTURBED (other processes used > 0.15 cores in every timed run; no fraction of peak "
                     f"reported): {', '.join(disturbed_rows)}")
    lines += format_products(result.get("products", []))
    short = [r for r in result["models"] if r.get("time_by_op")]
    for r in short:
        ops = ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in r["time_by_op"])
        lines.append(f"below {100 * result['target_fraction']:.0f}% of peak: {r['model']}: time by op: {ops}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="segkit model benchmark (see module docstring)")
    p.add_argument("--size", type=int, default=None, help="square input side (default 321, DeepLab's VOC crop)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed runs per model (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--configs", nargs="+", default=["configs/voc/*.yaml"], help="globs of built-in model configs")
    p.add_argument("--peers-only", action="store_true", help="only the torchvision/segkit FCN comparison")
    p.add_argument("--no-peers", action="store_true", help="skip the torchvision/segkit FCN comparison")
    p.add_argument("--quick", action="store_true", help="short run: 3 repeats, fewer GEMM repeats, no training, no "
                   "TorchScript variant of the built-in models")
    p.add_argument("--target", type=float, default=0.85, help="fraction of the best GEMM rate a model should reach")
    p.add_argument("--no-profile", action="store_true", help="skip the per-op profile of slow models")
    p.add_argument("--no-train", action="store_true", help="skip training-step timings (set by --quick)")
    p.add_argument("--gemm-repeats", type=int, default=20, help="runs of each GEMM before and after (best taken)")
    p.add_argument("--products-only", action="store_true",
                   help="only Predictor vs torchvision fcn_resnet50 vs ONNX Runtime, quiet and loaded")
    p.add_argument("--no-products", action="store_true", help="skip the Predictor / ONNX Runtime comparison")
    p.add_argument("--product-size", type=int, default=321, help="image side of the product comparison")
    p.add_argument("--out", default="output/benchmarks/models.json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.gemm_repeats = min(args.repeats, 3), 1, min(args.gemm_repeats, 8)
        args.no_train = True
    args.size = args.size or 321
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
