"""Post-processor chain, whole-image / sliding-window / multi-scale + flip inference."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from segkit.config import get_cfg
from segkit.postprocess import (
    CRFParams,
    DenseCRF,
    PostprocessorChain,
    SegmentationInference,
    build_inference,
    build_postprocessor_chain,
    dense_crf_batch,
    window_starts,
)
from segkit.registry import RegistryKeyError


class TinySegmentor(nn.Module):
    """Contract-satisfying model: (N, 3, H, W) 0-255 -> logits (N, K, H, W)."""

    def __init__(self, num_classes: int = 4, kernel: int = 1, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, num_classes, kernel, padding=kernel // 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images.float() / 64.0)


def _images(n=2, h=37, w=53, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _cfg(**overrides):
    cfg = get_cfg()
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return cfg


# ------------------------------------------------------------------ chain
def test_empty_chain_is_identity():
    chain = build_postprocessor_chain(get_cfg())
    probs = torch.softmax(torch.randn(1, 3, 5, 6), 1)
    assert isinstance(chain, PostprocessorChain) and len(chain) == 0
    assert chain(probs, _images(1, 5, 6)) is probs


def test_chain_builds_dense_crf_from_config():
    cfg = get_cfg()
    cfg.merge_from_list(["POSTPROCESS.CHAIN", '["DenseCRF"]', "POSTPROCESS.CRF.W1", "5.0",
                         "POSTPROCESS.CRF.THETA_ALPHA", "30.0", "POSTPROCESS.CRF.ITERATIONS", "3"])
    chain = build_postprocessor_chain(cfg)
    (crf,) = chain.steps
    assert isinstance(crf, DenseCRF) and crf.backend == "native"
    assert crf.params == CRFParams(w1=5.0, theta_alpha=30.0, theta_beta=5.0, w2=3.0, theta_gamma=3.0, iterations=3)
    images = _images(1, 20, 24)
    probs = torch.softmax(torch.randn(1, 3, 20, 24, generator=torch.Generator().manual_seed(1)), 1)
    expected = dense_crf_batch(images, probs, crf.params)
    torch.testing.assert_close(chain(probs, images), expected, rtol=0, atol=0)


def test_unknown_post_processor_suggests_the_nearest_name():
    cfg = get_cfg()
    cfg.POSTPROCESS.CHAIN = ["DenseCFR"]
    with pytest.raises(RegistryKeyError, match="DenseCRF"):
        build_postprocessor_chain(cfg)


def test_bad_chain_output_shape_is_reported():
    chain = PostprocessorChain([lambda p, im: p[:, :1]])
    with pytest.raises(RuntimeError, match="returned shape"):
        chain(torch.rand(1, 3, 4, 4), _images(1, 4, 4))


# ------------------------------------------------------------------ windows
@pytest.mark.parametrize(
    "size,crop,stride,expected",
    [(10, 4, 3, [0, 3, 6]), (10, 4, 4, [0, 4, 6]), (3, 4, 2, [0]), (4, 4, 1, [0]), (9, 4, 4, [0, 4, 5])],
)
def test_window_starts_cover_the_image(size, crop, stride, expected):
    starts = window_starts(size, crop, stride)
    assert starts == expected
    covered = set()
    for s in starts:
        covered.update(range(s, min(s + crop, size)))
    assert covered == set(range(size))


@pytest.mark.parametrize("crop, stride", [(0, 2), (4, 0), (-1, 2)])
def test_window_of_no_size_or_no_stride_is_refused(crop, stride):
    with pytest.raises(ValueError, match="must be positive"):
        window_starts(10, crop, stride)


def test_stride_larger_than_crop_is_refused():
    with pytest.raises(ValueError, match="would leave pixels uncovered"):
        window_starts(9, 4, 5)
    with pytest.raises(ValueError, match="at most CROP_SIZE"):
        build_inference(_cfg(**{"TEST.SLIDING_WINDOW.ENABLED": True, "TEST.SLIDING_WINDOW.CROP_SIZE": [64, 64],
                                "TEST.SLIDING_WINDOW.STRIDE": [65, 32]}), TinySegmentor())


# ------------------------------------------------------------------ inference
def test_default_inference_is_plain_softmax():
    model = TinySegmentor(kernel=3).eval()
    images = _images()
    probs = build_inference(get_cfg(), model)(images)
    assert torch.equal(probs, torch.softmax(model(images), 1))


def test_one_scale_without_flip_equals_plain_inference():
    model = TinySegmentor(kernel=3).eval()
    images = _images()
    cfg = _cfg(**{"TEST.AUG.ENABLED": True, "TEST.AUG.SCALES": [1.0], "TEST.AUG.FLIP": False})
    assert torch.equal(build_inference(cfg, model)(images), torch.softmax(model(images), 1))


@pytest.mark.parametrize("crop", [[37, 53], [64, 64]])
def test_window_as_large_as_the_image_equals_whole_image(crop):
    model = TinySegmentor(kernel=5).eval()
    images = _images()
    cfg = _cfg(**{"TEST.SLIDING_WINDOW.ENABLED": True, "TEST.SLIDING_WINDOW.CROP_SIZE": crop,
                  "TEST.SLIDING_WINDOW.STRIDE": [c * 2 // 3 for c in crop]})
    assert torch.equal(build_inference(cfg, model)(images), torch.softmax(model(images), 1))


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_sliding_window_with_a_pointwise_model_equals_whole_image(batch):
    # A 1x1 model sees no context, so every window agrees with the whole image:
    # any misplaced window or miscounted overlap would show.
    model = TinySegmentor(kernel=1).eval()
    images = _images()
    infer = SegmentationInference(model, crop_size=(16, 20), stride=(10, 13), window_batch=batch)
    torch.testing.assert_close(infer(images), torch.softmax(model(images), 1), rtol=0, atol=1e-6)


def test_sliding_window_averages_overlapping_windows():
    model = TinySegmentor(kernel=5).eval()
    images = _images(1, 10, 8)
    probs = SegmentationInference(model, crop_size=(6, 8), stride=(4, 8))(images)
    top = torch.softmax(model(images[:, :, 0:6]), 1)
    bottom = torch.softmax(model(images[:, :, 4:10]), 1)
    torch.testing.assert_close(probs[:, :, :4], top[:, :, :4], rtol=0, atol=0)
    torch.testing.assert_close(probs[:, :, 6:], bottom[:, :, 2:], rtol=0, atol=0)
    torch.testing.assert_close(probs[:, :, 4:6], (top[:, :, 4:6] + bottom[:, :, :2]) / 2, rtol=0, atol=1e-7)
    # A model with context differs from whole-image inference near window borders.
    assert not torch.allclose(probs, torch.softmax(model(images), 1))


def test_flip_averages_the_flipped_prediction():
    model = TinySegmentor(kernel=3).eval()
    images = _images()
    probs = SegmentationInference(model, flip=True)(images)
    plain = torch.softmax(model(images), 1)
    flipped = torch.softmax(model(images.flip(-1)), 1).flip(-1)
    torch.testing.assert_close(probs, (plain + flipped) / 2, rtol=0, atol=0)
    assert not torch.allclose(probs, plain, atol=1e-3)


def test_multi_scale_resizes_and_averages():
    model = TinySegmentor(kernel=3).eval()
    images = _images(1, 40, 30)
    probs = SegmentationInference(model, scales=(0.5, 1.0))(images)
    small = torch.nn.functional.interpolate(images.float(), size=(20, 15), mode="bilinear", align_corners=False)
    up = torch.nn.functional.interpolate(torch.softmax(model(small), 1), size=(40, 30), mode="bilinear",
                                         align_corners=False)
    expected = (up + torch.softmax(model(images), 1)) / 2
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 40, 30), rtol=0, atol=1e-5)


def test_tta_and_sliding_window_combine_with_the_crf():
    model = TinySegmentor(kernel=3).eval()
    images = _images(1, 30, 40)
    cfg = _cfg(**{
        "TEST.AUG.ENABLED": True, "TEST.AUG.SCALES": [0.75, 1.0], "TEST.AUG.FLIP": True,
        "TEST.SLIDING_WINDOW.ENABLED": True, "TEST.SLIDING_WINDOW.CROP_SIZE": [24, 24],
        "TEST.SLIDING_WINDOW.STRIDE": [16, 16], "POSTPROCESS.CHAIN": ["DenseCRF"],
        "POSTPROCESS.CRF.ITERATIONS": 3,
    })
    raw = build_inference(cfg, model)(images)
    refined = build_inference(cfg, model, postprocess=True)(images)
    torch.testing.assert_close(refined, build_postprocessor_chain(cfg)(raw, images), rtol=0, atol=0)
    assert not torch.equal(raw, refined)


def test_wrong_output_size_is_reported():
    class Strided(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2, x.shape[2] // 2, x.shape[3] // 2)

    with pytest.raises(RuntimeError, match="logits at the input size"):
        SegmentationInference(Strided())(_images(1, 8, 8))


def test_both_crf_backends_from_yaml_agree(tmp_path):
    pytest.importorskip("pydensecrf.densecrf")
    from segkit.config import load_config

    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(30), torch.arange(40), indexing="ij")
    images = torch.where((xx < 20)[None, None], 200, 40).repeat(1, 3, 1, 1).to(torch.uint8)
    images = (images.int() + torch.randint(-20, 21, images.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    logits = torch.randn(1, 2, 30, 40, generator=g) + 0.8 * torch.stack([xx < 20, xx >= 20])[None].float()
    probs = torch.softmax(logits, 1)
    outs = {}
    for backend in ("native", "pydensecrf"):
        path = tmp_path / f"{backend}.yaml"
        path.write_text(f"POSTPROCESS:\n  CHAIN: [DenseCRF]\n  CRF:\n    BACKEND: {backend}\n    THETA_ALPHA: 20.0\n")
        outs[backend] = build_postprocessor_chain(load_config(str(path), load_plugins=False))(probs, images)
    assert (outs["native"].argmax(1) == outs["pydensecrf"].argmax(1)).float().mean() >= 0.999
    torch.testing.assert_close(outs["native"], outs["pydensecrf"], rtol=0, atol=1e-4)
    # The CRF follows the image edge: fewer labels disagree with the two halves.
    truth = (xx >= 20).long()[None]
    assert (outs["native"].argmax(1) != truth).sum() < (probs.argmax(1) != truth).sum()


# ------------------------------------------------------------------ argument checks and window counts
@pytest.mark.parametrize("scales", [[], [1.0, -0.5], [0.0]])
def test_scales_must_be_positive_and_not_empty(scales):
    with pytest.raises(ValueError, match="scales must be positive factors"):
        SegmentationInference(TinySegmentor(), scales=scales)


def test_window_batch_and_stride_of_one_are_accepted():
    infer = SegmentationInference(TinySegmentor(), crop_size=(2, 3), stride=(1, 1), window_batch=1)
    assert (infer.crop_size, infer.stride, infer.window_batch) == ((2, 3), (1, 1), 1)
    with pytest.raises(ValueError, match="window_batch must be >= 1, got 0"):
        SegmentationInference(TinySegmentor(), window_batch=0)
    with pytest.raises(ValueError, match="at most CROP_SIZE"):
        SegmentationInference(TinySegmentor(), crop_size=(2, 3), stride=(1, 0))


class _CountingSegmentor(TinySegmentor):
    def __init__(self):
        super().__init__(kernel=1)
        self.batches = []

    def forward(self, images):
        self.batches.append(tuple(images.shape))
        return super().forward(images)


def test_sliding_window_uses_each_dimension_s_own_stride():
    # 4 x 7 image, 2 x 3 crops, stride 2 down and 1 across: rows start at 0, 2 and columns at 0..4
    model = _CountingSegmentor().eval()
    images = _images(1, 4, 7)
    probs = SegmentationInference(model, crop_size=(2, 3), stride=(2, 1), window_batch=100)(images)
    assert model.batches == [(2 * 5, 3, 2, 3)]
    torch.testing.assert_close(probs, torch.softmax(TinySegmentor(kernel=1)(images), 1), rtol=0, atol=1e-6)


def test_build_inference_puts_the_model_in_eval_mode():
    model = TinySegmentor().train()
    build_inference(get_cfg(), model)
    assert model.training is False


# ------------------------------------------------------------------ the chain itself
def test_chain_applies_its_steps_in_order_and_describes_itself():
    chain = PostprocessorChain([lambda p, im: p * 2, lambda p, im: p + 1])
    probs = torch.full((1, 2, 3, 3), 0.25)
    # 0.25 * 2 + 1 = 1.5 (in the other order (0.25 + 1) * 2 = 2.5)
    assert torch.equal(chain(probs, _images(1, 3, 3)), torch.full((1, 2, 3, 3), 1.5))
    assert len(chain) == 2 and bool(chain) is True and bool(PostprocessorChain()) is False
    assert repr(PostprocessorChain([])) == "PostprocessorChain([])"
    with pytest.raises(RuntimeError, match=r"returned shape \(1, 1, 4, 4\), expected \(1, 3, 4, 4\)"):
        PostprocessorChain([lambda p, im: p[:, :1]])(torch.rand(1, 3, 4, 4), _images(1, 4, 4))


class _NotCallablePost:
    pass


def _returns_a_class():
    return dict


def test_a_registered_post_processor_must_build_a_callable_instance():
    from segkit.config.configurable import ComponentError
    from segkit.postprocess.chain import build_postprocessor
    from segkit.registry import POSTPROCESSOR_REGISTRY

    POSTPROCESSOR_REGISTRY.register(_NotCallablePost, name="_NotCallablePost")
    POSTPROCESSOR_REGISTRY.register(_returns_a_class, name="_ReturnsAClass")
    try:
        with pytest.raises(ComponentError, match=r"'_NotCallablePost' .*built _NotCallablePost, which is not callable"):
            build_postprocessor(get_cfg(), "_NotCallablePost")
        with pytest.raises(ComponentError, match=r"'_ReturnsAClass' .*built type, which is not callable as"):
            build_postprocessor(get_cfg(), "_ReturnsAClass")
    finally:
        POSTPROCESSOR_REGISTRY.unregister("_NotCallablePost")
        POSTPROCESSOR_REGISTRY.unregister("_ReturnsAClass")
