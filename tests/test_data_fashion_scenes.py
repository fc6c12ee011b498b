"""FashionScenes: deterministic composition, VOC-layout materialisation, cache keying."""
import os

import numpy as np
from PIL import Image

from segkit.config import get_cfg
from segkit.data import DatasetCatalog, MetadataCatalog, build_train_loader
from segkit.data.datasets import fashion_scenes as fs
from segkit.data.datasets.fashion_scenes import FashionScenesParams, compose_scene, materialize_fashion_scenes

SMALL = FashionScenesParams(num_train=12, num_val=4)


def test_compose_is_deterministic_and_labels_valid():
    a_img, a_mask = compose_scene(SMALL, "train", 3)
    b_img, b_mask = compose_scene(SMALL, "train", 3)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert a_img.shape == (128, 128, 3) and a_img.dtype == np.uint8 and a_mask.shape == (128, 128)
    c_img, _ = compose_scene(SMALL, "train", 4)
    assert not np.array_equal(a_img, c_img)
    labels = set()
    for i in range(30):
        _, m = compose_scene(SMALL, "train", i)
        present = set(np.unique(m).tolist())
        assert 0 in present and present <= set(range(11))
        assert 2 <= len(present) <= 6  # background + 1..5 garment classes (occlusion may hide some)
        labels |= present
    assert labels == set(range(11))  # every class occurs


def test_garment_pixels_differ_from_background_statistics():
    img, mask = compose_scene(SMALL, "val", 0)
    fg = mask > 0
    assert 0.05 < fg.mean() < 0.9
    # Garments are shaded from their own grey levels: their edges are visible in the image.
    edge = np.abs(np.diff(img.astype(np.int32), axis=1)).sum(-1)
    boundary = fg[:, 1:] != fg[:, :-1]
    assert edge[boundary].mean() > 1.5 * edge[~boundary].mean()


def test_train_and_val_sources_are_disjoint():
    g = fs._garments()
    train = {row.tobytes() for row in g["train"][0]}
    assert not any(row.tobytes() in train for row in g["val"][0])
    assert len(g["train"][0]) == 6000 and len(g["val"][0]) == 1000
    assert sorted(set(g["train"][1].tolist())) == list(range(10))


def test_materialises_voc_layout_atomically_keyed_by_params(tmp_path):
    out = materialize_fashion_scenes(SMALL, "train", str(tmp_path), workers=1)
    assert os.path.basename(out) == SMALL.key("train") and f"-v{fs.GENERATOR_VERSION}-" in SMALL.key("train")
    ids = open(os.path.join(out, "ImageSets", "Segmentation", "train.txt")).read().split()
    assert len(ids) == 12 and ids[0] == "train_000000"
    assert os.path.isfile(os.path.join(out, "JPEGImages", "train_000011.jpg"))
    val = materialize_fashion_scenes(SMALL, "val", str(tmp_path), workers=2)
    mask = Image.open(os.path.join(val, "SegmentationClass", "val_000002.png"))
    assert mask.mode == "P"
    np.testing.assert_array_equal(np.array(mask), compose_scene(SMALL, "val", 2)[1])
    assert materialize_fashion_scenes(SMALL, "train", str(tmp_path)) == out  # cached
    more_train = FashionScenesParams(num_train=13, num_val=4)
    assert materialize_fashion_scenes(more_train, "train", str(tmp_path), workers=1) != out  # regenerated
    assert more_train.key("val") == SMALL.key("val")  # val untouched by NUM_TRAIN
    assert FashionScenesParams(num_train=12, num_val=4, seed=1).key("val") != SMALL.key("val")
    leftovers = [d for d in os.listdir(os.path.join(str(tmp_path), "fashion_scenes")) if d.startswith(".")]
    assert leftovers == []


def test_default_names_follow_config_and_train_through_voc_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path))
    saved = fs._BUILTIN.params
    cfg = get_cfg()
    cfg.DATASETS.FASHION_SCENES.NUM_TRAIN = 8
    cfg.DATASETS.FASHION_SCENES.NUM_VAL = 3
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.MODEL.NUM_CLASSES = 11
    try:
        batch = next(iter(build_train_loader(cfg)))
        assert batch["image"].shape == (2, 3, 128, 128)
        assert set(batch["sem_seg"].unique().tolist()) <= set(range(11)) | {255}
        assert batch["records"][0]["file_name"].startswith(str(tmp_path))
        assert len(DatasetCatalog.get("fashion_scenes_val")) == 3
    finally:
        fs._BUILTIN.params = saved
    meta = MetadataCatalog.get("fashion_scenes_train")
    assert meta.stuff_classes[0] == "background" and meta.stuff_classes[10] == "Ankle boot"
    assert len(meta.stuff_colors) == 11 and meta.ignore_label == 255


def test_small_canvases_clamp_garments():
    img, mask = compose_scene(FashionScenesParams(size=48), "train", 1)
    assert img.shape == (48, 48, 3) and mask.max() <= 10


def test_generation_shows_a_progress_bar_counting_every_scene(tmp_path, capsys):
    materialize_fashion_scenes(SMALL, "val", str(tmp_path), workers=1)
    err = capsys.readouterr().err
    assert "FashionScenes val: generating scenes" in err and "4/4" in err
    materialize_fashion_scenes(SMALL, "val", str(tmp_path), workers=1)  # cached: no bar
    assert "generating scenes" not in capsys.readouterr().err
