"""Class-balancing weights for the losses: from the class-statistics file or a list.

The statistics file is the JSON written by ``segkit.data.class_stats``::

    {"dataset": ..., "classes": [...], "pixel_counts": [...], "frequency": [...],
     "weights": {"inverse_frequency": [...], "median_frequency": [...],
                 "effective_number": [...]}}

Losses only *read* weights (a file path or an explicit list). When
``MODEL.LOSS.CLASS_WEIGHT.COMPUTE`` is true the engine computes the file from the
training set before it builds the model and sets ``MODEL.LOSS.CLASS_WEIGHT.STATS_FILE``.
"""
from __future__ import annotations

import json
import math
import os
from typing import List, Optional, Sequence

import torch

__all__ = ["CLASS_WEIGHT_METHODS", "class_weights_from_counts", "load_class_weights", "class_weights_from_config"]

# "none": unweighted; "explicit": MODEL.LOSS.CLASS_WEIGHT.VALUES; the rest come from the stats file.
CLASS_WEIGHT_METHODS = ("none", "explicit", "inverse_frequency", "median_frequency", "effective_number")
_FROM_FILE = ("inverse_frequency", "median_frequency", "effective_number")


def _normalise_present(weights: List[float], counts: Sequence[float]) -> List[float]:
    """Scale so that the weights of classes that occur average to 1 (absent classes get 0)."""
    present = [w for w, n in zip(weights, counts) if n > 0]
    mean = sum(present) / len(present) if present else 1.0
    return [w / mean if n > 0 else 0.0 for w, n in zip(weights, counts)]


def class_weights_from_counts(counts: Sequence[float], method: str, beta: float = 0.9999,
                              pixels_where_present: Optional[Sequence[float]] = None) -> List[float]:
    """Per-class weights from pixel counts.

    Classes with zero pixels get weight 0 (they never appear as a target). Weights of
    the classes that occur are scaled to average 1.

    Args:
        counts: pixel count per class, length K.
        method: ``"inverse_frequency"`` (w_c = 1 / f_c with f_c = n_c / total),
            ``"median_frequency"`` (Eigen & Fergus, ICCV 2015, sec. 4.1:
            w_c = median(freq) / freq(c), freq(c) = n_c / pixels of the images where c
            occurs) or ``"effective_number"`` (Cui et al., CVPR 2019, sec. 3:
            w_c = (1 - beta) / (1 - beta ** n_c)).
        beta: the effective-number hyper-parameter in [0, 1).
        pixels_where_present: for median frequency, the total pixels of the images in
            which each class occurs; without it freq(c) = f_c, which after scaling
            equals inverse frequency.

    Returns:
        list of K floats.
    """
    counts = [float(n) for n in counts]
    if any(n < 0 or not math.isfinite(n) for n in counts):
        raise ValueError(f"Pixel counts must be finite and non-negative, got {counts}.")
    total = sum(counts)
    if total <= 0:
        raise ValueError("Pixel counts are all zero: no class-balancing weights can be derived.")
    freq = [n / total for n in counts]
    if method == "inverse_frequency":
        raw = [1.0 / f if f > 0 else 0.0 for f in freq]
    elif method == "median_frequency":
        if pixels_where_present is not None:
            freq = [n / float(t) if n > 0 else 0.0 for n, t in zip(counts, pixels_where_present)]
        present = sorted(f for f in freq if f > 0)
        mid = len(present) // 2
        median = present[mid] if len(present) % 2 else 0.5 * (present[mid - 1] + present[mid])
        raw = [median / f if f > 0 else 0.0 for f in freq]
    elif method == "effective_number":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"MODEL.LOSS.CLASS_WEIGHT.BETA must be in [0, 1), got {beta}.")
        # 1 - beta**n computed as -expm1(n log beta) stays accurate for beta close to 1.
        raw = [(1.0 - beta) / -math.expm1(n * math.log(beta)) if n > 0 and beta > 0 else float(n > 0) for n in counts]
    else:
        raise ValueError(f"Cannot derive class weights by '{method}' from counts; use one of {_FROM_FILE}.")
    return _normalise_present(raw, counts)


