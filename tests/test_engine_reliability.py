"""Nothing lost, nothing silently wrong: runs sharing an OUTPUT_DIR, NaN weights, evaluations
owed after a kill, corrupt checkpoints, stale temporaries and file modes, changed optimizers.

The kill tests run real subprocesses (``engine_run_script.py``) and stop them with SIGKILL.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from segkit.engine import NonFiniteWeightsError
from segkit.engine.checkpoint import CheckpointError, Checkpointer, read_checkpoint, state_checksum
from segkit.utils.fileio import atomic_write, clean_stale_temporaries
from test_engine import ToyModel, ToyTrainer, toy_cfg

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(TESTS_DIR, "engine_run_script.py")


def _start(out, resume, max_iter, period, keep, eval_period, pause_eval_at=-1, slow=False):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    args = [out, "1" if resume else "0", max_iter, period, keep, eval_period, pause_eval_at, int(slow)]
    return subprocess.Popen([sys.executable, SCRIPT] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, text=True)


def _kill_when(proc, path, timeout=120):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def _periodic(out):
    return sorted(f for f in os.listdir(out) if f.startswith("model_0"))


# ----------------------------------------------------------------------------- item 1
def test_new_run_in_used_output_dir_keeps_its_checkpoints_and_resumes(tmp_path):
    from engine_run_script import Trainer, make_cfg

    out = str(tmp_path / "o")
    Trainer(make_cfg(out, 60, 5, 2, 0)).train()  # the older run: keeps model_0000054 and model_0000049
    assert _periodic(out) == ["model_0000049.pth", "model_0000054.pth"]
    victim = _start(out, False, 200, 5, 2, 0, slow=True)  # a new run, same folder, no --resume
    _kill_when(victim, os.path.join(out, "model_0000039.pth"))
    # The older run was moved aside (not deleted, not mixed in); the new run kept its newest files.
    moved = os.listdir(os.path.join(out, "previous_runs"))
    assert len(moved) == 1
    assert _periodic(os.path.join(out, "previous_runs", moved[0])) == ["model_0000049.pth", "model_0000054.pth"]
    kept = _periodic(out)
    # (a kill between a save and its pruning may leave one more, never fewer)
    assert "model_0000039.pth" in kept and len(kept) in (2, 3) and max(kept) <= "model_0000044.pth", kept
    pointer = open(os.path.join(out, "last_checkpoint")).read()
    assert pointer in kept and pointer >= "model_0000034.pth"
    # --resume continues after the newest checkpoint of the new run (39, or 34 when killed between
    # its save and last_checkpoint's update); it does not restart at 0.
    resumed = Trainer(make_cfg(out, 200, 5, 2, 0)).resume_or_load(resume=True)
    assert resumed.start_iter == int(pointer[6:13]) + 1 >= 35


def test_prune_never_removes_the_file_just_written(tmp_path):
    ck = Checkpointer(ToyModel(), str(tmp_path))
    for it in (49, 54):  # files of another run with higher numbers
        torch.save({}, tmp_path / f"model_{it:07d}.pth")
    path = ck.save("model_0000004", iteration=4)
    assert ck.prune(2, newest=path) == []
    assert os.path.isfile(path)
    path = ck.save("model_0000009", iteration=9)
    ck.save("model_0000014", iteration=14)
    deleted = ck.prune(2, newest=str(tmp_path / "model_0000014.pth"))
    assert [os.path.basename(p) for p in deleted] == ["model_0000004.pth"]


def test_last_checkpoint_naming_a_missing_file_is_an_error(tmp_path):
    ToyTrainer(toy_cfg(tmp_path, MAX_ITER=6)).train()
    os.remove(tmp_path / "model_final.pth")
    with pytest.raises(CheckpointError, match="model_final.pth.*does not exist.*model_0000003.pth"):
        ToyTrainer(toy_cfg(tmp_path, MAX_ITER=6)).resume_or_load(resume=True)


def test_fresh_trainer_refuses_a_used_output_dir(tmp_path):
    ToyTrainer(toy_cfg(tmp_path, MAX_ITER=4)).train()
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(CheckpointError, match=r"already holds a run.*--resume.*move_previous_run_aside"):
        ToyTrainer(toy_cfg(tmp_path, MAX_ITER=8)).resume_or_load(resume=False).train()
    assert sorted(os.listdir(tmp_path)) == before


# ----------------------------------------------------------------------------- item 2
class _InfLRTrainer(ToyTrainer):
    """The learning rate becomes infinite at iteration 3, so that step makes the weights NaN."""

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: float("inf") if it == 3 else 1.0)


def test_nan_weights_are_never_checkpointed_and_resume_starts_from_the_last_finite(tmp_path):
    cfg = toy_cfg(tmp_path, MAX_ITER=6, CHECKPOINT_PERIOD=1)
    with pytest.raises(NonFiniteWeightsError, match="iteration 3"):
        _InfLRTrainer(cfg).train()
    assert not (tmp_path / "model_0000003.pth").exists() and not (tmp_path / "model_final.pth").exists()
    for name in os.listdir(tmp_path):
        if name.endswith(".pth"):
            state = read_checkpoint(str(tmp_path / name))["model"]
            assert all(torch.isfinite(v).all() for v in state.values()), name
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    assert ToyTrainer(toy_cfg(tmp_path, MAX_ITER=6)).resume_or_load(resume=True).start_iter == 3


def test_checkpointer_refuses_non_finite_weights(tmp_path):
    model = ToyModel()
    with torch.no_grad():
        model.cls.bias[0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=r"model_final\.pth \(iteration 7\).*cls\.bias"):
        Checkpointer(model, str(tmp_path)).save("model_final", iteration=7)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- item 3
def test_evaluations_interrupted_by_a_kill_are_done_on_resume(tmp_path):
    out = str(tmp_path / "o")
    # MAX_ITER 12, checkpoints every 3, evaluations after iterations 5 and 11 (the final one).
    victim = _start(out, False, 12, 3, 0, 6, pause_eval_at=5)
    _kill_when(victim, os.path.join(out, "eval_started_5"))
    second = _start(out, True, 12, 3, 0, 6, pause_eval_at=11)
    _kill_when(second, os.path.join(out, "eval_started_11"))
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    from engine_run_script import Trainer, make_cfg

    Trainer.pause_eval_at = -1
    results = Trainer(make_cfg(out, 12, 3, 0, 6)).resume_or_load(resume=True).train()
    assert results["sem_seg"]["mIoU"] > 0
    done = [int(x) for x in open(os.path.join(out, "evaluations.txt")).read().split()]
    assert done == [5, 11]  # each owed evaluation completed once, none skipped
    best = torch.load(os.path.join(out, "model_best.pth"), weights_only=True)
    assert best["iteration"] in (5, 11)


# ----------------------------------------------------------------------------- item 6
def test_bit_flipped_checkpoint_is_refused(tmp_path):
    model = torch.nn.Linear(128, 128)
    ck = Checkpointer(model, str(tmp_path))
    path = ck.save("model_final", iteration=0)
    raw = bytearray(open(path, "rb").read())
    mid = len(raw) // 2
    for i in range(mid - 2048, mid + 2048):
        raw[i] ^= 0x5A
    open(path, "wb").write(bytes(raw))
    # torch itself still reads the file, with a silently different tensor ...
    data = torch.load(path, weights_only=True)
    assert not torch.equal(data["model"]["weight"], model.weight.detach())
    # ... segkit does not.
    with pytest.raises(CheckpointError, match="model_final.pth is corrupt: its content's SHA-256"):
        ck.load(path)
    assert data["checksum"]["sha256"] != state_checksum(data)


def test_checksum_covers_every_entry():
    base = {"model": {"w": torch.ones(3)}, "iteration": 3, "rng": [{"torch": torch.zeros(2, dtype=torch.uint8)}]}
    ref = state_checksum(base)
    assert ref == state_checksum({**base, "checksum": {"sha256": "x"}})
    assert ref != state_checksum({**base, "iteration": 4})
    assert ref != state_checksum({**base, "model": {"w": torch.tensor([1.0, 1.0, 1.0 + 2**-20])}})
    assert ref != state_checksum({**base, "model": {"w": torch.ones(3, dtype=torch.float64)}})


# ----------------------------------------------------------------------------- item 14
KILL_IN_SAVE = """
import os, sys, time, torch
from segkit.engine.checkpoint import Checkpointer
def slow_save(obj, f):
    f.write(b"x" * 4096); f.flush()
    open(sys.argv[1] + "/started", "w").close()
    time.sleep(60)
