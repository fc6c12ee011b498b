"""examples/embed_segmenter runs end to end: demo checkpoint -> export -> downstream program."""
import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch

import segkit
from segkit.config import load_config
from segkit.data import DatasetCatalog
from segkit.engine.checkpoint import load_model_weights
from segkit.export import export
from segkit.modeling import build_model

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "embed_segmenter")
CONFIG = os.path.join(EXAMPLE, "tiny_fcn.yaml")


def _perturb(v, head):
    """Relative noise in the backbone (keeps activation scales), absolute in the young classifier."""
    std = float(v.std()) if v.numel() > 1 else 0.0
    return v + torch.randn_like(v) * (0.2 * std if std > 0 and not head else 0.1)


def _example(name):
    return runpy.run_path(os.path.join(EXAMPLE, name))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("example")
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    # Two real SGD steps, then a seeded perturbation so that several classes appear
    # (two steps of training still predict background everywhere).
    ckpt = _example("make_demo_checkpoint.py")["make_demo_checkpoint"](
        str(tmp / "trained.pth"), CONFIG, iters=2, opts=["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2",
                                             "DATASETS.FASHION_SCENES.NUM_TRAIN", "16"])
    state = torch.load(ckpt, weights_only=True)
    torch.manual_seed(0)
    state["model"] = {k: (_perturb(v, k.startswith("head.")) if v.is_floating_point() and "running" not in k else v)
                      for k, v in state["model"].items()}
    weights = str(tmp / "model_final.pth")
    torch.save(state, weights)
    images = [r["file_name"] for r in DatasetCatalog.get("fashion_scenes_val")[:3]]
    onnx_path = export(cfg, weights, "onnx", str(tmp / "model.onnx"))
    ts_path = export(cfg, weights, "torchscript", str(tmp / "model.ts"))
    return cfg, ckpt, weights, images, onnx_path, ts_path, tmp


def _expected_areas(cfg, weights, images):
    from PIL import Image

    pred = segkit.Predictor(cfg, weights=weights)
    out = {}
    for path in images:
        labels = pred(np.asarray(Image.open(path).convert("RGB")), format="RGB").labels
        counts = np.bincount(labels.ravel(), minlength=11) / labels.size
        out[path] = {pred.class_names[k]: counts[k] for k in np.flatnonzero(counts)}
    return out


def _assert_areas_match(got, expected):
    assert list(got) == list(expected)
    for path in expected:
        assert set(got[path]) == set(expected[path]), path
        for name, frac in expected[path].items():
            assert got[path][name] == pytest.approx(frac, abs=1e-3)
        assert sum(got[path].values()) == pytest.approx(1.0)


def test_demo_checkpoint_is_trained_and_loadable(setup):
    cfg, ckpt, *_ = setup
    state = torch.load(ckpt, weights_only=True)
    assert state["iteration"] == 2
    model = build_model(cfg)
    load_model_weights(model, ckpt)
    scores = [v for k, v in state["model"].items() if k.startswith("head.") and k.endswith("weight")]
    assert scores and any(float(v.abs().sum()) > 0 for v in scores)  # FCN scores start at zero: training moved them


def test_onnx_bundle_without_segkit(setup):
    cfg, _, weights, images, onnx_path, _, tmp = setup
    out_json, masks = tmp / "areas_onnx.json", tmp / "masks"
    # The downstream program must not need segkit: block its import.
    code = (
        "import sys, runpy; sys.modules['segkit'] = None; "
        f"sys.argv = ['segment_images.py', '--bundle', {onnx_path!r}, *{images!r}, '--json', {str(out_json)!r}, "
        f"'--save-dir', {str(masks)!r}]; runpy.run_path({os.path.join(EXAMPLE, 'segment_images.py')!r}, run_name='__main__')"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "background" in proc.stdout and " %" in proc.stdout
    got = json.loads(out_json.read_text())
    expected = _expected_areas(cfg, weights, images)
    _assert_areas_match(got, expected)
    assert max(len(v) for v in expected.values()) > 1  # a non-trivial segmentation
    from PIL import Image

    mask = Image.open(masks / (os.path.splitext(os.path.basename(images[0]))[0] + ".png"))
    assert mask.mode == "P" and mask.size == (128, 128)


@pytest.mark.parametrize("mode", ["torchscript", "predictor"])
def test_other_embeddings_give_the_same_areas(setup, mode, capsys):
    cfg, _, weights, images, _, ts_path, tmp = setup
    out_json = tmp / f"areas_{mode}.json"
    main = _example("segment_images.py")["main"]
    source = ["--bundle", ts_path] if mode == "torchscript" else [
        "--config-file", CONFIG, "--weights", weights, "--opts", "MODEL.DEVICE", "cpu"]
    assert main([*images, *source, "--json", str(out_json)]) == 0
    _assert_areas_match(json.loads(out_json.read_text()), _expected_areas(cfg, weights, images))


def test_cli_requires_exactly_one_source():
    main = _example("segment_images.py")["main"]
    with pytest.raises(SystemExit):
        main(["a.jpg"])
