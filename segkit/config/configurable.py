"""``@configurable``: construct from plain arguments or from a config (detectron2's habit)."""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from fvcore.common.config import CfgNode as _FvcoreCfgNode

__all__ = ["configurable"]


def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    if args and isinstance(args[0], _FvcoreCfgNode):
        return True
    return isinstance(kwargs.get("cfg"), _FvcoreCfgNode)


def configurable(init: Callable) -> Callable:
    """Decorate ``__init__`` of a class that has ``from_config(cls, cfg, ...) -> dict``.

    ``Cls(cfg, input_shape)`` then calls ``Cls.from_config(cfg, input_shape)`` and
    passes the returned keyword arguments to ``__init__``; ``Cls(a=1, b=2)`` works
    as usual. A registry entry can therefore be the class itself.
    """
    if init.__name__ != "__init__":
        raise TypeError("@configurable decorates __init__ methods only")

    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        if not _called_with_cfg(*args, **kwargs):
            return init(self, *args, **kwargs)
        from_config = getattr(type(self), "from_config", None)
        if from_config is None or not inspect.ismethod(from_config):
            raise TypeError(f"{type(self).__name__} uses @configurable but has no classmethod from_config")
        try:
            explicit = from_config(*args, **kwargs)
        except (AttributeError, KeyError) as exc:
            raise type(exc)(f"{type(self).__name__}.from_config: {exc}") from exc
        return init(self, **explicit)

    return wrapped
