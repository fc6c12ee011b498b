"""Atomic file writes: the one helper every segkit writer uses.

A file written with :func:`atomic_write` is either the old version or the complete
new one, never a truncated mix, even when the process is killed (SIGKILL, power
loss after the ``fsync``) in the middle: the bytes go to a temporary file in the
same folder, which is flushed, synced and then renamed over the target
(``os.replace`` is atomic on POSIX and Windows).

Temporary files are named ``.<basename>.<pid>-<random>.segkit-tmp`` so that
:func:`clean_stale_temporaries` can recognise the ones a killed writer left behind
(their pid is no longer alive) and remove them at the start of the next run.
Files are created with mode ``0o666`` minus the process umask, like ``open()``.
"""
from __future__ import annotations

import glob
import io
import os
import secrets
from typing import Callable, List, Union

__all__ = ["atomic_write", "clean_stale_temporaries", "load_torch_file", "UnreadableFileError", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".segkit-tmp"


def _temp_name(path: str) -> str:
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def atomic_write(path: str, data: Union[bytes, str, Callable[[io.BufferedWriter], object]],
                 encoding: str = "utf-8") -> str:
    """Write ``path`` atomically; returns ``path``.

    Args:
        path: the target; its folder is created when missing.
        data: the bytes, a string (encoded with ``encoding``), or a callable that
            receives the open binary file and writes into it (e.g.
            ``lambda f: torch.save(obj, f)``).
        encoding: used when ``data`` is a string.

    Raises:
        Whatever the write raises; the target is then untouched and the temporary
        file removed.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temp_name(path)
    # os.open with 0o666 lets the umask decide the permissions (mkstemp would force 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode(encoding) if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): leave its file alone
    return True


def clean_stale_temporaries(directory: str) -> List[str]:
    """Remove the temporaries of killed :func:`atomic_write` calls in ``directory``.

    Only files named by :func:`atomic_write` whose writing process no longer runs are
    removed, so a concurrent writer is never disturbed. Returns the removed paths.
    """
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(directory), "." + "*" + TEMP_SUFFIX)):
        stem = os.path.basename(tmp)[: -len(TEMP_SUFFIX)]
        pid_part = stem.rsplit(".", 1)[-1].split("-")[0]
        if not pid_part.isdigit() or _pid_alive(int(pid_part)):
            continue
        try:
            os.remove(tmp)
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


class UnreadableFileError(RuntimeError):
    """A weights or checkpoint file that cannot be used; the message names the file and the problem."""


def _unpickling_detail(exc: BaseException) -> str:
    # torch's message advises weights_only=False; keep only the line naming the refused object.
    for line in str(exc).splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line or "GLOBAL" in line:
            return line.replace("WeightsUnpickler error:", "").strip()
    return type(exc).__name__


def load_torch_file(path: str, what: str = "checkpoint"):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors a user can act on.

    Args:
        path: the file.
        what: how the message names it (``"checkpoint"``, ``"MODEL.BACKBONE.PRETRAINED file"``).

    Raises:
        FileNotFoundError: no such file.
        UnreadableFileError: empty, truncated, not a PyTorch file, or holding objects
            other than tensors and plain containers (which segkit never unpickles).
    """
    import pickle

    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise UnreadableFileError(f"{what} {path} is empty (0 bytes); it was probably cut off while being written.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        cause = (f"it holds Python objects other than tensors and plain containers ({_unpickling_detail(exc)}), "
                 "which segkit never unpickles because unpickling can run code (it reads with "
                 "torch.load(weights_only=True)). If you trust the file, load it "
                 "yourself and re-save only its state_dict with torch.save.")
        raise UnreadableFileError(f"Cannot read {what} {path}: {cause}") from exc
    except Exception as exc:  # torch raises EOFError, IndexError, RuntimeError, ... for damaged files
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] != b"PK" and head[:1] != b"\x80":
            cause = f"it is not a PyTorch file (it starts with bytes {head!r}, {size} bytes in all)"
        else:
            cause = (f"the file is damaged or truncated ({size} bytes; {type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})")
        raise UnreadableFileError(f"Cannot read {what} {path}: {cause}. Re-create or re-copy it.") from exc
