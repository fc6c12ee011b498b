"""Issue 11: one extension contract. Each case of the issue's list, as a plugin author meets it."""
import json
import os
import subprocess
import sys
import textwrap

import albumentations as A
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkit import plugins
from segkit.config import CfgNode, configurable, get_cfg
from segkit.data.transforms import apply_transforms, build_transforms
from segkit.modeling.losses import build_loss
from segkit.postprocess import build_postprocessor_chain
from segkit.registry import LOSS_REGISTRY, POSTPROCESSOR_REGISTRY, TRANSFORM_REGISTRY
from segkit.testing import small_cfg
from test_plugins import make_dist, site  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def registered():
    """Register into a registry for one test only."""
    done = []

    def add(registry, obj, name):
        registry.register(obj, name=name)
        done.append((registry, name))
        return name

    yield add
    for registry, name in done:
        registry.unregister(name)


# ------------------------------------------------------------------ 1. losses as docs/losses_and_solver.md writes them
class DocsLoss(nn.Module):
    """'Writing a loss': a from_config classmethod, no @configurable."""

    def __init__(self, ignore_index: int = 255, scale: float = 1.0):
        super().__init__()
        self.ignore_index, self.scale = ignore_index, scale

    @classmethod
    def from_config(cls, cfg, **args):
        return {"ignore_index": cfg.MODEL.IGNORE_VALUE, **args}

    def forward(self, logits, target):
        return self.scale * F.cross_entropy(logits, target, ignore_index=self.ignore_index)


