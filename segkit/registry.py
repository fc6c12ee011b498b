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

Installed plugins are discovered once, lazily, before the first lookup
(see :mod:`segkit.plugins`). This module imports nothing else of segkit at import
time (layer 1 of ARCHITECTURE.md).
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


def _provenance_of(obj: Any) -> Provenance:
    module = getattr(obj, "__module__", None) or type(obj).__module__
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


def _ensure_plugins_loaded() -> None:
    # Imported lazily: segkit.plugins imports this module to attribute registrations.
    from segkit import plugins

    plugins.autoload()


class SegkitRegistry(_FvcoreRegistry):
    """fvcore ``Registry`` with duplicate detection, did-you-mean and provenance.

    Use it exactly like fvcore's registry::

        @BACKBONE_REGISTRY.register()
        class MyBackbone(Backbone): ...

        BACKBONE_REGISTRY.register(my_builder, name="Other")  # explicit name
        BACKBONE_REGISTRY.get("MyBackbone")
    """

    def __init__(self, name: str, doc: str = "") -> None:
        super().__init__(name)
        self.__doc__ = doc
        self._provenance: Dict[str, Provenance] = {}
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------
    def _do_register(self, name: str, obj: Any) -> None:  # overrides fvcore's assert
        with self._lock:
            new = _provenance_of(obj)
            if name in self._obj_map:
                old = self._provenance[name]
                raise RegistryError(
                    f"Name '{name}' is already registered in {self._name}_REGISTRY "
                    f"by {old.describe()}; a second registration comes from {new.describe()}. "
                    "Rename one of them (register(obj, name=...)) or uninstall the conflicting plugin."
                )
            self._obj_map[name] = obj
            self._provenance[name] = new

    def register(self, obj: Any = None, *, name: Optional[str] = None) -> Any:
        """Register ``obj`` under ``name`` (default: ``obj.__name__``); usable as a decorator."""
        if obj is None:

            def deco(func_or_class: Any) -> Any:
                self._do_register(name or func_or_class.__name__, func_or_class)
                return func_or_class

            return deco
        self._do_register(name or obj.__name__, obj)
        return obj

    def unregister(self, name: str) -> Any:
        """Remove and return an entry (for tests and interactive use)."""
        with self._lock:
            self._provenance.pop(name, None)
            return self._obj_map.pop(name)

    # -- lookup ---------------------------------------------------------------------
    def get(self, name: str) -> Any:
        """Return the object registered as ``name``, loading plugins first if needed."""
        _ensure_plugins_loaded()
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
        return f"No object named '{name}' in {self._name}_REGISTRY.{hint} Available: {listing}."

    def provenance(self, name: str) -> Provenance:
        """Where ``name`` came from."""
        self.get(name)
        return self._provenance[name]

    def entries(self) -> List[Tuple[str, Any, Provenance]]:
        """``(name, object, provenance)`` for every entry, sorted by name."""
        _ensure_plugins_loaded()
        return [(k, self._obj_map[k], self._provenance[k]) for k in sorted(self._obj_map)]

    def __contains__(self, name: str) -> bool:
        _ensure_plugins_loaded()
        return name in self._obj_map

    def __iter__(self) -> Iterator[Tuple[str, Any]]:
        _ensure_plugins_loaded()
        return iter(sorted(self._obj_map.items()))

    def keys(self) -> List[str]:
        _ensure_plugins_loaded()
        return sorted(self._obj_map)

    @property
    def name(self) -> str:
        return self._name


_ALL: Dict[str, SegkitRegistry] = {}


def _make(name: str, doc: str) -> SegkitRegistry:
    reg = SegkitRegistry(name, doc)
    _ALL[name] = reg
    return reg


def all_registries() -> Dict[str, SegkitRegistry]:
    """Every segkit registry by name (``"BACKBONE"``, ``"HEAD"``, ...)."""
    return dict(_ALL)


