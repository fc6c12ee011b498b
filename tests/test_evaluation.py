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


# --------------------------------------------------------------------------- edge cases (mutation tests)
def _slow_confusion(pred, gt, k, ignore):
    """Direct count, one pixel at a time: the oracle for ConfusionMatrix."""
    m = [[0] * k for _ in range(k)]
    for p, t in zip(pred.flatten().tolist(), gt.flatten().tolist()):
        if t != ignore:
            m[t][p] += 1
    return m


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_confusion_counts_uint8_masks_with_many_classes(dtype):
    # uint8 masks (what the mapper emits) overflow target * K + pred once K >= 13.
    k = 21
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, k, (2, 7, 9), generator=g)
    gt[0, 0, :4] = 255
    pred = torch.randint(0, k, (2, 7, 9), generator=g)
    pred[gt == 20] = 20  # the highest codes: 20 * 21 + 20 = 440 > 255
    cm = ConfusionMatrix(k, ignore_value=255)
    cm.update(pred.to(dtype if dtype != torch.int16 else torch.uint8), gt.to(dtype))
    matrix = cm.reduce()
    assert matrix.dtype == torch.int64 and matrix.shape == (k, k)
    assert matrix.tolist() == _slow_confusion(pred, gt, k, 255)
    assert int(matrix[20, 20]) == int((gt == 20).sum()) > 0


@pytest.mark.parametrize("bad", [3, -1])
def test_confusion_rejects_label_k_and_negative_labels(bad):
    cm = ConfusionMatrix(3, ignore_value=255)
    gt = torch.tensor([[0, bad], [2, 255]])
    with pytest.raises(ValueError, match=rf"labels \[{bad}\] outside \[0, 3\)"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), gt)
    assert cm.matrix is None  # nothing was counted
    cm.update(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 2], [2, 255]]))  # K-1 is fine
    assert cm.reduce().tolist() == [[1, 0, 0], [0, 0, 0], [2, 0, 0]]


def test_confusion_with_a_negative_ignore_value():
    cm = ConfusionMatrix(2, ignore_value=-1)
    cm.update(torch.tensor([1, 0, 1]), torch.tensor([-1, 0, 1]))
    assert cm.reduce().tolist() == [[1, 0], [0, 1]]


def test_confusion_needs_a_positive_class_count():
    with pytest.raises(ValueError, match="num_classes must be positive"):
        ConfusionMatrix(0)
    cm = ConfusionMatrix(1)
    assert cm.reduce().tolist() == [[0]] and cm.reduce().dtype == torch.int64  # nothing counted yet
    cm.update(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    assert cm.reduce().tolist() == [[3]]
    cm.reset()
    assert cm.reduce().tolist() == [[0]]


def test_confusion_all_ignored_batch_counts_nothing():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([255, 255]))
    assert cm.reduce().tolist() == [[0, 0], [0, 0]]


def test_reduce_sums_across_processes_only_when_there_are_several(monkeypatch):
    import torch.distributed as dist

    calls = []

    def fake_all_reduce(tensor, op=None):
        calls.append(op)
        tensor.mul_(2)  # as if a second process had the same counts

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    monkeypatch.setattr(dist, "get_world_size", lambda: 1)
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert cm.reduce().tolist() == [[1, 1], [0, 0]] and calls == []
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert cm.reduce().tolist() == [[2, 2], [0, 0]] and calls == [dist.ReduceOp.SUM]


def test_metrics_with_one_pixel_and_single_pixel_classes():
    out = metrics_from_confusion(torch.tensor([[1, 0], [0, 0]]))
    assert out["pACC"] == 1.0 and out["fwIoU"] == 1.0 and out["mIoU"] == 1.0 and out["mACC"] == 1.0
    assert out["IoU-0"] == 1.0 and out["ACC-0"] == 1.0 and math.isnan(out["IoU-1"])
    # class 1 has one ground-truth pixel, predicted as class 0
    out = metrics_from_confusion(torch.tensor([[2, 0], [1, 0]]), ["a", "b"])
    assert out["ACC-b"] == 0.0 and out["IoU-b"] == 0.0 and out["mACC"] == pytest.approx(0.5)
    assert out["IoU-a"] == pytest.approx(2 / 3) and out["fwIoU"] == pytest.approx(2 * (2 / 3) / 3)


def test_metrics_reject_a_wrong_number_of_names():
    with pytest.raises(ValueError, match="1 class names for a 2x2"):
        metrics_from_confusion(torch.eye(2, dtype=torch.long), ["only"])


