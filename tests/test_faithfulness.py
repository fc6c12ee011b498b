"""Faithfulness to the papers: rarefaction, bilinear deconvolution, parameter counts."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import get_cfg
from segkit.layers.upsample import BilinearDeconv, bilinear_kernel
from segkit.modeling import build_model
from segkit.modeling.backbone import ResNet


# ---------------------------------------------------------------------------- FCN sec. 3.2
class _SmallNet(nn.Module):
    """conv 3x3 -> ReLU -> max pool (2, stride s) -> conv 3x3: a net with output stride s.

    ``rarefy()`` gives the same weights with the pool's stride removed and the
    following filter dilated by s ("filter rarefaction", FCN sec. 3.2).
    """

    def __init__(self, stride: int = 2, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3)
        self.pool = nn.MaxPool2d(2, stride=stride)
        self.conv2 = nn.Conv2d(3, 4, 3, dilation=dilation)

    def forward(self, x):
        return self.conv2(self.pool(torch.relu(self.conv1(x))))

    def rarefy(self, s: int) -> "_SmallNet":
        dense = _SmallNet(stride=1, dilation=s).double()
        dense.load_state_dict(self.state_dict())
        return dense


def _shift_and_stitch(net: nn.Module, x: torch.Tensor, f: int) -> torch.Tensor:
    """FCN sec. 3.2: run the net on the input shifted by every (dy, dx) in [0, f)^2 and
    interleave the outputs so that each lands on the pixel its receptive field is centred on."""
    outs = {(dy, dx): net(x[..., dy:, dx:]) for dy in range(f) for dx in range(f)}
    h = max(o.shape[-2] * f for o in outs.values())
    w = max(o.shape[-1] * f for o in outs.values())
    full = torch.full((x.shape[0], outs[0, 0].shape[1], h, w), float("nan"), dtype=x.dtype)
    for (dy, dx), o in outs.items():
        full[..., dy::f, dx::f][..., : o.shape[-2], : o.shape[-1]] = o
    return full


@pytest.mark.parametrize("size", [(21, 21), (22, 19)])
def test_shift_and_stitch_equals_filter_rarefaction(size):
    net = _SmallNet().double()
    # Small integer weights and inputs: every sum is exact in float64, so the two
    # tricks must agree bit for bit, not merely approximately.
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randint(-3, 4, p.shape))
    x = torch.randint(0, 5, (1, 2, *size)).double()
    stitched = _shift_and_stitch(net, x, 2)
    dense = net.rarefy(2)(x)
    h, w = dense.shape[-2:]
    assert stitched.shape[-2] >= h and stitched.shape[-1] >= w
    assert torch.equal(stitched[..., :h, :w], dense)
    # ... and the stride-2 net's output is every second pixel of it.
    assert torch.equal(net(x), dense[..., ::2, ::2][..., : net(x).shape[-2], : net(x).shape[-1]])


@pytest.mark.parametrize("os_", [16, 8])
def test_dilated_resnet_computes_the_strided_resnet_densely(os_):
    # DeepLab v2 sec. 3.1 / FCN sec. 3.2: removing strides and dilating what follows
    # evaluates the same network at every position. Same weights, eval-mode BN.
    ref = ResNet(depth=18, width=4, output_stride=32).double().eval()
    dense = ResNet(depth=18, width=4, output_stride=os_).double().eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(std=0.3)
    dense.load_state_dict(ref.state_dict())
    x = torch.rand(1, 3, 67, 75, dtype=torch.float64)
    step = 32 // os_
    for name in ("res4", "res5"):
        a, b = ref(x)[name], dense(x)[name]
        sub = step if name == "res5" else max(step // 2, 1)
        torch.testing.assert_close(b[..., ::sub, ::sub], a, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------- FCN sec. 3.3
@pytest.mark.parametrize("factor", [2, 3, 4, 8, 16, 32])
def test_bilinear_initialised_deconvolution_equals_bilinear_interpolation(factor):
    x = torch.rand(2, 3, 5, 7)
    up = BilinearDeconv(3, factor)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    # Equal everywhere, borders included, up to float32 rounding of the kernel taps.
    torch.testing.assert_close(up(x), expected, rtol=0, atol=1e-6)
    # A deconvolution with one output per class: channels are not mixed at initialisation.
    w = up.deconv.weight
    assert torch.equal(w[0, 0], bilinear_kernel(factor)) and not w[0, 1].any()


def test_bilinear_kernel_matches_fcn_reference_values():
    # surgery.upsample_filt(4) in the FCN reference code: [0.25, 0.75, 0.75, 0.25] outer itself.
    k = bilinear_kernel(2)
    row = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(k, row[:, None] * row[None, :])


# ---------------------------------------------------------------------------- parameter counts
def _count_params(overrides):
    cfg = get_cfg()
    cfg.merge_from_dict({"MODEL": {"DEVICE": "meta", "NUM_CLASSES": 21, **overrides}})
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(cfg)
    return sum(p.numel() for p in model.parameters())


PAPER_COUNTS = [
    pytest.param(
        {"BACKBONE": {"NAME": "VGG"}, "HEAD": {"NAME": "FCNHead", "IN_FEATURES": ["pool3", "pool4", "fc7"]}},
        134e6,
        id="FCN-8s VGG-16: 134M, FCN paper (Long et al. CVPR 2015) Table 1 'num. params' of FCN-VGG16",
    ),
    pytest.param(
        {"BACKBONE": {"NAME": "VGG"}, "HEAD": {"NAME": "FCNHead", "IN_FEATURES": ["fc7"]}},
        134e6,
        id="FCN-32s VGG-16: 134M, FCN paper Table 1",
    ),
    pytest.param(
        {"BACKBONE": {"NAME": "ResNet"}, "RESNETS": {"DEPTH": 101, "OUTPUT_STRIDE": 8, "NORM": "FrozenBN"},
         "HEAD": {"NAME": "DeepLabV2Head", "IN_FEATURES": ["res5"]},
         "DEEPLAB": {"RATES": [6, 12, 18, 24], "BRANCH_CHANNELS": 0}},
        44.0e6,
        id="DeepLab v2 ResNet-101 ASPP-L, 21 classes: 44.0M, the released DeepLab v2 ResNet-101 "
        "prototxt (four 3x3 fc1_c0..c3 branches 2048->21) as counted in issue 8",
    ),
    pytest.param(
        {"BACKBONE": {"NAME": "VGG"}, "VGG": {"OUTPUT_STRIDE": 8, "FC": "none"},
         "HEAD": {"NAME": "DeepLabV2Head", "IN_FEATURES": ["pool5"]},
         "DEEPLAB": {"RATES": [12], "BRANCH_CHANNELS": 1024}},
        20.5e6,
        id="DeepLab-LargeFOV VGG-16: 20.5M, DeepLab v1 paper (Chen et al. ICLR 2015) Table 2",
    ),
]


@pytest.mark.parametrize("overrides,expected", PAPER_COUNTS)
def test_parameter_count_matches_the_paper(overrides, expected):
    n = _count_params(overrides)
    assert abs(n - expected) / expected < 0.02, f"{n / 1e6:.2f}M vs {expected / 1e6:.1f}M"


# ---------------------------------------------------------------------------- same architecture as torchvision
def test_fcn_head_on_dilated_resnet50_is_torchvisions_fcn_resnet50():
    # configs/voc/fcn_resnet50_dilated.yaml claims torchvision's fcn_resnet50 architecture
    # (what benchmarks/models.py times against): with torchvision's weights copied in,
    # both networks must compute the same logits.
    from torchvision.models.segmentation import fcn_resnet50

    ref = fcn_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=False).eval()
    cfg = get_cfg()
    cfg.merge_from_dict({"MODEL": {
        "DEVICE": "cpu", "NUM_CLASSES": 5,
        "RESNETS": {"DEPTH": 50, "OUTPUT_STRIDE": 8, "OUT_FEATURES": ["res5"]},
        "HEAD": {"NAME": "FCNHead", "IN_FEATURES": ["res5"]},
        "FCN": {"HIDDEN_CHANNELS": 512, "DROPOUT": 0.1, "NORM": "BN"},
    }})
    ours = build_model(cfg).eval()
    sd = {k.replace("classifier.", "head.scores.res5.", 1): v for k, v in ref.state_dict().items()}
    result = ours.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    images = torch.randint(0, 256, (1, 3, 33, 37), dtype=torch.uint8)
    mean, std = ours.pixel_mean, ours.pixel_std
    expected = ref((images.float() - mean) / std)["out"]
    torch.testing.assert_close(ours(images), expected, rtol=1e-4, atol=1e-4)
