"""OPTIMIZER_REGISTRY: parameter groups -> torch optimizer (``SOLVER.OPTIMIZER: RMSprop``)."""
from typing import Any, Dict, List

import torch

from segkit.config import configurable
from segkit.registry import OPTIMIZER_REGISTRY


def _rmsprop_args(cfg, params: List[Dict[str, Any]]) -> dict:
    return {"params": params, "lr": cfg.SOLVER.BASE_LR, "momentum": cfg.SOLVER.MOMENTUM}


@OPTIMIZER_REGISTRY.register(name="RMSprop")
@configurable(from_config=_rmsprop_args)
def rmsprop(params: List[Dict[str, Any]], lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """RMSprop; each group keeps its own ``lr`` and ``weight_decay`` (set by segkit's param groups)."""
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum)
