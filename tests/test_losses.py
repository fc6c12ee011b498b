"""Losses: exact values on hand-computed cases, ignore label, class weights, sampling, OHEM."""
import json
import math

import pytest
import torch

from segkit.config import get_cfg
from segkit.modeling.losses import (
    CombinedLoss,
    CrossEntropy,
    Dice,
    Focal,
    LossSampler,
    LovaszSoftmax,
    OhemSelector,
    build_loss,
    build_loss_term,
    class_weights_from_counts,
    load_class_weights,
    lovasz_grad,
)
from segkit.registry import LOSS_REGISTRY

IGN = 255
LN2, LN43 = math.log(2.0), math.log(4.0 / 3.0)


def _tiny():
    """Three pixels in one row: A = softmax [1/4, 3/4] label 1, B = [1/2, 1/2] label 0, C ignored."""
    logits = torch.tensor([[[[0.0, 0.0, 5.0]], [[math.log(3.0), 0.0, -7.0]]]], requires_grad=True)
    target = torch.tensor([[[1, 0, IGN]]])
    return logits, target


def _cfg(num_classes=3, **loss):
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = num_classes
    for k, v in loss.items():
        node = cfg.MODEL.LOSS
        *parents, leaf = k.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return cfg


# --------------------------------------------------------------------------- exact values
@pytest.mark.parametrize(
    "loss, expected",
    [
        (CrossEntropy(), (LN43 + LN2) / 2),
        (CrossEntropy(class_weight=[2.0, 1.0]), (1 * LN43 + 2 * LN2) / 3),
        (CrossEntropy(normalize=False), LN43 + LN2),  # per-image sum (Caffe normalize: false)
        (Focal(gamma=2.0), (LN43 / 16 + LN2 / 4) / 2),
        (Focal(gamma=0.0), (LN43 + LN2) / 2),
        (Focal(gamma=1.0, class_weight=[1.0, 3.0]), (3 * LN43 / 4 + LN2 / 2) / 4),
        # class 0: 2*(1/2) / (1/16 + 1/4 + 1); class 1: 2*(3/4) / (9/16 + 1/4 + 1)
        (Dice(smooth=0.0), 1 - (16 / 21 + 24 / 29) / 2),
        (Dice(smooth=1.0), 1 - (32 / 37 + 8 / 9) / 2),
        # exponent 1: class 0: 1 / (3/4 + 1); class 1: (3/2) / (5/4 + 1)
        (Dice(smooth=0.0, exponent=1), 1 - (4 / 7 + 2 / 3) / 2),
        (Dice(smooth=0.0, class_weight=[3.0, 1.0]), 1 - (3 * 16 / 21 + 24 / 29) / 4),
        # class 0: errors sorted [1/2 (gt 1), 1/4 (gt 0)], grad [1, 0] -> 1/2
        # class 1: errors sorted [1/2 (gt 0), 1/4 (gt 1)], grad [1/2, 1/2] -> 3/8
        (LovaszSoftmax(), (1 / 2 + 3 / 8) / 2),
    ],
    ids=["ce", "ce_weighted", "ce_sum", "focal2", "focal0", "focal_alpha",
         "dice", "dice_smooth", "dice_e1", "dice_w", "lovasz"],
)
def test_exact_values(loss, expected):
    logits, target = _tiny()
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_lovasz_grad_matches_hand_values():
    g = lovasz_grad(torch.tensor([0.0, 1.0]))
    assert g.tolist() == pytest.approx([0.5, 0.5])
    g = lovasz_grad(torch.tensor([1.0, 0.0, 1.0]))
    # jaccard: 1 - (1/2)/2, 1 - (1/2)/3... computed: inter [1, 1, 0], union [2, 3, 3]
    assert g.tolist() == pytest.approx([0.5, 1 / 6, 1 / 3])


@pytest.mark.parametrize("classes, class_weight, expected", [
    # per class: 0 -> 2/3, 1 -> 2/5, 2 (absent) -> its largest error 1/3
    ("present", None, (2 / 3 + 2 / 5) / 2),
    ("all", None, (2 / 3 + 2 / 5 + 1 / 3) / 3),
    ("present", [3.0, 1.0, 5.0], (3 * 2 / 3 + 2 / 5) / 4),
    ("all", [3.0, 1.0, 5.0], (3 * 2 / 3 + 2 / 5 + 5 / 3) / 9),
])
def test_lovasz_class_averaging(classes, class_weight, expected):
    # A = softmax [1/5, 3/5, 1/5] label 1, B = [1/3, 1/3, 1/3] label 0; class 2 absent
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]], [[0.0, 0.0]]]])
    target = torch.tensor([[[1, 0]]])
    loss = LovaszSoftmax(classes=classes, class_weight=class_weight)
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_lovasz_equals_jaccard_loss_for_hard_predictions():
    target = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 60.0
    ious = [1 / 3, 2 / 3, 1 / 2]  # class 0: {00} / {00,01,12}; class 1: {02,10}/{01,02,10}; class 2: {11}/{11,12}
    assert LovaszSoftmax()(logits, target).item() == pytest.approx(1 - sum(ious) / 3, abs=1e-5)


