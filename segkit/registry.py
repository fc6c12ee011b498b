"""Registries of segkit components, with provenance and actionable errors.

Every registry is a thin subclass of fvcore's :class:`~fvcore.common.registry.Registry`
that adds three things fvcore lacks:

* registering a name twice raises :class:`RegistryError` naming both objects'
  modules and, for plugins, both distributions and versions (never a bare
  ``assert``, so it also holds under ``python -O``);
* an unknown name raises :class:`RegistryKeyError` listing what is available and
  the nearest match ("did you mean");
* each entry records where it came from (:class:`Provenance`): built in, a plugin
  loaded through the ``segkit.plugins`` entry-point group, or a third-party module.

Lookups never import anything: this module is layer 1 of ARCHITECTURE.md and
imports nothing else of segkit. Built-in components register themselves when
their package is imported, and :func:`segkit.load_components` (called by every
entry point: ``load_config``/``get_cfg``, the tools, ``segkit list``,
``Predictor``) imports every built-in package first and then the installed
plugins (see :mod:`segkit.plugins`), so a name clash always blames the plugin.

The construction contract shared by every registry (enforced by
:func:`segkit.config.build_component`): the registered object is the class (or
function) itself; its constructor takes plain keyword arguments; a
``from_config(cls, cfg, **inputs, **ARGS)`` classmethod (usually with
``@configurable`` on ``__init__``) returning a ``dict`` of those keyword
arguments is the one way to read the config; an object without ``from_config``
is called with the registry's *inputs* and its YAML ``ARGS`` as keyword
arguments, never with the config.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.metadata
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from fvcore.common.registry import Registry as _FvcoreRegistry

__all__ = [
    "Provenance",
    "RegistryError",
    "RegistryKeyError",
    "SegkitRegistry",
    "all_registries",
    "BACKBONE_REGISTRY",
    "HEAD_REGISTRY",
    "META_ARCH_REGISTRY",
    "LOSS_REGISTRY",
    "TRANSFORM_REGISTRY",
    "POSTPROCESSOR_REGISTRY",
    "DATASET_REGISTRY",
    "EVALUATOR_REGISTRY",
    "HOOK_REGISTRY",
    "OPTIMIZER_REGISTRY",
    "LR_SCHEDULER_REGISTRY",
    "CONFIG_REGISTRY",
]


class RegistryError(RuntimeError):
    """A registration that cannot be accepted (for example a duplicate name)."""


class RegistryKeyError(KeyError):
    """An unknown name was looked up. ``str()`` gives the full, readable message."""

    def __str__(self) -> str:  # KeyError's default repr-quotes the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Provenance:
    """Where a registered object came from.

    Attributes:
        kind: ``"builtin"`` (segkit itself), ``"plugin"`` (loaded through the
            ``segkit.plugins`` entry-point group) or ``"third-party"`` (imported
            by user code from another distribution).
        module: the module that defines the object.
        distribution: the installed distribution, for plugins and third parties.
        version: that distribution's version.
        entry_point: ``name = value`` of the entry point, for plugins.
    """

    kind: str
    module: str
    distribution: Optional[str] = None
    version: Optional[str] = None
    entry_point: Optional[str] = None

    def describe(self) -> str:
        """One line for listings and error messages."""
        if self.kind == "builtin":
            return f"builtin ({self.module})"
        dist = f"{self.distribution} {self.version}" if self.distribution else "unknown distribution"
        ep = f", entry point '{self.entry_point}'" if self.entry_point else ""
        return f"{self.kind}: {dist} ({self.module}{ep})"


# Set by segkit.load_components once every built-in package is imported; plugins
# refuse to load before (a clash must always blame the plugin).
_BUILTINS_REGISTERED = False


def builtins_registered() -> bool:
    """Whether every built-in component has been registered (see ``segkit.load_components``)."""
    return _BUILTINS_REGISTERED


def mark_builtins_registered() -> None:
    """Called by ``segkit._builtins.import_builtins`` after importing every built-in package."""
    global _BUILTINS_REGISTERED
    _BUILTINS_REGISTERED = True


# Set by segkit.plugins while an entry point is being loaded, so that every
# registration made during that import is attributed to the plugin.
_PLUGIN_CONTEXT = threading.local()


@contextlib.contextmanager
def plugin_context(distribution: str, version: str, entry_point: str):
    """Attribute registrations made inside this block to a plugin distribution."""
    previous = getattr(_PLUGIN_CONTEXT, "value", None)
    _PLUGIN_CONTEXT.value = (distribution, version, entry_point)
    try:
        yield
    finally:
        _PLUGIN_CONTEXT.value = previous


@functools.lru_cache(maxsize=1)
def _packages_to_distributions() -> Dict[str, List[str]]:
    return dict(importlib.metadata.packages_distributions())


def _provenance_of(obj: Any, source: Optional[str] = None) -> Provenance:
    module = source or getattr(obj, "__module__", None) or type(obj).__module__
    context = getattr(_PLUGIN_CONTEXT, "value", None)
    if context is not None:
        dist, version, ep = context
        return Provenance("plugin", module, dist, version, ep)
    top = module.split(".")[0]
    if top in ("segkit", "__main__"):
        return Provenance("builtin" if top == "segkit" else "third-party", module)
    dists = _packages_to_distributions().get(top, [])
    if dists:
        try:
            version = importlib.metadata.version(dists[0])
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - racy uninstall
            version = None
        return Provenance("third-party", module, dists[0], version)
    return Provenance("third-party", module)


class SegkitRegistry(_FvcoreRegistry):
    """fvcore ``Registry`` with duplicate detection, did-you-mean and provenance.

    Use it exactly like fvcore's registry::

        @BACKBONE_REGISTRY.register()
        class MyBackbone(Backbone): ...

        BACKBONE_REGISTRY.register(my_builder, name="Other")  # explicit name
        BACKBONE_REGISTRY.get("MyBackbone")
    """

    def __init__(self, name: str, doc: str = "", inputs: Tuple[str, ...] = ()) -> None:
        super().__init__(name)
        self.__doc__ = doc
        #: keyword arguments the builder supplies besides the config (e.g. ``input_shape``).
        self.inputs: Tuple[str, ...] = tuple(inputs)
        self._provenance: Dict[str, Provenance] = {}
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------
    def _do_register(self, name: str, obj: Any, source: Optional[str] = None) -> None:  # overrides fvcore's assert
        with self._lock:
            new = _provenance_of(obj, source)
            if name in self._obj_map:
                old = self._provenance[name]
                raise RegistryError(
                    f"Name '{name}' is already registered in {self._name}_REGISTRY "
                    f"by {old.describe()}; a second registration comes from {new.describe()}. "
                    "Rename one of them (register(obj, name=...)) or uninstall the conflicting plugin."
                )
            self._obj_map[name] = obj
            self._provenance[name] = new

    def register(self, obj: Any = None, *, name: Optional[str] = None, source: Optional[str] = None) -> Any:
        """Register ``obj`` under ``name`` (default: ``obj.__name__``); usable as a decorator.

        ``source``: the registering module's ``__name__`` when ``obj`` is defined in
        another package (segkit registering albumentations' classes); provenance is
        then that module's.
        """
        if obj is None:

            def deco(func_or_class: Any) -> Any:
                self._do_register(name or func_or_class.__name__, func_or_class, source)
                return func_or_class

            return deco
        self._do_register(name or obj.__name__, obj, source)
        return obj

    def unregister(self, name: str) -> Any:
        """Remove and return an entry (for tests and interactive use)."""
        with self._lock:
            self._provenance.pop(name, None)
            return self._obj_map.pop(name)

    # -- lookup ---------------------------------------------------------------------
    def get(self, name: str) -> Any:
        """Return the object registered as ``name`` (no import happens here)."""
        obj = self._obj_map.get(name)
        if obj is None:
            raise RegistryKeyError(self._unknown_message(name))
        return obj

    def _unknown_message(self, name: str) -> str:
        available = sorted(self._obj_map)
        by_lower = {k.lower(): k for k in available}
        guess = by_lower.get(str(name).lower())
        if guess is None:
            close = difflib.get_close_matches(str(name), available, n=1, cutoff=0.5)
            guess = close[0] if close else None
        hint = f" Did you mean '{guess}'?" if guess else ""
        listing = ", ".join(available) if available else "(nothing registered)"
        if not _BUILTINS_REGISTERED and _ALL.get(self._name) is self:  # one of segkit's own registries
            listing += (" (segkit's built-in components are not all registered yet: call segkit.load_components(), "
                        "as load_config/get_cfg and the tools do, or import the package that defines them)")
        return f"No object named '{name}' in {self._name}_REGISTRY.{hint} Available: {listing}."

    def provenance(self, name: str) -> Provenance:
        """Where ``name`` came from."""
        self.get(name)
        return self._provenance[name]

    def entries(self) -> List[Tuple[str, Any, Provenance]]:
        """``(name, object, provenance)`` for every entry, sorted by name."""
        return [(k, self._obj_map[k], self._provenance[k]) for k in sorted(self._obj_map)]

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map

    def __iter__(self) -> Iterator[Tuple[str, Any]]:
        return iter(sorted(self._obj_map.items()))

    def keys(self) -> List[str]:
        return sorted(self._obj_map)

    @property
    def name(self) -> str:
        return self._name


_ALL: Dict[str, SegkitRegistry] = {}

_CONTRACT = """

    Construction (the same for every registry, see :func:`segkit.config.build_component`):
    the registered object is the class (or function) itself, taking plain keyword
    arguments. With a ``from_config`` classmethod it is built as
    ``obj(**obj.from_config(cfg{inputs}, **ARGS))``, ``from_config`` returning a
    ``dict``; without one it receives ``obj({plain}**ARGS)`` only, never the config.
    Failures name the component and its provenance."""


def _make(name: str, doc: str, inputs: Tuple[str, ...] = (), constructed: bool = True) -> SegkitRegistry:
    plain = "".join(f"{i}={i}, " for i in inputs)
    call = "".join(f", {i}={i}" for i in inputs)
    # DATASET and CONFIG hold plain functions that are called, not components that are built.
    reg = SegkitRegistry(name, doc + (_CONTRACT.format(inputs=call, plain=plain) if constructed else ""), inputs)
    _ALL[name] = reg
    return reg


def all_registries() -> Dict[str, SegkitRegistry]:
    """Every segkit registry by name (``"BACKBONE"``, ``"HEAD"``, ...)."""
    return dict(_ALL)


BACKBONE_REGISTRY = _make(
    "BACKBONE",
    """Backbones. Inputs: ``input_shape: ShapeSpec`` (image channels). Builds a
    ``segkit.modeling.backbone.Backbone``: an ``nn.Module`` whose
    ``forward(x: (N, C, H, W))`` returns ``dict[str, Tensor]`` of named feature maps
    and whose ``output_shape()`` returns ``dict[str, ShapeSpec]`` (channels, stride)
    matching them; inputs must be multiples of ``size_divisibility`` (0: any size).""",
    ("input_shape",),
)
HEAD_REGISTRY = _make(
    "HEAD",
    """Segmentation heads. Inputs: ``input_shape: dict[str, ShapeSpec]`` (the
    backbone's ``output_shape()``). Builds an ``nn.Module`` mapping the backbone's
    ``dict[str, Tensor]`` to logits ``(N, K, h, w)`` at its ``stride`` (or a dict with
    ``"sem_seg"`` logits plus auxiliary outputs). ``segkit.modeling.heads.SegmentationHead``
    is the base class that reads ``IN_FEATURES`` and ``NUM_CLASSES``.""",
    ("input_shape",),
)
META_ARCH_REGISTRY = _make(
    "META_ARCH",
    """Meta-architectures. No inputs. Builds an ``nn.Module`` whose
    ``forward(images, targets=None)`` takes ``images`` uint8 or float ``(N, 3, H, W)``
    on the 0-255 scale (normalised on the device) and, in training mode with
    ``targets`` int64 ``(N, H, W)``, returns ``dict[str, Tensor]`` of scalar
    ``loss_*`` terms; otherwise logits ``(N, K, H, W)`` at the input size.""",
)
LOSS_REGISTRY = _make(
    "LOSS",
    """Losses (``MODEL.LOSS.TERMS``; ``ARGS`` keys in any case). No inputs. Builds an
    ``nn.Module`` whose ``forward(logits: (N, K, H, W), target: (N, H, W) int64)``
    returns a finite scalar Tensor; pixels equal to the ignore value never
    contribute (all ignored: 0 with zero gradient).""",
)
TRANSFORM_REGISTRY = _make(
    "TRANSFORM",
    """Augmentations (``INPUT.*_TRANSFORMS`` entries ``{NAME, ARGS}``). No inputs. Builds
    an albumentations transform applied jointly to ``image`` (H, W, 3 uint8) and
    ``mask`` (H, W). ``ARGS`` are first completed with the segmentation defaults the
    constructor accepts (``segkit.data.transforms.segmentation_defaults``:
    ``fill_mask``/``ignore_value`` = the ignore value, ``mask_interpolation`` =
    nearest, image ``fill``/``pixel_mean`` = the pixel mean), and a ``fill_mask``
    attribute the constructor does not take is set to the ignore value; values
    given in ``ARGS`` always win.""",
)
POSTPROCESSOR_REGISTRY = _make(
    "POSTPROCESSOR",
    """Post-processors (``POSTPROCESS.CHAIN``). No inputs. Builds a callable whose
    ``__call__(probs: (N, K, H, W), images: (N, 3, H, W) uint8 RGB)`` returns refined
    probabilities ``(N, K, H, W)`` (non-negative, summing to 1 over ``K``).""",
)
DATASET_REGISTRY = _make(
    "DATASET",
    """Datasets (``DatasetCatalog``). A registered function receives ``(root: str)`` (the
    dataset root; zero-argument functions are accepted) and returns ``list[dict]``
    records (``file_name``, ``sem_seg_file_name``, ``height``, ``width``, ...); metadata
    (class names, palette, ignore value) is attached through
    ``segkit.data.catalog.MetadataCatalog``. Records are read lazily, when a loader
    or ``DatasetCatalog.get`` asks for them.""",
    ("root",),
    constructed=False,
)
EVALUATOR_REGISTRY = _make(
    "EVALUATOR",
    """Evaluators (``TEST.EVALUATOR``). Inputs: ``dataset_name: str``, ``output_dir:
    str | None``. Builds an object with ``reset()``, ``process(inputs, outputs)`` and
    ``evaluate() -> dict``.""",
    ("dataset_name", "output_dir"),
)
HOOK_REGISTRY = _make(
    "HOOK",
    """Training hooks (``SOLVER.EXTRA_HOOKS``). Inputs: ``trainer``. Builds a hook with
    ``before_train``/``after_train``/``before_step``/``after_step`` (a registered
    function may return ``None`` to add no hook).""",
    ("trainer",),
)
OPTIMIZER_REGISTRY = _make(
    "OPTIMIZER",
    """Optimizers (``SOLVER.OPTIMIZER``). Inputs: ``params: list[dict]`` (parameter
    groups with their ``lr`` and ``weight_decay``). Builds a ``torch.optim.Optimizer``.""",
    ("params",),
)
LR_SCHEDULER_REGISTRY = _make(
    "LR_SCHEDULER",
    """Learning-rate schedules (``SOLVER.LR_SCHEDULER_NAME``). Inputs: ``optimizer``.
    Builds a ``torch.optim.lr_scheduler.LRScheduler`` stepped once per iteration.""",
    ("optimizer",),
)
CONFIG_REGISTRY = _make(
    "CONFIG",
    """Config extensions. A registered function receives ``(cfg: CfgNode)`` and adds
    the plugin's own keys with defaults in place; it returns nothing. They run in
    ``segkit.config.get_cfg()`` so that configs using plugin keys validate. (The one
    registry whose entries receive the config itself: they write it.)""",
    constructed=False,
)
