"""Issue 11, "done when": a plugin written only from the docs, installed with pip, used end to end.

The plugin is built exactly as README.md "Writing a plugin" and docs/writing_components.md
say: a folder with the README's ``pyproject.toml`` (entry point in group ``segkit.plugins``)
and a package holding a copy of every file of ``examples/writing_components/`` (one
component of each registry kind), imported by the package's ``__init__.py``. pip installs
it (offline, ``--target``) into a folder that is put first on ``PYTHONPATH`` of every
subprocess, which then runs only segkit's own commands: ``segkit list``,
``tools/train_net.py`` (train, then ``--eval-only``), ``tools/export_model.py --verify``
to ONNX, and ``segkit.testing.check_component`` on every component the plugin registered.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "writing_components")
DIST, VERSION, PACKAGE, ENTRY_POINT = "my-seg-plugin", "0.1.0", "my_seg_plugin", "my_plugin"
# What each example registers, by registry (the names a user writes in YAML).
COMPONENTS = {
    "CONFIG_REGISTRY": "add_tiny_conv_config", "BACKBONE_REGISTRY": "TinyConvBackbone",
    "HEAD_REGISTRY": "SimpleHead", "META_ARCH_REGISTRY": "PlainSegmentor", "LOSS_REGISTRY": "SoftDiceLoss",
    "TRANSFORM_REGISTRY": "RandomPadBottom", "POSTPROCESSOR_REGISTRY": "Sharpen",
    "DATASET_REGISTRY": "squares_train", "EVALUATOR_REGISTRY": "PixelAccuracyEvaluator",
    "HOOK_REGISTRY": "StepCounterHook", "OPTIMIZER_REGISTRY": "RMSprop", "LR_SCHEDULER_REGISTRY": "LinearDecayLR",
}

# Runs in the subprocess environment: every component the plugin registered goes through
# segkit.testing.check_component, with the config file the user trains with.
KIT_SCRIPT = r"""
import json, sys
from segkit.config import load_config
from segkit.registry import all_registries
from segkit.testing import check_component

dist, config_file, data_root = sys.argv[1:4]
cfg = load_config(config_file)  # loads the plugins, as every entry point does
checked = {}
for reg_name, registry in all_registries().items():
    for name, _obj, prov in registry.entries():
        if prov.distribution != dist:
            continue
        kind = registry.name
        arg = {"TRANSFORM": {"max_pad": 4}, "DATASET": data_root}.get(kind, cfg.clone())
        extra = {"onnx": True} if kind == "META_ARCH" else {}
        check_component(registry, name, arg, **extra)
        checked[reg_name] = checked.get(reg_name, []) + [name]
