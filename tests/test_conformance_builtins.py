"""Every built-in component of every registry passes segkit.testing (timm-style parameterisation)."""
import pytest

from segkit import load_components
from segkit.data import DataError
from segkit.registry import all_registries
from segkit.testing import (
    check_backbone, check_config, check_dataset, check_evaluator, check_head, check_hook, check_loss,
    check_lr_scheduler, check_meta_arch, check_optimizer, check_postprocessor, check_transform, small_cfg,
)
from segkit.testing.configs import builtin_cases

load_components()


def _ids(cases):
    return [name for name, _ in cases]


def _params(kind):
    cases = builtin_cases(kind)
    assert cases, f"no built-in {kind}"
    return pytest.mark.parametrize("name,case", cases, ids=_ids(cases))


def test_every_registry_has_a_check():
    from segkit.testing import CHECKS

    assert set(CHECKS) == set(all_registries())


@_params("BACKBONE")
def test_backbone(name, case):
    check_backbone(name, case)


@_params("HEAD")
def test_head(name, case):
    head = check_head(name, case)
    assert head.num_classes == case.MODEL.NUM_CLASSES


@_params("META_ARCH")
def test_meta_arch(name, case):
    check_meta_arch(name, case, onnx=True)


@_params("LOSS")
def test_loss(name, case):
    check_loss(name)


@pytest.mark.filterwarnings("ignore::UserWarning")  # albumentations' alias / "no mask" notices
@_params("TRANSFORM")
def test_transform(name, case):
    check_transform(name, case)


@_params("POSTPROCESSOR")
def test_postprocessor(name, case):
    cfg = small_cfg()
    cfg.POSTPROCESS.CRF.ITERATIONS = 2
    check_postprocessor(name, cfg)


@_params("EVALUATOR")
def test_evaluator(name, case):
    check_evaluator(name)


@_params("HOOK")
def test_hook(name, case):
    cfg = small_cfg()
    cfg.TEST.BEST_METRIC = "sem_seg/mIoU"
    check_hook(name, cfg)


@_params("OPTIMIZER")
def test_optimizer(name, case):
    check_optimizer(name)


@_params("LR_SCHEDULER")
def test_lr_scheduler(name, case):
    cfg = small_cfg()
    cfg.SOLVER.STEPS = (3, 6)
    check_lr_scheduler(name, cfg)


@_params("DATASET")
def test_dataset(name, case):
    try:
        check_dataset(name, num_records=2)
    except (DataError, FileNotFoundError) as exc:  # datasets that live on disk are not shipped
        pytest.skip(f"{name}: not available here ({str(exc)[:80]})")


def test_config_extensions_of_the_example_plugin():
    # segkit itself has no config extension; the example plugin's is checked here.
    assert check_config("add_light_decoder_config") == [
        "MODEL.LIGHT_DECODER", "MODEL.LIGHT_DECODER.CHANNELS", "MODEL.LIGHT_DECODER.DROPOUT"]
