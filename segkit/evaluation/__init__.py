"""Evaluation: confusion matrix on the device, mIoU/fwIoU/accuracies, per-class tables."""
from segkit.evaluation.metrics import (
    ConfusionMatrix,
    confusion_to_list,
    format_per_class_table,
    metrics_from_confusion,
)
from segkit.evaluation.sem_seg_evaluation import (
    RAW_KEY,
    SemSegEvaluator,
    inference_on_dataset,
    postprocessed_key,
)
from segkit.evaluation.multi_task import MultiTaskSemSegEvaluator

__all__ = [
    "ConfusionMatrix",
    "RAW_KEY",
    "SemSegEvaluator",
    "confusion_to_list",
    "format_per_class_table",
    "inference_on_dataset",
    "metrics_from_confusion",
    "MultiTaskSemSegEvaluator",
    "postprocessed_key",
]
