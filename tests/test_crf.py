"""Dense CRF: native PyTorch backend against the pydensecrf reference on real photographs.

Only the comparisons with the reference need pydensecrf (they skip without it); the
native backend's own tests run everywhere (see also test_crf_oracle.py).
"""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pytest
import torch

from segkit.postprocess import CRFParams, DenseCRF, PermutohedralLattice, dense_crf, dense_crf_batch

PHOTOS = os.path.join(os.path.dirname(__file__), "data", "photos")
try:
    import pydensecrf.densecrf  # noqa: F401
    HAVE_PYDENSECRF = True
except ImportError:  # e.g. Python 3.13, where it does not build
    HAVE_PYDENSECRF = False
needs_pydensecrf = pytest.mark.skipif(not HAVE_PYDENSECRF, reason="the pydensecrf reference is not installed")


@pytest.fixture(autouse=True)
def _empty_kernel_cache():
    """The native backend's smoothness-kernel cache is process-global: start and end empty."""
    from segkit.postprocess.dense_crf import _CACHE_SIZE, set_kernel_cache_size

    size = _CACHE_SIZE[0]
    set_kernel_cache_size(0)
    set_kernel_cache_size(size)
    yield
    set_kernel_cache_size(0)
    set_kernel_cache_size(size)


def _photo(name: str, size=None) -> np.ndarray:
    image = cv2.imread(os.path.join(PHOTOS, name), cv2.IMREAD_COLOR)
    assert image is not None, name
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if size is not None:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _colour_segmentation(image: np.ndarray, k: int, seed: int = 0):
    """A realistic segmentation problem on a photo: 'ground truth' = nearest of k
    colour prototypes (k-means), and a noisy soft classifier over it."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(seed)
    _, _, centres = cv2.kmeans(pixels, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    dist = ((image[None].astype(np.float32) - centres[:, None, None]) ** 2).sum(-1)
    truth = dist.argmin(0)
    rng = np.random.default_rng(seed)
    logits = -dist / 800.0 + rng.normal(0.0, 1.5, dist.shape)
    probs = np.exp(logits - logits.max(0))
    return (probs / probs.sum(0)).astype(np.float32), truth


@needs_pydensecrf
@pytest.mark.parametrize(
    "name,size,k,params",
    [
        ("chelsea.png", (225, 150), 6, CRFParams()),
        ("coffee_300x200.png", None, 5, CRFParams(w1=5.0, theta_alpha=50.0, theta_beta=3.0, iterations=5)),
        ("rocket.jpg", (240, 160), 4, CRFParams(w1=4.0, theta_alpha=80.0, theta_beta=13.0, w2=3.0, theta_gamma=1.0)),
    ],
)
def test_native_labels_agree_with_pydensecrf_on_photos(name, size, k, params):
    image = _photo(name, size)
    probs, _ = _colour_segmentation(image, k)
    kwargs = dict(
        w1=params.w1, theta_alpha=params.theta_alpha, theta_beta=params.theta_beta,
        w2=params.w2, theta_gamma=params.theta_gamma, iterations=params.iterations,
    )
    ref = dense_crf(image, probs, backend="pydensecrf", **kwargs)
    native = dense_crf(image, probs, backend="native", **kwargs)
    assert native.shape == ref.shape == probs.shape and native.dtype == np.float32
    agreement = (native.argmax(0) == ref.argmax(0)).mean()
    assert agreement >= 0.999, agreement
    assert np.abs(native - ref).max() < 1e-3
    # The CRF did something: a sizeable share of labels moved away from the argmax.
    assert (ref.argmax(0) != probs.argmax(0)).mean() > 0.02


@needs_pydensecrf
@pytest.mark.parametrize("name,size", [("chelsea.png", (225, 150)), ("rocket.jpg", (240, 160))])
def test_two_labels_agree_with_pydensecrf_on_photos(name, size):
    # Two labels take the one-channel mean field (e_1 = B - e_0): same bar as above.
    test_native_labels_agree_with_pydensecrf_on_photos(name, size, 2, CRFParams())


def test_crf_denoises_a_noisy_classifier():
    image = _photo("chelsea.png", (225, 150))
    probs, truth = _colour_segmentation(image, 4, seed=1)
    before = (probs.argmax(0) == truth).mean()
    after = (dense_crf(image, probs, output="labels") == truth).mean()
    assert after > before + 0.05, (before, after)


def test_batch_equals_single_images():
    a = _photo("coffee_300x200.png", (120, 80))
    b = _photo("chelsea.png", (120, 80))
    pa, _ = _colour_segmentation(a, 3)
    pb, _ = _colour_segmentation(b, 3, seed=2)
    images = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2)
    batch = dense_crf_batch(images, torch.from_numpy(np.stack([pa, pb])))
    single = [torch.from_numpy(dense_crf(im, p)) for im, p in ((a, pa), (b, pb))]
    torch.testing.assert_close(batch, torch.stack(single), rtol=0, atol=1e-6)


@needs_pydensecrf
def test_pydensecrf_worker_processes_match_in_process():
    image = _photo("coffee_300x200.png", (90, 60))
    probs, _ = _colour_segmentation(image, 3)
    images = torch.from_numpy(np.stack([image, image[::-1].copy()])).permute(0, 3, 1, 2)
    p = torch.from_numpy(np.stack([probs, probs[:, ::-1].copy()]))
    serial = dense_crf_batch(images, p, backend="pydensecrf", num_workers=0)
    parallel = dense_crf_batch(images, p, backend="pydensecrf", num_workers=2)
    torch.testing.assert_close(serial, parallel, rtol=0, atol=0)


def test_zero_weights_return_the_unary_softmax():
    image = _photo("coffee_300x200.png", (60, 40))
    probs, _ = _colour_segmentation(image, 3)
    out = dense_crf(image, probs, w1=0.0, w2=0.0)
    expected = np.clip(probs, 1e-5, 1.0)
    np.testing.assert_allclose(out, expected / expected.sum(0), atol=1e-6)


def test_labels_output_and_tensor_io():
    image = torch.from_numpy(_photo("coffee_300x200.png", (60, 40)))
    probs = torch.softmax(torch.randn(4, 40, 60, generator=torch.Generator().manual_seed(0)), dim=0)
    labels = dense_crf(image, probs, output="labels", iterations=2)
    assert isinstance(labels, torch.Tensor) and labels.shape == (40, 60) and labels.dtype == torch.int64
    assert labels.max() < 4


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(backend="cuda-magic"), "unknown backend"),
        (dict(output="logits"), "output must be"),
        (dict(theta_beta=0.0), "theta_beta must be > 0"),
        (dict(iterations=-1), "iterations"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    image = np.zeros((8, 8, 3), np.uint8)
    probs = np.full((2, 8, 8), 0.5, np.float32)
    with pytest.raises(ValueError, match=message):
        dense_crf(image, probs, **kwargs)


def test_size_mismatch_is_reported():
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="differ in batch or size"):
        dense_crf_batch(images, torch.full((1, 2, 8, 9), 0.5))


def test_missing_pydensecrf_names_the_distribution(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match="pip install pydensecrf2"):
        DenseCRF(backend="pydensecrf")
    DenseCRF(backend="native")  # the native backend needs nothing extra


def test_auto_backend_without_pydensecrf_is_native(monkeypatch):
    """'auto' without pydensecrf (as on Python 3.13): DenseCRF and dense_crf_batch run the native backend."""
    from segkit.postprocess.dense_crf import resolve_crf_backend

    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)  # its import raises ImportError
    assert resolve_crf_backend("auto") == "native"
    assert DenseCRF(backend="auto").backend == "native"
    images = torch.randint(0, 256, (1, 3, 5, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(torch.randn(1, 3, 5, 6, generator=torch.Generator().manual_seed(1)), dim=1)
    params = CRFParams(iterations=2)
    auto = dense_crf_batch(images, probs, params, backend="auto")
    assert torch.equal(auto, dense_crf_batch(images, probs, params, backend="native"))


def test_crf_of_a_bgr_config_takes_rgb_images_unflipped():
    # Images are RGB end to end: INPUT.FORMAT BGR (weights' order) must not change what the CRF sees.
    from segkit.config import get_cfg

    image = _photo("coffee_300x200.png", (60, 40))
    probs, _ = _colour_segmentation(image, 3)
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None]
    p = torch.from_numpy(probs)[None]
    cfg = get_cfg()
    cfg.INPUT.FORMAT = "BGR"
    out_cfg = DenseCRF(cfg)(p, rgb)
    torch.testing.assert_close(out_cfg, DenseCRF()(p, rgb), rtol=0, atol=0)
    # ...and the colour channels do matter to the appearance kernel (so the check above can fail).
    assert not torch.equal(DenseCRF()(p, rgb.flip(1)), out_cfg)


# ----------------------------------------------------------------- lattice itself
def _brute_force_gaussian(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    dist2 = torch.cdist(features.double(), features.double()) ** 2
    return torch.exp(-0.5 * dist2) @ values.double()


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_lattice_approximates_a_gaussian_filter(d):
    g = torch.Generator().manual_seed(d)
    features = torch.rand(1, 400, d, generator=g) * 4.0
    values = torch.rand(400, 2, generator=g)
    lattice = PermutohedralLattice(features)
    approx = lattice.filter(values).double()
    exact = _brute_force_gaussian(features[0], values)
    # The lattice filter is a Gaussian up to a global scale (that the CRF's
    # normalisation removes): compare shapes through the correlation.
    corr = torch.corrcoef(torch.stack([approx.flatten(), exact.flatten()]))[0, 1]
    assert corr > 0.97, corr


def test_lattice_filter_is_linear_and_keeps_batch_elements_apart():
    g = torch.Generator().manual_seed(0)
    features = torch.rand(2, 300, 3, generator=g) * 5.0
    lattice = PermutohedralLattice(features)
    u, v = torch.rand(600, 1, generator=g), torch.rand(600, 1, generator=g)
    ku, kv = lattice.filter(u), lattice.filter(v)
    torch.testing.assert_close(lattice.filter(2 * u + v), 2 * ku + kv, rtol=1e-5, atol=1e-5)
    # Batch elements never exchange mass: zero values in image 1 stay zero.
    w = torch.cat([torch.rand(300, 1, generator=g), torch.zeros(300, 1)])
    assert lattice.filter(w)[300:].abs().max() == 0


def test_smoothness_kernel_cache_gives_identical_results():
    from segkit.postprocess.dense_crf import _KERNEL_CACHE, set_kernel_cache_size

    image = _photo("coffee_300x200.png", (60, 40))
    probs, _ = _colour_segmentation(image, 3)
    set_kernel_cache_size(0)
    cold = dense_crf(image, probs, iterations=3)
    assert len(_KERNEL_CACHE) == 0
    set_kernel_cache_size(2)
    first = dense_crf(image, probs, iterations=3)
    assert len(_KERNEL_CACHE) == 1
    again = dense_crf(image, probs, iterations=3)  # served from the cache
    other = dense_crf(image[:20], probs[:, :20], iterations=3)  # another size: a second entry
    assert len(_KERNEL_CACHE) == 2 and other.shape == (3, 20, 60)
    np.testing.assert_array_equal(cold, first)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match=">= 0"):
        set_kernel_cache_size(-1)


@needs_pydensecrf
def test_post_processor_keeps_its_worker_pool():
    # Two different images with their own probabilities: pairing an image with the
    # other's unary, or returning the results out of order, would show.
    a, b = _photo("coffee_300x200.png", (48, 32)), _photo("chelsea.png", (48, 32))
    pa, _ = _colour_segmentation(a, 3)
    pb, _ = _colour_segmentation(b, 3, seed=2)
    images = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2)
    p = torch.from_numpy(np.stack([pa, pb]))
    crf = DenseCRF(CRFParams(iterations=2), backend="pydensecrf", num_workers=2)
    first = crf(p, images)
    pool = crf._executor
    assert pool is not None
    second = crf(p, images)
    assert crf._executor is pool
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, dense_crf_batch(images, p, CRFParams(iterations=2), "pydensecrf"), rtol=0, atol=0)
    for i, (image, probs) in enumerate(((a, pa), (b, pb))):
        one = dense_crf(image, probs, iterations=2, backend="pydensecrf")
        torch.testing.assert_close(first[i], torch.from_numpy(one), rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])
    crf.close()
    assert crf._executor is None
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(int)  # the old pool was shut down, not just forgotten
    # A post-processor dropped without close() shuts its pool down when collected.
    import gc

    crf = DenseCRF(CRFParams(iterations=1), backend="pydensecrf", num_workers=2)
    crf(p, images)
    pool = crf._executor
    del crf
    gc.collect()
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(int)


def test_tiled_lattice_filter_equals_filtering_each_copy():
    g = torch.Generator().manual_seed(5)
    features = torch.rand(1, 200, 2, generator=g) * 6.0
    op = PermutohedralLattice(features).operator(pre=torch.rand(200, generator=g) + 0.5)
    values = torch.rand(3, 200, 4, generator=g)
    tiled = op.repeat(3)(values.reshape(600, 4))
    expected = torch.cat([op(v) for v in values])
    torch.testing.assert_close(tiled, expected, rtol=0, atol=0)
    assert op.repeat(1) is op
