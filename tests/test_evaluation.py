"""Exact-value tests of the confusion matrix, the metrics and the evaluator."""
import json
import math

import pytest
import torch

from segkit.evaluation import (
    ConfusionMatrix,
    SemSegEvaluator,
    format_per_class_table,
    inference_on_dataset,
    metrics_from_confusion,
)
from segkit.registry import EVALUATOR_REGISTRY


def test_confusion_counts_and_ignores():
    cm = ConfusionMatrix(3, ignore_value=255)
    pred = torch.tensor([[0, 1, 2, 2], [1, 1, 0, 2]])
    gt = torch.tensor([[0, 1, 1, 255], [1, 2, 0, 255]])
    cm.update(pred, gt)
    expected = torch.tensor([[2, 0, 0], [0, 2, 1], [0, 1, 0]])
    assert torch.equal(cm.reduce(), expected)
    cm.update(pred, gt)
    assert torch.equal(cm.reduce(), 2 * expected)


def test_confusion_rejects_bad_labels_and_shapes():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"labels \[7\].*MODEL.NUM_CLASSES"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 7], [1, 2]]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))


def test_metrics_match_hand_computation():
    # rows = ground truth, cols = prediction
    m = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    out = metrics_from_confusion(m, ["a", "b", "c"])
    assert out["pACC"] == pytest.approx(7 / 10)
    assert out["ACC-a"] == pytest.approx(3 / 4)
    assert out["ACC-b"] == pytest.approx(4 / 6)
    assert math.isnan(out["ACC-c"]) and math.isnan(out["IoU-c"])
    assert out["mACC"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    iou_a, iou_b = 3 / (4 + 5 - 3), 4 / (6 + 5 - 4)
    assert out["IoU-a"] == pytest.approx(iou_a)
    assert out["IoU-b"] == pytest.approx(iou_b)
    assert out["mIoU"] == pytest.approx((iou_a + iou_b) / 2)
    assert out["fwIoU"] == pytest.approx((4 * iou_a + 6 * iou_b) / 10)


def test_predicted_but_absent_class_counts_as_zero_iou():
    m = torch.tensor([[2, 2], [0, 0]])  # class 1 predicted, never in GT
    out = metrics_from_confusion(m)
    assert out["IoU-1"] == 0.0 and math.isnan(out["ACC-1"])
    assert out["mIoU"] == pytest.approx(0.25)
    assert out["mACC"] == pytest.approx(0.5)


def test_empty_matrix_is_nan():
    out = metrics_from_confusion(torch.zeros(2, 2, dtype=torch.long))
    assert math.isnan(out["mIoU"]) and math.isnan(out["pACC"])


def test_table_lists_every_class():
    out = metrics_from_confusion(torch.tensor([[1, 0], [1, 2]]), ["bg", "shirt"])
    table = format_per_class_table(out, ["bg", "shirt"])
    assert "shirt" in table and " 50.00" in table and "  n/a" not in table


def _batches():
    gt = torch.tensor([[[0, 1], [1, 255]]])
    probs = torch.tensor([[[[0.9, 0.2], [0.6, 0.5]], [[0.1, 0.8], [0.4, 0.5]]]])  # argmax [[0,1],[0,*]]
    return [{"image": torch.zeros(1, 3, 2, 2, dtype=torch.uint8), "sem_seg": gt}], probs


def test_inference_on_dataset_scores_raw_and_postprocessed(tmp_path):
    loader, probs = _batches()
    ev = SemSegEvaluator(2, ["bg", "fg"], 255, str(tmp_path), "toy", num_samples_kept=1)
    flip = lambda p, images: p.flip(1)  # noqa: E731  a "post-processor" that swaps the classes
    res = inference_on_dataset(loader, ev, lambda images: probs, {"sem_seg+Flip": flip})
    assert res["sem_seg"]["pACC"] == pytest.approx(2 / 3)
    assert res["sem_seg"]["IoU-bg"] == pytest.approx(1 / 2)
    assert res["sem_seg+Flip"]["pACC"] == pytest.approx(1 / 3)
    saved = json.loads((tmp_path / "sem_seg_evaluation_toy.json").read_text())
    assert saved["confusion_matrix"]["sem_seg"] == [[1, 0], [1, 1]]
    assert saved["results"]["sem_seg+Flip"]["IoU-bg"] == 0.0
    assert saved["results"]["sem_seg+Flip"]["IoU-fg"] == pytest.approx(1 / 3)
    assert len(ev.samples) == 1 and set(ev.samples[0]["pred"]) == {"sem_seg", "sem_seg+Flip"}


def test_registered_builder_reads_config(tmp_path):
    from segkit.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = 3
    ev = EVALUATOR_REGISTRY.get("SemSegEvaluator")(cfg, "not_a_registered_dataset", str(tmp_path))
    assert ev.num_classes == 3 and ev.class_names == ["0", "1", "2"]
