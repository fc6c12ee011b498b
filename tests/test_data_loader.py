"""Loaders: batch contract, exact resume, worker independence, sharding, padding."""
import numpy as np
import pytest
import torch

from data_fixtures import layouts
from segkit.config import get_cfg
from segkit.data import (
    DatasetCatalog, MetadataCatalog, TrainingSampler, build_test_loader, build_train_loader, collate_batch,
)
from segkit.data.datasets.voc import VOC_CLASSES, load_voc_semseg, voc_palette
from segkit.data.catalog import register_semseg


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    """A VOC-layout folder with images of two sizes, registered as tiny_voc_{train,val}."""
    root = str(tmp_path_factory.mktemp("voc"))
    ids = [f"im{i:02d}" for i in range(10)]
    layouts.write_voc(root, {"train": ids[:7], "val": ids[7:]}, size=(30, 40))
    layouts.write_voc(root + "/big", {"val": ["big0"]}, size=(36, 52), seed=9)
    voc = root + "/VOCdevkit/VOC2012"
    register_semseg("tiny_voc_train", lambda r: load_voc_semseg(voc, "train"), VOC_CLASSES, voc_palette(21))
    register_semseg("tiny_voc_val", lambda r: load_voc_semseg(voc, "val")
                    + load_voc_semseg(root + "/big/VOCdevkit/VOC2012", "val"), VOC_CLASSES, voc_palette(21))
    yield root
    for n in ("tiny_voc_train", "tiny_voc_val"):
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def _cfg(workers=0, batch=4, fmt="RGB"):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("tiny_voc_train",)
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.INPUT.FORMAT = fmt
    cfg.INPUT.TRAIN_TRANSFORMS = [{"NAME": "DeepLabRandomScaleCrop", "ARGS": {"crop_size": 24}},
                                  {"NAME": "HorizontalFlip", "ARGS": {"p": 0.5}}]
    cfg.SEED = 7
    return cfg


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_train_batch_contract(tiny_voc):
    (b,) = _take(build_train_loader(_cfg()), 1)
    assert b["image"].dtype == torch.uint8 and b["image"].shape == (4, 3, 24, 24)
    assert b["sem_seg"].dtype == torch.int64 and b["sem_seg"].shape == (4, 24, 24)
    assert set(b["sem_seg"].unique().tolist()) <= {0, 1, 15, 255}
    assert len(b["records"]) == 4 and all((r["height"], r["width"]) == (30, 40) for r in b["records"])
    assert set(b) == {"image", "sem_seg", "records", "image_sizes"}
    assert b["image_sizes"] == [(24, 24)] * 4


def test_images_stay_rgb_whatever_the_weights_format(tiny_voc):
    # INPUT.FORMAT is the weights' channel order: the segmentor flips on the device, the loader never does.
    cfg = _cfg()
    cfg.INPUT.TRAIN_TRANSFORMS = []
    rgb = _take(build_train_loader(cfg), 1)[0]["image"]
    cfg.INPUT.FORMAT = "BGR"
    bgr_cfg = _take(build_train_loader(cfg), 1)[0]["image"]
    assert torch.equal(rgb, bgr_cfg)
    assert not torch.equal(rgb, rgb.flip(1))  # the images have colour, so a flip would show


def test_padding_is_the_mean_colour_in_rgb_order(tiny_voc):
    from segkit.data.build import _collate

    cfg = _cfg()
    cfg.MODEL.PIXEL_MEAN = [10.0, 20.0, 30.0]  # given in the weights' order
    small = {"image": torch.zeros(3, 2, 2, dtype=torch.uint8), "sem_seg": torch.zeros(2, 2, dtype=torch.uint8),
             "record": {}}
    big = {"image": torch.zeros(3, 4, 4, dtype=torch.uint8), "sem_seg": torch.zeros(4, 4, dtype=torch.uint8),
           "record": {}}
    for fmt, expected in (("RGB", [10, 20, 30]), ("BGR", [30, 20, 10])):
        cfg.INPUT.FORMAT = fmt
        batch = _collate(cfg)([small, big])
        assert batch["image"][0, :, 3, 3].tolist() == expected


