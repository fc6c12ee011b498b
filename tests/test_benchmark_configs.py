"""The papers' other set-ups train, evaluate and export on fixtures in the real layouts:
FCN's two-headed SIFT Flow net, FCN's RGB-HHA late fusion on NYUDv2, DeepLab v2 on PASCAL-Context."""
import glob
import json
import os

import numpy as np
import pytest
import torch

from data_fixtures import layouts
from segkit.config import load_config
from segkit.data import DatasetCatalog, DatasetMapper
from segkit.engine import DefaultTrainer
from segkit.engine.checkpoint import load_model_weights
from segkit.engine.defaults import seed_all
from segkit.export import export
from segkit.export.runtime import ExportedSegmenter
from segkit.modeling import build_model, split_label_sets
from segkit.predictor import Predictor

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
SIFT_CPU = os.path.join(CONFIGS, "sift_flow", "fcn16s_vgg16_cpu.yaml")
NYUD_CPU = os.path.join(CONFIGS, "nyudv2", "fcn32s_vgg16_rgb_hha_cpu.yaml")
CONTEXT_CPU = [os.path.join(CONFIGS, "pascal_context", f) for f in ("deeplab_v2_resnet18_aspp_cpu.yaml",
                                                                     "refinenet_resnet18_cpu.yaml")]
PAPER_CONFIGS = sorted(f for d in ("nyudv2", "sift_flow", "pascal_context")
                       for f in glob.glob(os.path.join(CONFIGS, d, "*.yaml")))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))


def _train(config, root, out, iters=3, extra=()):
    cfg = load_config(config, ["DATASETS.ROOT", str(root), "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", str(iters),
                               *extra])
    cfg.freeze()
    seed_all(0)
    trainer = DefaultTrainer(cfg)
    return cfg, trainer, trainer.train()


def _losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {k for r in rows for k in r if k.startswith("loss_")}


def _accuracy(pred, target):
    keep = target != 255
    return float((pred[keep] == target[keep]).mean())


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=[os.path.relpath(f, CONFIGS) for f in PAPER_CONFIGS])
def test_paper_configs_build(config):
    """Every config loads and its model builds (narrowed so that ResNet-101 / VGG-16 stay cheap)."""
    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAINED", "", "MODEL.VGG.WIDTH", "8",
                               "MODEL.VGG.FC_CHANNELS", "16", "MODEL.RESNETS.WIDTH", "8"])
    model = build_model(cfg)
    channels = 3 * len(cfg.INPUT.MODALITIES)
    assert len(cfg.MODEL.PIXEL_MEAN) == channels
    model.eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (1, channels, 40, 48), dtype=torch.uint8))
    extra = sum(s["NUM_CLASSES"] for s in cfg.MODEL.MULTI_TASK.EXTRA_LABEL_SETS)
    if cfg.MODEL.META_ARCHITECTURE == "MultiTaskSegmentor":
        assert out.shape == (1, cfg.MODEL.NUM_CLASSES + extra, 40, 48)
    else:
        assert out.shape == (1, cfg.MODEL.NUM_CLASSES, 40, 48)


def test_sift_flow_two_headed_fcn_trains_evaluates_and_exports(tmp_path):
    root = tmp_path / "data"
    data = layouts.write_sift_flow(str(root), {"trainval": ["a1", "a2", "a3", "a4"], "test": ["t1", "t2"]},
                                   size=(64, 64))
    cfg, trainer, results = _train(SIFT_CPU, root, tmp_path / "out")
    # One loss per head; both label sets evaluated.
    assert {"loss_cross_entropy", "loss_cross_entropy_geometric"} <= _losses(tmp_path / "out")
    assert set(results) == {"sem_seg", "geometric"}
    assert len([k for k in results["geometric"] if k.startswith("IoU-")]) == 3
    assert "IoU-sky" in results["geometric"] and "IoU-awning" in results["sem_seg"]
    # Independent oracle: each set's pixel accuracy from the model's own outputs.
    model = trainer.model.eval()
    preds = {"sem_seg": [], "geometric": []}
    targets = {"sem_seg": [], "geometric": []}
    mapper = DatasetMapper(num_classes=33, label_sets=[("geometric", 3)])
    for r in DatasetCatalog.get("sift_flow_test", str(root)):
        sample = mapper(r)
        with torch.no_grad():
            scores = split_label_sets(model(sample["image"][None]), [("sem_seg", 33), ("geometric", 3)])
        for i, name in enumerate(("sem_seg", "geometric")):
            preds[name].append(scores[name][0].argmax(0).numpy())
            targets[name].append(sample["sem_seg"][i].numpy())
    for name in ("sem_seg", "geometric"):
        acc = _accuracy(np.stack(preds[name]), np.stack(targets[name]))
        assert results[name]["pACC"] == pytest.approx(acc, abs=1e-9)
    # Export one head: the bundle's labels are that head's arg-max.
    weights = str(tmp_path / "out" / "model_final.pth")
    for head, index, k in (("geometric", 1, 3), ("sem_seg", 0, 33)):
        ecfg = cfg.clone()
        ecfg.defrost()
        ecfg.MODEL.MULTI_TASK.INFERENCE_OUTPUT = head
        path = export(ecfg, weights, "onnx", str(tmp_path / f"{head}.onnx"), with_probs=True)
        seg = ExportedSegmenter(path)
        image = mapper(DatasetCatalog.get("sift_flow_test", str(root))[0])["image"].permute(1, 2, 0).numpy()
        got = seg(np.ascontiguousarray(image))
        assert got["probs"].shape == (k, 64, 64)
        np.testing.assert_array_equal(got["labels"], preds[head][0])


