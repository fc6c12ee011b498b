"""Parameters and FLOPs per module through fvcore.

fvcore counts one fused multiply-add as one flop (so "FLOPs" here are MACs, the
convention of most papers' GFLOPs tables). Operators fvcore has no formula for
are listed in ``unsupported_ops`` rather than silently counted as zero.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
from torch import nn

__all__ = ["ModelAnalysis", "analyze_model"]


@dataclass
class ModelAnalysis:
    """Result of :func:`analyze_model`.

    Attributes:
        input_size: ``(H, W)`` of the single image analysed.
        total_params: all parameters.
        total_flops: fvcore flops (multiply-adds) of one forward pass.
        params_by_module: parameters per module name ("" = whole model).
        flops_by_module: flops per module name ("" = whole model).
        unsupported_ops: operator -> count of calls fvcore could not count.
        table: fvcore's per-module table (parameters and flops) up to ``max_depth``.
    """

    input_size: Tuple[int, int]
    total_params: int
    total_flops: int
    params_by_module: Dict[str, int] = field(default_factory=dict)
    flops_by_module: Dict[str, int] = field(default_factory=dict)
    unsupported_ops: Dict[str, int] = field(default_factory=dict)
    table: str = ""

    def as_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)


def analyze_model(model: nn.Module, height: int, width: int, max_depth: int = 3) -> ModelAnalysis:
    """Count parameters and flops of ``model`` on one ``(1, 3, height, width)`` uint8 image.

    Args:
        model: a segkit model (eval mode is set for the count and restored after).
        height, width: input size.
        max_depth: module depth of the printed table.
    """
    with warnings.catch_warnings():  # fvcore scripts helpers with torch.jit, deprecated in torch >= 2.9
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis, flop_count_table, parameter_count

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    image = torch.zeros(1, 3, height, width, dtype=torch.uint8, device=device)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # fvcore traces through torch.jit, which torch >= 2.9 flags as deprecated.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated", category=FutureWarning)
            flops = FlopCountAnalysis(model, (image,))
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_module = dict(flops.by_module())
            unsupported = dict(flops.unsupported_ops())
            table = flop_count_table(flops, max_depth=max_depth)
    finally:
        model.train(was_training)
    params = dict(parameter_count(model))
    return ModelAnalysis(
        (height, width), int(params.get("", 0)), int(by_module.get("", 0)), params,
        {k: int(v) for k, v in by_module.items()}, unsupported, table,
    )
