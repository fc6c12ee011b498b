"""EventStorage on fvcore's HistoryBuffer, TensorBoard images, matplotlib pictures."""
import types

import numpy as np
import pytest
import torch

from segkit.engine.events import EventStorage, TensorboardWriter
from segkit.engine.visualization import draw_confusion_matrix, draw_curve, save_evaluation_pictures


def test_history_is_bounded_and_median_is_right():
    with EventStorage(0, history_length=3) as storage:
        for it, v in enumerate([5.0, 1.0, 4.0, 2.0, 3.0]):
            storage.iter = it
            storage.put_scalar("loss", v)
        assert storage.history("loss") == [(2, 4.0), (3, 2.0), (4, 3.0)]  # the last three only
        assert storage.median("loss", 3) == 3.0 and storage.median("loss", 2) == 2.5
        assert storage.latest() == {"loss": (3.0, 4)}
        with pytest.raises(KeyError, match="have: \\['loss'\\]"):
            storage.median("lr", 3)


def _read_images(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def test_tensorboard_receives_prediction_panels_and_confusion_matrix(tmp_path):
    names = ["bg", "a", "b"]
    image = torch.randint(0, 255, (3, 12, 10), dtype=torch.uint8)
    gt = torch.randint(0, 3, (12, 10))
    evaluator = types.SimpleNamespace(
        class_names=names, dataset_name="toy", ignore_value=255,
        samples=[{"image": image, "sem_seg": gt, "pred": {"sem_seg": gt.flip(1)}}],
        confusion={"sem_seg": torch.tensor([[5, 1, 0], [0, 3, 2], [1, 0, 4]])},
    )
    with EventStorage(7):
        writer = TensorboardWriter(str(tmp_path / "tb"))
        paths = save_evaluation_pictures(evaluator, str(tmp_path / "pics"))
        writer.write()
        writer.close()
    assert len(paths) == 2
    images = _read_images(tmp_path / "tb")
    assert set(images) == {"toy/pred_00", "toy/confusion/sem_seg"}
    import cv2

    for tag, path in [("toy/pred_00", paths[0]), ("toy/confusion/sem_seg", paths[1])]:
        (event,) = images[tag]
        assert event.step == 7
        decoded = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(decoded, cv2.imread(path))  # the same picture as the PNG
    # Outside a training loop nothing is queued and nothing fails.
    assert len(save_evaluation_pictures(evaluator, str(tmp_path / "pics2"))) == 2


def test_confusion_matrix_picture_has_a_colour_scale():
    m = np.array([[90, 10], [0, 100]])
    img = draw_confusion_matrix(m, ["background", "shirt"])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    # The colour bar: a column right of the matrix that runs from white (0 %) to dark blue (100 %).
    blue_ratio = img[..., 2].astype(int) - img[..., 0].astype(int)
    cols = np.where((blue_ratio > 100).sum(axis=0) > img.shape[0] // 3)[0]
    assert len(cols) and cols.max() > img.shape[1] * 0.7


def test_curve_legend_does_not_cover_the_data():
    xs = np.arange(1, 51)
    plain = draw_curve({"mIoU": (xs, np.linspace(0, 1, 50))}, "mIoU")
    # The legend sits below the x axis: the plot area of a labelled and an unlabelled
    # figure of the same data differ only outside it (legend row), never inside.
    assert plain.shape == (400, 640, 3)
    top = plain[: int(0.6 * plain.shape[0])]
    other = draw_curve({"a much longer label that would cover the line": (xs, np.linspace(0, 1, 50))}, "mIoU")
    np.testing.assert_array_equal(top, other[: int(0.6 * other.shape[0])])
