"""Latency percentiles, throughput and peak memory of a segmentation pipeline.

Backends: ``"pytorch"`` (the eager :class:`SegmentationPipeline`, i.e. model +
upsampling + arg-max under ``torch.inference_mode``), ``"predictor"``
(:class:`segkit.Predictor` end to end: numpy in, numpy out, with the configured
TTA / sliding window / CRF), ``"torchscript"`` and ``"onnx"`` (exported bundles). Every timed call ends with a device
synchronisation, so latencies are wall-clock times of finished work.

Timing (``torch.utils.benchmark``): each setting makes ``warmup`` untimed calls, then
exactly ``iters`` timed calls, each timed alone with ``torch.utils.benchmark.timer``
(the clock of ``torch.utils.benchmark.Timer``: it synchronises the accelerator before
reading ``timeit``'s clock). The per-call times make a
``torch.utils.benchmark.Measurement`` (one call per measurement), which gives the
median (``p50_ms``), mean, interquartile range (``iqr_ms``) and torch's noise warning
(``noisy``: IQR at least 10% of the median); p90/p99 are percentiles of the same
times. ``Timer``'s own measuring methods are not used because each adds untimed calls
of its own (``timeit(n)`` first runs ``max(n // 100, 2)``, the autorange methods a
block-size search) and times blocks of calls, not single calls, so neither the
number of calls nor per-call percentiles would be what the report says.
``calls`` in each result counts the calls made (``warmup + iters``).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` (tensors only, reset
before each setting); on the CPU, the process's peak resident set size, reset
before each setting through ``/proc/self/clear_refs`` on Linux (without it,
``getrusage``'s lifetime peak, flagged ``memory_kind="rss_lifetime_peak"``).
``base_memory_mb`` is what was in use just before the timed loop (allocated CUDA
tensors, or the current RSS), so ``peak - base`` is what inference itself added.
"""
from __future__ import annotations

import math
import resource
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils import benchmark as torch_benchmark

from segkit.export.exporters import make_pipeline
from segkit.export.runtime import ExportedSegmenter

__all__ = ["BACKENDS", "BenchmarkResult", "benchmark_runner", "percentile", "format_table", "make_runner",
           "time_calls"]

# torch.utils.benchmark.Timer's clock: synchronises the accelerator, then reads timeit.default_timer.
_clock = torch_benchmark.timer