def _read_stats(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Class-statistics file '{path}' (MODEL.LOSS.CLASS_WEIGHT.STATS_FILE) does not exist. "
            "Write it with segkit.data.class_stats, or set MODEL.LOSS.CLASS_WEIGHT.COMPUTE True so that the "
            "trainer computes it from the training set."
        )
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Class-statistics file '{path}' is not valid JSON: {exc}") from exc


def _weights_from_stats(stats: dict, path: str, method: str, beta: float) -> List[float]:
    cached = (stats.get("weights") or {}).get(method)
    if cached is not None:
        return [float(w) for w in cached]
    if "pixel_counts" not in stats:
        raise ValueError(f"Class-statistics file '{path}' has neither weights['{method}'] nor 'pixel_counts'.")
    return class_weights_from_counts(stats["pixel_counts"], method, beta)


def _validate(weights: Sequence[float], num_classes: int, source: str) -> torch.Tensor:
    if len(weights) != num_classes:
        raise ValueError(
            f"{source} gives {len(weights)} class weights but MODEL.NUM_CLASSES is {num_classes}; "
            "the weights must list every class in label order."
        )
    out = torch.tensor([float(w) for w in weights], dtype=torch.float32)
    if not torch.isfinite(out).all() or (out < 0).any():
        raise ValueError(f"{source} has negative or non-finite class weights: {list(weights)}.")
    return out


def load_class_weights(
    method: str,
    num_classes: int,
    stats_file: str = "",
    values: Sequence[float] = (),
    beta: float = 0.9999,
) -> Optional[torch.Tensor]:
    """Resolve class weights; ``None`` means unweighted.

    Args:
        method: one of :data:`CLASS_WEIGHT_METHODS`.
        num_classes: K; the weights are checked to have this length.
        stats_file: the class-statistics JSON, for the frequency-based methods. Its
            cached ``weights[method]`` are used; without them they are derived from
            ``pixel_counts`` by :func:`class_weights_from_counts`.
        values: the weights for ``method="explicit"``.
        beta: for ``effective_number`` when derived from counts.

    Returns:
        float32 Tensor (K,) or None.
    """
    method = method.lower()
    if method == "none":
        return None
    if method == "explicit":
        if not values:
            raise ValueError(
                "MODEL.LOSS.CLASS_WEIGHT.METHOD is 'explicit' but MODEL.LOSS.CLASS_WEIGHT.VALUES is empty."
            )
        return _validate(values, num_classes, "MODEL.LOSS.CLASS_WEIGHT.VALUES")
    if method not in _FROM_FILE:
        raise ValueError(f"Unknown MODEL.LOSS.CLASS_WEIGHT.METHOD '{method}'. Choose one of {CLASS_WEIGHT_METHODS}.")
    if not stats_file:
        raise ValueError(
            f"MODEL.LOSS.CLASS_WEIGHT.METHOD '{method}' needs MODEL.LOSS.CLASS_WEIGHT.STATS_FILE (the JSON written "
            "by segkit.data.class_stats). Set it, or set MODEL.LOSS.CLASS_WEIGHT.COMPUTE True and build the model "
            "through the trainer, which computes the file first."
        )
    stats = _read_stats(stats_file)
    return _validate(_weights_from_stats(stats, stats_file, method, beta), num_classes, f"'{stats_file}'")


def class_weights_from_config(cfg) -> Optional[torch.Tensor]:
    """:func:`load_class_weights` with the ``MODEL.LOSS.CLASS_WEIGHT`` keys."""
    cw = cfg.MODEL.LOSS.CLASS_WEIGHT
    return load_class_weights(cw.METHOD, cfg.MODEL.NUM_CLASSES, cw.STATS_FILE, list(cw.VALUES), cw.BETA)
