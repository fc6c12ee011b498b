"""VGG with its classifier convolutionalised (FCN sec. 3.1) and DeepLab's dilated variant.

Layer layout and ImageNet weights are torchvision's (``torchvision.models.vgg16``);
modules are named like the Caffe models the papers used (``conv1_1`` .. ``conv5_3``,
``pool1`` .. ``pool5``, ``fc6``, ``fc7``) and torchvision state dicts are converted on
load (:func:`convert_torchvision_vgg`).

Two layouts:

* output stride 32 (FCN): 2x2/2 max pools; ``fc6`` is a 7x7 convolution with 4096
  channels and ``fc7`` 1x1 with 4096 ("fc6 as 7x7x512x4096", FCN sec. 3.1).
* output stride 8 (DeepLab v1/v2): 3x3 pools with padding 1, pool4 and pool5 with
  stride 1, conv5 with dilation 2 (DeepLab v1 sec. 3.1). ``fc="largefov"`` gives
  ``fc6`` 3x3 with dilation 12 and 1024 channels (DeepLab-LargeFOV, v1 sec. 4.1,
  ImageNet fc6/fc7 subsampled by decimation); ``fc="conv"`` keeps the 7x7 fc6,
  rarefied with dilation 4 (FCN sec. 3.2).

Convolutions are "same"-padded and pools round up, so ``pool_k`` is ``ceil(H / 2**k)``
and maps of consecutive strides line up from the top-left pixel; FCN's
``pad 100`` + ``crop`` reaches the same alignment.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.modeling.backbone.backbone import Backbone
from segkit.modeling.backbone.weights import StateDict, load_backbone_weights
from segkit.registry import BACKBONE_REGISTRY

__all__ = ["VGG", "build_vgg_backbone", "convert_torchvision_vgg", "VGG_SPECS"]

# depth -> convolutions per block (Simonyan & Zisserman 2015, Table 1, A/B/D/E).
VGG_SPECS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
FC_KINDS = ("conv", "largefov", "none")


class VGG(Backbone):
    """VGG with named outputs ``conv1``..``conv5`` (last ReLU of a block),
    ``pool1``..``pool5`` and ``fc7``.

    ``forward(x: (N, 3, H, W))`` returns the maps in ``out_features``.
    """

    @configurable
    def __init__(
        self,
        *,
        depth: int = 16,
        width: int = 64,
        in_channels: int = 3,
        output_stride: int = 32,
        fc: str = "conv",
        fc_channels: int = 0,
        dropout: float = 0.5,
        out_features: Sequence[str] = (),
        freeze_at: int = 0,
        pretrained: str = "",
    ) -> None:
        super().__init__()
        if depth not in VGG_SPECS:
            raise ValueError(f"MODEL.VGG.DEPTH must be one of {sorted(VGG_SPECS)}, got {depth}.")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"MODEL.VGG.OUTPUT_STRIDE must be 8, 16 or 32, got {output_stride}.")
        if fc not in FC_KINDS:
            raise ValueError(f"MODEL.VGG.FC must be one of {FC_KINDS}, got '{fc}'.")
        self.depth, self.fc_kind, self.output_stride = depth, fc, output_stride
        self._shapes: Dict[str, ShapeSpec] = {}
        rate = self._build_convs(in_channels, width, VGG_SPECS[depth], output_stride)
        if fc != "none":
            self._build_fc(8 * width, fc, fc_channels, dropout, rate)
        self._out_features = self._check_out_features(out_features)
        self._init_weights()
        if pretrained:  # torchvision format
            skip = ("classifier.6.",) if self.fc_kind != "none" else ("classifier.",)
            self.load_report = load_backbone_weights(
                self, pretrained, lambda sd: convert_torchvision_vgg(dict(sd), self), skip
            )
        # ``freeze_at`` = k > 0 freezes blocks conv1..conv_k.
        for b in range(1, min(freeze_at, 5) + 1):
            for name, p in self.named_parameters():
                if name.startswith(f"conv{b}_"):
                    p.requires_grad_(False)

    def _build_convs(self, in_channels: int, width: int, spec: Sequence[int], output_stride: int) -> int:
        stride, rate, deeplab = 1, 1, output_stride < 32
        for b, n in enumerate(spec, start=1):
            channels = width * min(2 ** (b - 1), 8)
            for i in range(1, n + 1):
                conv = nn.Conv2d(in_channels, channels, 3, padding=rate, dilation=rate)
                self.add_module(f"conv{b}_{i}", conv)
                in_channels = channels
            self._shapes[f"conv{b}"] = ShapeSpec(channels=channels, stride=stride)
            pool_stride = 2 if stride < output_stride else 1
            if deeplab:  # DeepLab: 3x3 pools, padding 1; stride 1 once at the output stride
                pool = nn.MaxPool2d(3, stride=pool_stride, padding=1)
            else:  # FCN/Caffe: 2x2 pools rounding up
                pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
            self.add_module(f"pool{b}", pool)
            if pool_stride == 1:
                rate *= 2  # the removed subsampling becomes dilation of what follows
            stride *= pool_stride
            self._shapes[f"pool{b}"] = ShapeSpec(channels=channels, stride=stride)
        return rate

    def _build_fc(self, in_channels: int, fc: str, fc_channels: int, dropout: float, rate: int) -> None:
        if fc == "conv":
            channels, kernel, dilation = fc_channels or 4096, 7, rate  # FCN sec. 3.1, rarefied (sec. 3.2)
        else:
            channels, kernel, dilation = fc_channels or 1024, 3, 12  # DeepLab-LargeFOV
        self.fc6 = nn.Conv2d(in_channels, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.fc7 = nn.Conv2d(channels, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop6, self.drop7 = nn.Dropout(dropout), nn.Dropout(dropout)
        self._shapes["fc7"] = ShapeSpec(channels=channels, stride=self._shapes["pool5"].stride)

    def _check_out_features(self, out_features: Sequence[str]) -> List[str]:
        if not out_features:
            return list(self._shapes)
        unknown = [f for f in out_features if f not in self._shapes]
        if unknown:
            raise ValueError(f"VGG OUT_FEATURES {unknown} do not exist here; choose among {list(self._shapes)}.")
        return [f for f in self._shapes if f in out_features]

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, C, H, W) normalised image. Returns ``{name: (N, C_name, ceil(H/s), ceil(W/s))}``."""
        out: Dict[str, torch.Tensor] = {}
        for b, n in enumerate(VGG_SPECS[self.depth], start=1):
            for i in range(1, n + 1):
                # In place: saves a pass over the map (the convolution's backward does not need its output).
                x = torch.relu_(getattr(self, f"conv{b}_{i}")(x))
            out[f"conv{b}"] = x
            x = out[f"pool{b}"] = getattr(self, f"pool{b}")(x)
        if self.fc_kind != "none":
            x = self.drop6(self.relu(self.fc6(x)))
            out["fc7"] = self.drop7(self.relu(self.fc7(x)))
        return {k: out[k] for k in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {k: self._shapes[k] for k in self._out_features}

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None) -> dict:
        v = cfg.MODEL.VGG
        return {
            "depth": v.DEPTH,
            "width": v.WIDTH,
            "in_channels": (input_shape.channels if input_shape and input_shape.channels else 3),
            "output_stride": v.OUTPUT_STRIDE,
            "fc": v.FC,
            "fc_channels": v.FC_CHANNELS,
            "dropout": v.DROPOUT,
            "out_features": list(v.OUT_FEATURES),
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "pretrained": cfg.MODEL.BACKBONE.PRETRAINED,
        }


