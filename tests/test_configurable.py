"""The one way to build a component: @configurable, instantiate, build_component and their errors.

Each test builds tiny local objects (no model): what the constructor receives, and
the exact wording that names the component, is checked against hand-written values.
"""
import functools

import pytest

from segkit.config import get_cfg
from segkit.config.configurable import ComponentError, build_component, configurable, from_config_of, instantiate
from segkit.registry import SegkitRegistry

WHERE = "DEMO_REGISTRY 'Thing' (builtin (segkit.demo))"  # what build_component's errors start with


class _Head:
    @configurable
    def __init__(self, *, width, depth=3):
        self.width, self.depth = width, depth

    @classmethod
    def from_config(cls, cfg, depth=3):
        return {"width": cfg.SOLVER.MAX_ITER + 1, "depth": depth}


class _NoFromConfig:
    @configurable
    def __init__(self, width=1):
        self.width = width


class _Reads:
    def __init__(self, a):
        self.a = a

    @classmethod
    def from_config(cls, cfg):
        return {"a": cfg.SOLVER.NO_SUCH_KEY}


class _KeyErr(_Reads):
    @classmethod
    def from_config(cls, cfg):
        return {"a": {}["missing"]}


class _Instance(_Reads):
    @classmethod
    def from_config(cls, cfg):
        return 5


class _Extra(_Reads):
    @classmethod
    def from_config(cls, cfg):
        return {"a": 1, "b": 2}


def _cfg(max_iter=41):
    cfg = get_cfg()
    cfg.SOLVER.MAX_ITER = max_iter
    return cfg


def _registry(obj):
    reg = SegkitRegistry("DEMO")
    reg.register(obj, name="Thing", source="segkit.demo")
    return reg


# ----------------------------------------------------------------------------- @configurable
def test_configurable_init_reads_the_config_positionally_or_by_keyword_and_plain_args_bypass_it():
    assert vars(_Head(_cfg(41))) == {"width": 42, "depth": 3}
    assert vars(_Head(cfg=_cfg(9), depth=7)) == {"width": 10, "depth": 7}
    assert vars(_Head(width=5)) == {"width": 5, "depth": 3}
    assert vars(_NoFromConfig(4)) == {"width": 4}  # a non-config positional argument is passed on as is
    with pytest.raises(TypeError, match="_NoFromConfig uses @configurable but has no classmethod from_config"):
        _NoFromConfig(_cfg())


def test_configurable_function_form():
    @configurable(from_config=lambda cfg, scale=1: {"lr": cfg.SOLVER.MAX_ITER * scale})
    def make(lr, momentum=0.5):
        return (lr, momentum)

    assert make(_cfg(3)) == (3, 0.5)
    assert make(cfg=_cfg(3), scale=2) == (6, 0.5)
    assert make(0.25, momentum=0.75) == (0.25, 0.75)
    assert make.__name__ == "make"
    assert from_config_of(make)(_cfg(5)) == {"lr": 5}


def test_configurable_misuse_is_refused():
    with pytest.raises(TypeError, match="decorates functions; on a class decorate __init__"):
        configurable(_Head, from_config=lambda cfg: {})
    with pytest.raises(TypeError, match="decorates __init__ methods"):
        class _Bad:
            @configurable
            def setup(self, width):
                pass


# ----------------------------------------------------------------------------- from_config_of
def test_from_config_of_accepts_classmethods_and_function_attributes_only():
    assert from_config_of(_NoFromConfig) is None

    class _NotCallable:
        from_config = 3

        def __init__(self, a):
            self.a = a

    assert from_config_of(_NotCallable) is None
    assert instantiate(_NotCallable, _cfg(), {"a": 2}).a == 2  # built from ARGS, not refused

    def fn(a):
        return a

    fn.from_config = lambda cfg: {"a": cfg.SOLVER.MAX_ITER}
    assert from_config_of(fn) is fn.from_config
    assert instantiate(fn, _cfg(8)) == 8

    class _Static:
        @staticmethod
        def from_config(cfg):
            return {}

    with pytest.raises(ComponentError, match=r"_Static\.from_config must be a @classmethod"):
        from_config_of(_Static)


