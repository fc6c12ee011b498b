"""Device selection without hard-coding a device type."""
from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``cfg.MODEL.DEVICE`` into a ``torch.device``.

    Args:
        name: ``"auto"`` picks the first available accelerator (CUDA, then MPS), else
            the CPU; any other string is passed to ``torch.device`` and checked.

    Raises:
        ValueError: the device string is malformed or that device is not available.
    """
    if name in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"MODEL.DEVICE: '{name}' is not a valid torch device ({exc}).") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"MODEL.DEVICE is '{name}' but CUDA is not available here; use 'auto' or 'cpu'.")
    return device
