"""Solver: parameter groups, optimizers, schedules against their formulas, resume, clipping."""
import io
import math

import pytest
import torch
from torch import nn

from segkit.config import get_cfg
from segkit.registry import LR_SCHEDULER_REGISTRY, OPTIMIZER_REGISTRY
from segkit.solver import LRMultiplier, build_lr_scheduler, build_optimizer, clip_gradients, get_param_groups


class FrozenBatchNorm2d(nn.Module):  # recognised as a norm layer by its class name
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))


def _model():
    torch.manual_seed(0)
    m = nn.Module()
    m.backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False), FrozenBatchNorm2d(4)
    )
    m.head = nn.Module()
    m.head.conv = nn.Conv2d(4, 4, 3)
    m.head.gn = nn.GroupNorm(2, 4)
    m.head.predictor = nn.Conv2d(4, 2, 1)
    return m


def _cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.MAX_ITER = 20
    for k, v in solver.items():
        node = cfg.SOLVER
        *parents, leaf = k.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return cfg


def _hyper(optimizer, model):
    """parameter name -> (lr, weight_decay) of its group."""
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    return {n: by_id.get(id(p)) for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- parameter groups
def test_multipliers_norm_and_bias_rules():
    model = _model()
    cfg = _cfg(WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0, WEIGHT_DECAY_BIAS=0.0, BIAS_LR_FACTOR=2.0,
               PARAM_GROUPS=[{"PATTERN": r"head\.predictor\..*", "LR_MULT": 10.0},
                             {"PATTERN": r"head\..*", "LR_MULT": 3.0, "WEIGHT_DECAY_MULT": 0.5}])
    h = _hyper(build_optimizer(cfg, model), model)
    assert h["backbone.0.weight"] == pytest.approx((0.1, 1e-4))
    assert h["backbone.0.bias"] == pytest.approx((0.2, 0.0))
    assert h["backbone.1.weight"] == pytest.approx((0.1, 0.0))  # BatchNorm
    assert h["backbone.1.bias"] == pytest.approx((0.2, 0.0))
    assert h["backbone.3.weight"] == pytest.approx((0.1, 0.0))  # FrozenBatchNorm2d by name
    assert h["head.predictor.weight"] == pytest.approx((1.0, 1e-4))  # first rule wins: 10x, decay x1
    assert h["head.predictor.bias"] == pytest.approx((2.0, 0.0))
    assert h["head.conv.weight"] == pytest.approx((0.3, 0.5e-4))
    assert h["head.gn.weight"] == pytest.approx((0.3, 0.0))  # GroupNorm: norm decay (0) x 0.5


def test_default_decay_applies_to_bias_and_not_to_norm():
    model = _model()
    h = _hyper(build_optimizer(_cfg(WEIGHT_DECAY=5e-4), model), model)
    assert h["backbone.0.bias"] == pytest.approx((0.1, 5e-4))
    assert h["backbone.1.weight"] == pytest.approx((0.1, 0.0))
    h = _hyper(build_optimizer(_cfg(WEIGHT_DECAY=5e-4, WEIGHT_DECAY_NORM=5e-4), model), model)
    assert h["backbone.1.weight"] == pytest.approx((0.1, 5e-4))


def test_groups_are_merged_frozen_params_skipped_and_order_stable():
    model = _model()
    model.backbone[0].weight.requires_grad_(False)
    groups = get_param_groups(model, 0.1, 1e-4, rules=[(r"head\..*", 10.0, 1.0)])
    names = {id(p): n for n, p in model.named_parameters()}
    flat = [names[id(p)] for g in groups for p in g["params"]]
    assert "backbone.0.weight" not in flat and len(flat) == len(set(flat)) == 12
    assert len(groups) == 4  # (0.1, 1e-4), (0.1, 0), (1.0, 1e-4), (1.0, 0)
    again = get_param_groups(model, 0.1, 1e-4, rules=[(r"head\..*", 10.0, 1.0)])
    assert [[names[id(p)] for p in g["params"]] for g in again] == [[names[id(p)] for p in g["params"]] for g in groups]


def test_sgd_step_uses_the_group_learning_rates():
    model = _model()
    cfg = _cfg(MOMENTUM=0.0, WEIGHT_DECAY=0.0, PARAM_GROUPS=[{"PATTERN": r"head\.predictor\.weight", "LR_MULT": 10.0}])
    opt = build_optimizer(cfg, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    after = dict(model.named_parameters())
    step = before["head.predictor.weight"] - after["head.predictor.weight"]
    assert torch.allclose(step, torch.full((2, 4, 1, 1), 1.0))
    assert torch.allclose(before["head.conv.weight"] - after["head.conv.weight"], torch.full((4, 4, 3, 3), 0.1))


def test_bad_patterns_and_names_are_explained():
    with pytest.raises(ValueError, match="matches no trainable parameter.*backbone.0.weight"):
        build_optimizer(_cfg(PARAM_GROUPS=[{"PATTERN": r"haed\..*", "LR_MULT": 10.0}]), _model())
    with pytest.raises(ValueError, match="unknown field"):
        build_optimizer(_cfg(PARAM_GROUPS=[{"PATTERN": "head.*", "LR": 10.0}]), _model())
    with pytest.raises(KeyError, match="Did you mean 'SGD'"):
        build_optimizer(_cfg(OPTIMIZER="sgd"), _model())


def test_adamw_option():
    opt = build_optimizer(_cfg(OPTIMIZER="AdamW", WEIGHT_DECAY=0.05, ADAM_BETAS=[0.8, 0.99]), _model())
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.99)
    assert {"SGD", "AdamW"} <= set(OPTIMIZER_REGISTRY.keys())


# --------------------------------------------------------------------------- schedules
def _lrs(cfg, iters):
    """Learning rates of [weight, bias] at each iteration, the bias with a 10x multiplier."""
    model = nn.Linear(2, 2)
    cfg.SOLVER.PARAM_GROUPS = [{"PATTERN": "bias", "LR_MULT": 10.0}]
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    out = []
    for _ in range(iters):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def _poly(it, max_iter=20, power=0.9):
    return (1 - min(it, max_iter) / max_iter) ** power


@pytest.mark.parametrize(
    "keys, formula",
    [
        ({}, lambda it: _poly(it)),
        ({"POLY_POWER": 1.0}, lambda it: 1 - min(it, 20) / 20),
        ({"WARMUP_ITERS": 5, "WARMUP_FACTOR": 0.1}, lambda it: _poly(it) * (0.1 + 0.9 * it / 5 if it < 5 else 1.0)),
        ({"WARMUP_ITERS": 4, "WARMUP_FACTOR": 0.2, "WARMUP_METHOD": "constant"},
         lambda it: _poly(it) * (0.2 if it < 4 else 1.0)),
        ({"LR_SCHEDULER_NAME": "MultiStepLR", "STEPS": [5, 12], "GAMMA": 0.5},
         lambda it: 1.0 if it < 5 else 0.5 if it < 12 else 0.25),
        ({"LR_SCHEDULER_NAME": "CosineLR"}, lambda it: 0.5 * (1 + math.cos(math.pi * min(it, 20) / 20))),
        ({"LR_SCHEDULER_NAME": "ConstantLR", "WARMUP_ITERS": 2, "WARMUP_FACTOR": 0.5},
         lambda it: 0.75 if it == 1 else 0.5 if it == 0 else 1.0),
    ],
    ids=["poly", "poly1", "poly_warmup", "poly_const_warmup", "multistep", "cosine", "constant"],
)
def test_learning_rates_follow_the_formula(keys, formula):
    lrs = _lrs(_cfg(**keys), 24)  # runs past MAX_ITER=20: the schedule holds its final value
    for it, (weight_lr, bias_lr) in enumerate(lrs):
        assert weight_lr == pytest.approx(0.1 * formula(it), rel=1e-9, abs=1e-15), it
        assert bias_lr == pytest.approx(1.0 * formula(it), rel=1e-9, abs=1e-15), it


def test_poly_values_at_given_iterations():
    lrs = _lrs(_cfg(), 21)
    assert lrs[0][0] == 0.1
    assert lrs[10][0] == pytest.approx(0.1 * 0.5**0.9)
    assert lrs[15][0] == pytest.approx(0.1 * 0.25**0.9)
    assert lrs[20][0] == 0.0


def test_state_dict_resume_gives_identical_learning_rates():
    cfg = _cfg(WARMUP_ITERS=4, WARMUP_FACTOR=0.01)
    full = _lrs(cfg, 20)
    model = nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(7):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2 = nn.Linear(2, 2)
    opt2 = build_optimizer(cfg, model2)
    sched2 = build_lr_scheduler(cfg, opt2)
    sched2.load_state_dict(ckpt["scheduler"])  # even before the optimizer, the lr is the iteration-7 one
    assert [g["lr"] for g in opt2.param_groups] == full[7]
    opt2.load_state_dict(ckpt["optimizer"])
    resumed = []
    for _ in range(7, 20):
        resumed.append([g["lr"] for g in opt2.param_groups])
        opt2.step()
        sched2.step()
    assert resumed == full[7:]


def test_resume_with_another_max_iter_is_refused():
    opt = build_optimizer(_cfg(), nn.Linear(2, 2))
    state = build_lr_scheduler(_cfg(), opt).state_dict()
    other = build_lr_scheduler(_cfg(MAX_ITER=30), build_optimizer(_cfg(MAX_ITER=30), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="MAX_ITER=20"):
        other.load_state_dict(state)


def test_schedule_errors():
    with pytest.raises(ValueError, match="SOLVER.STEPS"):
        _lrs(_cfg(LR_SCHEDULER_NAME="MultiStepLR", STEPS=[12, 5]), 1)
    # A warm-up longer than the run (a smoke run of a long config) is clamped to it, with a warning.
    with pytest.warns(UserWarning, match=r"WARMUP_ITERS \(50\) exceeds SOLVER.MAX_ITER \(20\)"):
        clamped = _lrs(_cfg(WARMUP_ITERS=50), 20)
    assert clamped == _lrs(_cfg(WARMUP_ITERS=20), 20)
    with pytest.raises(KeyError, match="Did you mean 'PolyLR'"):
        _lrs(_cfg(LR_SCHEDULER_NAME="WarmupPolyLR"), 1)
    assert {"PolyLR", "MultiStepLR", "CosineLR", "ConstantLR"} <= set(LR_SCHEDULER_REGISTRY.keys())
    assert isinstance(build_lr_scheduler(_cfg(), build_optimizer(_cfg(), nn.Linear(2, 2))), LRMultiplier)


# --------------------------------------------------------------------------- clipping
def _grads():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, -0.5]), torch.tensor([0.0, 4.0])
    return [a, b, nn.Parameter(torch.zeros(1))]  # the last has no gradient


