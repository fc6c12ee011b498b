"""Losses: every config key reaches the loss, and the pixel selectors against direct oracles.

Each MODEL.LOSS key is checked twice: the built object carries the value, and the loss
computed through the config equals the loss of the same object built by hand (so a key
that the wiring drops, or reads from the wrong place, fails). The selectors are checked
against slow direct implementations written here (sorted probabilities for OHEM, cell
counts for the sampler), not against their own formulas.
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from segkit.modeling.losses import CrossEntropy, Focal, LossSampler, OhemSelector, build_loss
from segkit.modeling.losses.pixel_wise import build_selector, check_inputs
from segkit.registry import LOSS_REGISTRY

from test_losses import IGN, _cfg  # noqa: E402 - the same config helper as the loss tests


def _batch(seed=0, n=2, k=3, h=10, w=12, ignored=0.3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g) * 2
    target = torch.randint(0, k, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignored] = IGN
    return logits, target


def _per_pixel_ce(logits, target):
    """-log softmax of the true class, one pixel at a time (0 where ignored)."""
    n, k, h, w = logits.shape
    out = torch.zeros(n, h, w, dtype=torch.float64)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                t = int(target[b, y, x])
                if t != IGN:
                    z = logits[b, :, y, x].double()
                    out[b, y, x] = torch.logsumexp(z, 0) - z[t]
    return out


# --------------------------------------------------------------------------- input checks
def test_check_inputs_names_the_problem():
    logits = torch.zeros(1, 2, 3, 4)
    check_inputs(logits, torch.zeros(1, 3, 4, dtype=torch.uint8))
    check_inputs(logits, torch.zeros(1, 3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"logits \(N, K, H, W\) and target \(N, H, W\)"):
        check_inputs(logits, torch.zeros(1, 1, 3, 4, dtype=torch.long))  # 4-D target
    with pytest.raises(ValueError, match=r"logits \(N, K, H, W\) and target \(N, H, W\)"):
        check_inputs(torch.zeros(2, 3, 4), torch.zeros(1, 3, 4, dtype=torch.long))  # 3-D logits
    with pytest.raises(ValueError, match="differ in batch or spatial size"):
        check_inputs(logits, torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="differ in batch or spatial size"):
        check_inputs(logits, torch.zeros(1, 3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class labels"):
        check_inputs(logits, torch.zeros(1, 3, 4))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_integer_targets_of_any_width_give_the_same_loss(dtype):
    logits, target = _batch(ignored=0.0)
    expected = _per_pixel_ce(logits, target).mean().item()
    for loss in (CrossEntropy(), CrossEntropy(selector=OhemSelector(1.0, 0)), Focal(gamma=0.0)):
        assert loss(logits, target.to(dtype)).item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("make", [
    lambda **kw: CrossEntropy(**kw),  # the fused path
    lambda **kw: CrossEntropy(selector=OhemSelector(1.0, 0), **kw),  # the generic path
    lambda **kw: Focal(gamma=0.0, **kw),
])
def test_normalize_false_is_the_per_image_sum_with_several_images(make):
    logits, target = _batch(n=3)
    per_pixel = _per_pixel_ce(logits, target)
    weights = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    pixel_w = torch.where(target == IGN, torch.zeros(()), weights[target.clamp(max=2)].float()).double()
    assert make(normalize=False)(logits, target).item() == pytest.approx(per_pixel.sum().item() / 3, rel=1e-5)
    got = make(normalize=False, class_weight=weights.tolist())(logits, target).item()
    assert got == pytest.approx((pixel_w * per_pixel).sum().item() / 3, rel=1e-5)
    got = make(class_weight=weights.tolist())(logits, target).item()
    assert got == pytest.approx((pixel_w * per_pixel).sum().item() / pixel_w.sum().item(), rel=1e-5)


def test_normalize_key_and_gradient_of_an_all_ignored_batch():
    logits, target = _batch(n=2)
    cfg = _cfg(TERMS=[{"NAME": "CrossEntropy", "ARGS": {"NORMALIZE": False}}])
    term = build_loss(cfg).terms["cross_entropy"]
    assert term.normalize is False
    assert term(logits, target).item() == pytest.approx(_per_pixel_ce(logits, target).sum().item() / 2, rel=1e-5)
    x = logits.clone().requires_grad_(True)
    for loss in (CrossEntropy(), CrossEntropy(normalize=False), CrossEntropy(selector=OhemSelector(0.5, 3))):
        value = loss(x, torch.full_like(target, IGN))
        value.backward()
        assert value.item() == 0.0 and x.grad.abs().max() == 0.0


# --------------------------------------------------------------------------- OHEM
def _ohem_oracle(logits, target, thresh, min_kept):
    """Kept pixels by sorting the valid pixels' true-class probabilities (Python lists)."""
    prob = F.softmax(logits.double(), 1)
    flat = []
    for b in range(target.shape[0]):
        for y in range(target.shape[1]):
            for x in range(target.shape[2]):
                t = int(target[b, y, x])
                if t != IGN:
                    flat.append((float(prob[b, t, y, x]), (b, y, x)))
    flat.sort()
    kept = {pos for p, pos in flat if p < thresh}
    kept |= {pos for p, pos in flat[:min_kept]}
    mask = torch.zeros(target.shape, dtype=torch.bool)
    for b, y, x in kept:
        mask[b, y, x] = True
    return mask