class PlainLoss(nn.Module):
    """No from_config: gets its ARGS only."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)

    def forward(self, logits, target):
        return self.scale * F.cross_entropy(logits, target, ignore_index=255)


def _loss_case():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[:, 0] = 255
    return logits, target, F.cross_entropy(logits, target, ignore_index=255)


def test_docs_loss_from_config_without_configurable_is_called(registered):
    name = registered(LOSS_REGISTRY, DocsLoss, "_DocsLoss")
    cfg = small_cfg()
    cfg.MODEL.LOSS.TERMS = [{"NAME": name, "ARGS": {"SCALE": 2.0}}]
    logits, target, ce = _loss_case()
    term = build_loss(cfg).terms["_docs_loss"]
    assert term.ignore_index == 255 and term.scale == 2.0  # from_config ran; no CfgNode anywhere
    assert torch.allclose(build_loss(cfg)(logits, target)["loss__docs_loss"], 2.0 * ce)


@pytest.mark.parametrize("args,factor", [({}, 1.0), ({"SCALE": 3.0}, 3.0)])
def test_plain_loss_gets_its_args_never_the_config(registered, args, factor):
    name = registered(LOSS_REGISTRY, PlainLoss, "_PlainLoss")
    cfg = small_cfg()
    cfg.MODEL.LOSS.TERMS = [{"NAME": name, "ARGS": args}]
    logits, target, ce = _loss_case()
    assert torch.allclose(build_loss(cfg)(logits, target)["loss__plain_loss"], factor * ce)


# ------------------------------------------------------------------ 2. a post-processor in the README's pattern
class Sharpen:
    """@configurable + from_config returning keyword arguments."""

    @configurable
    def __init__(self, power: float = 2.0):
        self.power = power

    @classmethod
    def from_config(cls, cfg):
        return {"power": 3.0}

    def __call__(self, probs, images):
        p = probs ** self.power
        return p / p.sum(1, keepdim=True)


def test_configurable_postprocessor_is_an_instance_in_the_chain(registered):
    name = registered(POSTPROCESSOR_REGISTRY, Sharpen, "_Sharpen")
    cfg = small_cfg()
    cfg.POSTPROCESS.CHAIN = [name]
    chain = build_postprocessor_chain(cfg)
    assert isinstance(chain.steps[0], Sharpen) and chain.steps[0].power == 3.0
    probs = torch.tensor([0.6, 0.4]).view(1, 2, 1, 1)
    out = chain(probs, torch.zeros(1, 3, 1, 1, dtype=torch.uint8))
    assert torch.allclose(out.flatten(), torch.tensor([0.216, 0.064]) / 0.28)


def test_densecrf_and_segmentor_build_from_a_config():
    from segkit.modeling import SemanticSegmentor
    from segkit.postprocess.dense_crf import DenseCRF

    cfg = small_cfg()
    cfg.POSTPROCESS.CRF.ITERATIONS = 3
    cfg.POSTPROCESS.CRF.W1 = 7.0
    crf = DenseCRF(cfg)  # used to be accepted and fail at the first image
    assert crf.params.iterations == 3 and crf.params.w1 == 7.0 and crf.backend == cfg.POSTPROCESS.CRF.BACKEND
    assert isinstance(DenseCRF.from_config(cfg), dict)
    model = SemanticSegmentor(cfg)  # the META_ARCH docstring's promise; used to be a TypeError
    assert model.num_classes == cfg.MODEL.NUM_CLASSES and model.backbone.output_shape()["res5"].stride == 8


# ------------------------------------------------------------------ 3. a plugin DualTransform with its own fill_mask
class PadBottom(A.DualTransform):
    """Pads the bottom; its own fill_mask default is 0, a real class."""

    def __init__(self, pad: int = 4, fill_mask: int = 0, p: float = 1.0):
        super().__init__(p=p)
        self.pad, self.fill_mask = pad, fill_mask

    def apply(self, img, **params):
        return np.pad(img, ((0, self.pad), (0, 0), (0, 0)))

    def apply_to_mask(self, mask, **params):
        return np.pad(mask, ((0, self.pad), (0, 0)), constant_values=self.fill_mask)

    def get_transform_init_args_names(self):
        return ("pad", "fill_mask")


class HiddenFill(PadBottom):
    """Sets fill_mask itself without taking it as an argument."""

    def __init__(self, pad: int = 4, p: float = 1.0):
        super().__init__(pad=pad, fill_mask=0, p=p)


@pytest.mark.parametrize("cls", [PadBottom, HiddenFill])
def test_plugin_transform_gets_the_ignore_value_for_its_mask_fill(registered, cls):
    name = registered(TRANSFORM_REGISTRY, cls, "_" + cls.__name__)
    pipe = build_transforms([{"NAME": name}], ignore_value=250)
    image, mask = np.zeros((6, 5, 3), np.uint8), np.full((6, 5), 3, np.uint8)
    _, out = apply_transforms(pipe, image, mask, seed=0)
    assert out.shape == (10, 5) and (out[6:] == 250).all() and (out[:6] == 3).all()
    # ARGS still win.
    _, out = apply_transforms(build_transforms([{"NAME": name, "ARGS": {"fill_mask": 3}}] if cls is PadBottom
                                               else [{"NAME": name}], ignore_value=250), image, mask, seed=0)
    assert (out[6:] == (3 if cls is PadBottom else 250)).all()


# ------------------------------------------------------------------ 4. built-ins first, always
def _run(code, env_extra=None, site_dir=None, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGKIT_") or k == "SEGKIT_CACHE"}
    path = [ROOT, os.path.join(ROOT, "plugins", "segkit-example-plugin")]
    env["PYTHONPATH"] = os.pathsep.join(([str(site_dir)] if site_dir else []) + path)
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_builtin_losses_are_registered_by_the_modeling_package_and_the_loader():
    out = _run("""
        import segkit.modeling
        from segkit.registry import LOSS_REGISTRY
        print(LOSS_REGISTRY.get("CrossEntropy").__name__)
        import segkit
        segkit.load_components()
        print(sorted(LOSS_REGISTRY.keys()))
    """).stdout.splitlines()
    assert out[0] == "CrossEntropy"
    assert {"CrossEntropy", "Dice", "Focal", "LovaszSoftmax", "OhemCrossEntropy"} <= set(eval(out[1]))


def test_plugin_loss_named_like_a_builtin_fails_at_listing_blaming_the_plugin(tmp_path):
    make_dist(tmp_path, "dice-dist", "2.0", {"dice": "dice_mod"}, {"dice_mod": """
        from torch import nn
        from segkit.registry import LOSS_REGISTRY
        @LOSS_REGISTRY.register(name="Dice")
        class Dice(nn.Module):
            pass
        """})
    proc = _run("from segkit.cli import main; main(['list', '--json'])", site_dir=tmp_path)
    listing = json.loads(proc.stdout)
    dice = [e for e in listing["registries"]["LOSS"] if e["name"] == "Dice"]
    assert dice == [{"name": "Dice", "kind": "builtin", "provenance": "builtin (segkit.modeling.losses.region)",
                     "distribution": None, "version": None}]
    record = {r["name"]: r for r in listing["plugins"]}["dice"]
    assert record["status"] == "failed" and "dice-dist 2.0" in record["error"] + str(record)
    assert "already registered in LOSS_REGISTRY by builtin (segkit.modeling.losses.region)" in record["error"]


# ------------------------------------------------------------------ 5. plugin switches from every entry point
def _marker_dist(site_dir, marker, body=""):
    mod = "marker_" + os.path.basename(str(site_dir)).replace("-", "_")  # fresh module name per test
    make_dist(site_dir, "marker-dist", "1.0", {"marker": mod}, {mod: f"""
        with open({str(marker)!r}, "a") as f:
            f.write("imported\\n")
        {body}
        """})


def _gridding_tool(site_dir):
    import runpy

    yaml_file = site_dir / "tiny.yaml"
    yaml_file.write_text("MODEL:\n  RESNETS: {DEPTH: 18, WIDTH: 8}\n")
    main = runpy.run_path(os.path.join(ROOT, "tools", "gridding.py"))["main"]
    return main(["--config", str(yaml_file)])


def _predictor(site_dir):
    import warnings

    import segkit

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no weights.*")  # an untrained model, on purpose
        return segkit.Predictor(small_cfg())


def _segkit_list(site_dir):
    from segkit.cli import main

    return main(["list"])


# In-process (a fresh plugin state per test, see test_plugins.site); `import segkit` in a fresh process below.
ENTRY_POINTS = {
    "load_config": lambda site_dir: __import__("segkit.config").config.load_config(),
    "get_cfg": lambda site_dir: get_cfg(),
    "segkit list": _segkit_list,
    "tools/gridding.py": _gridding_tool,
    "Predictor": _predictor,
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_disabled_plugins_are_never_imported(site, monkeypatch, tmp_path, entry):  # noqa: F811
    marker = tmp_path / "marker.txt"
    _marker_dist(site, marker, "raise RuntimeError('must not be imported')")
    monkeypatch.setenv("SEGKIT_DISABLE_PLUGINS", "1")
    ENTRY_POINTS[entry](site)
    assert not marker.exists()
    assert {r.name: r.status for r in plugins.plugin_records()}["marker"] == "disabled"


@pytest.mark.parametrize("entry", ["load_config", "segkit list", "Predictor"])
def test_allow_list_from_the_environment(site, monkeypatch, tmp_path, entry):  # noqa: F811
    marker = tmp_path / "marker.txt"
    _marker_dist(site, marker, "raise RuntimeError('must not be imported')")
    monkeypatch.setenv("SEGKIT_PLUGINS", "example")
    ENTRY_POINTS[entry](site)
    assert not marker.exists()
    assert {r.name: r.status for r in plugins.plugin_records()}["marker"] == "skipped"


@pytest.mark.parametrize("entry", ["load_config", "get_cfg", "tools/gridding.py", "Predictor"])
def test_plugin_errors_switch_from_every_entry_point(site, monkeypatch, tmp_path, entry):  # noqa: F811
    marker = tmp_path / "marker.txt"
    _marker_dist(site, marker, "raise RuntimeError('broken plugin')")
    with pytest.raises(plugins.PluginError, match=r"marker-dist 1\.0.*broken plugin"):
        ENTRY_POINTS[entry](site)
    plugins._reset_for_tests()
    monkeypatch.setenv("SEGKIT_PLUGIN_ERRORS", "warn")
    with pytest.warns(RuntimeWarning, match=r"marker-dist 1\.0.*skipped"):
        ENTRY_POINTS[entry](site)
    assert {r.name: r.status for r in plugins.plugin_records()}["marker"] == "failed"


def test_segkit_list_reports_a_broken_plugin_and_obeys_the_switch(site, monkeypatch, tmp_path, capsys):  # noqa: F811
    marker = tmp_path / "marker.txt"
    _marker_dist(site, marker, "raise RuntimeError('broken plugin')")
    monkeypatch.setenv("SEGKIT_PLUGIN_ERRORS", "raise")  # wins over the listing's default 'warn'
    with pytest.raises(plugins.PluginError, match="marker-dist 1.0"):
        _segkit_list(site)


def test_environment_wins_over_the_config_keys(site, monkeypatch, tmp_path):  # noqa: F811
    from segkit.config import load_config

    marker = tmp_path / "marker.txt"
    _marker_dist(site, marker)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("PLUGINS:\n  ALLOW: [marker]\n")
    monkeypatch.setenv("SEGKIT_DISABLE_PLUGINS", "1")
    load_config(str(cfg_file))
    assert not marker.exists()
    monkeypatch.delenv("SEGKIT_DISABLE_PLUGINS")
    load_config(str(cfg_file))
    assert marker.read_text() == "imported\n"


def test_import_segkit_alone_imports_no_plugin(tmp_path):
    marker = tmp_path / "marker.txt"
    _marker_dist(tmp_path, marker)
    _run("""
        import segkit, segkit.registry, segkit.modeling, segkit.config, segkit.data, segkit.engine
        from segkit.registry import HEAD_REGISTRY
        assert "FCNHead" in HEAD_REGISTRY and "LightDecoderHead" not in HEAD_REGISTRY
        segkit.load_components()  # an entry point does load plugins
        assert "LightDecoderHead" in HEAD_REGISTRY
    """, site_dir=tmp_path)
    assert marker.read_text() == "imported\n"


@pytest.mark.parametrize("escape", ["import sys; sys.exit(3)", "raise KeyboardInterrupt"])
def test_exit_or_interrupt_in_a_plugin_import_is_a_plugin_error(site, escape):  # noqa: F811
    make_dist(site, "exit-dist", "0.3", {"quitter": "quitter_mod"}, {"quitter_mod": escape})
    with pytest.raises(plugins.PluginError, match=r"quitter.*exit-dist 0\.3") as info:
        plugins.load_plugins(on_error="warn")  # not skippable
    assert isinstance(info.value.__cause__, (SystemExit, KeyboardInterrupt))


def test_every_tool_loads_its_config_through_the_one_entry_point():
    # Each tool reads its config with load_config (or engine.defaults.setup, which calls it).
    tools = [f for f in os.listdir(os.path.join(ROOT, "tools")) if f.endswith(".py")]
    for tool in tools:
        src = open(os.path.join(ROOT, "tools", tool), encoding="utf-8").read()
        if f"from segkit.tools.{tool[:-3]} import" in src:  # a thin wrapper of the installed tool
            src = open(os.path.join(ROOT, "segkit", "tools", tool), encoding="utf-8").read()
        assert ("load_config(" in src or "segkit.engine.defaults import main" in src
                or "from segkit.cli import main" in src), tool


def test_config_keys_of_the_example_plugin_still_validate():
    cfg = get_cfg()
    assert isinstance(cfg.MODEL.LIGHT_DECODER, CfgNode)


# ------------------------------------------------------------------ 6. existing checkpoints keep loading
# sha1 of "key:shape" lines of build_model(cfg).state_dict(), recorded before the heads moved onto
# SegmentationHead and the registries onto the classes themselves (commit ca066d3).
STATE_DICT_FINGERPRINTS = {
    "voc/fcn8s_vgg16.yaml": (38, "81861c40c4cb8bc4203738f7636486344a00294d"),
    "voc/deeplab_v2_resnet101_aspp_l.yaml": (528, "12081b74208012156eea6985642c4162f5684e86"),
    "voc/refinenet_resnet101.yaml": (608, "aa57b75b182139d69b8a519d066715b56fdf31f3"),
    "voc/duc_hdc_resnet101.yaml": (528, "27fc7234e3018e3abfbcfdda4073651d2e5d87b5"),
}


@pytest.mark.parametrize("config", list(STATE_DICT_FINGERPRINTS))
def test_state_dict_keys_are_unchanged(config):
    import hashlib

    from segkit.config import load_config
    from segkit.modeling import build_model

    cfg = load_config(os.path.join(ROOT, "configs", config),
                      ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAINED", "", "MODEL.HDC.GRIDDING_CHECK", "off"])
    sd = build_model(cfg).state_dict()
    keys = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(sd.items()))
    assert (len(sd), hashlib.sha1(keys.encode()).hexdigest()) == STATE_DICT_FINGERPRINTS[config]


# ------------------------------------------------------------------ one construction path
def test_from_config_is_called_only_by_the_shared_helper():
    # Every from_config returns keyword arguments and only segkit.config.configurable calls it
    # (subclasses extend their parent's with super().from_config).
    import ast

    callers = []
    for folder, _dirs, files in os.walk(os.path.join(ROOT, "segkit")):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(folder, f)
            tree = ast.parse(open(path, encoding="utf-8").read())
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "from_config"
                        and not (isinstance(node.func.value, ast.Call) and getattr(node.func.value.func, "id", "")
                                 == "super")):
                    callers.append(os.path.relpath(path, ROOT))
    assert callers == [], callers


def test_mapper_and_inference_read_the_config_the_same_way():
    from segkit.data import DatasetMapper
    from segkit.postprocess.inference import SegmentationInference

    cfg = small_cfg()
    assert isinstance(DatasetMapper.from_config(cfg, False), dict)
    assert DatasetMapper(cfg, False).num_classes == cfg.MODEL.NUM_CLASSES
    model = nn.Conv2d(3, 5, 1)
    assert SegmentationInference.from_config(cfg, model)["model"] is model
    assert SegmentationInference(cfg, model).model is model


def test_registry_and_plugins_import_nothing_above_their_layer():
    # ARCHITECTURE.md layer 1: registries and plugin discovery import no other segkit module
    # (not even lazily), so a lookup never drags the library in.
    import ast

    allowed = {"segkit/registry.py": set(), "segkit/plugins.py": {"segkit", "segkit.registry"}}
    for path, ok in allowed.items():
        tree = ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segkit"):
                found.add(node.module if node.module != "segkit" else "segkit")
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("segkit")}
        assert found <= ok, (path, found - ok)
        assert "importlib.import_module" not in open(os.path.join(ROOT, path), encoding="utf-8").read()
