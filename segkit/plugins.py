"""Discovery of third-party components through the ``segkit.plugins`` entry-point group.

A distribution declares, in its ``pyproject.toml``::

    [project.entry-points."segkit.plugins"]
    my_plugin = "my_package.segkit_plugin"            # a module, imported for its registrations
    # or
    my_plugin = "my_package.segkit_plugin:register"   # a callable, called with no arguments

Plugins are loaded once, automatically, before the first registry lookup
(:func:`autoload`), and explicitly by the tools (:func:`load_plugins`). Only
installed entry points are loaded; nothing is imported from a path.

Environment:
    ``SEGKIT_DISABLE_PLUGINS=1``: no automatic loading.
    ``SEGKIT_PLUGINS=a,b``: allow-list of entry-point (or distribution) names.
    ``SEGKIT_PLUGIN_ERRORS=warn``: a plugin that fails to import is skipped with a
    warning instead of raising.
"""
from __future__ import annotations

import importlib.metadata
import os
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from segkit.registry import plugin_context

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginError",
    "PluginRecord",
    "autoload",
    "discover",
    "load_plugins",
    "plugin_records",
]

ENTRY_POINT_GROUP = "segkit.plugins"


class PluginError(ImportError):
    """A plugin could not be loaded; the original exception is chained."""


@dataclass
class PluginRecord:
    """What happened to one entry point.

    Attributes:
        name: the entry point's name.
        value: the entry point's target (``module`` or ``module:attr``).
        distribution: the distribution that declares it, and its ``version``.
        status: ``"loaded"``, ``"failed"`` (warned and skipped), ``"skipped"``
            (not in the allow-list) or ``"disabled"`` (autoloading off).
        error: the failure's message, when ``status == "failed"``.
    """

    name: str
    value: str
    distribution: str
    version: str
    status: str
    error: Optional[str] = None

    @property
    def entry_point(self) -> str:
        return f"{self.name} = {self.value}"


_LOCK = threading.RLock()
_RECORDS: Dict[str, PluginRecord] = {}
_AUTOLOADED = False


def _dist_of(ep: importlib.metadata.EntryPoint) -> tuple:
    dist = getattr(ep, "dist", None)
    if dist is None:  # pragma: no cover - very old importlib.metadata
        return "unknown", "unknown"
    return dist.metadata["Name"], dist.version


def discover() -> List[importlib.metadata.EntryPoint]:
    """Every installed entry point of the ``segkit.plugins`` group, sorted by name."""
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted(eps, key=lambda ep: (ep.name, ep.value))


def _allowed(ep: importlib.metadata.EntryPoint, allow: Optional[Sequence[str]]) -> bool:
    if not allow:
        return True
    return ep.name in allow or _dist_of(ep)[0] in allow


def _load_one(ep: importlib.metadata.EntryPoint, on_error: str) -> PluginRecord:
    dist, version = _dist_of(ep)
    record = PluginRecord(ep.name, ep.value, dist, version, "loaded")
    try:
        with plugin_context(dist, version, f"{ep.name} = {ep.value}"):
            target = ep.load()
            if callable(target) and not isinstance(target, types.ModuleType):
                target()
    except Exception as exc:  # noqa: BLE001 - re-raised with context or reported
        message = (
            f"segkit plugin '{ep.name}' (entry point '{ep.name} = {ep.value}' of distribution "
            f"{dist} {version}, group '{ENTRY_POINT_GROUP}') failed to load: "
            f"{type(exc).__name__}: {exc}"
        )
        if on_error != "warn":
            raise PluginError(message) from exc
        warnings.warn(message + " -- skipped (plugin errors set to 'warn').", RuntimeWarning, stacklevel=3)
        record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
    return record


def load_plugins(
    allow: Optional[Iterable[str]] = None,
    on_error: str = "raise",
) -> List[PluginRecord]:
    """Load installed plugins once each; later calls only load what is new.

    An explicit call (from a tool) replaces the automatic loading: plugins left out
    by ``allow`` stay unloaded.

    Args:
        allow: entry-point or distribution names to load; empty or None loads all.
        on_error: ``"raise"`` (default) raises :class:`PluginError` naming the
            distribution and entry point with the cause chained; ``"warn"`` skips
            the plugin with a warning.

    Returns:
        The records of every entry point seen so far.
    """
    if on_error not in ("raise", "warn"):
        raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
    allow = list(allow or [])
    with _LOCK:
        _mark_done()  # an explicit load replaces the automatic one
        for ep in discover():
            key = f"{ep.name}={ep.value}"
            previous = _RECORDS.get(key)
            if previous is not None and previous.status in ("loaded", "failed"):
                continue
            if not _allowed(ep, allow):
                dist, version = _dist_of(ep)
                _RECORDS[key] = PluginRecord(ep.name, ep.value, dist, version, "skipped")
                continue
            _RECORDS[key] = _load_one(ep, on_error)
        return plugin_records()


def autoload() -> None:
    """Load plugins once, as the environment says; called before the first registry lookup."""
    if _AUTOLOADED:
        return
    with _LOCK:
        if _AUTOLOADED:
            return
        if os.environ.get("SEGKIT_DISABLE_PLUGINS", "").strip().lower() in ("1", "true", "yes"):
            _mark_done()
            for ep in discover():
                dist, version = _dist_of(ep)
                _RECORDS.setdefault(
                    f"{ep.name}={ep.value}", PluginRecord(ep.name, ep.value, dist, version, "disabled")
                )
            return
        allow = [s.strip() for s in os.environ.get("SEGKIT_PLUGINS", "").split(",") if s.strip()]
        on_error = os.environ.get("SEGKIT_PLUGIN_ERRORS", "raise").strip().lower() or "raise"
        load_plugins(allow, on_error)


def _mark_done() -> None:
    """Built-ins first (so a plugin reusing a built-in name is the one that fails), once."""
    global _AUTOLOADED
    if not _AUTOLOADED:
        _AUTOLOADED = True  # set first: lookups made while importing must not recurse
        from segkit._builtins import import_builtins

        import_builtins()


def plugin_records() -> List[PluginRecord]:
    """What happened to each entry point seen so far."""
    with _LOCK:
        return [_RECORDS[k] for k in sorted(_RECORDS)]


def _reset_for_tests() -> None:
    """Forget what was loaded (registrations stay); tests only."""
    global _AUTOLOADED
    with _LOCK:
        _RECORDS.clear()
        _AUTOLOADED = False
