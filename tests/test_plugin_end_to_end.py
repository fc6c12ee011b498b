"""The example plugin, installed with pip, used from YAML through tools/train_net.py."""
import json
import os
import pathlib
import subprocess
import sys
from importlib import metadata

import pytest

try:
    metadata.distribution("segkit-example-plugin")
    HAVE_PLUGIN = True
except metadata.PackageNotFoundError:
    HAVE_PLUGIN = False
# Entry points exist only for an installed distribution (the README's set-up command
# installs it: pip install -e ".[dev]" -e plugins/segkit-example-plugin).
pytestmark = pytest.mark.skipif(
    not HAVE_PLUGIN, reason="segkit-example-plugin is not installed (pip install -e plugins/segkit-example-plugin)"
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "plugins" / "segkit-example-plugin" / "configs" / "light_decoder_fashion_scenes.yaml"


def test_listing_shows_the_plugin_with_its_distribution():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "list_components.py")],
                         capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if "LightDecoderHead" in l)
    assert "plugin: segkit-example-plugin 0.1.0" in line
    assert any(l.split()[:2] == ["example", "loaded"] for l in (s.strip() for s in out.splitlines()))


def test_plugin_config_builds_the_plugin_head():
    from segkit.config import load_config
    from segkit.modeling import build_model

    cfg = load_config(str(CONFIG), ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.LIGHT_DECODER.CHANNELS == 48
    model = build_model(cfg)
    assert type(model.head).__name__ == "LightDecoderHead"
    assert type(model.head).__module__ == "segkit_example_plugin.head"


def test_train_net_trains_with_the_plugin_head(tmp_path):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", SEGKIT_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file", str(CONFIG),
           "OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
           "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.WARMUP_ITERS", "0", "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0",
           "DATASETS.FASHION_SCENES.NUM_TRAIN", "16", "DATASETS.FASHION_SCENES.NUM_VAL", "4",
           "POSTPROCESS.CHAIN", "[]", "MODEL.DEVICE", "cpu"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "out"
    saved = (out / "config.yaml").read_text()
    assert "LightDecoderHead" in saved and "LIGHT_DECODER" in saved
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    assert any("total_loss" in m or any(k.startswith("loss_") for k in m) for m in metrics)