def _fc_weight(w: torch.Tensor, b: torch.Tensor, target: torch.Tensor, kernel: int) -> Optional[tuple]:
    """A torchvision Linear (out, in*k*k) as the conv ``target``: reshaped, or decimated (DeepLab)."""
    out_c, in_c = w.shape[0], w.shape[1] // (kernel * kernel)
    conv = w.reshape(out_c, in_c, kernel, kernel)
    if conv.shape == target.shape:
        return conv, b
    # DeepLab v1 sec. 4.1: 4096 -> 1024 channels and 7x7 -> 3x3 (resp. 1x1) taps by decimation.
    c_step = out_c // target.shape[0] if target.shape[0] else 0
    s_step = (kernel - 1) // (target.shape[-1] - 1) if target.shape[-1] > 1 else 1
    if c_step < 1 or out_c % target.shape[0]:
        return None
    in_step = in_c // target.shape[1] if in_c % target.shape[1] == 0 else 0
    if in_step < 1:
        return None
    dec = conv[::c_step, ::in_step, ::s_step, ::s_step]
    return (dec, b[::c_step]) if dec.shape == target.shape else None


def convert_torchvision_vgg(sd: StateDict, model: VGG) -> StateDict:
    """Rename torchvision's ``features.{i}`` / ``classifier.{0,3}`` keys to segkit's and
    reshape fc6/fc7 into convolutions (decimated for LargeFOV). Keys that do not fit
    are kept under their torchvision names, so the loader reports them."""
    out: StateDict = {}
    idx = 0
    for b, n in enumerate(VGG_SPECS[model.depth], start=1):
        for i in range(1, n + 1):
            for p in ("weight", "bias"):
                if f"features.{idx}.{p}" in sd:
                    out[f"conv{b}_{i}.{p}"] = sd.pop(f"features.{idx}.{p}")
            idx += 2  # conv, ReLU
        idx += 1  # max pool
    target_sd = model.state_dict()
    for src, dst, kernel in (("classifier.0", "fc6", 7), ("classifier.3", "fc7", 1)):
        if f"{src}.weight" not in sd or f"{dst}.weight" not in target_sd:
            continue
        fitted = _fc_weight(sd[f"{src}.weight"], sd[f"{src}.bias"], target_sd[f"{dst}.weight"], kernel)
        if fitted is not None:
            out[f"{dst}.weight"], out[f"{dst}.bias"] = fitted
            del sd[f"{src}.weight"], sd[f"{src}.bias"]
    out.update(sd)  # leftovers: reported as unexpected
    return out


BACKBONE_REGISTRY.register(VGG)


def build_vgg_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> VGG:
    """``VGG(cfg, input_shape)``; kept for code written before the class was registered."""
    return VGG(cfg, input_shape)
