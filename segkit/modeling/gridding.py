"""Gridding analysis of stacked dilated convolutions (HDC, Wang et al., WACV 2018).

A stack of dilated ``k x k`` convolutions with rates ``r_1..r_n`` lets the top unit
see the input pixels at the offsets of the Minkowski sum of every layer's tap set
``{r_i * t : t in [-(k-1)/2, (k-1)/2]}``. When all rates share a factor > 1 (for
example ``[2, 2, 2]``) that set is a checkerboard: the unit's receptive field has
holes ("gridding", sec. 3.2 of the paper). Because square kernels with the same
rate on both axes are separable, the 2-D set of used offsets is the Cartesian
product of the 1-D set with itself, so everything here is computed exactly in 1-D.

Two hybrid-dilated-convolution (HDC) design rules from sec. 3.2 are checked:

* the maximum distance between two nonzero taps after layer 2, ``M_2``, computed
  by ``M_n = r_n`` and ``M_i = max[M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i]``,
  must satisfy ``M_2 <= K``;
* the rates must not share a common factor > 1.

Both rules are stated for a group of layers, the repeating unit of a sawtooth
such as ``[1, 2, 5, 9]``; in a long stack the groups start at the rate-1 layers
(:func:`hdc_groups`) and the common-factor rule is applied to every run of
consecutive dilated layers (:func:`dilated_runs`), which is what makes DeepLab v2's
run of rate-2 blocks grid even though the rate-1 layer before them fills the holes of
the receptive field as a whole.

:func:`used_offsets` composes tap sets; :func:`impulse_offsets` measures the same
set by pushing an impulse through a stack of all-ones convolutions, and the two
must agree (tested). :func:`check_dilation_rates` is what a backbone builder calls
on the rates it is about to build; it emits a :class:`GriddingWarning`.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GriddingError",
    "GriddingReport",
    "GriddingWarning",
    "analyze_stack",
    "check_dilation_rates",
    "check_model_gridding",
    "dilated_runs",
    "hdc_groups",
    "hdc_max_distances",
    "impulse_offsets",
    "model_dilation_stacks",
    "used_offsets",
]

Layer = Tuple[int, int]  # (kernel size, dilation rate) along one axis


class GriddingWarning(UserWarning):
    """A stack of dilated convolutions leaves holes in its receptive field."""


class GriddingError(ValueError):
    """Raised instead of the warning when the gridding check is set to ``"raise"``."""


def _layers(rates: Sequence[int], kernel_size) -> List[Layer]:
    """Pair every rate with its kernel size (an int for all, or one per rate)."""
    rates = [int(r) for r in rates]
    kernels = [int(kernel_size)] * len(rates) if isinstance(kernel_size, int) else [int(k) for k in kernel_size]
    if len(kernels) != len(rates):
        raise ValueError(f"Got {len(rates)} dilation rates but {len(kernels)} kernel sizes.")
    for k, r in zip(kernels, rates):
        if k < 1 or k % 2 == 0:
            raise ValueError(f"Kernel sizes must be odd and positive (centred taps), got {k}.")
        if r < 1:
            raise ValueError(f"Dilation rates must be >= 1, got {r} in {rates}.")
    return list(zip(kernels, rates))


def _taps(kernel_size: int, rate: int) -> List[int]:
    half = (kernel_size - 1) // 2
    return [rate * t for t in range(-half, half + 1)]


def used_offsets(rates: Sequence[int], kernel_size=3) -> List[int]:
    """Input offsets (along one axis) a top unit of the stack actually reads.

    Args:
        rates: dilation rate of each layer, bottom to top.
        kernel_size: odd kernel size shared by all layers, or one per layer.

    Returns:
        Sorted offsets in input pixels relative to the unit's centre; the 2-D set
        is the product of this list with itself.
    """
    offsets: Set[int] = {0}
    for k, r in _layers(rates, kernel_size):
        offsets = {o + t for o in offsets for t in _taps(k, r)}
    return sorted(offsets)


def impulse_offsets(rates: Sequence[int], kernel_size=3) -> Set[Tuple[int, int]]:
    """Measure the used 2-D offsets by propagating an impulse through all-ones convs.

    Independent of :func:`used_offsets` (it runs real ``conv2d`` layers), so the two
    cross-check each other. Counts of paths are positive integers in float64, so
    no tap can cancel.

    Returns:
        ``{(dy, dx)}`` of input offsets that reach the centre unit.
    """
    layers = _layers(rates, kernel_size)
    radius = sum(r * (k - 1) // 2 for k, r in layers)
    size = 2 * radius + 1
    x = torch.zeros(1, 1, size, size, dtype=torch.float64)
    x[0, 0, radius, radius] = 1.0
    with torch.no_grad():
        for k, r in layers:
            w = torch.ones(1, 1, k, k, dtype=torch.float64)
            x = F.conv2d(x, w, padding=r * (k - 1) // 2, dilation=r)
    # The taps are symmetric, so "the impulse reaches p" equals "p reads the centre".
    ys, xs = torch.nonzero(x[0, 0] > 0, as_tuple=True)
    return {(int(y) - radius, int(xx) - radius) for y, xx in zip(ys, xs)}


def hdc_max_distances(rates: Sequence[int]) -> List[int]:
    """The paper's ``M_1..M_n`` (HDC sec. 3.2): maximum distance between nonzero taps.

    ``M_n = r_n`` and ``M_i = max[M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i]``.
    """
    rates = [int(r) for r in rates]
    if not rates:
        return []
    m = [0] * len(rates)
    m[-1] = rates[-1]
    for i in range(len(rates) - 2, -1, -1):
        nxt, r = m[i + 1], rates[i]
        m[i] = max(nxt - 2 * r, nxt - 2 * (nxt - r), r)
    return m


def hdc_groups(rates: Sequence[int]) -> List[List[int]]:
    """Split a stack into HDC groups: a new group starts at every rate-1 layer.

    HDC stacks repeat a sawtooth such as ``[1, 2, 5, 9]`` (sec. 3.2); the rate-1 layer
    reads a dense neighbourhood and restarts the pattern, and the ``M_2 <= K`` rule
    is stated for one such group.
    """
    groups: List[List[int]] = []
    for r in rates:
        if r == 1 or not groups:
            groups.append([])
        groups[-1].append(int(r))
    return groups


def dilated_runs(rates: Sequence[int]) -> List[List[int]]:
    """Maximal runs of consecutive layers with rate > 1 (where a common factor grids)."""
    runs: List[List[int]] = [[]]
    for r in rates:
        if r > 1:
            runs[-1].append(int(r))
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


@dataclass(frozen=True)
class GriddingReport:
    """Receptive field and gridding verdict of one stack of dilated convolutions.

    Attributes:
        rates: dilation rate per layer, bottom to top.
        kernel_sizes: kernel size per layer.
        receptive_field: side of the (square) receptive field in input pixels.
        offsets: used offsets along one axis, sorted (2-D: their product).
        holes: offsets inside the receptive field that no path reaches.
        max_distances: HDC ``M_1..M_n`` of the stack taken as one group (empty when
            kernel sizes differ).
        common_factor: the largest common factor of the rates of a run of two or
            more consecutive dilated (rate > 1) layers; 1 when no run shares one.
        group_m2: ``M_2`` of each HDC group (see :func:`hdc_groups`), None for
            one-layer groups.
        where: where the stack was found (for messages).
    """

    rates: Tuple[int, ...]
    kernel_sizes: Tuple[int, ...]
    receptive_field: int
    offsets: Tuple[int, ...]
    holes: Tuple[int, ...]
    max_distances: Tuple[int, ...]
    common_factor: int
    group_m2: Tuple[Optional[int], ...] = ()
    where: str = ""

    @property
    def m2(self) -> Optional[int]:
        """The largest ``M_2`` over the HDC groups, or None (one-layer groups / mixed kernels)."""
        values = [m for m in self.group_m2 if m is not None]
        return max(values) if values else None

    @property
    def used_fraction(self) -> float:
        """Fraction of the 2-D receptive field's pixels the unit actually reads."""
        return (len(self.offsets) / self.receptive_field) ** 2

    @property
    def offsets_2d(self) -> Set[Tuple[int, int]]:
        """Used 2-D offsets ``{(dy, dx)}``."""
        return set(itertools.product(self.offsets, self.offsets))

    def violations(self) -> List[str]:
        """Human-readable reasons this stack grids (empty when it does not)."""
        out = []
        if self.holes:
            shown = ", ".join(str(h) for h in self.holes[:8]) + (", ..." if len(self.holes) > 8 else "")
            out.append(f"{len(self.holes)} of {self.receptive_field} offsets per axis are never read ({shown})")
        if self.common_factor > 1:
            out.append(f"consecutive dilated layers share the common factor {self.common_factor}")
        k = self.kernel_sizes[0] if self.kernel_sizes else 0
        if self.m2 is not None and self.m2 > k:
            out.append(f"HDC rule M_2 <= K fails: M_2 = {self.m2} > K = {k}")
        return out

    @property
    def grids(self) -> bool:
        """True when any HDC rule fails or the receptive field has holes."""
        return bool(self.violations())

    def grid_map(self, max_side: int = 61) -> str:
        """ASCII map of the 2-D receptive field ('#' read, '.' hole); '' when too large."""
        if self.receptive_field > max_side:
            return ""
        used = set(self.offsets)
        half = self.receptive_field // 2
        row = "".join("#" if o in used else "." for o in range(-half, half + 1))
        blank = "." * self.receptive_field
        return "\n".join(row if o in used else blank for o in range(-half, half + 1))

    def summary(self) -> str:
        """One paragraph: rates, receptive field, used fraction, verdict."""
        head = f"{self.where}: " if self.where else ""
        text = (
            f"{head}rates {list(self.rates)} (kernel {list(self.kernel_sizes)}): receptive field "
            f"{self.receptive_field}x{self.receptive_field}, reads {len(self.offsets) ** 2} pixels "
            f"({100 * self.used_fraction:.1f}%)"
        )
        if len(self.group_m2) > 1:
            text += f", M_2 per HDC group = {[m for m in self.group_m2]}"
        elif self.max_distances:
            text += f", M = {list(self.max_distances)}"
        reasons = self.violations()
        return text + (". Gridding: " + "; ".join(reasons) + "." if reasons else ". No gridding.")


