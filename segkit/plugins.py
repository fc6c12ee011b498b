"""Discovery of third-party components through the ``segkit.plugins`` entry-point group.

A distribution declares, in its ``pyproject.toml``::

    [project.entry-points."segkit.plugins"]
    my_plugin = "my_package.segkit_plugin"            # a module, imported for its registrations
    # or
    my_plugin = "my_package.segkit_plugin:register"   # a callable, called with no arguments

Plugins are loaded by :func:`segkit.load_components`, which every entry point
calls (``load_config``/``get_cfg``, every tool, ``segkit list``, ``Predictor``):
it imports segkit's built-in components first, then calls :func:`load_plugins`
with :func:`resolve_settings`. A registry lookup never loads anything, and
``import segkit`` imports no plugin. Only installed entry points are loaded;
nothing is imported from a path.

Switches, the same from every entry point; an environment variable wins over
the config key or command-line option for the same switch:
    ``SEGKIT_DISABLE_PLUGINS=1``: no plugin is imported at all.
    ``SEGKIT_PLUGINS=a,b`` / ``PLUGINS.ALLOW``: allow-list of entry-point (or
    distribution) names; empty loads every installed plugin.
    ``SEGKIT_PLUGIN_ERRORS=warn`` / ``PLUGINS.ON_ERROR``: a plugin that fails to
    import is skipped with a warning instead of raising. ``SystemExit`` or
    ``KeyboardInterrupt`` raised by a plugin's import always raise
    :class:`PluginError`.
"""
from __future__ import annotations

import importlib.metadata
import os
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from segkit import registry
from segkit.registry import plugin_context

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginError",
    "PluginRecord",
    "discover",
    "load_plugins",
    "loaded_once",
    "plugin_records",
    "resolve_settings",
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
            (not in the allow-list) or ``"disabled"`` (plugins switched off).
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
_LOADED_ONCE = False


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
    except BaseException as exc:  # noqa: BLE001 - re-raised with context or reported
        message = (
            f"segkit plugin '{ep.name}' (entry point '{ep.name} = {ep.value}' of distribution "
            f"{dist} {version}, group '{ENTRY_POINT_GROUP}') failed to load: "
            f"{type(exc).__name__}: {exc}"
        )
        if not isinstance(exc, Exception):
            # sys.exit()/KeyboardInterrupt in a plugin's import must not end the
            # process silently (nor be skipped by "warn").
            raise PluginError(message + " (a plugin must not exit or interrupt while it is imported)") from exc
        if on_error != "warn":
            raise PluginError(message) from exc
        warnings.warn(message + " -- skipped (plugin errors set to 'warn').", RuntimeWarning, stacklevel=3)
        record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
    return record


def _env_flag(name: str) -> Optional[bool]:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    return raw in ("1", "true", "yes", "on")


def resolve_settings(
    allow: Optional[Iterable[str]] = None,
    on_error: Optional[str] = None,
    disabled: Optional[bool] = None,
) -> Dict[str, object]:
    """The plugin switches in force: environment variables over the given values.

    Args:
        allow: ``PLUGINS.ALLOW`` (or a tool's option); None or empty loads all.
        on_error: ``PLUGINS.ON_ERROR``; None means ``"raise"``.
        disabled: True loads no plugin.

    Returns:
        ``{"allow": list[str], "on_error": "raise"|"warn", "disabled": bool}``.
    """
    env_disabled = _env_flag("SEGKIT_DISABLE_PLUGINS")
    env_allow = [s.strip() for s in os.environ.get("SEGKIT_PLUGINS", "").split(",") if s.strip()]
    env_errors = os.environ.get("SEGKIT_PLUGIN_ERRORS", "").strip().lower()
    return {
        "allow": env_allow or list(allow or []),
        "on_error": env_errors or (on_error or "raise"),
        "disabled": bool(env_disabled if env_disabled is not None else disabled),
    }


def load_plugins(
    allow: Optional[Iterable[str]] = None,
    on_error: str = "raise",
    disabled: bool = False,
) -> List[PluginRecord]:
    """Load installed plugins once each; later calls only load what is new.

    Built-in components must be registered first (call
    :func:`segkit.load_components`, which does both and honours the environment):
    otherwise a plugin reusing a built-in name would be accepted and the built-in
    blamed later.

    Args:
        allow: entry-point or distribution names to load; empty or None loads all.
        on_error: ``"raise"`` (default) raises :class:`PluginError` naming the
            distribution and entry point with the cause chained; ``"warn"`` skips
            the plugin with a warning.
        disabled: load nothing (entry points are listed as ``"disabled"``; no
            third-party module is imported).

    Returns:
        The records of every entry point seen so far.
    """
    global _LOADED_ONCE
    if on_error not in ("raise", "warn"):
        raise ValueError(
            f"Plugin errors must be 'raise' or 'warn' (PLUGINS.ON_ERROR / SEGKIT_PLUGIN_ERRORS), got {on_error!r}"
        )
    if not registry.builtins_registered():
        raise RuntimeError(
            "segkit's built-in components are not registered yet, so a plugin clash would blame the built-in: "
            "call segkit.load_components() (built-ins, then plugins) instead of segkit.plugins.load_plugins()."
        )
    allow = list(allow or [])
    with _LOCK:
        _LOADED_ONCE = True
        for ep in discover():
            key = f"{ep.name}={ep.value}"
            previous = _RECORDS.get(key)
            if previous is not None and previous.status in ("loaded", "failed"):
                continue
            dist, version = _dist_of(ep)
            if disabled:
                _RECORDS[key] = PluginRecord(ep.name, ep.value, dist, version, "disabled")
            elif not _allowed(ep, allow):
                _RECORDS[key] = PluginRecord(ep.name, ep.value, dist, version, "skipped")
            else:
                _RECORDS[key] = _load_one(ep, on_error)
        return plugin_records()


def loaded_once() -> bool:
    """Whether :func:`load_plugins` has run in this process (explicitly or by an entry point)."""
    return _LOADED_ONCE


def plugin_records() -> List[PluginRecord]:
    """What happened to each entry point seen so far."""
    with _LOCK:
        return [_RECORDS[k] for k in sorted(_RECORDS)]


def _reset_for_tests() -> None:
    """Forget what was loaded (registrations stay); tests only."""
    global _LOADED_ONCE
    with _LOCK:
        _RECORDS.clear()
        _LOADED_ONCE = False
