"""Plugin discovery through real installed distributions (dist-info on sys.path)."""
import importlib
import importlib.metadata
import sys
import textwrap
import uuid

import pytest

from segkit import load_components, plugins
from segkit._builtins import import_builtins
from segkit.config import ConfigError, get_cfg
from segkit.registry import HEAD_REGISTRY, RegistryError, all_registries


def make_dist(root, dist, version, entry_points, modules):
    """Write an installed distribution (as pip leaves it) under ``root``."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[segkit.plugins]\n{eps}\n")
    files = []
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))
        files.append(f"{mod}.py,,")
    (info / "RECORD").write_text("\n".join(files) + "\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh site directory on sys.path; registries and plugin state restored afterwards."""
    saved = {n: (dict(r._obj_map), dict(r._provenance)) for n, r in all_registries().items()}
    import_builtins()  # built-ins first, as segkit.load_components does
    saved_records, saved_flag = dict(plugins._RECORDS), plugins._LOADED_ONCE
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    plugins._reset_for_tests()
    yield tmp_path
    for n, r in all_registries().items():
        r._obj_map.clear(), r._obj_map.update(saved[n][0])
        r._provenance.clear(), r._provenance.update(saved[n][1])
    plugins._RECORDS.clear(), plugins._RECORDS.update(saved_records)
    plugins._LOADED_ONCE = saved_flag


def _uid():
    return "m" + uuid.uuid4().hex[:8]


def _head_module(name):
    return f"""
    from segkit.registry import HEAD_REGISTRY
    @HEAD_REGISTRY.register(name="{name}")
    def build(cfg, input_shape):
        return None
    """


def test_example_plugin_is_installed_and_attributed():
    # Installed by the README's test command and by .ci/run.
    try:
        importlib.metadata.distribution("segkit-example-plugin")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("segkit-example-plugin is not installed: pip install -e plugins/segkit-example-plugin")
    load_components()  # what every entry point (load_config, get_cfg, tools, Predictor) calls
    prov = HEAD_REGISTRY.provenance("LightDecoderHead")
    assert prov.kind == "plugin"
    assert prov.distribution == "segkit-example-plugin" and prov.version == "0.1.0"
    assert prov.entry_point == "example = segkit_example_plugin"
    cfg = get_cfg()
    assert cfg.MODEL.LIGHT_DECODER.CHANNELS == 64


def test_module_and_callable_entry_points_load_with_provenance(site):
    mod_a, mod_b, name_a, name_b = _uid(), _uid(), _uid(), _uid()
    make_dist(site, "dist-a", "1.2.3", {"a": mod_a}, {mod_a: _head_module(name_a)})
    make_dist(site, "dist-b", "4.5", {"b": f"{mod_b}:register"}, {mod_b: f"""
        from segkit.registry import HEAD_REGISTRY
        def register():
            HEAD_REGISTRY.register(lambda cfg, s: None, name="{name_b}")
        """})
    records = {r.name: r for r in plugins.load_plugins()}
    assert records["a"].status == "loaded" and records["b"].status == "loaded"
    pa, pb = HEAD_REGISTRY.provenance(name_a), HEAD_REGISTRY.provenance(name_b)
    assert (pa.kind, pa.distribution, pa.version) == ("plugin", "dist-a", "1.2.3")
    assert (pb.kind, pb.distribution, pb.version) == ("plugin", "dist-b", "4.5")
    assert pb.entry_point == f"b = {mod_b}:register"
    # Loading again does nothing new (plugins load once).
    assert [r.status for r in plugins.load_plugins() if r.name in "ab"] == ["loaded", "loaded"]


def test_broken_plugin_raises_naming_distribution_and_entry_point(site):
    mod = _uid()
    make_dist(site, "broken-dist", "0.9", {"broken": mod}, {mod: "raise RuntimeError('boom at import')"})
    with pytest.raises(plugins.PluginError) as info:
        plugins.load_plugins()
    msg = str(info.value)
    assert "broken-dist 0.9" in msg and f"broken = {mod}" in msg and "boom at import" in msg
    assert isinstance(info.value.__cause__, RuntimeError)


def test_broken_plugin_warns_and_is_skipped_when_asked(site):
    mod, good, name = _uid(), _uid(), _uid()
    make_dist(site, "broken-dist", "0.9", {"broken": mod}, {mod: "import not_a_real_module_xyz"})
    make_dist(site, "good-dist", "1.0", {"good": good}, {good: _head_module(name)})
    with pytest.warns(RuntimeWarning, match="broken-dist 0.9"):
        records = {r.name: r for r in plugins.load_plugins(on_error="warn")}
    assert records["broken"].status == "failed" and "ModuleNotFoundError" in records["broken"].error
    assert records["good"].status == "loaded" and name in HEAD_REGISTRY


