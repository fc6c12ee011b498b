"""Permutohedral-lattice Gaussian filtering in batched PyTorch tensor operations.

Adams, Baek and Davis, "Fast High-Dimensional Filtering Using the Permutohedral
Lattice" (Eurographics 2010): a d-dimensional Gaussian filter is approximated by

1. *splatting* every point onto the d+1 vertices of the enclosing simplex of the
   permutohedral lattice A*_d with barycentric weights,
2. *blurring* the lattice values with a [1, 2, 1]/2 kernel along each of the d+1
   lattice directions, and
3. *slicing* the blurred values back at the points with the same weights.

This module reproduces, operation for operation and in float32, the variant that
Krähenbühl and Koltun ship with their dense CRF (and that pydensecrf wraps): the
same feature scaling, the same rounding to the nearest remainder-0 lattice point,
the same barycentric coordinates, the same blur and the same "alpha" rescaling. The
only difference is how lattice vertices are found: the reference inserts keys
into a hash table one point at a time; here every vertex key is packed into one
integer code, an exact linear map of (remainder, batch, d coordinates/(d+1))
(no hashing, int32 when it fits, ordered so that the vertices of neighbouring
pixels get nearby numbers), built for all points at once, and one stable sort of
each remainder's codes yields at the same time the distinct vertices, every
point's vertex indices and the splat's vertex-major order (no ``torch.unique``,
no second sort). Blur neighbours are found by adding a constant to the code and
binary-searching the sorted vertex codes. The per-point work is laid out a row
per coordinate, so that each step of the reference's inner loops (the pairwise
rank comparisons included) is one operation on contiguous rows. Because vertex
numbering does not enter any arithmetic, results match the reference up to the
summation order of floating-point reductions (``tests/test_permutohedral_oracle.py``
compares the filter with a direct port of the reference's loops).

Splat, blur and slice are each a sparse linear map with a fixed number of terms
per output row (the slice: d+1; a blur step: 3) or a variable one (the splat),
run as weighted ``embedding_bag`` sums, which are fused gather-multiply-add
kernels on CPU and GPU.

Everything runs on the device of the input tensors (CPU or GPU) and handles a batch
of independent point sets at once: the batch index is part of every vertex code,
so the lattices of different images never share a vertex.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["LatticeFilter", "PermutohedralLattice"]



def _scale_factors(d: int) -> torch.Tensor:
    """Diagonal of the elevation matrix E scaled to the expected filter std.

    Adams et al. 2010, sec. 3.1 (p. 5-6): coordinate i is scaled by
    ``1/sqrt((i+1)(i+2))`` and the whole lattice by ``sqrt(2/3) (d+1)`` so that the
    blur has unit standard deviation. Computed in float64 and rounded once to
    float32, as the reference does.
    """
    inv_std = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))
    return torch.tensor([1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std for i in range(d)], dtype=torch.float64)


def _elevate(features: torch.Tensor) -> torch.Tensor:
    """Project features (P, d) onto the hyperplane sum(x) = 0 in R^{d+1}: (d+1, P).

    The running sum is accumulated from the last coordinate down, in float32, in
    the same order as the reference so that rounding to lattice points agrees. The
    result is laid out a row per coordinate: every later step is a whole-row
    operation on contiguous memory.
    """
    d = features.shape[1]
    scale = _scale_factors(d).to(device=features.device, dtype=torch.float32)
    cf = features.t() * scale[:, None]  # (d, P): contiguous rows for the running sum
    elevated = torch.empty(d + 1, features.shape[0], dtype=torch.float32, device=features.device)
    sm = torch.zeros_like(cf[0])
    for j in range(d, 0, -1):
        torch.sub(sm, cf[j - 1] * float(j), out=elevated[j])  # two roundings, as the reference (no FMA)
        sm = sm + cf[j - 1]
    elevated[0] = sm
    return elevated


def _row_digit(d: int):
    """Coefficients over (q_0..q_{d-1}) of the digit that follows image rows, or None (d = 1).

    For features (x, y, ...) the elevated coordinates give ``y = ((e_0 + e_1) / 2 -
    e_2) / 3`` up to scale for d >= 3 and ``y = (e_0 + e_1) / 2`` for d = 2, so
    ``q_0 + q_1 - 2 q_2`` (resp. ``q_0 + q_1``) grows with the image row; it
    replaces q_1 as a digit (the map from q stays one-to-one: q_1's coefficient
    is 1).
    """
    if d < 2:
        return None
    return [1, 1] + ([-2] if d >= 3 else []) + [0] * max(0, d - 3)


def _packing(v: torch.Tensor, batch: int, d1: int):
    """Vertex codes as a linear map of (remainder k, batch, q_0..q_{d-1}), exact and ordered.

    ``v`` is (d+1, P), the rounded coordinates. The code is mixed radix over the
    digits (k, batch, row, q_0, q_2, .., q_{d-1}) where ``row`` is the linear
    combination of the q's of :func:`_row_digit`; all are linear in (k, q), so a
    code is ``k s_k + b s_b + sum_i q_i c_i - offset`` with one stride c_i per
    coordinate (possibly negative), and moving along a lattice direction adds a
    constant to the code (the blur's neighbour search relies on it).

    The remainder k is the most significant digit, so sorting each k's codes
    separately sorts them all (see PermutohedralLattice._number_vertices); the row
    digit comes next: vertices are numbered in code order, and for image
    features (x, y, ...) the splat then visits them band of rows by band of rows,
    reading neighbouring bags' per-pixel values from nearby memory (on
    2048x1024 its reads were 1.8x slower in plain q order).

    A vertex digit q_i lies within [v_i - 2, v_i + 1] (the wrap moves it by one and
    the vertex offset by one more, see :func:`_simplices`) and a blur neighbour one
    further, so each digit's range is its range over the points widened by 3 per
    unit coefficient on each side: a neighbour that is not in the lattice can
    never alias another vertex.

    Returns:
        strides: [stride of k, stride of the batch index, c_0, ..., c_{d-1}].
        offset: the constant subtracted (codes start at 0).
        total: the number of codes.
        bound: a bound on the magnitude of every partial sum of a base code.
    """
    d = d1 - 1
    rows = v[:d]
    digits = [[int(i == j) for i in range(d)] for j in range(d)]  # q_j as coefficients
    row = _row_digit(d)
    if row is not None:
        digits = [row] + digits[:1] + digits[2:]
    lows, spans = [], []
    for coef in digits:
        values = _combine(rows, coef)
        margin = 3 * sum(abs(c) for c in coef)
        low, high = int(values.amin()), int(values.amax())
        lows.append(low - margin)
        spans.append(high - low + 2 * margin + 1)
    radix = [d1, batch] + spans  # most significant first
    total = 1
    for r in radix:
        total *= r
    if total >= 2**62:
        raise ValueError(
            "permutohedral lattice: the features span too many lattice cells to index "
            f"({total:.3g}); use larger kernel widths (theta) or smaller images"
        )
    place = [1] * len(radix)
    for i in range(len(radix) - 2, -1, -1):
        place[i] = place[i + 1] * radix[i + 1]
    coordinate = [sum(place[2 + j] * coef[i] for j, coef in enumerate(digits)) for i in range(d)]
    offset = sum(place[2 + j] * low for j, low in enumerate(lows))
    bound = sum(abs(c) for c in coordinate) * (int(rows.abs().amax()) + 3) + abs(offset)
    return place[:2] + coordinate, offset, total, bound


def _combine(rows: torch.Tensor, coef) -> torch.Tensor:
    """``sum_i coef[i] * rows[i]`` over the rows of (d, P); a unit vector returns its row itself."""
    terms = [(c, rows[i]) for i, c in enumerate(coef) if c]
    if len(terms) == 1 and terms[0][0] == 1:
        return terms[0][1]
    return sum(float(c) * r for c, r in terms)


def _simplices(elevated: torch.Tensor, batch: int):
    """Enclosing simplex of each elevated point: vertex codes and barycentric weights.

    Adams et al. 2010, sec. 3.1, step for step as the reference: round to the
    nearest remainder-0 lattice point, rank the residuals by pairwise comparisons
    (ties to the earlier coordinate), bring points off the plane back by shifting
    the ranks and wrapping those that leave [0, d], and read the barycentric
    weights off the residuals in rank order (p. 10). With the layout a row per
    coordinate, each of these is a handful of whole-row operations: the ranks are
    d(d+1)/2 comparisons of two rows, and the rank-ordered residuals one scatter.

    Vertex k of the simplex has key ``rem0 + canonical[k][rank]``,
    ``canonical[k][r] = k - (d+1) [r > d - k]``. All its coordinates are congruent
    to k mod (d+1), so the key is (k, q) with ``key_i = k + (d+1) q_i`` and
    ``q_i = rem0_i / (d+1) - [rank_i > d - k]``; the subtracted indicator covers the
    k highest ranks, so its packed value is a running sum over rank slots.

    Args:
        elevated: (d+1, P) float32 elevated points (:func:`_elevate`).
        batch: number of images; the P points are ``batch`` equal runs.

    Returns:
        codes: (d+1, P) exact code of vertex k of each point's simplex (:func:`_packing`)
            (batch index included), int32 when the packing fits, else int64.
        bary: (d+1, P) float32 barycentric weight of each vertex.
        strides: the packing's strides (see :func:`_packing`).
    """
    d1, p = elevated.shape
    device = elevated.device
    down = torch.tensor(1.0 / d1, dtype=torch.float32).item()
    # Round e/(d+1) to the nearest integer, ties to even (the reference's SSE path).
    v = torch.round(elevated * down)
    strides, offset, total, bound = _packing(v, batch, d1)
    ctype = torch.int32 if total < 2**31 else torch.int64  # int32 codes sort about twice as fast
    codes = torch.empty(d1, p, dtype=ctype, device=device)
    bary = torch.empty(d1, p, dtype=torch.float32, device=device)
    packing = _Packing(strides, offset, bound, ctype, device)
    # Every point is independent once the packing is known: work through the points in
    # chunks whose temporaries stay in cache (on large images each whole-tensor pass
    # would otherwise stream tens of megabytes from memory).
    per_image = p // batch
    for start in range(0, p, _CHUNK):
        stop = min(start + _CHUNK, p)
        image = None
        if batch > 1:
            image = torch.div(torch.arange(start, stop, device=device), per_image, rounding_mode="floor")
        _simplices_chunk(elevated[:, start:stop], v[:, start:stop], down, packing, image,
                         codes[:, start:stop], bary[:, start:stop])
    return codes, bary, strides


# Points per chunk of the simplex computation (see _simplices).
_CHUNK = 1 << 15


# Integers below this magnitude are exact in float64 sums (2**53, less a bit of room).
_FLOAT_EXACT = 2**52


class _Packing:
    """The constants of one packing, in the forms :func:`_simplices_chunk` uses."""

    def __init__(self, strides, offset, bound, ctype, device) -> None:
        coordinate = strides[2:]
        d = len(coordinate)
        self.ctype, self.batch_stride, self.offset = ctype, strides[1], offset
        # Base codes as one small float64 product: exact while every partial sum is an
        # integer of magnitude below 2**53 (``bound`` bounds them). Else int64 sums.
        self.exact_float = bound < _FLOAT_EXACT
        self.digit_row = torch.tensor(coordinate, dtype=torch.float64, device=device).view(1, d)
        self.digit_col = torch.tensor(coordinate, dtype=torch.int64, device=device).view(d, 1)
        # Stride of each coordinate (coordinate d carries no digit) and of remainders 1..d.
        self.slot_strides = torch.tensor(coordinate + [0], dtype=ctype, device=device).view(d + 1, 1)
        self.remainders = (torch.arange(1, d + 1, device=device, dtype=ctype) * strides[0]).view(d, 1)


def _simplices_chunk(elevated, v, down, packing: _Packing, image, codes_out, bary_out) -> None:
    """:func:`_simplices` for a run of points: writes their codes and weights, both (d+1, n)."""
    d1, n = elevated.shape
    d = d1 - 1
    device = elevated.device
    resid = torch.add(elevated, v, alpha=-float(d1))  # elevated - rem0, rem0 = (d+1) v
    # rank[i] = number of coordinates ranked before i: pairwise, as the reference
    # (i < j: i's count grows when its residual is smaller, else j's).
    rank = torch.arange(d1, device=device, dtype=torch.int8).view(d1, 1).repeat(1, n)
    for i in range(d):
        for j in range(i + 1, d1):
            smaller = torch.lt(resid[i], resid[j]).view(torch.int8)
            rank[i] += smaller
            rank[j] -= smaller
    # Points off the plane: shift every rank by sum(v) and wrap those that leave
    # [0, d], moving their coordinate's rem0 by -+(d+1).
    rank += v.sum(dim=0).to(torch.int8)
    wrap = (rank < 0).view(torch.int8) - (rank > d).view(torch.int8)
    rank.add_(wrap, alpha=d1)
    q = v.add_(wrap.to(torch.float32))  # rem0 / (d+1) after the wrap (exact small integers); v is this chunk's scratch
    # Residuals after the wrap, in float32 as the reference: (elevated - rem0) / (d+1).
    value = torch.add(elevated, q, alpha=-float(d1)).mul_(down)
    # by_slot[s] = residual ranked d - s. The reference adds it to weight s and
    # subtracts it from weight s + 1; weight d+1 wraps around onto weight 0.
    slot = (d - rank).to(torch.int64)
    by_slot = torch.empty_like(value).scatter_(0, slot, value)
    torch.sub(by_slot[1:], by_slot[:-1], out=bary_out[1:])
    torch.add(by_slot[0], 1.0 - by_slot[d], out=bary_out[0])
    # Codes: vertex 0 is rem0 itself; vertex k drops q_i by one for the k coordinates
    # in slots 0..k-1 (the k highest ranks), i.e. subtracts their strides.
    if packing.exact_float:
        base = torch.mm(packing.digit_row, q[:d].to(torch.float64)).view(n).sub_(packing.offset).to(packing.ctype)
    else:
        base = ((q[:d].to(torch.int64) * packing.digit_col).sum(dim=0) - packing.offset).to(packing.ctype)
    if image is not None:
        base += image.to(packing.ctype) * packing.batch_stride
    dropped = torch.zeros(d1, n, dtype=packing.ctype, device=device).scatter_(
        0, slot, packing.slot_strides.expand(d1, n))
    for k in range(1, d):
        dropped[k] += dropped[k - 1]
    codes_out[0] = base
    torch.sub(base, dropped[:d], out=codes_out[1:])
    codes_out[1:] += packing.remainders


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` along dim 0, through ``index_select``.

    Advanced indexing goes through a generic kernel that is about 10x slower on CPU
    for the multi-million-entry gathers of lattice construction; ``index_select``
    is a plain gather loop. (Scatters likewise use ``index_copy_``.)
    """
    return values.index_select(0, index.reshape(-1)).view(*index.shape, *values.shape[1:])