def test_multi_task_loss_weights_come_from_the_config(tmp_path):
    cfg = load_config(SIFT_CPU, ["MODEL.MULTI_TASK.EXTRA_LABEL_SETS", "[{'NAME': 'geometric', 'NUM_CLASSES': 3, "
                                 "'LOSS_WEIGHT': 0.25}]", "MODEL.MULTI_TASK.MAIN_LOSS_WEIGHT", "2.0"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    targets = torch.stack([torch.randint(0, 33, (2, 64, 64)), torch.randint(0, 3, (2, 64, 64))], 1)
    torch.manual_seed(1)
    losses = model(images, targets)
    model.eval()
    with torch.no_grad():
        scores = split_label_sets(model(images), model.label_sets)
    ce = torch.nn.functional.nll_loss
    # Dropout is off in the CPU config, so eval-mode scores are the training scores.
    assert float(losses["loss_cross_entropy"].detach()) == pytest.approx(2.0 * float(ce(scores["sem_seg"], targets[:, 0])), rel=1e-5)
    assert float(losses["loss_cross_entropy_geometric"].detach()) == pytest.approx(
        0.25 * float(ce(scores["geometric"], targets[:, 1])), rel=1e-5)


def test_nyud_rgb_hha_late_fusion_trains_evaluates_and_exports(tmp_path, cache):
    root = tmp_path / "data"
    layouts.write_nyud(str(root), {"trainval": ["5001", "5002", "5003"], "test": ["5004", "5005"]}, size=(48, 64))
    cfg, trainer, results = _train(NYUD_CPU, root, tmp_path / "out")
    assert "loss_cross_entropy" in _losses(tmp_path / "out")
    assert set(results) == {"sem_seg"} and len([k for k in results["sem_seg"] if k.startswith("IoU-")]) == 40
    model = trainer.model.eval()
    assert list(model.branches) == ["image", "hha"]
    # Late fusion is the sum of the two branches' scores.
    mapper = DatasetMapper(num_classes=40, inputs=("image", "hha"))
    record = DatasetCatalog.get("nyudv2_40_test", str(root))[0]
    x = mapper(record)["image"][None]
    assert x.shape == (1, 6, 48, 64)
    with torch.no_grad():
        fused = model(x)
        norm = model.normalize(x)
        parts = [b(norm[:, 3 * i: 3 * i + 3]) for i, b in enumerate(model.branches.values())]
    from segkit.modeling import upsample_logits
    torch.testing.assert_close(fused, upsample_logits(parts[0] + parts[1], (48, 64)))
    # Pixel accuracy against a direct computation over the test set.
    preds, targets = [], []
    for r in DatasetCatalog.get("nyudv2_40_test", str(root)):
        s = mapper(r)
        with torch.no_grad():
            preds.append(model(s["image"][None])[0].argmax(0).numpy())
        targets.append(s["sem_seg"].numpy())
    assert results["sem_seg"]["pACC"] == pytest.approx(_accuracy(np.stack(preds), np.stack(targets)), abs=1e-9)
    # The exported graph takes the 6 stacked channels.
    path = export(cfg, str(tmp_path / "out" / "model_final.pth"), "onnx", str(tmp_path / "m.onnx"))
    seg = ExportedSegmenter(path)
    assert seg.metadata["modalities"] == ["image", "hha"]
    batch = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(seg.run_batch(batch)["labels"][0], preds[0])
    # The Predictor takes the image and the other inputs by name.
    predictor = Predictor(cfg, weights=str(tmp_path / "out" / "model_final.pth"))
    rgb, hha = batch[0, :, :, :3], batch[0, :, :, 3:]
    np.testing.assert_array_equal(predictor(rgb, inputs={"hha": hha}).labels, preds[0])
    two = predictor([rgb, rgb[:40, :56]], inputs={"hha": [hha, hha[:40, :56]]})
    np.testing.assert_array_equal(two[0].labels, preds[0])
    assert two[1].labels.shape == (40, 56)
    with pytest.raises(ValueError, match=r"INPUT.MODALITIES \['image', 'hha'\].*inputs=\{'hha': ...\}"):
        predictor(rgb)
    with pytest.raises(ValueError, match="input 'hha' is 56x40"):
        predictor(rgb, inputs={"hha": hha[:40, :56]})


@pytest.mark.parametrize("config", CONTEXT_CPU, ids=[os.path.basename(c) for c in CONTEXT_CPU])
def test_pascal_context_models_train_and_evaluate(config, tmp_path):
    root = tmp_path / "data"
    layouts.write_pascal_context(str(root), {"train": ["2008_000002", "2008_000003"], "val": ["2008_000007"]},
                                 size=(40, 48))
    cfg, trainer, results = _train(config, root, tmp_path / "out", iters=2)
    assert cfg.MODEL.NUM_CLASSES == 60
    assert len([k for k in results["sem_seg"] if k.startswith("IoU-")]) == 60
    model = trainer.model.eval()
    sample = DatasetMapper(num_classes=60)(DatasetCatalog.get("pascal_context_59_val", str(root))[0])
    with torch.no_grad():
        pred = model(sample["image"][None])[0].argmax(0).numpy()
    assert results["sem_seg"]["pACC"] == pytest.approx(_accuracy(pred, sample["sem_seg"].numpy()), abs=1e-9)


def test_multi_task_scores_survive_the_engines_softmax_and_view_averaging():
    """The engine's inference softmaxes over all channels and averages views: per set, that is
    each set's own softmax averaged, divided by the number of sets."""
    from segkit.postprocess.inference import SegmentationInference

    cfg = load_config(SIFT_CPU)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    images = torch.randint(0, 256, (1, 3, 64, 48), dtype=torch.uint8)
    probs = SegmentationInference(model, scales=(1.0,), flip=True)(images)
    with torch.no_grad():
        views = [model(images), model(images.flip(-1)).flip(-1)]
    for name, k in model.label_sets:
        own = sum(torch.softmax(split_label_sets(v, model.label_sets)[name], 1) for v in views) / 2
        got = split_label_sets(probs, model.label_sets)[name]
        torch.testing.assert_close(got * len(model.label_sets), own, rtol=1e-5, atol=1e-6)


def test_late_fusion_starts_from_two_single_input_nets_and_sums_their_scores():
    """FCN sec. 5: the RGB-HHA net is the sum of an RGB and an HHA net."""
    from segkit.modeling.meta_arch import fuse_branch_state_dicts

    nets = {}
    for i, (name, config) in enumerate((("image", "fcn32s_vgg16_rgb.yaml"), ("hha", "fcn32s_vgg16_hha.yaml"))):
        cfg = load_config(os.path.join(CONFIGS, "nyudv2", config), ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAINED",
                                                                    "", "MODEL.VGG.WIDTH", "8", "MODEL.VGG.FC_CHANNELS",
                                                                    "16"])
        torch.manual_seed(i)
        nets[name] = build_model(cfg).eval()
        with torch.no_grad():  # FCN score layers start at zero: give them values
            for p in nets[name].parameters():
                p.add_(torch.randn_like(p) * 0.05)
    fused_cfg = load_config(NYUD_CPU, ["MODEL.VGG.FC_CHANNELS", "16"])
    fused = build_model(fused_cfg).eval()
    fused.load_state_dict(fuse_branch_state_dicts({k: v.state_dict() for k, v in nets.items()}))
    rgb = torch.randint(0, 256, (1, 3, 40, 56), dtype=torch.uint8)
    hha = torch.randint(0, 256, (1, 3, 40, 56), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(fused(torch.cat([rgb, hha], 1)), nets["image"](rgb) + nets["hha"](hha),
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="input 'hha' has no backbone"):
        fuse_branch_state_dicts({"hha": {"weight": torch.zeros(1)}})
