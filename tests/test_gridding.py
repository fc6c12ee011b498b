"""Gridding analysis: exact used offsets, HDC rules (Wang et al. 2018 sec. 3.2), warnings."""
import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from segkit.modeling.gridding import (
    GriddingError,
    GriddingWarning,
    analyze_stack,
    check_dilation_rates,
    check_model_gridding,
    hdc_max_distances,
    impulse_offsets,
    model_dilation_stacks,
    used_offsets,
)


@pytest.mark.parametrize(
    "rates, kernel, expected",
    [
        ([2, 2, 2], 3, [-6, -4, -2, 0, 2, 4, 6]),  # the checkerboard of sec. 3.2, Fig. 2(a)
        ([1, 2, 3], 3, list(range(-6, 7))),  # no holes
        ([1, 2, 9], 3, [o for o in range(-12, 13) if abs(o) not in (4, 5)]),
        ([1, 2, 5], 3, list(range(-8, 9))),
        ([3], 3, [-3, 0, 3]),
        ([1, 2], 5, list(range(-6, 7))),
        ([2, 4], 3, [-6, -4, -2, 0, 2, 4, 6]),
    ],
)
def test_used_offsets_exact(rates, kernel, expected):
    assert used_offsets(rates, kernel) == expected


@pytest.mark.parametrize("rates, kernel", [([2, 2, 2], 3), ([1, 2, 3], 3), ([1, 2, 9], 3), ([1, 3], 5),
                                           ([5, 9, 17], 3), ([1, 2, 5, 9], 3)])
def test_impulse_through_ones_convs_agrees_with_composed_taps(rates, kernel):
    report = analyze_stack(rates, kernel)
    assert impulse_offsets(rates, kernel) == report.offsets_2d


def test_receptive_field_and_fraction():
    r = analyze_stack([2, 2, 2])
    assert r.receptive_field == 13
    assert r.holes == (-5, -3, -1, 1, 3, 5)
    assert r.used_fraction == pytest.approx(49 / 169)
    assert analyze_stack([1, 2, 3]).used_fraction == 1.0


@pytest.mark.parametrize(
    "rates, expected",
    [
        ([1, 2, 5], [1, 2, 5]),  # paper's valid example: M_2 = 2 <= 3
        ([1, 2, 9], [3, 5, 9]),  # paper's invalid example: M_2 = 5 > 3
        ([2, 2, 2], [2, 2, 2]),
        ([1, 3, 5], [1, 3, 5]),
    ],
)
def test_hdc_max_distances(rates, expected):
    assert hdc_max_distances(rates) == expected


@pytest.mark.parametrize(
    "rates, grids, reasons",
    [
        ([2, 2, 2], True, ["never read", "common factor 2"]),
        ([1, 2, 2, 2], True, ["common factor 2"]),  # no holes, but the rate-2 run grids
        ([1, 2, 5, 9, 1, 2, 5, 9], False, []),  # HDC sawtooth, two groups
        ([1, 2, 5, 1, 2, 9], True, ["M_2 = 5 > K = 3"]),  # second group fails
        ([1, 2, 3], False, []),
        ([1, 2, 5], False, []),
        ([1, 2, 9], True, ["never read", "M_2 = 5 > K = 3"]),
        ([2, 4, 8], True, ["common factor 2"]),
    ],
)
def test_verdict_and_reasons(rates, grids, reasons):
    report = analyze_stack(rates)
    assert report.grids is grids
    text = " ".join(report.violations())
    for reason in reasons:
        assert reason in text