@dataclass
class BenchmarkResult:
    """Timings of one (backend, device, batch size, image size) setting; times in milliseconds."""

    backend: str
    device: str
    batch_size: int
    height: int
    width: int
    iters: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_img_s: float
    peak_memory_mb: Optional[float]
    base_memory_mb: Optional[float]
    memory_kind: str
    # Untimed calls before the timed ones, and every call made (warmup + iters).
    warmup: int = 0
    calls: int = 0
    # Interquartile range of the per-call times, and torch.utils.benchmark's noise warning.
    iqr_ms: float = float("nan")
    noisy: bool = False

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ---------------------------------------------------------------------------- #
# Memory
# ---------------------------------------------------------------------------- #
def _read_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    # Some kernels (and sandboxes) accept the write but keep the old peak: check it.
    hwm, rss = _read_status_kb("VmHWM"), _read_status_kb("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 4096


class _MemoryMeter:
    """Peak memory over a window: CUDA allocator peak or process peak RSS."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_peak"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_rss_peak():
            self.kind = "rss_lifetime_peak"

    def current_mb(self) -> Optional[float]:
        """Memory in use now: allocated CUDA tensors, or the process's resident set."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        kb = _read_status_kb("VmRSS")
        return None if kb is None else kb / 1024

    def peak_mb(self) -> Optional[float]:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.kind == "rss_peak":
            kb = _read_status_kb("VmHWM")
            if kb is not None:
                return kb / 1024
            self.kind = "rss_lifetime_peak"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ---------------------------------------------------------------------------- #
# Runners
# ---------------------------------------------------------------------------- #
BACKENDS = ("pytorch", "predictor", "torchscript", "onnx")
# Autocast dtypes of the pytorch backend's --amp.
_AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_runner(
    backend: str,
    device: torch.device,
    model: Optional[torch.nn.Module] = None,
    bundle: Optional[str] = None,
    predictor=None,
    threads: Optional[int] = None,
    amp: str = "off",
):
    """Return ``run(batch uint8 NHWC numpy) -> None`` for ``backend``, finishing its work before returning.

    Args:
        backend: one of :data:`BACKENDS`.
        device: where to run (``"pytorch"``, bundles) and to synchronise.
        model: the model (``"pytorch"``).
        bundle: the exported file (``"torchscript"``, ``"onnx"``).
        predictor: a :class:`segkit.Predictor` (``"predictor"``); its batch size is
            raised to the benchmarked batch so one call is one forward pass.
        threads: onnxruntime intra-op threads (torch's are set by the caller).
        amp: ``"off"``, ``"fp16"`` or ``"bf16"`` autocast for the ``"pytorch"`` backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown benchmark backend '{backend}'; use one of {', '.join(BACKENDS)}.")
    if amp not in _AMP_DTYPES or (amp != "off" and backend != "pytorch"):
        raise ValueError(f"amp must be one of {list(_AMP_DTYPES)} and is only for the pytorch backend; got '{amp}' for '{backend}'.")
    if backend == "predictor":

        def run_predictor(batch: np.ndarray) -> None:
            predictor.batch_size = len(batch)
            predictor(list(batch))  # numpy results: the work has finished
            _sync(device)

        return run_predictor
    if backend == "pytorch":
        pipeline = make_pipeline(model.to(device).eval(), "NHWC")
        dtype = _AMP_DTYPES[amp]

        def run(batch: np.ndarray) -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                pipeline(torch.from_numpy(batch).to(device))
            _sync(device)

        return run
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else None
    seg = ExportedSegmenter(bundle, providers=providers, device=device, threads=threads)
    if seg.metadata["input_layout"] != "NHWC":
        raise ValueError(f"{bundle}: benchmark expects an NHWC bundle, got {seg.metadata['input_layout']}.")

    def run_bundle(batch: np.ndarray) -> None:
        seg.run_batch(batch)  # outputs come back as numpy: the work has finished
        _sync(device)

    return run_bundle


def time_calls(run: Callable[[np.ndarray], None], arg: np.ndarray, iters: int, label: str = "segkit benchmark",
               sub_label: Optional[str] = None, description: Optional[str] = None) -> "torch_benchmark.Measurement":
    """Call ``run(arg)`` exactly ``iters`` times, each timed alone with ``torch.utils.benchmark.timer``.

    Args:
        run: the function to time; it should finish its work before returning.
        arg: its argument (e.g. a uint8 NHWC batch).
        iters: the number of calls, all timed (no warm-up here: call ``run`` before).
        label, sub_label, description: the Measurement's task description.

    Returns:
        A ``torch.utils.benchmark.Measurement`` with one raw time per call
        (``number_per_run=1``, seconds): ``.median``, ``.mean``, ``.iqr``, ``.times``,
        ``.has_warnings`` and its printed form are per call.
    """
    times = []
    for _ in range(iters):
        start = _clock()
        run(arg)
        times.append(max(_clock() - start, 1e-9))  # as Timer: no zero durations
    spec = torch_benchmark.TaskSpec(stmt="run(batch)", setup="pass", label=label, sub_label=sub_label,
                                    description=description, num_threads=torch.get_num_threads())
    return torch_benchmark.Measurement(number_per_run=1, raw_times=times, task_spec=spec)


def benchmark_runner(
    run: Callable[[np.ndarray], None],
    sizes: Sequence[Tuple[int, int]],
    batch_sizes: Sequence[int],
    device: torch.device,
    backend: str,
    warmup: int = 3,
    iters: int = 20,
    seed: int = 0,
) -> List[BenchmarkResult]:
    """Time ``run`` on random uint8 NHWC batches for every (size, batch size).

    Each setting: ``warmup`` untimed calls, then exactly ``iters`` calls timed one by
    one (:func:`time_calls`); nothing else calls ``run``.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"iters must be >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}.")
    rng = np.random.default_rng(seed)
    results = []
    for (h, w) in sizes:
        for n in batch_sizes:
            batch = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
            for _ in range(warmup):
                run(batch)
            meter = _MemoryMeter(device)
            base = meter.current_mb()
            meter.start()
            m = time_calls(run, batch, iters, label=backend, sub_label=f"batch {n} at {h}x{w}", description=str(device))
            times = [t * 1000.0 for t in m.times]
            mean = m.mean * 1000.0
            results.append(BenchmarkResult(
                backend, str(device), n, h, w, iters, m.median * 1000.0, percentile(times, 90),
                percentile(times, 99), mean, n * 1000.0 / mean, meter.peak_mb(), base, meter.kind,
                warmup=warmup, calls=warmup + len(m.raw_times), iqr_ms=m.iqr * 1000.0, noisy=m.has_warnings,
            ))
    return results


def _mb(value: Optional[float]) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def format_table(results: Sequence[BenchmarkResult]) -> str:
    """A fixed-width table of results, one row per setting, and how they were timed."""
    head = (f"{'backend':<12}{'device':<8}{'batch':>6}{'size':>12}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}"
            f"{'IQR ms':>10}{'img/s':>10}{'peak MB':>10}{'base MB':>10}  memory")
    rows = [head, "-" * len(head)]
    for r in results:
        mem, base = (_mb(v) for v in (r.peak_memory_mb, r.base_memory_mb))
        rows.append(
            f"{r.backend:<12}{r.device:<8}{r.batch_size:>6}{f'{r.height}x{r.width}':>12}{r.p50_ms:>10.2f}"
            f"{r.p90_ms:>10.2f}{r.p99_ms:>10.2f}{r.iqr_ms:>10.2f}{r.throughput_img_s:>10.2f}{mem:>10}{base:>10}"
            f"  {r.memory_kind}{'  noisy' if r.noisy else ''}"
        )
    if results:
        counts = sorted({(r.warmup, r.iters, r.calls) for r in results})
        said = "; ".join(f"{w} untimed warm-up + {i} timed = {c} calls" for w, i, c in counts)
        rows.append(f"Per setting: {said}, each timed alone (torch.utils.benchmark's clock and Measurement).")
    if any(r.noisy for r in results):
        rows.append("noisy: the interquartile range is at least 10% of the median (torch.utils.benchmark's "
                    "warning): other load on the machine, or too few --iters.")
    return "\n".join(rows)
