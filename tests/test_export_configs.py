"""Every FashionScenes config exports with dynamic H, W and matches PyTorch; the Predictor runs its CRF chain."""
import glob
import os
import warnings

import numpy as np
import pytest
import torch

import segkit
from segkit.config import load_config
from segkit.data import DatasetCatalog
from segkit.export import check_parity, export
from segkit.postprocess import build_inference, build_postprocessor_chain
from segkit.predictor import read_image

from model_fixtures import perturbed_model

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "fashion_scenes")
MAIN = os.path.join(CONFIG_DIR, "main.yaml")
OTHERS = sorted(f for f in glob.glob(os.path.join(CONFIG_DIR, "*.yaml")) if not os.path.basename(f).startswith("Base") and f != MAIN)


def _images():
    v = [read_image(r["file_name"], "RGB") for r in DatasetCatalog.get("fashion_scenes_val")[:2]]
    return [v[0], np.ascontiguousarray(v[1][5:50, 7:68]), np.ascontiguousarray(np.concatenate(v, 1)[:100])]


def _check(config_file, fmt, tmp_path):
    cfg = load_config(config_file, ["MODEL.DEVICE", "cpu", "POSTPROCESS.CHAIN", "[]"])
    model = perturbed_model(cfg)
    path = export(cfg, None, fmt, str(tmp_path / f"m.{fmt}"), with_probs=True, model=model)
    report = check_parity(cfg, None, path, _images(), model=model)
    assert report.sizes == [(128, 128), (45, 61), (100, 256)]
    assert report.pixel_agreement >= 0.9999, report
    # Disagreements only on near-ties; probabilities within float32 kernel differences.
    assert report.max_margin_at_disagreement < 1e-3, report
    assert report.max_prob_diff < (1e-6 if fmt == "torchscript" else 1e-3), report


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_main_config(fmt, tmp_path):
    _check(MAIN, fmt, tmp_path)


# ONNX only: TorchScript traces the same graph and is bit-identical to eager PyTorch,
# while the ONNX export adds the symbolic-shape translation that can go wrong.
@pytest.mark.slow
@pytest.mark.parametrize("config_file", OTHERS, ids=[os.path.basename(f) for f in OTHERS])
def test_other_configs_onnx(config_file, tmp_path):
    _check(config_file, "onnx", tmp_path)


def test_predictor_applies_the_crf_chain_of_main_config(tmp_path):
    cfg = load_config(MAIN, ["MODEL.DEVICE", "cpu"])
    assert list(cfg.POSTPROCESS.CHAIN) == ["DenseCRF"]
    model = perturbed_model(cfg)
    weights = str(tmp_path / "w.pth")
    torch.save({"model": model.state_dict()}, weights)
    image = _images()[1]
    predictor = segkit.Predictor(cfg, weights=weights)
    pred = predictor(image, return_probs=True)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        # The model the Predictor runs (optimised; its eager parity is tested in test_inference_fast_path).
        plain = build_inference(cfg, predictor.model)(batch)
        refined = build_postprocessor_chain(cfg)(plain, batch)[0].numpy()
    np.testing.assert_allclose(pred.probs, refined, atol=1e-5)
    assert np.abs(refined - plain[0].numpy()).max() > 0.05  # the CRF did change the probabilities