# ----------------------------------------------------------------------------- instantiate
def test_instantiate_uses_from_config_only_with_a_config():
    assert vars(instantiate(_Head, _cfg(1), depth=4)) == {"width": 2, "depth": 4}
    assert vars(instantiate(_Head, None, {"width": 6})) == {"width": 6, "depth": 3}
    assert vars(instantiate(_Head, None, {"width": 6}, depth=2)) == {"width": 6, "depth": 2}
    assert instantiate(dict, None, {"a": 1}, b=2) == {"a": 1, "b": 2}  # no introspectable signature
    # @configurable keeps __init__'s signature visible (functools.wraps): a misspelt ARG is caught before the call
    with pytest.raises(ComponentError, match=r"_Head cannot be built: it was given keyword arguments \['widht'\]"):
        instantiate(_Head, None, {"widht": 6})


def test_from_config_errors_name_the_component():
    with pytest.raises(AttributeError, match=r"^_Reads\.from_config: .*NO_SUCH_KEY") as info:
        instantiate(_Reads, _cfg())
    assert isinstance(info.value.__cause__, AttributeError)

    with pytest.raises(KeyError, match=r"_KeyErr\.from_config: 'missing'"):
        instantiate(_KeyErr, _cfg())

    with pytest.raises(ComponentError, match=r"^_Instance\.from_config returned int; it must return a dict"):
        instantiate(_Instance, _cfg())
    # an object without __qualname__ / __name__ is named by its type
    part = functools.partial(_Reads)
    part.from_config = lambda cfg: {"a": cfg.NOPE}
    with pytest.raises(AttributeError, match=r"^partial\.from_config: "):
        instantiate(part, _cfg())


def test_signature_mismatch_hints_depend_on_how_it_was_called():
    with pytest.raises(ComponentError) as info:
        instantiate(_Extra, _cfg())
    msg = str(info.value)
    assert msg.startswith("_Extra cannot be built: from_config returned keyword arguments ['a', 'b']")
    assert msg.endswith("from_config must return exactly the constructor's keyword arguments.")
    with pytest.raises(ComponentError) as info:
        instantiate(_Extra, None, {"b": 2}, a=1)  # a config-less build: from_config is not used
    msg = str(info.value)
    assert msg.startswith("_Extra cannot be built: it was given keyword arguments ['a', 'b']")
    assert "Without from_config it receives the registry's inputs" in msg

    def plain(a):
        return a

    with pytest.raises(ComponentError) as info:
        instantiate(plain, _cfg(), {"z": 1}, where="MY 'plain'")
    msg = str(info.value)
    assert msg.startswith("MY 'plain' cannot be built: it was given keyword arguments ['z']")
    assert "Without from_config" in msg


def test_errors_raised_inside_the_constructor_pass_unchanged():
    class _Boom:
        def __init__(self, a):
            raise TypeError(f"boom {a}")

    with pytest.raises(TypeError, match=r"^boom 3$"):
        instantiate(_Boom, None, {"a": 3})


# ----------------------------------------------------------------------------- build_component
def test_build_component_checks_the_result_against_expect():
    reg = _registry(lambda a: [a] * a)
    assert build_component(reg, "Thing", None, {"a": 2}) == [2, 2]
    assert build_component(reg, "Thing", None, {"a": 2}, expect=list) == [2, 2]
    assert build_component(reg, "Thing", None, {"a": 1}, expect=(tuple, list)) == [1]
    with pytest.raises(ComponentError) as info:
        build_component(reg, "Thing", None, {"a": 2}, expect=dict, promise="a mapping")
    assert str(info.value) == f"{WHERE} returned list, which is not a mapping."
    with pytest.raises(ComponentError) as info:
        build_component(reg, "Thing", None, {"a": 2}, expect=(dict, set))
    assert str(info.value) == f"{WHERE} returned list, which is not {(dict, set)}."
    seen = []
    assert build_component(reg, "Thing", None, {"a": 3}, expect=lambda out: seen.append(out)) == [3, 3, 3]
    assert seen == [[3, 3, 3]]
    with pytest.raises(ComponentError) as info:
        build_component(reg, "Thing", None, {"a": 1}, expect=lambda out: f"built {len(out)} item")
    assert str(info.value) == f"{WHERE} built 1 item"


def test_build_component_errors_start_with_the_registry_entry_once():
    with pytest.raises(ComponentError) as info:
        build_component(_registry(_Extra), "Thing", _cfg())
    msg = str(info.value)
    assert msg.startswith(f"{WHERE} cannot be built: from_config returned keyword arguments ['a', 'b']")
    assert msg.count("DEMO_REGISTRY") == 1

    with pytest.raises(ComponentError) as info:  # from_config's own contract error gets the prefix
        build_component(_registry(_Instance), "Thing", _cfg())
    assert str(info.value).startswith(f"{WHERE}: _Instance.from_config returned int;")
