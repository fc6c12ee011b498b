"""The ``segkit`` command: env, eval --save-predictions, browse, plot, zoo, and flag parity with tools/."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from segkit.cli import TOOL_COMMANDS, main
from segkit.engine.prediction_writer import per_image_iou

from model_fixtures import perturbed_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "examples", "embed_segmenter", "tiny_fcn.yaml")
SMALL = ["DATASETS.FASHION_SCENES.NUM_TRAIN", "6", "DATASETS.FASHION_SCENES.NUM_VAL", "3", "MODEL.DEVICE", "cpu"]


@pytest.fixture(autouse=True)
def _restore_fashion_scenes_params():
    # Building data from a config re-points the built-in fashion_scenes_* datasets at its
    # DATASETS.FASHION_SCENES sizes (module state); later tests expect the defaults back.
    from segkit.data.datasets import fashion_scenes

    saved = fashion_scenes._BUILTIN.params
    yield
    fashion_scenes._BUILTIN.params = saved


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))


def _help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def _options(text):
    return sorted({w.rstrip(",]") for w in text.replace("[", " ").split() if w.startswith("--")})


@pytest.mark.parametrize("command,script", [("predict", "predict.py"), ("export", "export_model.py"),
                                            ("benchmark", "benchmark.py"), ("analyze", "analyze_model.py"),
                                            ("stats", "dataset_stats.py"), ("crf-search", "crf_search.py"),
                                            ("gridding", "gridding.py"), ("train", "train_net.py")])
def test_commands_have_the_tools_flags(command, script, capsys):
    ours = _options(_help([command, "--help"], capsys))
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    theirs = subprocess.run([sys.executable, os.path.join(ROOT, "tools", script), "--help"], env=env,
                            capture_output=True, text=True, check=True, timeout=120).stdout
    assert ours == _options(theirs) and "--help" in ours and len(ours) > 2
    assert f"segkit {command}" in _help([command, "--help"], capsys)


def test_top_level_help_lists_every_command(capsys):
    out = _help(["--help"], capsys)
    for name in [*TOOL_COMMANDS, "list"]:
        assert name in out
    assert {"train", "eval", "predict", "export", "benchmark", "analyze", "list", "env", "browse", "plot"} <= {
        *TOOL_COMMANDS, "list"}


def test_env_reports_versions_devices_and_plugins(capsys):
    import cv2
    import torchvision

    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    rows = dict(env["rows"])
    assert rows["torch"] == torch.__version__ and rows["torchvision"] == torchvision.__version__
    assert rows["OpenCV"] == cv2.__version__ and rows["Python"].startswith(sys.version.split()[0])
    assert rows["CUDA available"] == str(torch.cuda.is_available())
    for key in ("albumentations", "pydensecrf", "onnxruntime", "cuDNN", "CUDA (torch built with)",
                "torch threads (intra / inter op)", "segkit configs"):
        assert key in rows
    assert rows["torch threads (intra / inter op)"].startswith(f"{torch.get_num_threads()} /")
    example = [p for p in env["plugins"] if p["name"] == "example"]
    assert example and example[0]["distribution"] == "segkit-example-plugin" and example[0]["status"] == "loaded"
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    assert "onnxruntime" in text and "segkit-example-plugin 0.1.0" in text


def test_per_image_iou_by_hand():
    pred = np.array([[0, 0, 1], [1, 2, 2]])
    target = np.array([[0, 1, 1], [1, 2, 255]])
    r = per_image_iou(pred, target, num_classes=4, ignore_value=255)
    # class 0: inter 1, union 2; class 1: inter 2, union 3; class 2: inter 1, union 1; class 3 absent.
    assert r["iou"] == [pytest.approx(0.5), pytest.approx(2 / 3), pytest.approx(1.0), None]
    assert r["mIoU"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert r["pixel_acc"] == pytest.approx(4 / 5)


def test_eval_save_predictions_matches_the_evaluator(tmp_path, cache):
    from PIL import Image

    from segkit.config import load_config
    from segkit.data import DatasetCatalog

    cfg = load_config(CONFIG, SMALL)
    weights = perturbed_checkpoint(cfg, tmp_path / "w.pth")
    preds = tmp_path / "preds"
    assert main(["eval", "--config-file", CONFIG, "--save-predictions", str(preds), *SMALL,
                 "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path / "out"), "POSTPROCESS.CHAIN", "[]"]) == 0
    saved = json.loads((tmp_path / "out" / "inference" / "sem_seg_evaluation_fashion_scenes_val.json").read_text())
    folder = preds / "fashion_scenes_val"
    records = DatasetCatalog.get("fashion_scenes_val")
    assert len(records) == 3
    # The confusion matrix rebuilt from the written PNGs equals the evaluator's.
    matrix = np.zeros((11, 11), dtype=np.int64)
    for r in records:
        stem = os.path.splitext(os.path.basename(r["file_name"]))[0]
        label = np.asarray(Image.open(folder / "sem_seg" / f"{stem}.png"))
        gt = np.asarray(Image.open(r["sem_seg_file_name"]))
        assert label.shape == gt.shape
        assert Image.open(folder / "sem_seg" / f"{stem}_overlay.jpg").size == (gt.shape[1], gt.shape[0])
        valid = gt != 255
        np.add.at(matrix, (gt[valid].astype(np.int64), label[valid].astype(np.int64)), 1)
    assert matrix.tolist() == saved["confusion_matrix"]["sem_seg"]
    with open(folder / "per_image_iou.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and [float(r["mIoU"]) for r in rows] == sorted(float(r["mIoU"]) for r in rows)
    assert {r["variant"] for r in rows} == {"sem_seg"} and "IoU/Ankle boot" in rows[0]


def test_browse_writes_loader_images_with_masks(tmp_path, cache):
    from segkit.config import load_config
    from segkit.tools.browse import iterate_samples

    out = tmp_path / "plain"
    assert main(["browse", "--config-file", CONFIG, "--num", "2", "--dataset", "fashion_scenes_val",
                 "--output", str(out), *SMALL]) == 0
    files = sorted(os.listdir(out))
    assert len(files) == 2 and files[0].startswith("0000_val_000000")
    import cv2

    panel = cv2.imread(str(out / files[0]))[..., ::-1]
    cfg = load_config(CONFIG, SMALL)
    image, labels, _ = next(iterate_samples(cfg, "fashion_scenes_val", augmented=False))
    scale = int(np.ceil(160 / image.shape[0]))
    tile = panel[18 : 18 + image.shape[0] * scale : scale, : image.shape[1] * scale : scale]
    np.testing.assert_array_equal(tile, image)  # the first tile is the image as loaded
    aug = tmp_path / "aug"
    assert main(["browse", "--config-file", CONFIG, "--num", "3", "--augmented", "--output", str(aug), *SMALL]) == 0
    names = sorted(os.listdir(aug))
    assert len(names) == 3 and all(n.endswith("_aug.png") for n in names)
    img, lab, _ = next(iterate_samples(cfg, "fashion_scenes_train", augmented=True))
    assert img.shape[:2] == (64, 64) and lab.shape == (64, 64)  # tiny_fcn's 64x64 random crop


def _write_run(folder, losses, mious):
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for it, loss in enumerate(losses):
            row = {"iteration": it, "total_loss": loss, "lr": 0.01 * (1 - it / len(losses))}
            if it in mious:
                row["sem_seg/mIoU"] = mious[it]
            f.write(json.dumps(row) + "\n")


def test_plot_several_runs(tmp_path, capsys):
    from segkit.tools.plot import _labels

    _write_run(tmp_path / "a" / "run", [2.0, 1.5, 1.0, 0.8], {1: 0.2, 3: 0.35})
    _write_run(tmp_path / "b" / "run", [2.1, 1.2, 0.9, 0.7], {1: 0.25, 3: 0.3})
    out = tmp_path / "plots"
    assert main(["plot", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "a/run: 4 logged iterations" in text and "best sem_seg/mIoU 0.3500 at iteration 4" in text
    assert "best sem_seg/mIoU 0.3000 at iteration 4" in text
    assert sorted(os.listdir(out)) == ["loss.png", "lr.png", "sem_seg_mIoU.png"]
    import cv2

    assert cv2.imread(str(out / "loss.png")).shape == (480, 800, 3)
    assert _labels(["x/run", "y/run", "z/other"]) == ["x/run", "y/run", "z/other"]
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        main(["plot", str(tmp_path)])


def test_zoo_lists_package_references(capsys):
    from segkit import model_zoo

    assert main(["zoo", "fashion_scenes/"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["segkit://" + n for n in model_zoo.list_configs("fashion_scenes/")]
    assert any("FCNHead" in ln and "fashion_scenes_train" in ln for ln in lines)
