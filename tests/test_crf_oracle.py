"""The native dense CRF against a direct O(N^2) mean-field implementation.

These tests need nothing but numpy and torch (no pydensecrf): the oracle below
builds the full N x N Gaussian kernels of Krähenbühl and Koltun (NIPS 2011) on a
small image, normalises them symmetrically (D^-1/2 K D^-1/2, the pixel itself
included, as the released code does) and runs the Potts mean-field update
``Q <- softmax(-U + sum_k w_k K_k Q)`` directly. The native backend approximates
the same kernels with a permutohedral lattice, so values agree up to the
lattice's approximation error; each test compares against the oracle with the
right parameters *and* with wrong ones, so a native backend that ignores or
confuses a parameter is caught.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from segkit.postprocess import CRFParams, DenseCRF, dense_crf, dense_crf_batch

# The module, not the function of the same name that segkit.postprocess exports.
crf_module = importlib.import_module("segkit.postprocess.dense_crf")

H, W, K = 12, 16, 3
BASE = dict(w1=4.0, theta_alpha=5.0, theta_beta=20.0, w2=3.0, theta_gamma=2.0, iterations=3)


def oracle(image: np.ndarray, probs: np.ndarray, w1, theta_alpha, theta_beta, w2, theta_gamma, iterations):
    """Dense CRF by brute force: image (H, W, 3) uint8, probs (K, H, W) -> Q (K, H, W) float64."""
    h, w, _ = image.shape
    k = probs.shape[0]
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    position = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64)
    colour = image.reshape(-1, 3).astype(np.float64)

    def normalised_gaussian(features):
        squared = ((features[:, None, :] - features[None, :, :]) ** 2).sum(-1)
        kernel = np.exp(-0.5 * squared)
        d = 1.0 / np.sqrt(kernel.sum(1))
        return d[:, None] * kernel * d[None, :]

    pairwise = []
    if w2 > 0:
        pairwise.append(w2 * normalised_gaussian(position / theta_gamma))
    if w1 > 0:
        pairwise.append(w1 * normalised_gaussian(np.concatenate([position / theta_alpha, colour / theta_beta], 1)))
    unary = -np.log(np.clip(probs.reshape(k, -1).T.astype(np.float64), 1e-5, 1.0))  # (N, K)

    def softmax(energy):
        e = np.exp(energy - energy.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    q = softmax(-unary)
    for _ in range(iterations):
        q = softmax(-unary + sum(kernel @ q for kernel in pairwise))
    return q.T.reshape(k, h, w)


def scene(seed: int = 0, h: int = H, w: int = W, k: int = K):
    """A blocky colour image with sensor noise, and a noisy classifier over its regions."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), np.int64)
    truth[:, w * 3 // 8 : w * 11 // 16] = 1
    truth[:, w * 11 // 16 :] = 2 % k
    truth[h // 3 : 2 * h // 3, w // 5 : w * 4 // 5] = 0
    palette = np.array([(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)], np.float64)
    image = palette[truth] + rng.normal(0.0, 10.0, (h, w, 3))
    image[h // 3 : 2 * h // 3, w // 5 : w * 4 // 5] = palette[3] + rng.normal(0.0, 10.0, (2 * h // 3 - h // 3,
                                                                                            w * 4 // 5 - w // 5, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    logits = rng.normal(0.0, 1.0, (k, h, w))
    logits[truth, np.arange(h)[:, None], np.arange(w)] += 0.8
    probs = np.exp(logits)
    return image, (probs / probs.sum(0)).astype(np.float32), truth


@pytest.fixture(autouse=True)
def _fresh_kernel_cache():
    """The smoothness-kernel cache is process-global: every test starts and ends with it empty."""
    size = crf_module._CACHE_SIZE[0]
    crf_module.set_kernel_cache_size(0)
    crf_module.set_kernel_cache_size(size)
    yield
    crf_module.set_kernel_cache_size(0)
    crf_module.set_kernel_cache_size(size)


def _distance(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


def test_native_matches_the_brute_force_mean_field():
    image, probs, _ = scene()
    native = dense_crf(image, probs, **BASE)
    exact = oracle(image, probs, **BASE)
    assert native.shape == (K, H, W) and native.dtype == np.float32
    np.testing.assert_allclose(native.sum(0), 1.0, atol=1e-5)
    assert _distance(native, exact) < 0.01
    assert (native.argmax(0) == exact.argmax(0)).mean() >= 0.98
    # ... and the CRF did change a sizeable share of the labels
    assert (exact.argmax(0) != probs.argmax(0)).mean() > 0.1
    labels = dense_crf(image, probs, output="labels", **BASE)
    assert labels.dtype == np.int64 and np.array_equal(labels, native.argmax(0))


@pytest.mark.parametrize(
    "name, value",
    [("w1", 8.0), ("w1", 1.0), ("w1", 0.0), ("theta_alpha", 2.5), ("theta_beta", 6.0), ("theta_beta", 200.0), ("w2", 6.0), ("w2", 1.0), ("w2", 0.0),
     ("theta_gamma", 4.0), ("iterations", 1), ("iterations", 6)],
)
def test_each_parameter_acts_as_in_the_brute_force_model(name, value):
    """Changing one parameter moves the native result to the oracle's result for the new value."""
    image, probs, _ = scene(seed=1)
    changed = dict(BASE, **{name: value})
    native = dense_crf(image, probs, **changed)
    right, wrong = oracle(image, probs, **changed), oracle(image, probs, **BASE)
    assert _distance(right, wrong) > 0.01  # the change matters at all on this scene
    assert _distance(native, right) < 0.5 * _distance(native, wrong)
    if name in ("w1", "w2") and value > 0:  # a small weight still counts
        without = oracle(image, probs, **dict(changed, **{name: 0.0}))
        assert _distance(native, right) < 0.5 * _distance(native, without)


def test_zero_iterations_and_zero_weights_give_the_floored_softmax():
    image, probs, _ = scene(seed=2)
    probs[0, 0, 0], probs[1, 0, 0] = 1e-9, probs[1, 0, 0] + probs[0, 0, 0] - 1e-9  # below the 1e-5 floor
    floored = np.clip(probs, 1e-5, 1.0)
    expected = floored / floored.sum(0)
    np.testing.assert_allclose(dense_crf(image, probs, **dict(BASE, iterations=0)), expected, atol=1e-6)
    np.testing.assert_allclose(dense_crf(image, probs, **dict(BASE, w1=0.0, w2=0.0)), expected, atol=1e-6)


def test_batch_pairs_each_image_with_its_own_probabilities():
    (a, pa, _), (b, pb, _) = scene(seed=3), scene(seed=4)
    b = np.ascontiguousarray(b[:, ::-1])  # a different layout, so a swapped pairing shows
    images = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2)
    out = dense_crf_batch(images, torch.from_numpy(np.stack([pa, pb])), CRFParams(**BASE))
    assert out.shape == (2, K, H, W) and out.dtype == torch.float32
    for got, image, probs in ((out[0], a, pa), (out[1], b, pb)):
        assert _distance(got.numpy(), oracle(image, probs, **BASE)) < 0.01


def test_post_processor_reads_rgb_and_keeps_dtype():
    image, probs, _ = scene(seed=5)
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None]
    p = torch.from_numpy(probs)[None].double()
    out = DenseCRF(CRFParams(**BASE))(p, rgb)
    assert out.dtype == torch.float64
    assert _distance(out[0].numpy(), oracle(image, probs, **BASE)) < 0.01
    # the same image with its channels swapped by mistake is a different (wrong) result
    swapped = DenseCRF(CRFParams(**BASE))(p, rgb.flip(1))
    assert _distance(swapped[0].numpy(), out[0].numpy()) > 0.001


@pytest.mark.parametrize("device_kwarg", [None, "cpu"])
def test_dense_crf_accepts_tensors_and_a_device(device_kwarg):
    image, probs, _ = scene(seed=6)
    out = dense_crf(torch.from_numpy(image), torch.from_numpy(probs), device=device_kwarg, **BASE)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), dense_crf(image, probs, **BASE), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- kernel cache
@pytest.mark.parametrize(
    "change",
    [
        dict(theta_gamma=4.0),
        dict(w2=6.0),
        dict(shape=(W, H)),  # the same number of pixels, transposed
        dict(shape=(H, W + 2)),
        dict(shape=(H + 2, W)),
    ],
    ids=["theta_gamma", "w2", "transposed", "width", "height"],
)
def test_cache_key_holds_every_parameter_of_the_smoothness_kernel(change):
    """A warm call after a call with different smoothness parameters equals a cold call."""
    change = dict(change)
    shape = change.pop("shape", (H, W))
    first_image, first_probs, _ = scene(seed=7)
    image, probs, _ = scene(seed=8, h=shape[0], w=shape[1])
    params = dict(BASE, **change)
    crf_module.set_kernel_cache_size(0)
    cold = dense_crf(image, probs, **params)
    crf_module.set_kernel_cache_size(4)
    dense_crf(first_image, first_probs, **BASE)  # fills the cache for the base parameters
    warm = dense_crf(image, probs, **params)
    np.testing.assert_array_equal(warm, cold)
    assert len(crf_module._KERNEL_CACHE) == 2
    assert _distance(cold, oracle(image, probs, **params)) < 0.01


def test_cache_reuses_kernels_and_evicts_least_recently_used():
    image, probs, _ = scene(seed=9)
    crf_module.set_kernel_cache_size(2)
    first = dense_crf(image, probs, **BASE)
    (key,) = crf_module._KERNEL_CACHE
    kernel = crf_module._KERNEL_CACHE[key]
    assert key[-1] == "cpu"  # the device is part of the key
    assert np.array_equal(dense_crf(image, probs, **BASE), first)
    assert crf_module._KERNEL_CACHE[key] is kernel  # served from the cache, not rebuilt
    dense_crf(image, probs, **dict(BASE, theta_gamma=1.0))
    dense_crf(image, probs, **BASE)  # touch the first entry: it becomes the most recent
    dense_crf(image, probs, **dict(BASE, w2=1.0))  # evicts theta_gamma=1.0, not the base entry
    assert len(crf_module._KERNEL_CACHE) == 2 and crf_module._KERNEL_CACHE.get(key) is kernel
    crf_module.set_kernel_cache_size(1)
    assert list(crf_module._KERNEL_CACHE) != [key] and len(crf_module._KERNEL_CACHE) == 1
    dense_crf(image, probs, **BASE)  # a cache of one still caches
    assert list(crf_module._KERNEL_CACHE) == [key]
    crf_module.set_kernel_cache_size(0)
    assert len(crf_module._KERNEL_CACHE) == 0
    dense_crf(image, probs, **BASE)
    assert len(crf_module._KERNEL_CACHE) == 0  # size 0: nothing is kept


# --------------------------------------------------------------------------- errors and options
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(theta_alpha=0.0), "theta_alpha must be > 0"),
        (dict(theta_gamma=-1.0), "theta_gamma must be > 0"),
        (dict(w1=-1.0), "w1 must be >= 0"),
        (dict(w2=-0.5), "w2 must be >= 0"),
        (dict(iterations=1.5), "iterations must be a non-negative integer"),
    ],
)
def test_params_validate(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CRFParams(**kwargs)


def test_boundary_parameters_are_accepted():
    p = CRFParams(w1=0.0, w2=0.0, iterations=0, theta_alpha=1e-3, theta_beta=1e-3, theta_gamma=1e-3)
    assert p.iterations == 0 and p.w1 == 0.0


@pytest.mark.parametrize(
    "images, probs, message",
    [
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.full((2, 4, 4), 0.5), "probs must be"),
        (torch.zeros(1, 4, 4, 3, dtype=torch.uint8), torch.full((1, 2, 4, 4), 0.5), "images must be"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), torch.full((1, 2, 4, 4), 0.5), "images must be"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.full((1, 2, 4, 4), 0.5), "differ in batch"),
        (torch.zeros(1, 3, 4, 4), torch.full((1, 2, 4, 4), 0.5), "uint8"),
    ],
)
def test_batch_inputs_are_checked(images, probs, message):
    with pytest.raises(ValueError, match=message):
        dense_crf_batch(images, probs)


