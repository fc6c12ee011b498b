"""Training hooks: timing, LR schedule, checkpoints (periodic and best), evaluation,
metric writers and the pictures drawn at the end.

Each hook is a plain class with keyword constructor arguments (usable without a
config) and is registered in ``HOOK_REGISTRY`` through a function with plain keyword
arguments whose ``from_config(cfg, trainer)`` returns them (the shared construction
rule); ``SOLVER.EXTRA_HOOKS`` appends more by name.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from fvcore.common.checkpoint import PeriodicCheckpointer as _FvcorePeriodicCheckpointer

from segkit.config.configurable import build_component, configurable
from segkit.engine.checkpoint import Checkpointer, resume_state
from segkit.engine.comm import is_main_process
from segkit.engine.train_loop import HookBase
from segkit.engine.visualization import save_training_curves
from segkit.registry import HOOK_REGISTRY
from segkit.utils.fileio import atomic_write

__all__ = [
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "EvalHook",
    "BestCheckpointer",
    "PeriodicWriter",
    "TrainingCurves",
    "build_hook",
    "flatten_results",
]

logger = logging.getLogger(__name__)


def flatten_results(results: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """``{"sem_seg": {"mIoU": x}}`` -> ``{"sem_seg/mIoU": x}``."""
    return {f"{variant}/{k}": v for variant, metrics in results.items() for k, v in metrics.items()}


class IterationTimer(HookBase):
    """Record each step's wall time as ``time`` and log the total at the end (fvcore ``Timer``s)."""

    def before_train(self) -> None:
        from fvcore.common.timer import Timer

        self._train_timer = Timer()
        self._step_timer = Timer()

    def before_step(self) -> None:
        self._step_timer.reset()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", self._step_timer.seconds())

    def after_train(self) -> None:
        done = self.trainer.iter - self.trainer.start_iter
        total = self._train_timer.seconds()
        logger.info("Trained %d iterations in %s (%.3f s/it)", done, datetime.timedelta(seconds=int(total)),
                    total / max(done, 1))


class LRScheduler(HookBase):
    """Record the learning rate used by this step as ``lr``, then step the scheduler once."""

    def __init__(self, optimizer, scheduler) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("lr", self.optimizer.param_groups[0]["lr"], smoothing_hint=False)
        self.scheduler.step()


def _resume_state(trainer) -> Dict[str, Any]:
    return resume_state(trainer.iter, getattr(trainer, "accum_steps", 1))


class PeriodicCheckpointer(_FvcorePeriodicCheckpointer, HookBase):
    """Save ``model_<iter>.pth`` every ``period`` iterations and ``model_final.pth`` at the end.

    fvcore's ``PeriodicCheckpointer`` as a hook (detectron2's habit), with segkit's rules
    in :meth:`step`: the last iteration writes ``model_final.pth`` only (fvcore would
    also write the periodic file of that iteration), ``period`` 0 means the final one
    only, and keep-last-N prunes the files on disk older than the one just written
    (:meth:`Checkpointer.prune`) instead of fvcore's in-memory list of this process's
    saves, which forgets the files written before a resume (they would never be pruned).

    Registered after :class:`EvalHook` and :class:`BestCheckpointer`, so a checkpoint for
    iteration k exists only once k's evaluation finished: a run killed during an
    evaluation resumes from an earlier checkpoint and evaluates again.

    Args:
        checkpointer: the :class:`Checkpointer` that writes (atomically).
        period: iterations between saves (0 = only the final one).
        max_iter: to recognise the last iteration.
        max_to_keep: periodic files kept (oldest deleted first; 0 = all).
    """

    def __init__(self, checkpointer: Checkpointer, period: int, max_iter: int, max_to_keep: int = 0) -> None:
        # fvcore's own pruning stays off (max_to_keep=None): see the class docstring.
        super().__init__(checkpointer, int(period), max_iter=int(max_iter), max_to_keep=None, file_prefix="model")
        self.keep_last = int(max_to_keep)

    def _due(self, iteration: int) -> bool:
        last = iteration + 1 >= self.max_iter
        return last or (self.period > 0 and (iteration + 1) % self.period == 0)

    def step(self, iteration: int, **kwargs: Any) -> None:
        """Save what ``iteration`` (0-based) owes, with ``kwargs`` as extra entries (fvcore's API)."""
        iteration = int(iteration)
        if not self._due(iteration):
            return
        if iteration + 1 >= self.max_iter:
            self.checkpointer.save(f"{self.file_prefix}_final", iteration=iteration, **kwargs)
            return
        super().step(iteration, **kwargs)  # writes model_<iteration>.pth (fvcore's name)
        newest = os.path.join(self.checkpointer.save_dir, f"{self.file_prefix}_{iteration:07d}.pth")
        self.checkpointer.prune(self.keep_last, newest=newest)

    def after_step(self) -> None:
        # The resume state gathers every process' RNG: only on the iterations that save.
        if self._due(self.trainer.iter):
            state = _resume_state(self.trainer)
            self.step(state.pop("iteration"), **state)


