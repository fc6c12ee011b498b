"""The example plugin's own tests, written as a plugin author would: with segkit.testing."""
import pytest

from segkit.registry import CONFIG_REGISTRY, HEAD_REGISTRY
from segkit.testing import check_config, check_head, check_meta_arch, small_cfg
from segkit.testing.pytest_plugin import segkit_check  # noqa: F401  (fixture; also via the pytest11 entry point)


def _cfg():
    cfg = small_cfg({"RESNETS": {"OUT_FEATURES": ["res3", "res5"], "OUTPUT_STRIDE": 16},
                     "HEAD": {"NAME": "LightDecoderHead", "IN_FEATURES": ["res3", "res5"]},
                     "LIGHT_DECODER": {"CHANNELS": 16}})
    return cfg


def test_light_decoder_head_conforms():
    head = check_head("LightDecoderHead", _cfg())
    assert head.stride == 8 and head.num_classes == 5
    assert HEAD_REGISTRY.provenance("LightDecoderHead").distribution == "segkit-example-plugin"


def test_light_decoder_head_in_a_whole_model_trains_and_traces():
    cfg = _cfg()
    cfg.MODEL.LIGHT_DECODER.DROPOUT = 0.0
    model = check_meta_arch("SemanticSegmentor", cfg)
    assert type(model.head).__name__ == "LightDecoderHead"


def test_config_keys_conform(segkit_check):  # noqa: F811
    assert segkit_check(CONFIG_REGISTRY, "add_light_decoder_config") == check_config("add_light_decoder_config")


def test_state_dict_keys_did_not_change_with_the_base_class():
    head = check_head("LightDecoderHead", _cfg(), trace=False)
    assert sorted({k.split(".")[0] for k in head.state_dict()}) == ["classifier", "coarse_proj", "fine_proj", "fuse"]


def test_wrong_in_features_name_what_the_backbone_has():
    cfg = _cfg()
    cfg.MODEL.HEAD.IN_FEATURES = ["res3", "res6"]
    with pytest.raises(ValueError, match=r"asks for \['res6'\].*Available"):
        check_head("LightDecoderHead", cfg)