def test_clip_by_norm():
    params = _grads()
    total = clip_gradients(_cfg(CLIP_GRADIENTS__ENABLED=True, CLIP_GRADIENTS__CLIP_VALUE=2.5), iter(params))
    norm = math.sqrt(9 + 0.25 + 16)
    assert total.item() == pytest.approx(norm)
    assert params[0].grad.tolist() == pytest.approx([3.0 * 2.5 / norm, -0.5 * 2.5 / norm], rel=1e-5)
    assert params[1].grad.tolist() == pytest.approx([0.0, 4.0 * 2.5 / norm], rel=1e-5)


def test_clip_by_value_and_disabled():
    params = _grads()
    assert clip_gradients(_cfg(), params) is None and params[0].grad.tolist() == [3.0, -0.5]
    cfg = _cfg(CLIP_GRADIENTS__ENABLED=True, CLIP_GRADIENTS__CLIP_TYPE="value", CLIP_GRADIENTS__CLIP_VALUE=1.0)
    assert clip_gradients(cfg, params) is None
    assert params[0].grad.tolist() == [1.0, -0.5] and params[1].grad.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        clip_gradients(_cfg(CLIP_GRADIENTS__ENABLED=True, CLIP_GRADIENTS__CLIP_TYPE="l2"), params)