def test_per_class_table_by_value_and_column():
    # rows = gt: bg 3 pixels (2 right), shirt 1 pixel (right), hat never present
    out = metrics_from_confusion(torch.tensor([[2, 1, 0], [0, 1, 0], [0, 0, 0]]), ["bg", "shirt", "hat"])
    table = format_per_class_table(out, ["bg", "shirt", "hat"])
    assert table.split("\n") == [
        "class     IoU     Acc",
        "-" * 21,
        "bg      66.67   66.67",
        "shirt   50.00  100.00",
        "hat       n/a     n/a",
        "-" * 21,
        "mean    58.33   83.33",
        "pixel acc  75.00   fwIoU  62.50",
    ]
    out["ACC-bg"] = None  # a missing value reads n/a, like NaN
    assert format_per_class_table(out, ["bg"]).split("\n")[2] == "bg      66.67     n/a"


# --------------------------------------------------------------------------- evaluator details
def test_postprocessed_key_names_the_chain():
    from segkit.evaluation.sem_seg_evaluation import RAW_KEY, postprocessed_key

    assert RAW_KEY == "sem_seg" and postprocessed_key([]) == "sem_seg"
    assert postprocessed_key(["DenseCRF", "TTA"]) == "sem_seg+DenseCRF+TTA"


def test_evaluator_counts_labels_and_probabilities_and_keeps_samples(tmp_path):
    ev = SemSegEvaluator(2, None, ignore_value=9, output_dir=str(tmp_path / "new"), dataset_name="d",
                         num_samples_kept=3)
    assert ev.class_names == ["0", "1"]
    gt = torch.tensor([[[0, 1], [1, 9]], [[1, 1], [0, 0]]])
    images = torch.arange(24, dtype=torch.uint8).view(2, 3, 2, 2)
    labels = torch.tensor([[[0, 0], [1, 1]], [[1, 1], [1, 0]]])
    probs = torch.nn.functional.one_hot(1 - labels, 2).permute(0, 3, 1, 2).float()  # argmax = 1 - labels
    for _ in range(2):
        ev.process({"sem_seg": gt, "image": images}, {"a": labels, "b": probs})
    assert len(ev.samples) == 3
    assert torch.equal(ev.samples[2]["image"], images[0]) and torch.equal(ev.samples[1]["sem_seg"], gt[1])
    assert torch.equal(ev.samples[1]["pred"]["b"], 1 - labels[1])
    res = ev.evaluate()
    # per batch, by hand: a = [[2, 1], [1, 3]], b = [[1, 2], [3, 1]]; counted twice
    assert ev.confusion["a"].tolist() == [[4, 2], [2, 6]]
    assert ev.confusion["b"].tolist() == [[2, 4], [6, 2]]
    assert res["a"]["pACC"] == pytest.approx(5 / 7) and res["b"]["pACC"] == pytest.approx(2 / 7)
    saved = json.loads((tmp_path / "new" / "sem_seg_evaluation_d.json").read_text())
    assert saved["dataset"] == "d" and saved["classes"] == ["0", "1"]
    assert sorted(saved["results"]) == ["a", "b"] and saved["results"]["a"]["IoU-1"] == pytest.approx(3 / 5)
    ev.reset()
    assert ev.matrices == {} and ev.samples == []
    with pytest.raises(ValueError, match="1 class names given for 2 classes"):
        SemSegEvaluator(2, ["x"])


def test_evaluator_writes_nan_as_null_and_only_on_the_main_process(tmp_path, monkeypatch):
    import torch.distributed as dist

    ev = SemSegEvaluator(2, ["a", "b"], output_dir=str(tmp_path), dataset_name="t")
    ev.process({"sem_seg": torch.tensor([[0, 0]])}, {"sem_seg": torch.tensor([[0, 0]])})  # no image: no samples
    ev.evaluate()
    saved = json.loads((tmp_path / "sem_seg_evaluation_t.json").read_text())
    assert saved["results"]["sem_seg"]["IoU-b"] is None and saved["results"]["sem_seg"]["IoU-a"] == 1.0
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "sem_seg_evaluation_t.json").unlink()
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 1)
    assert ev.evaluate()["sem_seg"]["pACC"] == 1.0
    assert not (tmp_path / "sem_seg_evaluation_t.json").exists()  # rank 1 does not write


