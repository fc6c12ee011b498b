"""Fully-connected CRF (Krähenbühl and Koltun, NIPS 2011) as used by DeepLab v2.

DeepLab v2 (Chen et al., TPAMI 2018, sec. 3.3, eq. 3-4) refines the network's
softmax with a dense CRF whose energy is

    E(x) = sum_i -log P(x_i) + sum_{i<j} mu(x_i, x_j) [
        w1 exp(-|p_i - p_j|^2 / (2 θα^2) - |I_i - I_j|^2 / (2 θβ^2))   # appearance
      + w2 exp(-|p_i - p_j|^2 / (2 θγ^2)) ]                                # smoothness

with a Potts compatibility mu = [x_i != x_j], minimised approximately with a few
mean-field iterations. DeepLab's PASCAL VOC setting (sec. 4.1, "CRF"): w2 = 3,
θγ = 3 and, found by cross-validation on 100 val images, w1 = 4, θα = 121, θβ = 5;
10 iterations.

Two backends with the same parameters:

* ``"native"``: PyTorch, batched, any device, using :mod:`segkit.postprocess.permutohedral`.
  It follows Krähenbühl's released code step for step (symmetric normalisation of
  each kernel, message = normalised lattice filter including the pixel itself,
  Potts update ``-w * message``), so labels agree with pydensecrf's on ~100% of
  pixels.
* ``"pydensecrf"``: the reference C++ code through the ``pydensecrf`` module
  (``pip install pydensecrf2``); CPU, one image at a time, a batch spread over
  worker processes.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from segkit.postprocess.permutohedral import LatticeFilter, PermutohedralLattice
from segkit.config.configurable import configurable
from segkit.registry import POSTPROCESSOR_REGISTRY
from segkit.utils.threads import choose_threads, intra_op_threads

__all__ = ["CRFParams", "DenseCRF", "dense_crf", "dense_crf_batch", "set_kernel_cache_size", "BACKENDS",
           "resolve_crf_backend"]

# "auto": pydensecrf when it is installed (it does not build on every Python), else native.
BACKENDS = ("native", "pydensecrf", "auto")

# Probabilities are floored before the log so a confident network cannot make a
# label impossible (the same floor as pydensecrf.utils.unary_from_softmax).
_PROB_FLOOR = 1e-5

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters, with DeepLab v2's PASCAL VOC values as defaults.

    Attributes:
        w1: weight of the bilateral (appearance) kernel.
        theta_alpha: spatial std (pixels) of the bilateral kernel.
        theta_beta: colour std (0-255 intensity units) of the bilateral kernel.
        w2: weight of the Gaussian (smoothness) kernel.
        theta_gamma: spatial std (pixels) of the Gaussian kernel.
        iterations: mean-field iterations.
    """

    w1: float = 4.0
    theta_alpha: float = 121.0
    theta_beta: float = 5.0
    w2: float = 3.0
    theta_gamma: float = 3.0
    iterations: int = 10

    def __post_init__(self) -> None:
        for name in ("theta_alpha", "theta_beta", "theta_gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"dense CRF: {name} must be > 0, got {getattr(self, name)}")
        for name in ("w1", "w2"):
            if getattr(self, name) < 0:
                raise ValueError(f"dense CRF: {name} must be >= 0, got {getattr(self, name)}")
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise ValueError(f"dense CRF: iterations must be a non-negative integer, got {self.iterations}")


# --------------------------------------------------------------------------- #
# Native backend
# --------------------------------------------------------------------------- #
def _divide(values: torch.Tensor, theta: float, out: torch.Tensor) -> None:
    # A true float32 division by a tensor (not a multiplication by a reciprocal,
    # which some scalar kernels use), as the reference computes its features;
    # ``values`` broadcast over ``out``.
    out.copy_(values.expand_as(out))
    out.div_(torch.full((1,), float(theta), dtype=torch.float32, device=values.device))


def _features(images: torch.Tensor, params: CRFParams):
    """Kernel features for images (B, H, W, 3) uint8 -> (B, H*W, 2) and (B, H*W, 5).

    The order (x, y, r, g, b), row-major pixels, matches DenseCRF2D so that the
    lattice is built from the same floats. Both are views of buffers laid out a row
    per feature, the layout the lattice works in (:func:`permutohedral._elevate`).
    """
    b, h, w, _ = images.shape
    n = h * w
    device = images.device
    xs = torch.arange(w, device=device, dtype=torch.float32).repeat(h)
    ys = torch.arange(h, device=device, dtype=torch.float32).repeat_interleave(w)
    smooth = torch.empty(2, n, dtype=torch.float32, device=device)
    _divide(xs, params.theta_gamma, smooth[0])
    _divide(ys, params.theta_gamma, smooth[1])
    appearance = torch.empty(5, b, n, dtype=torch.float32, device=device)
    _divide(xs, params.theta_alpha, appearance[0])
    _divide(ys, params.theta_alpha, appearance[1])
    _divide(images.reshape(b, n, 3).permute(2, 0, 1), params.theta_beta, appearance[2:])
    return smooth.t().expand(b, n, 2), appearance.view(5, b * n).t().view(b, n, 5)


class _Kernel:
    """One symmetric-normalised Gaussian kernel with a Potts compatibility of weight w.

    Building it (the lattice and the normalisation) is the expensive part; call
    :meth:`cached` for kernels whose features depend only on the image size.
    """

    def __init__(self, features: torch.Tensor, weight: float) -> None:
        self.operator = _normalised_operator(PermutohedralLattice(features), weight)

    @classmethod
    def cached(cls, key: Tuple, features: torch.Tensor, weight: float) -> "_Kernel":
        """A kernel from the small LRU cache, built on a miss.

        The smoothness kernel's features are pixel positions only, so its lattice is
        the same for every image of a size: a dataset of equal-sized images (or a
        parameter search over one image) builds it once.
        """
        with _CACHE_LOCK:
            kernel = _KERNEL_CACHE.get(key)
            if kernel is not None:
                _KERNEL_CACHE.move_to_end(key)
                return kernel
        kernel = cls(features, weight)
        with _CACHE_LOCK:
            _KERNEL_CACHE[key] = kernel
            while len(_KERNEL_CACHE) > _CACHE_SIZE[0]:
                _KERNEL_CACHE.popitem(last=False)
        return kernel


def _normalised_operator(lattice: PermutohedralLattice, weight: float) -> LatticeFilter:
    """The kernel's operator ``Q -> w * D^-1/2 K D^-1/2 Q`` on a built lattice (B*N points)."""
    ones = torch.ones(lattice.batch * lattice.num_points, 1, dtype=torch.float32, device=lattice.weights.device)
    norm = lattice.filter(ones).to(torch.float64)
    # NORMALIZE_SYMMETRIC: D^{-1/2} K D^{-1/2}, computed in double as the reference.
    norm = (1.0 / torch.sqrt(norm + 1e-20)).to(torch.float32)[:, 0]
    # Potts: the message for label l is -w * sum_j k(i, j) Q_j(l), and the update
    # subtracts it from the energy, i.e. adds w * D^-1/2 K D^-1/2 Q. Fold both
    # normalisations and w into the splat and slice weights.
    return lattice.operator(pre=norm, post=norm * float(np.float32(weight)))


_KERNEL_CACHE: "OrderedDict[Tuple, _Kernel]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = [2]


def set_kernel_cache_size(size: int) -> None:
    """Number of smoothness kernels (one per image size, θγ, w2 and device) kept
    between calls of the native backend; 0 disables the cache and frees it."""
    if size < 0:
        raise ValueError(f"cache size must be >= 0, got {size}")
    with _CACHE_LOCK:
        _CACHE_SIZE[0] = int(size)
        while len(_KERNEL_CACHE) > size:
            _KERNEL_CACHE.popitem(last=False)


class _FusedMeanField:
    """All pairwise kernels of one mean-field update, the energy fused into one gather.

    Per iteration: each kernel's ``embedding_bag`` splats Q onto its lattice, the
    lattice is blurred, and its rows are stored in a table shared by all kernels;
    one ``embedding_bag`` over the table then produces the new energy
    ``-U + sum_k w_k D_k^-1/2 K_k D_k^-1/2 Q`` for every pixel: its bag is the
    pixel's own row of ``-U`` (weight 1, stored below the lattices) followed by its
    simplex vertices in every lattice, weights with the normalisations and ``w_k``
    folded in. The energy is written once, which is what bounds the speed on
    large images.
    """

    def __init__(self, operators, neg_unary: torch.Tensor) -> None:
        p, k = neg_unary.shape
        sizes = [op.splat[1].numel() for op in operators]  # vertices per lattice
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]
        m = sum(sizes)
        device = neg_unary.device
        self.table = torch.empty(m + p, k, dtype=torch.float32, device=device)
        self.table[m:] = neg_unary
        self.splats = [op.splat for op in operators]
        self.blur = [op.blur for op in operators]
        # The fused slice, (P, 1 + sum of d+1) bags, written column block by block.
        width = 1 + sum(op.slice[0].shape[1] for op in operators)
        itype = operators[0].slice[0].dtype
        cols = torch.empty(p, width, dtype=itype, device=device)
        vals = torch.empty(p, width, dtype=torch.float32, device=device)
        torch.arange(m, m + p, device=device, dtype=itype, out=cols[:, 0])
        vals[:, 0] = 1.0
        at = 1
        for op, start in zip(operators, self.starts):
            index, weight = op.slice
            torch.add(index, start, out=cols[:, at : at + index.shape[1]])
            vals[:, at : at + index.shape[1]] = weight
            at += index.shape[1]
        self.slice = (cols, vals)
        self.sizes = sizes

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        """-U + sum of the pairwise messages for beliefs q (P, K) -> (P, K)."""
        for start, size, (col, bags, weights), blur in zip(self.starts, self.sizes, self.splats, self.blur):
            values = F.embedding_bag(col, q, bags, mode="sum", per_sample_weights=weights)
            for cols, vals in blur:
                values = F.embedding_bag(cols, values, mode="sum", per_sample_weights=vals)
            self.table[start : start + size] = values
        cols, vals = self.slice
        return F.embedding_bag(cols, self.table, mode="sum", per_sample_weights=vals)


