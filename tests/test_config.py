"""Config: defaults, _BASE_ inheritance, overrides and each error."""
import pytest

from segkit.config import CfgNode, ConfigError, configurable, get_cfg, load_config, save_config
from segkit.config.defaults import _C


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 1.0
    assert b.SOLVER.BASE_LR == _C.SOLVER.BASE_LR


def test_base_inheritance_chain_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "base.yaml", "SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 10\nOUTPUT_DIR: base_out\n")
    _write(tmp_path / "sub" / "mid.yaml", "_BASE_: ../base.yaml\nSOLVER:\n  MAX_ITER: 20\n")
    child = _write(tmp_path / "sub" / "child.yaml", "_BASE_: mid.yaml\nSEED: 7\n")
    cfg = load_config(child, load_plugins=False)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SEED, cfg.OUTPUT_DIR) == (0.5, 20, 7, "base_out")


def test_command_line_overrides_win_and_are_typed(tmp_path):
    f = _write(tmp_path / "c.yaml", "SOLVER:\n  BASE_LR: 0.5\n")
    cfg = load_config(f, ["SOLVER.BASE_LR", "0.25", "DATASETS.TRAIN", "('a', 'b')", "OUTPUT_DIR", "x/y"],
                      load_plugins=False)
    assert cfg.SOLVER.BASE_LR == 0.25
    assert cfg.DATASETS.TRAIN == ("a", "b")
    assert cfg.OUTPUT_DIR == "x/y"


def test_int_accepted_for_float_and_list_for_tuple():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "1", "DATASETS.TEST", "['v']"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.DATASETS.TEST == ("v",)


