"""TRANSFORM_REGISTRY: albumentations by name, DeepLab scale/crop, and no invented labels."""
import albumentations as A
import cv2
import numpy as np
import pytest
from albumentations.core.transforms_interface import DualTransform

from segkit.data.transforms import (
    DeepLabRandomScaleCrop, RandomScaleCrop, apply_transforms, build_transforms,
    seed_transforms,
)
from segkit.registry import TRANSFORM_REGISTRY
from segkit.testing.configs import TRANSFORM_ARGS

IGNORE = 255
LABELS = {3, 7, 9}  # 0 deliberately absent: a fill with 0 would be an invented label
# Required arguments of transforms that have no usable defaults: the conformance kit's table.
REQUIRED_ARGS = TRANSFORM_ARGS
# Transforms that need inputs other than image+mask (boxes, metadata, 3-D volumes, a callable).
NOT_IMAGE_MASK = {
    "AtLeastOneBBoxRandomCrop", "BBoxSafeRandomCrop", "RandomSizedBBoxSafeCrop", "RandomCropNearBBox",
    "CenterCrop3D", "CoarseDropout3D", "PadIfNeeded3D", "Pad3D", "RandomCrop3D", "CubicSymmetry",
    "Mosaic", "OverlayElements", "Lambda", "ToTensor3D", "ToTensorV2",
}


def _dual_names():
    out = []
    for name, cls, _ in TRANSFORM_REGISTRY.entries():
        if isinstance(cls, type) and issubclass(cls, DualTransform) and name not in NOT_IMAGE_MASK:
            out.append(name)
    return out + ["DeepLabRandomScaleCrop"]


def test_registry_exposes_every_albumentations_transform():
    for name in ("HorizontalFlip", "ElasticTransform", "RandomBrightnessContrast", "OneOf", "SomeOf", "Affine",
                 "ColorJitter", "GaussNoise", "DeepLabRandomScaleCrop"):
        assert name in TRANSFORM_REGISTRY
    # The registered objects are the albumentations classes themselves.
    n_albu = sum(isinstance(c, type) and c.__module__.startswith("albumentations")
                 for _, c, _ in TRANSFORM_REGISTRY.entries())
    assert n_albu >= 100
    assert TRANSFORM_REGISTRY.get("HorizontalFlip") is A.HorizontalFlip
    assert TRANSFORM_REGISTRY.provenance("HorizontalFlip").kind == "builtin"


@pytest.mark.filterwarnings("ignore::UserWarning")  # albumentations' alias/"no mask" notices
@pytest.mark.parametrize("name", _dual_names())
def test_geometric_transform_invents_no_label(name):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = np.full((40, 48), 3, np.uint8)
    mask[5:25, 8:30] = 7
    mask[15:35, 20:44] = 9
    mask[0:3, :] = IGNORE
    if name == "DeepLabRandomScaleCrop":
        args = {"crop_size": 64, "scale_range": [0.3, 1.5]}
    else:
        args = {"p": 1.0, **REQUIRED_ARGS.get(name, {})}
    pipe = build_transforms([{"NAME": name, "ARGS": args}], ignore_value=IGNORE, pixel_mean=(120, 110, 100))
    for seed in range(4):
        _, out = apply_transforms(pipe, image, mask, seed=seed)
        invented = set(np.unique(out).tolist()) - LABELS - {IGNORE}
        assert not invented, f"{name} invented labels {invented}"


def test_deeplab_scale_crop_pads_with_ignore_and_mean():
    image = np.full((10, 12, 3), 200, np.uint8)
    mask = np.full((10, 12), 4, np.uint8)
    t = build_transforms([{"NAME": "DeepLabRandomScaleCrop", "ARGS": {"crop_size": 32, "scale_range": [1.0, 1.0]}}],
                         ignore_value=IGNORE, pixel_mean=(123.675, 116.28, 103.53))
    img, m = apply_transforms(t, image, mask, seed=0)
    assert img.shape == (32, 32, 3) and m.shape == (32, 32)
    # Scale 1 and a 32x32 crop of a padded 10x12 image: content stays top-left (Caffe pads bottom/right).
    assert (m[:10, :12] == 4).all() and (m[10:, :] == IGNORE).all() and (m[:, 12:] == IGNORE).all()
    assert img[20, 20].tolist() == [124, 116, 104] and img[0, 0].tolist() == [200, 200, 200]


