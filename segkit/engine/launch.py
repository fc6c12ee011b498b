"""Start one process per device (or per CPU worker) and initialise ``torch.distributed``.

Two ways to get several processes, both ending in the same ``main_func(*args)``:

* the script spawns them itself: ``tools/train_net.py --num-gpus 2`` calls
  :func:`launch`, which starts 2 processes on this machine (``--num-machines`` /
  ``--machine-rank`` / ``--dist-url`` for several machines);
* ``torchrun --nproc-per-node 2 tools/train_net.py ...`` starts them: :func:`launch`
  sees ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, initialises the
  process group from it (``env://``) and runs ``main_func`` in this process.

The backend is NCCL when every process gets its own CUDA device, else gloo (CPU).
On a machine without GPUs ``--num-gpus N`` therefore means N CPU processes.
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["launch", "find_free_port", "pick_backend"]

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


def find_free_port() -> int:
    """A TCP port free on this machine right now (for single-machine ``dist_url="auto"``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pick_backend(num_local_processes: int) -> str:
    """``"nccl"`` when each local process can own a CUDA device, else ``"gloo"``."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= num_local_processes and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def _under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = "auto",
    args: Sequence[Any] = (),
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
) -> Any:
    """Run ``main_func(*args)`` in every process of a (possibly) distributed job.

    Args:
        main_func: the per-process entry point; must be picklable (module level)
            when processes are spawned.
        num_gpus_per_machine: processes per machine (GPUs, or CPU workers without GPUs).
        num_machines: machines taking part.
        machine_rank: this machine's index.
        dist_url: rendezvous URL (``tcp://host:port``); ``"auto"`` picks a free local
            port and is only valid for one machine.
        args: arguments for ``main_func``.
        timeout: collective-operation timeout.

    Returns:
        ``main_func``'s return value when it runs in this process (single process or
        torchrun), else None.
    """
    if _under_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        return _run_under_torchrun(main_func, args, timeout)
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if dist_url in (None, "", "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://<host of rank 0>:<port>.")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
        start_method="spawn",
    )
    return None


def _run_under_torchrun(main_func: Callable[..., Any], args: Sequence[Any], timeout: datetime.timedelta) -> Any:
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    backend = pick_backend(local_world)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    try:
        result = main_func(*args)
        _leave_together()
        return result
    finally:
        dist.destroy_process_group()


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence[Any],
    timeout: datetime.timedelta,
) -> None:
    backend = pick_backend(num_gpus_per_machine)
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    os.environ["LOCAL_RANK"] = str(local_rank)
    os.environ["LOCAL_WORLD_SIZE"] = str(num_gpus_per_machine)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    else:
        _share_cores(num_gpus_per_machine)
    try:
        dist.init_process_group(
            backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception as exc:
        raise RuntimeError(f"Process {global_rank} could not join the process group at {dist_url}: {exc}") from exc
    try:
        main_func(*args)
        _leave_together()
    finally:
        dist.destroy_process_group()


def _share_cores(num_local_processes: int) -> None:
    """CPU processes split this machine's cores instead of each taking all of them.

    PyTorch gives every process one intra-op thread per core; N processes on N cores
    would run N x N threads, which wait for one another at every parallel region (see
    segkit.utils.threads on oversubscribed cores). Each process gets ``cores // N``
    threads (at least 1), as torchrun does with ``OMP_NUM_THREADS=1``. An explicit
    ``OMP_NUM_THREADS`` in the environment wins.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return
    from segkit.utils.threads import available_cores

    torch.set_num_threads(max(1, available_cores() // max(1, num_local_processes)))


def _leave_together() -> None:
    """Wait until every process has finished ``main_func`` before tearing the group down.

    Without it a fast process destroys its process group (and exits) while a peer's last
    collective still talks to it; gloo then aborts the peer ("terminate called without an
    active exception"). Only on success: after an error the peers may never arrive.
    """
    if dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()
