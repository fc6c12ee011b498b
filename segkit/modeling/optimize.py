"""Inference-time rewrites that keep a model's outputs and make it faster.

:func:`optimize_for_inference` (a copy by default):

* **batch-norm folding**: ``bn(conv(x))`` with frozen statistics equals one
  convolution with ``W' = W * g`` and ``b' = (b - mean) * g + beta`` where
  ``g = gamma / sqrt(var + eps)`` per output channel; the BatchNorm becomes
  ``nn.Identity``. A conv/BN pair is found in a ``torch.fx`` trace, so it is
  folded only when the BN really consumes the conv's output and nothing else
  reads that output; modules whose ``forward`` cannot be traced (data-dependent
  branches, as in a meta-architecture's forward) are skipped and their children
  traced instead. Module names and classes are kept, so ``state_dict`` keys of
  the convolutions are unchanged (BN entries disappear).
* **channels-last** (NHWC) weights and inputs, which oneDNN on CPU and cuDNN's
  tensor-core kernels run faster than NCHW.
* **packed GEMM convolutions** (:func:`use_gemm_convs`): every plain ``nn.Conv2d``
  becomes a :class:`segkit.layers.gemm_conv.GemmConv2d` (same parameters and
  ``state_dict``), which on CPU runs 1x1 convolutions and k x k ones on small
  maps as ``im2col`` + one oneDNN GEMM on a weight packed once: oneDNN's direct
  convolution is 3-4x slower there (FCN's fc6/fc7 on VGG-16's 11x11 ``pool5``).
  Other devices, autograd, tracing and export keep ``nn.Conv2d``'s forward.

All are exact up to float rounding (tested to 1e-5).

:func:`freeze_traced` goes further for deployment: a traced, frozen TorchScript
module passed through ``torch.jit.optimize_for_inference``, which also fuses
conv+ReLU/add and, on CPU, keeps activations in oneDNN's blocked layout. It is a
``ScriptModule`` for one fixed call signature (no training path), and TorchScript
is deprecated upstream, so it is an opt-in step, not part of the default.
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, Iterator, Tuple

import torch
import torch.fx
from torch import nn

from segkit.layers.gemm_conv import GemmConv2d

__all__ = [
    "fold_batchnorm", "freeze_traced", "optimize_for_inference", "prepare_for_inference", "to_channels_last",
    "is_batchnorm", "use_gemm_convs",
]

logger = logging.getLogger(__name__)


def is_batchnorm(module: nn.Module) -> bool:
    """True for modules that compute ``(x - mean) / sqrt(var + eps) * weight + bias``
    per channel with stored statistics: ``nn.BatchNorm2d``, ``nn.SyncBatchNorm`` (in
    eval mode) and FrozenBatchNorm2d (torchvision's, detectron2's).
    """
    # Exact types only: a subclass may do more in its forward (timm's BatchNormAct2d
    # applies its activation there), which folding would silently drop.
    if type(module) in (nn.BatchNorm2d, nn.SyncBatchNorm):
        return module.track_running_stats and module.running_mean is not None
    return type(module).__name__ == "FrozenBatchNorm2d" and all(
        hasattr(module, a) for a in ("weight", "bias", "running_mean", "running_var")
    )


class _Tracer(torch.fx.Tracer):
    # BN-like modules outside torch.nn (FrozenBatchNorm2d) must stay call_module nodes.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_batchnorm(m) or super().is_leaf_module(m, qualname)


def _fold_into_conv(conv: nn.Conv2d, bn: nn.Module) -> None:
    """Rewrite ``conv`` in place so that it computes ``bn(conv(x))``."""
    eps = float(getattr(bn, "eps", 1e-5))
    var, mean = bn.running_var.detach().double(), bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + eps)
    weight = conv.weight.detach().double() * scale.reshape(-1, 1, 1, 1)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    bias = (bias - mean) * scale + beta
    dtype, device = conv.weight.dtype, conv.weight.device
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(bias.to(dtype=dtype, device=device), requires_grad=conv.weight.requires_grad)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _pairs(graph: torch.fx.Graph, root: nn.Module) -> Iterator[Tuple[str, str]]:
    """(conv name, bn name) for every conv whose only consumer is a BN."""
    calls: Dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in graph.nodes:
        if node.op != "call_module" or not is_batchnorm(root.get_submodule(node.target)):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv, bn = root.get_submodule(src.target), root.get_submodule(node.target)
        if (type(conv) is nn.Conv2d and conv.out_channels == bn.running_mean.numel()
                and calls[src.target] == 1 and calls[node.target] == 1):
            yield src.target, node.target


def _trace(module: nn.Module):
    try:
        return _Tracer().trace(module)
    except Exception as exc:  # noqa: BLE001 - any untraceable forward is skipped, children tried
        logger.debug("fold_batchnorm: cannot trace %s (%s); trying its children", type(module).__name__, exc)
        return None


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a Conv2d into it, in place.

    The model must be in eval mode (folding uses the running statistics).

    Returns:
        The number of folded conv/BN pairs.
    """
    if model.training:
        raise RuntimeError("fold_batchnorm uses running statistics: call model.eval() first.")
    if is_batchnorm(model) or not any(True for _ in model.children()):
        return 0
    graph = _trace(model)
    if graph is None:
        return sum(fold_batchnorm(child) for child in model.children())
    folded = 0
    for conv_name, bn_name in list(_pairs(graph, model)):
        _fold_into_conv(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _set_submodule(model, bn_name, nn.Identity())
        folded += 1
    return folded


def _inputs_to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last)
                 if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store 4-D weights NHWC and convert 4-D positional inputs on the way in (in place)."""
    model.to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(_inputs_to_channels_last)
    return model


def use_gemm_convs(model: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` of ``model`` a :class:`GemmConv2d`, in place.

    Names, parameters, ``state_dict`` keys and hooks are kept (the class changes
    to a subclass that adds no state); results change only by float rounding.

    Returns:
        The number of converted convolutions (0 when torch lacks oneDNN).
    """
    return sum(GemmConv2d.convert(m) for m in model.modules() if type(m) is nn.Conv2d)


