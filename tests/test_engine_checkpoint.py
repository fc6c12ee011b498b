"""Checkpoints: atomic writes, keep-last-N, best, weights_only loading, RNG state."""
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from segkit.engine.checkpoint import (
    Checkpointer,
    CheckpointError,
    atomic_torch_save,
    capture_rng_state,
    load_model_weights,
    restore_rng_state,
)
from segkit.engine.hooks import BestCheckpointer, EvalHook, PeriodicCheckpointer
from segkit.engine.train_loop import SimpleTrainer
from test_engine import ToyLoader, ToyModel


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.pth")
    atomic_torch_save({"x": torch.ones(2)}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"x": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert os.listdir(tmp_path) == ["ck.pth"]  # no temporary file left behind


def _train_with(hooks_fn, iters, out_dir):
    model = ToyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ck = Checkpointer(model, str(out_dir), optimizer=opt)
    trainer = SimpleTrainer(model, ToyLoader(2), opt)
    trainer.register_hooks(hooks_fn(ck))
    trainer.train(0, iters)
    return trainer, ck


def test_keep_last_n_and_final(tmp_path):
    _, ck = _train_with(lambda ck: [PeriodicCheckpointer(ck, period=2, max_iter=11, max_to_keep=2)], 11, tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert names == ["last_checkpoint", "model_0000007.pth", "model_0000009.pth", "model_final.pth"]
    assert ck.get_checkpoint_file().endswith("model_final.pth")
    data = torch.load(tmp_path / "model_0000009.pth", weights_only=True)
    assert data["iteration"] == 9 and data["data"]["batches_consumed"] == 10
    assert set(data) >= {"model", "optimizer", "rng"} and len(data["rng"]) == 1


def test_best_checkpoint_follows_metric_and_keeps_resume_pointer(tmp_path):
    scores = iter([0.3, 0.5, 0.4])

    def hooks(ck):
        return [
            PeriodicCheckpointer(ck, period=3, max_iter=9),
            EvalHook(3, lambda final: {"sem_seg": {"mIoU": next(scores)}}, max_iter=9),
            BestCheckpointer(ck, "sem_seg/mIoU", "max"),
        ]

    _train_with(hooks, 9, tmp_path)
    best = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert best["best_metric"] == {"sem_seg/mIoU": 0.5} and best["iteration"] == 5
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    # A resumed run does not forget the best value: 0.45 is not an improvement.
    hook = BestCheckpointer(Checkpointer(ToyModel(), str(tmp_path)), "sem_seg/mIoU", "max")
    hook.before_train()
    assert hook.best == 0.5 and not hook._better(0.45) and hook._better(0.6)


def test_load_model_weights_errors_are_actionable(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_model_weights(ToyModel(), str(tmp_path / "nope.pth"))
    src = ToyModel(num_classes=5)
    torch.save({"model": src.state_dict()}, tmp_path / "five.pth")
    with pytest.raises(CheckpointError, match=r"mismatched keys: cls.bias: checkpoint \(5,\) vs model \(3,\)"):
        load_model_weights(ToyModel(num_classes=3), str(tmp_path / "five.pth"))
    report = load_model_weights(ToyModel(num_classes=3), str(tmp_path / "five.pth"), strict=False)
    assert len(report["mismatched"]) == 2 and not report["missing"]
    extra = dict(src.state_dict(), **{"head.extra": torch.zeros(1)})
    torch.save(extra, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="unexpected keys: head.extra"):
        load_model_weights(ToyModel(num_classes=5), str(tmp_path / "bare.pth"))


def test_load_strips_ddp_prefix_and_copies_values(tmp_path):
    src = ToyModel()
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "ddp.pth")
    dst = ToyModel()
    load_model_weights(dst, str(tmp_path / "ddp.pth"))
    assert torch.equal(dst.conv.weight, src.conv.weight)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": ToyModel().state_dict(), "x": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_model_weights(ToyModel(), str(tmp_path / "evil.pth"))


def test_rng_state_round_trip_through_a_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian around
    atomic_torch_save({"rng": capture_rng_state()}, str(tmp_path / "rng.pth"))
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    got = (random.random(), np.random.randn(3).tolist(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_checkpointer_restores_optimizer_state(tmp_path):
    trainer, ck = _train_with(lambda ck: [PeriodicCheckpointer(ck, 0, max_iter=3)], 3, tmp_path)
    model = ToyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    extra = Checkpointer(model, str(tmp_path), optimizer=opt).load(ck.get_checkpoint_file())
    assert extra["iteration"] == 2
    buf_a = trainer.optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(opt.state_dict()["state"][0]["momentum_buffer"], buf_a)
    with pytest.raises(CheckpointError, match="no 'scheduler' entry"):
        Checkpointer(model, str(tmp_path), scheduler=opt).load(ck.get_checkpoint_file())