def _exp_normalize(energy: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """The reference's expAndNormalize over rows of (P, K): exponentiate and normalise each row.

    ``torch.softmax`` over a short last dimension runs row by row (5x slower than
    whole-tensor passes at K = 3, 1.25x at K = 19, on CPU). Any per-row constant
    may be subtracted before exponentiating; the reference uses the row's maximum,
    this uses the tensor's, which is the same arithmetic whenever no row can
    underflow: while max - min < 80, every ``exp(x - max)`` stays above float32's
    least normal number (exp(-80) ~ 1.8e-35). Otherwise, and off the CPU,
    ``torch.softmax``. Both agree to float rounding. ``inplace`` reuses ``energy``'s
    memory (a fresh multi-megabyte tensor costs page faults on every iteration).
    """
    if energy.device.type == "cpu" and energy.numel() > 0:
        low, high = torch.aminmax(energy)
        if float(high - low) < 80.0:
            q = (energy.sub_(high) if inplace else energy - high).exp_()
            # Row sums as a product with ones: a matrix-vector kernel, 2-7x faster
            # than a reduction over a short last dimension.
            return q.div_(torch.mm(q, torch.ones(q.shape[1], 1, dtype=q.dtype, device=q.device)))
    return torch.softmax(energy, dim=1)


def _mean_field(unary: torch.Tensor, operators: Sequence[LatticeFilter], iterations: int) -> torch.Tensor:
    """Mean-field inference (Krähenbühl and Koltun 2011, alg. 1) on (P, K) unaries."""
    neg_unary = -unary.contiguous()
    if iterations == 0 or not operators:
        return _exp_normalize(neg_unary)
    if neg_unary.shape[1] == 2:
        return _binary_mean_field(neg_unary, operators, iterations)
    return _general_mean_field(neg_unary, operators, iterations)


def _general_mean_field(neg_unary: torch.Tensor, operators: Sequence[LatticeFilter], iterations: int) -> torch.Tensor:
    """The update for any number of labels, all channels filtered together (``neg_unary`` = -U, (P, K))."""
    q = _exp_normalize(neg_unary)
    fused = _FusedMeanField(operators, neg_unary)
    for _ in range(iterations):
        q = _exp_normalize(fused.energy(q), inplace=True)
    return q


def _binary_mean_field(neg_unary: torch.Tensor, operators: Sequence[LatticeFilter], iterations: int) -> torch.Tensor:
    """Mean field for two labels, filtering one channel per iteration.

    The Potts messages are linear in Q and the beliefs sum to one, so with
    ``M = sum_k w_k D_k^-1/2 K_k D_k^-1/2`` the second label's energy follows from the
    first's: ``e_1 = -U_1 + M (1 - Q_0) = B - e_0`` with ``B = M 1 - U_0 - U_1``
    computed once, and the update ``Q_0 = exp(e_0) / (exp(e_0) + exp(e_1))`` is
    ``sigmoid(2 e_0 - B)``. The same arithmetic as the general update up to float
    rounding, 20% cheaper on 2048x1024: splat, blur and slice move one value per
    point instead of two.
    """
    own = neg_unary[:, :1].contiguous()

    def energy(q0: torch.Tensor) -> torch.Tensor:
        # One channel: the kernels' slices added to -U_0 cost less than building a
        # fused slice table (that pays off only when many channels share it).
        out = own.clone()
        for op in operators:
            op(q0, out=out)
        return out

    b = energy(torch.ones_like(own)).add_(neg_unary[:, 1:])  # (-U_0 + M 1) - U_1
    q0 = _exp_normalize(neg_unary.clone(), inplace=True)[:, :1].contiguous()
    for _ in range(iterations):
        z = energy(q0).mul_(2.0).sub_(b)  # e_0 - e_1
        q0 = torch.sigmoid(z)
    # Each belief from the energy difference, so that a tiny one keeps its precision.
    return torch.cat([q0, torch.sigmoid(z.neg_())], dim=1)


# Pixels x labels per intra-op thread of the native CRF: below it a second thread
# costs more in barriers than it saves. Measured (benchmarks/crf.py, quiet, 2 cores):
# 480x320 with 2 labels (307,200) runs 1.5x faster on 2 threads than on 1.
_CRF_GRAIN = 1 << 16
# From this much work on (e.g. 2048x1024 with 4 labels or more) its ops last
# milliseconds and a busy machine gets the policy's long-ops count (twice the cores:
# GNU OpenMP then sleeps at barriers instead of spinning): beside a 2-thread
# competitor, 2048x1024 with 19 and 21 labels ran 1.28-1.44x faster than
# pydensecrf on 4 threads against 1.11-1.23x on 1. Below it a busy machine gets the
# free cores: with 2 and 3 labels 4 threads gained nothing at 2048x1024 (0.95-1.16x
# against 1.01-1.24x on 1) and were erratic at VOC sizes (0.5-1.7x from run to
# run, where 1 thread ran steadily at 1.3-1.7x).
_CRF_LONG = 1 << 23


def _crf_threads(work: int) -> int:
    """Intra-op threads of the native CRF for ``work`` pixels x labels (segkit.utils.threads' policy)."""
    if work >= _CRF_LONG:
        return choose_threads(work, _CRF_GRAIN, ops="long")
    return choose_threads(work, _CRF_GRAIN)


@torch.no_grad()
def _native_batch(images: torch.Tensor, unary: torch.Tensor, params: CRFParams) -> torch.Tensor:
    """Native dense CRF: images (B, H, W, 3) uint8, unary (B, K, H, W) -> Q (B, K, H, W)."""
    if unary.device.type != "cpu":
        return _native_compute(images, unary, params)
    # Threads for the work and the machine's load, not torch's global default (segkit.utils.threads).
    with intra_op_threads(_crf_threads(unary.numel())):
        return _native_compute(images, unary, params)


def _native_compute(images: torch.Tensor, unary: torch.Tensor, params: CRFParams) -> torch.Tensor:
    b, k, h, w = unary.shape
    smooth, appearance = _features(images, params)
    # Same order as DeepLab / pydensecrf scripts: smoothness first, then appearance.
    operators = []
    if params.w2 > 0:
        # Positions are the same for every image: build one image's lattice, tile it.
        key = ("smooth", h, w, float(params.theta_gamma), float(params.w2), str(smooth.device))
        one = smooth[:1]
        kernel = _Kernel.cached(key, one, params.w2) if _CACHE_SIZE[0] > 0 else _Kernel(one, params.w2)
        operators.append(kernel.operator.repeat(b))
    if params.w1 > 0:
        operators.append(_Kernel(appearance, params.w1).operator)
    rows = unary.permute(0, 2, 3, 1).reshape(b * h * w, k).contiguous()  # (P, K), a row per pixel
    q = _mean_field(rows, operators, int(params.iterations))
    return q.reshape(b, h, w, k).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- #
# pydensecrf backend
# --------------------------------------------------------------------------- #
def _import_pydensecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The 'pydensecrf' dense-CRF backend (POSTPROCESS.CRF.BACKEND) needs the pydensecrf module, which is "
            "not installed (it does not build on every Python version): `pip install pydensecrf2`, or set "
            "POSTPROCESS.CRF.BACKEND to 'native' (needs nothing extra) or 'auto' (pydensecrf when installed, "
            "else native)."
        ) from exc
    return dcrf


