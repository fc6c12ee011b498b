"""Checkpoints: atomic writes, checksums, keep-last-N, best-by-metric, full resume state.

A checkpoint is a dict saved with ``torch.save``::

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "iteration": int, "rng": [per-rank RNG states], "data": {...},
     "checksum": {"sha256": hex, "covers": "..."}}

and is always read back with ``torch.load(..., weights_only=True)``, so a file from
elsewhere cannot run code. RNG states are stored as plain lists and tensors for
that reason (NumPy arrays are converted).

Guarantees (docs/engine.md states them for users):

* files are written through :func:`segkit.utils.fileio.atomic_write`: a kill leaves
  the previous file or the complete new one, and the killed writer's temporary is
  removed when the next :class:`Checkpointer` for that folder starts;
* ``"checksum"`` is a SHA-256 over every other entry (names, dtypes, shapes and raw
  bytes of every tensor, the repr of every other value), verified on every load:
  a bit flip raises :class:`CheckpointError` instead of loading a different model;
* a model with a NaN or infinite weight is never written (:class:`NonFiniteWeightsError`);
* periodic files are pruned only below the one just written.

This module is the one owner of the resume format: :func:`resume_state` writes it
and :func:`read_resume_state` reads it.

:class:`Checkpointer` is a subclass of fvcore's ``Checkpointer`` (so fvcore's API,
``resume_or_load``, ``add_checkpointable``, ``has_checkpoint``,
``get_all_checkpoint_files``, and fvcore's ``PeriodicCheckpointer`` work with it) that
overrides what would break the guarantees above: fvcore's ``save`` and
``tag_last_checkpoint`` write in place (a run killed while writing leaves a truncated
checkpoint or an empty ``last_checkpoint``, and ``--resume`` then fails or restarts);
its ``_load_file`` calls ``torch.load`` with the default ``weights_only``, which
unpickles anything before torch 2.6 (segkit supports torch 2.1+), and checks no
checksum; its ``load`` fetches URLs through its ``PathManager``, skips requested
entries that a file lacks (a resume would silently start with a fresh optimizer) and
loads the weights before it knows the rest will load.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import random
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer
from torch import nn

from segkit.engine.comm import all_gather_object
from segkit.utils.fileio import UnreadableFileError, atomic_write, clean_stale_temporaries, load_torch_file

__all__ = [
    "Checkpointer",
    "load_model_weights",
    "capture_rng_state",
    "restore_rng_state",
    "atomic_torch_save",
    "unwrap_model",
    "CheckpointError",
    "NonFiniteWeightsError",
    "non_finite_tensors",
    "state_checksum",
    "read_checkpoint",
    "resume_state",
    "read_resume_state",
]

logger = logging.getLogger(__name__)
LAST_CHECKPOINT_FILE = "last_checkpoint"
PERIODIC_PATTERN = re.compile(r"^model_(\d{7})\.pth$")
CHECKSUM_KEY = "checksum"
# Temporaries of the mkstemp-based writer of segkit <= 0.3 (no pid in the name).
_LEGACY_TEMP_GLOB = ".model_*.pth.*.tmp"

# The same class as the file helper's error, so ``except CheckpointError`` catches both.
CheckpointError = UnreadableFileError


class NonFiniteWeightsError(FloatingPointError):
    """A NaN or infinite weight: training stops and nothing with it is written."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through :func:`segkit.utils.fileio.atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def non_finite_tensors(state: Mapping[str, Any]) -> List[str]:
    """Names of floating-point tensors in ``state`` holding a NaN or an infinity."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _hash_value(h, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, Mapping):
        h.update(f"D{len(value)}".encode())
        for k in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            h.update(f"K{type(k).__name__}:{k!s}".encode())
            _hash_value(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"L{type(value).__name__}{len(value)}".encode())
        for v in value:
            _hash_value(h, v)
    else:
        h.update(f"V{type(value).__name__}:{value!r}".encode())


def state_checksum(data: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over every entry of a checkpoint dict except ``"checksum"`` itself."""
    h = hashlib.sha256()
    _hash_value(h, {k: v for k, v in data.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def read_checkpoint(path: str, verify: bool = True) -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and verify its checksum.

    Files without a ``"checksum"`` entry (bare state dicts, checkpoints of older segkit
    versions) are accepted unverified.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, not a dict, or its content does not match its checksum.
    """
    data = load_torch_file(path, "checkpoint")
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(data).__name__}, expected a dict.")
    stored = data.get(CHECKSUM_KEY)
    if verify and isinstance(stored, Mapping) and "sha256" in stored:
        actual = state_checksum(data)
        if actual != stored["sha256"]:
            raise CheckpointError(
                f"Checkpoint {path} is corrupt: its content's SHA-256 is {actual[:16]}... but the file says "
                f"{str(stored['sha256'])[:16]}... (bits changed on disk or in transfer). Use another checkpoint "
                "(e.g. point OUTPUT_DIR/last_checkpoint at an older model_*.pth) or re-copy the file."
            )
    return data


_read_checkpoint = read_checkpoint  # name used by earlier releases


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _describe(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_model_weights(model: nn.Module, path: str, strict: bool = True,
                       data: Optional[Mapping[str, Any]] = None) -> Dict[str, List[str]]:
    """Load the ``"model"`` entry of a segkit checkpoint (or a bare state_dict) into ``model``.

    Args:
        model: the target (DDP wrappers are looked through).
        path: a ``.pth`` file, read with ``weights_only=True`` (checksum verified).
        strict: raise on missing/unexpected keys and shape mismatches; when False,
            load what matches and log the rest.
        data: the file's content when the caller has already read it (``path`` then
            only names it in messages).

    Returns:
        ``{"missing": [...], "unexpected": [...], "mismatched": [...]}``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable or corrupt file, or (strict) keys/shapes that do not
            match, listing them.
    """
    data = read_checkpoint(path) if data is None else data
    state = data.get("model", data)
    state = _strip_prefix(_strip_prefix(state, "module."), "_orig_mod.")
    state = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
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


def resume_state(iteration: int, accum_steps: int = 1) -> Dict[str, Any]:
    """What a checkpoint written after step ``iteration`` needs beyond model/optimizer/scheduler
    for an exact resume (the writing half of the resume format)."""

    return {
        "iteration": int(iteration),
        # Each process' RNG (dropout, random augmentation in the main process, ...).
        "rng": all_gather_object(capture_rng_state()),
        "data": {"batches_consumed": (int(iteration) + 1) * int(accum_steps)},
    }


def read_resume_state(extra: Mapping[str, Any], path: str, rank: int = 0,
                      world_size: int = 1) -> Tuple[int, Optional[Dict[str, Any]]]:
    """The reading half of the resume format: ``(start_iter, this process' RNG state or None)``.

    Raises:
        CheckpointError: the file has no ``iteration`` (a bare state dict or ``model_best``
            of an old release), naming the file.
    """
    if "iteration" not in extra:
        raise CheckpointError(
            f"Checkpoint {path} has no 'iteration' entry, so training cannot resume from it. "
            "To start a new run from its weights, set MODEL.WEIGHTS to it and drop --resume."
        )
    rng = list(extra.get("rng") or [])
    if not rng:
        return int(extra["iteration"]) + 1, None
    if len(rng) != world_size:
        logger.warning("Checkpoint has RNG states of %d processes, running %d: using rank 0's.", len(rng),
                       world_size)
    return int(extra["iteration"]) + 1, rng[rank] if len(rng) == world_size else rng[0]


class Checkpointer(_FvcoreCheckpointer):
    """fvcore's ``Checkpointer`` with atomic writes, checksums, ``weights_only`` loading and clear errors.

    Save and restore a model plus any objects with ``state_dict``/``load_state_dict``.
    Creating one for a folder (on the writing process) removes the temporary files
    that killed writes left there.

    Overridden from fvcore (see the module docstring for why): :meth:`save`,
    :meth:`tag_last_checkpoint`, :meth:`get_checkpoint_file`, :meth:`load` and
    :meth:`_load_file`. Inherited unchanged: ``add_checkpointable``,
    ``has_checkpoint``, ``get_all_checkpoint_files`` and ``resume_or_load`` (which go
    through the overrides). Added: :meth:`clean_temporaries`,
    :meth:`periodic_checkpoints` and :meth:`prune`.

    Args:
        model: the model (DDP / DataParallel wrappers are looked through).
        save_dir: folder of the checkpoints and of the ``last_checkpoint`` pointer.
        save_to_disk: only the main process writes in distributed runs.
        **checkpointables: e.g. ``optimizer=..., scheduler=..., scaler=...`` (None
            values are left out, e.g. the gradient scaler of a run without AMP).
    """

    def __init__(self, model: nn.Module, save_dir: str, save_to_disk: bool = True, **checkpointables: Any) -> None:
        super().__init__(unwrap_model(model), save_dir, save_to_disk=save_to_disk,
                         **{k: v for k, v in checkpointables.items() if v is not None})
        self.logger = logger  # fvcore's messages go to segkit's log
        if save_to_disk and os.path.isdir(save_dir):
            self.clean_temporaries()

    def clean_temporaries(self) -> List[str]:
        """Remove temporaries of killed writes in ``save_dir``; returns them (and logs the space freed)."""
        stale = [p for p in glob.glob(os.path.join(glob.escape(self.save_dir), _LEGACY_TEMP_GLOB))]
        freed = sum(os.path.getsize(p) for p in stale)
        for p in stale:
            os.remove(p)
        stale += clean_stale_temporaries(self.save_dir)
        if stale:
            logger.info("Removed %d temporary file(s) of interrupted writes in %s%s", len(stale), self.save_dir,
                        f" ({freed / 2**20:.1f} MiB)" if freed else "")
        return stale

    def save(self, name: str, tag_last: bool = True, **extra: Any) -> Optional[str]:
        """Write ``<save_dir>/<name>.pth`` atomically and (``tag_last``) point ``last_checkpoint`` at it.

        Unlike fvcore's ``save``: the file is written through
        :func:`segkit.utils.fileio.atomic_write` with a ``"checksum"`` entry, a model with
        non-finite weights is refused, and the path is returned.

        Returns:
            The path written, or None when this process does not write (``save_to_disk``
            False, or no ``save_dir``, as in fvcore).

        Raises:
            NonFiniteWeightsError: the model has NaN or infinite weights (nothing is written).
        """
        if not self.save_dir or not self.save_to_disk:
            return None
        data = {"model": self.model.state_dict()}
        bad = non_finite_tensors(data["model"])
        if bad:
            raise NonFiniteWeightsError(
                f"Refusing to write {name}.pth (iteration {extra.get('iteration', '?')}): {len(bad)} weight "
                f"tensor(s) are NaN or infinite ({_describe(bad, 4)}). Resume from the last checkpoint with a "
                "lower SOLVER.BASE_LR or gradient clipping."
            )
        data.update({k: obj.state_dict() for k, obj in self.checkpointables.items()})
        data.update(extra)
        data[CHECKSUM_KEY] = {"sha256": state_checksum(data), "covers": "every other entry of this dict"}
        path = os.path.join(self.save_dir, f"{name}.pth")
        atomic_torch_save(data, path)
        if tag_last:
            self.tag_last_checkpoint(os.path.basename(path))
        logger.info("Saved checkpoint %s", path)
        return path

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Point ``last_checkpoint`` at a file, atomically (fvcore truncates it first, so a kill
        in between would leave an empty pointer and lose the way back to every checkpoint)."""
        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT_FILE), last_filename_basename)

    def get_checkpoint_file(self) -> Optional[str]:  # fvcore returns "" when there is no pointer
        """The file named in ``last_checkpoint``, or None when there is no pointer.

        Raises:
            CheckpointError: the pointer names a file that does not exist (never a silent
                restart from iteration 0).
        """
        pointer = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        if not os.path.isfile(pointer):
            return None
        with open(pointer, "r", encoding="utf-8") as f:
            name = f.read().strip()
        path = os.path.join(self.save_dir, name)
        if not os.path.isfile(path):
            others = [os.path.basename(p) for p in self.periodic_checkpoints()]
            raise CheckpointError(
                f"{pointer} names {name!r}, which does not exist in {self.save_dir} (other checkpoints there: "
                f"{', '.join(others) or 'none'}). Write the name of the checkpoint to resume from into "
                f"{pointer}, or start a new run in another OUTPUT_DIR."
            )
        return path

    def _load_file(self, f: str) -> Dict[str, Any]:
        """fvcore's hook for reading a file: ``weights_only=True`` and the checksum verified.

        Raises:
            FileNotFoundError: no such local file (URLs are not fetched).
            CheckpointError: unreadable, corrupt, or holding objects other than tensors
                and plain containers.
        """
        return read_checkpoint(f)

    def load(self, path: str, checkpointables: Optional[Iterable[str]] = None) -> Dict[str, Any]:
        """Load model and the named checkpointables (default: all) from ``path`` (read once).

        Everything is checked before anything is loaded: the file (:meth:`_load_file`),
        that it holds the model and every requested checkpointable, that the optimizer
        is of the same kind and that the weights match the model (strictly).

        Args:
            path: a local file; empty: nothing is loaded (as in fvcore).
            checkpointables: names to restore besides the model.

        Returns:
            The entries of the file that were not consumed (``iteration``, ``rng``, ...).

        Raises:
            FileNotFoundError: no such file.
            CheckpointError: unreadable or corrupt file, missing entries, a different
                optimizer, weights that do not fit, or a state that does not load.
        """
        if not path:
            logger.info("No checkpoint given: the model keeps its initial weights.")
            return {}
        data = self._load_file(path)
        if "model" not in data:
            raise CheckpointError(f"Checkpoint {path} has no 'model' entry (keys: {_describe(data)}).")
        names = list(self.checkpointables) if checkpointables is None else list(checkpointables)
        for name in names:
            if name not in data:
                raise CheckpointError(f"Checkpoint {path} has no '{name}' entry to resume from.")
            if isinstance(self.checkpointables[name], torch.optim.Optimizer):
                _check_optimizer_matches(self.checkpointables[name], data[name], path)
        load_model_weights(self.model, path, data=data)
        for name in names:
            self._load_one(name, data[name], path)
        logger.info("Loaded checkpoint %s (%s)", path, ", ".join(["model"] + names))
        return {k: v for k, v in data.items() if k not in ("model", CHECKSUM_KEY) and k not in self.checkpointables}

    def _load_one(self, name: str, state: Any, path: str) -> None:
        obj = self.checkpointables[name]
        try:
            obj.load_state_dict(state)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(
                f"Cannot restore '{name}' ({type(obj).__name__}) from {path}: {type(exc).__name__}: {exc}. "
                "The run's config probably changed since the checkpoint was written; to start from its weights "
                "only, set MODEL.WEIGHTS to it and train without --resume (in a new OUTPUT_DIR)."
            ) from exc

    def periodic_checkpoints(self) -> List[str]:
        """``model_XXXXXXX.pth`` files in ``save_dir``, oldest iteration first."""
        files = glob.glob(os.path.join(glob.escape(self.save_dir), "model_*.pth"))
        return sorted(f for f in files if PERIODIC_PATTERN.match(os.path.basename(f)))

    def prune(self, max_to_keep: int, newest: Optional[str] = None) -> List[str]:
        """Keep the newest ``max_to_keep`` periodic checkpoints up to ``newest``; returns what was deleted.

        Only files *older* than ``newest`` (the one just written; default: the newest on
        disk) are candidates, so files of another run with higher iteration numbers
        never push this run's new files out.
        """
        if max_to_keep <= 0 or not self.save_to_disk:
            return []
        files = self.periodic_checkpoints()
        if newest is not None:
            files = [f for f in files if os.path.basename(f) <= os.path.basename(newest)]
        old = files[:-max_to_keep]
        for f in old:
            os.remove(f)
        return old


