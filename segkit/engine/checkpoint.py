"""Checkpoints: atomic writes, keep-last-N, best-by-metric, full resume state.

A checkpoint is a dict saved with ``torch.save``::

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "iteration": int, "rng": [per-rank RNG states], "data": {...}, ...}

and is always read back with ``torch.load(..., weights_only=True)``, so a file from
elsewhere cannot run code. RNG states are stored as plain lists and tensors for
that reason (NumPy arrays are converted).

fvcore's ``Checkpointer`` is not reused: it writes in place (a run killed while
writing leaves a truncated file that ``--resume`` then picks) and loads with
``torch.load``'s pickle default. Everything here is small enough to own.
"""
from __future__ import annotations

import glob
import logging
import os
import random
import re
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional

import numpy as np
import torch
from torch import nn

__all__ = [
    "Checkpointer",
    "load_model_weights",
    "capture_rng_state",
    "restore_rng_state",
    "atomic_torch_save",
    "unwrap_model",
    "CheckpointError",
]

logger = logging.getLogger(__name__)
LAST_CHECKPOINT_FILE = "last_checkpoint"
PERIODIC_PATTERN = re.compile(r"^model_(\d{7})\.pth$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _atomic_write(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # rename is atomic on POSIX and Windows: readers see the old file or the new one.
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder and ``os.replace``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def _read_checkpoint(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Could not read checkpoint {path} with torch.load(weights_only=True): {exc}. "
            "segkit only loads tensors and plain containers; re-save the weights as a state_dict."
        ) from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(data).__name__}, expected a dict.")
    return data


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _describe(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_model_weights(model: nn.Module, path: str, strict: bool = True) -> Dict[str, List[str]]:
    """Load the ``"model"`` entry of a segkit checkpoint (or a bare state_dict) into ``model``.

    Args:
        model: the target (DDP wrappers are looked through).
        path: a ``.pth`` file, read with ``weights_only=True``.
        strict: raise on missing/unexpected keys and shape mismatches; when False,
            load what matches and log the rest.

    Returns:
        ``{"missing": [...], "unexpected": [...], "mismatched": [...]}``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable file, or (strict) keys/shapes that do not match,
            listing them.
    """
    data = _read_checkpoint(path)
    state = data.get("model", data)
    state = _strip_prefix(_strip_prefix(state, "module."), "_orig_mod.")
    target = unwrap_model(model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    report = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    problems = [f"{name} keys: {_describe(v)}" for name, v in report.items() if v]
    if problems and strict:
        raise CheckpointError(
            f"Checkpoint {path} does not match {type(target).__name__}: " + "; ".join(problems)
            + ". Check MODEL.* (backbone, head, NUM_CLASSES) against the run that wrote it."
        )
    if problems:
        logger.warning("Loading %s non-strictly; skipped %s", path, "; ".join(problems))
    bad = {m.split(":")[0] for m in mismatched}
    target.load_state_dict({k: v for k, v in state.items() if k in own and k not in bad}, strict=False)
    return report


def capture_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch (and CUDA when available) RNG states, as weights_only-safe values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npd = state["numpy"]
    keys = npd["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npd["pos"], npd["has_gauss"], npd["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Save and restore a model plus any objects with ``state_dict``/``load_state_dict``.

    Args:
        model: the model (DDP wrappers are unwrapped when saving).
        save_dir: folder of the checkpoints and of the ``last_checkpoint`` pointer.
        save_to_disk: only the main process writes in distributed runs.
        **checkpointables: e.g. ``optimizer=..., scheduler=..., scaler=...``.
    """

    def __init__(self, model: nn.Module, save_dir: str, save_to_disk: bool = True, **checkpointables: Any) -> None:
        self.model = model
        self.save_dir = save_dir
        self.save_to_disk = save_to_disk
        self.checkpointables = {k: v for k, v in checkpointables.items() if v is not None}

    def save(self, name: str, tag_last: bool = True, **extra: Any) -> Optional[str]:
        """Write ``<save_dir>/<name>.pth`` atomically and (``tag_last``) point ``last_checkpoint`` at it."""
        if not self.save_to_disk:
            return None
        data = {"model": unwrap_model(self.model).state_dict()}
        data.update({k: obj.state_dict() for k, obj in self.checkpointables.items()})
        data.update(extra)
        path = os.path.join(self.save_dir, f"{name}.pth")
        atomic_torch_save(data, path)
        if tag_last:
            self.tag_last_checkpoint(os.path.basename(path))
        logger.info("Saved checkpoint %s", path)
        return path

    def tag_last_checkpoint(self, basename: str) -> None:
        _atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT_FILE), lambda f: f.write(basename.encode()))

    def get_checkpoint_file(self) -> Optional[str]:
        """The file named in ``last_checkpoint``, or None."""
        pointer = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        if not os.path.isfile(pointer):
            return None
        with open(pointer, "r", encoding="utf-8") as f:
            name = f.read().strip()
        path = os.path.join(self.save_dir, name)
        return path if os.path.isfile(path) else None

    def has_checkpoint(self) -> bool:
        return self.get_checkpoint_file() is not None

    def load(self, path: str, checkpointables: Optional[Iterable[str]] = None) -> Dict[str, Any]:
        """Load model and the named checkpointables (default: all) from ``path``.

        Returns:
            The entries of the file that were not consumed (``iteration``, ``rng``, ...).
        """
        data = _read_checkpoint(path)
        if "model" not in data:
            raise CheckpointError(f"Checkpoint {path} has no 'model' entry (keys: {_describe(data)}).")
        load_model_weights(self.model, path)
        names = list(self.checkpointables) if checkpointables is None else list(checkpointables)
        for name in names:
            if name not in data:
                raise CheckpointError(f"Checkpoint {path} has no '{name}' entry to resume from.")
            self.checkpointables[name].load_state_dict(data[name])
        logger.info("Loaded checkpoint %s (%s)", path, ", ".join(["model"] + names))
        return {k: v for k, v in data.items() if k != "model" and k not in self.checkpointables}

    def periodic_checkpoints(self) -> List[str]:
        """``model_XXXXXXX.pth`` files in ``save_dir``, oldest iteration first."""
        files = glob.glob(os.path.join(self.save_dir, "model_*.pth"))
        return sorted(f for f in files if PERIODIC_PATTERN.match(os.path.basename(f)))

    def prune(self, max_to_keep: int) -> List[str]:
        """Delete all but the newest ``max_to_keep`` periodic checkpoints; returns what was deleted."""
        if max_to_keep <= 0 or not self.save_to_disk:
            return []
        old = self.periodic_checkpoints()[:-max_to_keep]
        for f in old:
            os.remove(f)
        return old
