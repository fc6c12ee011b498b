"""One network, several label sets: a shared backbone and one head per set (FCN sec. 5, SIFT Flow).

FCN's SIFT Flow net predicts the 33 semantic and the 3 geometric classes at once:
"we learn a two-headed version of FCN-16s with semantic and geometric prediction
layers and losses" (Long et al., CVPR 2015, sec. 5). Here the main label set is
the dataset's own (``MODEL.NUM_CLASSES`` classes, head ``MODEL.HEAD``) and each
entry of ``MODEL.MULTI_TASK.EXTRA_LABEL_SETS`` adds a head of the same kind with
its class count and a loss of the same terms, weighted by its ``LOSS_WEIGHT``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config.configurable import configurable
from segkit.modeling.backbone import build_backbone
from segkit.modeling.heads import build_head
from segkit.modeling.losses import build_loss
from segkit.modeling.meta_arch.semantic_seg import SemanticSegmentor, segmentor_args, upsample_logits
from segkit.registry import META_ARCH_REGISTRY

__all__ = ["MultiTaskSegmentor", "split_label_sets"]

MAIN = "sem_seg"


def _set_cfg(cfg, num_classes: int):
    """``cfg`` with ``NUM_CLASSES`` replaced (and no class weighting, which counts the main set's pixels)."""
    c = cfg.clone()
    c.defrost()
    c.MODEL.NUM_CLASSES = int(num_classes)
    c.MODEL.LOSS.CLASS_WEIGHT.METHOD = "none"
    return c


def split_label_sets(scores: torch.Tensor, label_sets: Sequence[Tuple[str, int]]) -> Dict[str, torch.Tensor]:
    """Split ``(N, sum K, H, W)`` concatenated per-set scores into ``{name: (N, K, H, W)}``."""
    total = sum(k for _, k in label_sets)
    if scores.shape[1] != total:
        raise ValueError(f"Scores have {scores.shape[1]} channels; the label sets {list(label_sets)} need {total}.")
    return dict(zip([n for n, _ in label_sets], torch.split(scores, [k for _, k in label_sets], dim=1)))


@META_ARCH_REGISTRY.register()
class MultiTaskSegmentor(SemanticSegmentor):
    """Shared backbone, one head and one loss per label set.

    ``forward(images, targets=None)``:

    * training with ``targets`` ``(N, 1 + T, H, W)`` (main set first, then the extra
      sets in order, as :class:`segkit.data.DatasetMapper` stacks them): loss terms
      of the main set as ``loss_<term>``, of set ``s`` as ``loss_<term>_<s>``;
    * otherwise, per ``inference_output``: ``"all"`` -> ``(N, K + sum K_s, H, W)``,
      each set's log-softmax concatenated (a softmax over all of them is each set's
      softmax divided by the number of sets, so per-set arg-max and averages over
      test-time views are exact; split with :func:`split_label_sets`), or one set's
      name -> that set's logits ``(N, K_s, H, W)`` (what the Predictor and export use).
    """

    @configurable
    def __init__(self, *, extra_heads: Dict[str, nn.Module], extra_classes: Dict[str, int], extra_losses: Optional[Dict[str, nn.Module]] = None,
                 extra_weights: Optional[Dict[str, float]] = None, main_weight: float = 1.0,
                 inference_output: str = "all", **kwargs) -> None:
        super().__init__(**kwargs)
        if MAIN in extra_heads:
            raise ValueError(f"An extra label set may not be called '{MAIN}' (the main set's name).")
        self.extra_heads = nn.ModuleDict(extra_heads)
        self.extra_losses = nn.ModuleDict(extra_losses or {})
        self.extra_weights = {n: float((extra_weights or {}).get(n, 1.0)) for n in extra_heads}
        self.main_weight = float(main_weight)
        if set(extra_classes) != set(extra_heads):
            raise ValueError(f"extra_classes {sorted(extra_classes)} and extra_heads {sorted(extra_heads)} differ.")
        self.label_sets: List[Tuple[str, int]] = [(MAIN, int(self.num_classes))] + [
            (n, int(extra_classes[n])) for n in extra_heads]
        names = [n for n, _ in self.label_sets]
        if inference_output != "all" and inference_output not in names:
            raise ValueError(f"MODEL.MULTI_TASK.INFERENCE_OUTPUT '{inference_output}' is neither 'all' nor a label "
                             f"set ({names}).")
        self.inference_output = inference_output

    @classmethod
    def from_config(cls, cfg) -> dict:
        sets = list(cfg.MODEL.MULTI_TASK.EXTRA_LABEL_SETS)
        if not sets:
            raise ValueError("MultiTaskSegmentor needs MODEL.MULTI_TASK.EXTRA_LABEL_SETS "
                             "(list of {NAME, NUM_CLASSES, LOSS_WEIGHT}).")
        for i, s in enumerate(sets):
            if not {"NAME", "NUM_CLASSES"} <= set(s) or set(s) - {"NAME", "NUM_CLASSES", "LOSS_WEIGHT"}:
                raise ValueError(f"MODEL.MULTI_TASK.EXTRA_LABEL_SETS[{i}] = {dict(s)}: needs NAME and NUM_CLASSES, "
                                 "optionally LOSS_WEIGHT, nothing else.")
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        heads, losses = {}, {}
        for s in sets:
            sub = _set_cfg(cfg, s["NUM_CLASSES"])
            heads[s["NAME"]] = build_head(sub, shapes)
            losses[s["NAME"]] = build_loss(sub)
        return {
            "backbone": backbone,
            "head": build_head(cfg, shapes),
            **segmentor_args(cfg),
            "extra_heads": heads,
            "extra_classes": {s["NAME"]: int(s["NUM_CLASSES"]) for s in sets},
            "extra_losses": losses,
            "extra_weights": {s["NAME"]: float(s.get("LOSS_WEIGHT", 1.0)) for s in sets},
            "main_weight": cfg.MODEL.MULTI_TASK.MAIN_LOSS_WEIGHT,
            "inference_output": cfg.MODEL.MULTI_TASK.INFERENCE_OUTPUT,
        }

    def set_logits(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Normalised ``(N, 3, H, W)`` -> ``{set: logits (N, K_s, h, w)}`` at the heads' stride (main first)."""
        features = self.backbone(x)
        out = {}
        for name, head in [(MAIN, self.head)] + list(self.extra_heads.items()):
            logits = head(features)
            out[name] = logits["sem_seg"] if isinstance(logits, dict) else logits
        return out

    def forward(self, images: torch.Tensor,
                targets: Optional[torch.Tensor] = None) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        x = self.normalize(images)
        logits = self.set_logits(x)
        if self.training and targets is not None:
            if targets.dim() != 4 or targets.shape[1] != len(self.label_sets):
                raise ValueError(
                    f"MultiTaskSegmentor expects targets (N, {len(self.label_sets)}, H, W) for the label sets "
                    f"{[n for n, _ in self.label_sets]}, got {tuple(targets.shape)}; set "
                    "MODEL.MULTI_TASK.EXTRA_LABEL_SETS so that the data mapper stacks them.")
            losses = self.compute_losses(logits[MAIN], targets[:, 0], weight=self.main_weight)
            for i, (name, _) in enumerate(self.label_sets[1:], start=1):
                t = targets[:, i].to(logits[name].device, non_blocking=True)
                terms = self.extra_losses[name](upsample_logits(logits[name], t.shape[-2:]), t)
                losses.update({f"{k}_{name}": v * self.extra_weights[name] for k, v in terms.items()})
            return losses
        size = x.shape[-2:]
        if self.inference_output != "all":
            return upsample_logits(logits[self.inference_output], size)
        return torch.cat([F.log_softmax(upsample_logits(v, size).float(), dim=1) for v in logits.values()], dim=1)
