"""The issue's acceptance path: a checkpoint written by tools/train_net.py goes through the
Predictor and both exports with matching outputs."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import segkit
from segkit.config import load_config
from segkit.data import DatasetCatalog
from segkit.export import ExportedSegmenter, check_parity, export
from segkit.predictor import read_image

ROOT = os.path.join(os.path.dirname(__file__), "..")
CONFIG = os.path.join(ROOT, "examples", "embed_segmenter", "tiny_fcn.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_net")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", CONFIG,
           "OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2",
           "DATASETS.TEST", "[]", "SOLVER.LOG_PERIOD", "1", "DATASETS.FASHION_SCENES.NUM_TRAIN", "16"]
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = out / "model_final.pth"
    assert weights.is_file()
    return load_config(CONFIG, ["MODEL.DEVICE", "cpu"]), str(weights), out


def test_train_net_checkpoint_through_predictor_and_exports(trained):
    cfg, weights, out = trained
    assert torch.load(weights, weights_only=True)["iteration"] in (1, 2)  # engine's counting convention
    val = [read_image(r["file_name"], "RGB") for r in DatasetCatalog.get("fashion_scenes_val")[:2]]
    images = val + [np.ascontiguousarray(val[0][10:90, 3:120])]
    predictor = segkit.Predictor(cfg, weights=weights)
    expected = predictor(images, return_probs=True)
    for fmt in ("onnx", "torchscript"):
        path = export(cfg, weights, fmt, str(out / f"model_{fmt}"), with_probs=True)
        report = check_parity(cfg, weights, path, images)
        assert report.pixel_agreement == 1.0 and report.max_prob_diff < 1e-4, (fmt, report)
        seg = ExportedSegmenter(path)
        for img, exp in zip(images, expected):
            got = seg(img)
            np.testing.assert_array_equal(got["labels"], exp.labels)
            np.testing.assert_allclose(got["probs"], exp.probs, atol=1e-4)
