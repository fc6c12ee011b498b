"""DatasetCatalog / MetadataCatalog behaviour and dataset-root resolution."""
import os

import pytest

from segkit.data import DatasetCatalog, MetadataCatalog, resolve_dataset_root
from segkit.registry import DATASET_REGISTRY, RegistryError, RegistryKeyError


def test_unknown_name_lists_registered_and_suggests():
    with pytest.raises(RegistryKeyError) as info:
        DatasetCatalog.get("voc_2012_trian")
    msg = str(info.value)
    assert "Did you mean 'voc_2012_train'" in msg and "fashion_scenes_val" in msg and "cityscapes_fine_val" in msg


def test_builtin_names_registered():
    names = set(DatasetCatalog.list())
    assert {"voc_2012_train", "voc_2012_val", "voc_2012_train_aug", "sbd_train", "cityscapes_fine_train",
            "ade20k_sem_seg_val", "fashion_scenes_train", "fashion_scenes_val"} <= names
    assert DATASET_REGISTRY.provenance("voc_2012_train").kind == "builtin"


def test_register_with_root_or_without_arguments(tmp_path):
    DatasetCatalog.register("cat_with_root", lambda root: [{"root": root}])
    DatasetCatalog.register("cat_no_args", lambda: [{"x": 1}])
    try:
        assert DatasetCatalog.get("cat_with_root", str(tmp_path)) == [{"root": str(tmp_path)}]
        assert DatasetCatalog.get("cat_no_args") == [{"x": 1}]
        with pytest.raises(RegistryError, match="already registered"):
            DatasetCatalog.register("cat_no_args", lambda: [])
    finally:
        DatasetCatalog.remove("cat_with_root")
        DatasetCatalog.remove("cat_no_args")


def test_metadata_set_once_and_explains_missing_keys():
    meta = MetadataCatalog.get("meta_test").set(stuff_classes=["a", "b"], ignore_label=255)
    try:
        meta.stuff_classes = ["a", "b"]  # same value: fine
        with pytest.raises(ValueError, match="refusing to change"):
            meta.ignore_label = 0
        with pytest.raises(AttributeError, match="has no 'stuff_colors'. It has: ignore_label, stuff_classes"):
            meta.stuff_colors
        assert MetadataCatalog.get("meta_test") is meta
    finally:
        MetadataCatalog.remove("meta_test")


def test_dataset_root_order(monkeypatch):
    monkeypatch.setenv("SEGKIT_DATASETS", "/env/root")
    assert resolve_dataset_root("/cfg/root") == "/cfg/root"
    assert resolve_dataset_root("") == "/env/root"
    monkeypatch.delenv("SEGKIT_DATASETS")
    assert resolve_dataset_root("") == "datasets"


def test_the_suite_writes_generated_datasets_into_a_temporary_cache():
    # conftest points SEGKIT_CACHE at this session's temporary folder (or SEGKIT_TEST_CACHE):
    # the suite never fills the user's ~/.cache/segkit.
    import conftest
    from segkit.data.catalog import default_cache_dir

    assert default_cache_dir() == conftest.SESSION_CACHE
    assert os.environ.get("SEGKIT_TEST_CACHE") or os.path.basename(default_cache_dir()).startswith("segkit-test-cache-")
    assert not default_cache_dir().startswith(os.path.expanduser("~/.cache"))