class EvalHook(HookBase):
    """Run ``eval_function(final: bool) -> results`` every ``period`` iterations and at the end.

    Results (``{variant: {metric: value}}``) are flattened to ``variant/metric`` scalars
    in the event storage and kept in :attr:`latest_results`.
    """

    def __init__(self, period: int, eval_function: Callable[[bool], Dict[str, Dict[str, float]]], max_iter: int):
        self.period = int(period)
        self.eval_function = eval_function
        self.max_iter = int(max_iter)
        self.latest_results: Dict[str, Dict[str, float]] = {}

    def _do_eval(self, final: bool) -> None:
        results = self.eval_function(final) or {}
        self.latest_results = results
        for k, v in flatten_results(results).items():
            if not math.isnan(v):
                self.trainer.storage.put_scalar(k, v, smoothing_hint=False)

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        final = it >= self.max_iter
        if final or (self.period > 0 and it % self.period == 0):
            self._do_eval(final)


class BestCheckpointer(HookBase):
    """Save ``model_best.pth`` whenever ``metric`` improves on its best value.

    Runs after :class:`EvalHook` in the same step; the best value survives resumes in
    ``<save_dir>/best_metric.json``.

    Args:
        checkpointer: writes the file.
        metric: flattened metric name (``"sem_seg/mIoU"``).
        mode: ``"max"`` or ``"min"``.
    """

    def __init__(self, checkpointer: Checkpointer, metric: str, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"TEST.BEST_MODE must be 'max' or 'min', got '{mode}'.")
        self.checkpointer = checkpointer
        self.metric = metric
        self.mode = mode
        self.best: Optional[float] = None
        self._path = os.path.join(checkpointer.save_dir, "best_metric.json")

    def before_train(self) -> None:
        if os.path.isfile(self._path):
            with open(self._path, "r", encoding="utf-8") as f:
                self.best = json.load(f)["value"]

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def after_step(self) -> None:
        latest = self.trainer.storage.latest()
        if self.metric not in latest:
            return
        value, it = latest[self.metric]
        if it != self.trainer.iter or math.isnan(value) or not self._better(value):
            return
        self.best = value
        # model_best is not where --resume continues from: last_checkpoint keeps pointing at the latest.
        self.checkpointer.save("model_best", tag_last=False, **_resume_state(self.trainer),
                               best_metric={self.metric: value})
        if is_main_process():
            atomic_write(self._path, json.dumps({"metric": self.metric, "value": value, "iteration": it}))
        logger.info("New best %s = %.4f at iteration %d (saved model_best.pth)", self.metric, value, it + 1)


class PeriodicWriter(HookBase):
    """Call every writer's ``write()`` every ``period`` iterations, at the end and after evaluations."""

    def __init__(self, writers: Sequence[Any], period: int = 20) -> None:
        self.writers = list(writers)
        self.period = max(int(period), 1)

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        latest = self.trainer.storage.latest()
        evaluated = any("/" in k and v[1] == self.trainer.iter for k, v in latest.items())
        if it % self.period == 0 or it == self.trainer.max_iter or evaluated:
            for w in self.writers:
                w.write()

    def after_train(self) -> None:
        for w in self.writers:
            w.write()
            w.close()


class TrainingCurves(HookBase):
    """Draw loss and metric curves from ``metrics.jsonl`` (so resumed runs show all of it)."""

    def __init__(self, metrics_file: str, out_dir: str, metric_names: Sequence[str] = ("sem_seg/mIoU",)) -> None:
        self.metrics_file = metrics_file
        self.out_dir = out_dir
        self.metric_names = list(metric_names)

    def after_train(self) -> None:
        if not is_main_process() or not os.path.isfile(self.metrics_file):
            return

        paths = save_training_curves(self.metrics_file, self.out_dir, self.metric_names)
        logger.info("Saved curves: %s", ", ".join(paths))