def test_from_config_reads_names_and_checks_the_class_count(tmp_path):
    from segkit.config import get_cfg
    from segkit.data.catalog import DatasetCatalog, MetadataCatalog, register_semseg

    register_semseg("eval_names_tiny", lambda root: [], ["bg", "fg"], [(0, 0, 0), (1, 1, 1)])
    try:
        cfg = get_cfg()
        cfg.MODEL.NUM_CLASSES, cfg.MODEL.IGNORE_VALUE, cfg.TEST.VIS_NUM_IMAGES = 2, 7, 4
        ev = SemSegEvaluator(cfg, "eval_names_tiny", str(tmp_path))
        assert ev.class_names == ["bg", "fg"] and ev.ignore_value == 7 and ev.num_samples_kept == 4
        assert ev.output_dir == str(tmp_path) and ev.dataset_name == "eval_names_tiny"
        assert SemSegEvaluator(cfg, "eval_names_tiny", num_samples_kept=1).num_samples_kept == 1
        # The class count is checked once, at set-up (segkit.data.setup_datasets), for every entry point.
        from segkit.data import setup_datasets

        cfg.MODEL.NUM_CLASSES = 3
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), ("eval_names_tiny",)
        with pytest.raises(ValueError, match="has 2 classes but MODEL.NUM_CLASSES is 3. Set MODEL.NUM_CLASSES 2"):
            setup_datasets(cfg)
    finally:
        DatasetCatalog.remove("eval_names_tiny")
        MetadataCatalog.remove("eval_names_tiny")


def test_inference_on_dataset_resets_moves_and_logs(caplog):
    import logging

    loader, probs = _batches()
    seen = []

    def inference(images):
        seen.append(images.device)
        return probs

    ev = SemSegEvaluator(2, ["bg", "fg"], 255)
    caplog.set_level(logging.INFO, logger="segkit.evaluation.sem_seg_evaluation")
    generator = (b for b in loader * 2)  # no len(): the log says "?"
    # The batches reach the inference callable as the loader made them: moving them is the segmentor's job.
    first = inference_on_dataset(generator, ev, inference, log_period=1)
    assert seen == [torch.device("cpu")] * 2
    assert "Inference 1/? batches" in caplog.text and "Inference 2/? batches" in caplog.text
    assert ev.confusion["sem_seg"].tolist() == [[2, 0], [2, 2]]
    again = inference_on_dataset(loader, ev, inference, log_period=0)  # reset: not added to the first run
    assert ev.confusion["sem_seg"].tolist() == [[1, 0], [1, 1]]
    assert again["sem_seg"]["pACC"] == first["sem_seg"]["pACC"] == pytest.approx(2 / 3)


def test_inference_logs_every_log_period_batches_with_the_rate(caplog):
    import logging

    loader, probs = _batches()
    ev = SemSegEvaluator(2, ["bg", "fg"], 255)
    caplog.set_level(logging.INFO, logger="segkit.evaluation.sem_seg_evaluation")
    inference_on_dataset(loader * 4, ev, lambda images: probs, log_period=3)
    progress = [r.args for r in caplog.records if r.msg.startswith("Inference %d/%s")]
    assert [(done, total) for done, total, _ in progress] == [(3, 4)]  # after the 3rd batch only
    # batches per second since the start: a few tiny batches take far less than 100 s
    assert progress[0][2] > 3 / 100
    # the whole loop's duration, measured from the start: between 0 and a generous 100 s
    (done,) = [r.args for r in caplog.records if r.msg.startswith("Inference done in")]
    assert 0 <= done[0] < 100


def test_multi_task_evaluator_scores_each_label_set_on_its_own_channels(tmp_path):
    from segkit.evaluation.multi_task import MultiTaskSemSegEvaluator

    for bad in ([], [("parts", ["a", "b"])]):
        with pytest.raises(ValueError, match="first label set must be the main one"):
            MultiTaskSemSegEvaluator(bad)
    ev = MultiTaskSemSegEvaluator([("sem_seg", ["bg", "fg"]), ("parts", ["x", "y", "z"])], output_dir=str(tmp_path),
                                  dataset_name="d", num_samples_kept=2)
    main, parts = ev.evaluators["sem_seg"], ev.evaluators["parts"]
    assert (main.dataset_name, parts.dataset_name) == ("d", "d_parts")
    assert (main.num_samples_kept, parts.num_samples_kept) == (2, 0)  # pictures of the main set only
    # one 1x3 image: main truth [0, 1, 1], parts truth [2, 0, 1]
    target = torch.tensor([[[[0, 1, 1]], [[2, 0, 1]]]])
    # channels 0-1 score the main set (arg-max [0, 1, 0]), channels 2-4 the parts (arg-max [2, 0, 0])
    scores = torch.tensor([[[[0.9, 0.1, 0.8]], [[0.1, 0.9, 0.2]],
                            [[0.1, 0.8, 0.7]], [[0.2, 0.1, 0.2]], [[0.7, 0.1, 0.1]]]])
    batch = {"sem_seg": target, "image": torch.zeros(1, 3, 1, 3, dtype=torch.uint8)}
    ev.process(batch, {"sem_seg": scores, "sem_seg+X": scores.flip(1)})
    res = ev.evaluate()
    assert sorted(res) == ["parts", "parts+X", "sem_seg", "sem_seg+X"]
    assert main.confusion["sem_seg"].tolist() == [[1, 0], [1, 1]]
    assert parts.confusion["sem_seg"].tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert res["sem_seg"]["pACC"] == pytest.approx(2 / 3) and res["parts"]["pACC"] == pytest.approx(2 / 3)
    assert len(ev.samples) == 1 and parts.samples == []
    with pytest.raises(ValueError, match=r"needs targets \(N, 2, H, W\)"):
        ev.process({"sem_seg": target[:, :1]}, {"sem_seg": scores})
    with pytest.raises(ValueError, match=r"needs targets \(N, 2, H, W\)"):
        ev.process({"sem_seg": target[:, 0]}, {"sem_seg": scores})
    with pytest.raises(ValueError, match="has 4 channels; the label sets need 5"):
        ev.process(batch, {"sem_seg": scores[:, :4]})
    ev.reset()
    assert main.matrices == {} and parts.matrices == {} and ev.samples == []


