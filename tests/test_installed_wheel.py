"""A built wheel works without the source tree: configs ship in it, ``segkit train`` runs.

The wheel is built from a copy of the project's packaging inputs, installed with
``--no-deps`` into a fresh venv created outside the checkout, whose dependencies come
from this environment's site-packages through a ``.pth`` file (every entry except
segkit itself and its editable installs, so only the wheel can provide ``segkit``).
Then ``segkit train --config-file segkit://fashion_scenes/main.yaml`` runs from an
unrelated folder with PYTHONPATH unset.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["segkit", "configs", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"]
TINY = [
    "MODEL.RESNETS.WIDTH", "8", "MODEL.RESNETS.OUTPUT_STRIDE", "32",
    "MODEL.RESNETS.OUT_FEATURES", "['res3','res4','res5']", "MODEL.HEAD.IN_FEATURES", "['res3','res4','res5']",
    "DATASETS.FASHION_SCENES.NUM_TRAIN", "16", "DATASETS.FASHION_SCENES.NUM_VAL", "2",
    "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3",
    "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.WARMUP_ITERS", "0", "TEST.EVAL_PERIOD", "0",
    "POSTPROCESS.CHAIN", "[]", "TEST.VIS_NUM_IMAGES", "1", "MODEL.DEVICE", "cpu",
]


def _dependencies_dir(tmp_path):
    """This environment's site-packages minus segkit, its plugin and editable-install hooks."""
    site = sysconfig.get_path("purelib")
    deps = tmp_path / "deps"
    deps.mkdir()
    for name in os.listdir(site):
        low = name.lower()
        if low.startswith(("segkit", "__editable__", "__pycache__")) or low.endswith(".pth"):
            continue
        os.symlink(os.path.join(site, name), deps / name)
    return deps


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_trains_the_main_job(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for item in SOURCES:
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, item)) else shutil.copy
        kwargs = {"ignore": shutil.ignore_patterns("__pycache__", "*.pyc")} if copy is shutil.copytree else {}
        copy(os.path.join(ROOT, item), src / item, **kwargs)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(dist), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = os.listdir(dist)
    assert wheel.startswith("segkit-") and wheel.endswith(".whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q",
                    str(dist / wheel)], check=True, capture_output=True, timeout=300)
    venv_site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(venv_site, "_segkit_test_deps.pth"), "w") as f:
        f.write(str(_dependencies_dir(tmp_path)) + "\n")

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1", SEGKIT_CACHE=str(tmp_path / "cache"))
    where = subprocess.run(
        [py, "-c", "import segkit, segkit.model_zoo as z; from segkit.config.locate import configs_root; "
                   "print(segkit.__file__); print(configs_root()); print(len(z.list_configs()))"],
        cwd=work, env=env, check=True, capture_output=True, text=True, timeout=120).stdout.split("\n")
    assert where[0].startswith(venv_site) and where[1] == os.path.join(venv_site, "segkit", "configs")
    assert int(where[2]) == len(_shipped())

    run = subprocess.run([str(venv / "bin" / "segkit"), "train", "--config-file", "segkit://fashion_scenes/main.yaml",
                          *TINY, "OUTPUT_DIR", "run"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = work / "run"
    assert (out / "model_final.pth").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if "sem_seg/mIoU" in r], "the final evaluation did not run"
    saved = (out / "config.yaml").read_text()
    assert "FCNHead" in saved and "MAX_ITER: 3" in saved

    segkit = str(venv / "bin" / "segkit")
    evaluated = subprocess.run(
        [segkit, "eval", "--config-file", "segkit://fashion_scenes/main.yaml", "--save-predictions", "preds", *TINY,
         "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", "eval"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    preds = work / "preds" / "fashion_scenes_val"
    assert sorted(os.listdir(preds / "sem_seg")) == ["val_000000.png", "val_000000_overlay.jpg",
                                                     "val_000001.png", "val_000001_overlay.jpg"]
    assert len((preds / "per_image_iou.csv").read_text().splitlines()) == 3
    report = json.loads(subprocess.run([segkit, "env", "--json"], cwd=work, env=env, capture_output=True, text=True,
                                       check=True, timeout=120).stdout)
    rows = dict(report["rows"])
    assert rows["segkit configs"] == os.path.join(venv_site, "segkit", "configs")
    assert rows["segkit"].endswith(os.path.join(venv_site, "segkit"))


def _shipped():
    return [f for _d, _s, files in os.walk(os.path.join(ROOT, "configs")) for f in files
            if f.endswith(".yaml") and not f.startswith("Base-")]