# ----------------------------------------------------------------------------- registry
# The shared construction rule (segkit.config.build_component): each registered
# function takes plain keyword arguments, and its ``from_config(cfg, trainer)``
# returns them. A function may return None to add no hook.
@HOOK_REGISTRY.register(name="IterationTimer")
@configurable(from_config=lambda cfg, trainer: {})
def iteration_timer() -> IterationTimer:
    return IterationTimer()


@HOOK_REGISTRY.register(name="LRScheduler")
@configurable(from_config=lambda cfg, trainer: {"optimizer": trainer.optimizer, "scheduler": trainer.scheduler})
def lr_scheduler_hook(optimizer, scheduler) -> LRScheduler:
    return LRScheduler(optimizer, scheduler)


def _periodic_checkpointer_args(cfg, trainer) -> dict:
    return {"checkpointer": trainer.checkpointer, "period": cfg.SOLVER.CHECKPOINT_PERIOD,
            "max_iter": cfg.SOLVER.MAX_ITER, "max_to_keep": cfg.SOLVER.MAX_TO_KEEP}


@HOOK_REGISTRY.register(name="PeriodicCheckpointer")
@configurable(from_config=_periodic_checkpointer_args)
def periodic_checkpointer(checkpointer, period, max_iter, max_to_keep) -> PeriodicCheckpointer:
    return PeriodicCheckpointer(checkpointer, period, max_iter, max_to_keep)


def _eval_hook_args(cfg, trainer) -> dict:
    return {"period": cfg.TEST.EVAL_PERIOD, "eval_function": trainer.evaluate_during_training,
            "max_iter": cfg.SOLVER.MAX_ITER}


@HOOK_REGISTRY.register(name="EvalHook")
@configurable(from_config=_eval_hook_args)
def eval_hook(period, eval_function, max_iter) -> EvalHook:
    return EvalHook(period, eval_function, max_iter)


def _best_checkpointer_args(cfg, trainer) -> dict:
    return {"checkpointer": trainer.checkpointer, "metric": cfg.TEST.BEST_METRIC, "mode": cfg.TEST.BEST_MODE}


@HOOK_REGISTRY.register(name="BestCheckpointer")
@configurable(from_config=_best_checkpointer_args)
def best_checkpointer(checkpointer, metric, mode) -> Optional[BestCheckpointer]:
    return BestCheckpointer(checkpointer, metric, mode) if metric else None


@HOOK_REGISTRY.register(name="PeriodicWriter")
@configurable(from_config=lambda cfg, trainer: {"writers": trainer.build_writers, "period": cfg.SOLVER.LOG_PERIOD})
def periodic_writer(writers, period) -> Optional[PeriodicWriter]:
    """``writers``: a list, or a function making it (called on the main process only)."""
    if not is_main_process():
        return None
    return PeriodicWriter(writers() if callable(writers) else writers, period)


def _training_curves_args(cfg, trainer) -> dict:
    return {"metrics_file": os.path.join(cfg.OUTPUT_DIR, "metrics.jsonl"),
            "out_dir": os.path.join(cfg.OUTPUT_DIR, "pictures"),
            "metric_names": [cfg.TEST.BEST_METRIC] if cfg.TEST.BEST_METRIC else []}


@HOOK_REGISTRY.register(name="TrainingCurves")
@configurable(from_config=_training_curves_args)
def training_curves(metrics_file, out_dir, metric_names) -> TrainingCurves:
    return TrainingCurves(metrics_file, out_dir, metric_names)


def build_hook(cfg, name: str, trainer) -> Optional[HookBase]:
    """The hook registered as ``name`` for ``trainer`` (None when its builder adds none)."""
    return build_component(HOOK_REGISTRY, name, cfg, expect=_is_hook, trainer=trainer)


def _is_hook(obj: Any) -> Optional[str]:
    if obj is None or isinstance(obj, HookBase):
        return None
    return f"built {type(obj).__name__}, which is not a segkit.engine.HookBase (subclass it) or None."


# EvalHook and BestCheckpointer run before PeriodicCheckpointer: a checkpoint is written only
# after the evaluations its iteration owes, so a resumed run never skips one.
DEFAULT_HOOKS: List[str] = [
    "IterationTimer",
    "LRScheduler",
    "EvalHook",
    "BestCheckpointer",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "TrainingCurves",
]
