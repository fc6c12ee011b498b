"""Learning-rate schedules: fvcore parameter schedulers stepped once per iteration.

The schedule is a multiplier ``m(where)`` of each parameter group's initial learning
rate, ``where = iteration / SOLVER.MAX_ITER``; warmup multiplies it further:

    lr(it) = group_lr * m(it / MAX_ITER) * w(it)
    w(it)  = WARMUP_FACTOR + (1 - WARMUP_FACTOR) * it / WARMUP_ITERS   (linear, it < WARMUP_ITERS)
           = WARMUP_FACTOR                                              (constant, it < WARMUP_ITERS)
           = 1                                                          (afterwards)
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from fvcore.common.param_scheduler import (
    CosineParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
    PolynomialDecayParamScheduler,
)
from torch.optim.lr_scheduler import LRScheduler

from segkit.config.configurable import build_component, configurable
from segkit.config.validate import clamped_warmup
from segkit.registry import LR_SCHEDULER_REGISTRY

__all__ = ["LRMultiplier", "WarmupParamScheduler", "build_lr_scheduler", "with_warmup"]


class _ConstantOne(ParamScheduler):
    """1 everywhere, including ``where = 1`` (fvcore's ConstantParamScheduler rejects it)."""

    def __call__(self, where: float) -> float:
        return 1.0


class WarmupParamScheduler(ParamScheduler):
    """Multiply ``scheduler`` by a warmup factor over the first ``warmup_length`` of training.

    Args:
        scheduler: the main schedule.
        warmup_factor: the factor at ``where = 0``.
        warmup_length: warmup as a fraction of training, in [0, 1].
        method: ``"linear"`` (factor rises linearly to 1) or ``"constant"``.
    """

    def __init__(self, scheduler: ParamScheduler, warmup_factor: float, warmup_length: float,
                 method: str = "linear") -> None:
        if method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got '{method}'.")
        if not 0.0 <= warmup_length <= 1.0:
            raise ValueError(f"Warmup length must be a fraction of training in [0, 1], got {warmup_length}.")
        self.scheduler, self.warmup_factor = scheduler, float(warmup_factor)
        self.warmup_length, self.method = float(warmup_length), method

    def __call__(self, where: float) -> float:
        value = self.scheduler(where)
        if where >= self.warmup_length:
            return value
        if self.method == "constant":
            return value * self.warmup_factor
        alpha = where / self.warmup_length
        return value * (self.warmup_factor * (1.0 - alpha) + alpha)


class LRMultiplier(LRScheduler):
    """A torch LR scheduler that sets ``lr = initial_lr * multiplier(iter / max_iter)``.

    Step it once per iteration, after ``optimizer.step()``. Its ``state_dict()`` holds
    only plain numbers (``torch.load(..., weights_only=True)`` reads it) and resuming
    from it reproduces the learning rates of an uninterrupted run exactly: loading
    also writes the learning rate of the restored iteration into the optimizer.
    Past ``max_iter`` the multiplier stays at its value for ``where = 1``.

    Args:
        optimizer: the optimizer; each group's ``lr`` at construction is its base.
        multiplier: an fvcore ``ParamScheduler`` of ``where`` in [0, 1].
        max_iter: iterations that map to ``where = 1``.
        last_iter: the iteration already done (-1 to start).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int,
                 last_iter: int = -1) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise TypeError(f"multiplier must be an fvcore ParamScheduler, got {type(multiplier).__name__}.")
        if max_iter <= 0:
            raise ValueError(f"SOLVER.MAX_ITER must be > 0, got {max_iter}.")
        self._multiplier, self._max_iter = multiplier, int(max_iter)
        super().__init__(optimizer, last_epoch=last_iter)

    def _lrs_at(self, iteration: int) -> List[float]:
        where = min(max(iteration, 0), self._max_iter) / self._max_iter
        factor = self._multiplier(where)
        return [base * factor for base in self.base_lrs]

    def get_lr(self) -> List[float]:
        return self._lrs_at(self.last_epoch)

    def state_dict(self) -> Dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "last_epoch": int(self.last_epoch), "max_iter": self._max_iter,
                "_step_count": int(getattr(self, "_step_count", 0))}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        saved_max = state_dict.get("max_iter", self._max_iter)
        if saved_max != self._max_iter:
            raise ValueError(f"The checkpoint's schedule ran to MAX_ITER={saved_max} but SOLVER.MAX_ITER is "
                             f"{self._max_iter}; the learning rates would not continue the same schedule.")
        self.base_lrs = [float(b) for b in state_dict["base_lrs"]]
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        lrs = self._lrs_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs


def _warmed(multiplier: ParamScheduler, max_iter: int, warmup_iters: int, warmup_factor: float,
            warmup_method: str) -> ParamScheduler:
    """``multiplier`` behind the warm-up (unchanged when ``warmup_iters`` is 0)."""
    if warmup_iters <= 0:
        return multiplier
    warmup_iters = clamped_warmup(warmup_iters, max_iter)  # load_config already clamped it, with a warning
    return WarmupParamScheduler(multiplier, warmup_factor, warmup_iters / max_iter, warmup_method.lower())


def with_warmup(cfg, multiplier: ParamScheduler) -> ParamScheduler:
    """Wrap ``multiplier`` with ``SOLVER.WARMUP_*`` (unchanged when WARMUP_ITERS is 0)."""
    s = cfg.SOLVER
    return _warmed(multiplier, s.MAX_ITER, s.WARMUP_ITERS, s.WARMUP_FACTOR, s.WARMUP_METHOD)


def _schedule_args(cfg, optimizer) -> Dict[str, Any]:
    """What every built-in schedule reads: the optimizer, MAX_ITER and the warm-up keys."""
    s = cfg.SOLVER
    return {"optimizer": optimizer, "max_iter": s.MAX_ITER, "warmup_iters": s.WARMUP_ITERS,
            "warmup_factor": s.WARMUP_FACTOR, "warmup_method": s.WARMUP_METHOD}


def _scheduler(optimizer, multiplier: ParamScheduler, max_iter: int, warmup_iters: int = 0,
               warmup_factor: float = 0.001, warmup_method: str = "linear") -> LRMultiplier:
    return LRMultiplier(optimizer, _warmed(multiplier, max_iter, warmup_iters, warmup_factor, warmup_method), max_iter)


@LR_SCHEDULER_REGISTRY.register(name="PolyLR")
@configurable(from_config=lambda cfg, optimizer: {**_schedule_args(cfg, optimizer), "power": cfg.SOLVER.POLY_POWER})
def poly_lr(optimizer, max_iter: int, power: float = 0.9, **warmup: Any) -> LRMultiplier:
    """DeepLab's "poly" policy (DeepLab v2 sec. 4.1): ``(1 - it / MAX_ITER) ** POLY_POWER``."""
    return _scheduler(optimizer, PolynomialDecayParamScheduler(1.0, power), max_iter, **warmup)


def _multistep_args(cfg, optimizer) -> Dict[str, Any]:
    return {**_schedule_args(cfg, optimizer), "steps": [int(x) for x in cfg.SOLVER.STEPS], "gamma": cfg.SOLVER.GAMMA}


@LR_SCHEDULER_REGISTRY.register(name="MultiStepLR")
@configurable(from_config=_multistep_args)
def multistep_lr(optimizer, max_iter: int, steps: Sequence[int], gamma: float = 0.1, **warmup: Any) -> LRMultiplier:
    """Multiply by ``GAMMA`` at each iteration of ``SOLVER.STEPS``."""
    steps = [int(x) for x in steps]
    if any(b <= a for a, b in zip(steps, steps[1:])) or any(not 0 < x < max_iter for x in steps):
        raise ValueError(f"SOLVER.STEPS must increase strictly and lie in (0, MAX_ITER={max_iter}); got {steps}.")
    values = [gamma**i for i in range(len(steps) + 1)]
    return _scheduler(optimizer, MultiStepParamScheduler(values, num_updates=max_iter, milestones=steps),
                      max_iter, **warmup)


@LR_SCHEDULER_REGISTRY.register(name="CosineLR")
@configurable(from_config=_schedule_args)
def cosine_lr(optimizer, max_iter: int, **warmup: Any) -> LRMultiplier:
    """Half-cosine decay from 1 to 0 over MAX_ITER."""
    return _scheduler(optimizer, CosineParamScheduler(1.0, 0.0), max_iter, **warmup)


@LR_SCHEDULER_REGISTRY.register(name="ConstantLR")
@configurable(from_config=_schedule_args)
def constant_lr(optimizer, max_iter: int, **warmup: Any) -> LRMultiplier:
    """A fixed learning rate (FCN sec. 4.2 trains with a fixed rate)."""
    return _scheduler(optimizer, _ConstantOne(), max_iter, **warmup)


build_poly, build_multistep, build_cosine, build_constant = poly_lr, multistep_lr, cosine_lr, constant_lr


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """The schedule ``SOLVER.LR_SCHEDULER_NAME`` for ``optimizer``, stepped once per iteration."""
    return build_component(LR_SCHEDULER_REGISTRY, cfg.SOLVER.LR_SCHEDULER_NAME, cfg, optimizer=optimizer,
                           expect=LRScheduler, promise="a torch.optim.lr_scheduler.LRScheduler")
