"""HOOK_REGISTRY: code run around training and each step (``SOLVER.EXTRA_HOOKS: [StepCounterHook]``)."""
from segkit.config import configurable
from segkit.engine.train_loop import HookBase
from segkit.registry import HOOK_REGISTRY


@HOOK_REGISTRY.register()
class StepCounterHook(HookBase):
    """Counts steps and records ``steps_seen`` every ``period`` steps in the trainer's storage.

    Args:
        period: how often to record (``SOLVER.LOG_PERIOD``).
    """

    @configurable
    def __init__(self, *, period: int = 20) -> None:
        self.period, self.steps = period, 0

    @classmethod
    def from_config(cls, cfg, trainer) -> dict:  # trainer: for hooks that need its parts
        return {"period": cfg.SOLVER.LOG_PERIOD}

    def after_step(self) -> None:
        self.steps += 1
        if self.steps % self.period == 0:
            self.trainer.storage.put_scalars(steps_seen=float(self.steps), smoothing_hint=False)
