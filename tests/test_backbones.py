"""Backbones: promised shapes, dilation schedules, freezing and weight loading."""
import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import make_layers

from segkit.config import get_cfg
from segkit.layers.norm import FrozenBatchNorm2d
from segkit.modeling.backbone import Backbone, build_backbone
from segkit.modeling.backbone.resnet import ResNet, stage_dilations
from segkit.modeling.backbone.vgg import VGG, VGG_SPECS
from segkit.modeling.backbone.weights import load_backbone_weights, resolve_weights_file
from segkit.registry import BACKBONE_REGISTRY


# Tiny configurations of every built-in backbone (a new backbone must add one here).
TINY_BACKBONES = {
    "ResNet": [
        {"RESNETS": {"DEPTH": 18, "WIDTH": 8, "OUTPUT_STRIDE": 32}},
        {"RESNETS": {"DEPTH": 18, "WIDTH": 8, "OUTPUT_STRIDE": 8, "OUT_FEATURES": ["stem", "res2", "res5"]}},
        {"RESNETS": {"DEPTH": 50, "WIDTH": 4, "OUTPUT_STRIDE": 16, "MULTI_GRID": [1, 2, 4], "NORM": "FrozenBN"}},
        {"RESNETS": {"DEPTH": 34, "WIDTH": 4, "OUTPUT_STRIDE": 8, "RES4_DILATIONS": [1, 2, 3]}},
    ],
    "VGG": [
        {"VGG": {"WIDTH": 4, "FC_CHANNELS": 16}},
        {"VGG": {"WIDTH": 4, "OUTPUT_STRIDE": 8, "FC": "largefov", "FC_CHANNELS": 16}},
        {"VGG": {"DEPTH": 11, "WIDTH": 4, "OUTPUT_STRIDE": 16, "FC": "none"}},
    ],
    # timm architectures with padded (ceil-sized) convolutions; needs the timm extra.
    "TimmBackbone": [
        {"TIMM": {"NAME": "mobilenetv3_small_050", "OUTPUT_STRIDE": 8, "OUT_FEATURES": ["res2", "res5"]}},
        {"TIMM": {"NAME": "test_efficientnet", "OUTPUT_STRIDE": 32}},
        {"TIMM": {"NAME": "test_resnet", "OUTPUT_STRIDE": 16}},
    ],
}


def _builtin_names(registry):
    return [name for name, _obj, prov in registry.entries() if prov.kind == "builtin"]


def tiny_cfg(name, overrides):
    cfg = get_cfg()
    cfg.merge_from_dict({"MODEL": {"DEVICE": "cpu", **overrides}})
    cfg.MODEL.BACKBONE.NAME = name
    return cfg


def test_every_builtin_backbone_has_a_tiny_case():
    missing = [n for n in _builtin_names(BACKBONE_REGISTRY) if n not in TINY_BACKBONES]
    assert not missing, f"add tiny configurations for {missing} to TINY_BACKBONES"


CASES = [(name, o) for name, overrides in TINY_BACKBONES.items() for o in overrides]


