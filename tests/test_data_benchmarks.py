"""NYUDv2 (RGB, depth, HHA), SIFT Flow (two label sets) and PASCAL-Context read from their real on-disk layouts."""
import os

import numpy as np
import pytest
import torch

from data_fixtures import layouts
from segkit.data import DataError, DatasetCatalog, DatasetMapper, MetadataCatalog, collate_batch
from segkit.data.datasets.nyudv2 import NYUDV2_40_CLASSES, nyud_camera, read_depth
from segkit.data.datasets.pascal_context import PASCAL_CONTEXT_59_CLASSES
from segkit.data.datasets.sift_flow import SIFT_FLOW_CLASSES, SIFT_FLOW_GEO_CLASSES
from segkit.data.hha import NYU_INTRINSICS, depth_to_hha


def shifted(mask):
    """Oracle of the "0 = unlabelled, k -> k - 1" convention, written out value by value."""
    out = np.full(mask.shape, 255, np.int64)
    for v in np.unique(mask):
        if v > 0:
            out[mask == v] = v - 1
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("SEGKIT_CACHE", str(path))
    return path


# ----------------------------------------------------------------------------- NYUDv2
def test_nyud_splits_labels_and_metadata(tmp_path, cache):
    data = layouts.write_nyud(str(tmp_path), {"train": ["5001", "5003"], "val": ["5004"],
                                              "trainval": ["5001", "5003", "5004"], "test": ["5002"]})
    trainval = DatasetCatalog.get("nyudv2_40_trainval", str(tmp_path))
    assert [r["image_id"] for r in trainval] == ["5001", "5003", "5004"]
    assert [r["image_id"] for r in DatasetCatalog.get("nyudv2_40_test", str(tmp_path))] == ["5002"]
    assert len(DatasetCatalog.get("nyudv2_40_train", str(tmp_path))) == 2
    r = trainval[0]
    assert r["file_name"].endswith(os.path.join("nyud", "data", "images", "img_5001.png"))
    assert (r["height"], r["width"]) == (24, 32)
    # 24 x 32 taken as a centred crop of the 480 x 640 frame.
    assert r["camera"] == pytest.approx([NYU_INTRINSICS[0], NYU_INTRINSICS[1], NYU_INTRINSICS[2] - 304, NYU_INTRINSICS[3] - 228])
    out = DatasetMapper(num_classes=40)(r)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), data["5001"]["image"])
    np.testing.assert_array_equal(out["sem_seg"].numpy(), shifted(data["5001"]["mask"]))
    assert set(np.unique(out["sem_seg"].numpy())) == {255, 0, 1, 39}
    meta = MetadataCatalog.get("nyudv2_40_test")
    assert meta.stuff_classes == NYUDV2_40_CLASSES and len(meta.stuff_classes) == 40 and meta.ignore_label == 255
    assert meta.stuff_classes[0] == "wall" and meta.stuff_classes[39] == "otherprop"


def test_nyud_depth_and_hha_cached_atomically_on_first_use(tmp_path, cache):
    data = layouts.write_nyud(str(tmp_path), {"trainval": ["5001"], "test": ["5002"]})
    r = DatasetCatalog.get("nyudv2_40_trainval", str(tmp_path))[0]
    depth = read_depth(r["depth_file_name"])
    np.testing.assert_allclose(depth, data["5001"]["depth_mm"] / 1000.0)
    assert str(cache) in r["hha_file_name"] and not os.path.exists(r["hha_file_name"])
    mapper = DatasetMapper(num_classes=40, inputs=("image", "hha"), pixel_mean=[0.0] * 6)
    out = mapper(r)
    expected = depth_to_hha(depth, r["camera"])
    assert out["image"].shape == (6, 24, 32) and out["image"].dtype == torch.uint8
    np.testing.assert_array_equal(out["image"][:3].permute(1, 2, 0).numpy(), data["5001"]["image"])
    np.testing.assert_array_equal(out["image"][3:].permute(1, 2, 0).numpy(), expected)
    assert (expected[0, :3] == 0).all() and expected[..., 0].max() > 0  # holes are 0, the rest is not
    # Written once, atomically (no temporary left), then read back instead of recomputed.
    folder = os.path.dirname(r["hha_file_name"])
    assert os.listdir(folder) == ["img_5001.png"]
    import cv2
    marker = np.full_like(expected, 7)
    cv2.imwrite(r["hha_file_name"], marker)
    np.testing.assert_array_equal(mapper(r)["image"][3:].numpy(), 7)


def test_nyud_hha_only_input(tmp_path, cache):
    layouts.write_nyud(str(tmp_path), {"trainval": ["5001"], "test": ["5002"]})
    r = DatasetCatalog.get("nyudv2_40_trainval", str(tmp_path))[0]
    out = DatasetMapper(num_classes=40, inputs=("hha",))(r)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), depth_to_hha(read_depth(r["depth_file_name"]),
                                                                                      r["camera"]))


