"""Training loop: NaN guard, gradient accumulation, AMP, hooks, writers, registry.

Also defines the toy model, loader and trainer shared by the other engine tests
(they import them from this module).
"""
import json
import logging
import math
import os

import pytest
import torch
from torch import nn

from segkit.config import get_cfg
from segkit.engine import DefaultTrainer, EventStorage, NonFiniteLossError, SimpleTrainer, train_loop
from segkit.engine.events import ConsolePrinter, JSONWriter
from segkit.engine.hooks import DEFAULT_HOOKS, LRScheduler
from segkit.engine.train_loop import HookBase, resolve_amp_dtype
from segkit.evaluation import SemSegEvaluator
from segkit.registry import HOOK_REGISTRY

K = 3  # classes of the toy problem


class ToyModel(nn.Module):
    """conv -> dropout -> 1x1 conv. Training: {"loss_ce"}; eval: logits (N, K, H, W)."""

    def __init__(self, num_classes=K, dropout=0.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(4, num_classes, 1)
        self.num_classes, self.ignore_value, self.size_divisibility = num_classes, 255, 1
        self.seen_dtype = None

    def forward(self, images, targets=None):
        x = self.conv(images.float() / 255.0)
        self.seen_dtype = x.dtype
        logits = self.cls(self.drop(torch.relu(x)))
        if not self.training:
            return logits
        return {"loss_ce": nn.functional.cross_entropy(logits.float(), targets, ignore_index=255)}


def toy_batch(index, batch_size=4, size=8, seed=0):
    """Batch ``index`` of a deterministic stream: labels are a function of the image."""
    g = torch.Generator().manual_seed(seed * 100003 + index)
    image = torch.randint(0, 256, (batch_size, 3, size, size), generator=g, dtype=torch.uint8)
    label = (image[:, 0].long() * K // 256).clamp(max=K - 1)
    return {"image": image, "sem_seg": label, "records": [{"height": size, "width": size}] * batch_size}


class ToyLoader:
    """Infinite stream of toy batches from ``start_iter`` on; rank ``r`` of ``w`` takes its slice."""

    def __init__(self, batch_size=4, start_iter=0, rank=0, world=1, seed=0):
        self.batch_size, self.start_iter, self.rank, self.world, self.seed = batch_size, start_iter, rank, world, seed

    def __iter__(self):
        i = self.start_iter
        per = self.batch_size // self.world
        while True:
            b = toy_batch(i, self.batch_size, seed=self.seed)
            sl = slice(self.rank * per, (self.rank + 1) * per)
            yield {"image": b["image"][sl], "sem_seg": b["sem_seg"][sl], "records": b["records"][sl]}
            i += 1


class ToyTrainer(DefaultTrainer):
    """DefaultTrainer with toy model/data/solver so the engine is tested on its own."""

    @classmethod
    def build_model(cls, cfg):
        return ToyModel(dropout=0.3)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return torch.optim.SGD(model.parameters(), lr=cfg.SOLVER.BASE_LR, momentum=0.9)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1 - it / cfg.SOLVER.MAX_ITER) ** 0.9)

    @classmethod
    def build_grad_clipper(cls, cfg):
        return None

    @classmethod
    def build_train_loader(cls, cfg, start_iter=0):
        from segkit.engine.comm import get_rank, get_world_size

        bs = cfg.SOLVER.IMS_PER_BATCH // cfg.SOLVER.ACCUM_STEPS
        return ToyLoader(bs, start_iter, get_rank(), get_world_size(), seed=cfg.SEED)

    @classmethod
    def test(cls, cfg, model, postprocess=None, pictures=True):
        from segkit.evaluation import inference_on_dataset

        inner = getattr(model, "module", model)
        inner.eval()
        ev = SemSegEvaluator(K, ["a", "b", "c"], 255, os.path.join(cfg.OUTPUT_DIR, "inference"), "toy_val", 2)
        loader = [toy_batch(10_000 + i, 2) for i in range(3)]
        res = inference_on_dataset(loader, ev, lambda im: inner(im).softmax(1))
        if pictures:
            cls.save_pictures(cfg, ev)
        inner.train()
        return res


