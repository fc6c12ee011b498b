"""The explicit loader: segkit's built-in components, then the installed plugins.

Design (ARCHITECTURE.md layers): :mod:`segkit.registry` and :mod:`segkit.plugins`
are layer 1 and import nothing above them, so a registry lookup never imports
anything. Each built-in package registers its own components when imported
(``segkit.modeling`` imports its backbones, heads, losses and meta-architectures,
and so on). This module sits *above* every layer, like the tools: it imports every
built-in package with plain import statements, marks the built-ins complete and
only then loads plugins, so a plugin that reuses a built-in name is the one that
fails. Every entry point calls :func:`load_components`: ``load_config`` and
``get_cfg``, every tool (through ``load_config``), ``segkit list`` and
``Predictor``; ``import segkit`` itself imports no plugin at all.
"""
from __future__ import annotations

from typing import Iterable, List, Optional

__all__ = ["BUILTIN_PACKAGES", "import_builtins", "load_components"]

#: Every package whose import registers built-in components (documentation; the
#: imports below are explicit so that tools see the dependency).
BUILTIN_PACKAGES = (
    "segkit.modeling",
    "segkit.modeling.losses",
    "segkit.solver",
    "segkit.data",
    "segkit.postprocess",
    "segkit.evaluation",
    "segkit.engine",
)


def import_builtins() -> None:
    """Register every built-in component of every registry (idempotent)."""
    from segkit import registry

    if registry.builtins_registered():
        return
    import segkit.data  # noqa: F401  (datasets, transforms)
    import segkit.engine  # noqa: F401  (hooks, evaluator use)
    import segkit.evaluation  # noqa: F401  (evaluators)
    import segkit.modeling  # noqa: F401  (backbones, heads, meta-architectures)
    import segkit.modeling.losses  # noqa: F401  (losses)
    import segkit.postprocess  # noqa: F401  (post-processors)
    import segkit.solver  # noqa: F401  (optimizers, LR schedules)

    registry.mark_builtins_registered()


def load_components(
    allow: Optional[Iterable[str]] = None,
    on_error: Optional[str] = None,
    disabled: Optional[bool] = None,
) -> List["object"]:
    """Built-ins first, then plugins as the switches say; returns the plugin records.

    Called with no arguments after plugins were already loaded once, it does
    nothing more (so ``get_cfg()`` inside ``load_config`` keeps the file's
    ``PLUGINS.ALLOW``). With arguments (``PLUGINS.ALLOW``/``ON_ERROR`` or a tool's
    options) it loads what they allow that is not loaded yet. The environment
    variables ``SEGKIT_DISABLE_PLUGINS``, ``SEGKIT_PLUGINS`` and
    ``SEGKIT_PLUGIN_ERRORS`` override the arguments (see :mod:`segkit.plugins`).
    """
    from segkit import plugins

    import_builtins()
    if allow is None and on_error is None and disabled is None and plugins.loaded_once():
        return plugins.plugin_records()
    settings = plugins.resolve_settings(allow, on_error, disabled)
    return plugins.load_plugins(settings["allow"], settings["on_error"], settings["disabled"])
