"""Semantic-segmentation evaluator and the loop that feeds it.

One pass over a dataset scores several *variants* of the prediction at once, for
example the raw network output and the output after the post-processor chain
(dense CRF): the network runs once per image, each variant updates its own
confusion matrix on the device, and the matrices are summed across processes at
the end.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist

from segkit.data.registration import dataset_classes
from segkit.evaluation.metrics import (
    ConfusionMatrix,
    confusion_to_list,
    format_per_class_table,
    metrics_from_confusion,
)
from segkit.config.configurable import build_component, configurable
from segkit.postprocess.chain import on_valid_regions
from segkit.registry import EVALUATOR_REGISTRY
from segkit.utils.fileio import atomic_write

__all__ = ["SemSegEvaluator", "build_evaluator", "build_sem_seg_evaluator", "inference_on_dataset", "RAW_KEY", "postprocessed_key"]

logger = logging.getLogger(__name__)

#: Result key of the network's own prediction (argmax of its probabilities).
RAW_KEY = "sem_seg"


def postprocessed_key(chain: Sequence[str]) -> str:
    """Result key of the prediction after the post-processor ``chain``, e.g. ``"sem_seg+DenseCRF"``."""
    return RAW_KEY + "".join(f"+{name}" for name in chain)


def _is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class SemSegEvaluator:
    """Confusion-matrix evaluator for one dataset, over any number of prediction variants.

    Args:
        num_classes: ``K``.
        class_names: ``K`` names used in the per-class table and result keys.
        ignore_value: ground-truth label that is not scored.
        output_dir: where ``sem_seg_evaluation_<dataset>.json`` is written (None: not written).
        dataset_name: for the file name and the log.
        num_samples_kept: how many ``(image, ground truth, predictions)`` triples of the
            first batches to keep in :attr:`samples` for pictures (main process only).
    """

    @configurable
    def __init__(
        self,
        num_classes: int,
        class_names: Optional[Sequence[str]] = None,
        ignore_value: int = 255,
        output_dir: Optional[str] = None,
        dataset_name: str = "dataset",
        num_samples_kept: int = 0,
    ) -> None:
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names given for {num_classes} classes.")
        self.ignore_value = int(ignore_value)
        self.output_dir = output_dir
        self.dataset_name = dataset_name
        self.num_samples_kept = int(num_samples_kept)
        # Training iteration (0-based) of the evaluated weights, written into the JSON when set.
        self.iteration: Optional[int] = None
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None, **kwargs: Any) -> dict:
        """Class names from the dataset's metadata (:func:`segkit.data.dataset_classes`), else ``"0".."K-1"``.

        The class count was checked against ``MODEL.NUM_CLASSES`` once at set-up
        (:func:`segkit.data.setup_datasets`); under ``DATASETS.ALLOW_NUM_CLASSES_MISMATCH``
        the names are generic.
        """
        names, _, _ = dataset_classes(cfg, [dataset_name])
        kwargs.setdefault("num_samples_kept", cfg.TEST.VIS_NUM_IMAGES)
        return {"num_classes": cfg.MODEL.NUM_CLASSES, "class_names": names, "ignore_value": cfg.MODEL.IGNORE_VALUE,
                "output_dir": output_dir, "dataset_name": dataset_name, **kwargs}

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.matrices: Dict[str, ConfusionMatrix] = {}
        self.samples: List[Dict[str, Any]] = []

    def process(self, inputs: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]) -> None:
        """Count one batch.

        Args:
            inputs: a test-loader batch with ``"sem_seg"``: int64 ``(N, H, W)`` (padding
                equals the ignore value) and ``"image"``: uint8 ``(N, 3, H, W)``.
            outputs: variant name -> predicted labels ``(N, H, W)`` or probabilities /
                logits ``(N, K, H, W)`` (argmax is taken over ``K``).
        """
        target = inputs["sem_seg"]
        labels = {}
        for key, out in outputs.items():
            pred = out.argmax(dim=1) if out.dim() == 4 else out
            if key not in self.matrices:
                self.matrices[key] = ConfusionMatrix(self.num_classes, self.ignore_value)
            self.matrices[key].update(pred, target)
            labels[key] = pred
        self._keep_samples(inputs, labels)

    def _keep_samples(self, inputs: Mapping[str, Any], labels: Dict[str, torch.Tensor]) -> None:
        images = inputs.get("image")
        for i in range(int(inputs["sem_seg"].shape[0])):
            if len(self.samples) >= self.num_samples_kept or images is None:
                return
            self.samples.append(
                {
                    "image": images[i, :3].detach().cpu(),  # the first input when several are stacked
                    "sem_seg": inputs["sem_seg"][i].detach().cpu(),
                    "pred": {k: v[i].detach().cpu() for k, v in labels.items()},
                }
            )

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """Reduce across processes and compute metrics.

        Returns:
            ``{variant: {"mIoU", "fwIoU", "pACC", "mACC", "IoU-<c>", "ACC-<c>"}}`` on
            every process (the matrices are all-reduced, so all ranks agree).
        """
        results: Dict[str, Dict[str, float]] = {}
        self.confusion: Dict[str, torch.Tensor] = {}
        for key in sorted(self.matrices):
            matrix = self.matrices[key].reduce()
            self.confusion[key] = matrix.cpu()
            results[key] = metrics_from_confusion(matrix, self.class_names)
            if _is_main_process():
                logger.info(
                    "Evaluation of %s on %s:\n%s",
                    key,
                    self.dataset_name,
                    format_per_class_table(results[key], self.class_names),
                )
        if self.output_dir and _is_main_process():
            self._write_json(results)
        return results

    def _write_json(self, results: Dict[str, Dict[str, float]]) -> str:
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, f"sem_seg_evaluation_{self.dataset_name}.json")
        payload = {
            "dataset": self.dataset_name,
            "iteration": self.iteration,
            "classes": self.class_names,
            "results": {k: {m: (None if v != v else v) for m, v in r.items()} for k, r in results.items()},
            "confusion_matrix": {k: confusion_to_list(m) for k, m in self.confusion.items()},
        }
        return atomic_write(path, json.dumps(payload, indent=2))


EVALUATOR_REGISTRY.register(SemSegEvaluator)


def _is_evaluator(obj: Any) -> Optional[str]:
    missing = [m for m in ("reset", "process", "evaluate") if not callable(getattr(obj, m, None))]
    return f"built {type(obj).__name__}, which lacks {missing}; an evaluator needs reset(), process(inputs, " \
           "outputs) and evaluate() -> dict." if missing else None


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None, name: Optional[str] = None):
    """The evaluator ``TEST.EVALUATOR`` (or ``name``) for ``dataset_name``, writing into ``output_dir``."""
    return build_component(EVALUATOR_REGISTRY, name or cfg.TEST.EVALUATOR, cfg, expect=_is_evaluator,
                           dataset_name=dataset_name, output_dir=output_dir)


def build_sem_seg_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> SemSegEvaluator:
    """``SemSegEvaluator(cfg, dataset_name, output_dir)``; kept for code written before the class was registered."""
    return SemSegEvaluator(cfg, dataset_name, output_dir)


def inference_on_dataset(
    data_loader,
    evaluator: SemSegEvaluator,
    inference: Callable[[torch.Tensor], torch.Tensor],
    postprocessors: Optional[Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = None,
    log_period: int = 50,
) -> Dict[str, Dict[str, float]]:
    """Run ``inference`` over a finite loader and score raw and post-processed outputs.

    Args:
        data_loader: yields batches ``{"image": uint8 (N, 3, H, W), "sem_seg": (N, H, W), ...}``.
        evaluator: reset here, then fed every batch.
        inference: ``images (N, 3, H, W) uint8 -> probs (N, K, H, W)`` (e.g.
            ``segkit.postprocess.build_inference(cfg, model)``); the model must
            already be in eval mode. Images are passed as the loader gives them: the
            model moves them to its device.
        postprocessors: result key -> ``(probs, images) -> probs`` applied to the
            same probabilities (e.g. ``{"sem_seg+DenseCRF": chain}``); the raw
            prediction is always scored under ``"sem_seg"``.
        log_period: log progress every this many batches.

    Returns:
        ``evaluator.evaluate()``.
    """
    evaluator.reset()
    postprocessors = dict(postprocessors or {})
    total = _safe_len(data_loader)
    start = time.perf_counter()
    with torch.no_grad():
        for idx, batch in enumerate(data_loader):
            images = batch["image"]
            probs = inference(images)
            outputs = {RAW_KEY: probs}
            for key, post in postprocessors.items():
                # Each image's valid region only: padding must not change a post-processed result.
                outputs[key] = on_valid_regions(post, probs, images, batch.get("image_sizes"))
            evaluator.process({**batch, "image": batch["image"]}, outputs)
            if log_period and (idx + 1) % log_period == 0 and _is_main_process():
                rate = (idx + 1) / max(time.perf_counter() - start, 1e-9)
                logger.info("Inference %d/%s batches, %.2f batches/s", idx + 1, total or "?", rate)
    logger.info("Inference done in %.1f s.", time.perf_counter() - start)
    return evaluator.evaluate()


def _safe_len(loader) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None