def toy_cfg(out_dir, **solver):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(out_dir)
    cfg.MODEL.NUM_CLASSES = K
    # The toy trainer feeds toy batches: the config names no dataset (whose class list set-up would check).
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.MAX_ITER = 12
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.CHECKPOINT_PERIOD = 4
    cfg.SOLVER.LOG_PERIOD = 5
    cfg.TEST.EVAL_PERIOD = 6
    cfg.TEST.VIS_NUM_IMAGES = 2
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _run_simple(model, loader, iters, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = SimpleTrainer(model, loader, opt, **kw)
    trainer.train(0, iters)
    return trainer


def _halves(loader):
    for batch in loader:
        yield {k: v[:2] for k, v in batch.items()}
        yield {k: v[2:] for k, v in batch.items()}


@pytest.mark.parametrize("accum", [2])
def test_accumulated_micro_batches_match_one_big_batch(accum):
    torch.manual_seed(0)
    a, b = ToyModel(), ToyModel()
    b.load_state_dict(a.state_dict())
    _run_simple(a, ToyLoader(4), 3)
    _run_simple(b, _halves(ToyLoader(4)), 3, accum_steps=accum)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), n
    assert not torch.equal(a.conv.weight, ToyModel().conv.weight)


class _NanAt(nn.Module):
    def __init__(self, bad_iter):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.bad_iter, self.calls = bad_iter, 0

    def forward(self, images, targets):
        self.calls += 1
        bad = torch.tensor(float("nan")) if self.calls - 1 == self.bad_iter else torch.tensor(0.0)
        return {"loss_ok": self.w.sum() * 0 + 1.0, "loss_bad": self.w.sum() + bad}


def test_nan_guard_names_iteration_and_term():
    model = _NanAt(bad_iter=3)
    with pytest.raises(NonFiniteLossError, match=r"iteration 3 .*loss_bad = nan") as info:
        _run_simple(model, ToyLoader(2), 10)
    assert "loss_ok" not in str(info.value).split("All terms")[0]
    assert model.calls == 4  # stopped right there


def test_nan_guard_catches_inf():
    class Inf(_NanAt):
        def forward(self, images, targets):
            return {"loss_x": self.w.sum() * float("inf")}

    with pytest.raises(NonFiniteLossError, match=r"iteration 0 .*loss_x = inf"):
        _run_simple(Inf(0), ToyLoader(2), 2)


def test_bf16_autocast_on_cpu_trains():
    model = ToyModel()
    before = model.conv.weight.detach().clone()
    t = _run_simple(model, ToyLoader(4), 2, amp_dtype=torch.bfloat16)
    assert model.seen_dtype == torch.bfloat16 and t.scaler is None
    assert model.conv.weight.dtype == torch.float32 and not torch.equal(before, model.conv.weight)


def test_amp_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_amp_dtype("auto", cpu) == (torch.bfloat16 if train_loop.cpu_runs_bfloat16() else None)
    assert resolve_amp_dtype("float16", cpu) == torch.float16
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE"):
        resolve_amp_dtype("int8", cpu)