def test_nyud_without_cache_env_uses_the_dataset_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGKIT_CACHE", raising=False)
    layouts.write_nyud(str(tmp_path), {"trainval": ["5001"], "test": ["5002"]})
    r = DatasetCatalog.get("nyudv2_40_trainval", str(tmp_path))[0]
    assert r["hha_file_name"].startswith(os.path.join(str(tmp_path), "nyud", "cache", "hha"))


def test_nyud_transforms_move_image_hha_and_mask_together(tmp_path, cache):
    data = layouts.write_nyud(str(tmp_path), {"trainval": ["5001"], "test": ["5002"]})
    r = DatasetCatalog.get("nyudv2_40_trainval", str(tmp_path))[0]
    flip = [{"NAME": "HorizontalFlip", "ARGS": {"p": 1.0}}]
    mapper = DatasetMapper(num_classes=40, inputs=("image", "hha"), transforms=flip, pixel_mean=[0.0] * 6)
    out = mapper(r, seed=3)
    hha = depth_to_hha(read_depth(r["depth_file_name"]), r["camera"])
    np.testing.assert_array_equal(out["image"][:3].permute(1, 2, 0).numpy(), data["5001"]["image"][:, ::-1])
    np.testing.assert_array_equal(out["image"][3:].permute(1, 2, 0).numpy(), hha[:, ::-1])
    np.testing.assert_array_equal(out["sem_seg"].numpy(), shifted(data["5001"]["mask"])[:, ::-1])
    # A random scale-crop draws one geometry for all three.
    crop = [{"NAME": "RandomScaleCrop", "ARGS": {"crop_size": 16, "scale_range": [0.5, 2.0]}}]
    mapper = DatasetMapper(num_classes=40, inputs=("image", "image_copy"), transforms=crop)
    rec = dict(r, image_copy_file_name=r["file_name"])
    out = mapper(rec, seed=11)
    np.testing.assert_array_equal(out["image"][:3].numpy(), out["image"][3:].numpy())


def test_nyud_missing_depth_names_the_file(tmp_path, cache):
    layouts.write_nyud(str(tmp_path), {"trainval": ["5001"], "test": ["5002"]})
    r = DatasetCatalog.get("nyudv2_40_trainval", str(tmp_path))[0]
    os.remove(r["depth_file_name"])
    with pytest.raises(DataError, match="img_5001.png: depth file not found"):
        DatasetMapper(num_classes=40, inputs=("image", "hha"))(r)
    with pytest.raises(DataError, match="input 'nir'.*no 'nir_file_name'"):
        DatasetMapper(num_classes=40, inputs=("image", "nir"))(r)


def test_nyud_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no NYUDv2 found"):
        DatasetCatalog.get("nyudv2_40_test", str(tmp_path))


def test_nyud_camera_full_frame_is_unchanged():
    assert nyud_camera(480, 640) == pytest.approx(list(NYU_INTRINSICS))


# ----------------------------------------------------------------------------- SIFT Flow
def test_sift_flow_two_label_sets(tmp_path):
    data = layouts.write_sift_flow(str(tmp_path), {"trainval": ["coast_arnat59", "street_par151"],
                                                   "test": ["insidecity_art1160"]}, size=(32, 32))
    trainval = DatasetCatalog.get("sift_flow_trainval", str(tmp_path))
    assert [r["image_id"] for r in trainval] == ["coast_arnat59", "street_par151"]
    assert len(DatasetCatalog.get("sift_flow_test", str(tmp_path))) == 1
    r = dict(trainval[0], height=32, width=32)
    single = DatasetMapper(num_classes=33)(r)
    np.testing.assert_array_equal(single["sem_seg"].numpy(), shifted(data["coast_arnat59"]["semantic"]))
    assert {255, 27, 32} <= set(np.unique(single["sem_seg"].numpy())) <= {255, 0, 16, 27, 32}
    both = DatasetMapper(num_classes=33, label_sets=[("geometric", 3)])(r)
    assert both["sem_seg"].shape == (2, 32, 32)
    np.testing.assert_array_equal(both["sem_seg"][0].numpy(), shifted(data["coast_arnat59"]["semantic"]))
    geo = data["coast_arnat59"]["geometric"]
    expected = shifted(np.maximum(geo, 0))  # -1 and 0 are both unlabelled
    np.testing.assert_array_equal(both["sem_seg"][1].numpy(), expected)
    assert {255, 2} <= set(np.unique(both["sem_seg"][1].numpy())) <= {255, 0, 1, 2}
    meta = MetadataCatalog.get("sift_flow_trainval")
    assert meta.stuff_classes == SIFT_FLOW_CLASSES and len(meta.stuff_classes) == 33
    assert meta.label_sets == {"geometric": ["sky", "horizontal", "vertical"]} == {"geometric": SIFT_FLOW_GEO_CLASSES}
    # Collate stacks label sets per sample and pads them all with the ignore value.
    other = DatasetMapper(num_classes=33, label_sets=[("geometric", 3)])(dict(trainval[1], height=32, width=32))
    other["image"], other["sem_seg"] = other["image"][:, :30, :28], other["sem_seg"][:, :30, :28]
    batch = collate_batch([both, other])
    assert batch["sem_seg"].shape == (2, 2, 32, 32) and batch["image"].shape == (2, 3, 32, 32)
    assert (batch["sem_seg"][1, :, 30:, :] == 255).all() and (batch["sem_seg"][1, :, :, 28:] == 255).all()


