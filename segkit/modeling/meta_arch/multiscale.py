"""DeepLab v2 multi-scale inputs (MSC, Chen et al. TPAMI 2018, sec. 3.3 and 4.1).

The shared network runs on the image at several scales (1, 0.75, 0.5); each
branch's scores are resized to the first scale's score map and fused by taking
the maximum at each position. Training puts a loss on every branch and on the
fused map ("the training loss is the sum of the cross entropy of each scale and
of the fused output"); inference returns the fused map.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Union

import torch
import torch.nn.functional as F

from segkit.modeling.meta_arch.semantic_seg import SemanticSegmentor, upsample_logits
from segkit.config import configurable
from segkit.registry import META_ARCH_REGISTRY

__all__ = ["MultiScaleSegmentor"]


def _scale_suffix(scale: float) -> str:
    return f"_s{int(round(scale * 100)):03d}"


@META_ARCH_REGISTRY.register()
class MultiScaleSegmentor(SemanticSegmentor):
    """``SemanticSegmentor`` with MSC. Loss keys: ``loss_<term>_s100``, ``_s075``, ``_s050``, ``_fused``."""

    @configurable
    def __init__(self, *, scales: Sequence[float] = (1.0, 0.75, 0.5), **kwargs) -> None:
        super().__init__(**kwargs)
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"MODEL.MSC.SCALES must be positive, got {list(scales)}.")
        if len({_scale_suffix(s) for s in scales}) != len(scales):
            raise ValueError(f"MODEL.MSC.SCALES has duplicates (to 0.01): {list(scales)}.")
        self.scales = [float(s) for s in scales]

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {**super().from_config(cfg), "scales": list(cfg.MODEL.MSC.SCALES)}

    def branch_logits(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Head logits per scale, each resized to the first scale's score map."""
        outs = []
        for s in self.scales:
            xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
            outs.append(self.predict_logits(xs))
        ref = outs[0].shape[-2:]
        return [upsample_logits(o, ref) for o in outs]

    def forward(
        self, images: torch.Tensor, targets: torch.Tensor = None
    ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        x = self.normalize(images)
        branches = self.branch_logits(x)
        fused = torch.stack(branches).amax(dim=0)  # sec. 3.3: max over scales
        if self.training and targets is not None:
            losses: Dict[str, torch.Tensor] = {}
            for s, logits in zip(self.scales, branches):
                losses.update(self.compute_losses(logits, targets, _scale_suffix(s)))
            losses.update(self.compute_losses(fused, targets, "_fused"))
            return losses
        return upsample_logits(fused, x.shape[-2:])
