"""segkit's Checkpointer is fvcore's, and keeps segkit's additions: atomic writes that lose
nothing when a save fails midway, weights_only loading, checksums and the RNG state."""
import os
import random

import numpy as np
import pytest
import torch
from fvcore.common.checkpoint import Checkpointer as FvcoreCheckpointer
from fvcore.common.checkpoint import PeriodicCheckpointer as FvcorePeriodicCheckpointer

from segkit.engine.checkpoint import (
    Checkpointer,
    CheckpointError,
    read_checkpoint,
    read_resume_state,
    restore_rng_state,
    resume_state,
)
from segkit.engine.hooks import PeriodicCheckpointer
from segkit.engine.train_loop import HookBase, SimpleTrainer
from test_engine import ToyLoader, ToyModel


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpointer_is_fvcores_and_fvcores_resume_api_works(tmp_path):
    model = ToyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ck = Checkpointer(model, str(tmp_path), optimizer=opt)
    hook = PeriodicCheckpointer(ck, period=2, max_iter=5)
    assert isinstance(ck, FvcoreCheckpointer)
    assert isinstance(hook, FvcorePeriodicCheckpointer) and isinstance(hook, HookBase)
    trainer = SimpleTrainer(model, ToyLoader(2), opt)
    trainer.register_hooks([hook])
    trainer.train(0, 5)
    # fvcore's own methods, inherited, go through segkit's overrides.
    assert ck.has_checkpoint()
    assert sorted(os.path.basename(p) for p in ck.get_all_checkpoint_files()) == [
        "model_0000001.pth", "model_0000003.pth", "model_final.pth"]
    fresh = ToyModel()
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    assert not _same(_weights(fresh), _weights(model))
    extra = Checkpointer(fresh, str(tmp_path), optimizer=fresh_opt).resume_or_load("", resume=True)
    assert extra["iteration"] == 4 and "checksum" not in extra and "optimizer" not in extra
    assert _same(_weights(fresh), _weights(model))
    assert torch.equal(fresh_opt.state_dict()["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])
    # No checkpoint and no path: fvcore's "initialise from scratch", nothing loaded.
    other = ToyModel()
    before = _weights(other)
    assert Checkpointer(other, str(tmp_path / "empty")).resume_or_load("", resume=True) == {}
    assert _same(_weights(other), before)


def test_periodic_step_keeps_segkits_rules(tmp_path):
    """fvcore's step(iteration, **extra) API; the last iteration writes only model_final, and
    keep-last-N prunes by what is on disk (so files written before a resume are pruned too)."""
    ck = Checkpointer(ToyModel(), str(tmp_path))
    first = PeriodicCheckpointer(ck, period=5, max_iter=10, max_to_keep=2)
    for it in range(7):
        first.step(it, note="first")
    # A resumed run: a new hook, whose fvcore list of recent files would start empty.
    second = PeriodicCheckpointer(ck, period=5, max_iter=20, max_to_keep=2)
    for it in range(7, 20):
        second.step(it, note="second")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth", "model_0000014.pth",
                                            "model_final.pth"]
    final = read_checkpoint(str(tmp_path / "model_final.pth"))
    assert final["iteration"] == 19 and final["note"] == "second"
    assert read_checkpoint(str(tmp_path / "model_0000009.pth"))["iteration"] == 9
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    only_final = tmp_path / "only_final"
    hook = PeriodicCheckpointer(Checkpointer(ToyModel(), str(only_final)), period=0, max_iter=3)
    for it in range(3):
        hook.step(it)
    assert sorted(os.listdir(only_final)) == ["last_checkpoint", "model_final.pth"]


def test_a_save_failing_midway_loses_nothing_already_saved(tmp_path, monkeypatch):
    model = ToyModel()
    ck = Checkpointer(model, str(tmp_path))
    ck.save("model_0000001", iteration=1)
    saved = _weights(model)
    with torch.no_grad():
        model.conv.weight.add_(1.0)

    def torch_save_then_disk_full(obj, f):
        f.write(b"the first half of a checkpoint")
        raise OSError(28, "No space left on device")

    # 1. The checkpoint itself fails while being written, over a file of the same name.
    monkeypatch.setattr(torch, "save", torch_save_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
        ck.save("model_0000001", iteration=3)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no temporary left
    data = read_checkpoint(str(tmp_path / "model_0000001.pth"))
    assert data["iteration"] == 1 and _same(data["model"], saved)

    # 2. The checkpoint is written, then updating last_checkpoint fails (fvcore truncates the
    # pointer before writing it: a failure there leaves it empty and --resume lost).
    real_fsync, calls = os.fsync, []

    def fsync_failing_second(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_second)
    with pytest.raises(OSError, match="Input/output"):
        ck.save("model_0000005", iteration=5)
    monkeypatch.undo()
    assert len(calls) == 2
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert read_checkpoint(str(tmp_path / "model_0000005.pth"))["iteration"] == 5  # complete
    fresh = ToyModel()
    assert Checkpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 1
    assert _same(_weights(fresh), saved)


class _Payload:
    """Unpickling this object would create a folder: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_weights_only_refuses_a_pickle_payload_through_every_entry(tmp_path):
    marker = str(tmp_path / "code_ran")
    path = str(tmp_path / "model_0000001.pth")
    torch.save({"model": ToyModel().state_dict(), "iteration": 1, "extra": _Payload(marker)}, path)
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    model = ToyModel()
    before = _weights(model)
    ck = Checkpointer(model, str(tmp_path))
    for load in (lambda: ck._load_file(path), lambda: ck.load(path), lambda: ck.resume_or_load("", resume=True),
                 lambda: ck.resume_or_load(path, resume=False)):
        with pytest.raises(CheckpointError, match=r"model_0000001\.pth.*weights_only=True"):
            load()
    assert not os.path.exists(marker)
    assert _same(_weights(model), before)
    # fvcore's load would fetch a URL through its PathManager: segkit's reads local files only.
    with pytest.raises(FileNotFoundError, match="127.0.0.1"):
        ck.load("http://127.0.0.1:9/model_final.pth")


def test_rng_state_saved_by_the_checkpointer_is_restored(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in NumPy's state
    ck = Checkpointer(ToyModel(), str(tmp_path))
    path = ck.save("model_0000003", **resume_state(3))
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    extra = Checkpointer(ToyModel(), str(tmp_path)).resume_or_load("", resume=True)
    start, rng = read_resume_state(extra, path)
    assert start == 4 and extra["data"] == {"batches_consumed": 4}
    restore_rng_state(rng)
    got = (random.random(), np.random.randn(3).tolist(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