print("KIT " + json.dumps(checked))
"""


def _build_plugin(tmp_path):
    """The README's folder layout and pyproject.toml; the package is the docs' example files."""
    folder = tmp_path / DIST
    package = folder / PACKAGE
    package.mkdir(parents=True)
    modules = sorted(f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py") and f != "__init__.py")
    for module in modules:
        shutil.copy(os.path.join(EXAMPLES, f"{module}.py"), package / f"{module}.py")
    (package / "__init__.py").write_text(
        '"""One component of each kind, from docs/writing_components.md."""\n'
        + "".join(f"from {PACKAGE} import {m}  # noqa: F401\n" for m in modules))
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    (pyproject,) = re.findall(r"```toml\n# pyproject.toml\n(.*?)```", readme, flags=re.S)
    assert f'name = "{DIST}"' in pyproject and f'{ENTRY_POINT} = "{PACKAGE}"' in pyproject, pyproject
    (folder / "pyproject.toml").write_text(pyproject)
    return folder, modules


def _run(args, env, cwd, timeout=300):
    run = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"{args}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout + run.stderr


def test_plugin_from_the_docs_installs_lists_trains_evaluates_exports_and_conforms(tmp_path):
    folder, modules = _build_plugin(tmp_path)
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
          "-q", "--target", str(site), str(folder)], dict(os.environ), str(tmp_path))
    installed = {p.name for p in site.iterdir()}
    assert PACKAGE in installed and f"{PACKAGE}-{VERSION}.dist-info" in installed, installed

    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1", SEGKIT_CACHE=str(tmp_path / "cache"))
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(site), ROOT, *rest])
    work = tmp_path / "work"
    work.mkdir()  # an unrelated folder: nothing is found through the current directory

    # segkit list: every example component, attributed to the installed distribution.
    listing = _run([sys.executable, "-m", "segkit.cli", "list"], env, str(work))
    for registry, name in COMPONENTS.items():
        lines = [l for l in listing.splitlines() if re.search(rf"\b{re.escape(name)}\b", l)]
        assert lines, f"{registry} {name} missing from segkit list:\n{listing}"
        assert any(f"plugin: {DIST} {VERSION} ({PACKAGE}." in l and f"entry point '{ENTRY_POINT} = {PACKAGE}'" in l
                   for l in lines), (registry, lines)
    assert any(l.split()[:2] == [ENTRY_POINT, "loaded"] for l in map(str.strip, listing.splitlines())), listing

    # Data for the plugin's dataset, written by the plugin's own helper.
    data = tmp_path / "data"
    _run([sys.executable, "-c", f"from {PACKAGE}.dataset import make_squares; make_squares({str(data)!r}, count=4)"],
         env, str(work))

    # A YAML file using one plugin component of each kind.
    out = tmp_path / "out"
    config = {
        "MODEL": {
            "META_ARCHITECTURE": "PlainSegmentor", "NUM_CLASSES": 2, "DEVICE": "cpu",
            "BACKBONE": {"NAME": "TinyConvBackbone"}, "TINY_CONV": {"WIDTH": 4},
            "HEAD": {"NAME": "SimpleHead", "IN_FEATURES": ["s4"]},
            "LOSS": {"TERMS": [{"NAME": "CrossEntropy"},
                               {"NAME": "SoftDiceLoss", "WEIGHT": 0.5, "ARGS": {"SMOOTH": 1.0}}]},
            "HDC": {"GRIDDING_CHECK": "off"},
        },
        "DATASETS": {"TRAIN": ["squares_train"], "TEST": ["squares_train"], "ROOT": str(data)},
        "INPUT": {"TRAIN_TRANSFORMS": [{"NAME": "RandomPadBottom", "ARGS": {"max_pad": 4}}], "TEST_TRANSFORMS": []},
        "SOLVER": {"OPTIMIZER": "RMSprop", "LR_SCHEDULER_NAME": "LinearDecayLR", "MAX_ITER": 3, "IMS_PER_BATCH": 2,
                   "BASE_LR": 0.001, "EXTRA_HOOKS": ["StepCounterHook"], "LOG_PERIOD": 1, "CHECKPOINT_PERIOD": 100,
                   "WARMUP_ITERS": 0},
        "POSTPROCESS": {"CHAIN": ["Sharpen"]},
        "TEST": {"EVALUATOR": "PixelAccuracyEvaluator", "EVAL_PERIOD": 0, "BEST_METRIC": "", "VIS_NUM_IMAGES": 0},
        "DATALOADER": {"NUM_WORKERS": 0},
    }
    config_file = tmp_path / "plugin.yaml"
    config_file.write_text(yaml.safe_dump(config))

    # Train through tools/train_net.py; metrics finite, the plugin's keys saved with the run.
    train_log = _run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", str(config_file),
                      "OUTPUT_DIR", str(out)], env, str(work))
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["MODEL"]["TINY_CONV"]["WIDTH"] == 4 and saved["MODEL"]["BACKBONE"]["NAME"] == "TinyConvBackbone"
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    losses = [m for m in metrics if "loss_soft_dice_loss" in m and "loss_cross_entropy" in m]
    assert {m["iteration"] for m in losses} >= {0, 1, 2}, metrics
    assert all(math.isfinite(v) for m in metrics for v in m.values() if isinstance(v, float)), metrics
    assert (out / "model_final.pth").is_file(), train_log

    # Evaluate the checkpoint with the plugin's evaluator (post-processor in the chain).
    eval_log = _run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", str(config_file),
                     "--eval-only", "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", str(out / "model_final.pth")],
                    env, str(work))
    (results,) = [json.loads(l.split("Evaluation results: ", 1)[1]) for l in eval_log.splitlines()
                  if "Evaluation results: " in l]
    accuracy = [r["pAcc"] for r in results.values()]
    assert accuracy and all(0.0 <= a <= 100.0 for a in accuracy), results

    # Export to ONNX; --verify compares the file with PyTorch on the dataset's images.
    export_log = _run([sys.executable, os.path.join(ROOT, "tools", "export_model.py"), "--config-file",
                       str(config_file), "--weights", str(out / "model_final.pth"), "--format", "onnx",
                       "--output", str(tmp_path / "exported"), "--with-probs", "--verify", "--verify-images", "2"],
                      env, str(work))
    assert (tmp_path / "exported" / "model.onnx").stat().st_size > 0
    parity = re.search(r"pixel agreement ([0-9.]+), max \|prob diff\| ([0-9.e+-]+)", export_log)
    assert parity, export_log[-3000:]
    assert float(parity.group(1)) >= 0.999 and float(parity.group(2)) < 1e-4, parity.group(0)
    # Independent oracle for --eval-only: the exported file's labels scored by hand against
    # the masks (the evaluator scores argmax; Sharpen keeps it, so the two must agree).
    session = ort.InferenceSession(str(tmp_path / "exported" / "model.onnx"))
    correct = total = 0
    for name in sorted(os.listdir(data / "squares" / "images")):
        image = np.asarray(Image.open(data / "squares" / "images" / name).convert("RGB"))
        mask = np.asarray(Image.open(data / "squares" / "masks" / name))
        (labels,) = session.run(["labels"], {"image": image[None]})
        valid = mask != 255
        correct, total = correct + int((labels[0][valid] == mask[valid]).sum()), total + int(valid.sum())
    assert accuracy == [pytest.approx(100.0 * correct / total, abs=1e-6)], (accuracy, correct, total)

    # segkit.testing on every component the installed plugin registered.
    kit_log = _run([sys.executable, "-c", KIT_SCRIPT, DIST, str(config_file), str(data)], env, str(work))
    checked = json.loads(kit_log.split("KIT ", 1)[1].splitlines()[0])
    assert {r.replace("_REGISTRY", ""): [n] for r, n in COMPONENTS.items()} == checked, checked
