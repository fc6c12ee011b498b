"""RefineNet (Lin, Milan, Shen, Reid, CVPR 2017, arXiv 1611.06612).

A 4-cascade of RefineNet blocks over a backbone's named features, coarsest first
(sec. 3.1, Fig. 2(a)): RefineNet-4 reads res5 alone, RefineNet-3 reads res4 and
RefineNet-4's output, and so on down to res2 at stride 4. Each block (sec. 3.2,
Fig. 2(b)-(e)):

* adaptive convolution: a 3x3 conv to the block's width, then residual conv
  units (RCU: ReLU-conv3x3-ReLU-conv3x3 plus identity, no batch norm);
* multi-resolution fusion: one 3x3 conv per input path, all upsampled to the
  largest, summed (skipped when the block has a single input);
* chained residual pooling (CRP): a ReLU, then a chain of 5x5 stride-1 max-pool +
  3x3 conv blocks, each block's output added to the running sum;
* output convolutions: RCUs.

Counts follow the authors' released models (their MatConvNet code and its PyTorch
port by V. Nekrasov, whose RefineNet-101 is the 118M-parameter figure): 2 adapt
RCUs, 4 pooling blocks per CRP, 3 output RCUs per block (for RefineNet-1 these
are the paper's output RCU plus its "two additional RCUs before the final softmax",
sec. 3.2), dropout 0.5 on the res5 and res4 inputs and before the classifier, and a
3x3 classifier. The paper's figure variant (CRP with 2 blocks, 1 output RCU, 2
extra RCUs in RefineNet-1) is ``crp_stages=2, output_rcus=1, extra_rcus=2``.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.modeling.heads.base import SegmentationHead
from segkit.registry import HEAD_REGISTRY

__all__ = ["ChainedResidualPooling", "MultiResolutionFusion", "RefineNetBlock", "RefineNetHead",
           "ResidualConvUnit"]


def _conv3x3(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


class ResidualConvUnit(nn.Module):
    """RCU (sec. 3.2, Fig. 2(b)): ``x + conv(relu(conv(relu(x))))``, width preserved.

    As in the released code, the first conv has a bias and the second does not.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels, bias=True)
        self.conv2 = _conv3x3(channels, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, C, H, W)."""
        # Not in place: x is kept for the identity path.
        y = self.conv1(F.relu(x))
        return x + self.conv2(F.relu(y, inplace=True))


def _rcus(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualConvUnit(channels) for _ in range(n)])


class MultiResolutionFusion(nn.Module):
    """Fusion (sec. 3.2, Fig. 2(c)): a 3x3 conv per input, upsample to the largest, sum.

    Args:
        in_channels: channels of each input path.
        out_channels: channels of the fused map.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv3x3(c, out_channels) for c in in_channels)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """xs: one (N, C_i, H_i, W_i) per input -> (N, out, max H_i, max W_i)."""
        size = max((x.shape[-2:] for x in xs), key=lambda s: s[0] * s[1])
        out = None
        for conv, x in zip(self.convs, xs):
            y = conv(x)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return out


class ChainedResidualPooling(nn.Module):
    """CRP (sec. 3.2, Fig. 2(d)): ``relu(x)`` plus each of a chain of pool-conv blocks.

    Each block is a 5x5 stride-1 max-pool followed by a 3x3 conv; block i+1 pools
    block i's output, and every block's output is summed with the ReLU'd input
    (the "residual" sum that lets later blocks reuse earlier pooled context).

    Args:
        channels: width (unchanged).
        stages: number of pool-conv blocks.
    """

    def __init__(self, channels: int, stages: int = 4) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)
        self.convs = nn.ModuleList(_conv3x3(channels, channels) for _ in range(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, C, H, W)."""
        out = path = F.relu(x)
        for conv in self.convs:
            path = conv(self.pool(path))
            out = out + path
        return out


class RefineNetBlock(nn.Module):
    """One RefineNet block: adaptive convs per path, fusion, CRP, output RCUs.

    Args:
        in_channels: channels of each input, ``[backbone feature, previous block]``
            (just ``[backbone feature]`` for the coarsest block).
        channels: the block's width.
        adapt_rcus: RCUs after the backbone feature's 3x3 reduction conv.
        crp_stages: pool-conv blocks in the CRP.
        output_rcus: RCUs after the CRP.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, adapt_rcus: int = 2,
                 crp_stages: int = 4, output_rcus: int = 3) -> None:
        super().__init__()
        # Only the backbone path is adapted: the previous block's output already is
        # refined and just gets its fusion conv (the released code's wiring).
        self.reduce = _conv3x3(in_channels[0], channels)
        self.adapt = _rcus(channels, adapt_rcus)
        paths = [channels] + list(in_channels[1:])
        self.fusion = MultiResolutionFusion(paths, channels) if len(paths) > 1 else None
        self.crp = ChainedResidualPooling(channels, crp_stages)
        self.output = _rcus(channels, output_rcus)

    def forward(self, feature: torch.Tensor, previous: torch.Tensor = None) -> torch.Tensor:
        """feature: (N, C_in, H, W); previous: (N, C_prev, h, w) or None -> (N, channels, H, W)."""
        x = self.adapt(self.reduce(feature))
        if self.fusion is not None:
            x = self.fusion([x, previous])
        return self.output(self.crp(x))