BACKBONE_REGISTRY = _make(
    "BACKBONE",
    """Backbones. A registered callable receives ``(cfg, input_shape: ShapeSpec)`` and
    returns a ``segkit.modeling.backbone.Backbone``: an ``nn.Module`` whose
    ``forward(x: (N, C, H, W))`` returns ``dict[str, Tensor]`` of named feature maps
    and whose ``output_shape()`` returns ``dict[str, ShapeSpec]`` (channels, stride).""",
)
HEAD_REGISTRY = _make(
    "HEAD",
    """Segmentation heads. A registered callable receives
    ``(cfg, input_shape: dict[str, ShapeSpec])`` (the backbone's ``output_shape()``)
    and returns an ``nn.Module`` mapping ``dict[str, Tensor]`` to logits
    ``(N, K, h, w)`` (or a dict of named logits for auxiliary outputs).""",
)
META_ARCH_REGISTRY = _make(
    "META_ARCH",
    """Meta-architectures. A registered callable receives ``(cfg)`` and returns an
    ``nn.Module`` whose ``forward(images, targets=None)`` takes ``images`` uint8 or
    float ``(N, 3, H, W)`` on the 0-255 scale (normalised on the device) and, in
    training mode with ``targets`` int64 ``(N, H, W)``, returns ``dict[str, Tensor]``
    of scalar ``loss_*`` terms; otherwise logits ``(N, K, H, W)`` at the input size.""",
)
LOSS_REGISTRY = _make(
    "LOSS",
    """Losses. A registered callable receives ``(cfg, **kwargs)`` or plain keyword
    arguments and returns an ``nn.Module`` whose ``forward(logits: (N, K, H, W),
    target: (N, H, W) int64)`` returns a scalar Tensor; pixels equal to the ignore
    value never contribute.""",
)
TRANSFORM_REGISTRY = _make(
    "TRANSFORM",
    """Augmentations. A registered callable receives keyword arguments (``ARGS`` in
    YAML) and returns an albumentations transform applied jointly to ``image``
    (H, W, 3 uint8) and ``mask`` (H, W); masks always use nearest interpolation
    and pad with the ignore value.""",
)
POSTPROCESSOR_REGISTRY = _make(
    "POSTPROCESSOR",
    """Post-processors. A registered callable receives ``(cfg)`` or keyword arguments
    and returns an object whose ``__call__(probs: (N, K, H, W), images: (N, 3, H, W)
    uint8)`` returns refined probabilities ``(N, K, H, W)``.""",
)
DATASET_REGISTRY = _make(
    "DATASET",
    """Datasets. A registered callable receives ``(root: str)`` and returns
    ``list[dict]`` records (``file_name``, ``sem_seg_file_name``, ``height``,
    ``width``, ...); metadata (class names, palette, ignore value) is attached
    through ``segkit.data.catalog``.""",
)
EVALUATOR_REGISTRY = _make(
    "EVALUATOR",
    """Evaluators. A registered callable receives ``(cfg, dataset_name, output_dir)``
    and returns an object with ``reset()``, ``process(inputs, outputs)`` and
    ``evaluate() -> dict``.""",
)
HOOK_REGISTRY = _make(
    "HOOK",
    """Training hooks. A registered callable receives ``(cfg, trainer)`` and returns a
    hook with ``before_train``/``after_train``/``before_step``/``after_step``.""",
)
OPTIMIZER_REGISTRY = _make(
    "OPTIMIZER",
    """Optimizers. A registered callable receives ``(cfg, param_groups: list[dict])``
    and returns a ``torch.optim.Optimizer``.""",
)
LR_SCHEDULER_REGISTRY = _make(
    "LR_SCHEDULER",
    """Learning-rate schedules. A registered callable receives ``(cfg, optimizer)``
    and returns a ``torch.optim.lr_scheduler.LRScheduler``.""",
)
CONFIG_REGISTRY = _make(
    "CONFIG",
    """Config extensions. A registered callable receives ``(cfg: CfgNode)`` and adds
    the plugin's own keys with defaults in place; it returns nothing. They run in
    ``segkit.config.get_cfg()`` so that configs using plugin keys validate.""",
)

