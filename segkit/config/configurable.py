"""The one way to build a component: ``@configurable``, :func:`instantiate`, :func:`build_component`.

Every registry follows the same rule (ARCHITECTURE.md "One way to build a component"):

* the registered object is the class (or function) itself, and its constructor
  takes plain keyword arguments, so it can be built in a test without a config;
* a ``from_config(cls, cfg, **inputs, **ARGS)`` classmethod returning a ``dict``
  of those keyword arguments is the one way it reads the config
  (``@configurable`` on ``__init__`` also makes ``Cls(cfg, ...)`` work);
* an object without ``from_config`` is called with the registry's inputs and its
  YAML ``ARGS`` only, never with the config.

:func:`build_component` is what every ``build_*`` function calls: registry
lookup, :func:`instantiate`, then the registry's contract check, whose errors
name the component and its provenance (built-in, or plugin distribution and
version).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, Optional, Tuple, Type, Union

from fvcore.common.config import CfgNode as _FvcoreCfgNode

__all__ = ["ComponentError", "build_component", "configurable", "from_config_of", "instantiate"]


class ComponentError(TypeError):
    """A registered component that breaks its registry's contract; the message says what to change."""


def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    if args and isinstance(args[0], _FvcoreCfgNode):
        return True
    return isinstance(kwargs.get("cfg"), _FvcoreCfgNode)


def from_config_of(obj: Any) -> Optional[Callable[..., Any]]:
    """``obj.from_config`` when it is a classmethod (classes) or an attribute of a function."""
    fn = getattr(obj, "from_config", None)
    if fn is None or not callable(fn):
        return None
    if inspect.isclass(obj) and not inspect.ismethod(fn):
        raise ComponentError(
            f"{obj.__module__}.{obj.__qualname__}.from_config must be a @classmethod "
            "(def from_config(cls, cfg, ...) -> dict)."
        )
    return fn


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__


def _kwargs_from_config(obj: Any, fn: Callable[..., Any], cfg: Any, *args: Any, **kwargs: Any) -> dict:
    try:
        out = fn(cfg, *args, **kwargs)
    except (AttributeError, KeyError) as exc:  # a missing config key: say whose from_config asked
        raise type(exc)(f"{_name(obj)}.from_config: {exc}") from exc
    if not isinstance(out, Mapping):
        raise ComponentError(
            f"{_name(obj)}.from_config returned {type(out).__name__}; it must return a dict of the "
            "constructor's keyword arguments (return {'arg': value, ...}, not an instance)."
        )
    return dict(out)


def configurable(init: Optional[Callable] = None, *, from_config: Optional[Callable] = None) -> Callable:
    """Make ``obj(cfg, ...)`` call ``from_config(cfg, ...)`` and pass its dict on.

    Two forms (as in detectron2):

    * on ``__init__`` of a class with ``from_config(cls, cfg, ...) -> dict``::

          class MyHead(nn.Module):
              @configurable
              def __init__(self, *, in_channels, num_classes): ...

              @classmethod
              def from_config(cls, cfg, input_shape):
                  return {"in_channels": ..., "num_classes": cfg.MODEL.NUM_CLASSES}

    * on a function, with the config reader given explicitly::

          @configurable(from_config=lambda cfg, params: {"params": params, "lr": cfg.SOLVER.BASE_LR})
          def my_sgd(params, lr): ...

    Called with plain keyword arguments, both behave as undecorated.
    """
    if init is None:
        return functools.partial(configurable, from_config=from_config)
    if from_config is not None:  # a function
        if inspect.isclass(init):
            raise TypeError("@configurable(from_config=...) decorates functions; on a class decorate __init__")

        @functools.wraps(init)
        def wrapped_fn(*args: Any, **kwargs: Any) -> Any:
            if _called_with_cfg(*args, **kwargs):
                return init(**_kwargs_from_config(init, from_config, *args, **kwargs))
            return init(*args, **kwargs)

        wrapped_fn.from_config = from_config
        return wrapped_fn
    if init.__name__ != "__init__":
        raise TypeError("@configurable decorates __init__ methods (or functions with from_config=...)")

    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        if not _called_with_cfg(*args, **kwargs):
            return init(self, *args, **kwargs)
        fn = from_config_of(type(self))
        if fn is None:
            raise TypeError(f"{type(self).__name__} uses @configurable but has no classmethod from_config")
        return init(self, **_kwargs_from_config(type(self), fn, *args, **kwargs))

    return wrapped


