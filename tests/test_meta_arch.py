"""Meta-architectures: the SemanticSegmentor contract and DeepLab v2 MSC."""
import pytest
import torch
import torch.nn.functional as F

from segkit.config import get_cfg
from segkit.modeling import MultiScaleSegmentor, SemanticSegmentor, build_model
from segkit.registry import META_ARCH_REGISTRY, RegistryKeyError


def tiny_cfg(meta="SemanticSegmentor", head="DeepLabV2Head"):
    cfg = get_cfg()
    cfg.merge_from_dict(
        {
            "MODEL": {
                "META_ARCHITECTURE": meta,
                "DEVICE": "cpu",
                "NUM_CLASSES": 4,
                "RESNETS": {"DEPTH": 18, "WIDTH": 8, "OUTPUT_STRIDE": 8},
                "HEAD": {"NAME": head, "IN_FEATURES": ["res5"]},
                "DEEPLAB": {"RATES": [1, 2]},
            }
        }
    )
    return cfg


def test_eval_returns_logits_at_input_size_for_uint8_and_float():
    model = build_model(tiny_cfg()).eval()
    images = torch.randint(0, 256, (2, 3, 29, 35), dtype=torch.uint8)
    out = model(images)
    assert out.shape == (2, 4, 29, 35) and out.dtype == torch.float32
    torch.testing.assert_close(model(images.float()), out)
    assert model.num_classes == 4 and model.ignore_value == 255 and model.size_divisibility == 0


def test_normalisation_uses_pixel_mean_and_std():
    cfg = tiny_cfg()
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [10.0, 20.0, 30.0], [2.0, 4.0, 5.0]
    model = build_model(cfg)
    x = model.normalize(torch.full((1, 3, 2, 2), 50, dtype=torch.uint8))
    assert x[0, :, 0, 0].tolist() == [20.0, 7.5, 4.0]
    # Normalisation is config, not a weight: checkpoints do not carry it.
    assert "pixel_mean" not in model.state_dict()


def test_training_returns_loss_terms_and_ignores_pixels():
    model = build_model(tiny_cfg()).train()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    targets = torch.randint(0, 4, (2, 32, 32))
    losses = model(images, targets)
    assert losses and all(k.startswith("loss_") and v.dim() == 0 for k, v in losses.items())
    total = sum(losses.values())
    total.backward()
    assert all(torch.isfinite(v) for v in losses.values())
    # Pixels labelled IGNORE_VALUE do not contribute: changing their logits changes nothing.
    logits = torch.randn(2, 4, 32, 32)
    masked = targets.clone()
    masked[:, :16] = 255
    other = logits.clone()
    other[:, :, :16] = torch.randn(2, 4, 16, 32) * 10
    ref, again = model.compute_losses(logits, masked), model.compute_losses(other, masked)
    assert all(torch.allclose(ref[k], again[k]) for k in ref)
    assert not all(torch.allclose(ref[k], model.compute_losses(other, targets)[k]) for k in ref)


def test_losses_are_computed_on_logits_upsampled_to_the_target():
    cfg = tiny_cfg()
    model = build_model(cfg).train()
    images = torch.randint(0, 256, (1, 3, 27, 33), dtype=torch.uint8)
    targets = torch.randint(0, 4, (1, 27, 33))
    torch.manual_seed(1)
    ours = model(images, targets)
    logits = model.predict_logits(model.normalize(images))
    up = F.interpolate(logits, size=(27, 33), mode="bilinear", align_corners=False)
    assert set(ours) == set(model.loss(up, targets))
    key = next(iter(ours))
    torch.testing.assert_close(ours[key], model.loss(up, targets)[key])


def test_msc_fuses_by_max_and_has_a_loss_per_branch():
    model = build_model(tiny_cfg("MultiScaleSegmentor"))
    assert isinstance(model, MultiScaleSegmentor) and model.scales == [1.0, 0.75, 0.5]
    images = torch.randint(0, 256, (1, 3, 41, 37), dtype=torch.uint8)
    model.eval()
    x = model.normalize(images)
    branches = model.branch_logits(x)
    assert len(branches) == 3 and all(b.shape == branches[0].shape for b in branches)
    fused = torch.maximum(torch.maximum(branches[0], branches[1]), branches[2])
    expected = F.interpolate(fused, size=(41, 37), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(images), expected)
    model.train()
    losses = model(images, torch.randint(0, 4, (1, 41, 37)))
    suffixes = sorted({k.rsplit("_", 1)[-1] for k in losses})
    assert suffixes == ["fused", "s050", "s075", "s100"]
    sum(losses.values()).backward()


def test_msc_scales_are_validated():
    cfg = tiny_cfg("MultiScaleSegmentor")
    cfg.MODEL.MSC.SCALES = [1.0, 0.0]
    with pytest.raises(ValueError, match="positive"):
        build_model(cfg)


