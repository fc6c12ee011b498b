"""Issue 12: one owner for each cross-cutting fact.

Channel order (images RGB end to end, the segmentor adapts to BGR-trained weights),
the class list (registered and checked once at set-up, by every entry point), the
inference pipeline (one builder), device moves (the segmentor) and class weights
(the engine never rewrites the config).
"""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import segkit
from segkit.config import get_cfg, load_config
from segkit.data import DatasetCatalog, MetadataCatalog, build_test_loader
from segkit.data.io import read_image
from segkit.modeling.meta_arch.semantic_seg import upsample_logits

from data_fixtures import layouts
from model_fixtures import perturbed_checkpoint, perturbed_model

ROOT = os.path.join(os.path.dirname(__file__), "..")
TINY_FCN = os.path.join(ROOT, "examples", "embed_segmenter", "tiny_fcn.yaml")
# Caffe-style statistics in BGR order: distinct per channel, so a wrong order shows.
BGR_MEAN, BGR_STD = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bgr_cfg():
    return load_config(TINY_FCN, ["MODEL.DEVICE", "cpu", "INPUT.FORMAT", "BGR",
                                  "MODEL.PIXEL_MEAN", BGR_MEAN, "MODEL.PIXEL_STD", BGR_STD])


# ----------------------------------------------------------------------------- channel order
def test_bgr_trained_weights_give_the_outputs_they_gave_before(tmp_path):
    cfg = _bgr_cfg()
    model = perturbed_model(cfg)
    record = DatasetCatalog.get("fashion_scenes_val")[0]
    rgb = read_image(record["file_name"], "RGB")
    # Before: the mapper handed the model BGR pixels and the model normalised them with the BGR mean.
    bgr = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1])).permute(2, 0, 1)[None]
    mean, std = torch.tensor(BGR_MEAN).view(1, 3, 1, 1), torch.tensor(BGR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        before = upsample_logits(model.predict_logits((bgr.float() - mean) / std), bgr.shape[-2:])
        # Now: the loader hands over RGB, the segmentor flips on its device.
        batch = next(iter(build_test_loader(cfg, "fashion_scenes_val")))
        assert torch.equal(batch["image"][0], torch.from_numpy(rgb).permute(2, 0, 1))
        now = model(batch["image"])
    assert torch.equal(now, before)
    # Not vacuous: feeding the RGB image to the old normalisation gives something else.
    with torch.no_grad():
        wrong = upsample_logits(model.predict_logits((batch["image"].float() - mean) / std), bgr.shape[-2:])
    assert not torch.allclose(wrong, before)
    # The Predictor and the exported model agree (same weights, RGB in).
    weights = perturbed_checkpoint(cfg, tmp_path / "bgr.pth")
    pred = segkit.Predictor(cfg, weights=weights)(rgb, format="RGB", return_probs=True)
    np.testing.assert_allclose(pred.probs, F.softmax(before, 1)[0].numpy(), atol=1e-5)


def test_bgr_model_exports_with_the_flip_inside_and_takes_rgb(tmp_path):
    from segkit.export import check_parity, export

    cfg = _bgr_cfg()
    weights = perturbed_checkpoint(cfg, tmp_path / "bgr.pth")
    path = export(cfg, weights, "onnx", str(tmp_path / "bgr.onnx"), with_probs=True)
    rgb = read_image(DatasetCatalog.get("fashion_scenes_val")[1]["file_name"], "RGB")
    report = check_parity(cfg, weights, path, [rgb, np.ascontiguousarray(rgb[:50, :70])])
    assert report.pixel_agreement > 0.999 and report.max_prob_diff < 1e-4
    from segkit.export import ExportedSegmenter

    meta = ExportedSegmenter(path).metadata
    assert meta["input_format"] == "RGB" and meta["weights_format"] == "BGR"
    assert meta["pixel_mean"] == BGR_MEAN


def test_nothing_but_the_segmentor_flips_channels():
    # The mapper keeps RGB whatever the weights' order; the segmentor records the weights' order.
    from segkit.data import DatasetMapper
    from segkit.modeling import build_model

    cfg = _bgr_cfg()
    mapper = DatasetMapper(cfg, is_train=False)
    record = dict(DatasetCatalog.get("fashion_scenes_val")[0], dataset_name="fashion_scenes_val")
    out = mapper(record)
    assert torch.equal(out["image"], torch.from_numpy(read_image(record["file_name"], "RGB")).permute(2, 0, 1))
    assert build_model(cfg).input_format == "BGR"
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert np.array_equal(mapper.prepare_image(rgb), rgb)


@pytest.mark.parametrize("config, arch", [
    ("fashion_scenes/main.yaml", "SemanticSegmentor"),
    ("sift_flow/fcn16s_vgg16_cpu.yaml", "MultiTaskSegmentor"),
    ("nyudv2/fcn32s_vgg16_rgb_hha_cpu.yaml", "LateFusionSegmentor"),
])
def test_every_segmentor_records_the_weights_channel_order(config, arch):
    # One owner (segmentor_args) gives every meta-architecture INPUT.FORMAT, so BGR-trained
    # weights are adapted whichever segmentor holds them.
    from segkit.modeling import build_model

    cfg = load_config(os.path.join(ROOT, "configs", config),
                      ["INPUT.FORMAT", "BGR", "MODEL.DEVICE", "meta", "MODEL.BACKBONE.PRETRAINED", ""])
    with torch.device("meta"):
        model = build_model(cfg)
    assert type(model).__name__ == arch and model.input_format == "BGR"


# ----------------------------------------------------------------------------- device moves
def test_segmentor_moves_its_own_inputs():
    """The trainer, inference_on_dataset and the Predictor hand over CPU tensors; the model moves them."""
    cfg = load_config(TINY_FCN, ["MODEL.DEVICE", "cpu"])
    model = perturbed_model(cfg)
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].device))
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        model(images)
    assert seen == [model.device]
    # No consumer passes a device any more.
    import inspect

    from segkit.evaluation import inference_on_dataset

    assert "device" not in inspect.signature(inference_on_dataset).parameters


