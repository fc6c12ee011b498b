"""Every format read from fixtures written in the real on-disk layout, labels checked value by value."""
import json
import os

import numpy as np
import pytest
import yaml

from data_fixtures import layouts
from segkit.data import DataError, DatasetCatalog, DatasetMapper, MetadataCatalog
from segkit.data.datasets.ade20k import ADE20K_CLASSES
from segkit.data.datasets.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_TO_TRAIN
from segkit.data.datasets.folder import register_folder_dataset
from segkit.data.datasets.voc import VOC_CLASSES, voc_palette


def _load(record, num_classes, **kw):
    mapper = DatasetMapper(num_classes=num_classes, **kw)
    return mapper(record)


def test_voc_splits_records_and_palette_indices(tmp_path):
    masks = layouts.write_voc(str(tmp_path), {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"],
                                              "trainval": ["2007_000032", "2007_000033", "2007_000039"]})
    train = DatasetCatalog.get("voc_2012_train", str(tmp_path))
    assert [r["image_id"] for r in train] == ["2007_000032", "2007_000039"]
    assert len(DatasetCatalog.get("voc_2012_trainval", str(tmp_path))) == 3
    r = train[0]
    assert r["file_name"].endswith(os.path.join("VOC2012", "JPEGImages", "2007_000032.jpg"))
    assert (r["height"], r["width"]) == (20, 24)
    out = _load(r, 21)
    # Palette PNG read as indices, not colours; the 255 boundary band survives.
    np.testing.assert_array_equal(out["sem_seg"].numpy(), masks["2007_000032"])
    assert set(np.unique(out["sem_seg"].numpy())) == {0, 1, 15, 255}
    meta = MetadataCatalog.get("voc_2012_train")
    assert meta.stuff_classes == VOC_CLASSES and len(meta.stuff_classes) == 21
    assert meta.stuff_colors[15] == (192, 128, 128) and meta.ignore_label == 255


def test_voc_palette_matches_devkit_colours():
    pal = voc_palette(256)
    assert pal[0] == (0, 0, 0) and pal[1] == (128, 0, 0) and pal[2] == (0, 128, 0) and pal[20] == (0, 64, 128)
    assert pal[255] == (224, 224, 192)  # the "void" colour of VOC masks


def test_sbd_mat_and_train_aug_union_minus_val(tmp_path):
    root = str(tmp_path)
    voc_masks = layouts.write_voc(root, {"train": ["a", "b", "c"], "val": ["d", "e"]})
    sbd_masks = layouts.write_sbd(root, {"train": ["b", "d", "f"], "val": ["e", "g"]})
    sbd = DatasetCatalog.get("sbd_train", root)
    assert [r["image_id"] for r in sbd] == ["b", "d", "f"]
    np.testing.assert_array_equal(_load(sbd[2], 21)["sem_seg"].numpy(), sbd_masks["f"])
    aug = {r["image_id"]: r for r in DatasetCatalog.get("voc_2012_train_aug", root)}
    assert sorted(aug) == ["a", "b", "c", "f", "g"]  # VOC val images d, e never enter training
    # VOC's own annotation wins where both exist; SBD-only images read their .mat.
    np.testing.assert_array_equal(_load(aug["b"], 21)["sem_seg"].numpy(), voc_masks["b"])
    assert aug["g"]["sem_seg_file_name"].endswith(os.path.join("cls", "g.mat"))
    np.testing.assert_array_equal(_load(aug["g"], 21)["sem_seg"].numpy(), sbd_masks["g"])


def test_cityscapes_label_ids_to_19_train_ids(tmp_path):
    masks = layouts.write_cityscapes(str(tmp_path), "val", {"frankfurt": ["frankfurt_000000_000294"],
                                                            "lindau": ["lindau_000001_000019"]})
    recs = DatasetCatalog.get("cityscapes_fine_val", str(tmp_path))
    assert [r["image_id"] for r in recs] == ["frankfurt_000000_000294", "lindau_000001_000019"]
    assert recs[0]["sem_seg_file_name"].endswith("frankfurt_000000_000294_gtFine_labelIds.png")
    got = _load(recs[0], 19)["sem_seg"].numpy()
    raw = masks["frankfurt_000000_000294"]
    expected = {7: 0, 26: 13, 33: 18, 0: 255, 5: 255}
    for label_id, train_id in expected.items():
        assert (got[raw == label_id] == train_id).all()
    assert CITYSCAPES_LABEL_TO_TRAIN[24] == 11 and CITYSCAPES_CLASSES[11] == "person"
    assert (CITYSCAPES_LABEL_TO_TRAIN != 255).sum() == 19