def test_single_image_inputs_are_checked():
    image, probs, _ = scene()
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\)"):
        dense_crf(image[..., :2], probs)
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\)"):
        dense_crf(image[..., 0], probs)
    with pytest.raises(ValueError, match=r"probs must be \(K, H, W\)"):
        dense_crf(image, probs[None])
    with pytest.raises(ValueError, match="output must be"):
        dense_crf(image, probs, output="logits")
    with pytest.raises(ValueError, match="unknown backend"):
        dense_crf_batch(torch.from_numpy(image).permute(2, 0, 1)[None], torch.from_numpy(probs)[None], backend="x")


def test_post_processor_checks_its_arguments_and_reads_the_config():
    from segkit.config import get_cfg

    with pytest.raises(ValueError, match="unknown dense-CRF backend"):
        DenseCRF(backend="cuda")
    with pytest.raises(TypeError, match="input_format"):  # images are RGB end to end: no such argument
        DenseCRF(input_format="RGBA")
    cfg = get_cfg()
    c = cfg.POSTPROCESS.CRF
    c.W1, c.THETA_ALPHA, c.THETA_BETA, c.W2, c.THETA_GAMMA, c.ITERATIONS = 1.0, 2.0, 3.0, 4.0, 5.0, 6
    cfg.INPUT.FORMAT = "BGR"
    crf = DenseCRF(cfg)
    assert crf.params == CRFParams(1.0, 2.0, 3.0, 4.0, 5.0, 6)
    assert crf.backend == "native" and crf.num_workers == c.NUM_WORKERS
    assert "DenseCRF(" in repr(crf) and "native" in repr(crf)
    crf.close()  # nothing started: a no-op
    assert crf._executor is None


