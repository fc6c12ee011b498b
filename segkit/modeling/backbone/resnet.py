"""ResNet-18/34/50/101/152 with output stride 8/16/32 by dilation (DeepLab v2).

Blocks are torchvision's (``BasicBlock``, ``Bottleneck``) and parameter names match
torchvision's ``ResNet`` (``conv1``, ``bn1``, ``layer1``..``layer4``), so ImageNet
weights load without renaming. What torchvision lacks and segkit adds: a base
width (a narrow ResNet-18 for CPU), dilation in every block of a stage as DeepLab v2
(the first block's formerly strided 3x3 keeps the previous rate, the rest of the
stage gets the new one: exact filter rarefaction, FCN sec. 3.2, tested), dilated
BasicBlocks, per-block rates (HDC sawtooth, multi-grid) and FrozenBN / FREEZE_AT.
"""
from __future__ import annotations

import itertools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.layers.norm import FrozenBatchNorm2d, norm_factory
from segkit.modeling.backbone.backbone import Backbone
from segkit.modeling.backbone.weights import load_backbone_weights
from segkit.registry import BACKBONE_REGISTRY

__all__ = ["ResNet", "build_resnet_backbone", "stage_dilations", "freeze_module"]

# depth -> (block, blocks per stage res2..res5); He et al. 2016, Table 1.
RESNET_SPECS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
STAGES = ("res2", "res3", "res4", "res5")


def stage_dilations(
    output_stride: int,
    blocks: Sequence[int],
    res4_dilations: Sequence[int] = (),
    res5_dilations: Sequence[int] = (),
    multi_grid: Sequence[int] = (),
) -> Tuple[List[int], List[List[int]]]:
    """Strides of res2..res5 and the dilation rate of every block.

    A stage whose stride would take the output stride past ``output_stride`` keeps
    stride 1 and doubles the rate instead (DeepLab v2 sec. 3.1, atrous convolution
    replacing subsampling): output stride 8 gives res4 rate 2 and res5 rate 4.
    The convolution that used to subsample (torchvision puts the stride in the
    first block's 3x3) keeps the previous rate: only what follows a removed stride
    is rarefied, so the dilated network computes exactly the strided network's
    responses at every position (FCN sec. 3.2). DeepLab's Caffe ResNet strides in
    the 1x1 convolution instead, where the same rule dilates the whole 3x3.

    Args:
        output_stride: 8, 16 or 32.
        blocks: number of blocks per stage.
        res4_dilations, res5_dilations: absolute per-block rates, cycled over the
            stage (HDC's sawtooth, Wang et al. 2018 sec. 3.2); empty = uniform.
        multi_grid: per-block multipliers of res5's rate (DeepLab v3 sec. 3.2).

    Returns:
        ``(strides, rates, entry_rates)``: ``strides[i]`` of stage i, ``rates[i][j]``
        of its block j, and ``entry_rates[i]``, the rate of the first block's
        formerly strided 3x3 (= ``rates[i][0]`` where per-block rates are given).
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"MODEL.RESNETS.OUTPUT_STRIDE must be 8, 16 or 32, got {output_stride}.")
    if res5_dilations and multi_grid:
        raise ValueError("Set MODEL.RESNETS.RES5_DILATIONS or MODEL.RESNETS.MULTI_GRID, not both.")
    strides, rates, entry, current, rate = [], [], [], 4, 1
    for i, n in enumerate(blocks):
        stride = 1 if i == 0 else 2
        entry.append(rate)
        if current * stride > output_stride:
            rate, stride = rate * stride, 1
        current *= stride
        strides.append(stride)
        rates.append([rate] * n)
    if res4_dilations:
        rates[2] = [r for r, _ in zip(itertools.cycle(res4_dilations), range(blocks[2]))]
    if res5_dilations:
        rates[3] = [r for r, _ in zip(itertools.cycle(res5_dilations), range(blocks[3]))]
    if multi_grid:
        rates[3] = [rates[3][0] * m for m, _ in zip(itertools.cycle(multi_grid), range(blocks[3]))]
    for i, custom in ((2, res4_dilations), (3, res5_dilations or multi_grid)):
        if custom:
            entry[i] = rates[i][0]
    return strides, rates, entry


def _dilate(block: nn.Module, rate: int, entry_rate: Optional[int] = None) -> None:
    # Built undilated (torchvision's BasicBlock refuses dilation), then every 3x3
    # conv gets its rate and "same" padding, which keeps the block's output size.
    # The block's strided-position 3x3 (BasicBlock.conv1, Bottleneck.conv2) gets
    # entry_rate when given.
    strided = block.conv1 if isinstance(block, BasicBlock) else block.conv2
    for m in block.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            r = entry_rate if (m is strided and entry_rate is not None) else rate
            m.dilation, m.padding = (r, r), (r, r)


def _frozen_bn(bn: nn.Module) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    if bn.affine:
        frozen.weight.copy_(bn.weight.detach())
        frozen.bias.copy_(bn.bias.detach())
    if bn.running_mean is not None:
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen


def freeze_module(module: nn.Module) -> nn.Module:
    """Stop gradients and turn every BatchNorm into FrozenBatchNorm2d.

    Returns the frozen module (a new object when ``module`` itself is a BatchNorm).
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        return _frozen_bn(module)
    for p in module.parameters():
        p.requires_grad_(False)
    for name, child in module.named_children():
        setattr(module, name, freeze_module(child))
    return module


