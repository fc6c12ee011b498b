"""Shipped configs: model_zoo listing/paths/loading and ``segkit://`` references in _BASE_."""
import os

import pytest
import yaml

from segkit import model_zoo
from segkit.config import ConfigError, load_config
from segkit.config.locate import configs_root, resolve_config_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_list_configs_is_the_configs_folder():
    names = model_zoo.list_configs()
    on_disk = sorted(
        os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "configs")).replace(os.sep, "/")
        for d, _, files in os.walk(os.path.join(ROOT, "configs")) for f in files
        if f.endswith(".yaml") and not f.startswith("Base-"))
    assert names == on_disk and "fashion_scenes/main.yaml" in names
    assert all(not n.split("/")[-1].startswith("Base-") for n in names)
    assert "voc/Base-DeepLabV2.yaml" in model_zoo.list_configs("voc/", include_bases=True)
    assert all(n.startswith("voc/") for n in model_zoo.list_configs("voc/"))


def test_get_config_file_and_get_config():
    path = model_zoo.get_config_file("fashion_scenes/main.yaml")
    assert os.path.samefile(path, os.path.join(ROOT, "configs", "fashion_scenes", "main.yaml"))
    assert model_zoo.get_config_file("segkit://fashion_scenes/main.yaml") == path
    cfg = model_zoo.get_config("fashion_scenes/main.yaml", ["SOLVER.MAX_ITER", 7])
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.MODEL.HEAD.NAME == "FCNHead" and cfg.MODEL.RESNETS.OUTPUT_STRIDE == 16
    with pytest.raises(FileNotFoundError, match="Did you mean 'fashion_scenes/main.yaml'"):
        model_zoo.get_config_file("fashion_scene/main.yaml")


def test_every_shipped_config_loads():
    for name in model_zoo.list_configs():
        cfg = load_config("segkit://" + name, load_plugins=False)
        assert cfg.MODEL.NUM_CLASSES > 1, name


def test_base_package_reference_from_any_folder(tmp_path):
    user = tmp_path / "elsewhere" / "my.yaml"
    user.parent.mkdir()
    user.write_text(yaml.safe_dump({"_BASE_": "segkit://voc/Base-DeepLabV2.yaml", "SOLVER": {"MAX_ITER": 11}}))
    cfg = load_config(str(user), load_plugins=False)
    direct = load_config(os.path.join(ROOT, "configs", "voc", "Base-DeepLabV2.yaml"), load_plugins=False)
    assert cfg.SOLVER.MAX_ITER == 11
    direct.defrost()
    direct.SOLVER.MAX_ITER = 11
    assert cfg.dump() == direct.dump()
    # A list of bases mixing a package reference and a relative file.
    (user.parent / "extra.yaml").write_text(yaml.safe_dump({"SOLVER": {"BASE_LR": 0.123}}))
    user.write_text(yaml.safe_dump({"_BASE_": ["segkit://fashion_scenes/main.yaml", "extra.yaml"]}))
    cfg = load_config(str(user), load_plugins=False)
    assert cfg.SOLVER.BASE_LR == 0.123 and cfg.MODEL.HEAD.NAME == "FCNHead"


def test_bad_package_references_name_the_file(tmp_path):
    user = tmp_path / "my.yaml"
    user.write_text(yaml.safe_dump({"_BASE_": "segkit://voc/Base-DeepLabV9.yaml"}))
    with pytest.raises(ConfigError, match="Base-DeepLabV9.yaml"):
        load_config(str(user), load_plugins=False)
    with pytest.raises(ConfigError, match="does not name a file under segkit's configs"):
        load_config("segkit://../pyproject.toml", load_plugins=False)
    with pytest.raises(ValueError):
        resolve_config_path("segkit://")


def test_resolve_config_path_plain_paths(tmp_path):
    assert resolve_config_path("a/b.yaml", relative_to=str(tmp_path)) == os.path.join(str(tmp_path), "a/b.yaml")
    assert resolve_config_path(str(tmp_path / "x.yaml"), relative_to="/elsewhere") == str(tmp_path / "x.yaml")
    assert resolve_config_path("segkit://voc/Base-VOC.yaml") == os.path.join(configs_root(), "voc", "Base-VOC.yaml")


def test_docs_example_runs(capsys):
    import runpy

    example = runpy.run_path(os.path.join(ROOT, "examples", "model_zoo", "use_model_zoo.py"))
    out = example["main"]()
    assert "fashion_scenes/main.yaml" in out["names"] and os.path.isfile(out["path"])
    assert out["cfg"].SOLVER.MAX_ITER == 200
    mine = out["mine"]
    main = load_config(out["path"], load_plugins=False)
    assert mine.SOLVER.MAX_ITER == 1000 and mine.SOLVER.BASE_LR == 0.001 and mine.OUTPUT_DIR == "output/my_fashion_run"
    assert mine.MODEL.dump() == main.MODEL.dump()  # everything else comes from the shipped config
    assert "my_config.yaml: head FCNHead" in capsys.readouterr().out
