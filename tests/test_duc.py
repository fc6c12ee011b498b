"""Dense upsampling convolution head (Wang et al. 2018 sec. 3.1)."""
import pytest
import torch

from segkit.config import get_cfg
from segkit.layers import ShapeSpec
from segkit.modeling.heads.duc import DUCHead
from segkit.registry import HEAD_REGISTRY


SHAPES = {"res5": ShapeSpec(6, 8), "res4": ShapeSpec(4, 8)}


@pytest.mark.parametrize("h, w", [(5, 7), (4, 4), (1, 3)])
def test_output_is_feature_size_times_stride(h, w):
    head = DUCHead(input_shape=SHAPES, in_features=["res5"], num_classes=3, dilations=[1, 2])
    out = head({"res5": torch.randn(2, 6, h, w)})
    assert out.shape == (2, 3, 8 * h, 8 * w)
    assert head.branches[0].out_channels == 3 * 8 * 8 and head.stride == 1


def test_pixel_shuffle_layout():
    """Channel k*d*d + i*d + j at cell (y, x) is class k at pixel (y*d + i, x*d + j)."""
    d, k = 4, 2
    head = DUCHead(input_shape={"f": ShapeSpec(3, d)}, in_features=["f"], num_classes=k, dilations=[1])
    with torch.no_grad():
        head.branches[0].weight.zero_()
        head.branches[0].bias.copy_(torch.arange(k * d * d, dtype=torch.float32))
    out = head({"f": torch.randn(1, 3, 2, 3)})[0]
    for c in range(k):
        for y in range(2 * d):
            for x in range(3 * d):
                assert out[c, y, x] == c * d * d + (y % d) * d + (x % d)


def test_branches_are_summed_with_their_dilations():
    head = DUCHead(input_shape=SHAPES, in_features=["res5"], num_classes=2, dilations=[1, 3], upscale=2)
    assert [b.dilation for b in head.branches] == [(1, 1), (3, 3)]
    assert [b.padding for b in head.branches] == [(1, 1), (3, 3)]
    x = torch.randn(1, 6, 5, 5)
    expected = torch.nn.functional.pixel_shuffle(head.branches[0](x) + head.branches[1](x), 2)
    out = head({"res5": x})
    assert torch.allclose(out, expected) and out.shape == (1, 2, 10, 10)
    assert head.stride == 4  # stride-8 feature upscaled 2x


def test_gradients_reach_the_feature():
    head = DUCHead(input_shape=SHAPES, in_features=["res5"], num_classes=2, dilations=[6, 12, 18, 24])
    x = torch.randn(1, 6, 5, 5, requires_grad=True)
    head({"res5": x}).square().sum().backward()
    assert x.grad.abs().sum() > 0


def test_bad_configs_fail_clearly():
    with pytest.raises(ValueError, match="exactly one"):
        DUCHead(input_shape=SHAPES, in_features=["res4", "res5"], num_classes=2)
    with pytest.raises(ValueError, match="DILATIONS"):
        DUCHead(input_shape=SHAPES, in_features=["res5"], num_classes=2, dilations=[])


def test_registered_and_built_from_config():
    cfg = get_cfg()
    cfg.MODEL.HEAD.IN_FEATURES = ["res5"]
    cfg.MODEL.NUM_CLASSES = 5
    head = HEAD_REGISTRY.get("DUCHead")(cfg, SHAPES)
    assert isinstance(head, DUCHead) and head.upscale == 8
    assert [b.dilation[0] for b in head.branches] == list(cfg.MODEL.DUC.DILATIONS) == [6, 12, 18, 24]
