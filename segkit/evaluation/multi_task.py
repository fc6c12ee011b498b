"""Evaluation of a model that predicts several label sets (:class:`segkit.modeling.MultiTaskSegmentor`).

Each label set gets its own :class:`SemSegEvaluator` (confusion matrix, mIoU,
pixel accuracy, ...). Result keys: the main set keeps the usual variant keys
(``"sem_seg"``, ``"sem_seg+DenseCRF"``); set ``s`` reports under the same key
with ``sem_seg`` replaced by ``s`` (``"geometric"``), so ``TEST.BEST_METRIC`` can
name either (``"sem_seg/mIoU"``, ``"geometric/pACC"``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from segkit.config.configurable import configurable
from segkit.data import MetadataCatalog
from segkit.data.registration import dataset_classes
from segkit.evaluation.sem_seg_evaluation import RAW_KEY, SemSegEvaluator
from segkit.registry import EVALUATOR_REGISTRY

__all__ = ["MultiTaskSemSegEvaluator"]


@EVALUATOR_REGISTRY.register()
class MultiTaskSemSegEvaluator:
    """Per-label-set evaluators fed from one pass.

    Args:
        label_sets: ``[(name, class_names)]``, the main set (``"sem_seg"``) first, in the
            order of the targets' second axis and of the model's concatenated scores.
        ignore_value, output_dir, dataset_name, num_samples_kept: as :class:`SemSegEvaluator`
            (pictures are kept for the main set only).
    """

    @configurable
    def __init__(self, label_sets: Sequence[Tuple[str, Sequence[str]]], ignore_value: int = 255,
                 output_dir: Optional[str] = None, dataset_name: str = "dataset", num_samples_kept: int = 0) -> None:
        if not label_sets or label_sets[0][0] != RAW_KEY:
            raise ValueError(f"The first label set must be the main one, '{RAW_KEY}'; got {[n for n, _ in label_sets]}.")
        self.label_sets = [(str(n), list(c)) for n, c in label_sets]
        self.evaluators: Dict[str, SemSegEvaluator] = {
            name: SemSegEvaluator(len(classes), classes, ignore_value, output_dir,
                                  dataset_name if name == RAW_KEY else f"{dataset_name}_{name}",
                                  num_samples_kept if name == RAW_KEY else 0)
            for name, classes in self.label_sets
        }
        self.main = self.evaluators[RAW_KEY]
        self.dataset_name, self.ignore_value = dataset_name, int(ignore_value)

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> dict:
        """Class names from the dataset's classes and its ``label_sets`` metadata.

        The main set's class count was checked against ``MODEL.NUM_CLASSES`` at set-up
        (:func:`segkit.data.setup_datasets`); each extra set's is checked here.
        """
        main, _, _ = dataset_classes(cfg, [dataset_name])
        sets: List[Tuple[str, List[str]]] = [(RAW_KEY, list(main or [str(i) for i in range(cfg.MODEL.NUM_CLASSES)]))]
        named = MetadataCatalog.get(dataset_name).get("label_sets") or {}
        for s in cfg.MODEL.MULTI_TASK.EXTRA_LABEL_SETS:
            names = list(named.get(s["NAME"]) or [str(i) for i in range(s["NUM_CLASSES"])])
            if len(names) != s["NUM_CLASSES"]:
                raise ValueError(f"Dataset '{dataset_name}' has {len(names)} classes in label set '{s['NAME']}' but "
                                 f"MODEL.MULTI_TASK.EXTRA_LABEL_SETS gives NUM_CLASSES {s['NUM_CLASSES']}.")
            sets.append((s["NAME"], names))
        return {"label_sets": sets, "ignore_value": cfg.MODEL.IGNORE_VALUE, "output_dir": output_dir,
                "dataset_name": dataset_name, "num_samples_kept": cfg.TEST.VIS_NUM_IMAGES}

    # What the engine reads for pictures: the main set's.
    class_names = property(lambda self: self.main.class_names)
    samples = property(lambda self: self.main.samples)
    confusion = property(lambda self: getattr(self.main, "confusion", {}))

    def reset(self) -> None:
        for e in self.evaluators.values():
            e.reset()

    def process(self, inputs: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]) -> None:
        """Count one batch.

        Args:
            inputs: batch with ``"sem_seg"`` int64 ``(N, T, H, W)`` (one mask per label set).
            outputs: variant -> concatenated scores ``(N, sum K, H, W)`` (log-probabilities or
                probabilities; each set's arg-max is taken over its own channels).
        """
        target = inputs["sem_seg"]
        if target.dim() != 4 or target.shape[1] != len(self.label_sets):
            raise ValueError(f"Multi-task evaluation needs targets (N, {len(self.label_sets)}, H, W), got "
                             f"{tuple(target.shape)}; does MODEL.MULTI_TASK.EXTRA_LABEL_SETS match the dataset?")
        sizes = [len(c) for _, c in self.label_sets]
        for i, (name, _) in enumerate(self.label_sets):
            per_set = {}
            for key, scores in outputs.items():
                if scores.shape[1] != sum(sizes):
                    raise ValueError(f"Output '{key}' has {scores.shape[1]} channels; the label sets need {sum(sizes)} "
                                     "(MODEL.MULTI_TASK.INFERENCE_OUTPUT must be 'all' for evaluation).")
                per_set[key] = torch.split(scores, sizes, dim=1)[i]
            self.evaluators[name].process({**inputs, "sem_seg": target[:, i]}, per_set)

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """``{variant: metrics}`` of the main set, ``{variant with sem_seg -> <set>: metrics}`` of the others."""
        results: Dict[str, Dict[str, float]] = {}
        for name, evaluator in self.evaluators.items():
            for key, metrics in evaluator.evaluate().items():
                results[name + key[len(RAW_KEY):] if name != RAW_KEY else key] = metrics
        return results
