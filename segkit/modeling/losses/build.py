"""``build_loss(cfg)``: the weighted sum of the loss terms listed in ``MODEL.LOSS.TERMS``."""
from __future__ import annotations

import inspect
import re
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from segkit.config.configurable import build_component, from_config_of
from segkit.registry import LOSS_REGISTRY

__all__ = ["CombinedLoss", "build_loss", "build_loss_term"]

_TERM_KEYS = {"NAME", "WEIGHT", "ARGS", "KEY"}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class CombinedLoss(nn.Module):
    """Several loss terms, each with a weight; returns ``{"loss_<key>": weight * term}``.

    Args:
        terms: key -> loss module (``forward(logits, target) -> scalar``).
        weights: key -> weight (default 1.0).
        aux_weight: the default ``weight`` for auxiliary outputs (see :meth:`forward`).
    """

    def __init__(self, terms: Mapping[str, nn.Module], weights: Optional[Mapping[str, float]] = None,
                 aux_weight: float = 1.0) -> None:
        super().__init__()
        if not terms:
            raise ValueError("A loss needs at least one term (MODEL.LOSS.TERMS is empty).")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {k: float((weights or {}).get(k, 1.0)) for k in self.terms}
        self.aux_weight = float(aux_weight)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, aux_weight={self.aux_weight}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, suffix: str = "",
                weight: float = 1.0) -> Dict[str, torch.Tensor]:
        """Weighted loss terms.

        Args:
            logits: (N, K, H, W) at the target's size.
            target: (N, H, W) int64, ignored pixels equal to the ignore value.
            suffix: appended to every key, for auxiliary outputs and multi-scale
                branches (``suffix="_aux"`` gives ``loss_cross_entropy_aux``).
            weight: extra factor for every term (e.g. ``self.aux_weight`` for an
                auxiliary output).

        Returns:
            ``{"loss_<key><suffix>": scalar}``, one entry per term.
        """
        return {
            f"loss_{k}{suffix}": term(logits, target) * (self.weights[k] * weight) for k, term in self.terms.items()
        }


def _accepted_args(obj: Any) -> Optional[set]:
    """Keyword arguments ``obj`` (a loss class or builder) accepts; None if it takes ``**kwargs``."""
    if inspect.isclass(obj):
        fns = [from_config_of(obj)] + [c.__dict__.get("__init__") for c in obj.__mro__ if c is not object]
        fns = [f for f in fns if f is not None and not getattr(f, "__module__", "").startswith("torch")]
    else:
        fns = [obj]
    names = set()
    for fn in fns:
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
            elif p.kind == p.VAR_KEYWORD and not inspect.isclass(obj):
                return None
    return names - {"self", "cls", "cfg"}


def _normalise_args(name: str, obj: Any, args: Mapping[str, Any]) -> Dict[str, Any]:
    """YAML ``ARGS`` (any case) -> keyword arguments the loss accepts."""
    out = {str(k).lower(): v for k, v in (args or {}).items()}
    accepted = _accepted_args(obj)
    unknown = sorted(set(out) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(
            f"Loss '{name}' does not take argument(s) {[k.upper() for k in unknown]} (MODEL.LOSS.TERMS ARGS). "
            f"Accepted: {sorted(k.upper() for k in accepted)}."
        )
    return out


def build_loss_term(cfg, name: str, args: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """One registered loss, built from the config with ``args`` overriding its arguments.

    The shared rule (:func:`segkit.config.build_component`): ``from_config(cfg,
    **args)`` when the loss has one, else ``Loss(**args)``.
    """
    obj = LOSS_REGISTRY.get(name)
    return build_component(
        LOSS_REGISTRY, name, cfg, _normalise_args(name, obj, args or {}),
        expect=nn.Module, promise="a torch.nn.Module (forward(logits, target) -> scalar)",
    )


def _parse_terms(terms: List[Any]) -> List[Dict[str, Any]]:
    parsed = []
    for i, term in enumerate(terms):
        if isinstance(term, str):
            term = {"NAME": term}
        if not isinstance(term, Mapping) or "NAME" not in term:
            raise ValueError(
                f"MODEL.LOSS.TERMS[{i}] must be a mapping with NAME (and WEIGHT, ARGS, KEY); got {term!r}."
            )
        extra = set(term) - _TERM_KEYS
        if extra:
            raise ValueError(
                f"MODEL.LOSS.TERMS[{i}] has unknown field(s) {sorted(extra)}; allowed: {sorted(_TERM_KEYS)}."
            )
        parsed.append(dict(term))
    return parsed


def build_loss(cfg) -> CombinedLoss:
    """Build the loss of ``MODEL.LOSS``.

    Returns:
        a :class:`CombinedLoss`; ``forward(logits (N, K, H, W), target (N, H, W))``
        returns ``{"loss_<key>": WEIGHT * term}``, where ``<key>`` is the term's ``KEY``
        or its ``NAME`` in snake case (``CrossEntropy`` -> ``loss_cross_entropy``).
    """
    terms, weights = {}, {}
    for i, term in enumerate(_parse_terms(list(cfg.MODEL.LOSS.TERMS))):
        key = str(term.get("KEY") or _snake(term["NAME"]))
        if key in terms:
            raise ValueError(f"MODEL.LOSS.TERMS[{i}]: two terms are named '{key}'; give one a distinct KEY.")
        terms[key] = build_loss_term(cfg, term["NAME"], term.get("ARGS"))
        weights[key] = float(term.get("WEIGHT", 1.0))
    return CombinedLoss(terms, weights, cfg.MODEL.LOSS.AUX_WEIGHT)