@pytest.mark.parametrize("has_bf16, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_amp_on_cpu_follows_the_cpus_bfloat16_instructions(has_bf16, expected, monkeypatch):
    # Emulated bfloat16 is slower than float32: "auto" trains in float32 on CPUs without it,
    # while an explicit dtype is honoured everywhere.
    monkeypatch.setattr(train_loop, "cpu_runs_bfloat16", lambda: has_bf16)
    cpu = torch.device("cpu")
    assert resolve_amp_dtype("auto", cpu) == expected
    assert resolve_amp_dtype("bfloat16", cpu) == torch.bfloat16


@pytest.mark.parametrize("probes, expected", [
    ({"_is_avx512_bf16_supported": True, "_is_amx_tile_supported": False}, True),
    ({"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": True}, True),
    ({"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False}, False),
    ({}, False),  # a PyTorch without the probes
])
def test_cpu_bfloat16_probe(probes, expected, monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        if name in probes:
            monkeypatch.setattr(torch.cpu, name, lambda v=probes[name]: v, raising=False)
        else:
            monkeypatch.delattr(torch.cpu, name, raising=False)
    assert train_loop.cpu_runs_bfloat16() is expected


def test_hooks_run_in_order_and_lr_is_recorded():
    calls = []

    class Spy(HookBase):
        def before_train(self):
            calls.append("bt")

        def after_step(self):
            calls.append(self.trainer.iter)

        def after_train(self):
            calls.append("at")

    model = ToyModel()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    trainer = SimpleTrainer(model, ToyLoader(2), opt)
    trainer.register_hooks([LRScheduler(opt, sched), Spy()])
    trainer.train(0, 5)
    assert calls == ["bt", 0, 1, 2, 3, 4, "at"]
    assert [v for _, v in trainer.storage.history("lr")] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert trainer.iter == 5


def test_writers_emit_jsonl_and_progress_line(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    with EventStorage(0) as storage:
        writers = [JSONWriter(str(path)), ConsolePrinter(max_iter=100, ims_per_batch=8)]
        for it in range(3):
            storage.iter = it
            storage.put_scalars(total_loss=1.0 + it, loss_ce=1.0 + it)
            storage.put_scalar("time", 0.5)
            storage.put_scalar("lr", 0.01 * (it + 1), smoothing_hint=False)
        with caplog.at_level(logging.INFO, logger="segkit.engine.events"):
            for w in writers:
                w.write()
        storage.put_scalar("sem_seg/mIoU", 0.5, smoothing_hint=False)
        writers[0].write()
        writers[0].close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["iteration"] == 2 and rows[0]["lr"] == pytest.approx(0.03)
    assert rows[0]["total_loss"] == pytest.approx(2.0)  # median of 1, 2, 3
    assert rows[1] == {"iteration": 2, "sem_seg/mIoU": 0.5}
    line = caplog.records[-1].getMessage()
    assert "iter: 3/100" in line and "eta: 0:00:48" in line and "lr: 0.03" in line
    assert "speed: 16.0 img/s" in line and "loss_ce: 2" in line


def test_default_hooks_are_registered():
    for name in DEFAULT_HOOKS:
        assert name in HOOK_REGISTRY


def test_default_trainer_end_to_end_outputs(tmp_path):
    cfg = toy_cfg(tmp_path)
    results = ToyTrainer(cfg).train()
    files = set(os.listdir(tmp_path))
    assert {"model_final.pth", "model_best.pth", "metrics.jsonl", "last_checkpoint", "tensorboard"} <= files
    assert sorted(f for f in files if f.startswith("model_0")) == ["model_0000003.pth", "model_0000007.pth"]
    pics = set(os.listdir(tmp_path / "pictures"))
    assert {"toy_val_pred_00.png", "toy_val_confusion_sem_seg.png", "loss_curve.png",
            "sem_seg_mIoU_curve.png"} <= pics
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r["sem_seg/mIoU"] for r in rows if "sem_seg/mIoU" in r]
    assert len(evals) == 2 and evals[-1] == pytest.approx(results["sem_seg"]["mIoU"])
    assert math.isfinite(rows[-1]["total_loss"])
    assert (tmp_path / "inference" / "sem_seg_evaluation_toy_val.json").is_file()


def test_config_turns_on_amp_accumulation_and_extra_hooks(tmp_path):
    seen = []

    class Record(HookBase):
        def after_step(self):
            seen.append((self.trainer.iter, self.trainer._trainer.accum_steps, self.trainer.model.seen_dtype))

    HOOK_REGISTRY.register(lambda trainer: Record(), name="_TestRecordHook")  # no from_config: inputs only
    try:
        cfg = toy_cfg(tmp_path, MAX_ITER=3, ACCUM_STEPS=2, EXTRA_HOOKS=["_TestRecordHook"])
        cfg.SOLVER.AMP.ENABLED = True
        cfg.TEST.BEST_METRIC = ""
        trainer = ToyTrainer(cfg)
        trainer.train()
    finally:
        HOOK_REGISTRY.unregister("_TestRecordHook")
    # Training forward passes ran in bfloat16 (the last step's record follows the final evaluation).
    assert seen[:2] == [(0, 2, torch.bfloat16), (1, 2, torch.bfloat16)] and [s[0] for s in seen] == [0, 1, 2]
    assert trainer.model.seen_dtype == torch.float32  # evaluation stays in full precision
    assert not (tmp_path / "model_best.pth").exists()
    ck = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert ck["data"]["batches_consumed"] == 6  # 3 iterations x 2 micro-batches
