"""Check that an exported bundle computes what the PyTorch model computes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from segkit.export.exporters import build_export_model, make_pipeline
from segkit.export.runtime import ExportedSegmenter

__all__ = ["ParityReport", "check_parity"]


@dataclass
class ParityReport:
    """Agreement of a bundle with PyTorch over a set of images.

    Attributes:
        pixel_agreement: fraction of pixels (all images) with the same label.
        max_prob_diff: largest absolute difference of a class probability, or None
            when the bundle has no ``probs`` output.
        max_margin_at_disagreement: largest PyTorch top-1 minus top-2 probability
            among pixels whose labels differ (0 when none differ): disagreements
            from float rounding sit on near-ties, so this stays tiny.
        sizes: ``(H, W)`` of each image checked.
        per_image_agreement: pixel agreement of each image.
    """

    pixel_agreement: float
    max_prob_diff: Optional[float]
    max_margin_at_disagreement: float
    sizes: List[tuple] = field(default_factory=list)
    per_image_agreement: List[float] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)


def _torch_outputs(pipeline, image: np.ndarray, layout: str):
    batch = image[None] if layout == "NHWC" else image.transpose(2, 0, 1)[None]
    with torch.inference_mode():
        labels, probs = pipeline(torch.from_numpy(np.ascontiguousarray(batch)))
    return labels[0].numpy(), probs[0].numpy()


def _reference_model(cfg, weights: Optional[str], model: Optional[nn.Module]) -> nn.Module:
    if model is not None:
        return model.eval()
    if not (weights or cfg.MODEL.WEIGHTS):
        raise ValueError(
            "check_parity needs the weights the bundle was exported with (weights= or MODEL.WEIGHTS), "
            "or the model itself (model=); a freshly initialised model would not match."
        )
    return build_export_model(cfg, weights)


def check_parity(
    cfg,
    weights: Optional[str],
    bundle: Union[str, ExportedSegmenter],
    images: Sequence[np.ndarray],
    *,
    model: Optional[nn.Module] = None,
) -> ParityReport:
    """Run ``images`` through the bundle and through the PyTorch pipeline of ``cfg`` + ``weights``.

    Args:
        cfg, weights: the config and checkpoint the bundle was exported from.
        bundle: path of an exported file, or an opened :class:`ExportedSegmenter`.
        images: ``(H, W, 3)`` uint8 images in the bundle's ``input_format`` (sizes may differ).
        model: the exported model itself (CPU, eval), instead of rebuilding it from ``weights``.
    """
    seg = bundle if isinstance(bundle, ExportedSegmenter) else ExportedSegmenter(bundle)
    layout = seg.metadata["input_layout"]
    reference = make_pipeline(_reference_model(cfg, weights, model), layout, with_probs=True)
    same = total = 0
    prob_diff: Optional[float] = 0.0 if "probs" in seg.metadata["outputs"] else None
    margin, sizes, per_image = 0.0, [], []
    for image in images:
        ref_labels, ref_probs = _torch_outputs(reference, image, layout)
        got = seg(image)
        equal = got["labels"] == ref_labels
        same, total = same + int(equal.sum()), total + equal.size
        per_image.append(float(equal.mean()))
        sizes.append(tuple(image.shape[:2]))
        if prob_diff is not None:
            prob_diff = max(prob_diff, float(np.abs(got["probs"] - ref_probs).max()))
        if not equal.all():
            top2 = np.sort(ref_probs, axis=0)[-2:]
            margin = max(margin, float((top2[1] - top2[0])[~equal].max()))
    return ParityReport(same / max(total, 1), prob_diff, margin, sizes, per_image)