def test_dice_zero_for_perfect_prediction_and_per_image():
    target = torch.tensor([[[0, 1]], [[1, 1]]])
    logits = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 60.0
    assert Dice(smooth=0.0)(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    # per image with all classes: image 2 has no class 0 -> dice_0 = 0 / 0 -> with smooth 1: 1/1
    assert Dice(smooth=1.0, per_image=True, classes="present")(logits, target).item() == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- ignore label and gradients
def _variants():
    # every registered loss, as the config builds it, plus the pixel selections
    out = [(name, {}) for name in LOSS_REGISTRY.keys()]
    out += [("CrossEntropy", {"SAMPLING__ENABLED": True, "SAMPLING__SEED": 3}),
            ("CrossEntropy", {"SAMPLING__ENABLED": True, "SAMPLING__MODE": "fraction", "SAMPLING__BALANCE": True,
                              "SAMPLING__CELL_SIZE": 2, "SAMPLING__SEED": 3}),
            ("Focal", {"OHEM__ENABLED": True, "OHEM__MIN_KEPT": 5})]
    return out


@pytest.mark.parametrize("name, loss_keys", _variants(), ids=lambda v: str(v))
def test_ignored_pixels_never_contribute_and_gradients_flow(name, loss_keys):
    torch.manual_seed(0)
    cfg = _cfg(num_classes=4, **loss_keys)
    logits = torch.randn(2, 4, 6, 5)
    target = torch.randint(0, 4, (2, 6, 5))
    target[0, :2] = IGN
    target[1, :, 4] = IGN
    ignored = (target == IGN).unsqueeze(1).expand_as(logits)
    values, grads = [], []
    for changed in (logits, torch.where(ignored, logits * 10 - 3, logits)):
        x = changed.clone().requires_grad_(True)
        loss = build_loss_term(cfg, name)(x, target)
        loss.backward()
        values.append(loss.item())
        grads.append(x.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0
    assert grads[0][ignored].abs().max() == 0
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


@pytest.mark.parametrize("loss", [CrossEntropy(), Focal(), Dice(), LovaszSoftmax(),
                                  CrossEntropy(selector=LossSampler(0.5, seed=0)),
                                  CrossEntropy(selector=OhemSelector(0.7, 4))])
def test_all_ignored_batch_gives_zero(loss):
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    value = loss(logits, torch.full((1, 4, 4), IGN))
    value.backward()
    assert value.item() == 0.0 and logits.grad.abs().max() == 0


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="upsample the logits"):
        CrossEntropy()(torch.randn(1, 3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long))


# --------------------------------------------------------------------------- class weights
def test_class_weights_from_counts_formulas():
    counts = [600, 300, 100, 0]
    inv = class_weights_from_counts(counts, "inverse_frequency")
    raw = [1 / 0.6, 1 / 0.3, 1 / 0.1]
    assert inv == pytest.approx([r / (sum(raw) / 3) for r in raw] + [0.0])
    # Without the pixels of the images where each class occurs, median frequency would quietly
    # equal inverse frequency: a clear error instead.
    with pytest.raises(ValueError, match="pixels_where_present"):
        class_weights_from_counts(counts, "median_frequency")
    # Eigen & Fergus: freq(c) over the images where c occurs: 600/1000, 300/400, 100/100 -> median 0.75
    med = class_weights_from_counts(counts, "median_frequency", pixels_where_present=[1000, 400, 100, 0])
    raw = [0.75 / 0.6, 1.0, 0.75]
    assert med == pytest.approx([r / (sum(raw) / 3) for r in raw] + [0.0])
    eff = class_weights_from_counts([1, 2, 0], "effective_number", beta=0.5)  # (1-b)/(1-b^n): 1, 2/3
    assert eff == pytest.approx([1 / (5 / 6), (2 / 3) / (5 / 6), 0.0])


def test_class_weights_read_from_stats_file(tmp_path):
    stats = {"dataset": "d", "classes": ["a", "b"], "pixel_counts": [3, 1], "frequency": [0.75, 0.25],
             "weights": {"inverse_frequency": [0.5, 1.5], "median_frequency": [0.7, 1.3]}}
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats))
    assert load_class_weights("inverse_frequency", 2, str(path)).tolist() == [0.5, 1.5]
    # no cached effective_number: derived from pixel_counts with BETA
    eff = load_class_weights("effective_number", 2, str(path), beta=0.5).tolist()
    assert eff == pytest.approx([(0.5 / 0.875) / ((0.5 / 0.875 + 1) / 2), 1 / ((0.5 / 0.875 + 1) / 2)])
    with pytest.raises(ValueError, match="MODEL.NUM_CLASSES is 3"):
        load_class_weights("median_frequency", 3, str(path))
    # A file with pixel counts only (no cached weights, no pixels_where_present) cannot give median frequency.
    counts_only = tmp_path / "counts_only.json"
    counts_only.write_text(json.dumps({"classes": ["a", "b"], "pixel_counts": [3, 1]}))
    with pytest.raises(ValueError, match="counts_only.json.*pixels_where_present"):
        load_class_weights("median_frequency", 2, str(counts_only))
    # 1/f = 4/3 and 4, scaled to mean 1
    assert load_class_weights("inverse_frequency", 2, str(counts_only)).tolist() == pytest.approx([0.5, 1.5])
    with pytest.raises(FileNotFoundError, match="COMPUTE"):
        load_class_weights("median_frequency", 2, str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="STATS_FILE"):
        load_class_weights("median_frequency", 2, "")


