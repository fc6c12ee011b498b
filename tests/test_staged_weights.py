"""FCN's staged training (sec. 4.2): a finer net starts from the coarser one's checkpoint."""
import pytest
import torch

from segkit.config import get_cfg
from segkit.engine.checkpoint import CheckpointError
from segkit.engine.defaults import DefaultTrainer
from segkit.modeling import build_model


def _cfg(tmp_path, features):
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.NUM_CLASSES", "11", "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.WIDTH", "8", "MODEL.RESNETS.OUTPUT_STRIDE", "32",
        "MODEL.RESNETS.OUT_FEATURES", "['res3','res4','res5']", "MODEL.HEAD.IN_FEATURES", str(features),
        "DATASETS.FASHION_SCENES.NUM_TRAIN", "8", "DATASETS.FASHION_SCENES.NUM_VAL", "2",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "0",
        "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    return cfg


@pytest.fixture()
def coarse_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    coarse = build_model(_cfg(tmp_path, ["res5"]))
    for p in coarse.parameters():  # distinguishable from a fresh initialisation
        torch.nn.init.normal_(p, std=0.5)
    path = tmp_path / "fcn32s.pth"
    torch.save({"model": coarse.state_dict()}, path)
    return coarse, path


def test_finer_net_starts_from_coarser_checkpoint_when_not_strict(tmp_path, coarse_checkpoint):
    coarse, path = coarse_checkpoint
    cfg = _cfg(tmp_path, ["res3", "res4", "res5"])
    cfg.merge_from_list(["MODEL.WEIGHTS", str(path), "MODEL.WEIGHTS_STRICT", "False"])
    trainer = DefaultTrainer(cfg).resume_or_load(resume=False)
    fine = trainer.model.state_dict()
    shared = coarse.state_dict()
    loaded = [k for k in shared if k in fine and fine[k].shape == shared[k].shape]
    assert any(k.startswith("backbone.") for k in loaded)
    for k in loaded:
        assert torch.equal(fine[k], shared[k]), k
    assert any(k not in shared for k in fine)  # the new skip layers kept their initialisation


def test_strict_default_refuses_a_checkpoint_of_another_architecture(tmp_path, coarse_checkpoint):
    _, path = coarse_checkpoint
    cfg = _cfg(tmp_path, ["res3", "res4", "res5"])
    cfg.merge_from_list(["MODEL.WEIGHTS", str(path)])
    with pytest.raises(CheckpointError, match="missing keys"):
        DefaultTrainer(cfg).resume_or_load(resume=False)
