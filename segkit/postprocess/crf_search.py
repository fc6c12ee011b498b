"""Grid search of the dense CRF's appearance-kernel parameters on validation images.

DeepLab v2 (sec. 4.1, "CRF"): w2 = 3 and θγ = 3 are fixed and w1, θα, θβ are
cross-validated on 100 val images, coarse to fine, starting from
w1 ∈ [3:6], θα ∈ [30:10:100], θβ ∈ [3:6] (MATLAB notation) and then refining the
step around the first round's best values. :func:`crf_grid_search` does that over
precomputed (image, softmax, label) triples, so the network runs once.

mIoU is computed here from a confusion matrix (nan-mean over classes that occur
in the ground truth or the predictions, as ``segkit.evaluation``), because
post-processing sits below evaluation in the layering.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from segkit.postprocess.dense_crf import CRFParams, dense_crf_batch

__all__ = ["DEEPLAB_GRID", "CRFSearchResult", "crf_grid_search", "crf_config_fragment", "mean_iou"]

# DeepLab v2's first-round search ranges (sec. 4.1).
DEEPLAB_GRID: Dict[str, Tuple[float, ...]] = {
    "w1": (3.0, 4.0, 5.0, 6.0),
    "theta_alpha": tuple(float(v) for v in range(30, 101, 10)),
    "theta_beta": (3.0, 4.0, 5.0, 6.0),
}


@dataclass(frozen=True)
class CRFSearchResult:
    """One evaluated setting: its parameters and the mIoU over the search images."""

    params: CRFParams
    miou: float


def _confusion(preds: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], k: int, ignore: int) -> torch.Tensor:
    matrix = torch.zeros(k * k, dtype=torch.int64)
    for pred, label in zip(preds, labels):
        label = label.to(pred.device).long()
        valid = label != ignore
        if valid.any() and (int(label[valid].min()) < 0 or int(label[valid].max()) >= k):
            raise ValueError(f"CRF search: labels outside [0, {k}) other than the ignore value {ignore}")
        matrix += torch.bincount(label[valid] * k + pred[valid].long(), minlength=k * k).cpu()
    return matrix.reshape(k, k)


def mean_iou(preds: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], num_classes: int, ignore_label: int = 255) -> float:
    """mIoU of label maps (H, W) against ground truth (H, W), ``ignore_label`` skipped."""
    return _miou_from_confusion(_confusion(preds, labels, num_classes, ignore_label))


def _miou_from_confusion(matrix: torch.Tensor) -> float:
    m = matrix.double()
    tp = m.diagonal()
    union = m.sum(0) + m.sum(1) - tp
    valid = union > 0
    return float((tp[valid] / union[valid]).mean()) if bool(valid.any()) else float("nan")


def _refined(values: Sequence[float], best: float) -> List[float]:
    """Best value and its neighbours at half the grid step (DeepLab's finer second round)."""
    distinct = sorted(set(values))
    if len(distinct) < 2:
        return [best]
    step = min(b - a for a, b in zip(distinct, distinct[1:])) / 2
    return sorted({v for v in (best - step, best, best + step) if v > 0})


def _evaluate(images, probs, labels, settings, num_classes, ignore_label, backend, num_workers,
              on_runs=None) -> List[float]:
    """mIoU of every setting. Image-major, so per-image work the native backend
    caches (the smoothness kernel depends only on the image size) is built once.
    ``on_runs(n)`` is called after each image with the n CRF runs it took."""
    matrices = [torch.zeros(num_classes, num_classes, dtype=torch.int64) for _ in settings]
    for image, prob, label in zip(images, probs, labels):
        for matrix, params in zip(matrices, settings):
            q = dense_crf_batch(image[None], prob[None], params, backend, num_workers)
            matrix += _confusion([q[0].argmax(0)], [label], num_classes, ignore_label)
        if on_runs is not None:
            on_runs(len(settings))
    return [_miou_from_confusion(m) for m in matrices]


def crf_grid_search(
    images: Sequence[torch.Tensor],
    probs: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    num_classes: int,
    ignore_label: int = 255,
    grid: Optional[Dict[str, Sequence[float]]] = None,
    w2: float = 3.0,
    theta_gamma: float = 3.0,
    iterations: int = 10,
    refine: bool = False,
    backend: str = "native",
    num_workers: int = 0,
    progress: Optional[Callable[[CRFSearchResult], None]] = None,
    on_runs: Optional[Callable[[int], None]] = None,
) -> Tuple[CRFSearchResult, List[CRFSearchResult], float]:
    """Grid-search w1, θα, θβ by mIoU of the CRF's labels.

    Args:
        images: (3, H, W) uint8 RGB images.
        probs: (K, H, W) softmax outputs of the network for them.
        labels: (H, W) int64 ground truth.
        num_classes: K.
        ignore_label: ground-truth value that is not scored.
        grid: ``{"w1": [...], "theta_alpha": [...], "theta_beta": [...]}``; DeepLab's
            first-round ranges (:data:`DEEPLAB_GRID`) for missing entries.
        w2, theta_gamma, iterations: the fixed smoothness kernel and iteration count.
        refine: run a second round at half the step around the best setting.
        backend, num_workers: as :func:`segkit.postprocess.dense_crf_batch`.
        progress: called with each evaluated setting (once all images are done: the
            search is image-major).
        on_runs: called after each image with the number of CRF runs it took (one per
            setting of the round), for a progress bar that moves during a round.

    Returns:
        ``(best, all results in evaluation order, mIoU without CRF)``.
    """
    if not (len(images) == len(probs) == len(labels)) or not images:
        raise ValueError(
            f"CRF search needs the same positive number of images, probs and labels; "
            f"got {len(images)}, {len(probs)}, {len(labels)}"
        )
    grid = {**DEEPLAB_GRID, **(grid or {})}
    baseline = mean_iou([p.argmax(0) for p in probs], labels, num_classes, ignore_label)
    results: List[CRFSearchResult] = []
    seen = set()

    def run(w1s, alphas, betas):
        settings = []
        for w1, alpha, beta in itertools.product(w1s, alphas, betas):
            if (w1, alpha, beta) not in seen:
                seen.add((w1, alpha, beta))
                settings.append(CRFParams(w1, alpha, beta, w2, theta_gamma, iterations))
        scores = _evaluate(images, probs, labels, settings, num_classes, ignore_label, backend, num_workers, on_runs)
        for params, miou in zip(settings, scores):
            results.append(CRFSearchResult(params, miou))
            if progress is not None:
                progress(results[-1])

    run(grid["w1"], grid["theta_alpha"], grid["theta_beta"])
    if refine:
        best = max(results, key=lambda r: r.miou).params
        run(_refined(grid["w1"], best.w1), _refined(grid["theta_alpha"], best.theta_alpha),
            _refined(grid["theta_beta"], best.theta_beta))
    best = max(results, key=lambda r: r.miou)
    return best, results, baseline


def crf_config_fragment(best: CRFSearchResult, backend: str = "native", comment: str = "") -> str:
    """A YAML config fragment enabling the CRF with ``best``'s parameters.

    Merge it with ``_BASE_: [model.yaml, crf.yaml]``, ``cfg.merge_from_file`` or
    ``load_config("crf.yaml")``.
    """
    p = asdict(best.params)
    body = {
        "POSTPROCESS": {
            "CHAIN": ["DenseCRF"],
            "CRF": {
                "BACKEND": backend,
                "W1": float(p["w1"]),
                "THETA_ALPHA": float(p["theta_alpha"]),
                "THETA_BETA": float(p["theta_beta"]),
                "W2": float(p["w2"]),
                "THETA_GAMMA": float(p["theta_gamma"]),
                "ITERATIONS": int(p["iterations"]),
            },
        }
    }
    header = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    return header + yaml.safe_dump(body, sort_keys=False)
