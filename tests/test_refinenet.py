"""RefineNet head (Lin et al. 2017): block structure, cascade, sizes, parameter count."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import get_cfg
from segkit.layers import ShapeSpec
from segkit.modeling.heads.refinenet import (
    ChainedResidualPooling,
    MultiResolutionFusion,
    RefineNetHead,
    ResidualConvUnit,
)
from segkit.registry import HEAD_REGISTRY


SHAPES = {"res2": ShapeSpec(8, 4), "res3": ShapeSpec(12, 8), "res4": ShapeSpec(16, 16), "res5": ShapeSpec(20, 32)}


def _features(size, shapes=SHAPES, n=2):
    return {k: torch.randn(n, s.channels, -(-size // s.stride), -(-size // s.stride)) for k, s in shapes.items()}


def _identity_conv_(conv: nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        nn.init.dirac_(conv.weight)
        if conv.bias is not None:
            conv.bias.zero_()


def test_rcu_is_relu_conv_relu_conv_plus_identity():
    rcu = ResidualConvUnit(3)
    x = torch.randn(1, 3, 6, 6)
    _identity_conv_(rcu.conv1)
    _identity_conv_(rcu.conv2)
    assert torch.allclose(rcu(x), x + F.relu(x))
    with torch.no_grad():
        rcu.conv2.weight.zero_()
    assert torch.equal(rcu(x), x)
    assert rcu.conv1.bias is not None and rcu.conv2.bias is None  # as the released code


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_crp_chains_pools_and_sums_residually(stages):
    crp = ChainedResidualPooling(2, stages)
    for conv in crp.convs:
        _identity_conv_(conv)
    x = torch.randn(1, 2, 9, 9)
    expected = path = F.relu(x)
    for _ in range(stages):
        path = F.max_pool2d(path, 5, stride=1, padding=2)  # block i pools block i-1's output
        expected = expected + path
    assert torch.allclose(crp(x), expected)
    assert len(crp.convs) == stages and crp.pool.kernel_size == 5


def test_fusion_convs_upsample_to_largest_and_sum():
    fusion = MultiResolutionFusion([3, 5], 3)
    _identity_conv_(fusion.convs[0])
    with torch.no_grad():
        fusion.convs[1].weight.zero_()
        fusion.convs[1].weight[:, :3].copy_(torch.eye(3)[:, :, None, None] * F.pad(torch.ones(1, 1), (1, 1, 1, 1)))
    fine, coarse = torch.randn(1, 3, 8, 10), torch.randn(1, 5, 4, 5)
    expected = fine + F.interpolate(coarse[:, :3], size=(8, 10), mode="bilinear", align_corners=False)
    assert torch.allclose(fusion([fine, coarse]), expected, atol=1e-6)


@pytest.mark.parametrize("size", [64, 65, 33])
def test_head_output_at_finest_stride_for_odd_sizes(size):
    head = RefineNetHead(input_shape=SHAPES, in_features=["res2", "res3", "res4", "res5"], num_classes=5,
                         channels=[16, 8, 8, 8])
    out = head(_features(size))
    assert out.shape == (2, 5, -(-size // 4), -(-size // 4))


def test_cascade_runs_coarsest_first_whatever_the_config_order():
    head = RefineNetHead(input_shape=SHAPES, in_features=["res3", "res5", "res2", "res4"], num_classes=3,
                         channels=[16, 8, 8, 8])
    assert head.in_features == ["res5", "res4", "res3", "res2"]
    # RefineNet-4 reads res5 alone (no fusion); the others fuse two paths.
    assert head.blocks[0].fusion is None and head.blocks[0].reduce.in_channels == 20
    assert [b.reduce.in_channels for b in head.blocks[1:]] == [16, 12, 8]
    assert [len(b.fusion.convs) for b in head.blocks[1:]] == [2, 2, 2]
    assert head.blocks[1].fusion.convs[1].in_channels == 16  # RefineNet-4's 512-wide output in the paper


def test_gradients_reach_every_input_feature():
    head = RefineNetHead(input_shape=SHAPES, in_features=list(SHAPES), num_classes=3, channels=[8, 4, 4, 4])
    feats = {k: v.requires_grad_() for k, v in _features(32).items()}
    head(feats).sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in feats.values())


def test_dropout_only_on_two_coarsest_inputs():
    head = RefineNetHead(input_shape=SHAPES, in_features=list(SHAPES), num_classes=3, channels=[8, 4, 4, 4],
                         dropout=0.5)
    assert head.n_dropout_inputs == 2
    head.eval()
    feats = _features(32, n=1)
    assert torch.equal(head(feats), head(feats))  # eval: deterministic


def test_paper_variant_counts():
    head = RefineNetHead(input_shape=SHAPES, in_features=list(SHAPES), num_classes=3, channels=[8, 4, 4, 4],
                         crp_stages=2, output_rcus=1, extra_rcus=2)
    assert all(len(b.crp.convs) == 2 and len(b.output) == 1 for b in head.blocks)
    assert len(head.extra) == 2


def test_shorter_cascades_take_widths_from_the_coarse_end():
    head = RefineNetHead(input_shape=SHAPES, in_features=["res4", "res5"], num_classes=3, channels=[12, 6, 6, 6])
    assert [b.crp.convs[0].out_channels for b in head.blocks] == [12, 6]
    assert head(_features(64)).shape == (2, 3, 4, 4)  # stride 16


def test_channels_must_cover_features():
    with pytest.raises(ValueError, match="CHANNELS has 2 widths"):
        RefineNetHead(input_shape=SHAPES, in_features=list(SHAPES), num_classes=3, channels=[8, 4])
    with pytest.raises(ValueError, match="not among the backbone"):
        RefineNetHead(input_shape=SHAPES, in_features=["res6"], num_classes=3, channels=[8])


def test_registered_and_built_from_config():
    cfg = get_cfg()
    cfg.MODEL.HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.NUM_CLASSES = 4
    cfg.MODEL.REFINENET.CHANNELS = [12, 6, 6, 6]
    head = HEAD_REGISTRY.get("RefineNetHead")(cfg, SHAPES)
    assert isinstance(head, RefineNetHead)
    assert head.predictor.out_channels == 4 and head.blocks[0].crp.convs[0].out_channels == 12
    assert len(head.blocks[0].crp.convs) == cfg.MODEL.REFINENET.CRP_STAGES == 4


def _resnet101_shapes():
    # He et al. 2016 Table 1: res2..res5 of ResNet-101 have 256/512/1024/2048 channels.
    return {"res2": ShapeSpec(256, 4), "res3": ShapeSpec(512, 8), "res4": ShapeSpec(1024, 16),
            "res5": ShapeSpec(2048, 32)}


CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "voc"


def _meta_model(config: str):
    """The model a config builds, on the meta device (no memory, no init time)."""
    from segkit.config import load_config
    from segkit.modeling import SemanticSegmentor

    cfg = load_config(str(CONFIGS / config), ["MODEL.BACKBONE.PRETRAINED", ""])
    with torch.device("meta"):
        return SemanticSegmentor(**SemanticSegmentor.from_config(cfg))


def test_refinenet101_parameter_count_matches_reference():
    """RefineNet-101 has 118M parameters: Nekrasov, Shen, Reid, "Light-Weight RefineNet for
    Real-Time Semantic Segmentation" (BMVC 2018), Table 1, counting the authors' released
    RefineNet-101 (ResNet-101 trunk without fc + 4-cascade decoder, 21 classes)."""
    model = _meta_model("refinenet_resnet101.yaml")
    assert isinstance(model.head, RefineNetHead)
    assert model.backbone.output_shape() == _resnet101_shapes()
    total = sum(p.numel() for p in model.parameters())
    assert total == pytest.approx(118e6, rel=0.02)
    # The decoder alone: 75.55M (hand count from the released layout: RefineNet-4 43.7M with
    # its 2048->512 reduce conv, RefineNet-3..1 31.9M).
    assert sum(p.numel() for p in model.head.parameters()) == 75_552_277


def test_paper_figure_variant_is_smaller():
    model = _meta_model("refinenet_resnet101_paper.yaml")
    assert len(model.head.blocks[0].crp.convs) == 2 and len(model.head.extra) == 2
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(95.5e6, rel=0.01)


def test_fashion_scenes_cpu_config_trains_one_step():
    from segkit.config import load_config
    from segkit.modeling import build_model

    path = Path(__file__).resolve().parents[1] / "configs" / "fashion_scenes" / "refinenet_resnet18_cpu.yaml"
    model = build_model(load_config(str(path), ["MODEL.DEVICE", "cpu"])).train()
    images = torch.randint(0, 256, (2, 3, 33, 47), dtype=torch.uint8)
    targets = torch.randint(0, 11, (2, 33, 47))
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    model.eval()
    assert model(images).shape == (2, 11, 33, 47)
