"""EVALUATOR_REGISTRY: reset(), process(inputs, outputs), evaluate() -> dict of metrics."""
from typing import Dict, Optional

import torch

from segkit.config import configurable
from segkit.registry import EVALUATOR_REGISTRY


@EVALUATOR_REGISTRY.register()
class PixelAccuracyEvaluator:
    """Pixel accuracy (percent) over non-ignored pixels (``TEST.EVALUATOR: PixelAccuracyEvaluator``).

    Args:
        ignore_value: ground-truth value that is not scored.
        dataset_name, output_dir: where results would be written (unused here).
    """

    @configurable
    def __init__(self, *, ignore_value: int = 255, dataset_name: str = "", output_dir: Optional[str] = None):
        self.ignore_value, self.dataset_name, self.output_dir = ignore_value, dataset_name, output_dir
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> dict:
        return {"ignore_value": cfg.MODEL.IGNORE_VALUE, "dataset_name": dataset_name, "output_dir": output_dir}

    def reset(self) -> None:
        self.correct = self.total = 0

    def process(self, inputs: Dict[str, torch.Tensor], outputs: Dict[str, torch.Tensor]) -> None:
        """inputs["sem_seg"]: (N, H, W) int64; outputs: name -> logits (N, K, H, W) or labels (N, H, W)."""
        target = inputs["sem_seg"]
        pred = outputs["sem_seg"]
        pred = pred.argmax(1) if pred.dim() == 4 else pred
        valid = target != self.ignore_value
        self.correct += int((pred[valid] == target[valid]).sum())
        self.total += int(valid.sum())

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        return {"sem_seg": {"pAcc": 100.0 * self.correct / max(self.total, 1)}}
