"""Late fusion of several inputs: one backbone and head per input, score maps summed (FCN sec. 5, NYUDv2).

FCN's RGB-D result: "we follow Gupta et al. ... HHA depth embedding ... we train
RGB and HHA nets, then sum their predictions at the final layer and learn the
resulting two-stream net end-to-end" (Long et al., CVPR 2015, sec. 5 and Table 5,
"RGB-HHA"). The inputs arrive stacked along the channels in ``INPUT.MODALITIES``
order (:class:`segkit.data.DatasetMapper`), 3 channels each; branch ``i`` reads
channels ``3i .. 3i+2``. Every branch is built from the same ``MODEL.BACKBONE`` /
``MODEL.HEAD`` config, so the weights of single-input nets (``SemanticSegmentor``
checkpoints of the RGB and the HHA net) can start the fused net:
:func:`fuse_branch_state_dicts` renames their keys into one state dict.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from segkit.config.configurable import configurable
from segkit.layers import ShapeSpec
from segkit.modeling.backbone import build_backbone
from segkit.modeling.heads import build_head
from segkit.modeling.meta_arch.semantic_seg import segmentor_args, upsample_logits
from segkit.registry import META_ARCH_REGISTRY

__all__ = ["LateFusionSegmentor", "fuse_branch_state_dicts"]

CHANNELS_PER_INPUT = 3


class _Branch(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.backbone(x))
        return out["sem_seg"] if isinstance(out, dict) else out


@META_ARCH_REGISTRY.register()
class LateFusionSegmentor(nn.Module):
    """Sum of per-input networks' scores.

    ``forward(images, targets=None)``:

    * ``images``: uint8 or float ``(N, 3B, H, W)`` on the 0-255 scale, the ``B``
      inputs stacked along the channels; normalised here with the ``3B``-long
      ``pixel_mean`` / ``pixel_std``;
    * training mode with ``targets`` ``(N, H, W)``: ``loss_*`` terms of the fused scores;
    * otherwise: fused logits ``(N, K, H, W)``.

    Args:
        branches: input name -> ``(backbone, head)`` module pair (a :class:`_Branch`), in stacking order.
        loss: the loss of the fused scores (None: inference only).
        pixel_mean, pixel_std: ``3B`` values, one per stacked channel.
        num_classes, ignore_value: as :class:`SemanticSegmentor`.
        input_format: channel order the ``image`` branch's weights expect (``INPUT.FORMAT``);
            inputs arrive RGB and, for ``"BGR"``, the ``image`` block is flipped on the device.
            Other inputs (e.g. ``hha``) are never flipped.
    """

    @configurable
    def __init__(self, *, branches: Dict[str, nn.Module], loss: Optional[nn.Module], pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], num_classes: int, ignore_value: int = 255,
                 input_format: str = "RGB") -> None:
        super().__init__()
        if not branches:
            raise ValueError("LateFusionSegmentor needs at least one branch (INPUT.MODALITIES).")
        channels = CHANNELS_PER_INPUT * len(branches)
        if len(pixel_mean) != channels or len(pixel_std) != channels:
            raise ValueError(
                f"LateFusionSegmentor with inputs {list(branches)} reads {channels} channels, but MODEL.PIXEL_MEAN has "
                f"{len(pixel_mean)} and MODEL.PIXEL_STD {len(pixel_std)} values; give one per channel, in "
                "INPUT.MODALITIES order.")
        self.branches = nn.ModuleDict(branches)
        self.loss = loss
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.num_classes, self.ignore_value = int(num_classes), int(ignore_value)
        if str(input_format).upper() not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got '{input_format}'.")
        self.input_format = str(input_format).upper()  # as SemanticSegmentor records it
        names = list(branches)
        # First channel of the image block to flip for BGR-trained weights (None: nothing to flip).
        self._bgr_block = (CHANNELS_PER_INPUT * names.index("image")
                           if self.input_format == "BGR" and "image" in names else None)

    @classmethod
    def from_config(cls, cfg) -> dict:
        branches = {}
        for name in cfg.INPUT.MODALITIES:
            backbone = build_backbone(cfg, ShapeSpec(channels=CHANNELS_PER_INPUT))
            branches[name] = _Branch(backbone, build_head(cfg, backbone.output_shape()))
        return {"branches": branches, **segmentor_args(cfg)}

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def size_divisibility(self) -> int:
        return max(int(getattr(b.backbone, "size_divisibility", 0) or 0) for b in self.branches.values())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float ``(N, 3B, H, W)`` 0-255 -> normalised float on the model's device."""
        if images.shape[1] != self.pixel_mean.shape[1]:
            raise ValueError(f"LateFusionSegmentor expects {self.pixel_mean.shape[1]} stacked channels "
                             f"({list(self.branches)}), got images of shape {tuple(images.shape)}.")
        if images.device != self.device:
            images = images.to(self.device, non_blocking=True)
        images = images.float()
        if self._bgr_block is not None:  # inputs are RGB end to end; these weights expect BGR
            i = self._bgr_block
            images = torch.cat([images[:, :i], images[:, i : i + 3].flip(1), images[:, i + 3 :]], dim=1)
        return (images - self.pixel_mean) / self.pixel_std

    def fused_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(N, 3B, H, W)`` -> summed branch logits at the first branch's stride."""
        total = None
        for i, branch in enumerate(self.branches.values()):
            logits = branch(x[:, CHANNELS_PER_INPUT * i: CHANNELS_PER_INPUT * (i + 1)])
            total = logits if total is None else total + upsample_logits(logits, total.shape[-2:])
        return total

    def forward(self, images: torch.Tensor,
                targets: Optional[torch.Tensor] = None) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        x = self.normalize(images)
        logits = self.fused_logits(x)
        if self.training and targets is not None:
            if self.loss is None:
                raise RuntimeError("This model was built without a loss; pass loss=build_loss(cfg) to train it.")
            targets = targets.to(logits.device, non_blocking=True)
            return self.loss(upsample_logits(logits, targets.shape[-2:]), targets)
        return upsample_logits(logits, x.shape[-2:])


def fuse_branch_state_dicts(per_input: Mapping[str, Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """State dicts of single-input nets -> the state dict of a :class:`LateFusionSegmentor`.

    Args:
        per_input: input name (an ``INPUT.MODALITIES`` entry) -> the ``state_dict()`` of a
            ``SemanticSegmentor`` trained on that input (keys ``backbone.*``, ``head.*``).

    Returns:
        ``{"branches.<name>.backbone.*", "branches.<name>.head.*": tensor}``; save it as
        ``{"model": ...}`` and point ``MODEL.WEIGHTS`` at the file to start late fusion
        from the trained nets (FCN sec. 5 fuses an RGB and an HHA net this way).

    Raises:
        ValueError: a state dict has no ``backbone.`` / ``head.`` keys (not a single-input segmentor).
    """
    fused: Dict[str, torch.Tensor] = {}
    for name, state in per_input.items():
        keys = [k for k in state if k.startswith(("backbone.", "head."))]
        if not keys:
            raise ValueError(f"The state dict given for input '{name}' has no backbone.* / head.* keys; "
                             "pass the state_dict() (checkpoint['model']) of a SemanticSegmentor.")
        fused.update({f"branches.{name}.{k}": state[k] for k in keys})
    return fused
