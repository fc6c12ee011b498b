"""Scalars and images recorded during training and the writers that publish them.

:class:`EventStorage` keeps the recent history of every scalar (loss terms, learning
rate, step time, evaluation metrics) in fvcore ``HistoryBuffer``s, bounded to
``history_length`` values each, and the images put since the last write (prediction
overlays, confusion matrices). Writers read it periodically: :class:`JSONWriter`
appends scalars to ``metrics.jsonl``, :class:`TensorboardWriter` writes scalars and
images as TensorBoard events and :class:`ConsolePrinter` prints the progress line
with loss, lr, speed and ETA.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from fvcore.common.history_buffer import HistoryBuffer

__all__ = ["EventStorage", "get_event_storage", "JSONWriter", "TensorboardWriter", "ConsolePrinter"]

logger = logging.getLogger(__name__)
_CURRENT: List["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """The storage of the training loop that is running (raises outside one)."""
    if not _CURRENT:
        raise RuntimeError("get_event_storage() called outside 'with EventStorage(...)' (no trainer running).")
    return _CURRENT[-1]


class EventStorage:
    """Recent history of named scalars indexed by iteration, and images to publish.

    Args:
        start_iter: the iteration the loop starts at (after a resume, not 0).
        history_length: values kept per scalar (older ones are dropped; ``metrics.jsonl``
            holds the full record). Smoothing windows must not exceed it.
    """

    def __init__(self, start_iter: int = 0, history_length: int = 10000) -> None:
        self.iter = start_iter
        self._history: Dict[str, HistoryBuffer] = defaultdict(lambda: HistoryBuffer(max_length=history_length))
        self._smoothing: Dict[str, bool] = {}
        self._images: List[Tuple[str, np.ndarray, int]] = []

    def put_scalar(self, name: str, value: float, smoothing_hint: bool = True) -> None:
        """Record ``value`` for the current iteration."""
        value = float(value.detach().item()) if isinstance(value, torch.Tensor) else float(value)
        self._history[name].update(value, self.iter)
        self._smoothing.setdefault(name, smoothing_hint)

    def put_image(self, name: str, image: np.ndarray) -> None:
        """Queue an ``(H, W, 3)`` uint8 RGB picture for the image writers (TensorBoard)."""
        self._images.append((name, np.ascontiguousarray(image), self.iter))

    def pop_images(self) -> List[Tuple[str, np.ndarray, int]]:
        """``[(name, image, iteration)]`` put since the last call, and forget them."""
        images, self._images = self._images, []
        return images

    def put_scalars(self, smoothing_hint: bool = True, **values: float) -> None:
        for k, v in values.items():
            self.put_scalar(k, v, smoothing_hint)

    def history(self, name: str) -> List[Tuple[int, float]]:
        """``[(iteration, value), ...]`` of ``name`` (KeyError if never recorded)."""
        if name not in self._history:
            raise KeyError(f"No scalar named '{name}' recorded; have: {sorted(self._history)}")
        return [(int(it), v) for v, it in self._history[name].values()]

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """``{name: (value, iteration)}`` of the most recent value of every scalar."""
        return {k: (b.values()[-1][0], int(b.values()[-1][1])) for k, b in self._history.items() if b.values()}

    def median(self, name: str, window: int) -> float:
        """Median of the last ``window`` values of ``name``."""
        self.history(name)  # the KeyError naming what exists
        return float(self._history[name].median(window))

    def latest_with_smoothing(self, window: int = 20) -> Dict[str, Tuple[float, int]]:
        """Like :meth:`latest`, with smoothed scalars replaced by their recent median."""
        out = {}
        for k, (v, it) in self.latest().items():
            out[k] = (self.median(k, window) if self._smoothing[k] else v, it)
        return out

    def step(self) -> None:
        self.iter += 1

    def __enter__(self) -> "EventStorage":
        _CURRENT.append(self)
        return self

    def __exit__(self, *exc) -> None:
        assert _CURRENT[-1] is self
        _CURRENT.pop()


class _Writer:
    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._last_written: Dict[str, int] = {}

    def _new_values(self) -> Dict[int, Dict[str, float]]:
        """Scalars recorded since they were last written, grouped by iteration (smoothed ones: median)."""
        storage = get_event_storage()
        by_iter: Dict[int, Dict[str, float]] = defaultdict(dict)
        for k, (v, it) in storage.latest_with_smoothing(self.window).items():
            if it > self._last_written.get(k, -1):
                by_iter[it][k] = v
                self._last_written[k] = it
        return by_iter

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(_Writer):
    """Append one JSON object per written iteration to ``path`` (``metrics.jsonl``)."""

    def __init__(self, path: str, window: int = 20) -> None:
        super().__init__(window)
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write(self) -> None:
        for it, values in sorted(self._new_values().items()):
            clean = {k: (None if math.isnan(v) or math.isinf(v) else v) for k, v in values.items()}
            self._file.write(json.dumps({"iteration": it, **clean}, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class TensorboardWriter(_Writer):
    """Write every new scalar as a TensorBoard event in ``log_dir``."""

    def __init__(self, log_dir: str, window: int = 20) -> None:
        super().__init__(window)
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)

    def write(self) -> None:
        for it, values in sorted(self._new_values().items()):
            for k, v in values.items():
                self._writer.add_scalar(k, v, it)
        for name, image, it in get_event_storage().pop_images():
            self._writer.add_image(name, image, it, dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class ConsolePrinter(_Writer):
    """Log ``iter, eta, loss terms, lr, s/it, img/s`` of the current iteration.

    Args:
        max_iter: for the ETA.
        ims_per_batch: images per iteration across all processes, for the speed.
    """

    def __init__(self, max_iter: int, ims_per_batch: int, window: int = 20) -> None:
        super().__init__(window)
        self.max_iter = max_iter
        self.ims_per_batch = ims_per_batch

    def write(self) -> None:
        storage = get_event_storage()
        it = storage.iter
        if it == getattr(self, "_printed", None) or it >= self.max_iter:
            return  # already printed (e.g. the final write after training)
        self._printed = it
        latest = storage.latest()
        losses = {k: storage.median(k, self.window) for k in latest if k.startswith("loss") or k == "total_loss"}
        parts = [f"iter: {it + 1}/{self.max_iter}"]
        if "time" in latest:
            step = storage.median("time", self.window)
            eta = datetime.timedelta(seconds=int(step * (self.max_iter - it - 1)))
            parts.insert(1, f"eta: {eta}")
        parts += [f"{k}: {v:.4g}" for k, v in sorted(losses.items(), key=lambda kv: kv[0] != "total_loss")]
        if "lr" in latest:
            parts.append(f"lr: {latest['lr'][0]:.4g}")
        if "time" in latest:
            parts.append(f"time: {step:.3f} s/it  speed: {self.ims_per_batch / max(step, 1e-9):.1f} img/s")
        if "data_time" in latest:
            parts.append(f"data: {storage.median('data_time', self.window):.3f} s")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            parts.append(f"mem: {torch.cuda.max_memory_allocated() / 2**20:.0f}M")
        logger.info("  ".join(parts))
