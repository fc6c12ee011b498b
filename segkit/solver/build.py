"""Optimizers with per-parameter learning rates and weight decay, and gradient clipping."""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from segkit.config.configurable import build_component, configurable
from segkit.registry import OPTIMIZER_REGISTRY

__all__ = ["NORM_TYPES", "build_optimizer", "clip_gradients", "get_param_groups", "param_group_rules_from_config"]

# Normalisation layers whose parameters get SOLVER.WEIGHT_DECAY_NORM. Modules whose class
# name ends in "Norm", "Norm2d", ... (e.g. a FrozenBatchNorm2d) are recognised by name too.
NORM_TYPES: Tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
_RULE_KEYS = {"PATTERN", "LR_MULT", "WEIGHT_DECAY_MULT"}


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES) or re.search(r"Norm(\d+d)?$", type(module).__name__) is not None


def param_group_rules_from_config(rules: Sequence[Any]) -> List[Tuple[str, float, float]]:
    """``SOLVER.PARAM_GROUPS`` entries -> ``(pattern, lr_mult, weight_decay_mult)`` tuples."""
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping) or "PATTERN" not in rule:
            raise ValueError(f"SOLVER.PARAM_GROUPS[{i}] must be a mapping with PATTERN (and LR_MULT, "
                             f"WEIGHT_DECAY_MULT); got {rule!r}.")
        extra = set(rule) - _RULE_KEYS
        if extra:
            raise ValueError(
                f"SOLVER.PARAM_GROUPS[{i}] has unknown field(s) {sorted(extra)}; allowed: {sorted(_RULE_KEYS)}."
            )
        out.append((str(rule["PATTERN"]), float(rule.get("LR_MULT", 1.0)), float(rule.get("WEIGHT_DECAY_MULT", 1.0))))
    return out


def _compile(rules: Sequence[Tuple[str, float, float]]):
    compiled = []
    for i, (pattern, lr_mult, wd_mult) in enumerate(rules):
        try:
            compiled.append((re.compile(pattern), lr_mult, wd_mult))
        except re.error as exc:
            raise ValueError(
                f"SOLVER.PARAM_GROUPS[{i}].PATTERN '{pattern}' is not a valid regular expression: {exc}"
            ) from exc
    return compiled


def _base_hyperparams(name: str, is_norm: bool, base_lr: float, weight_decay: float, weight_decay_norm: float,
                      weight_decay_bias: Optional[float], bias_lr_factor: float) -> Tuple[float, float]:
    if is_norm:
        lr, wd = base_lr, weight_decay_norm
    elif name.rsplit(".", 1)[-1] == "bias":
        lr, wd = base_lr, weight_decay if weight_decay_bias is None else weight_decay_bias
    else:
        lr, wd = base_lr, weight_decay
    if name.rsplit(".", 1)[-1] == "bias":
        lr *= bias_lr_factor
    return lr, wd


def get_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_bias: Optional[float] = None,
    bias_lr_factor: float = 1.0,
    rules: Sequence[Tuple[str, float, float]] = (),
) -> List[Dict[str, Any]]:
    """Parameter groups with per-parameter learning rate and weight decay.

    For each trainable parameter: weight decay is ``weight_decay_norm`` for
    parameters of normalisation layers, ``weight_decay_bias`` (None = ``weight_decay``)
    for other biases and ``weight_decay`` otherwise; the learning rate is ``base_lr``,
    times ``bias_lr_factor`` for biases (Caffe's FCN and DeepLab use 2). Then the
    first rule whose regular expression matches the full parameter name
    (``re.fullmatch``, e.g. ``"head\\..*"``) multiplies both (DeepLab v2: 10x for the
    classifier). Parameters with equal hyper-parameters share a group, in order of
    first appearance, so the grouping is the same on every build (resume-safe).

    Args:
        model: the module whose ``named_parameters()`` are grouped.
        rules: ``(pattern, lr_mult, weight_decay_mult)`` tuples.

    Returns:
        ``[{"params": [...], "lr": float, "weight_decay": float}, ...]``.

    Raises:
        ValueError: if a rule matches no trainable parameter (a typo would otherwise
            silently train with the wrong learning rate).
    """
    compiled = _compile(rules)
    norm_params = {id(p) for m in model.modules() if _is_norm(m) for p in m.parameters(recurse=False)}
    groups: Dict[Tuple[float, float], List[nn.Parameter]] = {}
    hits = [0] * len(compiled)
    names = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        names.append(name)
        lr, wd = _base_hyperparams(name, id(param) in norm_params, base_lr, weight_decay, weight_decay_norm,
                                   weight_decay_bias, bias_lr_factor)
        for i, (regex, lr_mult, wd_mult) in enumerate(compiled):
            if regex.fullmatch(name):
                lr, wd, hits[i] = lr * lr_mult, wd * wd_mult, hits[i] + 1
                break
        groups.setdefault((lr, wd), []).append(param)
    for (pattern, _, _), n in zip(rules, hits):
        if n == 0:
            sample = ", ".join(names[:3] + (["..."] + names[-2:] if len(names) > 3 else []))
            raise ValueError(f"SOLVER.PARAM_GROUPS pattern '{pattern}' matches no trainable parameter "
                             f"(or only ones an earlier pattern took). Parameter names look like: {sample}.")
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]


