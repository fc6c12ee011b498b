"""segkit.testing catches each defect of issue 11 when a throwaway component reintroduces it."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import configurable
from segkit.layers import ShapeSpec
from segkit.modeling.backbone import Backbone
from segkit.modeling.heads import SegmentationHead
from segkit.registry import LOSS_REGISTRY, POSTPROCESSOR_REGISTRY
from segkit.testing import (
    ConformanceError, check_backbone, check_component, check_head, check_loss, check_meta_arch,
    check_optimizer, check_postprocessor, check_transform, small_cfg,
)
from test_plugins import make_dist, site  # noqa: F401  (fixture)


# ------------------------------------------------------------------ losses
class GoodLoss(nn.Module):
    def __init__(self, ignore_index=255):
        super().__init__()
        self.ignore_index = ignore_index

    @classmethod
    def from_config(cls, cfg, **args):  # the docs' pattern, without @configurable
        return {"ignore_index": cfg.MODEL.IGNORE_VALUE, **args}

    def forward(self, logits, target):
        valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index)


class CfgPositionalLoss(GoodLoss):
    """The old contract: the config as first constructor argument, no from_config."""

    from_config = None

    def __init__(self, cfg, weight=1.0):
        super().__init__(cfg.MODEL.IGNORE_VALUE)


class ClampingLoss(GoodLoss):
    """Ignored pixels leak into the loss (target clamped into range)."""

    def forward(self, logits, target):
        return F.cross_entropy(logits, target.clamp(max=logits.shape[1] - 1))


class NanWhenEmptyLoss(GoodLoss):
    """A mean over no pixels: NaN when everything is ignored."""

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="mean")


class DetachedLoss(GoodLoss):
    def forward(self, logits, target):
        return super().forward(logits.detach(), target) + 0 * logits.sum().detach()


def test_good_loss_passes_and_loss_registry_check_is_reachable_by_name():
    loss = check_loss(GoodLoss)
    assert loss.ignore_index == 255
    LOSS_REGISTRY.register(GoodLoss, name="_KitGoodLoss")
    try:
        assert isinstance(check_component(LOSS_REGISTRY, "_KitGoodLoss"), GoodLoss)
    finally:
        LOSS_REGISTRY.unregister("_KitGoodLoss")


@pytest.mark.parametrize("cls,message", [
    (CfgPositionalLoss, r"cannot be built.*never the config.*from_config"),
    (ClampingLoss, r"gradient to pixels labelled 255"),
    (NanWhenEmptyLoss, r"when every pixel is ignored.*Return 0"),
    (DetachedLoss, r"no \(or non-finite\) gradient"),
])
def test_kit_catches_broken_losses(cls, message):
    with pytest.raises(ConformanceError, match=message):
        check_loss(cls)


# ------------------------------------------------------------------ post-processors
class Sharpen:
    @configurable
    def __init__(self, power=2.0):
        self.power = power

    @classmethod
    def from_config(cls, cfg):
        return {"power": 2.0}

    def __call__(self, probs, images):
        p = probs ** self.power
        return p / p.sum(1, keepdim=True)


class InstanceFromConfig(Sharpen):
    """The old DenseCRF pattern: from_config returns an instance."""

    @classmethod
    def from_config(cls, cfg):
        return cls(power=2.0)


class Unnormalised(Sharpen):
    def __call__(self, probs, images):
        return probs ** self.power


def test_kit_passes_a_configurable_postprocessor_and_catches_instance_from_config():
    assert isinstance(check_postprocessor(Sharpen), Sharpen)
    with pytest.raises(ConformanceError, match=r"from_config returned InstanceFromConfig.*dict"):
        check_postprocessor(InstanceFromConfig)
    with pytest.raises(ConformanceError, match="not probabilities"):
        check_component(POSTPROCESSOR_REGISTRY, Unnormalised)


# ------------------------------------------------------------------ transforms
from test_extension_contract import PadBottom  # noqa: E402 - the same plugin-style DualTransform


class ZeroPadMask(PadBottom):
    """Pads the mask with a hard-coded 0 (a real class)."""

    def apply_to_mask(self, mask, **params):
        return np.pad(mask, ((0, self.pad), (0, 0)))


class MisalignedPad(PadBottom):
    def apply_to_mask(self, mask, **params):
        return mask


def test_kit_passes_a_transform_with_its_own_fill_mask_default():
    check_transform(PadBottom)  # segkit gives fill_mask the ignore value


@pytest.mark.parametrize("cls,message", [
    (ZeroPadMask, r"invented mask label\(s\) \[0\]"),
    (MisalignedPad, r"image .* and mask .* differ in size"),
])
def test_kit_catches_broken_transforms(cls, message):
    with pytest.raises(ConformanceError, match=message):
        check_transform(cls)


# ------------------------------------------------------------------ models
class TinyBackbone(Backbone):
    def __init__(self, channels=6, lie_channels=False, lie_stride=False):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=4, padding=1)
        self.channels, self.lie_channels, self.lie_stride = channels, lie_channels, lie_stride

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {}

    def forward(self, x):
        return {"s4": self.conv(x)}

    def output_shape(self):
        return {"s4": ShapeSpec(channels=self.channels + self.lie_channels, stride=8 if self.lie_stride else 4)}


class LyingChannels(TinyBackbone):
    @classmethod
    def from_config(cls, cfg, input_shape):
        return {"lie_channels": True}


class LyingStride(TinyBackbone):
    @classmethod
    def from_config(cls, cfg, input_shape):
        return {"lie_stride": True}


def test_kit_checks_backbone_promises():
    check_backbone(TinyBackbone)
    with pytest.raises(ConformanceError, match="promises 7 channels"):
        check_backbone(LyingChannels)
    with pytest.raises(ConformanceError, match="promised stride 8"):
        check_backbone(LyingStride)


class TinyHead(SegmentationHead):
    @configurable
    def __init__(self, *, input_shape, in_features, num_classes, wrong_classes=False, upsample=False):
        super().__init__(input_shape=input_shape, in_features=in_features, num_classes=num_classes)
        self.classifier = nn.Conv2d(self.in_channels(), num_classes + int(wrong_classes), 1)
        self.upsample = upsample

    def forward(self, features):
        out = self.classifier(features[self.in_features[0]])
        return F.interpolate(out, scale_factor=2.0) if self.upsample else out


class WrongClasses(TinyHead):
    @classmethod
    def from_config(cls, cfg, input_shape):
        return {**super().from_config(cfg, input_shape), "wrong_classes": True}


class WrongStride(TinyHead):
    @classmethod
    def from_config(cls, cfg, input_shape):
        return {**super().from_config(cfg, input_shape), "upsample": True}


def test_kit_checks_head_output_against_num_classes_and_stride():
    head = check_head(TinyHead)
    assert head.stride == 8 and head.in_features == ["res5"]
    with pytest.raises(ConformanceError, match=r"expected \(2, 5, h, w\)"):
        check_head(WrongClasses)
    with pytest.raises(ConformanceError, match="stride 8 promises"):
        check_head(WrongStride)


class CfgMetaArch(nn.Module):
    """The old special case: SemanticSegmentor-like class taking the config, no from_config."""

    def __init__(self, cfg):
        super().__init__()


def test_kit_catches_a_meta_arch_that_takes_the_config_positionally():
    with pytest.raises(ConformanceError, match="cannot be built"):
        check_meta_arch(CfgMetaArch)


def test_kit_catches_an_optimizer_that_overrides_group_learning_rates():
    @configurable(from_config=lambda cfg, params: {"params": params, "lr": cfg.SOLVER.BASE_LR})
    def flat_sgd(params, lr):
        return torch.optim.SGD([p for g in params for p in g["params"]], lr=lr)

    with pytest.raises(ConformanceError, match="changed the groups' learning rates"):
        check_optimizer(flat_sgd, small_cfg())


# ------------------------------------------------------------------ from an installed throwaway plugin
def test_kit_names_the_plugin_distribution_of_a_broken_component(site):  # noqa: F811
    from segkit import plugins

    make_dist(site, "broken-loss-dist", "0.1", {"broken": "broken_loss_mod"}, {"broken_loss_mod": """
        import torch.nn.functional as F
        from torch import nn
        from segkit.registry import LOSS_REGISTRY

        @LOSS_REGISTRY.register()
        class OldStyleLoss(nn.Module):
            def __init__(self, cfg, weight=1.0):  # the config positionally: the old, broken contract
                super().__init__()
                self.ignore_index = cfg.MODEL.IGNORE_VALUE

            def forward(self, logits, target):
                return F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        """})
    plugins.load_plugins()
    with pytest.raises(ConformanceError, match=r"plugin: broken-loss-dist 0\.1 .*never the config"):
        check_loss("OldStyleLoss")
