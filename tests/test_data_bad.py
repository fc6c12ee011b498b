"""Bad data: each case fails naming the file and the problem, or is skipped and counted."""
import os

import numpy as np
import pytest

from data_fixtures import layouts
from segkit.config import get_cfg
from segkit.data import DataError, DatasetCatalog, DatasetMapper, MetadataCatalog, build_test_loader, build_train_loader
from segkit.data.catalog import register_semseg
from segkit.data.datasets.voc import VOC_CLASSES, load_voc_semseg, voc_palette

IDS = ["ok0", "ok1", "bad", "ok2"]


def _break(voc, case):
    img, mask = f"{voc}/JPEGImages/bad.jpg", f"{voc}/SegmentationClass/bad.png"
    if case == "missing_image":
        os.remove(img)
    elif case == "missing_mask":
        os.remove(mask)
    elif case == "truncated_image":
        data = open(img, "rb").read()
        open(img, "wb").write(data[: len(data) * 2 // 3])
    elif case == "not_an_image":
        open(img, "wb").write(b"<html>404 not found</html>")
    elif case == "truncated_mask":
        data = open(mask, "rb").read()
        open(mask, "wb").write(data[: len(data) // 2])
    elif case == "labels_outside":
        m = np.zeros((30, 40), np.uint8)
        m[3, 4], m[5, 6] = 21, 40
        layouts.write_palette_png(mask, m)
    elif case == "size_mismatch":
        layouts.write_palette_png(mask, np.zeros((31, 40), np.uint8))
    return img, mask


CASES = {
    "missing_image": ("img", r"image file not found"),
    "missing_mask": ("mask", r"mask file not found"),
    "truncated_image": ("img", r"truncated|cannot be decoded"),
    "not_an_image": ("img", r"cannot be decoded"),
    "truncated_mask": ("mask", r"mask cannot be read"),
    "labels_outside": ("mask", r"label values \{21, 40\} outside the 21 classes \[0, 20\] and the ignore value 255"),
    "size_mismatch": ("mask", r"mask size 40x31 \(WxH\) differs from its image .*bad\.jpg \(40x30\)"),
}


@pytest.fixture
def broken(tmp_path, request):
    case = request.param
    layouts.write_voc(str(tmp_path), {"train": IDS, "val": IDS}, size=(30, 40))
    voc = str(tmp_path / "VOCdevkit" / "VOC2012")
    paths = _break(voc, case)
    name = f"broken_{case}"
    register_semseg(name, lambda r: load_voc_semseg(voc, "train"), VOC_CLASSES, voc_palette(21))
    yield case, name, dict(zip(("img", "mask"), paths))
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _cfg(name, skip=False, workers=0):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.SKIP_BAD_RECORDS = skip
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.MODEL.NUM_CLASSES = 21
    cfg.INPUT.TRAIN_TRANSFORMS = []
    cfg.SEED = 1
    return cfg


@pytest.mark.parametrize("broken", list(CASES), indirect=True)
def test_error_names_file_and_problem(broken):
    case, name, paths = broken
    which, pattern = CASES[case]
    record = [r for r in DatasetCatalog.get(name) if r["image_id"] == "bad"][0]
    with pytest.raises(DataError, match=pattern) as info:
        DatasetMapper(num_classes=21)(record)
    assert str(info.value).startswith(paths[which])


@pytest.mark.parametrize("broken", ["labels_outside", "truncated_image"], indirect=True)
def test_worker_error_reaches_the_main_process_with_the_file(broken):
    case, name, paths = broken
    with pytest.raises(Exception, match=os.path.basename(paths[CASES[case][0]])):
        for _ in build_test_loader(_cfg(name, workers=2), name, batch_size=2):
            pass


@pytest.mark.parametrize("broken", list(CASES), indirect=True)
def test_skip_mode_skips_counts_and_reports(broken, caplog):
    case, name, paths = broken
    cfg = _cfg(name, skip=True)
    loader = build_test_loader(cfg, name, batch_size=2)
    seen = [r["image_id"] for b in loader for r in b["records"]]
    assert seen == ["ok0", "ok1", "ok2"]
    assert loader.bad_records.num_skipped == 1
    assert paths["img"] in loader.bad_records.problems
    assert "1 bad record(s) skipped 1 time(s)" in caplog.text
    # Training: the bad record is replaced by the next one; every batch stays full.
    train = build_train_loader(cfg)
    it = iter(train)
    batches = [next(it) for _ in range(3)]  # 12 samples over 4 records: "bad" drawn 3 times
    assert all(len(b["records"]) == 4 for b in batches)
    assert all(r["image_id"] != "bad" for b in batches for r in b["records"])
    assert train.bad_records.num_skipped == 3
    assert "skipped 3 time(s)" in train.bad_records.report()


def test_empty_split_names_dataset_and_file(tmp_path):
    layouts.write_voc(str(tmp_path), {"train": ["a"]})
    split = tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text("\n")
    with pytest.raises(DataError, match=f"{split}: split list is empty"):
        DatasetCatalog.get("voc_2012_val", str(tmp_path))
    register_semseg("empty_ds", lambda root: [], ["a"], [(0, 0, 0)])
    try:
        with pytest.raises(DataError, match="Dataset 'empty_ds' is empty"):
            DatasetCatalog.get("empty_ds")
    finally:
        DatasetCatalog.remove("empty_ds")
        MetadataCatalog.remove("empty_ds")


def test_missing_dataset_root_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="no PASCAL VOC 2012 found .*DATASETS.ROOT"):
        DatasetCatalog.get("voc_2012_train", str(tmp_path))


def test_non_data_errors_are_not_skipped_and_name_the_file(tmp_path):
    layouts.write_voc(str(tmp_path), {"train": ["a", "b"]}, size=(30, 40))
    voc = str(tmp_path / "VOCdevkit" / "VOC2012")
    register_semseg("normalising_ds", lambda r: load_voc_semseg(voc, "train"), VOC_CLASSES, voc_palette(21))
    try:
        cfg = _cfg("normalising_ds", skip=True)
        cfg.INPUT.TRAIN_TRANSFORMS = [{"NAME": "Normalize"}]  # float output: a config error, not bad data
        with pytest.raises(RuntimeError, match=r"a\.jpg|b\.jpg") as info:
            next(iter(build_train_loader(cfg)))
        assert "must keep uint8" in str(info.value)
    finally:
        DatasetCatalog.remove("normalising_ds")
        MetadataCatalog.remove("normalising_ds")


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
@pytest.mark.parametrize("values,ok", [([0, 5, 255], True), ([0, 20, 255], True), ([0, 21], False), ([254], False)])
def test_check_labels_fast_and_slow_paths(dtype, values, ok):
    from segkit.data.mapper import check_labels

    mask = np.array(values * 4, dtype=dtype).reshape(-1, len(values))
    if ok:
        check_labels(mask, 21, 255, "m.png")
    else:
        with pytest.raises(DataError, match=r"m\.png: mask holds label values"):
            check_labels(mask, 21, 255, "m.png")


@pytest.mark.parametrize("broken", ["missing_image"], indirect=True)
def test_worker_error_ends_the_loader_at_once(broken):
    """No worker of the failed loader outlives the error (they used to linger until the
    abandoned iterator was garbage-collected, then stall the teardown for 5 s each)."""
    import multiprocessing
    import time

    case, name, paths = broken
    before = set(multiprocessing.active_children())
    with pytest.raises(Exception, match=os.path.basename(paths["img"])) as info:
        for _ in build_test_loader(_cfg(name, workers=2), name, batch_size=1):
            pass
    start = time.monotonic()
    left = [p for p in multiprocessing.active_children() if p not in before and p.is_alive()]
    assert left == [], left  # while the traceback (and the loader's frame) is still alive
    assert time.monotonic() - start < 1.0
    assert info.value is not None
