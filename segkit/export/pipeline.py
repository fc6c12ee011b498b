"""The exported inference pipeline: uint8 image -> labels, as one traceable module.

``SegmentationPipeline`` wraps a segkit model (whose forward normalises with
``MODEL.PIXEL_MEAN``/``PIXEL_STD`` and returns logits) into the whole inference a
product ships: uint8 image -> normalisation -> model -> upsampling to the input
size -> arg-max. Height and width stay dynamic, so one file segments any size.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

import segkit
from segkit.engine.metadata import pipeline_metadata

__all__ = ["SegmentationPipeline", "bundle_metadata", "LAYOUTS", "METADATA_SCHEMA"]

# Layouts of the exported ``image`` input.
LAYOUTS = ("NHWC", "NCHW")
# Bumped when the metadata keys or the input/output contract change.
METADATA_SCHEMA = "segkit-pipeline/1"


class SegmentationPipeline(nn.Module):
    """uint8 images -> label maps (and optionally probabilities) at the input size.

    Args:
        model: a segkit model in eval mode: ``images (N, 3, H, W) uint8 -> logits (N, K, h, w)``,
            normalising internally (the SemanticSegmentor contract).
        input_layout: ``"NHWC"`` (what image libraries give: ``np.stack`` of ``H x W x 3``
            arrays) or ``"NCHW"``.
        with_probs: also return softmax probabilities.
        resize_logits: upsample logits to the input size (bilinear, align_corners=False)
            before the arg-max; only needed for models whose logits are not already
            at the input size.

    Forward:
        image: ``(N, H, W, 3)`` or ``(N, 3, H, W)`` uint8 RGB (the model flips it to BGR
            on its own when its weights were trained on BGR, ``INPUT.FORMAT: BGR``).

    Returns:
        labels ``(N, H, W)`` int64, and probs ``(N, K, H, W)`` float32 when ``with_probs``.
    """

    def __init__(self, model: nn.Module, input_layout: str = "NHWC", with_probs: bool = False, resize_logits: bool = True):
        super().__init__()
        if input_layout not in LAYOUTS:
            raise ValueError(f"input_layout must be one of {LAYOUTS}, got '{input_layout}'.")
        self.model = model
        self.input_layout = input_layout
        self.with_probs = with_probs
        self.resize_logits = resize_logits

    def forward(self, image: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        x = image.permute(0, 3, 1, 2).contiguous() if self.input_layout == "NHWC" else image
        logits = self.model(x)
        if self.resize_logits:
            logits = F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        labels = logits.argmax(dim=1)
        if self.with_probs:
            return labels, F.softmax(logits.float(), dim=1)
        return labels


def bundle_metadata(cfg, input_layout: str, with_probs: bool, device: Optional[str] = None) -> Dict[str, str]:
    """String -> string metadata stored in an exported bundle.

    Values are JSON; keys: ``schema``, ``class_names``, ``palette``, ``input_format``
    (always ``"RGB"``), ``weights_format`` (``INPUT.FORMAT``), ``input_layout``, ``pixel_mean``, ``pixel_std``, ``num_classes``, ``ignore_value``,
    ``inputs``, ``outputs``, ``meta_architecture``, ``segkit_version``, ``config`` (YAML),
    and for TorchScript ``device`` (the device the graph was traced for).
    """
    meta: Dict[str, Any] = pipeline_metadata(cfg).to_dict()
    meta.update(
        schema=METADATA_SCHEMA,
        input_layout=input_layout,
        inputs=["image"],
        # What the "image" input stacks along its channels, 3 each (INPUT.MODALITIES).
        modalities=list(cfg.INPUT.get("MODALITIES", ["image"])),
        outputs=["labels", "probs"] if with_probs else ["labels"],
        meta_architecture=cfg.MODEL.META_ARCHITECTURE,
        segkit_version=segkit.__version__,
    )
    if device is not None:
        meta["device"] = device
    out = {k: json.dumps(v) for k, v in meta.items()}
    out["config"] = cfg.dump()
    return out
