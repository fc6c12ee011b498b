"""Any timm model as a segkit backbone (``pip install segkit[timm]``).

``TimmBackbone`` builds ``timm.create_model(name, features_only=True)`` and names
its feature levels like segkit's ResNet: ``res<k>`` is the level whose stride would
be ``2**k`` without dilation (``res2`` = 1/4 ... ``res5`` = 1/32), so a head's
``IN_FEATURES: ["res3", "res4", "res5"]`` works with a ResNet or a ConvNeXt alike.
``output_stride`` 16 or 8 is passed to timm, which replaces the last strides by
dilation for the architectures that support it (ResNets, EfficientNet/MobileNet,
ConvNeXt, ...); ``output_shape()`` then reports the real strides. Map sizes follow
the architecture's own padding: ``ceil(H / s)`` for padded convolutions (ResNet,
EfficientNet, MobileNetV3), ``floor`` for ConvNeXt's 4x4 patchify stem and 2x2
downsampling on sizes that are not multiples of the stride; segkit's heads resize
to the input either way.

Weights are never downloaded. ``MODEL.BACKBONE.PRETRAINED`` is a local file (a
timm/ImageNet state dict of the full model, ``.pth``/``.bin``/``.safetensors``) or
``"timm"``: the file timm itself would use, looked up in the local Hugging Face
cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``) and in
torch's hub cache. A missing file raises, saying where to put it.
"""
from __future__ import annotations

import glob
import math
import os
from typing import Dict, List, Optional, Sequence

import torch

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.modeling.backbone.backbone import Backbone
from segkit.registry import BACKBONE_REGISTRY

__all__ = ["TimmBackbone", "find_timm_weights", "level_names"]

_INSTALL_HINT = "TimmBackbone needs timm: pip install 'segkit[timm]' (or pip install timm)."


def _timm():
    try:
        import timm
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return timm


def level_names(reductions: Sequence[int], output_stride: int) -> List[str]:
    """segkit names ``res<k>`` of timm feature levels from their (possibly capped) reductions.

    With ``output_stride`` < 32, timm reports the dilated levels at ``output_stride``;
    each further level at the cap is one more nominal halving (as in segkit's ResNet,
    whose ``res5`` keeps its name at stride 16).

    Example: reductions ``[2, 4, 8, 16, 16]`` at output stride 16 ->
    ``["res1", "res2", "res3", "res4", "res5"]``.
    """
    names, nominal = [], 0
    for r in reductions:
        nominal = nominal * 2 if (r >= output_stride and nominal >= output_stride) else int(r)
        names.append(f"res{int(round(math.log2(nominal)))}")
    if len(set(names)) != len(names):
        raise ValueError(f"timm feature levels with reductions {list(reductions)} do not map to distinct "
                         f"res<k> names ({names}); segkit cannot name this architecture's levels by stride.")
    return names


def _cache_dirs() -> List[str]:
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    return [hub, os.path.join(torch.hub.get_dir(), "checkpoints")]


def find_timm_weights(model_name: str) -> str:
    """The weight file timm would load for ``model_name``, from local caches only.

    Raises:
        FileNotFoundError: not cached; the message names the places searched and how to fill them.
    """
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        raise FileNotFoundError(f"timm has no pretrained weights for '{model_name}' (timm.list_pretrained()).")
    hub_dir, torch_dir = _cache_dirs()
    candidates = []
    if cfg.hf_hub_id:
        repo = "models--" + cfg.hf_hub_id.replace("/", "--")
        for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            candidates += sorted(glob.glob(os.path.join(hub_dir, repo, "snapshots", "*", fname)))
    if cfg.url:
        candidates.append(os.path.join(torch_dir, os.path.basename(cfg.url.split("?")[0])))
    for path in candidates:
        if os.path.isfile(path):
            return path
    where = [os.path.join(hub_dir, "models--" + cfg.hf_hub_id.replace("/", "--"))] if cfg.hf_hub_id else []
    where += [os.path.join(torch_dir, os.path.basename(cfg.url))] if cfg.url else []
    raise FileNotFoundError(
        f"No local weights for timm model '{model_name}' (segkit downloads nothing). Looked in: {where}. "
        f"Either set MODEL.BACKBONE.PRETRAINED to a weight file, or fill timm's cache once on a machine "
        f"with network: python -c \"import timm; timm.create_model('{model_name}', pretrained=True)\"."
    )


