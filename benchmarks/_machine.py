"""Benchmark helpers: is the machine quiet, and a competing process to make it busy.

A timing is only worth reporting when nothing else ran beside it, or when what ran
beside it is known (the competitor the benchmark starts itself). The CPU time of
other processes during a timed call is read from ``/proc``: the machine's busy time
(``/proc/stat``) minus this process's and the competitor's own (``/proc/<pid>/stat``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Optional

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

COMPETITOR = (
    "import torch, sys\n"
    "torch.set_num_threads(int(sys.argv[1]))\n"
    "a = torch.randn(768, 768)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a)\n"
)


def _busy_seconds() -> Optional[float]:
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


def _process_seconds(pid) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / _TICK  # utime + stime of all its threads
    except (OSError, ValueError, IndexError):
        return 0.0


class OtherCPU:
    """Measure other processes' CPU time (seconds) over a block; ``exclude`` pids are not "other"."""

    def __init__(self, exclude=()) -> None:
        self.exclude = list(exclude)

    def __enter__(self) -> "OtherCPU":
        self._busy = _busy_seconds()
        self._own = sum(_process_seconds(p) for p in ["self"] + self.exclude)
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        busy = _busy_seconds()
        own = sum(_process_seconds(p) for p in ["self"] + self.exclude)
        if busy is None or self._busy is None:
            self.other = float("nan")
        else:
            self.other = max(0.0, (busy - self._busy) - (own - self._own))

    @property
    def other_cores(self) -> float:
        """Average number of cores other processes used during the block."""
        return self.other / self.wall if self.wall > 0 else 0.0


def disturbed(meter: OtherCPU, threshold: float = 0.15) -> bool:
    """True when other processes used more than ``threshold`` cores on average (tick resolution allowed)."""
    slack = 2.0 / _TICK  # /proc counts in clock ticks
    return meter.other > threshold * meter.wall + slack


class Competitor:
    """A competing multi-threaded process (matrix products on ``threads`` threads), started and stopped here."""

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Competitor":
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        self.proc = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(self.threads)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # import torch, reach the loop
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def load_average():
    return list(os.getloadavg())
