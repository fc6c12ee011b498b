"""Products get the optimised model (BN folded, channels-last) by default, with eager parity."""
import os

import numpy as np
import pytest
import torch

import segkit
from segkit.config import load_config
from segkit.data import DatasetCatalog
from segkit.export import build_export_model, check_parity, export
from segkit.modeling.optimize import is_batchnorm, prepare_for_inference
from segkit.predictor import read_image

from model_fixtures import perturbed_model

MAIN = os.path.join(os.path.dirname(__file__), "..", "configs", "fashion_scenes", "main.yaml")


def _images():
    v = [read_image(r["file_name"], "RGB") for r in DatasetCatalog.get("fashion_scenes_val")[:2]]
    return [v[0], np.ascontiguousarray(v[1][5:50, 7:68])]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = load_config(MAIN, ["MODEL.DEVICE", "cpu", "POSTPROCESS.CHAIN", "[]"])
    model = perturbed_model(cfg)
    # Non-trivial running statistics, so that folding them really changes the weights.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if is_batchnorm(m):
                m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.mul_(torch.empty(m.running_var.shape).uniform_(0.5, 1.5, generator=gen))
    path = tmp_path_factory.mktemp("fast") / "w.pth"
    torch.save({"model": model.state_dict()}, path)
    eager_cfg = cfg.clone()
    eager_cfg.TEST.OPTIMIZE_MODEL = False
    return cfg, eager_cfg, str(path)


def _batchnorms(model):
    return sum(1 for m in model.modules() if is_batchnorm(m))


def test_prepare_for_inference_follows_the_config_key(setup):
    cfg, eager_cfg, weights = setup
    fast, eager = build_export_model(cfg, weights), build_export_model(eager_cfg, weights)
    assert not fast.training and not eager.training
    assert _batchnorms(eager) > 0 and _batchnorms(fast) == 0
    assert fast.folded_batchnorms == _batchnorms(eager)
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # Off: the same module back, untouched apart from eval().
    model = perturbed_model(eager_cfg).train()
    assert prepare_for_inference(model, eager_cfg) is model and not model.training and _batchnorms(model) > 0


def test_predictor_uses_the_optimised_model_with_eager_parity(setup):
    cfg, eager_cfg, weights = setup
    fast, eager = segkit.Predictor(cfg, weights=weights), segkit.Predictor(eager_cfg, weights=weights)
    assert _batchnorms(fast.model) == 0 and _batchnorms(eager.model) > 0
    agree, total, worst = 0, 0, 0.0
    for image in _images():
        a, b = fast(image, return_probs=True), eager(image, return_probs=True)
        agree += int((a.labels == b.labels).sum())
        total += a.labels.size
        worst = max(worst, float(np.abs(a.probs - b.probs).max()))
    assert agree / total >= 0.9999
    assert worst < 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_pipeline_is_optimised_and_matches_the_eager_model(setup, fmt, tmp_path):
    cfg, eager_cfg, weights = setup
    path = export(cfg, weights, fmt, str(tmp_path / f"m.{fmt}"), with_probs=True)
    if fmt == "onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(path).graph.node}
        assert "BatchNormalization" not in ops  # folded before export
    report = check_parity(eager_cfg, weights, path, _images())  # reference: the eager model
    assert report.pixel_agreement >= 0.9999, report
    assert report.max_prob_diff < 1e-4, report


def test_predictor_threads_follow_the_policy_and_the_config_key(setup):
    cfg, _, weights = setup
    image = _images()[1][:8, :8]  # 64 pixels: far below one thread's grain
    for key, expected in ((0, 1), (3, 3)):
        c = cfg.clone()
        c.TEST.NUM_THREADS = key
        pred = segkit.Predictor(c, weights=weights)
        seen = []
        pred.model.register_forward_pre_hook(lambda m, args: seen.append(torch.get_num_threads()))
        before = torch.get_num_threads()
        pred(image)
        # Every forward pass (one per test-time scale and flip the config asks for) ran with them.
        assert seen and set(seen) == {expected} and torch.get_num_threads() == before


@pytest.mark.parametrize("busy, expected", [(0, 2), (2, 4)])
def test_predictor_model_calls_are_long_ops(setup, monkeypatch, busy, expected):
    """2 cores: every core when quiet, twice the cores beside a competing process (segkit.utils.threads)."""
    import segkit.utils.threads as threads

    cfg, _, weights = setup
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "other_runnable", lambda: busy)
    pred = segkit.Predictor(cfg, weights=weights)
    seen = []
    pred.model.register_forward_pre_hook(lambda m, args: seen.append(torch.get_num_threads()))
    pred(np.zeros((160, 160, 3), np.uint8))  # 160x160 pixels: work for 6 threads of 64x64
    # Every forward pass (one per test-time scale and flip) ran with them.
    assert seen and set(seen) == {expected}


def test_thread_counts_do_not_change_predictions(setup):
    """1, 2 and 4 intra-op threads (quiet, the old and the new count under load): the same labels."""
    cfg, _, weights = setup
    image = _images()[0]
    runs = {}
    for n in (1, 2, 4):
        c = cfg.clone()
        c.TEST.NUM_THREADS = n
        runs[n] = segkit.Predictor(c, weights=weights)(image, return_probs=True)
    for n in (2, 4):
        assert np.array_equal(runs[n].labels, runs[1].labels)
        np.testing.assert_allclose(runs[n].probs, runs[1].probs, atol=1e-5)


def test_batchnorm_subclasses_that_do_more_are_not_folded():
    # timm's BatchNormAct2d is a BatchNorm2d subclass that also applies its activation:
    # folding it into the convolution would drop the activation.
    from torch import nn

    from segkit.modeling.optimize import optimize_for_inference

    class BatchNormReLU(nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), BatchNormReLU(4), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    assert torch.relu(model[1](model[0](x))).min() >= 0 and (model[1](model[0](x)) == 0).any()
    assert not is_batchnorm(model[1]) and is_batchnorm(model[3])
    fast = optimize_for_inference(model, inplace=False)
    torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(fast[1], BatchNormReLU)  # kept, with its activation
