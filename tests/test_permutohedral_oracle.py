"""The lattice against a direct port of Krähenbühl's permutohedral.cpp (hash table, point by point).

The oracle below follows the reference's loops one point and one vertex at a time,
in float64 and with a dict as its hash table: elevation, rounding to the nearest
remainder-0 point, pairwise ranks, the wrap, barycentric weights, vertex keys,
the blur's two neighbours per direction (missing ones read zero) and the alpha
rescaling. segkit's batched construction (codes, sorts, searches) must give the
same filter up to float32 rounding, whatever the packing (int32 or int64 codes,
float or integer base codes) and the chunking.
"""
import math

import pytest
import torch

import segkit.postprocess.permutohedral as perm
from segkit.postprocess import PermutohedralLattice


def _oracle_filter(features, values):
    """Reference permutohedral filter of one point set: features (N, d), values (N, C) -> (N, C), float64."""
    n, d = features.shape
    d1 = d + 1
    inv_std = math.sqrt(2.0 / 3.0) * d1
    scale = [inv_std / math.sqrt((i + 1) * (i + 2)) for i in range(d)]
    table, keys, offsets, weights = {}, [], [], []
    for p in range(n):
        f = [float(x) for x in features[p]]
        elevated = [0.0] * d1
        sm = 0.0
        for j in range(d, 0, -1):
            cf = f[j - 1] * scale[j - 1]
            elevated[j] = sm - j * cf
            sm += cf
        elevated[0] = sm
        rem0, total = [0] * d1, 0
        for i in range(d1):
            v = elevated[i] / d1
            up, down = math.ceil(v) * d1, math.floor(v) * d1
            rem0[i] = up if up - elevated[i] < elevated[i] - down else down
            total += rem0[i] // d1
        rank = [0] * d1
        for i in range(d):
            for j in range(i + 1, d1):
                if elevated[i] - rem0[i] < elevated[j] - rem0[j]:
                    rank[i] += 1
                else:
                    rank[j] += 1
        for i in range(d1):
            rank[i] += total
            if rank[i] < 0:
                rank[i] += d1
                rem0[i] += d1
            elif rank[i] > d:
                rank[i] -= d1
                rem0[i] -= d1
        bary = [0.0] * (d1 + 1)
        for i in range(d1):
            v = (elevated[i] - rem0[i]) / d1
            bary[d - rank[i]] += v
            bary[d - rank[i] + 1] -= v
        bary[0] += 1.0 + bary[d1]
        for k in range(d1):
            key = tuple(rem0[i] + (k if rank[i] <= d - k else k - d1) for i in range(d))
            if key not in table:
                table[key] = len(keys)
                keys.append(key)
            offsets.append(table[key])
            weights.append(bary[k])
    m, c = len(keys), values.shape[1]
    lattice = [[0.0] * c for _ in range(m)]
    for p in range(n):
        for k in range(d1):
            o, w = offsets[p * d1 + k], weights[p * d1 + k]
            for ch in range(c):
                lattice[o][ch] += w * float(values[p, ch])
    for j in range(d1):
        blurred = []
        for i, key in enumerate(keys):
            n1 = tuple(key[t] + 1 - (d1 if t == j else 0) for t in range(d))
            n2 = tuple(key[t] - 1 + (d1 if t == j else 0) for t in range(d))
            a = lattice[table[n1]] if n1 in table else [0.0] * c
            b = lattice[table[n2]] if n2 in table else [0.0] * c
            blurred.append([lattice[i][ch] + 0.5 * (a[ch] + b[ch]) for ch in range(c)])
        lattice = blurred
    alpha = 1.0 / (1.0 + 2.0 ** (-d))
    out = torch.zeros(n, c, dtype=torch.float64)
    for p in range(n):
        for k in range(d1):
            o, w = offsets[p * d1 + k], weights[p * d1 + k]
            for ch in range(c):
                out[p, ch] += w * lattice[o][ch] * alpha
    return out


def _check(features, channels=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, n, _ = features.shape
    values = torch.rand(b * n, channels, generator=g)
    got = PermutohedralLattice(features).filter(values).double()
    for i in range(b):
        expected = _oracle_filter(features[i], values[i * n : (i + 1) * n])
        torch.testing.assert_close(got[i * n : (i + 1) * n], expected, rtol=2e-5, atol=2e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("d, batch, channels", [(1, 1, 1), (2, 2, 3), (3, 1, 2), (5, 2, 4)])
def test_filter_equals_the_reference_loops(d, batch, channels):
    g = torch.Generator().manual_seed(d)
    spread = torch.tensor([9.0, 7.0, 3.0, 4.0, 2.5])[:d]
    _check(torch.rand(batch, 120, d, generator=g) * spread, channels, seed=d)


def test_image_features_equal_the_reference_loops():
    # A pixel grid with colours, as the CRF's appearance kernel: (x, y, r, g, b) / theta.
    g = torch.Generator().manual_seed(7)
    ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(13.0), indexing="ij")
    colour = torch.rand(9 * 13, 3, generator=g) * 255
    features = torch.cat([torch.stack([xs, ys], -1).reshape(-1, 2) / 3.0, colour / 13.0], 1)
    _check(features[None], channels=3)


def test_wide_features_use_int64_codes_and_match(monkeypatch):
    """Features spanning many cells: codes no longer fit int32 (the int64 sorts and searches)."""
    g = torch.Generator().manual_seed(11)
    features = torch.rand(1, 150, 5, generator=g) * torch.tensor([300.0, 250.0, 200.0, 180.0, 160.0])
    seen = []
    original = perm._simplices

    def spy(elevated, batch):
        out = original(elevated, batch)
        seen.append(out[0].dtype)
        return out

    monkeypatch.setattr(perm, "_simplices", spy)
    _check(features)
    assert seen == [torch.int64]


def test_integer_base_codes_equal_float_ones(monkeypatch):
    """Past float64's exact range the base codes are summed in int64: same lattice."""
    g = torch.Generator().manual_seed(5)
    features = torch.rand(2, 200, 5, generator=g) * torch.tensor([9.0, 7.0, 3.0, 3.0, 3.0])
    values = torch.rand(400, 3, generator=g)
    floats = PermutohedralLattice(features)
    monkeypatch.setattr(perm, "_FLOAT_EXACT", 0)
    integers = PermutohedralLattice(features)
    assert torch.equal(floats.offsets, integers.offsets) and torch.equal(floats.vertex_codes, integers.vertex_codes)
    assert torch.equal(floats.filter(values), integers.filter(values))