def test_evaluate_logs_the_per_class_table_of_each_variant_on_the_main_process(caplog):
    import logging

    ev = SemSegEvaluator(2, ["bg", "fg"], dataset_name="tiny")
    ev.process({"sem_seg": torch.tensor([[0, 1]])},
               {"sem_seg": torch.tensor([[0, 0]]), "sem_seg+X": torch.tensor([[0, 1]])})
    caplog.set_level(logging.INFO, logger="segkit.evaluation.sem_seg_evaluation")
    ev.evaluate()
    logged = [r.args[:2] for r in caplog.records if r.msg.startswith("Evaluation of %s on %s")]
    assert logged == [("sem_seg", "tiny"), ("sem_seg+X", "tiny")]


def test_build_evaluator_by_name_and_the_evaluator_contract(tmp_path):
    from segkit.config import get_cfg
    from segkit.config.configurable import ComponentError
    from segkit.data.catalog import DatasetCatalog, MetadataCatalog, register_semseg
    from segkit.evaluation.sem_seg_evaluation import build_evaluator

    class _NoProcess:
        def __init__(self, dataset_name, output_dir):
            self.reset = self.evaluate = lambda: {}

    EVALUATOR_REGISTRY.register(_NoProcess, name="_NoProcessEval")
    register_semseg("eval_build_tiny", lambda root: [], ["bg", "fg"], [(0, 0, 0), (1, 1, 1)])
    try:
        cfg = get_cfg()
        cfg.MODEL.NUM_CLASSES = 2
        cfg.TEST.EVALUATOR = "_NoProcessEval"
        ev = build_evaluator(cfg, "eval_build_tiny", str(tmp_path), name="SemSegEvaluator")  # name wins
        assert isinstance(ev, SemSegEvaluator) and ev.class_names == ["bg", "fg"] and ev.output_dir == str(tmp_path)
        with pytest.raises(ComponentError, match=r"built _NoProcess, which lacks \['process'\]; an evaluator needs"):
            build_evaluator(cfg, "eval_build_tiny")
    finally:
        EVALUATOR_REGISTRY.unregister("_NoProcessEval")
        DatasetCatalog.remove("eval_build_tiny")
        MetadataCatalog.remove("eval_build_tiny")


def test_rank_zero_of_an_initialised_group_writes_the_json(tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 1)
    ev = SemSegEvaluator(2, ["a", "b"], output_dir=str(tmp_path), dataset_name="r0")
    ev.process({"sem_seg": torch.tensor([[0, 1]])}, {"sem_seg": torch.tensor([[0, 1]])})
    assert ev.evaluate()["sem_seg"]["mIoU"] == 1.0
    text = (tmp_path / "sem_seg_evaluation_r0.json").read_text()
    assert json.loads(text)["confusion_matrix"]["sem_seg"] == [[1, 0], [0, 1]]
    assert text.startswith('{\n  "dataset": "r0",\n  "iteration": null,\n')  # indented for people to read


def test_samples_are_kept_per_image_of_a_wide_batch():
    # N = 2 images of 1 x 3 pixels, two inputs stacked (6 channels): one sample per image (not per
    # row), up to num_samples_kept, showing the first input's 3 channels
    ev = SemSegEvaluator(2, ["a", "b"], num_samples_kept=5)
    images = torch.arange(36, dtype=torch.uint8).reshape(2, 6, 1, 3)
    gt = torch.tensor([[[0, 1, 1]], [[1, 0, 0]]])
    ev.process({"sem_seg": gt, "image": images}, {"sem_seg": gt})
    assert len(ev.samples) == 2
    assert torch.equal(ev.samples[1]["image"], images[1, :3]) and torch.equal(ev.samples[1]["pred"]["sem_seg"], gt[1])