def resolve_crf_backend(backend: str) -> str:
    """``"auto"`` -> ``"pydensecrf"`` when it imports, else ``"native"``; other names unchanged.

    Raises:
        ValueError: an unknown name, naming POSTPROCESS.CRF.BACKEND.
        ImportError: ``"pydensecrf"`` without the module, naming POSTPROCESS.CRF.BACKEND.
    """
    if backend not in BACKENDS:
        raise ValueError(f"POSTPROCESS.CRF.BACKEND: unknown dense-CRF backend '{backend}'; choose one of {BACKENDS}.")
    if backend == "auto":
        try:
            _import_pydensecrf()
            return "pydensecrf"
        except ImportError:
            return "native"
    if backend == "pydensecrf":
        _import_pydensecrf()
    return backend


def _pydensecrf_one(image: np.ndarray, unary: np.ndarray, params: Dict[str, Any]) -> np.ndarray:
    """Reference CRF on one image (H, W, 3) uint8 with unary (K, H, W) -> Q (K, H, W)."""
    dcrf = _import_pydensecrf()
    k, h, w = unary.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(k, -1), dtype=np.float32))
    if params["w2"] > 0:
        crf.addPairwiseGaussian(sxy=params["theta_gamma"], compat=params["w2"])
    if params["w1"] > 0:
        crf.addPairwiseBilateral(
            sxy=params["theta_alpha"], srgb=params["theta_beta"], rgbim=np.ascontiguousarray(image), compat=params["w1"]
        )
    q = np.asarray(crf.inference(int(params["iterations"])), dtype=np.float32)
    return q.reshape(k, h, w)