@HEAD_REGISTRY.register()
class RefineNetHead(SegmentationHead):
    """Multi-path RefineNet decoder producing logits at the finest input's stride.

    Args:
        input_shape: the backbone's ``output_shape()``.
        in_features: names of the maps to refine, any order; they are cascaded from
            the largest stride to the smallest (RefineNet-4 = coarsest).
        num_classes: K.
        channels: width of each block, coarsest first (at least one per feature;
            extra trailing widths are ignored, so the default serves 1-4 cascades).
        adapt_rcus, crp_stages, output_rcus: see :class:`RefineNetBlock`.
        extra_rcus: RCUs added after the finest block (paper: 2 with ``output_rcus=1``).
        dropout: dropout on the two coarsest inputs and before the classifier.

    ``forward(features)`` returns logits ``(N, K, H/s, W/s)`` with ``s`` the finest
    feature's stride (4 for res2).
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: Sequence[str], num_classes: int,
                 channels: Sequence[int] = (512, 256, 256, 256), adapt_rcus: int = 2, crp_stages: int = 4,
                 output_rcus: int = 3, extra_rcus: int = 0, dropout: float = 0.5) -> None:
        order = self._cascade_order(input_shape, in_features)
        super().__init__(input_shape=input_shape, in_features=order, num_classes=num_classes)
        if len(channels) < len(self.in_features):
            raise ValueError(
                f"MODEL.REFINENET.CHANNELS has {len(channels)} widths but IN_FEATURES names "
                f"{len(self.in_features)} maps ({self.in_features}); give one width per map, coarsest first."
            )
        # Fewer maps = the paper's single and 2-cascaded RefineNet variants: the widths
        # are taken from the coarsest end (512 for the block on the coarsest map).
        channels = list(channels)[: len(self.in_features)]
        blocks, previous = [], []
        for name, width in zip(self.in_features, channels):
            blocks.append(RefineNetBlock([input_shape[name].channels] + previous, width,
                                         adapt_rcus, crp_stages, output_rcus))
            previous = [width]
        self.blocks = nn.ModuleList(blocks)
        self.extra = _rcus(channels[-1], extra_rcus)
        self.dropout = nn.Dropout(dropout)
        self.n_dropout_inputs = min(2, len(self.in_features)) if dropout > 0 else 0
        self.predictor = nn.Conv2d(channels[-1], num_classes, kernel_size=3, padding=1)
        self.stride = input_shape[self.in_features[-1]].stride

    @staticmethod
    def _cascade_order(input_shape: Dict[str, ShapeSpec], in_features: Sequence[str]) -> List[str]:
        missing = [f for f in in_features if f not in input_shape]
        if missing or not in_features:
            raise ValueError(
                f"RefineNetHead IN_FEATURES {list(in_features)}: {missing or 'none given'} not among the "
                f"backbone's outputs {sorted(input_shape)}."
            )
        # Stable sort: equal strides (a dilated backbone) keep the configured order.
        return sorted(in_features, key=lambda f: -(input_shape[f].stride or 1))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        r = cfg.MODEL.REFINENET
        return {
            **super().from_config(cfg, input_shape),
            "channels": list(r.CHANNELS),
            "adapt_rcus": r.ADAPT_RCUS,
            "crp_stages": r.CRP_STAGES,
            "output_rcus": r.OUTPUT_RCUS,
            "extra_rcus": r.EXTRA_RCUS,
            "dropout": r.DROPOUT,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """features: ``{name: (N, C, H/s, W/s)}`` -> logits (N, K, H/s_min, W/s_min)."""
        x = None
        for i, (name, block) in enumerate(zip(self.in_features, self.blocks)):
            feature = features[name]
            if i < self.n_dropout_inputs:
                feature = self.dropout(feature)
            x = block(feature, x)
        return self.predictor(self.dropout(self.extra(x)))
