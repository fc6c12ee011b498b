"""Heads: every built-in head at the input size with gradients; FCN fusion and DeepLab v2 details."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import get_cfg
from segkit.layers import ShapeSpec
from segkit.modeling import build_backbone, build_head, build_model
from segkit.modeling.heads import DeepLabV2Head, FCNHead
from segkit.registry import HEAD_REGISTRY, RegistryKeyError


RESNET = {"BACKBONE": {"NAME": "ResNet"}, "RESNETS": {"DEPTH": 18, "WIDTH": 8, "OUTPUT_STRIDE": 8}}
RESNET32 = {"BACKBONE": {"NAME": "ResNet"}, "RESNETS": {"DEPTH": 18, "WIDTH": 8, "OUTPUT_STRIDE": 32}}
VGG = {"BACKBONE": {"NAME": "VGG"}, "VGG": {"WIDTH": 4, "FC_CHANNELS": 16}}
VGG_DEEPLAB = {"BACKBONE": {"NAME": "VGG"}, "VGG": {"WIDTH": 4, "OUTPUT_STRIDE": 8, "FC": "none"}}

# Tiny configurations of every built-in head (a new head must add one here).
TINY_HEADS = {
    "FCNHead": [
        {**VGG, "HEAD": {"IN_FEATURES": ["fc7"]}},  # FCN-32s
        {**VGG, "HEAD": {"IN_FEATURES": ["pool3", "pool4", "fc7"]}},  # FCN-8s
        {**RESNET, "HEAD": {"IN_FEATURES": ["res5"]}, "FCN": {"HIDDEN_CHANNELS": 8}},  # torchvision-style
        {**RESNET32, "HEAD": {"IN_FEATURES": ["res2", "res3", "res4", "res5"]}},
    ],
    "DeepLabV2Head": [
        {**RESNET, "HEAD": {"NAME": "DeepLabV2Head", "IN_FEATURES": ["res5"]}},
        {**VGG_DEEPLAB, "HEAD": {"NAME": "DeepLabV2Head", "IN_FEATURES": ["pool5"]},
         "DEEPLAB": {"RATES": [2, 4, 8, 12], "BRANCH_CHANNELS": 8}},
    ],
    "RefineNetHead": [
        {**RESNET32, "HEAD": {"NAME": "RefineNetHead", "IN_FEATURES": ["res2", "res3", "res4", "res5"]},
         "REFINENET": {"CHANNELS": [16, 8, 8, 8]}},
    ],
    "DUCHead": [
        {**RESNET, "HEAD": {"NAME": "DUCHead", "IN_FEATURES": ["res5"]}},
    ],
}


def tiny_cfg(overrides, num_classes=5):
    cfg = get_cfg()
    model = {k: v for k, v in overrides.items()}
    head = dict(model.pop("HEAD"))
    head.setdefault("NAME", "FCNHead")
    cfg.merge_from_dict({"MODEL": {**model, "HEAD": head, "NUM_CLASSES": num_classes, "DEVICE": "cpu"}})
    return cfg


def _builtin_heads():
    return [name for name, _obj, prov in HEAD_REGISTRY.entries() if prov.kind == "builtin"]


def test_every_builtin_head_has_a_tiny_case():
    missing = [n for n in _builtin_heads() if n not in TINY_HEADS]
    assert not missing, f"add tiny configurations for {missing} to TINY_HEADS"


CASES = [(name, c) for name, cases in TINY_HEADS.items() for c in cases]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CASES)]


def _unzero(module):
    # Zero-initialised score layers (FCN sec. 4.3) block gradients at step 0;
    # give them values so the test sees whether the graph connects.
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad and p.dim() > 1 and not p.any():
                p.normal_(std=0.1)


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_head_output_size_and_gradient(name, overrides):
    cfg = tiny_cfg(overrides)
    if name == "RefineNetHead" and "REFINENET" not in cfg.MODEL:
        pytest.skip("RefineNet keys not in this checkout")
    model = build_model(cfg)
    assert cfg.MODEL.HEAD.NAME == name
    _unzero(model.head)
    model.eval()
    images = torch.randint(0, 256, (2, 3, 37, 43), dtype=torch.uint8)
    logits = model(images)
    assert logits.shape == (2, 5, 37, 43)  # odd sizes come back at the input size
    model.train()
    losses = model(images, torch.randint(0, 5, (2, 37, 43)))
    sum(losses.values()).backward()
    first = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_head_logits_at_its_stride(name, overrides):
    cfg = tiny_cfg(overrides)
    backbone = build_backbone(cfg)
    head = build_head(cfg, backbone.output_shape())
    feats = backbone(torch.rand(1, 3, 64, 96))
    out = head(feats)
    assert out.shape == (1, 5, 64 // head.stride, 96 // head.stride)


# ---------------------------------------------------------------------------- FCN
def _fcn_shapes():
    return {"pool3": ShapeSpec(6, 8), "pool4": ShapeSpec(7, 16), "fc7": ShapeSpec(9, 32)}


def test_fcn_score_layers_start_at_zero_and_upsampling_is_learnable():
    head = FCNHead(input_shape=_fcn_shapes(), in_features=["pool3", "pool4", "fc7"], num_classes=3)
    for score in head.scores.values():
        assert not score[-1].weight.any() and not score[-1].bias.any()  # FCN sec. 4.3
    assert head.upsample["pool4"].deconv.weight.requires_grad
    fixed = FCNHead(input_shape=_fcn_shapes(), in_features=["pool4", "fc7"], num_classes=3, learn_upsample=False)
    assert not fixed.upsample["pool4"].deconv.weight.requires_grad
    assert head.stride == 8 and fixed.stride == 16


def test_fcn8s_fusion_is_upsample_and_sum_aligned_at_odd_sizes():
    # FCN sec. 4.2: score_fr -> x2 -> + score_pool4 -> x2 -> + score_pool3 (crop to the finer map).
    head = FCNHead(input_shape=_fcn_shapes(), in_features=["pool3", "pool4", "fc7"], num_classes=3)
    _unzero(head)
    feats = {"pool3": torch.rand(1, 6, 9, 11), "pool4": torch.rand(1, 7, 5, 6), "fc7": torch.rand(1, 9, 3, 3)}
    s32 = head.scores["fc7"](feats["fc7"])
    up = lambda x, size: F.interpolate(  # noqa: E731 - bilinear at the exact factor, clamped borders
        F.pad(x, (0, 1, 0, 1), mode="replicate"), scale_factor=2, mode="bilinear", align_corners=False
    )[..., : size[0], : size[1]]
    s16 = up(s32, (5, 6)) + head.scores["pool4"](feats["pool4"])
    s8 = up(s16, (9, 11)) + head.scores["pool3"](feats["pool3"])
    torch.testing.assert_close(head(feats), s8)


def test_fcn_feature_order_is_checked():
    with pytest.raises(ValueError, match="fine to coarse"):
        FCNHead(input_shape=_fcn_shapes(), in_features=["fc7", "pool4"], num_classes=3)
    with pytest.raises(ValueError, match="pool5"):
        FCNHead(input_shape=_fcn_shapes(), in_features=["pool5"], num_classes=3)


# ---------------------------------------------------------------------------- DeepLab v2
@pytest.mark.parametrize("rates", [[12], [2, 4, 8, 12], [6, 12, 18, 24]])
def test_deeplab_branches_are_summed(rates):
    head = DeepLabV2Head(input_shape={"res5": ShapeSpec(6, 8)}, in_features=["res5"], num_classes=3, rates=rates)
    x = torch.rand(1, 6, 9, 7)
    convs = list(head.branches)
    assert [c.dilation[0] for c in convs] == rates and [c.padding[0] for c in convs] == rates
    expected = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r) for c, r in zip(convs, rates))
    torch.testing.assert_close(head({"res5": x}), expected)


def test_deeplab_vgg_branch_is_fc6_fc7_fc8():
    head = DeepLabV2Head(
        input_shape={"pool5": ShapeSpec(8, 8)}, in_features=["pool5"], num_classes=3, rates=[12], branch_channels=16
    )
    convs = [m for m in head.branches[0] if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(16, 8, 3, 3), (16, 16, 1, 1), (3, 16, 1, 1)]
    assert convs[0].dilation == (12, 12)
    assert sum(isinstance(m, nn.Dropout) for m in head.branches[0]) == 2


def test_deeplab_reads_one_map():
    shapes = {"res4": ShapeSpec(4, 8), "res5": ShapeSpec(6, 8)}
    with pytest.raises(ValueError, match="one map"):
        DeepLabV2Head(input_shape=shapes, in_features=["res4", "res5"], num_classes=3)


# ---------------------------------------------------------------------------- builder
def test_unknown_head_suggests_the_nearest():
    cfg = tiny_cfg({**RESNET, "HEAD": {"NAME": "FCNhead"}})
    with pytest.raises(RegistryKeyError, match="Did you mean 'FCNHead'"):
        build_head(cfg, {"res5": ShapeSpec(8, 8)})


def test_head_builder_must_return_a_module():
    # Registered under the shared rule: no from_config, so it receives its inputs only.
    HEAD_REGISTRY.register(lambda input_shape: object(), name="_NotAModuleHead")
    try:
        cfg = tiny_cfg({**RESNET, "HEAD": {"NAME": "_NotAModuleHead"}})
        with pytest.raises(TypeError, match="not a torch.nn.Module"):
            build_head(cfg, {"res5": ShapeSpec(8, 8)})
    finally:
        HEAD_REGISTRY.unregister("_NotAModuleHead")


def test_missing_in_feature_names_what_exists():
    cfg = tiny_cfg({**RESNET, "HEAD": {"IN_FEATURES": ["pool4"]}})
    with pytest.raises(ValueError, match=r"pool4.*Available: \['res5'\]"):
        build_head(cfg, {"res5": ShapeSpec(8, 8)})


def test_fcn_fusion_of_equal_strides_has_no_idle_parameters():
    # res4 and res5 of a dilated ResNet share stride 8: summed directly, and every
    # parameter is used (DistributedDataParallel fails on unused ones).
    shapes = {"res4": ShapeSpec(4, 8), "res5": ShapeSpec(6, 8)}
    head = FCNHead(input_shape=shapes, in_features=["res4", "res5"], num_classes=3)
    _unzero(head)
    out = head({"res4": torch.rand(1, 4, 5, 7), "res5": torch.rand(1, 6, 5, 7)})
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