def test_config_class_weights_change_the_loss(tmp_path):
    logits, target = _tiny()
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"classes": ["a", "b"], "weights": {"median_frequency": [2.0, 1.0]}}))
    cfg = _cfg(num_classes=2, CLASS_WEIGHT__METHOD="median_frequency", CLASS_WEIGHT__STATS_FILE=str(path))
    assert build_loss(cfg)(logits, target)["loss_cross_entropy"].item() == pytest.approx((LN43 + 2 * LN2) / 3)
    cfg = _cfg(num_classes=2, CLASS_WEIGHT__METHOD="explicit", CLASS_WEIGHT__VALUES=[1.0, 4.0])
    assert build_loss(cfg)(logits, target)["loss_cross_entropy"].item() == pytest.approx((4 * LN43 + LN2) / 5)
    cfg = _cfg(num_classes=2, CLASS_WEIGHT__METHOD="explicit", CLASS_WEIGHT__VALUES=[1.0])
    with pytest.raises(ValueError, match="1 class weights"):
        build_loss(cfg)


# --------------------------------------------------------------------------- FCN loss sampling
def _batch(seed=0, n=2, k=3, h=8, w=8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g)
    target = torch.randint(0, k, (n, h, w), generator=g)
    target[0, 0, :] = IGN
    return logits, target


@pytest.mark.parametrize("mode", ["bernoulli", "fraction"])
@pytest.mark.parametrize("cell_size", [1, 3])
def test_sampling_rate_one_is_the_full_loss(mode, cell_size):
    logits, target = _batch()
    x_full, x_sampled = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    full = CrossEntropy(class_weight=[1.0, 2.0, 0.5])(x_full, target)  # the fused path
    sampled = CrossEntropy(class_weight=[1.0, 2.0, 0.5], selector=LossSampler(1.0, mode, cell_size, seed=0))
    value = sampled(x_sampled, target)  # the generic path
    assert value.item() == pytest.approx(full.item(), rel=1e-6)
    full.backward()
    value.backward()
    assert torch.allclose(x_full.grad, x_sampled.grad, atol=1e-7)


@pytest.mark.parametrize("mode, cell_size", [("bernoulli", 1), ("fraction", 1), ("bernoulli", 2), ("fraction", 4)])
def test_sampling_mean_over_seeds_approaches_full_loss(mode, cell_size):
    logits, target = _batch()
    full = CrossEntropy()(logits, target).item()
    loss = CrossEntropy(selector=LossSampler(0.3, mode, cell_size, seed=0))
    draws = torch.tensor([loss(logits, target).item() for _ in range(1000)])
    stderr = draws.std().item() / math.sqrt(len(draws))
    assert draws.std() > 0
    assert abs(draws.mean().item() - full) < 4 * stderr


