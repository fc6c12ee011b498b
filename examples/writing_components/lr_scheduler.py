"""LR_SCHEDULER_REGISTRY: optimizer -> LRScheduler stepped once per iteration."""
import torch

from segkit.config import configurable
from segkit.registry import LR_SCHEDULER_REGISTRY


class _LinearDecay:
    """A picklable multiplier: 1 at iteration 0, ``final`` at ``max_iter``."""

    def __init__(self, max_iter: int, final: float) -> None:
        self.max_iter, self.final = max_iter, final

    def __call__(self, it: int) -> float:
        t = min(it, self.max_iter) / self.max_iter
        return 1.0 + (self.final - 1.0) * t


@LR_SCHEDULER_REGISTRY.register(name="LinearDecayLR")
@configurable(from_config=lambda cfg, optimizer: {"optimizer": optimizer, "max_iter": cfg.SOLVER.MAX_ITER})
def linear_decay_lr(optimizer: torch.optim.Optimizer, max_iter: int, final: float = 0.0):
    """Linear decay of every group's rate to ``final`` times its base over ``MAX_ITER``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _LinearDecay(max_iter, final))