def test_everything_is_selectable_from_yaml(tmp_path):
    from segkit.config import load_config, save_config

    path = tmp_path / "solver.yaml"
    path.write_text(
        "SOLVER:\n"
        "  OPTIMIZER: SGD\n"
        "  BASE_LR: 0.01\n"
        "  MAX_ITER: 10\n"
        "  WEIGHT_DECAY_BIAS: 0.0\n"
        "  PARAM_GROUPS:\n"
        "    - {PATTERN: \"head\\\\..*\", LR_MULT: 10.0}\n"
        "  LR_SCHEDULER_NAME: PolyLR\n"
        "  WARMUP_ITERS: 2\n"
        "  WARMUP_FACTOR: 0.5\n"
        "  CLIP_GRADIENTS: {ENABLED: true, CLIP_TYPE: value, CLIP_VALUE: 0.5}\n"
    )
    cfg = load_config(str(path), load_plugins=False)
    cfg = load_config(save_config(cfg, str(tmp_path / "out")), load_plugins=False)  # survives a round trip
    model = _model()
    opt = build_optimizer(cfg, model)
    h = _hyper(opt, model)
    assert h["head.predictor.weight"] == pytest.approx((0.1, 5e-4))
    assert h["backbone.0.bias"] == pytest.approx((0.01, 0.0))
    build_lr_scheduler(cfg, opt)  # sets the iteration-0 learning rates: warmup factor 0.5
    h = _hyper(opt, model)
    assert h["head.predictor.weight"][0] == pytest.approx(0.05) and h["backbone.0.bias"][0] == pytest.approx(0.005)
    params = _grads()
    assert clip_gradients(cfg, params) is None and params[1].grad.tolist() == [0.0, 0.5]