def test_balanced_sampling_is_unbiased_for_the_balanced_loss():
    # one image, 8 pixels: class 0 x6, class 1 x2; rate 0.5 -> 2 cells per class expected
    logits = torch.randn(1, 2, 1, 8, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([[[0, 0, 0, 0, 0, 0, 1, 1]]])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none")[0, 0]
    q = torch.tensor([2 / 6] * 6 + [1.0] * 2)  # inclusion probabilities
    expected = (q * per_pixel).sum() / q.sum()
    loss = CrossEntropy(selector=LossSampler(0.5, balance=True, seed=0))
    draws = torch.tensor([loss(logits, target).item() for _ in range(2000)])
    assert abs(draws.mean().item() - expected.item()) < 4 * draws.std().item() / math.sqrt(len(draws))
    # fraction mode keeps exactly 2 of class 0 and both of class 1: the loss is the sum over them / q.sum()
    sampler = LossSampler(0.5, "fraction", balance=True, seed=5)
    valid = torch.ones_like(target, dtype=torch.bool)
    a, z = sampler(logits, target, valid, valid.float())
    assert a[0, 0].tolist().count(1.0) == 4 and a[0, 0, 6:].tolist() == [1.0, 1.0]
    assert z.item() == pytest.approx(q.sum().item())


def test_fraction_keeps_exact_count_per_image_and_is_reproducible():
    logits, target = _batch()
    valid = target != IGN
    sampler = LossSampler(0.25, "fraction", seed=7)
    a, z = sampler(logits, target.clamp(max=2), valid, valid.float())
    kept = (a > 0).flatten(1).sum(1).tolist()
    assert kept == [round(0.25 * 56), round(0.25 * 64)]
    assert a[0][a[0] > 0].unique().tolist() == pytest.approx([56 / 14])  # Horvitz-Thompson weight n / k
    assert z.item() == valid.sum().item()
    a, z = LossSampler(0.3, "bernoulli", seed=7)(logits, target.clamp(max=2), valid, valid.float())
    assert a[a > 0].unique().tolist() == pytest.approx([1 / 0.3]) and not (a[~valid] > 0).any()
    assert z.item() == valid.sum().item()
    f = lambda seed: CrossEntropy(selector=LossSampler(0.25, "fraction", seed=seed))(logits, target).item()
    assert f(7) == f(7) and f(7) != f(8)


def test_sampling_from_the_global_generator_follows_torch_manual_seed():
    logits, target = _batch()
    loss = CrossEntropy(selector=LossSampler(0.5))  # seed < 0: torch's generator
    torch.manual_seed(3)
    first = [loss(logits, target).item() for _ in range(3)]
    torch.manual_seed(3)
    assert [loss(logits, target).item() for _ in range(3)] == first and len(set(first)) == 3


def test_sampling_from_config():
    cfg = _cfg(SAMPLING__ENABLED=True, SAMPLING__RATE=0.2, SAMPLING__MODE="fraction", SAMPLING__SEED=1)
    term = build_loss(cfg).terms["cross_entropy"]
    assert isinstance(term.selector, LossSampler) and term.selector.rate == 0.2 and term.selector.seed == 1
    cfg = _cfg(SAMPLING__ENABLED=True, OHEM__ENABLED=True)
    with pytest.raises(ValueError, match="enable one"):
        build_loss(cfg)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        LossSampler(0.0)


# --------------------------------------------------------------------------- OHEM
def _ohem_case():
    # true-class probabilities of 6 pixels: softmax([x, 0]) of class 0 = sigmoid(x)
    probs = torch.tensor([0.1, 0.95, 0.5, 0.8, 0.65, 0.3])
    logits = torch.stack([torch.logit(probs), torch.zeros(6)]).view(1, 2, 1, 6)
    target = torch.zeros(1, 1, 6, dtype=torch.long)
    return probs, logits, target


def test_ohem_keeps_pixels_below_threshold():
    probs, logits, target = _ohem_case()
    keep = OhemSelector(thresh=0.7, min_kept=2).keep_mask(logits, target, target >= 0)
    assert keep[0, 0].tolist() == [True, False, True, False, True, True]
    loss = CrossEntropy(selector=OhemSelector(0.7, 2))(logits, target)
    assert loss.item() == pytest.approx(-torch.log(probs[[0, 2, 4, 5]]).mean().item(), rel=1e-5)


def test_ohem_keeps_at_least_min_kept_hardest():
    probs, logits, target = _ohem_case()
    keep = OhemSelector(thresh=0.4, min_kept=4).keep_mask(logits, target, target >= 0)
    assert keep[0, 0].tolist() == [True, False, True, False, True, True]  # 4 lowest, not just the 2 below 0.4
    valid = torch.tensor([[[True, True, False, True, True, True]]])
    keep = OhemSelector(thresh=0.4, min_kept=100).keep_mask(logits, target, valid)
    assert keep.tolist() == valid.tolist()  # fewer valid than min_kept: all valid, never the ignored one


# --------------------------------------------------------------------------- build_loss
def test_build_loss_weighted_terms_keys_and_args():
    logits, target = _tiny()
    cfg = _cfg(num_classes=2, TERMS=[
        {"NAME": "CrossEntropy", "WEIGHT": 1.0},
        {"NAME": "Focal", "WEIGHT": 0.5, "ARGS": {"GAMMA": 2.0}},
        {"NAME": "Dice", "WEIGHT": 2.0, "ARGS": {"smooth": 0.0}, "KEY": "dice0"},
    ])
    out = build_loss(cfg)(logits, target)
    assert sorted(out) == ["loss_cross_entropy", "loss_dice0", "loss_focal"]
    assert out["loss_focal"].item() == pytest.approx(0.5 * (LN43 / 16 + LN2 / 4) / 2, rel=1e-5)
    assert out["loss_dice0"].item() == pytest.approx(2 * (1 - (16 / 21 + 24 / 29) / 2), rel=1e-5)
    aux = build_loss(cfg)(logits, target, suffix="_aux", weight=0.4)
    assert aux["loss_cross_entropy_aux"].item() == pytest.approx(0.4 * (LN43 + LN2) / 2, rel=1e-5)


def test_build_loss_errors_are_actionable():
    with pytest.raises(ValueError, match="GAMA"):
        build_loss(_cfg(TERMS=[{"NAME": "Focal", "ARGS": {"GAMA": 2}}]))
    with pytest.raises(ValueError, match="distinct KEY"):
        build_loss(_cfg(TERMS=["CrossEntropy", "CrossEntropy"]))
    with pytest.raises(KeyError, match="Did you mean 'Dice'"):
        build_loss(_cfg(TERMS=[{"NAME": "Dise"}]))
    with pytest.raises(ValueError, match="at least one term"):
        CombinedLoss({})


def test_losses_take_a_config_or_plain_arguments():
    cfg = _cfg(num_classes=2, CLASS_WEIGHT__METHOD="explicit", CLASS_WEIGHT__VALUES=[1.0, 2.0], OHEM__THRESH=0.5)
    focal = Focal(cfg, gamma=1.0)
    assert focal.gamma == 1.0 and focal.class_weight.tolist() == [1.0, 2.0] and focal.selector is None
    assert LOSS_REGISTRY.get("OhemCrossEntropy")(cfg).selector.thresh == 0.5
    assert Dice(smooth=0.5).class_weight is None and LovaszSoftmax(cfg, per_image=True).per_image


def test_class_weights_are_not_in_the_state_dict():
    cfg = _cfg(num_classes=2, CLASS_WEIGHT__METHOD="explicit", CLASS_WEIGHT__VALUES=[1.0, 2.0])
    assert build_loss(cfg).state_dict() == {}


def test_everything_is_selectable_from_yaml(tmp_path):
    from segkit.config import load_config

    path = tmp_path / "loss.yaml"
    path.write_text(
        "MODEL:\n"
        "  NUM_CLASSES: 2\n"
        "  LOSS:\n"
        "    TERMS:\n"
        "      - {NAME: CrossEntropy, WEIGHT: 1.0}\n"
        "      - {NAME: Focal, WEIGHT: 0.5, ARGS: {GAMMA: 2.0, CLASS_WEIGHT: null, SELECTION: none}}\n"
        "      - {NAME: Dice, WEIGHT: 2.0, ARGS: {SMOOTH: 0.0}, KEY: dice0}\n"
        "    CLASS_WEIGHT: {METHOD: explicit, VALUES: [2.0, 1.0]}\n"
        "    OHEM: {ENABLED: true, THRESH: 0.99, MIN_KEPT: 1}\n"
    )
    cfg = load_config(str(path), load_plugins=False)
    loss = build_loss(cfg)
    assert isinstance(loss.terms["cross_entropy"].selector, OhemSelector)
    assert loss.terms["focal"].selector is None and loss.terms["focal"].class_weight is None
    logits, target = _tiny()
    out = loss(logits, target)
    assert out["loss_cross_entropy"].item() == pytest.approx((LN43 + 2 * LN2) / 3, rel=1e-5)  # both below 0.99
    assert out["loss_focal"].item() == pytest.approx(0.5 * (LN43 / 16 + LN2 / 4) / 2, rel=1e-5)
    # Dice averages the classes with the config's weights [2, 1]
    assert out["loss_dice0"].item() == pytest.approx(2 * (1 - (2 * 16 / 21 + 24 / 29) / 3), rel=1e-5)