@BACKBONE_REGISTRY.register()
class TimmBackbone(Backbone):
    """A timm model with ``features_only=True``, returning ``{"res<k>": (N, C_k, H/s_k, W/s_k)}``.

    Args:
        model_name: any ``timm.list_models()`` name that supports ``features_only``.
        out_features: ``res<k>`` names to return (default: every level timm offers).
        output_stride: 32, 16 or 8 (timm's ``output_stride``; an error says when the
            architecture does not support it).
        in_channels: input channels.
        weights: "" (random initialisation), a local weight file, or ``"timm"``
            (timm's own weights from the local cache, see :func:`find_timm_weights`).
        drop_path_rate: stochastic depth (for the models that have it).
    """

    @configurable
    def __init__(self, *, model_name: str, out_features: Sequence[str] = (), output_stride: int = 32,
                 in_channels: int = 3, weights: str = "", drop_path_rate: float = 0.0) -> None:
        super().__init__()
        timm = _timm()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"MODEL.TIMM.OUTPUT_STRIDE must be 8, 16 or 32, got {output_stride}.")
        kwargs = {"features_only": True, "in_chans": in_channels}
        if output_stride != 32:
            kwargs["output_stride"] = output_stride
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        if weights:
            path = find_timm_weights(model_name) if weights == "timm" else os.path.expanduser(weights)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"MODEL.BACKBONE.PRETRAINED: no weight file {path} for timm model '{model_name}'.")
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": path})
        self.weights_file = kwargs.get("pretrained_cfg_overlay", {}).get("file", "")
        try:
            self.body = timm.create_model(model_name, **kwargs)
        except RuntimeError as exc:  # timm: unknown model
            raise ValueError(f"MODEL.TIMM.NAME '{model_name}': {exc}") from exc
        except TypeError as exc:  # the architecture has no output_stride / drop_path_rate argument
            extra = sorted(k for k in kwargs if k in ("output_stride", "drop_path_rate"))
            raise ValueError(f"timm model '{model_name}' does not accept {extra}: {exc}. "
                             "Use MODEL.TIMM.OUTPUT_STRIDE 32 (and DROP_PATH_RATE 0) for it.") from exc
        info = self.body.feature_info
        names = level_names(info.reduction(), output_stride)
        all_shapes = {n: ShapeSpec(channels=c, stride=r) for n, c, r in zip(names, info.channels(), info.reduction())}
        wanted = list(out_features) or names
        unknown = [f for f in wanted if f not in all_shapes]
        if unknown:
            raise ValueError(f"MODEL.TIMM.OUT_FEATURES {unknown}: timm model '{model_name}' offers {names} "
                             f"(strides {info.reduction()}).")
        self._names = names
        self._out_features = [n for n in names if n in wanted]
        self._shapes = all_shapes
        self.model_name = model_name

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None) -> dict:
        t = cfg.MODEL.TIMM
        return {
            "model_name": t.NAME,
            "out_features": list(t.OUT_FEATURES),
            "output_stride": t.OUTPUT_STRIDE,
            "in_channels": (input_shape.channels if input_shape and input_shape.channels else 3),
            "weights": cfg.MODEL.BACKBONE.PRETRAINED,
            "drop_path_rate": t.DROP_PATH_RATE,
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, C, H, W) normalised image. Returns ``{name: (N, C_name, H/s, W/s)}``."""
        feats = self.body(x)
        return {n: f for n, f in zip(self._names, feats) if n in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {k: self._shapes[k] for k in self._out_features}