torch.save = slow_save
Checkpointer(torch.nn.Linear(2, 2), sys.argv[1]).save("model_0000004", iteration=4)
"""


def test_temporaries_of_a_killed_save_are_removed_at_the_next_start(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", KILL_IN_SAVE, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _kill_when(proc, str(out / "started"))
    left = [f for f in os.listdir(out) if f.startswith(".model_0000004.pth")]
    assert len(left) == 1  # what a kill inside torch.save leaves behind
    (out / ".model_0000002.pth.abc123.tmp").write_bytes(b"old-style temporary")
    live = out / f".x.pth.{os.getpid()}-00000000.segkit-tmp"  # a write still running: kept
    live.write_bytes(b"")
    Checkpointer(torch.nn.Linear(2, 2), str(out))
    assert sorted(os.listdir(out)) == sorted(["started", live.name])


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        ck = Checkpointer(torch.nn.Linear(2, 2), str(tmp_path))
        ck.save("model_final", iteration=0)
        atomic_write(str(tmp_path / "a.json"), "{}")
    finally:
        os.umask(old)
    for name in ("model_final.pth", "last_checkpoint", "a.json"):
        assert (os.stat(tmp_path / name).st_mode & 0o777) == 0o640, name
    assert clean_stale_temporaries(str(tmp_path)) == []


# ----------------------------------------------------------------------------- item 11
class _AdamTrainer(ToyTrainer):
    @classmethod
    def build_optimizer(cls, cfg, model):
        return torch.optim.AdamW(model.parameters(), lr=1e-3)


def test_resume_with_another_optimizer_says_what_changed(tmp_path):
    cfg = toy_cfg(tmp_path, MAX_ITER=4)
    _AdamTrainer(cfg).train()
    with pytest.raises(CheckpointError, match=r"different optimizer.*SOLVER\.OPTIMIZER.*MODEL\.WEIGHTS"):
        ToyTrainer(toy_cfg(tmp_path, MAX_ITER=8)).resume_or_load(resume=True)
