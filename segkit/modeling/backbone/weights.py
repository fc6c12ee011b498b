"""Loading ImageNet weights in torchvision's format into segkit backbones.

Nothing here downloads: a weight file is either a local path or a file already in
torch's hub cache (``$TORCH_HOME/hub/checkpoints``, where ``torchvision`` keeps what
``weights=...`` downloaded). Key renaming and reshaping (VGG's fully connected
layers into convolutions) is done by a ``convert`` function each backbone supplies.
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from segkit.utils.fileio import load_torch_file

__all__ = ["LoadReport", "resolve_weights_file", "read_state_dict", "load_backbone_weights"]

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a module.

    Attributes:
        path: the file that was read.
        loaded: keys copied into the module.
        missing: module keys the file does not provide (left at their initialisation).
        unexpected: file keys the module has no place for (ignored).
        skipped: file keys dropped on purpose (e.g. the ImageNet classifier).
    """

    path: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors from {self.path}"]
        if self.missing:
            parts.append(f"missing (kept initialisation): {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected (ignored): {', '.join(self.unexpected)}")
        if self.skipped:
            parts.append(f"skipped on purpose: {', '.join(self.skipped)}")
        return "; ".join(parts)


def _hub_checkpoint_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def resolve_weights_file(spec: str) -> str:
    """Find the weight file that ``spec`` names, without downloading anything.

    Args:
        spec: a path to a ``.pth`` file (``~`` expanded), or a file name or prefix
            looked up in torch's hub cache, e.g. ``"resnet101"`` finds
            ``resnet101-cd907fc2.pth`` there.

    Raises:
        FileNotFoundError: nothing matches; the message lists where it looked.
        ValueError: a hub-cache prefix matches several files.
    """
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
        return path
    hub = _hub_checkpoint_dir()
    exact = os.path.join(hub, spec)
    if os.path.isfile(exact):
        return exact
    matches = sorted(glob.glob(os.path.join(hub, glob.escape(spec) + "-*.pth")))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"Pretrained weights '{spec}' match several files in {hub}: {matches}. Give the full path.")
    raise FileNotFoundError(
        f"Pretrained weights '{spec}' not found: not a file, and no '{spec}' or '{spec}-*.pth' in torch's hub "
        f"cache {hub}. segkit never downloads weights; put a torchvision ImageNet state dict there "
        "(e.g. the file torchvision.models.resnet101(weights='IMAGENET1K_V1') downloads) or set "
        "MODEL.BACKBONE.PRETRAINED to its path, or to '' for random initialisation."
    )


def read_state_dict(path: str) -> StateDict:
    """Read a state dict with ``weights_only=True``; unwraps ``{"state_dict": ...}`` / ``{"model": ...}``.

    Raises:
        FileNotFoundError, segkit.utils.fileio.UnreadableFileError: naming the file and
            why it cannot be used (empty, truncated, not a PyTorch file, pickled code).
    """

    obj = load_torch_file(path, "MODEL.BACKBONE.PRETRAINED file")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return obj


def _check_shapes(module_sd: StateDict, sd: StateDict, path: str) -> None:
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(module_sd[k].shape)}"
        for k, v in sd.items()
        if k in module_sd and module_sd[k].shape != v.shape
    ]
    if bad:
        raise ValueError(
            f"Pretrained weights {path} do not fit the model (different depth or width?): " + "; ".join(bad)
        )


def load_backbone_weights(
    module: nn.Module,
    spec: str,
    convert: Optional[Callable[[StateDict], StateDict]] = None,
    skip_prefixes: Sequence[str] = (),
) -> LoadReport:
    """Load a torchvision-format state dict into ``module`` and report what matched.

    Args:
        module: the backbone.
        spec: path or hub-cache name (see :func:`resolve_weights_file`).
        convert: maps the file's keys/tensors to the module's (renames, reshapes).
        skip_prefixes: file keys dropped on purpose (the ImageNet classifier).

    Returns:
        A :class:`LoadReport`; missing and unexpected keys are also logged as warnings.

    Raises:
        FileNotFoundError: the file cannot be found. ValueError: shapes differ, or
        no key matches (weights of another architecture).
    """
    path = resolve_weights_file(spec)
    sd = read_state_dict(path)
    report = LoadReport(path=path)
    report.skipped = sorted(k for k in sd if any(k.startswith(p) for p in skip_prefixes))
    sd = {k: v for k, v in sd.items() if k not in set(report.skipped)}
    if convert is not None:
        sd = convert(sd)
    # torchvision's BatchNorm counters are bookkeeping, not weights.
    module_sd = module.state_dict()
    sd = {k: v for k, v in sd.items() if not (k.endswith("num_batches_tracked") and k not in module_sd)}
    _check_shapes(module_sd, sd, path)
    result = module.load_state_dict(sd, strict=False)
    report.missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    report.unexpected = list(result.unexpected_keys)
    report.loaded = sorted(k for k in sd if k in module_sd)
    if not report.loaded:
        raise ValueError(
            f"Pretrained weights {path} share no parameter names with {type(module).__name__} "
            f"(file keys start {sorted(sd)[:3]}): weights of another architecture?"
        )
    if report.missing or report.unexpected:
        logger.warning("Backbone weights: %s", report.summary())
    else:
        logger.info("Backbone weights: %s", report.summary())
    return report
