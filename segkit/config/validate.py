"""Checks of the training schedule made when a config is loaded, before anything is built.

A smoke run (``SOLVER.MAX_ITER 20``) is the first thing people try, so a warm-up
longer than the run is clamped with a warning rather than refused after the model
was built; values that cannot mean anything raise :class:`ConfigError` naming the key.
"""
from __future__ import annotations

import logging
import warnings

__all__ = ["validate_schedule", "clamped_warmup"]

logger = logging.getLogger(__name__)


def clamped_warmup(warmup_iters: int, max_iter: int) -> int:
    """``SOLVER.WARMUP_ITERS`` limited to ``SOLVER.MAX_ITER``, warning when it had to be."""
    if warmup_iters <= max_iter:
        return warmup_iters
    warnings.warn(
        f"SOLVER.WARMUP_ITERS ({warmup_iters}) exceeds SOLVER.MAX_ITER ({max_iter}); warming up over all "
        f"{max_iter} iterations instead. Set SOLVER.WARMUP_ITERS explicitly to silence this.",
        UserWarning, stacklevel=3,
    )
    return max_iter


def validate_schedule(cfg) -> None:
    """Check ``SOLVER`` and ``TEST`` iteration counts; clamp the warm-up (in place, with a warning).

    Raises:
        ConfigError: a negative or zero count, or ``SOLVER.STEPS`` out of order or range.
    """
    from segkit.config.config import ConfigError

    s = cfg.SOLVER
    if s.MAX_ITER < 1:
        raise ConfigError(f"SOLVER.MAX_ITER must be at least 1, got {s.MAX_ITER}.")
    for key, value in (("SOLVER.WARMUP_ITERS", s.WARMUP_ITERS), ("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD),
                       ("TEST.EVAL_PERIOD", cfg.TEST.EVAL_PERIOD), ("SOLVER.MAX_TO_KEEP", s.MAX_TO_KEEP)):
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}.")
    if s.LR_SCHEDULER_NAME == "MultiStepLR":
        steps = [int(x) for x in s.STEPS]
        if any(b <= a for a, b in zip(steps, steps[1:])) or any(not 0 < x < s.MAX_ITER for x in steps):
            raise ConfigError(
                f"SOLVER.STEPS must increase strictly and lie in (0, SOLVER.MAX_ITER={s.MAX_ITER}); got {steps}."
            )
    warmup = clamped_warmup(s.WARMUP_ITERS, s.MAX_ITER)
    if warmup != s.WARMUP_ITERS:
        was_frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.SOLVER.WARMUP_ITERS = warmup
        if was_frozen:
            cfg.freeze()