def test_two_plugins_registering_one_name_raise_naming_both(site):
    m1, m2, name = _uid(), _uid(), _uid()
    make_dist(site, "first-dist", "1.0", {"p1": m1}, {m1: _head_module(name)})
    make_dist(site, "second-dist", "2.0", {"p2": m2}, {m2: _head_module(name)})
    with pytest.raises(plugins.PluginError) as info:
        plugins.load_plugins()
    cause = info.value.__cause__
    assert isinstance(cause, RegistryError)
    assert "first-dist 1.0" in str(cause) and "second-dist 2.0" in str(cause)


def test_plugin_reusing_a_builtin_name_fails_clearly(site):
    mod = _uid()
    make_dist(site, "clash-dist", "1.0", {"clash": mod}, {mod: """
        from segkit.registry import CONFIG_REGISTRY
        @CONFIG_REGISTRY.register(name="add_light_decoder_config")
        def f(cfg):
            pass
        """})
    with pytest.raises(plugins.PluginError, match="clash-dist 1.0") as info:
        plugins.load_plugins()
    assert "segkit-example-plugin 0.1.0" in str(info.value.__cause__)


def test_disable_switch_turns_autoload_off(site, monkeypatch):
    mod, name = _uid(), _uid()
    make_dist(site, "off-dist", "1.0", {"off": mod}, {mod: _head_module(name)})
    monkeypatch.setenv("SEGKIT_DISABLE_PLUGINS", "1")
    load_components()  # what every entry point calls
    assert name not in HEAD_REGISTRY
    assert mod not in sys.modules
    assert {r.name: r.status for r in plugins.plugin_records()}["off"] == "disabled"
    # Explicit loading (as tools do) still works.
    plugins.load_plugins(["off"])
    assert name in HEAD_REGISTRY


def test_allow_list_loads_only_named_plugins(site, monkeypatch):
    m1, m2, n1, n2 = _uid(), _uid(), _uid(), _uid()
    make_dist(site, "wanted-dist", "1.0", {"wanted": m1}, {m1: _head_module(n1)})
    make_dist(site, "unwanted-dist", "1.0", {"unwanted": m2}, {m2: _head_module(n2)})
    monkeypatch.setenv("SEGKIT_PLUGINS", "wanted")
    load_components()
    assert n1 in HEAD_REGISTRY and n2 not in HEAD_REGISTRY
    status = {r.name: r.status for r in plugins.plugin_records()}
    assert status["wanted"] == "loaded" and status["unwanted"] == "skipped"
    assert m2 not in sys.modules


def test_allow_list_accepts_distribution_names(site):
    m1, n1 = _uid(), _uid()
    make_dist(site, "by-dist-name", "1.0", {"ep": m1}, {m1: _head_module(n1)})
    plugins.load_plugins(["by-dist-name"])
    assert n1 in HEAD_REGISTRY


def test_plugin_config_keys_validate_only_when_loaded(site, tmp_path):
    mod = _uid()
    make_dist(site, "cfg-dist", "1.0", {"cfgp": mod}, {mod: """
        from segkit.config import CfgNode
        from segkit.registry import CONFIG_REGISTRY
        @CONFIG_REGISTRY.register(name="add_zeta")
        def add_zeta(cfg):
            cfg.ZETA = CfgNode()
            # plugin key
            cfg.ZETA.SIZE = 3
        """})
    yaml_file = tmp_path / "uses_zeta.yaml"
    yaml_file.write_text("PLUGINS:\n  ALLOW: [cfgp]\nZETA:\n  SIZE: 5\n")
    from segkit.config import load_config

    cfg = load_config(str(yaml_file))
    assert cfg.ZETA.SIZE == 5
    assert cfg.PLUGINS.ALLOW == ["cfgp"]


def test_config_with_plugin_key_fails_without_the_plugin(tmp_path):
    yaml_file = tmp_path / "needs_plugin.yaml"
    yaml_file.write_text("ZETA_MISSING:\n  SIZE: 5\n")
    cfg = get_cfg()
    with pytest.raises(ConfigError, match=r"unknown config key 'ZETA_MISSING'.*plugin"):
        cfg.merge_from_file(str(yaml_file))