def test_resume_from_start_iter_is_exact(tiny_voc):
    cfg = _cfg()
    full = _take(build_train_loader(cfg), 6)  # 24 samples: crosses epochs of 7 records
    resumed = _take(build_train_loader(cfg, start_iter=4), 2)
    for a, b in zip(full[4:], resumed):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["sem_seg"], b["sem_seg"])
        assert [r["image_id"] for r in a["records"]] == [r["image_id"] for r in b["records"]]
    other_seed = _cfg()
    other_seed.SEED = 8
    assert not torch.equal(full[0]["image"], _take(build_train_loader(other_seed), 1)[0]["image"])


def test_batches_do_not_depend_on_worker_count(tiny_voc):
    a = _take(build_train_loader(_cfg(workers=0)), 3)
    b = _take(build_train_loader(_cfg(workers=2)), 3)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["sem_seg"], y["sem_seg"])


def test_sampler_shards_global_batch_across_ranks():
    single = TrainingSampler(10, batch_size=4, seed=3).batches()
    ranks = [TrainingSampler(10, batch_size=2, seed=3, rank=r, world_size=2).batches() for r in range(2)]
    for _ in range(5):  # 20 positions = 2 epochs
        whole = next(single)
        assert next(ranks[0]) + next(ranks[1]) == whole
    epoch = TrainingSampler(10, batch_size=5, seed=3).batches()
    first = next(epoch) + next(epoch)
    assert sorted(i for i, _ in first) == list(range(10))  # every record once per epoch
    assert len({s for _, s in first}) == 10  # distinct augmentation seeds


def test_collate_pads_with_ignore_and_mean():
    s1 = {"image": torch.full((3, 2, 3), 9, dtype=torch.uint8), "sem_seg": torch.ones(2, 3, dtype=torch.uint8),
          "record": {"height": 2, "width": 3}}
    s2 = {"image": torch.full((3, 4, 2), 5, dtype=torch.uint8), "sem_seg": torch.full((4, 2), 2, dtype=torch.uint8),
          "record": {"height": 4, "width": 2}}
    b = collate_batch([s1, s2], ignore_value=255, pad_value=(10, 20, 30))
    assert b["image"].shape == (2, 3, 4, 3) and b["sem_seg"].dtype == torch.int64
    assert b["sem_seg"][0, 2:].eq(255).all() and b["sem_seg"][1, :, 2:].eq(255).all()
    assert b["sem_seg"][0, :2].eq(1).all() and b["image"][0, :, 3, 0].tolist() == [10, 20, 30]
    assert b["image"][1, :, :, :2].eq(5).all()


def test_test_loader_original_size_and_padding(tiny_voc):
    cfg = _cfg(workers=0)
    loader = build_test_loader(cfg, "tiny_voc_val", batch_size=2)
    batches = list(loader)
    assert len(loader) == 2 and [len(b["records"]) for b in batches] == [2, 2]
    last = batches[1]
    assert last["image"].shape == (2, 3, 36, 52)  # padded to the larger image
    small, big = last["records"]
    assert (small["height"], small["width"], big["height"], big["width"]) == (30, 40, 36, 52)
    assert last["sem_seg"][0, 30:].eq(255).all() and last["sem_seg"][0, :, 40:].eq(255).all()
    ref = np.array(__import__("PIL.Image", fromlist=["Image"]).open(small["sem_seg_file_name"]))
    np.testing.assert_array_equal(last["sem_seg"][0, :30, :40].numpy(), ref)


def test_ranks_of_a_distributed_run_split_the_global_batch(tiny_voc, monkeypatch):
    import segkit.data.build as build

    whole = _take(build_train_loader(_cfg(batch=4)), 2)
    parts = []
    for rank in range(2):
        monkeypatch.setattr(build, "_dist_info", lambda r=rank: (r, 2))
        parts.append(_take(build_train_loader(_cfg(batch=4)), 2))
    for i in range(2):
        joined = torch.cat([parts[0][i]["image"], parts[1][i]["image"]])
        assert parts[0][i]["image"].shape[0] == 2 and torch.equal(joined, whole[i]["image"])
    monkeypatch.setattr(build, "_dist_info", lambda: (0, 3))
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        build_train_loader(_cfg(batch=4))
