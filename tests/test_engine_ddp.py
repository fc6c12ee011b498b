"""Distributed data parallel on CPU (gloo): 2 processes with half the batch each end
with the same weights as 1 process with the whole batch (gradients are averaged), the
confusion matrix is summed across processes, and torchrun works as a launcher too."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from segkit.engine import SimpleTrainer, launch
from test_engine import ToyLoader, ToyModel

STEPS = 3


def _train(rank, world):
    torch.manual_seed(0)
    model = ToyModel()
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    SimpleTrainer(model, ToyLoader(4, rank=rank, world=world), opt, accum_steps=1).train(0, STEPS)
    return getattr(model, "module", model)


def _confusion(rank):
    from segkit.evaluation import ConfusionMatrix

    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([rank, 2]), torch.tensor([0, 2]))  # rank 0: two hits, rank 1: one miss one hit
    return cm.reduce()


def ddp_worker(out_dir):
    """Runs in every spawned / torchrun process."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    model = _train(rank, world)
    matrix = _confusion(rank)
    if rank == 0:
        torch.save({"model": model.state_dict(), "confusion": matrix, "world": world,
                    "backend": dist.get_backend()}, os.path.join(out_dir, "ddp.pth"))


def _check(out_file):
    torch.set_num_threads(1)
    got = torch.load(out_file, weights_only=True)
    assert got["world"] == 2 and got["backend"] == "gloo"
    single = _train(0, 1).state_dict()
    for k, v in single.items():
        assert torch.allclose(got["model"][k], v, atol=1e-6), k
    assert not torch.allclose(single["conv.weight"], ToyModel().conv.weight)  # it did train
    assert got["confusion"].tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 2]]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_spawned_ddp_averages_gradients(tmp_path):
    launch(ddp_worker, num_gpus_per_machine=2, dist_url="auto", args=(str(tmp_path),))
    _check(tmp_path / "ddp.pth")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_ddp_averages_gradients(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from segkit.engine import launch
        from test_engine_ddp import ddp_worker
        launch(ddp_worker, num_gpus_per_machine=1, args=({str(tmp_path)!r},))  # world size comes from torchrun
    """))
    # PYTHONFAULTHANDLER: a worker killed by a signal (SIGABRT, SIGSEGV) prints the Python stack of
    # every thread into the log below, so a rare crash says where it happened.
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log = proc.communicate(timeout=180)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers, no orphans
        raise
    assert proc.returncode == 0, log
    _check(tmp_path / "ddp.pth")
