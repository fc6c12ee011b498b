"""docs/writing_components.md: every example file is imported, passes segkit.testing, and composes a model."""
import importlib
import os
import re
import sys

import pytest
import torch

from segkit import load_components
from segkit.config import get_cfg
from segkit.registry import all_registries
from segkit.testing import (
    check_backbone, check_config, check_dataset, check_evaluator, check_head, check_hook, check_loss,
    check_lr_scheduler, check_meta_arch, check_optimizer, check_postprocessor, check_transform,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "writing_components")
MODULES = ["config_keys", "backbone", "head", "loss", "meta_arch", "transform", "postprocessor", "dataset",
           "evaluator", "hook", "optimizer", "lr_scheduler"]


@pytest.fixture(scope="module")
def examples():
    """Import every example (they register, as a plugin's modules do); registries restored afterwards."""
    load_components()
    saved = {n: (dict(r._obj_map), dict(r._provenance)) for n, r in all_registries().items()}
    sys.path.insert(0, ROOT)
    try:
        yield {m: importlib.import_module(f"examples.writing_components.{m}") for m in MODULES}
    finally:
        sys.path.remove(ROOT)
        for m in MODULES:
            sys.modules.pop(f"examples.writing_components.{m}", None)
        for n, r in all_registries().items():
            r._obj_map.clear(), r._obj_map.update(saved[n][0])
            r._provenance.clear(), r._provenance.update(saved[n][1])
        from segkit.data import MetadataCatalog

        MetadataCatalog._meta.pop("squares_train", None) if hasattr(MetadataCatalog, "_meta") else None


def _cfg():
    cfg = get_cfg()  # has MODEL.TINY_CONV once config_keys is imported
    cfg.merge_from_dict({"MODEL": {
        "BACKBONE": {"NAME": "TinyConvBackbone"}, "HEAD": {"NAME": "SimpleHead", "IN_FEATURES": ["s4"]},
        "META_ARCHITECTURE": "PlainSegmentor", "NUM_CLASSES": 2, "DEVICE": "cpu",
        "LOSS": {"TERMS": [{"NAME": "CrossEntropy"}, {"NAME": "SoftDiceLoss", "WEIGHT": 0.5, "ARGS": {"SMOOTH": 1.0}}]},
        "HDC": {"GRIDDING_CHECK": "off"},
    }})
    return cfg


def test_every_registry_kind_has_an_example(examples):
    for name, registry in all_registries().items():
        modules = {p.module for _n, _o, p in registry.entries()}
        assert any(m.startswith("examples.writing_components.") for m in modules), f"no example for {name}"


def test_config_keys(examples):
    assert check_config("add_tiny_conv_config") == ["MODEL.TINY_CONV", "MODEL.TINY_CONV.WIDTH"]
    assert get_cfg().MODEL.TINY_CONV.WIDTH == 8


def test_backbone_and_head(examples):
    cfg = _cfg()
    backbone = check_backbone("TinyConvBackbone", cfg)
    assert backbone.output_shape()["s8"].channels == 16
    head = check_head("SimpleHead", cfg)
    assert head.stride == 4 and head.num_classes == 2


def test_loss(examples):
    loss = check_loss("SoftDiceLoss", _cfg(), {"SMOOTH": 0.5})
    assert loss.smooth == 0.5 and loss.ignore_value == 255
    perfect = torch.full((1, 2, 3, 3), -20.0)
    perfect[:, 1] = 20.0
    assert float(loss(perfect, torch.ones(1, 3, 3, dtype=torch.long))) == pytest.approx(0.0, abs=1e-6)


def test_meta_arch_trains_and_traces(examples):
    model = check_meta_arch("PlainSegmentor", _cfg(), size=(32, 40))
    assert set(model.loss.terms) == {"cross_entropy", "soft_dice_loss"}


def test_transform_postprocessor_evaluator_hook_solver(examples):
    cfg = _cfg()
    check_transform("RandomPadBottom", {"max_pad": 6})
    assert check_postprocessor("Sharpen", cfg).power == 2.0
    assert check_evaluator("PixelAccuracyEvaluator", cfg).ignore_value == 255
    assert check_hook("StepCounterHook", cfg).steps == 3
    cfg.SOLVER.OPTIMIZER = "RMSprop"
    assert isinstance(check_optimizer("RMSprop", cfg), torch.optim.RMSprop)
    check_lr_scheduler("LinearDecayLR", cfg)


def test_dataset(examples, tmp_path):
    examples["dataset"].make_squares(str(tmp_path), count=3)
    records = check_dataset("squares_train", str(tmp_path))
    assert len(records) == 3 and records[0]["height"] == 32


def test_all_components_train_and_evaluate_together(examples, tmp_path):
    from segkit.engine import DefaultTrainer

    examples["dataset"].make_squares(str(tmp_path / "data"), count=4)
    cfg = _cfg()
    cfg.merge_from_dict({
        "DATASETS": {"TRAIN": ["squares_train"], "TEST": ["squares_train"], "ROOT": str(tmp_path / "data")},
        "INPUT": {"TRAIN_TRANSFORMS": [{"NAME": "RandomPadBottom", "ARGS": {"max_pad": 4}}], "TEST_TRANSFORMS": []},
        "SOLVER": {"OPTIMIZER": "RMSprop", "LR_SCHEDULER_NAME": "LinearDecayLR", "MAX_ITER": 2, "IMS_PER_BATCH": 2,
                   "BASE_LR": 0.001, "EXTRA_HOOKS": ["StepCounterHook"], "LOG_PERIOD": 1, "CHECKPOINT_PERIOD": 100},
        "POSTPROCESS": {"CHAIN": ["Sharpen"]},
        "TEST": {"EVALUATOR": "PixelAccuracyEvaluator", "EVAL_PERIOD": 0, "BEST_METRIC": "", "VIS_NUM_IMAGES": 0},
        "DATALOADER": {"NUM_WORKERS": 0},
        "OUTPUT_DIR": str(tmp_path / "out"),
    })
    trainer = DefaultTrainer(cfg)
    trainer.train()
    results = trainer.test(cfg, trainer.model)
    accuracy = [v for r in results.values() for k, v in r.items() if "pAcc" in str(k)] if isinstance(
        next(iter(results.values())), dict) else []
    assert accuracy and all(0.0 <= a <= 100.0 for a in accuracy), results


def test_docs_page_shows_exactly_the_example_files():
    page = open(os.path.join(ROOT, "docs", "writing_components.md"), encoding="utf-8").read()
    blocks = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", page, flags=re.S)
    shown = {path for path, _ in blocks}
    assert shown == {f"examples/writing_components/{m}.py" for m in MODULES}
    for path, code in blocks:
        assert code == open(os.path.join(ROOT, path), encoding="utf-8").read(), f"{path} differs from the page"