def test_sift_flow_geometric_out_of_range_is_reported(tmp_path):
    layouts.write_sift_flow(str(tmp_path), {"trainval": ["a"], "test": ["b"]}, size=(16, 16), geo=(0, 1, 2, 3, 4))
    r = DatasetCatalog.get("sift_flow_trainval", str(tmp_path))[0]
    with pytest.raises(DataError, match=r"GeoLabels.*a\.mat: mask holds label values \{3\}"):
        DatasetMapper(num_classes=33, label_sets=[("geometric", 3)])(r)
    with pytest.raises(DataError, match="label set 'depth'.*no 'depth_sem_seg_file_name'"):
        DatasetMapper(num_classes=33, label_sets=[("depth", 3)])(r)


def test_sift_flow_full_size_record_matches_file(tmp_path):
    layouts.write_sift_flow(str(tmp_path), {"trainval": ["a"], "test": ["b"]}, size=(256, 256))
    r = DatasetCatalog.get("sift_flow_test", str(tmp_path))[0]
    out = DatasetMapper(num_classes=33, label_sets=[("geometric", 3)])(r)
    assert out["image"].shape == (3, 256, 256) and (r["height"], r["width"]) == (256, 256)


# ----------------------------------------------------------------------------- PASCAL-Context
def test_pascal_context_59_plus_background(tmp_path):
    masks = layouts.write_pascal_context(str(tmp_path), {"train": ["2008_000002", "2008_000003"],
                                                         "val": ["2008_000007"]})
    train = DatasetCatalog.get("pascal_context_59_train", str(tmp_path))
    assert [r["image_id"] for r in train] == ["2008_000002", "2008_000003"]
    assert len(DatasetCatalog.get("pascal_context_59_val", str(tmp_path))) == 1
    assert train[0]["file_name"].endswith(os.path.join("VOC2010", "JPEGImages", "2008_000002.jpg"))
    out = DatasetMapper(num_classes=60)(train[0])
    np.testing.assert_array_equal(out["sem_seg"].numpy(), masks["2008_000002"])  # stored ids are train ids
    assert set(np.unique(out["sem_seg"].numpy())) == {0, 1, 37, 59}
    meta = MetadataCatalog.get("pascal_context_59_val")
    assert len(meta.stuff_classes) == 60 and meta.stuff_classes[0] == "background"
    assert meta.stuff_classes[37] == "person" and meta.stuff_classes[59] == "wood"
    assert meta.stuff_classes == PASCAL_CONTEXT_59_CLASSES


def test_pascal_context_label_above_59_is_reported(tmp_path):
    layouts.write_pascal_context(str(tmp_path), {"train": ["a"], "val": ["b"]}, labels=(0, 60))
    r = DatasetCatalog.get("pascal_context_59_train", str(tmp_path))[0]
    with pytest.raises(DataError, match=r"a\.png: mask holds label values \{60\}"):
        DatasetMapper(num_classes=60)(r)


# ----------------------------------------------------------------------------- shared pieces
def test_inputs_of_different_sizes_are_reported(tmp_path, cache):
    data = layouts.write_nyud(str(tmp_path), {"trainval": ["5001"], "test": ["5002"]})
    r = DatasetCatalog.get("nyudv2_40_trainval", str(tmp_path))[0]
    small = str(tmp_path / "small.png")
    layouts.write_png_rgb(small, data["5001"]["image"][:20, :30])
    with pytest.raises(DataError, match=r"input 'nir' is 30x20 \(WxH\), input 'image' 32x24"):
        DatasetMapper(num_classes=40, inputs=("image", "nir"))(dict(r, nir_file_name=small))


def test_atomic_write_leaves_no_partial_file(tmp_path):
    # The HHA cache is written through segkit's one atomic-write helper.
    from segkit.utils.fileio import atomic_write

    target = tmp_path / "sub" / "x.png"

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(target), broken)
    assert os.listdir(tmp_path / "sub") == []
    atomic_write(str(target), b"whole")
    assert target.read_bytes() == b"whole" and os.listdir(tmp_path / "sub") == ["x.png"]
