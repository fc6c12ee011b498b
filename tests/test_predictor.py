"""segkit.Predictor: input checks, channel order, sizes, batching, threads, gradients."""
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segkit
from segkit.config import get_cfg
from segkit.predictor import (
    Prediction,
    check_image,
    colorize,
    default_palette,
    overlay,
    pipeline_metadata,
    save_label_png,
)
from segkit.registry import META_ARCH_REGISTRY

NUM_CLASSES = 3


class _TinySegmentor(nn.Module):
    """Contract-conforming meta-arch: RGB uint8 0-255 in, flipped to BGR when the weights expect it
    (``INPUT.FORMAT``), normalise, stride-4 features, logits at input size.

    The classifier reads the red, green and blue means so that the tests can
    predict which class wins from the image colour alone.
    """

    size_divisibility = 4

    def __init__(self, *, num_classes, ignore_value, pixel_mean, pixel_std, input_format="RGB"):
        super().__init__()
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.bgr = input_format == "BGR"
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.pool = nn.AvgPool2d(4)
        self.classifier = nn.Conv2d(3, self.num_classes, 1)
        with torch.no_grad():  # class c = "channel c is the brightest"
            self.classifier.weight.copy_(torch.eye(3)[: self.num_classes].view(self.num_classes, 3, 1, 1) * 4.0)
            self.classifier.bias.zero_()

    @classmethod
    def from_config(cls, cfg):
        return {"num_classes": cfg.MODEL.NUM_CLASSES, "ignore_value": cfg.MODEL.IGNORE_VALUE,
                "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
                "input_format": cfg.INPUT.FORMAT}

    def forward(self, images, targets=None):
        images = images.to(self.pixel_mean.device)
        x = ((images.flip(1) if self.bgr else images).float() - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4))
        logits = F.interpolate(self.classifier(self.pool(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[..., :h, :w]
        if self.training and targets is not None:
            return {"loss_ce": F.cross_entropy(logits, targets, ignore_index=self.ignore_value)}
        return logits


@pytest.fixture()
def cfg():
    META_ARCH_REGISTRY.register(_TinySegmentor, name="_TestTinySegmentor")
    c = get_cfg()
    c.MODEL.META_ARCHITECTURE = "_TestTinySegmentor"
    c.MODEL.NUM_CLASSES = NUM_CLASSES
    c.MODEL.DEVICE = "cpu"
    c.MODEL.PIXEL_MEAN = [0.0, 0.0, 0.0]
    c.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]
    c.DATASETS.TEST = ("_no_such_dataset_for_predictor_tests",)
    c.DATASETS.TRAIN = ()
    yield c
    META_ARCH_REGISTRY.unregister("_TestTinySegmentor")


@pytest.fixture()
def predictor(cfg):
    with pytest.warns(UserWarning, match="no weights"):
        return segkit.Predictor(cfg)


def _solid(h, w, rgb):
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


@pytest.mark.parametrize("h,w", [(7, 9), (32, 32), (33, 50)])
def test_labels_at_input_size_for_any_size(predictor, h, w):
    pred = predictor(_solid(h, w, (200, 10, 10)))
    assert isinstance(pred, Prediction)
    assert pred.labels.shape == (h, w) and pred.labels.dtype == np.int64
    assert (pred.labels == 0).all()  # red is brightest -> class 0
    assert pred.probs is None


def test_probs_are_a_distribution(predictor):
    pred = predictor(_solid(10, 12, (10, 200, 10)), return_probs=True)
    assert pred.probs.shape == (NUM_CLASSES, 10, 12)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)
    assert (pred.labels == pred.probs.argmax(0)).all() and (pred.labels == 1).all()


def test_channel_order_default_and_override(cfg):
    cfg.INPUT.FORMAT = "BGR"
    with pytest.warns(UserWarning):
        pred = segkit.Predictor(cfg)
    red_rgb = _solid(8, 8, (250, 0, 0))
    # Default is the config's BGR: the array's first channel is blue -> model's channel 0 -> class 0.
    assert (pred(red_rgb).labels == 0).all()
    # Declared RGB: flipped to BGR for the model, red lands on channel 2 -> class 2.
    assert (pred(red_rgb, format="RGB").labels == 2).all()
    assert (pred(red_rgb, format="bgr").labels == 0).all()
    with pytest.raises(ValueError, match="Unknown channel order 'HSV'"):
        pred(red_rgb, format="HSV")


def test_pil_images_are_rgb(predictor):
    from PIL import Image

    img = Image.fromarray(_solid(6, 6, (0, 0, 255)))
    assert (predictor(img, format="BGR").labels == 2).all()


def test_list_of_mixed_sizes_keeps_order(cfg):
    cfg.TEST.IMS_PER_BATCH = 3
    with pytest.warns(UserWarning):
        pred = segkit.Predictor(cfg)
    assert pred.batch_size == 3
    batches = []
    pred.model.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    images = [_solid(8, 8, (255, 0, 0)), _solid(8, 8, (0, 255, 0)), _solid(5, 11, (0, 0, 255)), _solid(8, 8, (0, 255, 0))]
    out = pred(images)
    assert batches == [2, 1, 1]  # same-size runs: [0, 1], [2], [3]
    assert [p.labels.shape for p in out] == [(8, 8), (8, 8), (5, 11), (8, 8)]
    assert [int(p.labels[0, 0]) for p in out] == [0, 1, 2, 1]
    assert pred(()) == []


def test_matches_direct_model_call(predictor):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = predictor.model(torch.from_numpy(img).permute(2, 0, 1)[None])
    expected = F.softmax(logits, 1)[0].numpy()
    pred = predictor(img, return_probs=True)
    np.testing.assert_allclose(pred.probs, expected, atol=1e-6)


@pytest.mark.parametrize(
    "bad,exc,msg",
    [
        (np.zeros((4, 4, 3), np.float32), TypeError, "dtype float32.*uint8"),
        (np.zeros((4, 4), np.uint8), ValueError, "single-channel"),
        (np.zeros((3, 4, 5), np.uint8), ValueError, "channels-first"),
        (np.zeros((4, 4, 4), np.uint8), ValueError, "alpha"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "empty"),
        (np.zeros((1, 4, 4, 3), np.uint8), ValueError, "expected H x W x 3.*pass a list"),
        ("image.jpg", TypeError, "got str"),
    ],
)
def test_bad_inputs_fail_clearly(predictor, bad, exc, msg):
    with pytest.raises(exc, match=msg):
        predictor(bad)


def test_bad_image_in_a_list_is_named(predictor):
    with pytest.raises(TypeError, match="image 1 has dtype"):
        predictor([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.int32)])


