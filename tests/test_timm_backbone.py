"""TimmBackbone: named ShapeSpecs, output strides, local-only weights, configs that build, train and export."""
import os

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from segkit import model_zoo  # noqa: E402
from segkit.modeling.backbone import TimmBackbone, build_backbone  # noqa: E402
from segkit.modeling.backbone.timm_backbone import find_timm_weights, level_names  # noqa: E402
from segkit.registry import BACKBONE_REGISTRY  # noqa: E402

TIMM_CONFIGS = [n for n in model_zoo.list_configs() if "mobilenetv3" in n or "convnext" in n]


@pytest.fixture(autouse=True)
def _restore_fashion_scenes_params():
    # Building data from a config re-points the built-in fashion_scenes_* datasets at its
    # DATASETS.FASHION_SCENES sizes (module state); later tests expect the defaults back.
    from segkit.data.datasets import fashion_scenes

    saved = fashion_scenes._BUILTIN.params
    yield
    fashion_scenes._BUILTIN.params = saved


def test_level_names():
    assert level_names([4, 8, 16, 32], 32) == ["res2", "res3", "res4", "res5"]
    assert level_names([2, 4, 8, 16, 16], 16) == ["res1", "res2", "res3", "res4", "res5"]
    assert level_names([4, 8, 8, 8], 8) == ["res2", "res3", "res4", "res5"]


@pytest.mark.parametrize("name", ["test_convnext", "mobilenetv3_small_050", "test_efficientnet", "test_resnet"])
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_shapes_match_output_shape(name, output_stride):
    backbone = TimmBackbone(model_name=name, output_stride=output_stride).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        out = backbone(x)
    shapes = backbone.output_shape()
    assert list(out) == list(shapes) and "res5" in shapes and "res3" in shapes
    for key, feat in out.items():
        spec = shapes[key]
        nominal = 2 ** int(key[3:])
        assert spec.stride == min(nominal, output_stride), (key, spec)
        assert feat.shape == (2, spec.channels, -(-64 // spec.stride), -(-96 // spec.stride)), (key, feat.shape)


def test_registered_as_the_class_and_built_from_config():
    assert BACKBONE_REGISTRY.get("TimmBackbone") is TimmBackbone
    cfg = model_zoo.get_config("fashion_scenes/fcn_mobilenetv3_large_cpu.yaml", ["MODEL.DEVICE", "cpu"])
    backbone = build_backbone(cfg)
    assert isinstance(backbone, TimmBackbone) and backbone.model_name == "mobilenetv3_large_100"
    assert list(backbone.output_shape()) == ["res3", "res4", "res5"]
    assert backbone.output_shape()["res5"].stride == 16 and backbone.output_shape()["res5"].channels == 960


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="offers \\['res2', 'res3', 'res4', 'res5'\\]"):
        TimmBackbone(model_name="test_convnext", out_features=["res6"])
    with pytest.raises(ValueError, match="8, 16 or 32"):
        TimmBackbone(model_name="test_convnext", output_stride=4)
    with pytest.raises(FileNotFoundError, match="no weight file"):
        TimmBackbone(model_name="test_convnext", weights=str(tmp_path / "missing.pth"))


def test_weights_from_a_local_file(tmp_path):
    torch.manual_seed(3)
    full = timm.create_model("test_convnext", pretrained=False)
    path = tmp_path / "test_convnext.pth"
    torch.save(full.state_dict(), path)
    backbone = TimmBackbone(model_name="test_convnext", weights=str(path))
    assert backbone.weights_file == str(path)
    got = dict(backbone.body.named_parameters())
    want = full.state_dict()
    assert len(got) > 10
    for key, value in got.items():  # features_only keeps the full model's names, "stages.0" as "stages_0"
        src = key if key in want else key.replace("_", ".", 1)
        torch.testing.assert_close(value, want[src], rtol=0, atol=0)
    random = TimmBackbone(model_name="test_convnext")
    assert not torch.equal(random.body.stem_0.weight, backbone.body.stem_0.weight)


def test_timm_cache_only_nothing_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match="segkit downloads nothing.*timm.create_model\\('test_convnext'"):
        TimmBackbone(model_name="test_convnext", weights="timm")
    # Put a file where the Hugging Face cache keeps timm's weights: it is found and loaded.
    hf_id = timm.models.get_pretrained_cfg("test_convnext").hf_hub_id
    snap = tmp_path / "hub" / ("models--" + hf_id.replace("/", "--")) / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    torch.manual_seed(4)
    full = timm.create_model("test_convnext", pretrained=False)
    torch.save(full.state_dict(), snap / "pytorch_model.bin")
    assert find_timm_weights("test_convnext") == str(snap / "pytorch_model.bin")
    backbone = TimmBackbone(model_name="test_convnext", weights="timm")
    torch.testing.assert_close(backbone.body.stem_0.weight, full.stem[0].weight, rtol=0, atol=0)


@pytest.mark.parametrize("name", TIMM_CONFIGS)
def test_shipped_timm_configs_build(name):
    from segkit.modeling import build_model

    assert len(TIMM_CONFIGS) == 8
    cfg = model_zoo.get_config(name, ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAINED", ""])
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8))
    logits = out if isinstance(out, torch.Tensor) else out["sem_seg"]
    assert logits.shape == (1, cfg.MODEL.NUM_CLASSES, 64, 64)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["fashion_scenes/fcn_mobilenetv3_large_cpu.yaml",
                                    "fashion_scenes/deeplab_v2_convnext_tiny_cpu.yaml"])
def test_train_a_few_iterations_then_export_onnx(config, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from segkit.engine import DefaultTrainer
    from segkit.export import check_parity, export

    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    cfg = model_zoo.get_config(config, [
        "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "run"), "SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.WARMUP_ITERS", 0, "SOLVER.CHECKPOINT_PERIOD", 3, "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", "[]",
        "DATASETS.FASHION_SCENES.NUM_TRAIN", 8, "DATASETS.FASHION_SCENES.NUM_VAL", 2, "DATALOADER.NUM_WORKERS", 0,
        "INPUT.TRAIN_TRANSFORMS", "[{'NAME': 'RandomCrop', 'ARGS': {'height': 64, 'width': 64}}]"])
    trainer = DefaultTrainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    changed = [k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])]
    assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("head.") for k in changed)
    weights = str(tmp_path / "run" / "model_final.pth")
    assert os.path.isfile(weights)
    path = export(cfg, weights, "onnx", str(tmp_path / "m.onnx"), with_probs=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)]
    report = check_parity(cfg, weights, path, images)
    assert report.pixel_agreement >= 0.999, report
    assert report.max_prob_diff < 1e-3, report


def test_gridding_check_skips_even_kernels_instead_of_failing():
    from segkit.config import get_cfg
    from segkit.modeling.gridding import GriddingWarning

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "TimmBackbone"
    cfg.MODEL.TIMM.NAME = "test_convnext"
    cfg.MODEL.TIMM.OUTPUT_STRIDE = 16
    assert cfg.MODEL.HDC.GRIDDING_CHECK == "warn"
    with pytest.warns(GriddingWarning, match="include an even size"):
        backbone = build_backbone(cfg)  # ConvNeXt's dilated 2x2 downsampling conv
    assert backbone.output_shape()["res5"].stride == 16
