"""Class-balancing weights for the losses: the one place counts become weights.

``segkit.data.class_stats`` only *counts* pixels; this module turns the counts into
weights (:func:`class_weights_from_counts`, one copy of each formula). The
class-statistics file (``MODEL.LOSS.CLASS_WEIGHT.STATS_FILE``) is the JSON that
``segkit.data.class_stats`` / ``tools/dataset_stats.py`` write::

    {"dataset": ..., "classes": [...], "pixel_counts": [...], "image_counts": [...],
     "pixels_where_present": [...], "frequency": [...], "num_images": ...}

Files written by segkit before this layout may also hold precomputed
``"weights": {method: [...]}``; those are used as they are, so old runs keep their
weights.

When ``MODEL.LOSS.CLASS_WEIGHT.COMPUTE`` is true and ``STATS_FILE`` is empty, the
file is ``OUTPUT_DIR/class_stats.json`` (:func:`class_stats_file`): the engine
counts the training set into it before it builds the model, and the losses read it
from there. The config is never rewritten.
"""
from __future__ import annotations

import json
import math
import os
from typing import List, Optional, Sequence

import torch

__all__ = ["CLASS_WEIGHT_METHODS", "class_weights_from_counts", "load_class_weights", "class_weights_from_config",
           "class_stats_file", "COMPUTED_STATS_FILE"]

# "none": unweighted; "explicit": MODEL.LOSS.CLASS_WEIGHT.VALUES; the rest come from the stats file.
CLASS_WEIGHT_METHODS = ("none", "explicit", "inverse_frequency", "median_frequency", "effective_number")
_FROM_FILE = ("inverse_frequency", "median_frequency", "effective_number")
#: Name, inside ``OUTPUT_DIR``, of the statistics file computed when ``CLASS_WEIGHT.COMPUTE`` is set.
COMPUTED_STATS_FILE = "class_stats.json"


def _normalise_present(weights: List[float], counts: Sequence[float]) -> List[float]:
    """Scale so that the weights of classes that occur average to 1 (absent classes get 0)."""
    present = [w for w, n in zip(weights, counts) if n > 0]
    mean = sum(present) / len(present) if present else 1.0
    return [w / mean if n > 0 else 0.0 for w, n in zip(weights, counts)]


def class_weights_from_counts(counts: Sequence[float], method: str, beta: float = 0.9999,
                              pixels_where_present: Optional[Sequence[float]] = None) -> List[float]:
    """Per-class weights from pixel counts: the one implementation of each formula.

    With ``n_c`` the labelled pixels of class ``c`` and ``N = sum_c n_c``:

    * ``"inverse_frequency"``: ``w_c = 1 / f_c`` with ``f_c = n_c / N``.
    * ``"median_frequency"`` (Eigen & Fergus, ICCV 2015, sec. 4.1):
      ``w_c = median_k(freq_k) / freq_c`` with ``freq_c = n_c / P_c`` and ``P_c`` the
      labelled pixels of the images in which ``c`` occurs (``pixels_where_present``).
      It needs ``P_c``: with pixel counts only it would silently equal inverse
      frequency, so it raises instead.
    * ``"effective_number"`` (Cui et al., CVPR 2019, sec. 3):
      ``w_c = (1 - beta) / (1 - beta ** n_c)``; ``beta = 0`` weighs all classes alike.

    Classes with zero pixels get weight 0 (they never appear as a target). Weights of
    the classes that occur are scaled to average 1.

    Args:
        counts: pixel count per class, length K.
        method: one of the three names above.
        beta: the effective-number hyper-parameter in [0, 1).
        pixels_where_present: ``P_c`` per class, for median frequency.

    Returns:
        list of K floats.

    Raises:
        ValueError: negative/non-finite or all-zero counts, beta outside [0, 1), an
            unknown method, or median frequency without ``pixels_where_present``.
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
        if pixels_where_present is None:
            raise ValueError(
                "Median-frequency weights need the pixels of the images in which each class occurs "
                "(pixels_where_present); pixel counts alone would give inverse-frequency weights. "
                "Recount the dataset with tools/dataset_stats.py."
            )
        if len(pixels_where_present) != len(counts):
            raise ValueError(f"pixels_where_present has {len(pixels_where_present)} entries for {len(counts)} classes.")
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
            f"Class-statistics file '{path}' (MODEL.LOSS.CLASS_WEIGHT.STATS_FILE, or OUTPUT_DIR/{COMPUTED_STATS_FILE} "
            "with COMPUTE) does not exist. Write it with tools/dataset_stats.py, or set "
            "MODEL.LOSS.CLASS_WEIGHT.COMPUTE True and train through the engine, which counts the training set first."
        )
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Class-statistics file '{path}' is not valid JSON: {exc}") from exc


def _weights_from_stats(stats: dict, path: str, method: str, beta: float) -> List[float]:
    cached = (stats.get("weights") or {}).get(method)
    if cached is not None:  # a file written by an older segkit: keep the weights it trained with
        return [float(w) for w in cached]
    if "pixel_counts" not in stats:
        raise ValueError(f"Class-statistics file '{path}' has neither weights['{method}'] nor 'pixel_counts'.")
    try:
        return class_weights_from_counts(stats["pixel_counts"], method, beta, stats.get("pixels_where_present"))
    except ValueError as exc:
        raise ValueError(f"Class-statistics file '{path}': {exc}") from exc


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
        stats_file: the class-statistics JSON, for the frequency-based methods: the
            weights are derived from its counts by :func:`class_weights_from_counts`
            (precomputed ``weights[method]`` of files from older segkit versions are used as they are).
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
            "by tools/dataset_stats.py). Set it, or set MODEL.LOSS.CLASS_WEIGHT.COMPUTE True and build the model "
            "through the trainer, which computes the file first."
        )
    stats = _read_stats(stats_file)
    return _validate(_weights_from_stats(stats, stats_file, method, beta), num_classes, f"'{stats_file}'")


def class_stats_file(cfg) -> str:
    """The class-statistics file a config's losses read ("" when none).

    ``MODEL.LOSS.CLASS_WEIGHT.STATS_FILE`` when set; otherwise, with ``COMPUTE``,
    ``OUTPUT_DIR/class_stats.json`` (which the engine fills before building the model).
    """
    cw = cfg.MODEL.LOSS.CLASS_WEIGHT
    if cw.STATS_FILE:
        return str(cw.STATS_FILE)
    if cw.get("COMPUTE", False):
        return os.path.join(cfg.OUTPUT_DIR, COMPUTED_STATS_FILE)
    return ""


def class_weights_from_config(cfg) -> Optional[torch.Tensor]:
    """:func:`load_class_weights` with the ``MODEL.LOSS.CLASS_WEIGHT`` keys and :func:`class_stats_file`."""
    cw = cfg.MODEL.LOSS.CLASS_WEIGHT
    return load_class_weights(cw.METHOD, cfg.MODEL.NUM_CLASSES, class_stats_file(cfg), list(cw.VALUES), cw.BETA)