def test_no_gradient_state_left_behind(predictor):
    assert torch.is_grad_enabled()
    predictor(_solid(9, 9, (1, 2, 3)))
    assert torch.is_grad_enabled()
    assert all(p.grad is None for p in predictor.model.parameters())
    assert not predictor.model.training
    # The model is still usable for training-style calls afterwards (no inference tensors leaked into it).
    out = predictor.model(torch.rand(1, 3, 8, 8) * 255)
    out.sum().backward()
    assert predictor.model.classifier.weight.grad is not None


def test_thread_safe(predictor):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (10 + i, 14 + 2 * i, 3), dtype=np.uint8) for i in range(8)]
    expected = [predictor(img, return_probs=True) for img in images]
    results, errors = {}, []

    def work(k):
        try:
            for rep in range(3):
                i = (k + rep) % len(images)
                results[(k, rep)] = (i, predictor(images[i], return_probs=True))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 18
    for i, got in results.values():
        assert (got.labels == expected[i].labels).all()
        np.testing.assert_array_equal(got.probs, expected[i].probs)


def test_weights_are_loaded(cfg, tmp_path):
    with pytest.warns(UserWarning):
        model = segkit.Predictor(cfg).model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["classifier.bias"] = torch.tensor([0.0, 0.0, 1.0e5])  # class 2 always wins
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 3}, path)
    pred = segkit.Predictor(cfg, weights=str(path))
    assert pred.weights == str(path)
    assert (pred(_solid(5, 5, (255, 0, 0))).labels == 2).all()


def test_metadata_falls_back_to_generic_names(cfg):
    meta = pipeline_metadata(cfg)
    assert meta.class_names == ("class_0", "class_1", "class_2")
    assert meta.palette == tuple(default_palette(3))
    assert meta.input_format == "RGB" and meta.pixel_std == (1.0, 1.0, 1.0)


def test_metadata_from_fashion_scenes():
    from segkit.data import MetadataCatalog

    c = get_cfg()
    c.MODEL.NUM_CLASSES = 11
    c.DATASETS.TEST = ("fashion_scenes_val",)
    meta = pipeline_metadata(c)
    expected = MetadataCatalog.get("fashion_scenes_val")
    assert list(meta.class_names) == list(expected.stuff_classes)
    assert [tuple(p) for p in meta.palette] == [tuple(p) for p in expected.stuff_colors]


def test_default_palette_values():
    assert default_palette(4) == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert len(set(default_palette(64))) == 64


def test_colorize_overlay_and_png(tmp_path):
    from PIL import Image

    labels = np.array([[0, 1], [2, 255]])
    pal = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    col = colorize(labels, pal)
    assert col[0, 1].tolist() == [40, 50, 60] and col[1, 1].tolist() == [0, 0, 0]
    img = np.full((2, 2, 3), 100, np.uint8)
    assert overlay(img, labels, pal, alpha=0.5)[0, 0].tolist() == [55, 60, 65]
    path = tmp_path / "l.png"
    save_label_png(str(path), labels, pal)
    back = Image.open(path)
    assert back.mode == "P"
    np.testing.assert_array_equal(np.asarray(back), labels)
    assert back.getpalette()[3:6] == [40, 50, 60]
    with pytest.raises(ValueError, match="0-255"):
        save_label_png(str(path), np.array([[300]]), pal)


def test_check_image_accepts_tensor():
    arr, forced = check_image(torch.zeros(3, 4, 3, dtype=torch.uint8))
    assert arr.shape == (3, 4, 3) and forced is None


def test_test_transforms_are_applied_and_undone(cfg):
    cfg.INPUT.TEST_TRANSFORMS = [{"NAME": "Resize", "ARGS": {"height": 16, "width": 24}}]
    cfg.INPUT.FORMAT = "BGR"
    with pytest.warns(UserWarning):
        pred = segkit.Predictor(cfg)
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    out = pred(rgb, format="RGB", return_probs=True)
    assert out.labels.shape == (37, 29) and out.probs.shape == (3, 37, 29)
    # Reference: the data pipeline resizes the RGB image, the model (which flips it to BGR itself)
    # sees the RGB result, probabilities go back to 37x29.
    import albumentations as A
    import cv2

    small = A.Resize(16, 24, interpolation=cv2.INTER_LINEAR)(image=rgb)["image"].copy()
    with torch.no_grad():
        probs = F.softmax(pred.model(torch.from_numpy(small).permute(2, 0, 1)[None]), 1)
    probs = F.interpolate(probs, size=(37, 29), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(out.probs, probs, atol=1e-5)
    # Same pixels whichever channel order the caller declares.
    np.testing.assert_allclose(pred(np.ascontiguousarray(rgb[:, :, ::-1]), return_probs=True).probs, out.probs, atol=1e-6)
