"""tools/train_net.py end to end on a tiny FashionScenes, --eval-only, and exact resume
with the real data loader, model and solver."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "MODEL.RESNETS.WIDTH", "8", "MODEL.RESNETS.OUTPUT_STRIDE", "32",
    "MODEL.RESNETS.OUT_FEATURES", "['res3','res4','res5']", "MODEL.HEAD.IN_FEATURES", "['res3','res4','res5']",
    "DATASETS.FASHION_SCENES.NUM_TRAIN", "24", "DATASETS.FASHION_SCENES.NUM_VAL", "3",
    "DATALOADER.NUM_WORKERS", "0",
    "INPUT.TRAIN_TRANSFORMS", "[{'NAME': 'HorizontalFlip', 'ARGS': {'p': 0.5}}]",
    "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
    "SOLVER.LOG_PERIOD", "1", "SOLVER.WARMUP_ITERS", "0", "TEST.EVAL_PERIOD", "2", "TEST.VIS_NUM_IMAGES", "1", "MODEL.DEVICE", "cpu",
]
CONFIG = os.path.join(ROOT, "configs", "fashion_scenes", "main.yaml")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_train_net_cli_then_eval_only(tmp_path, cache):
    out = tmp_path / "run"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", CONFIG,
           *TINY, "OUTPUT_DIR", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "iter: 3/4" in proc.stdout and "eta:" in proc.stdout and "img/s" in proc.stdout
    assert "Ankle boot" in proc.stdout  # the per-class table
    files = set(os.listdir(out))
    assert {"config.yaml", "log.txt", "metrics.jsonl", "model_final.pth", "model_best.pth", "tensorboard"} <= files
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "tensorboard"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if "sem_seg+DenseCRF/mIoU" in r]
    assert len(final) == 1 and final[0]["iteration"] == 3
    assert len([r for r in rows if "sem_seg/mIoU" in r]) == 2  # at iteration 2 and at the end
    saved = json.loads((out / "inference" / "sem_seg_evaluation_fashion_scenes_val.json").read_text())
    assert set(saved["results"]) == {"sem_seg", "sem_seg+DenseCRF"}
    assert saved["iteration"] == 3  # the file says which weights it evaluated
    assert len(saved["confusion_matrix"]["sem_seg"]) == 11
    pics = set(os.listdir(out / "pictures"))
    assert {"fashion_scenes_val_pred_00.png", "fashion_scenes_val_confusion_sem_seg.png",
            "fashion_scenes_val_confusion_sem_seg_DenseCRF.png", "loss_curve.png", "sem_seg_mIoU_curve.png"} <= pics

    # --eval-only on the final weights reproduces the final evaluation exactly.
    from segkit.engine import default_argument_parser
    from segkit.engine.defaults import main

    args = default_argument_parser().parse_args(
        ["--config-file", CONFIG, "--eval-only", *TINY, "OUTPUT_DIR", str(tmp_path / "eval"),
         "MODEL.WEIGHTS", str(out / "model_final.pth")])
    results = main(args)
    assert results["sem_seg"]["mIoU"] == pytest.approx(saved["results"]["sem_seg"]["mIoU"], abs=1e-12)
    assert results["sem_seg+DenseCRF"]["pACC"] == pytest.approx(saved["results"]["sem_seg+DenseCRF"]["pACC"])


def _trainer(out, extra=()):
    from segkit.config import load_config
    from segkit.engine import DefaultTrainer
    from segkit.engine.defaults import seed_all

    cfg = load_config(CONFIG, [*TINY, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD",
                               "3", "TEST.EVAL_PERIOD", "0", "POSTPROCESS.CHAIN", "[]", *extra])
    cfg.freeze()
    seed_all(0)
    return DefaultTrainer(cfg)


def test_resume_with_real_loader_is_exact(tmp_path, cache):
    torch.set_num_threads(1)
    ref = _trainer(tmp_path / "ref")
    ref.resume_or_load(False).train()
    cut = tmp_path / "cut"
    _trainer(cut).resume_or_load(False).train()
    # Pretend the run died right after its first checkpoint (iteration 2).
    os.remove(cut / "model_final.pth")
    (cut / "last_checkpoint").write_text("model_0000002.pth")
    resumed = _trainer(cut).resume_or_load(True)
    assert resumed.start_iter == 3
    resumed.train()
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.scheduler.state_dict()["last_epoch"] == ref.scheduler.state_dict()["last_epoch"] == 6


def test_gradient_accumulation_with_real_loader_sees_the_same_images(tmp_path, cache):
    from segkit.engine.defaults import micro_batch_cfg

    trainer = _trainer(tmp_path / "acc", ["SOLVER.ACCUM_STEPS", "2"])
    assert micro_batch_cfg(trainer.cfg).SOLVER.IMS_PER_BATCH == 2
    one = _trainer(tmp_path / "one")
    whole = iter(one.build_train_loader(one.cfg, start_iter=0))
    halves = iter(trainer.build_train_loader(trainer.cfg, start_iter=2))  # = optimizer step 1
    next(whole)
    big = next(whole)
    first, second = next(halves), next(halves)
    assert [r["image_id"] for r in first["records"] + second["records"]] == [r["image_id"] for r in big["records"]]