def test_unknown_meta_architecture_suggests_the_nearest():
    with pytest.raises(RegistryKeyError, match="Did you mean 'SemanticSegmentor'"):
        build_model(tiny_cfg("SemanticSegmenter"))


def test_meta_architecture_must_build_a_module():
    META_ARCH_REGISTRY.register(lambda: "nope", name="_NotAModuleMeta")  # no from_config: no config
    try:
        with pytest.raises(TypeError, match="not a torch.nn.Module"):
            build_model(tiny_cfg("_NotAModuleMeta"))
    finally:
        META_ARCH_REGISTRY.unregister("_NotAModuleMeta")


def test_plain_constructor_without_config():
    from segkit.modeling.backbone import ResNet
    from segkit.modeling.heads import FCNHead

    backbone = ResNet(depth=18, width=8, output_stride=16, out_features=["res5"])
    head = FCNHead(input_shape=backbone.output_shape(), in_features=["res5"], num_classes=3)
    model = SemanticSegmentor(backbone=backbone, head=head, loss=None, pixel_mean=[0.0] * 3,
                              pixel_std=[1.0] * 3, num_classes=3).eval()
    assert model(torch.rand(1, 3, 30, 31) * 255).shape == (1, 3, 30, 31)
    with pytest.raises(RuntimeError, match="without a loss"):
        model.train()(torch.rand(1, 3, 30, 31), torch.zeros(1, 30, 31, dtype=torch.long))


# ---------------------------------------------------------------------------- configs
import pathlib  # noqa: E402

from segkit.config import load_config  # noqa: E402

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if not p.name.startswith("Base-"))
SMALL = 20e6  # parameters; above this a config is only built (on the meta device), not run


def test_paper_configs_exist():
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIGS}
    for expected in ("voc/fcn32s_vgg16.yaml", "voc/fcn16s_vgg16.yaml", "voc/fcn8s_vgg16.yaml",
                     "voc/deeplab_v2_vgg16_largefov.yaml", "voc/deeplab_v2_resnet101_aspp_l_msc.yaml",
                     "voc/refinenet_resnet101.yaml", "voc/duc_hdc_resnet101.yaml"):
        assert expected in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.relative_to(CONFIG_DIR).as_posix() for p in CONFIGS])
def test_every_config_loads_and_builds(path):
    # Pretrained files are never downloaded; tests build from random initialisation.
    cfg = load_config(str(path), ["MODEL.BACKBONE.PRETRAINED", "", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "meta"])
    with torch.device("meta"):
        meta_model = build_model(cfg)
    n_params = sum(p.numel() for p in meta_model.parameters())
    assert n_params > 0
    if n_params > SMALL:
        return
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    # Several inputs (INPUT.MODALITIES) arrive stacked: one channel per PIXEL_MEAN entry.
    out = model(torch.randint(0, 256, (1, len(cfg.MODEL.PIXEL_MEAN), 65, 63), dtype=torch.uint8))
    extra = sum(s["NUM_CLASSES"] for s in cfg.MODEL.MULTI_TASK.EXTRA_LABEL_SETS)  # two-headed: all sets' scores
    assert out.shape == (1, cfg.MODEL.NUM_CLASSES + extra, 65, 63)


def test_auxiliary_head_outputs_get_their_own_weighted_losses():
    from segkit.modeling.backbone import ResNet
    from segkit.modeling.heads import FCNHead

    class AuxHead(torch.nn.Module):
        def __init__(self, shapes):
            super().__init__()
            self.main = FCNHead(input_shape=shapes, in_features=["res5"], num_classes=3)
            self.aux = FCNHead(input_shape=shapes, in_features=["res4"], num_classes=3)

        def forward(self, feats):
            return {"sem_seg": self.main(feats), "aux": self.aux(feats)}

    class Loss(torch.nn.Module):
        aux_weight = 0.4

        def forward(self, logits, target):
            return {"loss_ce": F.cross_entropy(logits, target, ignore_index=255)}

    backbone = ResNet(depth=18, width=4, output_stride=8, out_features=["res4", "res5"])
    model = SemanticSegmentor(backbone=backbone, head=AuxHead(backbone.output_shape()), loss=Loss(),
                              pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3, num_classes=3)
    images, targets = torch.rand(1, 3, 24, 24) * 255, torch.randint(0, 3, (1, 24, 24))
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_ce", "loss_ce_aux"}
    # Zero-initialised score layers: both terms are log(3), the auxiliary one weighted by 0.4.
    torch.testing.assert_close(losses["loss_ce"], torch.tensor(3.0).log())
    torch.testing.assert_close(losses["loss_ce_aux"], 0.4 * torch.tensor(3.0).log())
    assert model.eval()(images).shape == (1, 3, 24, 24)
