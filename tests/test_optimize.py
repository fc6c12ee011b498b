"""optimize_for_inference: batch-norm folding and channels-last keep outputs (to 1e-5)."""
import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from segkit.modeling.optimize import fold_batchnorm, freeze_traced, optimize_for_inference


def _randomise_bn_(model):
    for m in model.modules():
        if hasattr(m, "running_var") and m.running_var is not None:
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.3, 3)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN + identity, like a ResNet basic block."""

    def __init__(self, c, norm=nn.BatchNorm2d, bias=False):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=bias), norm(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=2, dilation=2, bias=bias), norm(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class Untraceable(nn.Module):
    """A data-dependent branch stops fx at this level; its children still fold."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = Block(4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        if x.max() > 1:  # value-dependent control flow
            x = x / 255
        return {"out": self.head(self.block(self.stem(x)))}


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize("norm, bias", [(nn.BatchNorm2d, False), (nn.BatchNorm2d, True), (FrozenBatchNorm2d, False)])
def test_folding_is_exact_and_removes_every_bn(norm, bias):
    model = _randomise_bn_(nn.Sequential(Block(3, norm, bias), Block(3, norm, bias))).eval()
    x = torch.randn(2, 3, 11, 9)
    expected = model(x)
    fast = optimize_for_inference(model, channels_last=False)
    assert fast.folded_batchnorms == 4 and _count(fast, norm) == 0
    assert torch.allclose(fast(x), expected, atol=1e-5, rtol=1e-5)
    assert _count(model, norm) == 4  # the original is untouched


def test_untraceable_parent_folds_children_and_keeps_names():
    model = _randomise_bn_(Untraceable()).eval()
    x = torch.rand(1, 3, 16, 16) * 255
    expected = model(x)["out"]
    fast = optimize_for_inference(model)
    assert fast.folded_batchnorms == 3 and _count(fast, nn.BatchNorm2d) == 0
    assert torch.allclose(fast(x)["out"], expected, atol=1e-5, rtol=1e-5)
    assert {k for k in fast.state_dict()} >= {"stem.0.weight", "stem.0.bias", "block.conv1.weight"}


class SharedOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y  # y is read twice: folding would change the second use


def test_conv_output_read_elsewhere_is_not_folded():
    model = _randomise_bn_(SharedOutput()).eval()
    x = torch.randn(1, 2, 5, 5)
    fast = optimize_for_inference(model)
    assert fast.folded_batchnorms == 0 and isinstance(fast.bn, nn.BatchNorm2d)
    assert torch.allclose(fast(x), model(x), atol=1e-6)


def test_channels_last_weights_and_same_outputs():
    model = _randomise_bn_(nn.Sequential(Block(4), nn.Conv2d(4, 3, 1))).eval()
    x = torch.randn(1, 4, 7, 8)
    fast = optimize_for_inference(model, fold_bn=False)
    assert fast[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.folded_batchnorms == 0 and _count(fast, nn.BatchNorm2d) == 2
    assert torch.allclose(fast(x), model(x), atol=1e-5)


def test_folding_needs_eval_mode_and_inplace_modifies():
    model = _randomise_bn_(Block(2))
    with pytest.raises(RuntimeError, match="eval"):
        fold_batchnorm(model)
    same = optimize_for_inference(model, inplace=True, channels_last=False)
    assert same is model and not model.training and isinstance(model.bn1, nn.Identity)


def test_torchvision_resnet_folds_all_20_batchnorms():
    torchvision = pytest.importorskip("torchvision")
    model = _randomise_bn_(torchvision.models.resnet18(num_classes=4)).eval()
    x = torch.randn(1, 3, 32, 32)
    fast = optimize_for_inference(model)
    assert fast.folded_batchnorms == 20 and _count(fast, nn.BatchNorm2d) == 0
    expected = model(x)
    assert torch.allclose(fast(x), expected, atol=1e-4 * expected.abs().max().item())


def test_freeze_traced_matches_eager():
    model = _randomise_bn_(nn.Sequential(Block(3), nn.Conv2d(3, 2, 1))).eval()
    x = torch.randn(1, 3, 12, 10)
    frozen = freeze_traced(model, x)
    assert isinstance(frozen, torch.jit.ScriptModule)
    assert torch.allclose(frozen(x), model(x), atol=1e-5)


def test_segkit_model_optimized_matches_eager():
    from segkit.config import get_cfg
    from segkit.modeling import build_model

    cfg = get_cfg()
    stages = '["res2", "res3", "res4", "res5"]'
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.WIDTH", "8",
                         "MODEL.RESNETS.OUT_FEATURES", stages, "MODEL.HEAD.NAME", "RefineNetHead",
                         "MODEL.HEAD.IN_FEATURES", stages, "MODEL.REFINENET.CHANNELS", "[16, 8, 8, 8]",
                         "MODEL.NUM_CLASSES", "3"])
    model = _randomise_bn_(build_model(cfg)).eval()
    images = torch.randint(0, 256, (1, 3, 40, 36), dtype=torch.uint8)
    fast = optimize_for_inference(model)
    assert fast.folded_batchnorms == 20 and _count(fast, nn.BatchNorm2d) == 0  # ResNet-18: 20 BNs
    assert torch.allclose(fast(images), model(images), atol=1e-5, rtol=1e-5)