def test_defaults_are_deeplab_v2_voc_values():
    """DeepLab v2 (TPAMI 2018, sec. 4.1): w2 = 3, θγ = 3, w1 = 4, θα = 121, θβ = 5, 10 iterations;
    the dataclass, the function's keywords and the config agree."""
    import inspect

    from segkit.config import get_cfg

    assert CRFParams() == CRFParams(w1=4.0, theta_alpha=121.0, theta_beta=5.0, w2=3.0, theta_gamma=3.0, iterations=10)
    keywords = {k: p.default for k, p in inspect.signature(dense_crf).parameters.items()
                if k in ("w1", "theta_alpha", "theta_beta", "w2", "theta_gamma", "iterations")}
    assert CRFParams(**keywords) == CRFParams()
    c = get_cfg().POSTPROCESS.CRF
    assert CRFParams(c.W1, c.THETA_ALPHA, c.THETA_BETA, c.W2, c.THETA_GAMMA, c.ITERATIONS) == CRFParams()
    assert DenseCRF().params == CRFParams() and DenseCRF().backend == "native"


def test_params_are_immutable_and_hashable():
    import dataclasses

    p = CRFParams(w1=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.w1 = 3.0
    assert {p: 1}[CRFParams(w1=2.0)] == 1 and hash(p) == hash(CRFParams(w1=2.0))


def test_batch_larger_than_the_image():
    """More images than pixels per image (1x2 images, batch 3): shapes are per batch, not per pixel."""
    rng = np.random.default_rng(12)
    images = rng.integers(0, 256, (3, 1, 2, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(2), size=(3, 1, 2)).transpose(0, 3, 1, 2).astype(np.float32)
    out = dense_crf_batch(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(probs), CRFParams(**BASE))
    for i in range(3):
        np.testing.assert_allclose(out[i].numpy(), oracle(images[i], probs[i], **BASE), atol=0.02)


@pytest.mark.parametrize("iterations", [1, 2])  # later iterations converge
def test_each_iteration_counts(iterations):
    image, probs, _ = scene(seed=13)
    native = dense_crf(image, probs, **dict(BASE, iterations=iterations))
    right = oracle(image, probs, **dict(BASE, iterations=iterations))
    for wrong in (iterations - 1, iterations + 1):
        assert _distance(native, right) < 0.5 * _distance(native, oracle(image, probs, **dict(BASE, iterations=wrong)))


try:
    import pydensecrf.densecrf  # noqa: F401
    HAVE_PYDENSECRF = True
except ImportError:
    HAVE_PYDENSECRF = False


@pytest.mark.skipif(not HAVE_PYDENSECRF, reason="the pydensecrf reference is not installed")
@pytest.mark.parametrize("weights", [dict(w1=1.0, w2=1.0), dict(w1=0.5, w2=0.0), dict(w1=0.0, w2=0.5)])
def test_reference_backend_with_small_weights(weights):
    """The pydensecrf backend uses kernels of any positive weight (and none of weight 0)."""
    image, probs, _ = scene(seed=14)
    params = dict(BASE, **weights)
    ref = dense_crf(image, probs, backend="pydensecrf", **params)
    assert _distance(ref, dense_crf(image, probs, **params)) < 0.002
    assert _distance(ref, oracle(image, probs, **params)) < 0.01


# --------------------------------------------------------------------------- what is built, and where
def test_features_are_built_on_the_images_device():
    """Positions are made on the images' device (the meta device: shapes only, no data)."""
    images = torch.zeros(2, 3, 4, 3, dtype=torch.uint8, device="meta")
    smooth, appearance = crf_module._features(images, CRFParams(**BASE))
    assert smooth.device.type == "meta" and appearance.device.type == "meta"
    assert smooth.shape == (2, 12, 2) and appearance.shape == (2, 12, 5)


def test_fused_mean_field_makes_its_tables_on_the_unarys_device():
    """The fused update's table and slice maps follow the unary (the meta device: shapes only)."""
    from segkit.postprocess.permutohedral import LatticeFilter

    image, _, _ = scene(seed=18)
    smooth, appearance = crf_module._features(torch.from_numpy(image)[None], CRFParams(**BASE))
    operators = [crf_module._Kernel(smooth, 3.0).operator, crf_module._Kernel(appearance, 4.0).operator]

    def meta(pair):
        return tuple(t.to("meta") for t in pair)

    moved = [LatticeFilter(meta(op.splat), [meta(b) for b in op.blur], meta(op.slice), op.scale) for op in operators]
    fused = crf_module._FusedMeanField(moved, torch.zeros(H * W, K, device="meta"))
    assert fused.table.device.type == "meta"
    assert fused.slice[0].device.type == "meta" and fused.slice[1].device.type == "meta"
    assert fused.energy(torch.zeros(H * W, K, device="meta")).shape == (H * W, K)


def test_native_crf_does_not_depend_on_the_default_dtype():
    """A user who sets torch's default dtype to float64 gets the same float32 result."""
    image, probs, _ = scene(seed=15)
    expected = dense_crf(image, probs, **BASE)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = dense_crf(image, probs, **BASE)
    finally:
        torch.set_default_dtype(old)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("w1, w2, dims", [(4.0, 3.0, [2, 5]), (0.0, 3.0, [2]), (4.0, 0.0, [5]), (0.0, 0.0, [])])
def test_a_kernel_of_weight_zero_is_not_built(monkeypatch, w1, w2, dims):
    """Only kernels of positive weight build a lattice (smoothness: 2-D features, appearance: 5-D)."""
    built = []

    class Counting(crf_module.PermutohedralLattice):
        def __init__(self, features):
            built.append(features.shape[-1])
            super().__init__(features)

    monkeypatch.setattr(crf_module, "PermutohedralLattice", Counting)
    crf_module.set_kernel_cache_size(2)
    image, probs, _ = scene(seed=16)
    params = dict(BASE, w1=w1, w2=w2)
    got = dense_crf(image, probs, **params)
    assert built == dims
    assert len(crf_module._KERNEL_CACHE) == (1 if w2 > 0 else 0)  # no zero-weight kernel is cached either
    assert _distance(got, oracle(image, probs, **params)) < 0.01


# --------------------------------------------------------------------------- the pydensecrf backend's wiring
class _FakeDenseCRF2D:
    """Stands in for pydensecrf.densecrf.DenseCRF2D and records what the backend asks of it.

    Its "inference" is softmax(-U), with the image's mean intensity / 1000 added to label 0, so a
    result shows which unary and which image it was given.
    """

    made = []

    def __init__(self, w, h, k):
        self.calls = [("new", w, h, k)]
        self.image = None
        _FakeDenseCRF2D.made.append(self)

    def setUnaryEnergy(self, unary):
        assert unary.dtype == np.float32 and unary.flags.c_contiguous
        self.unary = unary.copy()
        self.calls.append(("unary", unary.shape))

    def addPairwiseGaussian(self, sxy, compat):
        self.calls.append(("gaussian", sxy, compat))

    def addPairwiseBilateral(self, sxy, srgb, rgbim, compat):
        assert rgbim.dtype == np.uint8 and rgbim.flags.c_contiguous
        self.image = rgbim.copy()
        self.calls.append(("bilateral", sxy, srgb, compat))

    def inference(self, iterations):
        self.calls.append(("inference", iterations))
        return _fake_result(self.unary, self.image)


def _fake_result(unary, image):
    e = np.exp(-unary.astype(np.float64))
    q = e / e.sum(0)
    if image is not None:
        q[0] += image.mean() / 1000.0
    return q.astype(np.float32)


class _FakePool:
    """Stands in for ProcessPoolExecutor: runs in process, records its size, use and shutdown."""

    made = []

    def __init__(self, max_workers=None):
        self.max_workers, self.maps, self.shutdowns = max_workers, 0, []
        _FakePool.made.append(self)

    def map(self, fn, *iterables):
        self.maps += 1
        return map(fn, *iterables)

    def shutdown(self, wait=True):
        self.shutdowns.append(wait)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown(wait=True)


@pytest.fixture
def fake_reference(monkeypatch):
    import types

    _FakeDenseCRF2D.made, _FakePool.made = [], []
    fake = types.SimpleNamespace(DenseCRF2D=_FakeDenseCRF2D)
    monkeypatch.setattr(crf_module, "_import_pydensecrf", lambda: fake)
    monkeypatch.setattr(crf_module, "ProcessPoolExecutor", _FakePool)
    return fake


def _two_scenes(n=2):
    scenes = [scene(seed=20 + i) for i in range(n)]
    images = np.stack([np.ascontiguousarray(s[0][:, ::-1] if i % 2 else s[0]) for i, s in enumerate(scenes)])
    probs = np.stack([s[1] for s in scenes])
    return images, probs


@pytest.mark.parametrize("weights", [dict(w1=4.0, w2=3.0), dict(w1=0.0, w2=3.0), dict(w1=4.0, w2=0.0),
                                     dict(w1=0.0, w2=0.0)])
def test_reference_backend_passes_every_parameter(fake_reference, weights):
    image, probs, _ = scene(seed=17)
    params = CRFParams(**dict(BASE, **weights))
    out = dense_crf(image, probs, backend="pydensecrf", **dict(BASE, **weights))
    (crf,) = _FakeDenseCRF2D.made
    expected = [("new", W, H, K), ("unary", (K, H * W))]
    if params.w2 > 0:
        expected.append(("gaussian", params.theta_gamma, params.w2))
    if params.w1 > 0:
        expected.append(("bilateral", params.theta_alpha, params.theta_beta, params.w1))
    expected.append(("inference", params.iterations))
    assert crf.calls == expected
    unary = -np.log(np.clip(probs, 1e-5, 1.0)).reshape(K, -1)
    np.testing.assert_allclose(crf.unary, unary, rtol=1e-6)
    want = _fake_result(unary, image if params.w1 > 0 else None).reshape(K, H, W)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-6)


@pytest.mark.parametrize("num_workers, batch, pool_size", [(0, 2, None), (1, 3, None), (2, 1, None), (3, 2, 2),
                                                          (2, 3, 2)])
def test_reference_batch_runs_in_process_or_in_a_pool_of_the_right_size(fake_reference, num_workers, batch,
                                                                        pool_size):
    """num_workers 0 or 1, or a single image: in process; else a pool of min(num_workers, batch)
    processes for the call, shut down (waiting) before it returns."""
    images, probs = _two_scenes(batch)
    out = dense_crf_batch(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(probs),
                          CRFParams(**BASE), backend="pydensecrf", num_workers=num_workers)
    if pool_size is None:
        assert _FakePool.made == []
    else:
        (pool,) = _FakePool.made
        assert pool.max_workers == pool_size and pool.maps == 1 and pool.shutdowns == [True]
    for i in range(batch):  # each image with its own probabilities, in order
        unary = -np.log(np.clip(probs[i], 1e-5, 1.0)).reshape(K, -1)
        np.testing.assert_allclose(out[i].numpy(), _fake_result(unary, images[i]).reshape(K, H, W), rtol=1e-6)


def test_reference_batch_uses_a_given_pool_for_several_images_only(fake_reference):
    """A persistent pool (what DenseCRF keeps) takes batches of two or more; one image runs in process."""
    images, probs = _two_scenes(2)
    pool = _FakePool(max_workers=2)
    args = (torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(probs), CRFParams(**BASE), "pydensecrf")
    dense_crf_batch(*args, num_workers=2, executor=pool)
    assert pool.maps == 1 and pool.shutdowns == [] and len(_FakePool.made) == 1  # no pool of its own
    dense_crf_batch(args[0][:1], args[1][:1], *args[2:], num_workers=2, executor=pool)
    assert pool.maps == 1 and len(_FakeDenseCRF2D.made) == 3


@pytest.mark.parametrize("num_workers, pool_size", [(0, None), (1, None), (3, 3)])
def test_post_processor_pool_size_reuse_and_shutdown(fake_reference, num_workers, pool_size):
    images, probs = _two_scenes(2)
    images_t, probs_t = torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(probs)
    crf = DenseCRF(CRFParams(**BASE), backend="pydensecrf", num_workers=num_workers)
    first = crf(probs_t, images_t)
    second = crf(probs_t, images_t)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    if pool_size is None:
        assert _FakePool.made == [] and crf._executor is None
        return
    (pool,) = _FakePool.made  # one pool, kept between batches
    assert pool.max_workers == pool_size and pool.maps == 2 and crf._executor is pool
    crf.close()
    assert pool.shutdowns == [True] and crf._executor is None  # close() waits for the workers
    crf = DenseCRF(CRFParams(**BASE), backend="pydensecrf", num_workers=num_workers)
    crf(probs_t, images_t)
    pool = crf._executor
    crf.__del__()
    assert pool.shutdowns == [False]  # garbage collection does not wait
