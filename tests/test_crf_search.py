"""CRF parameter search core, its config fragment, and the command-line tool's wiring."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from segkit.config import load_config
from segkit.postprocess import DenseCRF, build_postprocessor_chain
from segkit.postprocess.crf_search import CRFSearchResult, crf_config_fragment, crf_grid_search, mean_iou
from segkit.postprocess.dense_crf import CRFParams

PHOTOS = os.path.join(os.path.dirname(__file__), "data", "photos")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _problem(name, size, k, seed):
    """(image (3,H,W) uint8, noisy softmax (k,H,W), colour-cluster truth (H,W)) from a photo."""
    image = cv2.cvtColor(cv2.imread(os.path.join(PHOTOS, name)), cv2.COLOR_BGR2RGB)
    image = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    pixels = image.reshape(-1, 3).astype(np.float32)
    cv2.setRNGSeed(seed)
    _, _, centres = cv2.kmeans(pixels, k, None, (cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0), 2, cv2.KMEANS_PP_CENTERS)
    dist = ((image[None].astype(np.float32) - centres[:, None, None]) ** 2).sum(-1)
    truth = dist.argmin(0)
    truth[:3] = 255  # an ignored band, as in real annotations
    logits = -dist / 800.0 + np.random.default_rng(seed).normal(0.0, 1.5, dist.shape)
    probs = torch.softmax(torch.from_numpy(logits).float(), 0)
    return torch.from_numpy(image).permute(2, 0, 1).contiguous(), probs, torch.from_numpy(truth).long()


@pytest.fixture(scope="module")
def problems():
    return [_problem("chelsea.png", (96, 64), 3, 0), _problem("coffee_300x200.png", (96, 64), 3, 1)]


def test_mean_iou_on_a_hand_computed_case():
    pred = torch.tensor([[0, 0, 1, 1]])
    truth = torch.tensor([[0, 1, 1, 255]])
    # class 0: tp 1, union 2 -> 0.5; class 1: tp 1, union 2 -> 0.5; class 2 absent.
    assert mean_iou([pred], [truth], 3) == pytest.approx(0.5)


def test_grid_search_finds_a_setting_that_beats_the_network(problems):
    images, probs, labels = map(list, zip(*problems))
    grid = {"w1": [0.5, 5.0], "theta_alpha": [20.0, 60.0], "theta_beta": [4.0, 60.0]}
    seen, runs = [], []
    best, results, baseline = crf_grid_search(images, probs, labels, 3, grid=grid, iterations=5, progress=seen.append,
                                              on_runs=runs.append)
    assert len(results) == 8 and seen == results
    assert runs == [8] * len(images)  # one call per image, with the runs of every setting
    assert best == max(results, key=lambda r: r.miou)
    assert best.miou > baseline + 0.02, (best.miou, baseline)
    # A colour-blind appearance kernel (theta_beta = 60) smooths across object edges.
    by = {(r.params.w1, r.params.theta_alpha, r.params.theta_beta): r.miou for r in results}
    assert by[(5.0, 60.0, 4.0)] > by[(5.0, 60.0, 60.0)]
    assert (best.params.w2, best.params.theta_gamma, best.params.iterations) == (3.0, 3.0, 5)


def test_refinement_halves_the_step_around_the_best(problems):
    images, probs, labels = map(list, zip(*problems[:1]))
    grid = {"w1": [4.0], "theta_alpha": [40.0, 80.0], "theta_beta": [5.0]}
    best, results, _ = crf_grid_search(images, probs, labels, 3, grid=grid, iterations=2, refine=True)
    alphas = [r.params.theta_alpha for r in results]
    first = alphas[:2]
    assert first == [40.0, 80.0]
    centre = max(results[:2], key=lambda r: r.miou).params.theta_alpha
    assert sorted(alphas[2:]) == [centre - 20.0, centre + 20.0]


def test_mismatched_inputs_are_refused(problems):
    image, probs, label = problems[0]
    with pytest.raises(ValueError, match="same positive number"):
        crf_grid_search([image], [probs, probs], [label], 3)


def test_fragment_is_a_usable_config(tmp_path):
    best = CRFSearchResult(CRFParams(w1=5.0, theta_alpha=70.0, theta_beta=4.0), 0.61)
    fragment = tmp_path / "crf.yaml"
    fragment.write_text(crf_config_fragment(best, comment="searched on 2 images\nmIoU 0.50 -> 0.61"))
    assert fragment.read_text().startswith("# searched on 2 images\n# mIoU 0.50 -> 0.61\n")
    model = tmp_path / "model.yaml"
    model.write_text("MODEL:\n  NUM_CLASSES: 11\n")
    combined = tmp_path / "with_crf.yaml"
    combined.write_text("_BASE_: [model.yaml, crf.yaml]\nPOSTPROCESS:\n  CRF:\n    ITERATIONS: 5\n")
    cfg = load_config(str(combined), load_plugins=False)
    assert cfg.MODEL.NUM_CLASSES == 11 and cfg.POSTPROCESS.CHAIN == ["DenseCRF"]
    assert (cfg.POSTPROCESS.CRF.W1, cfg.POSTPROCESS.CRF.THETA_ALPHA, cfg.POSTPROCESS.CRF.THETA_BETA) == (5.0, 70.0, 4.0)
    (crf,) = build_postprocessor_chain(cfg).steps
    assert isinstance(crf, DenseCRF) and crf.params == CRFParams(5.0, 70.0, 4.0, 3.0, 3.0, 5)


def test_tool_help_lists_its_options():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "crf_search.py"), "--help"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    for option in ("--config-file", "--weights", "--num-images", "--w1", "--theta-alpha", "--theta-beta", "--output"):
        assert option in out


def test_mean_iou_counts_a_class_seen_once_and_refuses_labels_out_of_range():
    # class 0: tp 2, union 3; class 1 only predicted once: tp 0, union 1 -> IoU 0 (it counts).
    assert mean_iou([torch.tensor([0, 0, 1])], [torch.tensor([0, 0, 0])], 2) == pytest.approx((2 / 3 + 0.0) / 2)
    assert np.isnan(mean_iou([torch.tensor([1, 1])], [torch.tensor([7, 7])], 2, ignore_label=7))  # nothing scored
    for bad in (2, -1):
        with pytest.raises(ValueError, match=r"labels outside \[0, 2\) other than the ignore value 255"):
            mean_iou([torch.tensor([0, 1])], [torch.tensor([0, bad])], 2)


def test_deeplab_grid_is_the_paper_s_first_round():
    from segkit.postprocess.crf_search import DEEPLAB_GRID

    # DeepLab v2 sec. 4.1: w1 in [3:6], theta_alpha in [30:10:100], theta_beta in [3:6] (MATLAB ranges)
    assert DEEPLAB_GRID == {"w1": (3.0, 4.0, 5.0, 6.0),
                            "theta_alpha": (30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0),
                            "theta_beta": (3.0, 4.0, 5.0, 6.0)}


def test_fragment_keeps_the_keys_in_reading_order():
    best = CRFSearchResult(CRFParams(w1=5.0, theta_alpha=70.0, theta_beta=4.0, iterations=7), 0.61)
    assert crf_config_fragment(best) == (
        "POSTPROCESS:\n  CHAIN:\n  - DenseCRF\n  CRF:\n    BACKEND: native\n    W1: 5.0\n    THETA_ALPHA: 70.0\n"
        "    THETA_BETA: 4.0\n    W2: 3.0\n    THETA_GAMMA: 3.0\n    ITERATIONS: 7\n")