def optimize_for_inference(model: nn.Module, fold_bn: bool = True, channels_last: bool = True,
                           inplace: bool = False, gemm_convs: bool = True) -> nn.Module:
    """Return an eval-mode model with batch norm folded, NHWC memory layout and packed GEMM convolutions.

    Args:
        model: any ``nn.Module`` (a segkit model, a torchvision model).
        fold_bn: fold BatchNorm/FrozenBatchNorm2d into preceding convolutions.
        channels_last: use the channels-last memory format.
        inplace: modify ``model`` itself instead of a deep copy.
        gemm_convs: convert convolutions to :class:`GemmConv2d` (:func:`use_gemm_convs`).

    Returns:
        The optimised model; ``model.folded_batchnorms`` says how many pairs were folded,
        ``model.gemm_convs`` how many convolutions were converted.
        Outputs are contiguous or channels-last tensors with the same values.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    folded = fold_batchnorm(model) if fold_bn else 0
    if channels_last:
        to_channels_last(model)
    converted = use_gemm_convs(model) if gemm_convs else 0
    model.folded_batchnorms, model.gemm_convs = folded, converted
    logger.info("optimize_for_inference: folded %d batch norms, channels_last=%s, %d GEMM convolutions",
                folded, channels_last, converted)
    return model


def prepare_for_inference(model: nn.Module, cfg) -> nn.Module:
    """The model a product runs: :func:`optimize_for_inference` unless ``TEST.OPTIMIZE_MODEL`` is off.

    The one call that the Predictor and the exporters make after loading weights
    (load first: folded batch norms leave the ``state_dict``). The model is
    rewritten in place (no second copy of the weights is kept) and returned in
    eval mode.

    Args:
        model: a built model with its weights loaded.
        cfg: the config; reads ``TEST.OPTIMIZE_MODEL`` (default True).

    Returns:
        The same module, optimised (BN folded, channels-last) or only put in eval mode.
    """
    if not bool(cfg.TEST.get("OPTIMIZE_MODEL", True)):
        return model.eval()
    return optimize_for_inference(model, inplace=True)


def freeze_traced(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace ``model(example)`` in eval mode, freeze it and apply TorchScript's inference passes.

    Args:
        model: a model whose eval forward takes one tensor (a segkit model's
            ``forward(images)``; torchvision models returning dicts work too).
        example: an input of the shape it will be called with, e.g. ``(N, 3, H, W)``.

    Returns:
        A ``torch.jit.ScriptModule`` computing the same outputs (to float rounding).
    """
    import warnings

    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit is deprecated upstream; the caller opted in.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example, strict=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