def test_unknown_key_names_full_path_file_and_nearest(tmp_path):
    f = _write(tmp_path / "typo.yaml", "SOLVER:\n  BASE_RL: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(f, load_plugins=False)
    msg = str(info.value)
    assert "typo.yaml" in msg and "'SOLVER.BASE_RL'" in msg and "Did you mean 'SOLVER.BASE_LR'?" in msg


def test_unknown_key_in_wrong_section_suggests_by_leaf():
    cfg = get_cfg()
    with pytest.raises(ConfigError, match=r"'INPUT.MAX_ITER'.*Did you mean 'SOLVER.MAX_ITER'"):
        cfg.merge_from_list(["INPUT.MAX_ITER", "3"])


def test_wrong_type_names_key_and_both_types(tmp_path):
    f = _write(tmp_path / "t.yaml", "SOLVER:\n  MAX_ITER: ten\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: config key 'SOLVER\.MAX_ITER' expects int .* got str"):
        load_config(f, load_plugins=False)


def test_bool_is_not_an_int():
    cfg = get_cfg()
    with pytest.raises(ConfigError, match="expects int"):
        cfg.merge_from_list(["SOLVER.MAX_ITER", "True"])


def test_section_replaced_by_scalar_is_rejected():
    cfg = get_cfg()
    with pytest.raises(ConfigError, match="'SOLVER' is a section"):
        cfg.merge_from_dict({"SOLVER": 3})


def test_failed_merge_changes_nothing():
    cfg = get_cfg()
    with pytest.raises(ConfigError):
        cfg.merge_from_dict({"SEED": 5, "NOPE": 1})
    assert cfg.SEED == _C.SEED


@pytest.mark.parametrize(
    "text,match",
    [("SOLVER: [unclosed", "not valid YAML"), ("- a\n- b\n", "must hold a mapping"),
     ("!!python/object/apply:os.system ['echo hi']", "not valid YAML")],
)
def test_bad_files_are_named(tmp_path, text, match):
    f = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(f, load_plugins=False)
    assert "bad.yaml" in str(info.value)


def test_missing_file_and_circular_base(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"), load_plugins=False)
    _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="Circular _BASE_"):
        load_config(str(tmp_path / "a.yaml"), load_plugins=False)


def test_odd_override_list():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        get_cfg().merge_from_list(["SEED"])


def test_saved_config_round_trips(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(["SEED", "3", "DATASETS.TRAIN", "('x',)"])
    path = save_config(cfg, str(tmp_path / "out"))
    again = load_config(path)
    assert again.SEED == 3 and again.DATASETS.TRAIN == ("x",)
    assert again.dump() == cfg.dump()


def test_every_default_key_has_a_comment_above_it():
    import inspect

    import segkit.config.defaults as d

    lines = inspect.getsource(d).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("_C.") and " = " in line and "CN()" not in line:
            assert lines[i - 1].lstrip().startswith("#"), f"defaults.py:{i + 1} has no comment: {line}"


class _Widget:
    @configurable
    def __init__(self, width: int, depth: int = 2):
        self.width, self.depth = width, depth

    @classmethod
    def from_config(cls, cfg, depth=3):
        return {"width": cfg.SOLVER.MAX_ITER, "depth": depth}


def test_configurable_builds_from_args_or_config():
    assert vars(_Widget(4)) == {"width": 4, "depth": 2}
    cfg = get_cfg()
    assert vars(_Widget(cfg)) == {"width": cfg.SOLVER.MAX_ITER, "depth": 3}
    assert vars(_Widget(cfg, depth=5)) == {"width": cfg.SOLVER.MAX_ITER, "depth": 5}


def test_cfgnode_is_fvcore_subclass():
    from fvcore.common.config import CfgNode as Fv

    assert issubclass(CfgNode, Fv)


def test_get_cfg_returns_an_independent_copy_of_the_defaults():
    first = get_cfg()
    default_classes, default_lr = first.MODEL.NUM_CLASSES, first.SOLVER.BASE_LR
    first.MODEL.NUM_CLASSES, first.SOLVER.BASE_LR = default_classes + 7, default_lr * 3
    second = get_cfg()
    assert second is not first
    assert (second.MODEL.NUM_CLASSES, second.SOLVER.BASE_LR) == (default_classes, default_lr)


# ----------------------------------------------------------------------------- the schedule checks (validate.py)
def _schedule(**solver):
    cfg = get_cfg()
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


@pytest.mark.parametrize("steps", [[1, 99], [50], [1, 2]])
def test_multistep_steps_at_the_edges_of_the_range_are_accepted(steps):
    from segkit.config.validate import validate_schedule

    cfg = _schedule(LR_SCHEDULER_NAME="MultiStepLR", MAX_ITER=100, WARMUP_ITERS=0, STEPS=steps)
    validate_schedule(cfg)  # no error
    assert list(cfg.SOLVER.STEPS) == steps and cfg.SOLVER.MAX_ITER == 100


@pytest.mark.parametrize("steps", [[0, 50], [50, 100], [40, 40], [60, 30], [5, 50, 50]])
def test_multistep_steps_outside_the_range_or_not_increasing_are_refused(steps):
    from segkit.config.validate import validate_schedule

    message = r"SOLVER\.STEPS must increase strictly and lie in \(0, SOLVER\.MAX_ITER=100\)"
    with pytest.raises(ConfigError, match=message):
        validate_schedule(_schedule(LR_SCHEDULER_NAME="MultiStepLR", MAX_ITER=100, WARMUP_ITERS=0, STEPS=steps))


def test_schedule_edge_values_are_accepted_and_zero_counts_allowed():
    import warnings

    from segkit.config.validate import clamped_warmup, validate_schedule

    cfg = _schedule(MAX_ITER=1, WARMUP_ITERS=0, CHECKPOINT_PERIOD=0, MAX_TO_KEEP=0)
    cfg.TEST.EVAL_PERIOD = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warm-up == MAX_ITER is no clamp: no warning
        validate_schedule(cfg)
        assert clamped_warmup(20, 20) == 20
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS) == (1, 0)
    with pytest.raises(ConfigError, match=r"TEST\.EVAL_PERIOD must be >= 0, got -1"):
        cfg.TEST.EVAL_PERIOD = -1
        validate_schedule(cfg)


@pytest.mark.parametrize("frozen", [True, False])
def test_warm_up_clamp_keeps_the_frozen_state(frozen):
    from segkit.config.validate import validate_schedule

    cfg = _schedule(MAX_ITER=20, WARMUP_ITERS=50)
    if frozen:
        cfg.freeze()
    with pytest.warns(UserWarning, match=r"SOLVER\.WARMUP_ITERS \(50\) exceeds SOLVER\.MAX_ITER \(20\)"):
        validate_schedule(cfg)
    assert cfg.SOLVER.WARMUP_ITERS == 20
    assert cfg.is_frozen() is frozen


def test_warm_up_warning_points_at_load_config():
    # stacklevel: one location (load_config's call) for every caller, so Python's default
    # filter shows the warning once per process rather than once per calling line.
    import segkit.config.config as config_module

    with pytest.warns(UserWarning, match="WARMUP_ITERS") as record:
        load_config(None, ["SOLVER.MAX_ITER", "20", "SOLVER.WARMUP_ITERS", "50"], load_plugins=False)
    assert [w.filename for w in record if "WARMUP_ITERS" in str(w.message)] == [config_module.__file__]


def test_merge_into_a_frozen_config_applies_and_keeps_it_frozen():
    cfg = get_cfg()
    cfg.freeze()
    cfg.merge_from_list(["SEED", "11"])
    assert cfg.SEED == 11 and cfg.is_frozen()
    thawed = get_cfg()
    thawed.merge_from_list(["SEED", "12"])
    assert thawed.SEED == 12 and not thawed.is_frozen()


def test_non_utf8_config_names_the_line_and_offset(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"SEED: 3\nOUTPUT_DIR: caf\xe9\n")  # Latin-1 e-acute on line 2, byte offset 23
    with pytest.raises(ConfigError, match=r"latin\.yaml is not valid UTF-8: byte b'\\xe9' at line 2 \(offset 23\)"):
        load_config(str(path), load_plugins=False)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfSEED: 5\n")  # a UTF-8 byte-order mark is dropped
    assert load_config(str(bom), load_plugins=False).SEED == 5


def test_load_config_without_plugins_asks_for_none(monkeypatch):
    import segkit.plugins as plugins

    asked = []
    monkeypatch.delenv("SEGKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.setattr(plugins, "load_plugins", lambda allow, on_error, disabled: asked.append(disabled) or [])
    assert load_config(None, ["SEED", "4"], load_plugins=False).SEED == 4
    assert asked[:1] == [True]  # load_config's own call (get_cfg's may follow when no plugin was ever loaded)
