"""Registry behaviour: duplicates, did-you-mean, provenance, docstrings."""
import subprocess
import sys
import textwrap

import pytest

from segkit.registry import (
    RegistryError,
    RegistryKeyError,
    SegkitRegistry,
    all_registries,
)


def _thing():
    return "thing"


def test_register_and_get_with_builtin_like_provenance():
    reg = SegkitRegistry("TEST")
    reg.register(_thing)
    assert reg.get("_thing") is _thing
    prov = reg.provenance("_thing")
    # Defined in a test module (not segkit): a third party without a distribution.
    assert prov.kind == "third-party"
    assert prov.module == __name__


def test_segkit_objects_are_builtin():
    from segkit.config import get_cfg

    reg = SegkitRegistry("TEST")
    reg.register(get_cfg, name="get_cfg")
    assert reg.provenance("get_cfg").kind == "builtin"
    assert "segkit.config.config" in reg.provenance("get_cfg").describe()


def test_duplicate_names_raise_naming_both_modules():
    reg = SegkitRegistry("TEST")
    reg.register(_thing, name="X")
    with pytest.raises(RegistryError) as info:
        reg.register(lambda: None, name="X")
    msg = str(info.value)
    assert "'X'" in msg and "TEST_REGISTRY" in msg
    assert msg.count(__name__) == 2  # both sides named


def test_duplicate_raises_under_python_O():
    code = textwrap.dedent(
        """
        from segkit.registry import SegkitRegistry, RegistryError
        r = SegkitRegistry("T")
        r.register(len, name="a")
        try:
            r.register(abs, name="a")
        except RegistryError as e:
            print("RAISED", e)
        """
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("RAISED")


@pytest.mark.parametrize(
    "query,expected",
    [("ASSP", "ASPP"), ("aspp", "ASPP"), ("FCNHaed", "FCNHead"), ("refinenet", "RefineNet")],
)
def test_unknown_name_suggests_nearest_and_lists_available(query, expected):
    reg = SegkitRegistry("HEADX")
    for name in ("ASPP", "FCNHead", "RefineNet"):
        reg.register(_thing, name=name)
    with pytest.raises(RegistryKeyError) as info:
        reg.get(query)
    msg = str(info.value)
    assert f"Did you mean '{expected}'?" in msg
    assert "Available: ASPP, FCNHead, RefineNet" in msg
    assert isinstance(info.value, KeyError)


def test_unknown_name_without_close_match_lists_available():
    reg = SegkitRegistry("EMPTYISH")
    reg.register(_thing, name="Alpha")
    with pytest.raises(KeyError, match=r"No object named 'zzz' in EMPTYISH_REGISTRY\. Available: Alpha\."):
        reg.get("zzz")


def test_decorator_form_returns_the_object_and_accepts_a_name():
    reg = SegkitRegistry("DECO")

    @reg.register()
    class A:
        pass

    @reg.register(name="Bee")
    def b():
        return 1

    assert reg.get("A") is A and reg.get("Bee") is b
    assert reg.keys() == ["A", "Bee"]
    assert [k for k, _ in reg] == ["A", "Bee"]
    assert "A" in reg and "C" not in reg


def test_every_registry_documents_its_contract():
    regs = all_registries()
    for name in ("BACKBONE", "HEAD", "META_ARCH", "LOSS", "TRANSFORM", "POSTPROCESSOR", "DATASET",
                 "EVALUATOR", "HOOK", "OPTIMIZER", "LR_SCHEDULER", "CONFIG"):
        doc = regs[name].__doc__
        assert doc and "receives" in doc and ("return" in doc), name