def analyze_stack(rates: Sequence[int], kernel_size=3, where: str = "") -> GriddingReport:
    """Exact receptive field, used offsets and HDC rule values of a dilated stack.

    The stack grids (:attr:`GriddingReport.grids`) when its receptive field has
    holes, when a run of consecutive dilated layers shares a common factor > 1
    (a rate-1 layer in between mixes neighbours densely and breaks the run), or
    when an HDC group (:func:`hdc_groups`) has ``M_2 > K``.

    Args:
        rates: dilation rate of each layer, bottom to top.
        kernel_size: odd kernel size shared by all layers, or one per layer.
        where: a label for messages (e.g. "backbone res4-res5").
    """
    layers = _layers(rates, kernel_size)
    if not layers:
        raise ValueError("analyze_stack needs at least one layer.")
    offsets = used_offsets([r for _, r in layers], [k for k, _ in layers])
    radius = sum(r * (k - 1) // 2 for k, r in layers)
    used = set(offsets)
    holes = tuple(o for o in range(-radius, radius + 1) if o not in used)
    kernels = tuple(k for k, _ in layers)
    uniform = len(set(kernels)) == 1
    rates_ = [r for _, r in layers]
    group_m2 = tuple(hdc_max_distances(g)[1] if len(g) >= 2 and uniform else None for g in hdc_groups(rates_))
    return GriddingReport(
        rates=tuple(r for _, r in layers),
        kernel_sizes=kernels,
        receptive_field=2 * radius + 1,
        offsets=tuple(offsets),
        holes=holes,
        max_distances=tuple(hdc_max_distances([r for _, r in layers])) if uniform else (),
        # One dilated layer between dense ones has no partner to share a factor with.
        common_factor=max((math.gcd(*run) for run in dilated_runs(rates_) if len(run) > 1), default=1),
        group_m2=group_m2,
        where=where,
    )


def check_dilation_rates(rates: Sequence[int], kernel_size=3, where: str = "",
                         on_gridding: str = "warn") -> GriddingReport:
    """Analyse the rates a builder is about to use and warn (or raise) if they grid.

    Only the dilated part matters: leading rate-1 layers are kept (they fill holes)
    but a stack without any rate > 1 is never reported.

    Args:
        rates: rates of the consecutive ``k x k`` convolutions that run at the
            final output stride, bottom to top, from the rate-1 conv that opens the
            dilated part (e.g. every 3x3 conv of res4 and res5 of a dilated ResNet).
        kernel_size: odd kernel size, or one per layer.
        where: label for the message.
        on_gridding: ``"warn"`` (:class:`GriddingWarning`), ``"raise"``
            (:class:`GriddingError`) or ``"off"``.

    Returns:
        The :class:`GriddingReport`.
    """
    if on_gridding not in ("warn", "raise", "off"):
        raise ValueError(f"on_gridding must be 'warn', 'raise' or 'off', got {on_gridding!r}.")
    report = analyze_stack(rates, kernel_size, where=where)
    if on_gridding == "off" or max(report.rates) == 1 or not report.grids:
        return report
    message = (
        report.summary() + " Choose rates without a common factor whose M_2 <= K, e.g. a sawtooth "
        "[1, 2, 5] or [1, 2, 3] (HDC, Wang et al. 2018, sec. 3.2); set MODEL.HDC.GRIDDING_CHECK "
        "to 'off' to silence this."
    )
    if on_gridding == "raise":
        raise GriddingError(message)
    # Once per configuration and process: training, Predictor, export and benchmarks all
    # build the same backbone (export several times), and one warning says it all.
    key = (where, tuple(report.rates), str(kernel_size))
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, GriddingWarning, stacklevel=2)
    return report