@pytest.mark.parametrize("name,overrides", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_backbone_outputs_match_output_shape(name, overrides):
    backbone = build_backbone(tiny_cfg(name, overrides))
    assert isinstance(backbone, Backbone)
    x = torch.rand(2, 3, 37, 45, requires_grad=False)
    out = backbone(x)
    shapes = backbone.output_shape()
    assert list(out) == list(shapes)
    for key, feat in out.items():
        s = shapes[key]
        # "same" padding and round-up pooling: a stride-s map is ceil(H/s) x ceil(W/s).
        assert feat.shape == (2, s.channels, math.ceil(37 / s.stride), math.ceil(45 / s.stride)), key


@pytest.mark.parametrize("name,overrides", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_gradients_reach_the_first_layer(name, overrides):
    backbone = build_backbone(tiny_cfg(name, overrides))
    out = backbone(torch.rand(1, 3, 33, 35))
    sum(f.square().mean() for f in out.values()).backward()
    first = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "os_,kwargs,expected_strides,expected_rates,expected_entry",
    [
        (32, {}, [1, 2, 2, 2], [[1] * 3, [1] * 4, [1] * 6, [1] * 3], [1, 1, 1, 1]),
        (16, {}, [1, 2, 2, 1], [[1] * 3, [1] * 4, [1] * 6, [2] * 3], [1, 1, 1, 1]),
        (8, {}, [1, 2, 1, 1], [[1] * 3, [1] * 4, [2] * 6, [4] * 3], [1, 1, 1, 2]),  # DeepLab v2
        (16, {"multi_grid": [1, 2, 4]}, [1, 2, 2, 1], [[1] * 3, [1] * 4, [1] * 6, [2, 4, 8]], [1, 1, 1, 2]),
        (8, {"res4_dilations": [1, 2, 5], "res5_dilations": [5, 9, 17]}, [1, 2, 1, 1],
         [[1] * 3, [1] * 4, [1, 2, 5, 1, 2, 5], [5, 9, 17]], [1, 1, 1, 5]),
    ],
)
def test_stage_dilations(os_, kwargs, expected_strides, expected_rates, expected_entry):
    strides, rates, entry = stage_dilations(os_, (3, 4, 6, 3), **kwargs)
    assert strides == expected_strides
    assert rates == expected_rates
    assert entry == expected_entry


def test_dilation_is_applied_to_every_3x3_conv():
    m = ResNet(depth=50, width=4, output_stride=8, res4_dilations=[1, 2, 3])
    res4 = [b.conv2.dilation[0] for b in m.layer3]
    res5 = [b.conv2.dilation[0] for b in m.layer4]
    # res5's first 3x3 held the stride: it keeps res4's rate (2), the rest get 4.
    assert res4 == [1, 2, 3, 1, 2, 3] and res5 == [2, 4, 4]
    basic = ResNet(depth=18, width=4, output_stride=8)
    assert [(b.conv1.dilation[0], b.conv2.dilation[0]) for b in basic.layer4] == [(2, 4), (4, 4)]
    assert all(b.conv2.padding == b.conv2.dilation for b in list(m.layer3) + list(m.layer4))
    assert m.layer3[0].conv2.stride == (1, 1) and m.layer3[0].downsample[0].stride == (1, 1)


def test_stage_dilation_errors():
    with pytest.raises(ValueError, match="8, 16 or 32"):
        stage_dilations(4, (2, 2, 2, 2))
    with pytest.raises(ValueError, match="not both"):
        stage_dilations(8, (2, 2, 2, 2), res5_dilations=[1, 2], multi_grid=[1, 2])


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_resnet_parameters_and_names_match_torchvision(depth):
    with torch.device("meta"):  # shapes only
        ours = ResNet(depth=depth, output_stride=8)
        ref = getattr(torchvision.models, f"resnet{depth}")()
    ref_sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert set(ours.state_dict()) == set(ref_sd)
    assert all(ours.state_dict()[k].shape == v.shape for k, v in ref_sd.items())


def test_narrow_resnet18_for_cpu_is_small():
    n = sum(p.numel() for p in ResNet(depth=18, width=32).parameters())
    assert 2.0e6 < n < 3.0e6


def test_freeze_at_freezes_stem_and_first_stages():
    cfg = tiny_cfg("ResNet", {"RESNETS": {"DEPTH": 18, "WIDTH": 8}})
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    m = build_backbone(cfg)
    assert not m.conv1.weight.requires_grad and isinstance(m.bn1, FrozenBatchNorm2d)
    assert all(not p.requires_grad for p in m.layer1.parameters())
    assert isinstance(m.layer1[0].bn1, FrozenBatchNorm2d)
    assert all(p.requires_grad for p in m.layer2.parameters())
    assert isinstance(m.layer2[0].bn1, nn.BatchNorm2d)


def test_unknown_out_feature_is_reported():
    with pytest.raises(ValueError, match="res6"):
        ResNet(depth=18, width=8, out_features=["res6"])
    with pytest.raises(ValueError, match="fc7"):
        VGG(width=4, fc="none", out_features=["fc7"])


# ---------------------------------------------------------------------------- weights
def test_resnet_loads_torchvision_state_dict(tmp_path):
    ref = torchvision.models.resnet18()
    path = tmp_path / "resnet18-test.pth"
    torch.save(ref.state_dict(), path)
    cfg = tiny_cfg("ResNet", {"RESNETS": {"DEPTH": 18, "WIDTH": 64}, "BACKBONE": {"PRETRAINED": str(path)}})
    m = build_backbone(cfg)
    report = m.load_report
    assert report.skipped == ["fc.bias", "fc.weight"]
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(m.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    ref.eval(), m.eval()
    x = torch.rand(1, 3, 64, 64)
    body = nn.Sequential(*list(ref.children())[:-2])  # up to layer4
    cfg.MODEL.RESNETS.OUTPUT_STRIDE = 32
    m32 = build_backbone(cfg).eval()
    torch.testing.assert_close(m32(x)["res5"], body(x))


def test_hub_cache_lookup_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    target = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    target.write_bytes(b"")
    assert resolve_weights_file("resnet18") == str(target)
    assert resolve_weights_file("resnet18-f37072fd.pth") == str(target)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_weights_file("resnet50")
    (tmp_path / "checkpoints" / "resnet18-0000.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="several files"):
        resolve_weights_file("resnet18")


def test_missing_unexpected_and_mismatched_keys_are_reported(tmp_path):
    m = ResNet(depth=18, width=8, out_features=["res3"])
    sd = dict(m.state_dict())
    sd.pop("layer1.0.conv1.weight")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": sd}, path)
    report = load_backbone_weights(m, str(path))
    assert report.missing == ["layer1.0.conv1.weight"]
    assert report.unexpected == ["extra.weight"]
    wide = ResNet(depth=18, width=16, out_features=["res3"])
    with pytest.raises(ValueError, match="do not fit"):
        load_backbone_weights(wide, str(path))


def _tiny_torchvision_vgg_state_dict(depth, width, fc_channels):
    """A state dict laid out exactly like torchvision's VGG (features from its own
    ``make_layers``), narrow enough for a test."""
    layout = []
    for b, n in enumerate(VGG_SPECS[depth]):
        layout += [width * min(2**b, 8)] * n + ["M"]
    features = make_layers(layout)
    classifier = nn.Sequential(
        nn.Linear(8 * width * 7 * 7, fc_channels), nn.ReLU(), nn.Dropout(),
        nn.Linear(fc_channels, fc_channels), nn.ReLU(), nn.Dropout(),
        nn.Linear(fc_channels, 10),
    )
    ref = nn.Module()
    ref.features, ref.avgpool, ref.classifier = features, nn.AdaptiveAvgPool2d(7), classifier
    return ref


def test_vgg_fc_layers_become_convolutions(tmp_path):
    # FCN sec. 3.1: with fc6 as a 7x7 convolution, the score at the centre of a
    # 224x224 input equals the classification net's fc7 on that input.
    ref = _tiny_torchvision_vgg_state_dict(16, 4, 24).eval()
    path = tmp_path / "vgg16-tiny.pth"
    torch.save(ref.state_dict(), path)
    cfg = tiny_cfg("VGG", {"VGG": {"WIDTH": 4, "FC_CHANNELS": 24}, "BACKBONE": {"PRETRAINED": str(path)}})
    m = build_backbone(cfg).eval()
    assert m.load_report.missing == [] and m.load_report.unexpected == []
    assert m.load_report.skipped == ["classifier.6.bias", "classifier.6.weight"]
    x = torch.rand(1, 3, 224, 224)
    expected = ref.classifier[:5](torch.flatten(ref.avgpool(ref.features(x)), 1))
    torch.testing.assert_close(m(x)["fc7"][:, :, 3, 3], expected, rtol=1e-4, atol=1e-5)


def test_vgg_largefov_decimates_fc_weights(tmp_path):
    # DeepLab v1 sec. 4.1: fc6 7x7x4096 -> 3x3x1024 by decimation (every 3rd tap, every 4th filter).
    ref = _tiny_torchvision_vgg_state_dict(16, 4, 32)
    path = tmp_path / "vgg16-tiny.pth"
    torch.save(ref.state_dict(), path)
    cfg = tiny_cfg("VGG", {"VGG": {"WIDTH": 4, "FC_CHANNELS": 8, "FC": "largefov", "OUTPUT_STRIDE": 8},
                           "BACKBONE": {"PRETRAINED": str(path)}})
    m = build_backbone(cfg)
    fc6 = ref.classifier[0].weight.view(32, 32, 7, 7)
    assert torch.equal(m.fc6.weight, fc6[::4, :, ::3, ::3])
    assert torch.equal(m.fc6.bias, ref.classifier[0].bias[::4])
    assert torch.equal(m.fc7.weight[:, :, 0, 0], ref.classifier[3].weight[::4, ::4])
    assert m.fc6.dilation == (12, 12) and m.conv5_1.dilation == (2, 2)
    assert torch.equal(m.conv4_2.weight, ref.features[19].weight)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="another architecture"):
        load_backbone_weights(ResNet(depth=18, width=8), str(path))


def test_vgg_freeze_at_freezes_the_first_blocks():
    cfg = tiny_cfg("VGG", {"VGG": {"WIDTH": 4, "FC": "none"}})
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    m = build_backbone(cfg)
    frozen = sorted({n.split("_")[0] for n, p in m.named_parameters() if not p.requires_grad})
    assert frozen == ["conv1", "conv2"]
    assert m.conv3_1.weight.requires_grad
