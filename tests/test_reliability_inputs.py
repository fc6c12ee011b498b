"""Bad input named, never silently wrong: corrupt JPEGs, 16-bit PIL images, unusable weight
files, undecodable file names in the log, CRF backends missing on this Python, schedules
checked when the config loads, gridding warnings once per configuration."""
import io
import logging
import os
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segkit.config import ConfigError, get_cfg, load_config
from segkit.data import BadRecordLog
from segkit.data.catalog import DataError
from segkit.data.io import read_image
from segkit.engine.checkpoint import CheckpointError, load_model_weights
from segkit.modeling.backbone.weights import read_state_dict
from segkit.predictor import check_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "configs", "fashion_scenes", "main.yaml")


# ----------------------------------------------------------------------------- item 4
def _photo_jpeg(params=None):
    rng = np.random.default_rng(0)
    base = cv2.resize(np.add.outer(np.arange(32), np.arange(48)).astype(np.uint8), (480, 320))
    img = np.stack([base, base[::-1], 255 - base], -1) + rng.integers(0, 40, (320, 480, 3)).astype(np.uint8)
    flags = [int(v) for kv in (params or {}).items() for v in kv]
    return cv2.imencode(".jpg", img, flags)[1].tobytes()


def test_jpeg_with_a_stray_byte_is_refused_with_its_path(tmp_path):
    data = bytearray(_photo_jpeg())
    pos = int(len(data) * 0.6)
    assert data[pos] != 0xFF and data[pos + 1] not in (0x00, 0xFF)  # the damage is a stray marker
    data[pos] = 0xFF
    path = tmp_path / "damaged.jpg"
    path.write_bytes(bytes(data))
    # OpenCV alone returns an image with a large part wrong (libjpeg only warns on stderr) ...
    good = cv2.imdecode(np.frombuffer(_photo_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    bad = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
    assert bad is not None and (np.abs(bad.astype(int) - good).max(-1) > 40).mean() > 0.05
    # ... segkit refuses it, naming the file (skip mode then skips and counts it like any DataError).
    with pytest.raises(DataError, match=r"damaged\.jpg: image is corrupt \(.*byte"):
        read_image(str(path))


@pytest.mark.parametrize("kind", ["baseline", "restart markers", "progressive", "grey", "photo"])
def test_valid_jpegs_still_read(tmp_path, kind):
    if kind == "photo":
        path = os.path.join(ROOT, "tests", "data", "photos", "rocket.jpg")
    else:
        path = str(tmp_path / "ok.jpg")
        if kind == "baseline":
            data = _photo_jpeg()
        elif kind == "restart markers":
            data = _photo_jpeg({cv2.IMWRITE_JPEG_RST_INTERVAL: 1})
        else:
            buf = io.BytesIO()
            arr = cv2.imdecode(np.frombuffer(_photo_jpeg(), np.uint8), cv2.IMREAD_COLOR)
            (Image.fromarray(arr[..., 0]) if kind == "grey" else Image.fromarray(arr)).save(
                buf, "JPEG", progressive=kind == "progressive")
            data = buf.getvalue()
        open(path, "wb").write(data)
    expected = cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(read_image(path, "RGB"), expected)


# ----------------------------------------------------------------------------- item 5
def test_16_bit_pil_images_are_scaled_as_read_image_does(tmp_path):
    ramp = (np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) * 65535 // (40 * 50 - 1)).astype(np.uint16)
    path = str(tmp_path / "deep.png")
    cv2.imwrite(path, ramp)
    pil = Image.open(path)
    assert pil.mode.startswith("I;16")
    arr, fmt = check_image(pil)
    np.testing.assert_array_equal(arr, read_image(path, "RGB"))  # OpenCV's own 16 -> 8 bit reduction
    np.testing.assert_array_equal(arr[..., 0], (ramp >> 8).astype(np.uint8))
    assert fmt == "RGB" and (arr == 255).mean() < 0.01  # not saturated
    with pytest.raises(TypeError, match="mode 'I'"):
        check_image(pil.convert("I"))


# ----------------------------------------------------------------------------- item 10
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unusable_weight_files_say_why(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "garbage.pth").write_bytes(b"eeeeeeee" * 100)
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pth")
    raw = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    torch.save({"w": torch.ones(3), "x": _Evil()}, tmp_path / "evil.pth")
    expected = {
        "empty": r"empty\.pth is empty \(0 bytes\)",
        "garbage": r"garbage\.pth: it is not a PyTorch file \(it starts with bytes b'eeee'",
        "truncated": r"truncated\.pth: the file is damaged or truncated",
        "evil": r"evil\.pth: it holds Python objects other than tensors .*posix\.system",
    }
    for name, pattern in expected.items():
        with pytest.raises(CheckpointError, match=r"MODEL\.BACKBONE\.PRETRAINED file .*" + pattern) as info:
            read_state_dict(str(tmp_path / f"{name}.pth"))
        assert "weights_only=False" not in str(info.value)
        with pytest.raises(CheckpointError, match=r"checkpoint .*" + pattern):
            load_model_weights(torch.nn.Linear(2, 2), str(tmp_path / f"{name}.pth"))


# ----------------------------------------------------------------------------- item 13
def test_undecodable_file_name_reaches_log_txt(tmp_path):
    from segkit.engine.defaults import setup_logger

    log = logging.getLogger("segkit")
    saved = (list(log.handlers), log.propagate, log.level)
    name = os.fsdecode(b"/data/caf\xe9.jpg")  # how os.listdir returns a Latin-1 name on a UTF-8 system
    try:
        setup_logger(str(tmp_path))
        BadRecordLog().add([(name, f"{name}: image file not found.")])
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        for h in saved[0]:
            log.addHandler(h)
        log.propagate, log.level = saved[1], saved[2]
    text = (tmp_path / "log.txt").read_text(encoding="utf-8")
    assert "Skipping bad record: /data/caf\\udce9.jpg: image file not found." in text


# ----------------------------------------------------------------------------- item 16
@pytest.fixture()
def no_pydensecrf(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # import raises ImportError, as on Python 3.13
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)


def test_auto_crf_backend_falls_back_to_native(no_pydensecrf):
    from segkit.postprocess import build_postprocessor_chain
    from segkit.postprocess.dense_crf import DenseCRF, resolve_crf_backend

    assert resolve_crf_backend("auto") == "native"
    cfg = load_config(MAIN, ["MODEL.DEVICE", "cpu"])
    chain = build_postprocessor_chain(cfg)  # what Predictor(load_config(main.yaml)) and evaluation build
    assert [type(s) for s in chain.steps] == [DenseCRF] and chain.steps[0].backend == "native"
    probs = torch.softmax(torch.randn(1, 3, 6, 7), 1)
    out = chain(probs, torch.randint(0, 256, (1, 3, 6, 7), dtype=torch.uint8))
    assert out.shape == probs.shape and torch.allclose(out.sum(1), torch.ones(1, 6, 7), atol=1e-4)


def test_auto_crf_backend_prefers_pydensecrf_when_installed():
    pytest.importorskip("pydensecrf.densecrf")
    from segkit.postprocess.dense_crf import resolve_crf_backend

    assert resolve_crf_backend("auto") == "pydensecrf"


def test_missing_crf_backend_fails_before_training(no_pydensecrf, tmp_path):
    from test_engine import ToyTrainer, toy_cfg

    cfg = toy_cfg(tmp_path)
    cfg.POSTPROCESS.CHAIN = ["DenseCRF"]
    cfg.POSTPROCESS.CRF.BACKEND = "pydensecrf"
    with pytest.raises(ImportError, match=r"POSTPROCESS\.CRF\.BACKEND.*'auto'"):
        ToyTrainer(cfg)
    assert not os.path.exists(tmp_path / "last_checkpoint")
    cfg.POSTPROCESS.CRF.BACKEND = "fast"
    with pytest.raises(ValueError, match=r"POSTPROCESS\.CRF\.BACKEND: unknown dense-CRF backend 'fast'"):
        ToyTrainer(cfg)


# ----------------------------------------------------------------------------- item 17
def test_smoke_run_warm_up_is_clamped_when_the_config_loads():
    from segkit.solver import build_lr_scheduler

    with pytest.warns(UserWarning, match=r"SOLVER\.WARMUP_ITERS \(50\) exceeds SOLVER\.MAX_ITER \(20\)"):
        cfg = load_config(MAIN, ["SOLVER.MAX_ITER", "20"])
    assert cfg.SOLVER.WARMUP_ITERS == 20
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01 * 1.0) and all(a < b for a, b in zip(lrs[:10], lrs[1:11]))


@pytest.mark.parametrize("opts, message", [
    (["SOLVER.MAX_ITER", "0"], r"SOLVER\.MAX_ITER must be at least 1"),
    (["SOLVER.CHECKPOINT_PERIOD", "-5"], r"SOLVER\.CHECKPOINT_PERIOD must be >= 0"),
    (["SOLVER.LR_SCHEDULER_NAME", "MultiStepLR", "SOLVER.STEPS", "[800, 400]"], r"SOLVER\.STEPS must increase"),
    (["SOLVER.LR_SCHEDULER_NAME", "MultiStepLR", "SOLVER.MAX_ITER", "100", "SOLVER.WARMUP_ITERS", "0",
      "SOLVER.STEPS", "[50, 150]"], r"lie in \(0, SOLVER\.MAX_ITER=100\)"),
])
def test_bad_schedules_fail_when_the_config_loads(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, opts, load_plugins=False)


# ----------------------------------------------------------------------------- item 19
def test_gridding_warning_once_per_configuration():
    from segkit.modeling import build_model, gridding

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.NAME", "ResNet", "MODEL.RESNETS.DEPTH", "18",
                         "MODEL.RESNETS.WIDTH", "8", "MODEL.RESNETS.OUTPUT_STRIDE", "8", "MODEL.NUM_CLASSES", "3"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            build_model(cfg)
    grid = [w for w in caught if issubclass(w.category, gridding.GriddingWarning)]
    assert len(grid) == 1, [str(w.message) for w in grid]


def test_main_config_is_deliberately_quiet_about_gridding():
    from segkit.modeling import build_model, gridding

    cfg = load_config(MAIN, ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.HDC.GRIDDING_CHECK == "off"
    with warnings.catch_warnings():
        warnings.simplefilter("error", gridding.GriddingWarning)
        build_model(cfg)
    # ... and the check is what silences it: the same model with the default check does warn.
    cfg.MODEL.HDC.GRIDDING_CHECK = "warn"
    with pytest.warns(gridding.GriddingWarning):
        build_model(cfg)