def _index_dtype(device: torch.device, count: int) -> torch.dtype:
    """int32 indices where the CPU kernels accept them (less memory traffic), else int64."""
    return torch.int32 if device.type == "cpu" and count < 2**31 - 1 else torch.int64


class PermutohedralLattice:
    """A permutohedral lattice built once over a batch of point sets, reused for filtering.

    Args:
        features: (B, N, d) float32 positions, already divided by the per-dimension
            standard deviation of the Gaussian (e.g. ``x / theta_alpha``).

    ``filter(values)`` computes, for every point p of every batch element,
    ``sum_q k(f_p, f_q) v_q`` over the points q of the same element, with ``k``
    approximately the unit Gaussian (the point itself included), as Krähenbühl's
    ``Permutohedral::compute``. :meth:`operator` returns the three sparse maps with
    per-point scalings folded in (what the CRF's normalised kernels use).

    Attributes:
        num_vertices: number of lattice vertices over the whole batch.
        offsets: (B*N, d+1) vertex index of each point's simplex vertices (int32 on CPU).
        weights: (B*N, d+1) float32 barycentric weights.
    """

    def __init__(self, features: torch.Tensor) -> None:
        if features.dim() != 3:
            raise ValueError(f"features must be (B, N, d); got shape {tuple(features.shape)}")
        b, n, d = features.shape
        if d < 1 or n < 1:
            raise ValueError(f"features must have at least one point and one dimension; got {tuple(features.shape)}")
        self.batch, self.num_points, self.dim = b, n, d
        feats = features.reshape(b * n, d).to(torch.float32)
        codes, bary, strides = _simplices(_elevate(feats), b)
        self.weights = bary.t().contiguous()
        self.alpha = torch.tensor(1.0 / (1.0 + 2.0 ** (-d)), dtype=torch.float32).item()
        self._number_vertices(codes, bary)
        self._build_blur(strides)
        self._plain: Optional["LatticeFilter"] = None

    # ------------------------------------------------------------------ build
    def _number_vertices(self, codes: torch.Tensor, bary: torch.Tensor) -> None:
        """Find the distinct vertices, number them, and lay out the splat and slice maps.

        ``codes`` and ``bary`` are (d+1, P), a row per simplex vertex k. Because k is
        the most significant digit, a stable sort of each row sorts all codes: equal
        codes become runs (one per vertex, its points in their original order, as
        the reference accumulates them), the sort indices are the points
        themselves, and the runs in order are the splat's bags. Vertices are
        numbered in code order, so the sorted codes are also the table the blur
        searches and a vertex's number is its position there.
        """
        d1, p = codes.shape
        device = codes.device
        sorted_codes = torch.empty_like(codes)
        points = torch.empty(codes.shape, dtype=torch.int64, device=device)
        for k in range(d1):  # row by row: faster than one sort along dim 1 on CPU
            torch.sort(codes[k], stable=True, out=(sorted_codes[k], points[k]))
        flat = sorted_codes.view(-1)
        new = torch.empty_like(flat, dtype=torch.bool)
        new[:1] = True
        torch.ne(flat[1:], flat[:-1], out=new[1:])
        starts = torch.nonzero(new).squeeze(1)
        self.vertex_codes = _take(flat, starts)  # sorted, for the blur's look-ups (int32 when the packing fits)
        self.num_vertices = int(starts.numel())
        itype = _index_dtype(device, p * d1)
        number = torch.cumsum(new, dim=0, dtype=itype).sub_(1).view(d1, p)  # vertex of each sorted entry
        offsets = torch.empty(p, d1, dtype=itype, device=device)
        splat_weights = torch.empty(d1, p, dtype=torch.float32, device=device)
        for k in range(d1):
            offsets[:, k].index_copy_(0, points[k], number[k])
            torch.index_select(bary[k], 0, points[k], out=splat_weights[k])
        self.offsets = self._slice_col = offsets  # (P, d+1)
        self._splat_bags = starts.to(itype)
        self._splat_col = points.view(-1).to(itype)
        self._splat_weights = splat_weights.view(-1)

    def _build_blur(self, strides) -> None:
        """One blur step per lattice direction j: I + (N1_j + N2_j) / 2 ([1, 2, 1] / 2), as (M, 3) bags.

        Only the neighbours in the +1 direction are searched: b is a's +1 neighbour
        along j exactly when a is b's -1 neighbour along j (``key - 1 + (d+1) e_j``
        and ``key + 1 - (d+1) e_j``), so the -1 neighbours are the search's hits
        turned around.
        """
        m, d1, d = self.num_vertices, self.dim + 1, self.dim
        codes = self.vertex_codes
        device = codes.device
        k_v = torch.div(codes, strides[0], rounding_mode="floor")
        base = _neighbour_base(codes, k_v, d, strides)
        itype = _index_dtype(device, m)
        rows = torch.arange(m, device=device, dtype=itype)
        self._blur = []
        for j in range(d1):
            target = base + (strides[2 + j] if j < d else 0)
            pos = torch.searchsorted(codes, target).clamp_(max=m - 1)
            hit = _take(codes, pos) == target
            cols = torch.empty(m, 3, dtype=itype, device=device)
            vals = torch.zeros(m, 3, dtype=torch.float32, device=device)
            cols[:, 0] = rows
            vals[:, 0] = 1.0
            # A missing neighbour contributes zero (the reference's zero row).
            cols[:, 1] = torch.where(hit, pos.to(itype), rows)
            vals[:, 1] = hit.to(torch.float32) * 0.5
            found = torch.nonzero(hit).squeeze(1)
            back = _take(pos, found)
            cols[:, 2] = rows
            cols[:, 2].index_copy_(0, back, found.to(itype))
            vals[:, 2].index_fill_(0, back, 0.5)
            self._blur.append((cols, vals))

    # ------------------------------------------------------------------ filtering
    def operator(
        self, pre: Optional[torch.Tensor] = None, post: Optional[torch.Tensor] = None, fold_alpha: bool = True
    ) -> "LatticeFilter":
        """The filter ``v -> post * K (pre * v)`` with both scalings folded into the weights.

        Args:
            pre: (B*N,) per-point factor applied before splatting, or None.
            post: (B*N,) per-point factor applied after slicing, or None.
            fold_alpha: fold the reference's alpha into the slice weights (its SSE
                path, used for more than two channels) rather than scaling the output.
        """
        splat_w = self._splat_weights
        if pre is not None:
            splat_w = splat_w * _take(pre, self._splat_col)
        scale = post * self.alpha if (post is not None and fold_alpha) else post
        if scale is not None:
            slice_w = self.weights * scale[:, None]
        else:
            slice_w = self.weights * self.alpha if fold_alpha else self.weights
        return LatticeFilter(
            (self._splat_col, self._splat_bags, splat_w),
            self._blur,
            (self._slice_col, slice_w.contiguous()),
            1.0 if fold_alpha else self.alpha,
        )

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Gaussian-filter per-point values with the lattice (splat, blur, slice).

        Args:
            values: (B*N, C) float32, rows in the order of the features.

        Returns:
            (B*N, C) float32 filtered values.
        """
        if values.shape[1] <= 2:
            if self._plain is None:
                self._plain = self.operator(fold_alpha=False)
            return self._plain(values)
        return self.operator()(values)


class LatticeFilter:
    """Splat, blur and slice as weighted gathers (``embedding_bag`` sums).

    Each step is a sparse matrix product written as bags of weighted rows: the
    splat's bag for a vertex lists the points that touch it, a blur bag is a vertex
    and its two neighbours along one lattice direction (weights 1, 1/2, 1/2; a
    missing neighbour has weight 0), a slice bag is a point's d+1 simplex vertices.
    ``embedding_bag`` runs these as fused gather-multiply-add kernels on CPU and GPU.

    ``__call__(values, out=None)`` returns ``slice(blur_d(...blur_0(splat(values))))``
    times ``scale``; with ``out`` it adds the result into ``out`` in place.
    """

    def __init__(self, splat, blur, slice_, scale: float = 1.0) -> None:
        self.splat, self.blur, self.slice, self.scale = splat, list(blur), slice_, scale

    def repeat(self, batch: int) -> "LatticeFilter":
        """The same filter applied independently to ``batch`` stacked copies of the point set.

        Used for kernels whose features are the same for every image of a batch
        (pixel positions): the lattice is built once and its index maps tiled.
        """
        if batch == 1:
            return self
        col, bags, weights = self.splat
        points, vertices, entries = self.slice[0].shape[0], bags.numel(), col.numel()

        def tile(index: torch.Tensor, step: int) -> torch.Tensor:
            shifts = torch.arange(batch, device=index.device, dtype=index.dtype) * step
            return (index.unsqueeze(0) + shifts.view(-1, *([1] * index.dim()))).reshape(-1, *index.shape[1:])

        splat = (tile(col, points), tile(bags, entries), weights.repeat(batch))
        blur = [(tile(cols, vertices), vals.repeat(batch, 1)) for cols, vals in self.blur]
        slice_ = (tile(self.slice[0], vertices), self.slice[1].repeat(batch, 1))
        return LatticeFilter(splat, blur, slice_, self.scale)

    def __call__(self, values: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        col, bags, weights = self.splat
        lattice = F.embedding_bag(col, values, bags, mode="sum", per_sample_weights=weights)
        for cols, vals in self.blur:
            lattice = F.embedding_bag(cols, lattice, mode="sum", per_sample_weights=vals)
        cols, vals = self.slice
        result = F.embedding_bag(cols, lattice, mode="sum", per_sample_weights=vals)
        if self.scale != 1.0:
            result = result * self.scale
        if out is None:
            return result
        return out.add_(result)


def _neighbour_base(codes: torch.Tensor, k_v: torch.Tensor, d: int, strides) -> torch.Tensor:
    """Codes of every vertex's +1 neighbour along lattice direction j, less ``stride_j``.

    The reference's +1 neighbour is ``key - 1 + (d+1) e_j``. In (k, q) form it moves
    the remainder k to k-1 and q_j up by one, except when k wraps from 0 to d: then
    q_j stays and every other q_i drops by one. Summed over the digits, both cases
    give ``code - s_k + w ((d+1) s_k - S) + s_j`` (w: the vertex wraps, s_k: the
    remainder's stride, S: the sum of the digit strides, s_j: direction j's, 0 for
    j = d, which has no stored digit). So one base serves every direction: the
    neighbour along j is ``base + s_j``. Digits stay inside their radix thanks to
    the packing margin.

    Returns:
        (M,) in the codes' dtype (every neighbour code lies in [0, total), like the codes).
    """
    s_k = strides[0]
    wrap_step = (d + 1) * s_k - sum(strides[2 : 2 + d])
    return codes - s_k + (k_v == 0).to(codes.dtype) * wrap_step