def test_ade20k_zero_ignored_and_shift_down(tmp_path):
    masks = layouts.write_ade20k(str(tmp_path), "validation", ["ADE_val_00000001", "ADE_val_00000002"])
    recs = DatasetCatalog.get("ade20k_sem_seg_val", str(tmp_path))
    assert len(recs) == 2 and recs[0]["sem_seg_file_name"].endswith(
        os.path.join("annotations", "validation", "ADE_val_00000001.png"))
    got = _load(recs[0], 150)["sem_seg"].numpy()
    raw = masks["ADE_val_00000001"]
    assert (got[raw == 0] == 255).all() and (got[raw == 1] == 0).all() and (got[raw == 150] == 149).all()
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150


def _folder_fixture(tmp_path, mask_writer, rgb=False, with_list=False):
    rng = np.random.default_rng(5)
    palette = [[0, 0, 0], [250, 0, 0], [0, 250, 0]]
    masks = {}
    for stem in ("img_b", "img_a", "img_c"):
        layouts.write_jpg(str(tmp_path / "images" / f"{stem}.jpg"), layouts.random_image(rng, 12, 14))
        masks[stem] = layouts.blob_mask(rng, 12, 14, (0, 1, 2))
        if rgb:
            colour = np.array(palette + [[255, 255, 255]], np.uint8)[np.where(masks[stem] == 255, 3, masks[stem])]
            layouts.write_png_rgb(str(tmp_path / "masks" / f"{stem}.png"), colour)
        else:
            mask_writer(str(tmp_path / "masks" / f"{stem}.png"), masks[stem])
    desc = {"name": f"parts_{'rgb' if rgb else mask_writer.__name__}", "classes": ["bg", "scratch", "dent"],
            "palette": palette, "mask_format": "rgb" if rgb else "index", "ignore_colors": [[255, 255, 255]],
            "splits": {"train": {"images": "images", "masks": "masks"}}}
    if with_list:
        (tmp_path / "val.txt").write_text("img_c\n")
        desc["splits"]["val"] = {"images": "images", "masks": "masks", "list": "val.txt"}
    return desc, masks


@pytest.mark.parametrize("writer", [layouts.write_grey_png, layouts.write_palette_png])
def test_folder_format_index_and_palette_masks_from_yaml(tmp_path, writer):
    desc, masks = _folder_fixture(tmp_path, writer, with_list=True)
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(desc))
    names = register_folder_dataset(str(path))
    try:
        recs = DatasetCatalog.get(names[0])
        assert [r["image_id"] for r in recs] == ["img_a", "img_b", "img_c"]  # matched by stem, sorted
        assert [r["image_id"] for r in DatasetCatalog.get(names[1])] == ["img_c"]  # split list
        np.testing.assert_array_equal(_load(recs[1], 3)["sem_seg"].numpy(), masks["img_b"])
        meta = MetadataCatalog.get(names[0])
        assert meta.stuff_classes == ["bg", "scratch", "dent"] and meta.stuff_colors[1] == (250, 0, 0)
        assert register_folder_dataset(str(path)) == names  # idempotent
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_folder_format_rgb_masks_from_json(tmp_path):
    desc, masks = _folder_fixture(tmp_path, None, rgb=True)
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(desc))
    (name,) = register_folder_dataset(str(path))
    try:
        recs = DatasetCatalog.get(name)
        np.testing.assert_array_equal(_load(recs[0], 3)["sem_seg"].numpy(), masks["img_a"])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_folder_rgb_mask_with_unknown_colour_names_file(tmp_path):
    desc, _ = _folder_fixture(tmp_path, None, rgb=True)
    desc["ignore_colors"] = []
    img = np.zeros((12, 14, 3), np.uint8)
    img[3, 4] = (9, 9, 9)
    layouts.write_png_rgb(str(tmp_path / "masks" / "img_a.png"), img)
    path = tmp_path / "d.json"
    path.write_text(json.dumps(desc))
    (name,) = register_folder_dataset(str(path))
    try:
        with pytest.raises(DataError, match=r"img_a\.png: mask colour \(9, 9, 9\) at pixel \(y=3, x=4\)"):
            _load(DatasetCatalog.get(name)[0], 3)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_folder_description_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "classes": ["a"], "splits": {}, "mask_format": "rgb"}))
    with pytest.raises(DataError, match="needs a palette"):
        register_folder_dataset(str(path))
    with pytest.raises(DataError, match="not found"):
        register_folder_dataset(str(tmp_path / "missing.yaml"))
