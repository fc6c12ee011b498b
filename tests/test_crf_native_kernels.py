"""The native CRF's fast helpers compute exactly what the plain PyTorch calls compute."""
import pytest
import torch

from segkit.postprocess.dense_crf import _exp_normalize
from segkit.postprocess.permutohedral import _take


@pytest.mark.parametrize("k", [1, 2, 3, 19, 21])
@pytest.mark.parametrize("spread", [1.0, 30.0, 500.0])  # 500: past the global-max path, softmax fallback
def test_exp_normalize_is_softmax(k, spread):
    x = torch.randn(257, k, generator=torch.Generator().manual_seed(k)) * spread
    x[0] = x[0] - 1000.0  # a row far below the others
    got, expected = _exp_normalize(x.clone()), torch.softmax(x.double(), dim=1).float()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)



@pytest.mark.parametrize("k", [1, 3, 19])
@pytest.mark.parametrize(
    "shift, far",
    [
        (0.0, 0.0),  # the global-max path
        (60.0, 0.0),  # far from 0: exp without subtracting the max would overflow
        (-60.0, 0.0),  # ... or underflow
        (0.0, 120.0),  # a row 120 below: past the threshold of 80, where exp(x - max) underflows
    ],
)
@pytest.mark.parametrize("inplace", [False, True])
def test_exp_normalize_near_the_threshold_is_softmax(k, shift, far, inplace):
    x = torch.randn(64, k, generator=torch.Generator().manual_seed(k)) + shift
    x[0] = x[0] - far
    expected = torch.softmax(x.double(), dim=1).float()  # before: inplace overwrites x
    got = _exp_normalize(x, inplace=inplace)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)

@pytest.mark.parametrize("shape", [(0, 3), (4, 0)])
def test_exp_normalize_of_nothing_is_nothing(shape):
    """No pixels (or no labels): an empty result of the same shape, not an error from the max."""
    got = _exp_normalize(torch.empty(shape), inplace=True)
    assert got.shape == shape

def test_take_is_advanced_indexing():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(50, 3, generator=gen)
    for index in (torch.randint(0, 50, (40,), generator=gen), torch.randint(0, 50, (7, 6), generator=gen)):
        for dtype in (torch.int64, torch.int32):
            assert torch.equal(_take(values, index.to(dtype)), values[index])
            assert torch.equal(_take(values[:, 0], index.to(dtype)), values[:, 0][index])


def test_simplices_in_chunks_equal_one_pass(monkeypatch):
    """Chunking the points (cache-sized runs) changes nothing, batch index included."""
    import segkit.postprocess.permutohedral as perm

    gen = torch.Generator().manual_seed(3)
    features = torch.rand(2, 300, 5, generator=gen) * torch.tensor([9.0, 7.0, 3.0, 3.0, 3.0])
    values = torch.rand(600, 4, generator=gen)
    whole = perm.PermutohedralLattice(features)
    monkeypatch.setattr(perm, "_CHUNK", 37)  # not a divisor of 300: chunks straddle the two images
    chunked = perm.PermutohedralLattice(features)
    assert chunked.num_vertices == whole.num_vertices
    assert torch.equal(chunked.offsets, whole.offsets) and torch.equal(chunked.weights, whole.weights)
    assert torch.equal(chunked.filter(values), whole.filter(values))


def test_exp_normalize_in_place_reuses_the_memory():
    """``inplace`` on the CPU writes into the energy while the spread is below 80 (the fast path),
    one element included; from 80 up torch.softmax makes a new tensor."""
    for energy in (torch.randn(50, 3, generator=torch.Generator().manual_seed(1)) * 5, torch.zeros(1, 1)):
        expected = torch.softmax(energy, dim=1)
        out = _exp_normalize(energy, inplace=True)
        assert out.data_ptr() == energy.data_ptr()
        torch.testing.assert_close(out, expected)
    wide = torch.tensor([[0.0, -80.0], [-1.0, -2.0]])
    out = _exp_normalize(wide, inplace=True)
    assert out.data_ptr() != wide.data_ptr() and wide[0, 1] == -80.0  # the input is left as it was
    torch.testing.assert_close(out, torch.softmax(wide, dim=1))
    narrow = torch.tensor([[0.0, -79.5]])
    assert _exp_normalize(narrow, inplace=True).data_ptr() == narrow.data_ptr()


@pytest.mark.parametrize("iterations", [1, 5])
def test_two_label_mean_field_equals_the_general_update(monkeypatch, iterations):
    """Two labels filter one channel (e_1 = B - e_0): same beliefs as the K-channel update."""
    import importlib

    import numpy as np

    module = importlib.import_module("segkit.postprocess.dense_crf")
    dense_crf = module.dense_crf
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)
    image[:, 15:] //= 3  # an edge for the appearance kernel
    logits = rng.normal(0.0, 2.0, (2, 24, 30)).astype(np.float32)
    logits[0, :, :15] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(0)
    fast = dense_crf(image, probs, iterations=iterations)
    monkeypatch.setattr(module, "_binary_mean_field", module._general_mean_field)
    general = dense_crf(image, probs, iterations=iterations)
    np.testing.assert_allclose(fast, general, rtol=0, atol=2e-6)
    np.testing.assert_allclose(fast.sum(0), 1.0, atol=1e-6)
    assert (fast.argmax(0) == general.argmax(0)).all()
    assert (fast.argmax(0) != probs.argmax(0)).any()  # the CRF moved labels: the check can fail
    # A nearly certain pixel keeps its tiny belief (computed from the energy difference, not 1 - q).
    probs[:, 0, 0] = (1.0 - 1e-30, 1e-30)
    tiny = dense_crf(image, probs, iterations=iterations)[1, 0, 0]
    assert 0.0 < tiny < 1e-6