_WARNED: set = set()


_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(v) -> Tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _spatial_layers(module: nn.Module) -> Iterable[Tuple[str, Tuple[int, int], Tuple[int, int], Tuple[int, int]]]:
    """(name, kernel, dilation, stride) of every spatial conv/pool, in registration order."""
    for name, m in module.named_modules():
        if isinstance(m, _SPATIAL):
            kernel = _pair(m.kernel_size)
            dilation = _pair(getattr(m, "dilation", 1))
            stride = _pair(m.stride if m.stride is not None else kernel)
            if max(kernel) > 1:
                yield name, kernel, dilation, stride


def model_dilation_stacks(module: nn.Module, axis: int = 0) -> List[Tuple[str, List[int], List[int]]]:
    """Find the dilated stacks of a model by walking its modules in registration order.

    A stack starts at the first layer with dilation > 1 after the last strided
    layer, together with the rate-1 layer right before it when there is one (the
    formerly strided 3x3 of a dilated ResNet stage, which opens an HDC sawtooth),
    and ends at the next strided layer (or the end). Pools count as rate-1 layers
    (they fill holes, e.g. DeepLab-LargeFOV's stride-1 pool5). Registration order is
    forward order for torchvision's ResNet and VGG and for segkit's backbones;
    parallel branches (ASPP) are not stacks, so pass a backbone.

    Returns:
        ``[(label, rates, kernel_sizes)]`` along ``axis`` (0 = height, 1 = width).
    """
    stacks, current, start, last, entry = [], None, "", "", None
    for name, kernel, dilation, stride in _spatial_layers(module):
        if stride[axis] > 1:
            if current:
                stacks.append((f"{start} .. {last}", [r for _, r in current], [k for k, _ in current]))
            current, entry = None, None
            continue
        if current is None and dilation[axis] > 1:
            current, start = ([entry[1]], entry[0]) if entry else ([], name)
        if current is not None:
            current.append((kernel[axis], dilation[axis]))
            last = name
        else:
            entry = (name, (kernel[axis], dilation[axis]))
    if current:
        stacks.append((f"{start} .. {last}", [r for _, r in current], [k for k, _ in current]))
    return stacks


def check_model_gridding(model: nn.Module, on_gridding: str = "warn") -> List[GriddingReport]:
    """Analyse every dilated stack of ``model.backbone`` (or ``model``) on both axes.

    Returns:
        One :class:`GriddingReport` per stack (and per axis when the axes differ);
        a warning or error is emitted for gridding stacks per ``on_gridding``.
    """
    target = getattr(model, "backbone", model)
    reports = []
    for axis in (0, 1):
        for label, rates, kernels in model_dilation_stacks(target, axis):
            where = label if axis == 0 else f"{label} (width axis)"
            if axis == 1 and any(r.where.split(" (")[0] == label and list(r.rates) == rates for r in reports):
                continue
            if any(k % 2 == 0 for k in kernels):
                # Even kernels (timm's 2x2 downsampling convs and pools) have no centre tap:
                # the analysis does not apply; say so instead of failing the model build.
                warnings.warn(f"{where}: kernel sizes {kernels} include an even size; the gridding check "
                              "models centred (odd) kernels only and skips this stack.", GriddingWarning, stacklevel=2)
                continue
            reports.append(check_dilation_rates(rates, kernels, where=where, on_gridding=on_gridding))
    return reports
