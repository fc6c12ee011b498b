"""benchmarks/models.py's product comparison builds its three pipelines from the default config."""
import argparse

import numpy as np
import pytest
import torch

from script_loader import load_script


@pytest.fixture(scope="module")
def models_bench():
    return load_script("benchmarks/models.py", "segkit_bench_models")


@pytest.mark.filterwarnings("ignore")
def test_product_runners_build_and_label_every_pixel(models_bench, tmp_path, monkeypatch):
    # The peer model belongs to no dataset: the default datasets' class count must not block it.
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    runners = models_bench._product_runners(argparse.Namespace(), torch.device("cpu"), str(tmp_path))
    assert {"segkit Predictor", "torchvision fcn_resnet50", "torchvision + segkit threads"} <= set(runners)
    image = np.random.default_rng(0).integers(0, 256, (33, 41, 3), dtype=np.uint8)
    for name, run in runners.items():
        labels = np.asarray(run(image))
        assert labels.shape == (33, 41), name
        assert labels.min() >= 0 and labels.max() < 21, name


def test_no_peers_measures_only_the_chosen_configs(models_bench, monkeypatch):
    # --no-peers: no torchvision/segkit FCN-R50 comparison; a glob matching no config measures no model.
    monkeypatch.setattr(models_bench, "gemm_rates", lambda device, repeats=10: {"torch.mm": 1.0})
    monkeypatch.setattr(models_bench, "peer_entries", lambda *a: pytest.fail("peers measured despite --no-peers"))
    args = argparse.Namespace(device="cpu", no_peers=True, products_only=False, peers_only=False,
                              configs=["configs/voc/no_such_model*.yaml"], gemm_repeats=1, no_products=True,
                              size=16, batch=1, repeats=1, target=0.85)
    result = models_bench.run(args)
    assert result["models"] == [] and result["best_gemm_gflops"] == 1.0