def test_check_dilation_rates_warns_raises_or_stays_quiet():
    with pytest.warns(GriddingWarning, match="common factor 2"):
        check_dilation_rates([2, 2, 2], where="res4")
    with pytest.raises(GriddingError, match="res4"):
        check_dilation_rates([2, 2, 2], where="res4", on_gridding="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_dilation_rates([1, 2, 3])
        check_dilation_rates([2, 2, 2], on_gridding="off")
        check_dilation_rates([1, 1, 1])  # undilated: nothing to report
    with pytest.raises(ValueError, match="on_gridding"):
        check_dilation_rates([1], on_gridding="loud")


def test_bad_stacks_are_rejected():
    with pytest.raises(ValueError, match="odd"):
        used_offsets([1, 2], 4)
    with pytest.raises(ValueError, match=">= 1"):
        used_offsets([0, 2])
    with pytest.raises(ValueError, match="kernel sizes"):
        used_offsets([1, 2], [3])


def _net(rates, stride_at=None):
    layers = []
    for i, r in enumerate(rates):
        stride = 2 if i == stride_at else 1
        layers += [nn.Conv2d(2, 2, 3, stride=stride, padding=r, dilation=r), nn.Conv2d(2, 2, 1), nn.ReLU()]
    return nn.Sequential(*layers)


def test_model_stacks_start_at_first_dilation_and_reset_at_strides():
    net = _net([1, 2, 2, 1, 4, 1, 3], stride_at=5)
    stacks = model_dilation_stacks(net)
    # The rate-1 layer before the first dilation opens the stack; the strided one does not.
    assert [(rates, kernels) for _, rates, kernels in stacks] == [([1, 2, 2, 1, 4], [3] * 5), ([3], [3])]
    assert stacks[0][0] == "0 .. 12"


def test_check_model_gridding_on_torchvision_dilated_resnet():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        model = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    with pytest.warns(GriddingWarning):
        reports = check_model_gridding(model)
    # torchvision keeps rate 1 in layer3.0 and 2 in layer4.0: rates 1, 2 (x5), 2, 4, 4.
    assert [list(r.rates) for r in reports] == [[1, 2, 2, 2, 2, 2, 2, 4, 4]]
    assert not reports[0].holes  # layer3.0 fills the holes; the run of rate-2 layers still grids
    assert reports[0].common_factor == 2


def test_check_model_gridding_passes_pools_as_rate_one():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=2, dilation=2), nn.MaxPool2d(3, stride=1, padding=1),
                        nn.Conv2d(1, 1, 3, padding=2, dilation=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (report,) = check_model_gridding(net)
    assert report.rates == (2, 1, 2) and not report.holes and report.group_m2 == (None, 2)


def _tool():
    path = Path(__file__).resolve().parents[1] / "tools" / "gridding.py"
    spec = importlib.util.spec_from_file_location("segkit_tool_gridding", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_reports_and_exits_nonzero_on_gridding(capsys):
    tool = _tool()
    assert tool.main(["--rates", "2", "2", "2", "--map"]) == 1
    out = capsys.readouterr().out
    assert "13x13" in out and "#.#.#.#.#.#.#" in out
    assert tool.main(["--rates", "1", "2", "3", "--json"]) == 0
    (data,) = json.loads(capsys.readouterr().out)
    assert data["holes"] == [] and data["receptive_field"] == 13 and data["max_distances"] == [1, 2, 3]


@pytest.mark.parametrize(
    "config, grids",
    [("duc_hdc_resnet101.yaml", False), ("deeplab_v2_resnet101_hdc.yaml", False),
     ("deeplab_v2_resnet101_aspp_l.yaml", True)],
)
def test_voc_configs_hdc_backbones_do_not_grid(config, grids):
    from segkit.config import load_config
    from segkit.modeling.backbone import build_backbone

    path = Path(__file__).resolve().parents[1] / "configs" / "voc" / config
    cfg = load_config(str(path), ["MODEL.BACKBONE.PRETRAINED", "", "MODEL.HDC.GRIDDING_CHECK", "off"])
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    reports = check_model_gridding(backbone, on_gridding="off")
    assert len(reports) == 1 and reports[0].grids is grids
    if not grids:
        assert reports[0].used_fraction == 1.0 and 1 in reports[0].rates
    else:
        assert reports[0].common_factor == 2  # DeepLab v2: rates 2 (res4) and 4 (res5)
