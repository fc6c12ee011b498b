"""Class statistics: counts (segkit.data), the three weightings (segkit.modeling.losses), the JSON file and the tool."""

import numpy as np
import pytest

from data_fixtures import layouts
from segkit.data.catalog import register_semseg, DatasetCatalog, MetadataCatalog
from segkit.data.class_stats import compute_class_stats, count_pixels, load_class_stats, summarize_counts
from segkit.modeling.losses import class_weights_from_counts, load_class_weights
from segkit.data.datasets.voc import load_voc_semseg


@pytest.fixture
def tiny(tmp_path):
    masks = layouts.write_voc(str(tmp_path), {"train": ["a", "b", "c"]}, size=(10, 12), labels=(0, 1, 2))
    return load_voc_semseg(str(tmp_path / "VOCdevkit" / "VOC2012"), "train"), masks


@pytest.mark.parametrize("workers", [1, 2])
def test_counts_match_numpy_and_exclude_ignore(tiny, workers):
    records, masks = tiny
    per_image = count_pixels(records, 3, workers=workers, progress=False)
    for row, key in zip(per_image, ["a", "b", "c"]):
        m = masks[key]
        assert row.tolist() == [int((m == k).sum()) for k in range(3)]
    assert per_image.sum() == sum(int((m != 255).sum()) for m in masks.values())


def test_weights_by_hand():
    # Two images: image 0 has 90 px of class 0 and 10 of class 1; image 1 has 50 px of class 0 and 50 of class 2.
    per_image = np.array([[90, 10, 0, 0], [50, 0, 50, 0]])
    s = summarize_counts(per_image)
    assert s["pixel_counts"] == [140, 10, 50, 0] and s["image_counts"] == [2, 1, 1, 0]
    assert s["pixels_where_present"] == [200, 100, 100, 0]
    w = {m: class_weights_from_counts(s["pixel_counts"], m, 0.9, s["pixels_where_present"])
         for m in ("inverse_frequency", "median_frequency", "effective_number")}
    f = np.array([140, 10, 50]) / 200
    inv = 1 / f
    np.testing.assert_allclose(w["inverse_frequency"][:3], inv / inv.mean())
    assert w["inverse_frequency"][3] == 0.0  # absent class
    # Eigen & Fergus: freq(c) over images where c occurs: class 0: 140/200, class 1: 10/100, class 2: 50/100.
    fp = np.array([0.7, 0.1, 0.5])
    med = np.median(fp) / fp
    np.testing.assert_allclose(w["median_frequency"][:3], med / med.mean())
    eff = (1 - 0.9) / (1 - 0.9 ** np.array([140.0, 10.0, 50.0]))
    np.testing.assert_allclose(w["effective_number"][:3], eff / eff.mean())
    assert w["effective_number"][1] > w["effective_number"][2] > w["effective_number"][0]


def test_stats_file_has_the_contract_keys(tiny, tmp_path):
    records, _ = tiny
    stats = compute_class_stats(records, ["bg", "x", "y"], "tiny", workers=1, progress=False)
    assert set(stats) >= {"dataset", "classes", "pixel_counts", "frequency", "image_counts", "pixels_where_present"}
    assert "weights" not in stats  # segkit.data counts; the losses turn counts into weights
    assert abs(sum(stats["frequency"]) - 1) < 1e-9 and stats["num_images"] == 3
    # The losses read the counts file: every method is derivable from it.
    path = tmp_path / "stats.json"
    path.write_text(__import__("json").dumps(stats))
    for method in ("inverse_frequency", "median_frequency", "effective_number"):
        expected = class_weights_from_counts(stats["pixel_counts"], method, 0.9999, stats["pixels_where_present"])
        assert load_class_weights(method, 3, str(path)).tolist() == pytest.approx(expected)


def test_tool_writes_json(tiny, tmp_path, capsys):
    import importlib.util, os

    records, _ = tiny
    register_semseg("stats_tiny", lambda root: records, ["bg", "x", "y"], [(0, 0, 0)] * 3)
    try:
        spec = importlib.util.spec_from_file_location("dataset_stats", os.path.join(
            os.path.dirname(__file__), "..", "tools", "dataset_stats.py"))
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        out = tmp_path / "stats.json"
        assert tool.main(["--dataset", "stats_tiny", "--output", str(out), "--workers", "1", "--no-progress"]) == 0
        stats = load_class_stats(str(out), expected_classes=3)
        assert stats["dataset"] == "stats_tiny" and len(stats["pixel_counts"]) == 3
        assert "median" in capsys.readouterr().out
        with pytest.raises(ValueError, match="for 3 classes"):
            load_class_stats(str(out), expected_classes=21)
    finally:
        DatasetCatalog.remove("stats_tiny")
        MetadataCatalog.remove("stats_tiny")