def _sgd_args(cfg, params: List[Dict[str, Any]]) -> Dict[str, Any]:
    s = cfg.SOLVER
    return {"params": params, "lr": s.BASE_LR, "momentum": s.MOMENTUM, "nesterov": s.NESTEROV,
            "weight_decay": s.WEIGHT_DECAY}


@OPTIMIZER_REGISTRY.register(name="SGD")
@configurable(from_config=_sgd_args)
def sgd(params: List[Dict[str, Any]], lr: float, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD with momentum (FCN sec. 4, DeepLab v2 sec. 4: momentum 0.9)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def _adamw_args(cfg, params: List[Dict[str, Any]]) -> Dict[str, Any]:
    s = cfg.SOLVER
    return {"params": params, "lr": s.BASE_LR, "betas": tuple(s.ADAM_BETAS), "eps": s.ADAM_EPS,
            "weight_decay": s.WEIGHT_DECAY}


@OPTIMIZER_REGISTRY.register(name="AdamW")
@configurable(from_config=_adamw_args)
def adamw(params: List[Dict[str, Any]], lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


build_sgd, build_adamw = sgd, adamw  # names used before the shared construction rule


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``SOLVER.OPTIMIZER`` over :func:`get_param_groups` of ``model``."""
    s = cfg.SOLVER
    if s.WEIGHT_DECAY_BIAS is not None and not isinstance(s.WEIGHT_DECAY_BIAS, (int, float)):
        raise ValueError(f"SOLVER.WEIGHT_DECAY_BIAS must be a number or null, got {s.WEIGHT_DECAY_BIAS!r}.")
    groups = get_param_groups(
        model, s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM, s.WEIGHT_DECAY_BIAS, s.BIAS_LR_FACTOR,
        param_group_rules_from_config(list(s.PARAM_GROUPS)),
    )
    if not groups:
        raise ValueError("The model has no trainable parameters (check MODEL.BACKBONE.FREEZE_AT).")
    return build_component(OPTIMIZER_REGISTRY, s.OPTIMIZER, cfg, params=groups,
                           expect=torch.optim.Optimizer, promise="a torch.optim.Optimizer")


def clip_gradients(cfg, parameters: Iterable[torch.Tensor]) -> Optional[torch.Tensor]:
    """Clip gradients in place as ``SOLVER.CLIP_GRADIENTS`` says.

    Call it after ``backward()`` (and after ``GradScaler.unscale_`` with AMP) and
    before ``optimizer.step()``.

    Args:
        cfg: the config.
        parameters: the parameters whose ``.grad`` is clipped.

    Returns:
        the total gradient norm before clipping for ``CLIP_TYPE "norm"``; None when
        clipping is off or by value.
    """
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return None
    params = [p for p in parameters if p.grad is not None]
    kind = c.CLIP_TYPE.lower()
    if c.CLIP_VALUE <= 0:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0, got {c.CLIP_VALUE}.")
    if kind == "value":
        torch.nn.utils.clip_grad_value_(params, c.CLIP_VALUE)
        return None
    if kind == "norm":
        return torch.nn.utils.clip_grad_norm_(params, c.CLIP_VALUE, norm_type=c.NORM_TYPE)
    raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value' or 'norm', got '{c.CLIP_TYPE}'.")
