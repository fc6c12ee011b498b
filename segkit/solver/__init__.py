"""Solver: optimizers with per-module learning rates, LR schedules, gradient clipping."""
from segkit.solver.build import (
    NORM_TYPES,
    build_optimizer,
    clip_gradients,
    get_param_groups,
    param_group_rules_from_config,
)
from segkit.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler, build_lr_scheduler, with_warmup

__all__ = [
    "LRMultiplier",
    "NORM_TYPES",
    "WarmupParamScheduler",
    "build_lr_scheduler",
    "build_optimizer",
    "clip_gradients",
    "get_param_groups",
    "param_group_rules_from_config",
    "with_warmup",
]
