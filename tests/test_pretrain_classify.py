"""Classification pretraining of the backbone (MODEL.PRETRAIN.CLASSIFY, FCN sec. 3.1)."""
import os

import numpy as np
import pytest
import torch

from segkit.config import load_config
from segkit.data.datasets import fashion_scenes as fs
from segkit.engine.pretrain import BackboneClassifier, GarmentCropSampler, pretrain_backbone_classify
from segkit.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "fashion_scenes", "main.yaml")
TINY_MODEL = ["MODEL.RESNETS.WIDTH", "8", "MODEL.DEVICE", "cpu"]
PRETRAIN = ["MODEL.PRETRAIN.CLASSIFY.ITERS", "3", "MODEL.PRETRAIN.CLASSIFY.IMS_PER_BATCH", "4",
            "MODEL.PRETRAIN.CLASSIFY.SIZE", "16"]


def test_sampler_uses_only_the_train_garments_and_is_reproducible():
    s = GarmentCropSampler(size=24, seed=3)
    train_images, train_labels = fs._garments()["train"]
    assert s.images.shape == (len(train_images), 1, 28, 28)
    np.testing.assert_array_equal(s.images[:, 0].numpy().astype(np.uint8), train_images)
    val = {row.tobytes() for row in fs._garments()["val"][0]}
    assert not any(row.tobytes() in val for row in s.images[:, 0].numpy().astype(np.uint8))
    assert s.num_classes == 10
    x, y = s.sample(6)
    assert x.shape == (6, 3, 24, 24) and x.dtype == torch.float32 and y.shape == (6,)
    assert float(x.min()) >= 0 and float(x.max()) <= 255 and set(y.tolist()) <= set(range(10))
    x2, y2 = GarmentCropSampler(size=24, seed=3).sample(6)
    torch.testing.assert_close(x, x2)
    assert torch.equal(y, y2)


def test_sampler_places_the_garment_at_the_requested_scale():
    # Same seed, same draws: an all-white garment vs. an all-black one (below the
    # foreground threshold, i.e. no garment). The pixels that differ are the garment.
    white = GarmentCropSampler(20, (0.5, 0.5), seed=0, garments=(np.full((1, 28, 28), 255, np.uint8), np.array([0])))
    black = GarmentCropSampler(20, (0.5, 0.5), seed=0, garments=(np.zeros((1, 28, 28), np.uint8), np.array([0])))
    for _ in range(2):
        (xw, yw), (xb, _) = white.sample(8), black.sample(8)
        assert yw.tolist() == [0] * 8
        area = (xw != xb).any(dim=1).float().mean(dim=(1, 2))
        # width 0.5, height 0.5 * aspect in [0.8, 1.25] of the crop: 0.2..0.31 of its area.
        assert bool(((area > 0.17) & (area < 0.35)).all()), area


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="MODEL.PRETRAIN.CLASSIFY.SIZE"):
        GarmentCropSampler(size=4)
    with pytest.raises(ValueError, match="SCALE_RANGE"):
        GarmentCropSampler(scale_range=(0.5, 1.5))


def test_classifier_reads_the_deepest_feature():
    cfg = load_config(CONFIG, TINY_MODEL)
    clf = BackboneClassifier(build_model(cfg).backbone, 10)
    assert clf.feature == "res5" and clf.fc.in_features == 8 * 8
    assert clf(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_pretraining_changes_backbone_weights_and_statistics_only(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(CONFIG, TINY_MODEL + PRETRAIN)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = pretrain_backbone_classify(cfg, model, str(tmp_path))
    after = model.state_dict()
    assert set(stats) == {"loss", "accuracy", "seconds", "cpu_seconds"} and np.isfinite(stats["loss"]) and 0 <= stats["accuracy"] <= 1
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "backbone.conv1.weight" in changed and "backbone.layer4.1.conv2.weight" in changed
    assert "backbone.bn1.running_mean" in changed  # BatchNorm statistics of the crops
    assert not any(k.startswith("head.") for k in changed)  # the segmentation head is untouched
    saved = torch.load(tmp_path / "pretrain_classify_backbone.pth", weights_only=True)
    assert set(saved) == set(model.backbone.state_dict())
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(saved[k], v)


def test_rejects_a_model_without_backbone():
    cfg = load_config(CONFIG, TINY_MODEL + PRETRAIN)
    with pytest.raises(ValueError, match="MODEL.PRETRAIN.CLASSIFY needs a model with a segkit backbone"):
        pretrain_backbone_classify(cfg, torch.nn.Linear(2, 2))


TRAIN = [
    "MODEL.RESNETS.OUTPUT_STRIDE", "32", "DATASETS.FASHION_SCENES.NUM_TRAIN", "8",
    "DATASETS.FASHION_SCENES.NUM_VAL", "2", "DATALOADER.NUM_WORKERS", "0",
    "INPUT.TRAIN_TRANSFORMS", "[{'NAME': 'HorizontalFlip', 'ARGS': {'p': 0.5}}]",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
    "SOLVER.WARMUP_ITERS", "0", "TEST.VIS_NUM_IMAGES", "0", "TEST.EVAL_POSTPROCESS", "False",
]


def _run_main(tmp_path, monkeypatch, extra, resume=False):
    """train_net's main(); records the backbone's weights when segmentation training starts."""
    from segkit.engine import default_argument_parser
    from segkit.engine.defaults import DefaultTrainer, main

    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    # The run points the built-in fashion_scenes_* at its tiny scene counts: restore them afterwards.
    monkeypatch.setattr(fs._BUILTIN, "params", fs._BUILTIN.params)
    seen = {}
    real_train = DefaultTrainer.train

    def train(self):
        seen["start_iter"] = self.start_iter
        seen["backbone"] = {k: v.clone() for k, v in self.model.backbone.state_dict().items()}
        return real_train(self)

    monkeypatch.setattr(DefaultTrainer, "train", train)
    flags = ["--config-file", CONFIG] + (["--resume"] if resume else [])
    main(default_argument_parser().parse_args(flags + TINY_MODEL + TRAIN + extra
                                              + ["OUTPUT_DIR", str(tmp_path / "run")]))
    return seen


def test_train_net_starts_segmentation_from_the_pretrained_backbone(tmp_path, monkeypatch):
    on = PRETRAIN + ["MODEL.PRETRAIN.CLASSIFY.ENABLED", "True"]
    seen = _run_main(tmp_path, monkeypatch, on)
    saved = torch.load(tmp_path / "run" / "pretrain_classify_backbone.pth", weights_only=True)
    assert seen["start_iter"] == 0
    for k, v in seen["backbone"].items():
        assert torch.equal(saved[k], v), k
    # Without the stage (same seed) the segmentation starts elsewhere.
    plain = _run_main(tmp_path / "plain", monkeypatch, [])
    assert not torch.equal(plain["backbone"]["conv1.weight"], saved["conv1.weight"])
    assert not os.path.exists(tmp_path / "plain" / "run" / "pretrain_classify_backbone.pth")
    # A resumed run continues from its checkpoint and does not pretrain again.
    os.remove(tmp_path / "run" / "pretrain_classify_backbone.pth")
    resumed = _run_main(tmp_path, monkeypatch, on, resume=True)
    assert resumed["start_iter"] == 2
    assert not os.path.exists(tmp_path / "run" / "pretrain_classify_backbone.pth")