# ----------------------------------------------------------------------------- class list
def test_train_net_without_a_config_refuses_21_classes_on_the_11_class_default(tmp_path):
    from segkit.engine import default_argument_parser
    from segkit.engine.defaults import main, setup

    args = default_argument_parser().parse_args(["OUTPUT_DIR", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="'fashion_scenes_train' has 11 classes but MODEL.NUM_CLASSES is 21"):
        main(args)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    # A deliberate mismatch is a documented key.
    args = default_argument_parser().parse_args(
        ["OUTPUT_DIR", str(tmp_path / "out"), "DATASETS.ALLOW_NUM_CLASSES_MISMATCH", "True"])
    assert setup(args).MODEL.NUM_CLASSES == 21


def test_predictor_refuses_a_class_count_mismatch():
    cfg = load_config(TINY_FCN, ["MODEL.DEVICE", "cpu", "MODEL.NUM_CLASSES", "5"])
    with pytest.raises(ValueError, match="'fashion_scenes_train' has 11 classes but MODEL.NUM_CLASSES is 5"):
        segkit.Predictor(cfg)
    cfg.DATASETS.ALLOW_NUM_CLASSES_MISMATCH = True
    with pytest.warns(UserWarning, match="no weights"):
        pred = segkit.Predictor(cfg)
    assert pred.class_names == tuple(f"class_{i}" for i in range(5))


@pytest.fixture()
def folder_dataset(tmp_path):
    """A described folder dataset with classes bg/cat and splits train/val (3 images each)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        os.makedirs(tmp_path / split / "images")
        os.makedirs(tmp_path / split / "masks")
        for i in range(3):
            layouts.write_png_rgb(str(tmp_path / split / "images" / f"{i}.png"), layouts.random_image(rng, 32, 32))
            layouts.write_grey_png(str(tmp_path / split / "masks" / f"{i}.png"), layouts.blob_mask(rng, 32, 32, (0, 1)))
    desc = tmp_path / "pets.yaml"
    desc.write_text(yaml.safe_dump({
        "name": "_pets12", "classes": ["bg", "cat"],
        "splits": {s: {"images": f"{s}/images", "masks": f"{s}/masks"} for s in ("train", "val")},
    }))
    yield str(desc)
    _forget_pets()


def _forget_pets():
    for name in ("_pets12_train", "_pets12_val"):
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _folder_opts(desc, out):
    return ["DATASETS.FOLDER_DATASETS", [desc], "DATASETS.TRAIN", ["_pets12_train"], "DATASETS.TEST", ["_pets12_val"],
            "MODEL.NUM_CLASSES", "2", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out)]


def test_eval_only_tables_name_the_folder_dataset_classes(folder_dataset, tmp_path):
    from segkit.engine import default_argument_parser
    from segkit.engine.defaults import main

    cfg = load_config(TINY_FCN, _folder_opts(folder_dataset, tmp_path / "eval"))
    weights = perturbed_checkpoint(cfg, tmp_path / "w.pth")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    _forget_pets()  # as in a fresh process: nothing registered yet
    args = default_argument_parser().parse_args(
        ["--config-file", str(cfg_file), "--eval-only", "MODEL.WEIGHTS", weights, "TEST.VIS_NUM_IMAGES", "0"])
    results = main(args)
    assert {"IoU-bg", "IoU-cat"} <= set(results["sem_seg"])


def test_dataset_stats_tool_uses_the_folder_dataset_classes(folder_dataset, tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"DATASETS": {"FOLDER_DATASETS": [folder_dataset]}}))
    out = tmp_path / "stats.json"
    # Neither MODEL.NUM_CLASSES nor a registration by hand: the tool's set-up registers the folder dataset.
    assert _tool("dataset_stats").main(["--config-file", str(cfg_file), "--dataset", "_pets12_train",
                                        "--output", str(out), "--workers", "1", "--no-progress"]) == 0
    stats = json.loads(out.read_text())
    assert stats["classes"] == ["bg", "cat"] and len(stats["pixel_counts"]) == 2


def test_predictor_and_export_metadata_name_the_folder_dataset_classes(folder_dataset, tmp_path):
    from segkit.export import bundle_metadata
    from segkit.export.exporters import build_export_model

    cfg = load_config(TINY_FCN, _folder_opts(folder_dataset, tmp_path))
    weights = perturbed_checkpoint(cfg, tmp_path / "w.pth")
    assert segkit.Predictor(cfg, weights=weights).class_names == ("bg", "cat")
    _forget_pets()  # as in a fresh process: nothing registered yet
    build_export_model(cfg, weights)
    meta = bundle_metadata(cfg, "NHWC", False)
    assert json.loads(meta["class_names"]) == ["bg", "cat"]
    assert json.loads(meta["input_format"]) == "RGB"


def test_export_verify_reads_the_val_split_under_datasets_root(tmp_path):
    layouts.write_voc(str(tmp_path / "data"), {"val": ["a", "b"]}, size=(20, 24), labels=(0, 1, 15))
    cfg = load_config(TINY_FCN, ["MODEL.NUM_CLASSES", "21", "DATASETS.TRAIN", "[]", "DATASETS.TEST", "['voc_2012_val']",
                                 "DATASETS.ROOT", str(tmp_path / "data")])
    images = _tool("export_model").verification_images(cfg, 2)
    assert [im.shape for im in images[:2]] == [(20, 24, 3), (20, 24, 3)]


def test_folder_dataset_export_verify_end_to_end(folder_dataset, tmp_path):
    cfg = load_config(TINY_FCN, _folder_opts(folder_dataset, tmp_path))
    weights = perturbed_checkpoint(cfg, tmp_path / "w.pth")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    _forget_pets()  # the tool registers them itself
    tool = _tool("export_model")
    assert tool.main(["--config-file", str(cfg_file), "--weights", weights, "--format", "onnx",
                      "--output", str(tmp_path / "exp"), "--verify", "--verify-images", "2"]) == 0


# ----------------------------------------------------------------------------- inference assembly
def test_every_consumer_uses_the_one_pipeline_builder(monkeypatch, tmp_path):
    from segkit.engine import inference_pipeline

    calls = []
    original = inference_pipeline.prepare_model_for_inference

    def spy(cfg, model):
        calls.append(type(model).__name__)
        return original(cfg, model)

    monkeypatch.setattr(inference_pipeline, "prepare_model_for_inference", spy)
    cfg = load_config(TINY_FCN, ["MODEL.DEVICE", "cpu"])
    weights = perturbed_checkpoint(cfg, tmp_path / "w.pth")
    from segkit.export.exporters import build_export_model

    pred = segkit.Predictor(cfg, weights=weights)
    exported = build_export_model(cfg, weights)
    assert calls == ["SemanticSegmentor", "SemanticSegmentor"]
    assert not pred.model.training and not exported.training
    for a, b in zip(pred.model.state_dict().values(), exported.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())


# ----------------------------------------------------------------------------- class weights
def test_engine_counts_into_the_stats_file_and_leaves_the_config_alone(tmp_path):
    from segkit.engine.defaults import prepare_class_weights
    from segkit.modeling.losses import class_weights_from_config, class_weights_from_counts

    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.MODEL.NUM_CLASSES = 11
    cfg.DATASETS.FASHION_SCENES.NUM_TRAIN = 4
    cfg.MODEL.LOSS.CLASS_WEIGHT.METHOD = "median_frequency"
    cfg.MODEL.LOSS.CLASS_WEIGHT.COMPUTE = True
    cfg.freeze()
    before = cfg.dump()
    try:
        path = prepare_class_weights(cfg)
    finally:  # the built-in dataset's size is process state: give the other tests the default back
        from segkit.data.datasets.fashion_scenes import configure_from_cfg

        configure_from_cfg(get_cfg())
    assert path == os.path.join(str(tmp_path), "class_stats.json") and os.path.isfile(path)
    assert cfg.dump() == before and cfg.MODEL.LOSS.CLASS_WEIGHT.STATS_FILE == ""
    assert not (tmp_path / "config.yaml").exists()
    stats = json.loads(open(path).read())
    assert "weights" not in stats
    expected = class_weights_from_counts(stats["pixel_counts"], "median_frequency", 0.9999,
                                         stats["pixels_where_present"])
    assert class_weights_from_config(cfg).tolist() == pytest.approx(expected)


# ----------------------------------------------------------------------------- drawing
def test_one_drawing_module_with_one_overlay_semantics():
    import segkit.engine.visualization as engine_vis
    import segkit.predictor as predictor_mod
    from segkit.utils import visualize

    assert predictor_mod.overlay is visualize.overlay is engine_vis.overlay
    assert predictor_mod.default_palette is visualize.default_palette is engine_vis.default_palette
    image = np.full((1, 4, 3), 100, np.uint8)
    labels = np.array([[0, 1, 255, 7]])  # black background class, a colour, ignore, no colour
    palette = [(0, 0, 0), (200, 0, 50)]
    out = visualize.overlay(image, labels, palette, alpha=0.5)
    # Background, ignore and uncoloured pixels keep the image; class 1 is blended half-half.
    assert out[0].tolist() == [[100, 100, 100], [150, 50, 75], [100, 100, 100], [100, 100, 100]]
    assert visualize.colorize(labels, palette)[0].tolist() == [[0, 0, 0], [200, 0, 50], [0, 0, 0], [0, 0, 0]]
    # A negative label has no colour (it is not clipped onto class 0's colour).
    assert visualize.colorize(np.array([[-1, 0]]), [(9, 9, 9)])[0].tolist() == [[0, 0, 0], [9, 9, 9]]
