"""SOLVER.CHANNELS_LAST: training in NHWC gives the same step as NCHW."""
import os

import torch

from segkit.config import load_config
from segkit.data.datasets import fashion_scenes as fs
from segkit.engine import DefaultTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "fashion_scenes", "main.yaml")
TINY = [
    "MODEL.RESNETS.WIDTH", "8", "MODEL.DEVICE", "cpu", "DATASETS.FASHION_SCENES.NUM_TRAIN", "8",
    "DATASETS.FASHION_SCENES.NUM_VAL", "2", "DATALOADER.NUM_WORKERS", "0",
    "INPUT.TRAIN_TRANSFORMS", "[]", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
    "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.WARMUP_ITERS", "0", "TEST.EVAL_PERIOD", "0",
    "TEST.EVAL_POSTPROCESS", "False", "TEST.VIS_NUM_IMAGES", "0",
    "SOLVER.AMP.ENABLED", "False",  # float32 both ways: the layout is the only difference
]


def _train(tmp_path, channels_last):
    cfg = load_config(CONFIG, TINY + ["SOLVER.CHANNELS_LAST", str(channels_last),
                                      "OUTPUT_DIR", str(tmp_path / f"cl{channels_last}")])
    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    w = trainer.model.backbone.conv1.weight
    assert w.is_contiguous(memory_format=torch.channels_last) == channels_last
    before = w.detach().clone()
    trainer.train()
    return before, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_channels_last_training_matches_nchw(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    # Training points the built-in fashion_scenes_* at the tiny scene counts: restore them afterwards.
    monkeypatch.setattr(fs._BUILTIN, "params", fs._BUILTIN.params)
    b0, nchw = _train(tmp_path, False)
    b1, nhwc = _train(tmp_path, True)
    torch.testing.assert_close(b0, b1)  # same initialisation
    assert not torch.equal(nchw["backbone.conv1.weight"], b0)  # it trained
    for k in nchw:
        torch.testing.assert_close(nhwc[k], nchw[k], rtol=1e-3, atol=1e-4, msg=k)