def test_deeplab_scale_range_is_half_to_one_and_a_half():
    t = DeepLabRandomScaleCrop(crop_size=8)
    scales = []
    for seed in range(300):
        seed_transforms(t, seed)
        params = t.get_params_dependent_on_data({"shape": (100, 100, 3)}, {})
        scales.append(params["scale"])
    assert 0.5 <= min(scales) < 0.53 and 1.47 < max(scales) <= 1.5


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.37])
def test_fused_scale_crop_equals_resize_then_pad(scale):
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 256, (8, 10, 3)).astype(np.uint8), (50, 37), interpolation=cv2.INTER_CUBIC)
    mask = cv2.resize(rng.integers(0, 20, (8, 10)).astype(np.uint8), (50, 37), interpolation=cv2.INTER_NEAREST)
    t = A.Compose([RandomScaleCrop(crop_size=80, scale_range=(scale, scale), fill=(1, 2, 3), fill_mask=IGNORE)])
    out_img, out_mask = apply_transforms(t, img, mask, seed=0)
    sh, sw = int(round(37 * scale)), int(round(50 * scale))
    ref_img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR)
    ref_mask = cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_NEAREST_EXACT)  # half-pixel centres
    assert np.abs(out_img[:sh, :sw].astype(int) - ref_img).max() <= 1  # fixed-point rounding only
    np.testing.assert_array_equal(out_mask[:sh, :sw], ref_mask)
    assert (out_mask[sh:] == IGNORE).all() and (out_mask[:, sw:] == IGNORE).all()
    assert out_img[-1, -1].tolist() == [1, 2, 3]


def test_fused_scale_crop_window_matches_a_crop_of_the_scaled_image():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)
    t = A.Compose([RandomScaleCrop(crop_size=(20, 30), scale_range=(1.0, 1.0))])
    for seed in range(5):
        out, _ = apply_transforms(t, img, np.zeros((60, 70), np.uint8), seed=seed)
        hits = [(y, x) for y in range(41) for x in range(41) if np.array_equal(img[y:y + 20, x:x + 30], out)]
        assert len(hits) == 1  # an exact window of the original at scale 1


def test_masks_use_nearest_even_when_args_ask_for_linear_images():
    image = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 10
    pipe = build_transforms([{"NAME": "Resize", "ARGS": {"height": 13, "width": 13, "interpolation": 1}}])
    _, out = apply_transforms(pipe, image, mask)
    assert set(np.unique(out).tolist()) == {0, 10}


def test_seeded_pipeline_is_reproducible_and_transforms_are_decorrelated():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (30, 30), dtype=np.uint8)
    pipe = build_transforms([{"NAME": "DeepLabRandomScaleCrop", "ARGS": {"crop_size": 24}},
                             {"NAME": "HorizontalFlip", "ARGS": {"p": 0.5}}])
    a = apply_transforms(pipe, image, mask, seed=123)
    b = apply_transforms(pipe, image, mask, seed=123)
    c = apply_transforms(pipe, image, mask, seed=124)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_nested_composition_from_yaml_entries():
    pipe = build_transforms([{"NAME": "OneOf", "ARGS": {"p": 1.0, "transforms": [
        {"NAME": "VerticalFlip", "ARGS": {"p": 1.0}}, {"NAME": "HorizontalFlip", "ARGS": {"p": 1.0}}]}}])
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4)
    _, out = apply_transforms(pipe, np.zeros((4, 4, 3), np.uint8), mask, seed=0)
    assert np.array_equal(out, mask[::-1]) or np.array_equal(out, mask[:, ::-1])


def test_bad_transform_entries_are_explained():
    with pytest.raises(KeyError, match="Did you mean 'HorizontalFlip'"):
        build_transforms([{"NAME": "HorizontalFlp"}])
    with pytest.raises(ValueError, match="unknown keys"):
        build_transforms([{"NAME": "HorizontalFlip", "PROB": 1}])
    with pytest.raises(ValueError, match="Cannot build transform RandomCrop"):
        build_transforms([{"NAME": "RandomCrop", "ARGS": {"hieght": 3}}])


def test_pipeline_from_a_yaml_config_file(tmp_path):
    from segkit.config import load_config
    from segkit.data import DatasetMapper

    path = tmp_path / "aug.yaml"
    path.write_text(
        "INPUT:\n"
        "  TRAIN_TRANSFORMS:\n"
        "    - {NAME: DeepLabRandomScaleCrop, ARGS: {crop_size: 33, scale_range: [0.5, 1.5]}}\n"
        "    - {NAME: HorizontalFlip, ARGS: {p: 0.5}}\n"
        "    - {NAME: OneOf, ARGS: {p: 1.0, transforms: [{NAME: Blur}, {NAME: ColorJitter}]}}\n"
    )
    cfg = load_config(str(path), load_plugins=False)
    pipe = DatasetMapper(cfg, is_train=True).pipeline
    assert [type(t).__name__ for t in pipe.transforms] == ["RandomScaleCrop", "HorizontalFlip", "OneOf"]
    img, mask = apply_transforms(pipe, np.zeros((20, 30, 3), np.uint8), np.full((20, 30), 4, np.uint8), seed=1)
    assert img.shape == (33, 33, 3) and set(np.unique(mask).tolist()) <= {4, IGNORE}