class ResNet(Backbone):
    """ResNet with named outputs ``"stem"``, ``"res2"``..``"res5"``.

    ``forward(x: (N, 3, H, W))`` returns the requested maps; ``res_k`` has stride
    ``min(2**k, output_stride)`` (``ceil``-sized for odd inputs, as convolution
    with padding gives) and ``width * 2**(k-2) * expansion`` channels.
    """

    @configurable
    def __init__(
        self,
        *,
        depth: int = 50,
        width: int = 64,
        in_channels: int = 3,
        output_stride: int = 32,
        norm: str = "BN",
        out_features: Sequence[str] = STAGES,
        res4_dilations: Sequence[int] = (),
        res5_dilations: Sequence[int] = (),
        multi_grid: Sequence[int] = (),
        freeze_at: int = 0,
        pretrained: str = "",
    ) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(RESNET_SPECS)}, got {depth}.")
        unknown = [f for f in out_features if f not in ("stem",) + STAGES]
        if unknown or not out_features:
            raise ValueError(f"ResNet OUT_FEATURES {list(out_features)}: choose among 'stem', {', '.join(STAGES)}.")
        block, blocks = RESNET_SPECS[depth]
        norm_layer = norm_factory(norm) or nn.BatchNorm2d
        strides, rates, entry = stage_dilations(output_stride, blocks, res4_dilations, res5_dilations, multi_grid)
        self._out_features = [f for f in ("stem",) + STAGES if f in out_features]
        self.depth, self.rates = depth, rates
        self._build_stem(in_channels, width, norm_layer)
        self._shapes: Dict[str, ShapeSpec] = {"stem": ShapeSpec(channels=width, stride=4)}
        # Stages after the last requested one are not built (no dead parameters).
        n_stages = max((STAGES.index(f) + 1 for f in self._out_features if f in STAGES), default=0)
        inplanes, stride = width, 4
        for i in range(n_stages):
            planes = width * 2**i
            layer = self._make_stage(block, inplanes, planes, strides[i], rates[i], entry[i], norm_layer)
            self.add_module(f"layer{i + 1}", layer)
            inplanes, stride = planes * block.expansion, stride * strides[i]
            self._shapes[STAGES[i]] = ShapeSpec(channels=inplanes, stride=stride)
        self._init_weights()
        if pretrained:  # before freezing: frozen norms keep the loaded statistics
            self.load_report = load_backbone_weights(self, pretrained, skip_prefixes=("fc.",))
        self.freeze(freeze_at)

    def _build_stem(self, in_channels: int, width: int, norm_layer: Callable[[int], nn.Module]) -> None:
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    @staticmethod
    def _make_stage(
        block, inplanes: int, planes: int, stride: int, rates: List[int], entry_rate: int, norm_layer
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                norm_layer(planes * block.expansion),
            )
        layers = []
        for j, rate in enumerate(rates):
            b = block(inplanes, planes, stride if j == 0 else 1, downsample if j == 0 else None, norm_layer=norm_layer)
            _dilate(b, rate, entry_rate if j == 0 else None)
            layers.append(b)
            inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's initialisation (He normal for convs, unit BN).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def freeze(self, freeze_at: int = 0) -> "ResNet":
        """Freeze the stem (``freeze_at >= 1``) and the first ``freeze_at - 1`` stages."""
        if freeze_at >= 1:
            self.conv1, self.bn1 = freeze_module(self.conv1), freeze_module(self.bn1)
        for i in range(1, min(freeze_at, 5)):
            if hasattr(self, f"layer{i}"):
                setattr(self, f"layer{i}", freeze_module(getattr(self, f"layer{i}")))
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, C, H, W) normalised image. Returns ``{name: (N, C_name, H/s, W/s)}``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {"stem": x} if "stem" in self._out_features else {}
        for i, name in enumerate(STAGES):
            layer = getattr(self, f"layer{i + 1}", None)
            if layer is None:
                break
            x = layer(x)
            if name in self._out_features:
                out[name] = x
        return out

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {k: self._shapes[k] for k in self._out_features}

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None) -> dict:
        r = cfg.MODEL.RESNETS
        return {
            "depth": r.DEPTH,
            "width": r.WIDTH,
            "in_channels": (input_shape.channels if input_shape and input_shape.channels else 3),
            "output_stride": r.OUTPUT_STRIDE,
            "norm": r.NORM,
            "out_features": list(r.OUT_FEATURES),
            "res4_dilations": list(r.RES4_DILATIONS),
            "res5_dilations": list(r.RES5_DILATIONS),
            "multi_grid": list(r.MULTI_GRID),
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "pretrained": cfg.MODEL.BACKBONE.PRETRAINED,
        }


BACKBONE_REGISTRY.register(ResNet)


def build_resnet_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> ResNet:
    """``ResNet(cfg, input_shape)``; kept for code written before the class was registered."""
    return ResNet(cfg, input_shape)
