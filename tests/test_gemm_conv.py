"""GemmConv2d (im2col + packed oneDNN GEMM) computes what nn.Conv2d computes, and falls back where it must."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkit.layers.gemm_conv import GemmConv2d, gemm_available
from segkit.modeling.optimize import optimize_for_inference, use_gemm_convs

pytestmark = pytest.mark.skipif(not gemm_available(), reason="torch built without oneDNN")


def _pair(cin, cout, k, stride=1, padding=0, dilation=1, bias=True, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=bias).eval()
    gemm = copy.deepcopy(conv)
    assert GemmConv2d.convert(gemm) and type(gemm) is GemmConv2d
    return conv, gemm


# (cin, cout, kernel, stride, padding, dilation, bias, input N x H x W); im2col route:
# at most GemmConv2d.max_im2col_pixels output pixels, or 1x1.
CASES = [
    (16, 24, 1, 1, 0, 1, True, (2, 9, 7)),      # 1x1: no im2col
    (16, 24, 1, 2, 0, 1, False, (1, 9, 8)),     # 1x1 strided
    (8, 12, 3, 1, 1, 1, True, (2, 6, 5)),       # 3x3 "same"
    (8, 12, 3, 1, 2, 2, True, (1, 7, 9)),       # dilated
    (8, 12, 3, 2, 1, 1, True, (1, 9, 10)),      # strided, odd sizes
    (6, 40, 7, 1, 3, 1, True, (1, 4, 3)),       # FCN fc6: 7x7 on a map smaller than the kernel
    (5, 7, (3, 1), 1, (1, 0), 1, True, (1, 6, 6)),  # non-square kernel
    (4, 6, 3, 1, 0, 1, True, (1, 5, 5)),        # no padding
]
# Tap route: > 256 output pixels, at most GemmConv2d.max_tap_channels output channels.
TAP_CASES = [
    (48, 5, 3, 1, 12, 12, True, (1, 20, 19)),   # DeepLab's dilated classifier: most taps in the padding
    (27, 3, 3, 1, 1, 1, False, (2, 17, 16)),    # batch of 2; exactly k*k*C_out input channels
    (40, 4, 3, 2, 1, 1, True, (1, 35, 36)),     # strided
    (100, 4, 5, 1, (2, 1), (1, 2), True, (1, 18, 27)),  # non-square padding and dilation
    (36, 4, 3, 1, 0, 1, True, (1, 19, 18)),     # no padding
]


@pytest.fixture
def any_size(monkeypatch):
    """Let the tiny layers of these tests take the GEMM routes (their arithmetic is what is tested)."""
    monkeypatch.setattr(GemmConv2d, "min_gemm_macs", 0)


@pytest.mark.usefixtures("any_size")
@pytest.mark.parametrize("route, cin, cout, k, stride, padding, dilation, bias, nhw",
                         [("im2col",) + c for c in CASES] + [("taps",) + c for c in TAP_CASES])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gemm_route_matches_conv2d(route, cin, cout, k, stride, padding, dilation, bias, nhw, channels_last):
    conv, gemm = _pair(cin, cout, k, stride, padding, dilation, bias)
    x = torch.randn(nhw[0], cin, *nhw[1:])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert gemm.route(x) == route
        expected, out = conv(x), gemm(x)
        # Independent oracle: the convolution as explicit sums over taps (double precision).
        oracle = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double(),
                          conv.stride, conv.padding, conv.dilation)
    assert out.shape == expected.shape
    torch.testing.assert_close(out.double(), oracle, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_route_choice_and_fallbacks():
    _, gemm = _pair(300, 33, 3, padding=1)
    small, large = torch.randn(1, 300, 16, 16), torch.randn(1, 300, 17, 17)  # 256 and 289 output pixels
    with torch.no_grad():
        assert gemm.route(small) == "im2col" and gemm.route(large) == "conv"  # 33 > 32 output channels
        assert not gemm.use_gemm(small.double())  # float32 only
        assert _pair(288, 32, 3, padding=1)[1].route(large[:, :288]) == "taps"
        assert _pair(287, 32, 3, padding=1)[1].route(large[:, :287]) == "conv"  # fewer than 9 x 32 inputs
        assert _pair(3, 16, 3, padding=1)[1].route(torch.randn(1, 3, 200, 200)) == "conv"  # an RGB stem
    # im2col with padding: split by kernel row (skipping taps that read only padding) when that saves >= 10%.
    _, fc6 = _pair(8, 16, 7, padding=3)
    assert fc6._row_ranges(11) == [(3, 11), (2, 11), (1, 11), (0, 11), (0, 10), (0, 9), (0, 8)]  # FCN's fc6
    assert fc6._skip_padding_rows(11) and not gemm._skip_padding_rows(16)  # 3x3 on 16 rows: 4% saved
    assert not _pair(8, 16, 7, padding=0)[1]._skip_padding_rows(11)
    # 1x1: small weights only on small maps, large weights (>= 2^18) at any size.
    _, one = _pair(64, 64, 1)
    _, big = _pair(512, 512, 1)
    with torch.no_grad():
        assert one.route(torch.randn(1, 64, 16, 16)) == "im2col" and one.route(torch.randn(1, 64, 17, 17)) == "conv"
        assert one.route(torch.randn(1, 64, 15, 15)) == "conv"  # 921,600 < 2^20 multiply-adds: too little work
        assert big.route(torch.randn(1, 512, 40, 40)) == "im2col"
    # Autograd: the ordinary convolution, with gradients.
    x = torch.randn(1, 300, 6, 6, requires_grad=True)
    assert not gemm.use_gemm(x)
    gemm(x).sum().backward()
    assert x.grad is not None and gemm.weight.grad is not None


@pytest.mark.usefixtures("any_size")
def test_tracing_and_export_see_an_ordinary_convolution():
    _, gemm = _pair(3, 5, 3, padding=1)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        traced = torch.jit.trace(gemm, x)
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert "aten::_convolution" in kinds and not any("mkldnn" in k for k in kinds)
    with torch.inference_mode():
        torch.testing.assert_close(traced(x), gemm(x), rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("any_size")
def test_packed_weight_follows_weight_updates_and_copies():
    conv, gemm = _pair(96, 10, 3, padding=1)
    x = torch.randn(1, 96, 5, 5)
    with torch.inference_mode():
        gemm(x)  # packs for the im2col route
        gemm(torch.randn(1, 96, 20, 20))  # and for the tap route
    assert set(gemm._packed) == {"rows", "taps"}
    new = nn.Conv2d(96, 10, 3, padding=1)
    gemm.load_state_dict(new.state_dict())  # in-place copy: same tensors, new version
    clone = copy.deepcopy(gemm)  # the packed cache is not copied
    assert getattr(clone, "_packed", None) is None
    with torch.no_grad():
        gemm.weight.mul_(2)
        expected = F.conv2d(x, new.weight * 2, new.bias, padding=1)
    with torch.inference_mode():
        torch.testing.assert_close(gemm(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(clone(x), new(x), rtol=1e-5, atol=1e-5)
    gemm.weight = nn.Parameter(torch.zeros_like(gemm.weight))  # a new parameter object
    with torch.inference_mode():
        torch.testing.assert_close(gemm(x), new.bias.view(1, -1, 1, 1).expand_as(expected).detach())


def test_convert_skips_what_it_cannot_run():
    grouped = nn.Conv2d(4, 4, 3, groups=2)
    reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
    same = nn.Conv2d(4, 4, 3, padding="same")
    assert not any(GemmConv2d.convert(c) for c in (grouped, reflect, same))
    assert all(type(c) is nn.Conv2d for c in (grouped, reflect, same))


def _tiny_fcn_vgg():
    from segkit.config import get_cfg
    from segkit.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.NAME", "VGG", "MODEL.BACKBONE.PRETRAINED", "",
                         "MODEL.VGG.WIDTH", "4", "MODEL.VGG.FC_CHANNELS", "32", "MODEL.HEAD.NAME", "FCNHead",
                         "MODEL.HEAD.IN_FEATURES", '["pool3", "pool4", "fc7"]', "MODEL.NUM_CLASSES", "5",
                         "DATASETS.TRAIN", "[]", "DATASETS.TEST", "[]"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # FCN zero-initialises its score layers: give them values
        for name, p in model.named_parameters():
            if "scores" in name:
                p.normal_(0, 0.05)
    return model


@pytest.mark.usefixtures("any_size")
def test_optimized_fcn_vgg_matches_eager():
    """FCN-8s layout (7x7 fc6 on a 3x3 pool5): labels >= 99.99% equal, probabilities within 1e-4."""
    model = _tiny_fcn_vgg()
    images = torch.randint(0, 256, (2, 3, 80, 72), dtype=torch.uint8)
    fast = optimize_for_inference(model)
    convs = [m for m in model.modules() if type(m) is nn.Conv2d]
    assert fast.gemm_convs == len(convs) and type(fast.backbone.fc6) is GemmConv2d
    assert list(fast.state_dict()) == list(model.state_dict())
    with torch.inference_mode():
        seen = []
        fast.backbone.fc6.register_forward_hook(lambda m, args, out: seen.append(m.use_gemm(args[0])))
        expected, out = model(images), fast(images)
    assert seen == [True]  # fc6 took the packed-GEMM route
    p, q = expected.softmax(1), out.softmax(1)
    assert (p.argmax(1) == q.argmax(1)).float().mean() >= 0.9999
    assert (p - q).abs().max() < 1e-4
    assert use_gemm_convs(fast) == 0  # a second call finds nothing left to convert


@pytest.mark.usefixtures("any_size")
def test_optimized_deeplab_resnet_aspp_matches_eager():
    """DeepLab v2 ASPP on a dilated ResNet: the dilated 3x3 classifiers take the tap route."""
    from segkit.config import get_cfg
    from segkit.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.WIDTH", "8",
                         "MODEL.RESNETS.OUTPUT_STRIDE", "8", "MODEL.RESNETS.OUT_FEATURES", '["res5"]',
                         "MODEL.HEAD.NAME", "DeepLabV2Head", "MODEL.HEAD.IN_FEATURES", '["res5"]',
                         "MODEL.NUM_CLASSES", "5", "DATASETS.TRAIN", "[]", "DATASETS.TEST", "[]"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, folded by the optimisation
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    images = torch.randint(0, 256, (1, 3, 160, 152), dtype=torch.uint8)  # res5: 20 x 19 = 380 pixels
    fast = optimize_for_inference(model)
    routes = []
    for m in fast.modules():
        if isinstance(m, GemmConv2d):
            m.register_forward_hook(lambda mod, args, out: routes.append((mod.kernel_size, mod.route(args[0]))))
    with torch.inference_mode():
        expected, out = model(images), fast(images)
    assert ((3, 3), "taps") in routes  # the ASPP classifiers (64 -> 5 channels on 20 x 19)
    p, q = expected.softmax(1), out.softmax(1)
    assert (p.argmax(1) == q.argmax(1)).float().mean() >= 0.9999
    assert (p - q).abs().max() < 1e-4
