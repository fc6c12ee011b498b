"""How many intra-op CPU threads a piece of inference gets: the work and the load decide.

PyTorch's global default is one thread per physical core, whatever the call. Two
cases make that slow, and products hit both:

* **short ops on small tensors**: a parallel region costs a fork and a barrier
  (tens of microseconds); an op that needs less than that per thread runs
  faster on one thread. The native dense CRF is hundreds of such ops.
* **a busy machine**: OpenMP threads wait for each other at every barrier. When
  another process holds a core, the thread that shares it is descheduled and
  the others spin at the barrier until it returns: on a 2-core machine beside a
  competing 2-thread process, a 2-thread model call burns 0.88 CPU s for 0.56 s
  of work and takes 3x its quiet time.

The policy (:func:`choose_threads`):

1. an explicit count wins: the ``num_threads`` argument (``TEST.NUM_THREADS`` in
   the Predictor), then :func:`thread_override` scopes, then the
   ``SEGKIT_NUM_THREADS`` environment variable; 0 or unset means automatic;
2. automatic, quiet machine: ``min(cores, work // grain)``, at least 1, where
   cores are the CPUs this process may run on (``sched_getaffinity``) and
   ``grain`` is the work one thread needs before a second one pays (set per kind
   of work by its caller, e.g. pixels x labels for the CRF);
3. automatic, busy machine (other processes' runnable tasks, from
   ``/proc/loadavg``'s running count less this process's running threads, least
   of three reads so that a passing blip does not count), by the kind of ops:

   * ``ops="short"`` (many short parallel regions, the CRF): the free cores,
     ``min(cores - busy, work // grain)``, at least 1;
   * ``ops="long"`` (a model: convolutions of milliseconds each):
     ``min(2 * cores, work // grain)``. More threads than cores make GNU OpenMP
     (PyTorch's Linux builds) throttle its spinning, so a thread that waits at a
     barrier yields its core instead of burning it, a descheduled thread holds a
     smaller share of each op, and the call gets a larger share of the run queue.
     Measured (``benchmarks/thread_policy.py``, FCN dilated ResNet-50, 321x321,
     2 cores, a competing 2-thread process): 1 thread 1.17 s, 2 threads 0.89 s,
     4 threads 0.57 s, 6 threads 0.53 s against 0.28 s quiet on 2 threads;
     quiet, 4 threads cost 8% more than 2, so the count doubles only under load.
     Measured with GNU OpenMP only; a fixed count (rule 1) is the way out where
     another runtime behaves otherwise.

:func:`intra_op_threads` applies a count around a block and restores the previous
one. ``torch.set_num_threads`` is process-wide for the calling thread's parallel
regions; callers that share a model between threads already serialise the device
work (the Predictor holds a lock), so the scope cannot leak between calls.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Optional

import torch

__all__ = ["ENV_VAR", "available_cores", "other_runnable", "choose_threads", "intra_op_threads", "thread_override"]

ENV_VAR = "SEGKIT_NUM_THREADS"
_OPS = ("short", "long")
_LOCAL = threading.local()


def available_cores() -> int:
    """CPUs this process may run on (affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _runnable_now() -> Optional[int]:
    """Runnable tasks on the machine now, this one included (``/proc/loadavg`` field 4), or None."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_running() -> int:
    """Threads of this process in state R (at least 1: the caller), e.g. OpenMP workers still spinning."""
    running = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                    running += f.read().rsplit(b")", 1)[1].split()[0] == b"R"
            except OSError:
                continue
    except OSError:
        return 1
    return max(1, running)


def other_runnable(samples: int = 3) -> int:
    """Tasks of other processes running or waiting for a CPU right now (0 when unknown).

    The least of a few reads: a competitor that holds a core shows in every read,
    a short-lived task seldom does. This process's own running threads (the caller,
    OpenMP workers spinning after the previous parallel region) are not counted.
    """
    counts = []
    for _ in range(samples):
        total = _runnable_now()
        if total is not None:
            counts.append(total - _own_running())
    return max(0, min(counts)) if counts else 0


def _explicit(num_threads: Optional[int]) -> Optional[int]:
    if num_threads is not None and int(num_threads) > 0:
        return int(num_threads)
    scoped = getattr(_LOCAL, "override", None)
    if scoped:
        return scoped
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be a whole number of threads (0 = automatic), got '{env}'") from None
        if value < 0:
            raise ValueError(f"{ENV_VAR} must be >= 0 (0 = automatic), got {value}")
        if value > 0:
            return value
    return None


def choose_threads(work: float, grain: float, num_threads: Optional[int] = None,
                   cores: Optional[int] = None, busy: Optional[int] = None, ops: str = "short") -> int:
    """Intra-op threads for ``work`` units, ``grain`` of which keep one thread busy enough.

    Args:
        work: size of the job in the caller's unit (pixels, pixels x labels).
        grain: work below which a second thread costs more than it saves.
        num_threads: an explicit count (> 0) that wins over everything; 0/None: policy.
        cores: CPUs available (default :func:`available_cores`).
        busy: other runnable tasks (default :func:`other_runnable`).
        ops: ``"short"`` (many short parallel regions: under load, the free cores)
            or ``"long"`` (a model's convolutions: under load, twice the cores);
            see the module docstring.

    Returns:
        A thread count >= 1.
    """
    if ops not in _OPS:
        raise ValueError(f"ops must be one of {_OPS}, got {ops!r}")
    explicit = _explicit(num_threads)
    if explicit is not None:
        return explicit
    cores = available_cores() if cores is None else int(cores)
    by_work = int(work // grain) if grain > 0 else cores
    if by_work <= 1 or cores <= 1:
        return 1  # no need to look at the load
    busy = other_runnable() if busy is None else int(busy)
    if busy > 0 and ops == "long":
        return min(2 * cores, by_work)
    return max(1, min(cores - busy, by_work, cores))


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(count)``; the previous count is restored."""
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if count != previous:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def thread_override(num_threads: Optional[int]) -> Iterator[None]:
    """Make every :func:`choose_threads` in this thread return ``num_threads`` (None/0: no change)."""
    previous = getattr(_LOCAL, "override", None)
    if num_threads:
        if int(num_threads) < 0:
            raise ValueError(f"number of threads must be >= 0 (0 = automatic), got {num_threads}")
        _LOCAL.override = int(num_threads)
    try:
        yield
    finally:
        _LOCAL.override = previous
