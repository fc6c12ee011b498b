"""Import every built-in component module so their registrations exist.

Called once before plugins load (so a plugin that reuses a built-in name gets the
clear duplicate error) and before the first registry lookup. Components register
themselves with decorators at import time; none of them looks a registry up at
import time, which keeps this free of import cycles.
"""
from __future__ import annotations

import importlib
import importlib.util

BUILTIN_MODULES = (
    "segkit.modeling",
    "segkit.modeling.losses",  # not imported by segkit.modeling itself
    "segkit.solver",
    "segkit.data",
    "segkit.postprocess",
    "segkit.evaluation",
    "segkit.engine",
)


def import_builtins() -> None:
    """Import the built-in component packages that exist in this installation."""
    for name in BUILTIN_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