# Settings that tell optimizers apart (flags such as foreach/fused come and go with torch versions).
_OPTIMIZER_DEFINING_KEYS = {"momentum", "dampening", "nesterov", "betas", "eps", "amsgrad", "alpha", "centered",
                            "rho", "lr_decay", "initial_accumulator_value"}


def _optimizer_kind(state: Mapping[str, Any]) -> Optional[set]:
    groups = state.get("param_groups") if isinstance(state, Mapping) else None
    if not groups:
        return None
    return {k for k in groups[0] if k in _OPTIMIZER_DEFINING_KEYS}


def _check_optimizer_matches(optimizer: torch.optim.Optimizer, state: Any, path: str) -> None:
    saved = _optimizer_kind(state)
    own = {k for k in optimizer.param_groups[0] if k in _OPTIMIZER_DEFINING_KEYS}
    if saved is None or saved == own:
        return
    raise CheckpointError(
        f"Cannot resume the optimizer from {path}: it was written by a different optimizer (its settings are "
        f"{', '.join(sorted(saved))}; this run's {type(optimizer).__name__} has {', '.join(sorted(own))}). "
        "SOLVER.OPTIMIZER (or its settings) changed since that run. Either set it back, or start from the weights "
        "only: set MODEL.WEIGHTS to the checkpoint and train without --resume in a new OUTPUT_DIR."
    )
