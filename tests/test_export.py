"""segkit.export: TorchScript and ONNX bundles match PyTorch on real images; metadata travels."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

import segkit
from segkit.config import load_config
from segkit.data import DatasetCatalog, MetadataCatalog, setup_datasets
from segkit.export import ExportedSegmenter, bundle_metadata, check_parity, export
from segkit.export.exporters import TORCHSCRIPT_METADATA_FILE, build_export_model
from segkit.modeling import build_model
from segkit.predictor import read_image

from model_fixtures import perturbed_checkpoint

CONFIG = os.path.join(os.path.dirname(__file__), "..", "examples", "embed_segmenter", "tiny_fcn.yaml")


def _checkpoint(cfg, path):
    """A checkpoint in the engine's format with non-trivial weights (the FCN scores start at zero)."""
    return perturbed_checkpoint(cfg, path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    setup_datasets(cfg)  # as every entry point: the built-in datasets follow this config, not an earlier test's
    weights = _checkpoint(cfg, tmp / "model_final.pth")
    recs = DatasetCatalog.get("fashion_scenes_val")
    val = [read_image(r["file_name"], "RGB") for r in recs[:3]]
    # Several sizes: 128x128 originals, an odd crop, a wide mosaic, a small upscaled image.
    images = val + [
        np.ascontiguousarray(val[0][5:50, 7:68]),
        np.ascontiguousarray(np.concatenate([val[1], val[2]], axis=1)),
        np.ascontiguousarray(np.repeat(np.repeat(val[2][:40, :33], 3, 0), 2, 1)),
    ]
    bundles = {fmt: export(cfg, weights, fmt, str(tmp / f"m_{fmt}"), with_probs=True) for fmt in ("torchscript", "onnx")}
    return cfg, weights, images, bundles, tmp


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_bundle_matches_pytorch_on_real_images(setup, fmt):
    cfg, weights, images, bundles, _ = setup
    report = check_parity(cfg, weights, bundles[fmt], images)
    assert sorted(set(report.sizes)) == [(45, 61), (120, 66), (128, 128), (128, 256)]
    assert report.pixel_agreement >= 0.9999, report
    assert report.max_prob_diff < 1e-4, report
    assert report.max_margin_at_disagreement < 1e-3


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_bundle_matches_predictor(setup, fmt):
    cfg, weights, images, bundles, _ = setup
    predictor = segkit.Predictor(cfg, weights=weights)
    seg = ExportedSegmenter(bundles[fmt])
    for img in images:
        expected = predictor(img, return_probs=True)
        got = seg(img)
        assert got["labels"].shape == img.shape[:2]
        assert (got["labels"] == expected.labels).mean() >= 0.9999
        np.testing.assert_allclose(got["probs"], expected.probs, atol=1e-4)
    # The weights matter: a differently initialised model disagrees somewhere.
    assert len(np.unique(seg(images[4])["labels"])) > 1


def test_weights_were_exported(setup):
    cfg, weights, images, bundles, _ = setup
    fresh = build_export_model(cfg, weights)
    with pytest.raises(ValueError, match="needs the weights"):
        check_parity(cfg, None, bundles["onnx"], images[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        untrained = build_model(cfg).eval()
    report = check_parity(cfg, None, bundles["onnx"], images[:2], model=untrained)
    assert report.max_prob_diff > 1e-3  # the bundle holds the checkpoint, not an initialisation
    assert check_parity(cfg, None, bundles["onnx"], images[:2], model=fresh).max_prob_diff < 1e-4


def test_batch_equals_single_images(setup):
    _, _, images, bundles, _ = setup
    seg = ExportedSegmenter(bundles["onnx"])
    out = seg.run_batch(np.stack(images[:3]))
    assert out["labels"].shape == (3, 128, 128) and out["probs"].shape == (3, 11, 128, 128)
    for i in range(3):
        np.testing.assert_array_equal(out["labels"][i], seg(images[i])["labels"])


def test_metadata_travels_in_both_formats(setup):
    cfg, _, _, bundles, _ = setup
    meta_cat = MetadataCatalog.get("fashion_scenes_val")
    for fmt, path in bundles.items():
        meta = ExportedSegmenter(path).metadata
        assert meta["class_names"] == list(meta_cat.stuff_classes), fmt
        assert [tuple(c) for c in meta["palette"]] == [tuple(c) for c in meta_cat.stuff_colors]
        assert meta["input_format"] == "RGB" and meta["input_layout"] == "NHWC"
        assert meta["pixel_mean"] == list(cfg.MODEL.PIXEL_MEAN) and meta["pixel_std"] == list(cfg.MODEL.PIXEL_STD)
        assert meta["outputs"] == ["labels", "probs"] and meta["num_classes"] == 11
        assert "NUM_CLASSES: 11" in meta["config"]


def test_raw_onnx_metadata_props_and_dynamic_axes(setup):
    import onnx

    proto = onnx.load(setup[3]["onnx"])
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["class_names"])[0] == MetadataCatalog.get("fashion_scenes_val").stuff_classes[0]
    assert json.loads(props["input_format"]) == "RGB"
    (inp,) = proto.graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]


def test_raw_torchscript_extra_file(setup):
    files = {TORCHSCRIPT_METADATA_FILE: ""}
    with pytest.warns(FutureWarning):  # torch.jit is deprecated in torch >= 2.9, still supported
        torch.jit.load(setup[3]["torchscript"], _extra_files=files)
    raw = json.loads(files[TORCHSCRIPT_METADATA_FILE])
    assert json.loads(raw["input_layout"]) == "NHWC" and json.loads(raw["device"]) == "cpu"
    assert "device" not in ExportedSegmenter(setup[3]["onnx"]).metadata  # ONNX is device-neutral


def test_torchscript_bundle_runs_on_its_traced_device_only(setup):
    # The traced graph moves inputs to the device it was traced on (segmentor's images.to(device)).
    with pytest.raises(ValueError, match="traced for cpu.*cannot run on cuda.*device='cuda'"):
        ExportedSegmenter(setup[3]["torchscript"], device="cuda")
    assert ExportedSegmenter(setup[3]["torchscript"]).device == torch.device("cpu")


def test_nchw_labels_only_export(setup, tmp_path):
    cfg, weights, images, _, _ = setup
    path = export(cfg, weights, "onnx", str(tmp_path / "nchw.onnx"), input_layout="NCHW")
    seg = ExportedSegmenter(path)
    assert seg.metadata["outputs"] == ["labels"] and seg.metadata["input_layout"] == "NCHW"
    assert seg.run_batch(images[3].transpose(2, 0, 1)[None].copy())["labels"].shape == (1, 45, 61)
    report = check_parity(cfg, weights, seg, images[3:5])
    assert report.max_prob_diff is None and report.pixel_agreement >= 0.9999


def test_export_into_directory_and_errors(setup, tmp_path):
    cfg, weights, _, _, _ = setup
    assert export(cfg, weights, "torchscript", str(tmp_path)) == str(tmp_path / "model.ts")
    with pytest.raises(ValueError, match="Unknown export format 'tflite'.*torchscript, onnx"):
        export(cfg, weights, "tflite", str(tmp_path))
    with pytest.raises(ValueError, match="input_layout"):
        export(cfg, weights, "onnx", str(tmp_path / "x.onnx"), input_layout="HWC")


def test_warns_about_steps_the_bundle_lacks(setup):
    from segkit.export.exporters import _warn_dropped_steps

    c = setup[0].clone()
    c.POSTPROCESS.CHAIN = ["DenseCRF"]
    with pytest.warns(UserWarning, match="whole-image inference only.*DenseCRF"):
        _warn_dropped_steps(c)
    c.TEST.AUG.ENABLED = True
    c.INPUT.TEST_TRANSFORMS = [{"NAME": "Resize", "ARGS": {"height": 64, "width": 64}}]
    with pytest.warns(UserWarning, match=r"INPUT.TEST_TRANSFORMS, POSTPROCESS.CHAIN=\['DenseCRF'\], TEST.AUG.ENABLED is not"):
        _warn_dropped_steps(c)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_dropped_steps(setup[0])


def test_bundle_metadata_is_strings(setup):
    meta = bundle_metadata(setup[0], "NHWC", False)
    assert all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["outputs"]) == ["labels"]


def test_foreign_onnx_file_is_refused(tmp_path):
    path = str(tmp_path / "plain.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Conv2d(3, 2, 1), (torch.rand(1, 3, 4, 4),), path, dynamo=False)
    with pytest.raises(ValueError, match="carries no segkit metadata"):
        ExportedSegmenter(path)
    with pytest.raises(FileNotFoundError, match="No exported bundle"):
        ExportedSegmenter(str(tmp_path / "missing.onnx"))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_bundle_checks_its_input_like_the_predictor(setup, fmt):
    bundle = ExportedSegmenter(setup[3][fmt])
    with pytest.raises(ValueError, match=r"The image is empty \(shape \(0, 0, 3\)\)"):
        bundle(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="The batch is empty"):
        bundle.run_batch(np.zeros((1, 0, 5, 3), np.uint8))
    with pytest.raises(TypeError, match="dtype float32"):
        bundle(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        bundle([[0, 0, 0]])