def instantiate(obj: Any, cfg: Any = None, args: Optional[Mapping[str, Any]] = None, *, where: str = "",
                **inputs: Any) -> Any:
    """Build one registered object: the construction rule shared by every registry.

    Args:
        obj: the registered class or function.
        cfg: the config, or None to build from ``inputs`` and ``args`` only.
        args: the entry's YAML ``ARGS`` (keyword arguments, already normalised).
        where: how error messages name the component (default: its name).
        **inputs: what the registry supplies besides the config (``input_shape``,
            ``params``, ``trainer``...).

    Returns:
        ``obj(**obj.from_config(cfg, **inputs, **args))`` when ``obj`` has a
        ``from_config`` and a config is given, else ``obj(**inputs, **args)``.

    Raises:
        ComponentError: the keyword arguments do not fit ``obj``'s signature (checked
        before calling, so errors raised inside the constructor pass unchanged).
    """
    args = dict(args or {})
    fn = from_config_of(obj)
    if fn is not None and cfg is not None:
        kwargs, source = _kwargs_from_config(obj, fn, cfg, **inputs, **args), "from_config returned"
    else:
        kwargs, source = {**inputs, **args}, "it was given"
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # no introspectable signature: let the call speak
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            hint = ("from_config must return exactly the constructor's keyword arguments." if fn is not None and
                    cfg is not None else
                    "Without from_config it receives the registry's inputs and its YAML ARGS as keyword arguments "
                    "only, never the config; to read the config add a classmethod from_config(cls, cfg, ...) "
                    "returning a dict of constructor arguments (see docs/writing_components.md).")
            raise ComponentError(
                f"{where or _name(obj)} cannot be built: {source} keyword arguments {sorted(kwargs)} but its "
                f"signature is {signature}: {exc}. {hint}"
            ) from exc
    return obj(**kwargs)


Expect = Union[Type, Tuple[Type, ...], Callable[[Any], Optional[str]]]


def build_component(
    registry: Any,
    name: str,
    cfg: Any = None,
    args: Optional[Mapping[str, Any]] = None,
    *,
    expect: Optional[Expect] = None,
    promise: str = "",
    **inputs: Any,
) -> Any:
    """Registry lookup, :func:`instantiate`, then the registry's contract check.

    Args:
        registry: a :class:`segkit.registry.SegkitRegistry`.
        name: the registered name (from the config).
        cfg: the config passed to ``from_config``.
        args: the entry's YAML ``ARGS``.
        expect: a type (or tuple of types) the result must be an instance of, or a
            function returning an error message (None when the result is fine).
        promise: what the registry promises, for the error message
            (e.g. ``"a torch.nn.Module"``).
        **inputs: the registry's inputs.

    Raises:
        RegistryKeyError: unknown name. ComponentError: the component cannot be
        called the way its registry calls it, or returned the wrong thing; the
        message names the component, its provenance and what to change.
    """
    obj = registry.get(name)
    where = f"{registry.name}_REGISTRY '{name}' ({registry.provenance(name).describe()})"
    try:
        out = instantiate(obj, cfg, args, where=where, **inputs)
    except ComponentError as exc:
        if str(exc).startswith(where):
            raise
        raise ComponentError(f"{where}: {exc}") from exc  # from_config's own contract errors
    problem = _check(out, expect, promise)
    if problem:
        raise ComponentError(f"{where} {problem}")
    return out


def _check(out: Any, expect: Optional[Expect], promise: str) -> Optional[str]:
    if expect is None:
        return None
    if isinstance(expect, (type, tuple)):
        if isinstance(out, expect):
            return None
        return f"returned {type(out).__name__}, which is not {promise or expect}."
    return expect(out)