@pytest.mark.parametrize("thresh, min_kept", [(0.05, 150), (0.05, 5), (1e-4, 1), (0.3, 10), (0.7, 0), (1.0, 0), (0.2, 10**6)])
def test_ohem_keeps_what_sorting_the_valid_pixels_keeps(thresh, min_kept):
    # Many ignored pixels: if they took part in the ranking (filled with 0 instead of
    # +inf) fewer than min_kept valid pixels would be kept.
    logits, target = _batch(seed=3, n=2, h=12, w=14, ignored=0.5)
    valid = target != IGN
    assert valid.sum() > 150
    safe = torch.where(valid, target, torch.zeros_like(target))
    keep = OhemSelector(thresh, min_kept).keep_mask(logits, safe, valid)
    expected = _ohem_oracle(logits, target, thresh, min_kept)
    assert torch.equal(keep, expected)
    if min_kept in (1, 150):  # nothing below the threshold: exactly min_kept
        assert int(keep.sum()) == min_kept
    loss = CrossEntropy(selector=OhemSelector(thresh, min_kept))(logits, target)
    per_pixel = _per_pixel_ce(logits, target)
    assert loss.item() == pytest.approx(per_pixel[expected].mean().item(), rel=1e-5)


def test_ohem_with_class_weights_is_the_weighted_mean_over_kept_pixels():
    logits, target = _batch(seed=4)
    expected_mask = _ohem_oracle(logits, target, 0.3, 20)
    w = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)[target.clamp(max=2)] * expected_mask
    expected = (w * _per_pixel_ce(logits, target)).sum() / w.sum()
    got = CrossEntropy(class_weight=[1.0, 3.0, 0.5], selector=OhemSelector(0.3, 20))(logits, target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ohem_checks_its_arguments():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        OhemSelector(0.0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        OhemSelector(1.5)
    with pytest.raises(ValueError, match=">= 0"):
        OhemSelector(0.5, -1)
    assert OhemSelector(1.0, 0).thresh == 1.0
    assert repr(OhemSelector(0.25, 7)) == "OhemSelector(thresh=0.25, min_kept=7)"


@pytest.mark.parametrize("name", ["CrossEntropy", "OhemCrossEntropy"])
def test_ohem_keys_reach_the_loss(name):
    logits, target = _batch(seed=5, ignored=0.5)
    enabled = name == "CrossEntropy"
    cfg = _cfg(TERMS=[name], OHEM__ENABLED=enabled, OHEM__THRESH=0.05, OHEM__MIN_KEPT=37)
    term = build_loss(cfg).terms[{"CrossEntropy": "cross_entropy", "OhemCrossEntropy": "ohem_cross_entropy"}[name]]
    assert isinstance(term.selector, OhemSelector)
    assert term.selector.thresh == 0.05 and term.selector.min_kept == 37
    expected = _per_pixel_ce(logits, target)[_ohem_oracle(logits, target, 0.05, 37)].mean()
    assert term(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


# --------------------------------------------------------------------------- sampling keys
def _sampler_of(**keys):
    cfg = _cfg(SAMPLING__ENABLED=True, **{f"SAMPLING__{k}": v for k, v in keys.items()})
    return build_loss(cfg).terms["cross_entropy"]


@pytest.mark.parametrize("key, value, attribute, expected", [
    ("RATE", 0.2, "rate", 0.2),
    ("MODE", "FRACTION", "mode", "fraction"),
    ("MODE", "bernoulli", "mode", "bernoulli"),
    ("CELL_SIZE", 3, "cell_size", 3),
    ("BALANCE", True, "balance", True),
    ("SEED", 0, "seed", 0),
    ("SEED", 11, "seed", 11),
    ("SEED", -7, "seed", -1),
])
def test_each_sampling_key_reaches_the_sampler(key, value, attribute, expected):
    term = _sampler_of(**{key: value})
    assert isinstance(term.selector, LossSampler)
    assert getattr(term.selector, attribute) == expected


@pytest.mark.parametrize("keys", [
    dict(SEED=0, RATE=0.4, MODE="fraction"),
    dict(SEED=0, RATE=0.5, CELL_SIZE=3),
    dict(SEED=2, RATE=0.5, MODE="fraction", BALANCE=True, CELL_SIZE=2),
])
def test_loss_from_the_config_equals_the_sampler_built_by_hand(keys):
    logits, target = _batch(seed=6)
    by_config = _sampler_of(**keys)
    by_hand = CrossEntropy(selector=LossSampler(keys["RATE"], keys.get("MODE", "bernoulli").lower(),
                                                keys.get("CELL_SIZE", 1), keys.get("BALANCE", False), keys["SEED"]))
    values = [by_config(logits, target).item() for _ in range(3)]
    assert values == [by_hand(logits, target).item() for _ in range(3)]
    assert len(set(values)) > 1  # successive draws differ
    other = dict(keys, SEED=keys["SEED"] + 1)
    assert _sampler_of(**other)(logits, target).item() != values[0]


def test_selection_names_and_errors():
    cfg = _cfg(SAMPLING__ENABLED=True)
    assert build_selector(cfg, "none") is None and build_selector(_cfg()) is None
    assert isinstance(build_selector(cfg, "OHEM"), OhemSelector)
    assert isinstance(build_selector(_cfg(), "Sampling"), LossSampler)
    with pytest.raises(ValueError, match="Unknown pixel selection 'hard'"):
        build_selector(cfg, "hard")
    with pytest.raises(ValueError, match="enable one"):
        build_selector(_cfg(SAMPLING__ENABLED=True, OHEM__ENABLED=True))
    assert isinstance(build_selector(_cfg(OHEM__ENABLED=True)), OhemSelector)


def test_repr_shows_the_settings():
    loss = CrossEntropy(ignore_value=7, class_weight=[0.5, 2.0], normalize=False,
                        selector=LossSampler(0.5, "fraction", 2, True, 3))
    text = repr(loss)
    assert "ignore_value=7" in text and "class_weight=[0.5, 2.0]" in text and "normalize=False" in text
    assert "LossSampler(rate=0.5, mode='fraction', cell_size=2, balance=True, seed=3)" in text
    assert "class_weight=none" in repr(CrossEntropy()) and "selector=None" in repr(CrossEntropy())
    assert repr(Focal(gamma=1.5)).startswith("Focal(gamma=1.5, ")
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        Focal(gamma=-0.1)
    assert Focal().gamma == 2.0 and Focal(gamma=0.0).gamma == 0.0


# --------------------------------------------------------------------------- the sampler itself
def test_sampler_checks_its_arguments():
    for bad in (dict(rate=0.0), dict(rate=1.01)):
        with pytest.raises(ValueError, match=r"rate must be in \(0, 1\]"):
            LossSampler(**bad)
    with pytest.raises(ValueError, match="'bernoulli' or 'fraction'"):
        LossSampler(mode="poisson")
    with pytest.raises(ValueError, match="cell_size must be >= 1"):
        LossSampler(cell_size=0)
    assert LossSampler(rate=1.0, cell_size=1).rate == 1.0


def _cells_by_hand(target, s, k):
    """Valid cells and their majority class by counting in Python (ties: lowest class)."""
    n, h, w = target.shape
    hc, wc = -(-h // s), -(-w // s)
    valid = torch.zeros(n, hc, wc, dtype=torch.bool)
    cls = torch.zeros(n, hc, wc, dtype=torch.long)
    for b in range(n):
        for i in range(hc):
            for j in range(wc):
                block = target[b, i * s:(i + 1) * s, j * s:(j + 1) * s].flatten().tolist()
                counts = [block.count(c) for c in range(k)]
                valid[b, i, j] = sum(counts) > 0
                cls[b, i, j] = max(range(k), key=lambda c: (counts[c], -c))
    return valid, cls


@pytest.mark.parametrize("cell_size", [2, 3])
def test_fraction_sampling_keeps_whole_cells(cell_size):
    logits, target = _batch(seed=7, n=2, h=10, w=11, ignored=0.4)
    valid = target != IGN
    safe = torch.where(valid, target, torch.zeros_like(target))
    cell_valid, _ = _cells_by_hand(torch.where(valid, target, torch.full_like(target, -1)), cell_size, 3)
    sampler = LossSampler(0.3, "fraction", cell_size=cell_size, seed=1)
    a, z = sampler(logits, safe, valid, valid.float())
    assert z.item() == valid.sum().item()
    s = cell_size
    for b in range(2):
        n_cells = int(cell_valid[b].sum())
        kept = 0
        for i in range(cell_valid.shape[1]):
            for j in range(cell_valid.shape[2]):
                block, vblock = a[b, i * s:(i + 1) * s, j * s:(j + 1) * s], valid[b, i * s:(i + 1) * s, j * s:(j + 1) * s]
                on = block[vblock] > 0
                assert on.all() or not on.any()  # a cell is kept or dropped as a whole
                assert (block[~vblock] == 0).all()
                if on.any():
                    kept += 1
                    # Horvitz-Thompson weight: 1 / (k / n) of the image's valid cells
                    assert block[vblock].tolist() == pytest.approx([n_cells / max(1, round(0.3 * n_cells))] * int(vblock.sum()))
        assert kept == max(1, round(0.3 * n_cells))


def test_balanced_cells_follow_the_majority_class():
    # 1 image 4x8, cells 2x2: the left 4 cells are mostly class 0, the right 4 mostly class 1.
    target = torch.tensor([[[0, 0, 0, 0, 1, 1, 1, 1],
                            [0, 1, 0, 2, 1, 1, 0, 1],
                            [0, 0, 0, 0, 1, 1, 1, 1],
                            [2, 0, 0, 1, 1, 0, 1, 1]]])
    valid = torch.ones_like(target, dtype=torch.bool)
    _, cls = _cells_by_hand(target, 2, 3)
    assert cls.tolist() == [[[0, 0, 1, 1], [0, 0, 1, 1]]]
    # rate 0.5 of 8 cells = 4 expected, 2 classes present: 2 cells of each class exactly
    sampler = LossSampler(0.5, "fraction", cell_size=2, balance=True, seed=0)
    a, z = sampler(torch.zeros(1, 3, 4, 8), target, valid, valid.float())
    kept_cells = a[0, ::2, ::2]
    assert int(kept_cells[:, :2].sum()) == 2 and int(kept_cells[:, 2:].sum()) == 2
    assert z.item() == pytest.approx(32 * 0.5)  # every cell kept with probability 2/4


def test_balanced_sampling_keeps_all_of_a_rare_class():
    # 1 image, 10 pixels: class 0 x9, class 2 x1 (class 1 absent); rate 0.4 -> 4 kept, 2 per class
    target = torch.tensor([[[0, 0, 0, 0, 0, 2, 0, 0, 0, 0]]])
    valid = torch.ones_like(target, dtype=torch.bool)
    a, z = LossSampler(0.4, "fraction", balance=True, seed=3)(torch.zeros(1, 3, 1, 10), target, valid,
                                                              valid.float())
    assert a[0, 0, 5] == 1.0 and int(a.sum()) == 3  # the rare pixel, and 2 of class 0
    assert z.item() == pytest.approx(9 * 2 / 9 + 1.0)
    q = LossSampler(0.4, "bernoulli", balance=True, seed=3)
    draws = torch.stack([q(torch.zeros(1, 3, 1, 10), target, valid, valid.float())[0] for _ in range(400)])
    assert (draws[:, 0, 0, 5] == 1).all()  # probability min(2, 1) / 1 = 1
    assert draws[:, 0, 0, 0].mean().item() == pytest.approx(2 / 9, abs=0.08)


def test_seeded_sampler_depends_on_the_process_rank(monkeypatch):
    import torch.distributed as dist

    logits, target = _batch(seed=8)
    rank0 = CrossEntropy(selector=LossSampler(0.5, seed=4))(logits, target).item()
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    assert CrossEntropy(selector=LossSampler(0.5, seed=4))(logits, target).item() == rank0
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    rank1 = CrossEntropy(selector=LossSampler(0.5, seed=4))(logits, target).item()
    assert rank1 != rank0
    # rank 1 of seed s draws like rank 0 of seed s + 1_000_003
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    assert CrossEntropy(selector=LossSampler(0.5, seed=4 + 1_000_003))(logits, target).item() == rank1


def test_bernoulli_inclusion_weight_and_rate():
    logits, target = _batch(seed=9, n=1, h=30, w=30, ignored=0.0)
    valid = torch.ones_like(target, dtype=torch.bool)
    a, z = LossSampler(0.25, "bernoulli", seed=0)(logits, target, valid, valid.float())
    kept = a > 0
    assert a[kept].unique().tolist() == pytest.approx([4.0])
    assert 0.25 * 900 - 4 * math.sqrt(900 * 0.25 * 0.75) < int(kept.sum()) < 0.25 * 900 + 4 * math.sqrt(900 * 0.25 * 0.75)
    assert z.item() == 900


# --------------------------------------------------------------------------- class weights computed by the engine
def test_class_weight_compute_writes_stats_and_the_loss_reads_them(tmp_path):
    """MODEL.LOSS.CLASS_WEIGHT.COMPUTE: prepare_class_weights counts the training masks."""
    import numpy as np

    from data_fixtures import layouts
    from segkit.data.catalog import DatasetCatalog, MetadataCatalog, register_semseg
    from segkit.data.datasets.voc import load_voc_semseg
    from segkit.engine.defaults import prepare_class_weights

    masks = layouts.write_voc(str(tmp_path / "data"), {"train": ["a", "b"]}, size=(6, 8), labels=(0, 1, 2))
    records = load_voc_semseg(str(tmp_path / "data" / "VOCdevkit" / "VOC2012"), "train")
    register_semseg("cw_compute_tiny", lambda root: records, ["bg", "x", "y"], [(0, 0, 0)] * 3)
    try:
        cfg = _cfg(CLASS_WEIGHT__METHOD="inverse_frequency", CLASS_WEIGHT__COMPUTE=True)
        cfg.DATASETS.TRAIN = ("cw_compute_tiny",)
        cfg.OUTPUT_DIR = str(tmp_path / "out")
        (tmp_path / "out").mkdir()
        out = prepare_class_weights(cfg)
        path = tmp_path / "out" / "class_stats.json"
        # The counts file is OUTPUT_DIR/class_stats.json; the config is not rewritten.
        assert out == str(path) and cfg.MODEL.LOSS.CLASS_WEIGHT.STATS_FILE == ""
        counts = np.array([sum(int((m == c).sum()) for m in masks.values()) for c in range(3)], np.float64)
        assert json.loads(path.read_text())["pixel_counts"] == counts.tolist()
        inv = counts.sum() / counts
        expected = inv / inv.mean()
        term = build_loss(cfg).terms["cross_entropy"]
        assert term.class_weight.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
        # Nothing to compute: explicit weights, or a stats file already given.
        assert prepare_class_weights(_cfg(CLASS_WEIGHT__METHOD="explicit", CLASS_WEIGHT__COMPUTE=True)) == ""
        # A resumed run finds the file and keeps it (not recomputed: a marker survives).
        stats = json.loads(path.read_text())
        path.write_text(json.dumps(dict(stats, marker=1)))
        again = prepare_class_weights(cfg)
        assert again == str(path) and json.loads(path.read_text())["marker"] == 1
    finally:
        DatasetCatalog.remove("cw_compute_tiny")
        MetadataCatalog.remove("cw_compute_tiny")


def test_every_pixel_wise_loss_is_registered():
    for name in ("CrossEntropy", "OhemCrossEntropy", "Focal"):
        assert LOSS_REGISTRY.get(name) is not None


@pytest.mark.parametrize("make", [
    lambda: CrossEntropy(selector=OhemSelector(1.0, 0)),
    lambda: CrossEntropy(selector=LossSampler(1.0, seed=0)),
    lambda: Focal(gamma=2.0),
], ids=["ohem", "sampling", "focal"])
def test_non_finite_logits_at_ignored_pixels_stay_out(make):
    logits, target = _batch(seed=10, n=2)
    target[0, 0, 0] = IGN
    bad = logits.clone()
    bad[0, :, 0, 0] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    c = logits.clone().requires_grad_(True)
    clean = make()(c, target)
    clean.backward()
    x = bad.requires_grad_(True)
    value = make()(x, target)
    value.backward()
    assert torch.isfinite(value) and value.item() == pytest.approx(clean.item(), rel=1e-6)
    # every other pixel's gradient is untouched (the NaN logit's own gradient is its business)
    keep = torch.ones_like(x.grad, dtype=torch.bool)
    keep[0, :, 0, 0] = False
    torch.testing.assert_close(x.grad[keep], c.grad[keep], rtol=1e-5, atol=1e-8)


def test_double_precision_logits_with_class_weights():
    logits, target = _batch(seed=11)
    weights = [0.5, 2.0, 1.0]
    single = CrossEntropy(class_weight=weights)(logits, target)
    double = CrossEntropy(class_weight=weights)(logits.double(), target)
    assert double.item() == pytest.approx(single.item(), rel=1e-6)
    generic = CrossEntropy(class_weight=weights, selector=OhemSelector(1.0, 0))(logits.double(), target)
    assert generic.item() == pytest.approx(single.item(), rel=1e-6)


def test_fully_ignored_cells_are_never_drawn():
    # 4x6 image, 2x2 cells: the top-left cell is entirely ignored, the other 5 are valid
    # (one of them partly ignored); 19 valid pixels.
    target = torch.tensor([[[IGN, IGN, 0, 1, 1, 1],
                            [IGN, IGN, 0, 0, 1, IGN],
                            [2, 2, 0, 0, 1, 1],
                            [2, 0, 0, 0, 1, 1]]])
    valid = target != IGN
    safe = torch.where(valid, target, torch.zeros_like(target))
    for seed in range(12):
        a, z = LossSampler(0.4, "fraction", cell_size=2, seed=seed)(torch.zeros(1, 3, 4, 6), safe, valid,
                                                                    valid.float())
        assert (a[0, :2, :2] == 0).all()
        kept = a[0, ::2, ::2] > 0
        assert int(kept.sum()) == 2  # round(0.4 * 5 valid cells)
        assert set(a[a > 0].tolist()) == {2.5}  # 5 / 2
        assert z.item() == 19 and (a[~valid] == 0).all()


def test_cells_at_the_border_are_cropped():
    # 5x5 image with 2x2 cells: 3x3 cells, the last row and column are 1 pixel wide.
    target = torch.zeros(1, 5, 5, dtype=torch.long)
    valid = torch.ones_like(target, dtype=torch.bool)
    a, z = LossSampler(1.0, "fraction", cell_size=2, seed=0)(torch.zeros(1, 2, 5, 5), target, valid, valid.float())
    assert a.shape == (1, 5, 5) and (a == 1.0).all() and z.item() == 25
    a, _ = LossSampler(1 / 9, "fraction", cell_size=2, seed=0)(torch.zeros(1, 2, 5, 5), target, valid, valid.float())
    assert a.shape == (1, 5, 5) and set(a[a > 0].tolist()) == {9.0}
    assert int((a > 0).sum()) in (1, 2, 4)  # one cell: a corner, an edge or an inner cell


def test_ohem_threshold_is_strict():
    """"below thresh": a pixel whose true-class probability equals the threshold is not hard."""
    logits = torch.zeros(1, 2, 1, 3)  # every pixel: p = 1/2 exactly
    logits[0, 0, 0, 0] = -1.0  # p = sigmoid(-1) < 1/2
    target = torch.zeros(1, 1, 3, dtype=torch.long)
    keep = OhemSelector(thresh=0.5, min_kept=0).keep_mask(logits, target, torch.ones_like(target, dtype=torch.bool))
    assert keep.tolist() == [[[True, False, False]]]


@pytest.mark.parametrize("mode", ["bernoulli", "fraction"])
@pytest.mark.parametrize("cell_size", [1, 2])
def test_balanced_sampling_with_an_entirely_ignored_image(mode, cell_size):
    logits, target = _batch(seed=12, n=2, h=6, w=6, ignored=0.0)
    target[1] = IGN  # the second image has no valid pixel (e.g. all padding)
    target[0, :, :3] = 2  # and the first has no class 0 on its left half
    valid = target != IGN
    safe = torch.where(valid, target, torch.zeros_like(target))
    for seed in range(5):
        a, z = LossSampler(0.5, mode, cell_size, balance=True, seed=seed)(logits, safe, valid, valid.float())
        assert torch.isfinite(a).all() and torch.isfinite(z) and z.item() > 0
        assert (a[1] == 0).all()
    loss = CrossEntropy(selector=LossSampler(0.5, mode, cell_size, balance=True, seed=0))(logits, target)
    assert torch.isfinite(loss) and loss.item() > 0


def test_class_weights_of_any_numeric_type_become_float32():
    logits, target = _batch(seed=13)
    expected = CrossEntropy(class_weight=[1.0, 2.0, 3.0])(logits, target)
    for weights in ([1, 2, 3], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([1, 2, 3])):
        loss = CrossEntropy(class_weight=weights)
        assert loss.class_weight.dtype == torch.float32
        assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert "class_weight=[0.1235, 2.0]" in repr(CrossEntropy(class_weight=[0.123456, 2.0]))


@pytest.mark.parametrize("make", [lambda: Focal(), lambda: CrossEntropy(selector=OhemSelector(0.7, 1))], ids=["focal", "ohem"])
def test_generic_path_checks_its_inputs(make):
    logits, target = _batch(seed=14, n=2)
    with pytest.raises(ValueError, match="differ in batch or spatial size"):
        make()(logits, target[:1])
    with pytest.raises(TypeError, match="integer class labels"):
        make()(logits, target.float())


def test_fraction_sampling_keeps_at_least_one_cell_per_image():
    logits, target = _batch(seed=15, n=2, h=8, w=8, ignored=0.0)
    valid = torch.ones_like(target, dtype=torch.bool)
    a, z = LossSampler(0.001, "fraction", seed=0)(logits, target, valid, valid.float())  # round(0.064) = 0
    assert (a > 0).flatten(1).sum(1).tolist() == [1, 1] and set(a[a > 0].tolist()) == {64.0}


# --------------------------------------------------------------------------- precision and device
def test_ohem_ranks_half_precision_logits_in_float32():
    """Half-precision logits (a model run in float16): true-class probabilities 1/2 and
    sigmoid(2^-11) = 0.50012 are one float16 value but two different pixels to rank."""
    logits = torch.zeros(1, 2, 1, 3, dtype=torch.float16)
    logits[0, 0, 0, 1] = 2.0 ** -11
    logits[0, 0, 0, 2] = 3.0  # an easy pixel
    assert torch.sigmoid(logits[0, 0, 0, :2].float()).half().unique().numel() == 1  # the premise
    target = torch.zeros(1, 1, 3, dtype=torch.long)
    valid = torch.ones_like(target, dtype=torch.bool)
    keep = OhemSelector(thresh=0.1, min_kept=1).keep_mask(logits, target, valid)
    assert keep.tolist() == [[[True, False, False]]]


@pytest.mark.parametrize("mode", ["bernoulli", "fraction"])
def test_sampler_makes_its_tensors_on_the_inputs_device(mode):
    """Every tensor the sampler creates follows its inputs (the meta device: shapes only)."""
    meta = torch.device("meta")
    target = torch.zeros(2, 4, 6, dtype=torch.long, device=meta)
    valid = torch.ones(2, 4, 6, dtype=torch.bool, device=meta)
    a, z = LossSampler(0.5, mode)(torch.zeros(2, 3, 4, 6, device=meta), target, valid, valid.float())
    assert a.device == meta and z.device == meta and a.shape == (2, 4, 6)


def test_fraction_keeps_the_cells_with_the_lowest_draws(monkeypatch):
    """In each image the k valid cells with the lowest random draws are kept, whatever the image's
    index: in image 4, draws one float32 step apart are still told apart (4 + draw in float32 is not)."""
    n, w = 5, 8
    u = torch.rand(n, 1, w, generator=torch.Generator().manual_seed(0))
    u[4, 0] = 0.5 + 2.0 ** -24 * torch.arange(w - 1, -1, -1, dtype=torch.float64)  # exact in float32
    assert (4 + u[4, 0]).unique().numel() < w  # the premise: float32 keys would tie
    monkeypatch.setattr(LossSampler, "_uniform", lambda self, shape, device: u.reshape(shape).to(device))
    target = torch.zeros(n, 1, w, dtype=torch.long)
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[1, 0, 0] = False
    a, _ = LossSampler(0.25, "fraction", seed=0)(torch.zeros(n, 2, 1, w), target, valid, valid.float())
    for b in range(n):
        cells = [i for i in range(w) if valid[b, 0, i]]
        lowest = sorted(cells, key=lambda i: float(u[b, 0, i]))[: round(0.25 * len(cells))]
        assert sorted((a[b, 0] > 0).nonzero().flatten().tolist()) == sorted(lowest), b


@pytest.mark.parametrize("make", [
    lambda **kw: CrossEntropy(**kw),  # the fused path
    lambda **kw: CrossEntropy(selector=OhemSelector(0.7, 5), **kw),  # the generic path
    lambda **kw: Focal(gamma=2.0, **kw),
], ids=["ce", "ohem", "focal"])
@pytest.mark.parametrize("kwargs", [{}, {"normalize": False}, {"class_weight": [0.5, 2.0, 1.0]}],
                         ids=["mean", "sum", "weighted"])
def test_half_precision_logits_give_a_float32_loss_computed_in_float32(make, kwargs):
    """A model run in float16 (without autocast): the loss is computed in float32 and returned
    as float32, so it neither loses precision nor overflows (a float16 sum over 300 x 300 pixels
    would be inf: float16 ends at 65504)."""
    logits, target = _batch(seed=16, n=2, h=10, w=12)
    half = logits.half()
    got = make(**kwargs)(half, target)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(make(**kwargs)(half.float(), target).item(), rel=1e-6)
    # ... also when the loss module itself was converted with .half() (its class weights too)
    assert make(**kwargs).half()(half, target).item() == pytest.approx(got.item(), rel=1e-6)
    big = torch.zeros(1, 3, 300, 300, dtype=torch.float16)
    big[:, 0] = 4.0  # every pixel predicts class 0 with p = 0.965, and is labelled 1: loss 4.05 each
    value = make(**kwargs)(big, torch.ones(1, 300, 300, dtype=torch.long))
    assert torch.isfinite(value)


def test_median_frequency_with_a_one_pixel_class_and_mostly_absent_classes():
    """By hand: class 0 has 1 pixel in images of 10 pixels (f = 0.1), class 1 30 of 60 (f = 0.5),
    classes 2-4 never occur. median f = 0.3 -> raw 3 and 0.6, scaled to mean 1 over the present
    classes; absent classes 0 (a median taken over the absent zeros would be 0)."""
    from segkit.modeling.losses import class_weights_from_counts

    got = class_weights_from_counts([1, 30, 0, 0, 0], "median_frequency", pixels_where_present=[10, 60, 0, 0, 0])
    assert got == pytest.approx([3 / 1.8, 0.6 / 1.8, 0.0, 0.0, 0.0])