def _pydensecrf_batch(
    images: np.ndarray, unary: np.ndarray, params: CRFParams, num_workers: int, executor: Optional[Executor] = None
) -> np.ndarray:
    """images (B, H, W, 3) uint8, unary (B, K, H, W) float32 -> Q (B, K, H, W)."""
    _import_pydensecrf()
    p = asdict(params)
    if len(images) > 1 and executor is not None:
        return np.stack(list(executor.map(_pydensecrf_one, images, unary, [p] * len(images))))
    if num_workers <= 1 or len(images) <= 1:
        return np.stack([_pydensecrf_one(im, un, p) for im, un in zip(images, unary)])
    with ProcessPoolExecutor(max_workers=min(num_workers, len(images))) as pool:
        return np.stack(list(pool.map(_pydensecrf_one, images, unary, [p] * len(images))))


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
def _unary_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """DeepLab's unary: the negative log of the (floored) softmax probability."""
    return -torch.log(probs.to(torch.float32).clamp(_PROB_FLOOR, 1.0))


def _check_batch(images: torch.Tensor, probs: torch.Tensor) -> None:
    if probs.dim() != 4:
        raise ValueError(f"dense CRF: probs must be (N, K, H, W); got shape {tuple(probs.shape)}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"dense CRF: images must be (N, 3, H, W) uint8; got shape {tuple(images.shape)}")
    if images.shape[0] != probs.shape[0] or images.shape[2:] != probs.shape[2:]:
        raise ValueError(
            f"dense CRF: images {tuple(images.shape)} and probs {tuple(probs.shape)} differ in batch or size"
        )
    if images.dtype != torch.uint8:
        raise ValueError(f"dense CRF: images must be uint8 on the 0-255 scale, got {images.dtype}")


def dense_crf_batch(
    images: torch.Tensor,
    probs: torch.Tensor,
    params: Optional[CRFParams] = None,
    backend: str = "native",
    num_workers: int = 0,
    executor: Optional[Executor] = None,
) -> torch.Tensor:
    """Refine a batch of softmax outputs with the dense CRF.

    Args:
        images: (N, 3, H, W) uint8, RGB, 0-255.
        probs: (N, K, H, W) probabilities (each pixel sums to 1).
        params: CRF parameters; DeepLab v2's VOC values when None.
        backend: ``"native"`` (PyTorch, on ``probs``' device) or ``"pydensecrf"``.
        num_workers: worker processes for the pydensecrf backend (0 or 1: in process);
            a pool is started for the call unless ``executor`` is given.
        executor: a persistent process pool for the pydensecrf backend (what
            :class:`DenseCRF` keeps between batches); a batch of one image runs in process.

    Returns:
        (N, K, H, W) float32 refined probabilities, on ``probs``' device.
    """
    params = params or CRFParams()
    _check_batch(images, probs)
    unary = _unary_from_probs(probs)
    hwc = images.permute(0, 2, 3, 1).contiguous()
    if backend == "auto":
        backend = resolve_crf_backend(backend)
    if backend == "native":
        return _native_batch(hwc.to(unary.device), unary, params)
    if backend == "pydensecrf":
        q = _pydensecrf_batch(hwc.cpu().numpy(), unary.cpu().numpy(), params, num_workers, executor)
        return torch.from_numpy(q).to(probs.device)
    raise ValueError(f"dense CRF: unknown backend '{backend}'; choose one of {BACKENDS}")


def dense_crf(
    image: ArrayLike,
    probs: ArrayLike,
    *,
    w1: float = 4.0,
    theta_alpha: float = 121.0,
    theta_beta: float = 5.0,
    w2: float = 3.0,
    theta_gamma: float = 3.0,
    iterations: int = 10,
    backend: str = "native",
    output: str = "probs",
    device: Optional[Union[str, torch.device]] = None,
) -> ArrayLike:
    """Dense CRF on one image, without a config (DeepLab v2's VOC parameters by default).

    Args:
        image: (H, W, 3) uint8 RGB image, numpy array or tensor.
        probs: (K, H, W) softmax probabilities, numpy array or tensor.
        w1, theta_alpha, theta_beta: bilateral (appearance) kernel weight and widths.
        w2, theta_gamma: Gaussian (smoothness) kernel weight and width.
        iterations: mean-field iterations.
        backend: ``"native"`` (PyTorch) or ``"pydensecrf"`` (``pip install pydensecrf2``).
        output: ``"probs"`` for (K, H, W) float32 marginals or ``"labels"`` for (H, W) int64.
        device: device for the native backend; defaults to ``probs``' device (CPU for numpy).

    Returns:
        The refined probabilities or labels, as numpy if ``probs`` was numpy, else a tensor.

    Example:
        >>> labels = dense_crf(image, softmax, output="labels")  # doctest: +SKIP
    """
    if output not in ("probs", "labels"):
        raise ValueError(f"dense_crf: output must be 'probs' or 'labels', got '{output}'")
    as_numpy = isinstance(probs, np.ndarray)
    probs_t = torch.as_tensor(probs)
    image_t = torch.as_tensor(image)
    if device is not None:
        probs_t = probs_t.to(device)
    if image_t.dim() != 3 or image_t.shape[2] != 3:
        raise ValueError(f"dense_crf: image must be (H, W, 3) uint8; got shape {tuple(image_t.shape)}")
    if probs_t.dim() != 3:
        raise ValueError(f"dense_crf: probs must be (K, H, W); got shape {tuple(probs_t.shape)}")
    params = CRFParams(w1, theta_alpha, theta_beta, w2, theta_gamma, iterations)
    q = dense_crf_batch(image_t.permute(2, 0, 1)[None], probs_t[None], params, backend)[0]
    result = q if output == "probs" else q.argmax(dim=0)
    return result.cpu().numpy() if as_numpy else result


@POSTPROCESSOR_REGISTRY.register()
class DenseCRF:
    """Post-processor: DeepLab v2's dense CRF on a batch of probabilities.

    Args:
        params: CRF parameters.
        backend: ``"native"``, ``"pydensecrf"`` or ``"auto"`` (pydensecrf when installed,
            else native); :attr:`backend` holds the one chosen.
        num_workers: worker processes for the pydensecrf backend (0 or 1: in process),
            started at the first batch and kept until :meth:`close` (or garbage collection).

    Images are RGB (segkit keeps them RGB from the reader to the model), which is
    what the appearance kernel is fed, as in DeepLab.
    """

    @configurable
    def __init__(
        self,
        params: Optional[CRFParams] = None,
        backend: str = "native",
        num_workers: int = 0,
    ) -> None:
        self.params = params or CRFParams()
        self.backend = resolve_crf_backend(backend)  # fail at build time, not at the first image
        self.num_workers = num_workers
        self._executor: Optional[ProcessPoolExecutor] = None

    @classmethod
    def from_config(cls, cfg) -> dict:
        c = cfg.POSTPROCESS.CRF
        params = CRFParams(c.W1, c.THETA_ALPHA, c.THETA_BETA, c.W2, c.THETA_GAMMA, c.ITERATIONS)
        return {"params": params, "backend": c.BACKEND, "num_workers": c.NUM_WORKERS}

    def __call__(self, probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Refine probs (N, K, H, W) given RGB images (N, 3, H, W) uint8 -> (N, K, H, W)."""
        if self.backend == "pydensecrf" and self.num_workers > 1 and self._executor is None:
            self._executor = ProcessPoolExecutor(max_workers=self.num_workers)
        out = dense_crf_batch(images, probs, self.params, self.backend, self.num_workers, self._executor)
        return out.to(probs.dtype)

    def close(self) -> None:
        """Stop the pydensecrf worker processes, if any were started, and wait for them to exit."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __del__(self) -> None:  # best effort, without waiting; close() is the explicit way
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"DenseCRF({self.params}, backend='{self.backend}')"
