"""Tiny configurations: the kit's default config and a case for every built-in component."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

__all__ = ["NUM_CLASSES", "builtin_cases", "small_cfg"]

#: Number of classes of :func:`small_cfg`.
NUM_CLASSES = 5

_RESNET = {"BACKBONE": {"NAME": "ResNet"}, "RESNETS": {"DEPTH": 18, "WIDTH": 8, "OUTPUT_STRIDE": 8}}
_RESNET32 = {"BACKBONE": {"NAME": "ResNet"}, "RESNETS": {"DEPTH": 18, "WIDTH": 8, "OUTPUT_STRIDE": 32}}
_VGG = {"BACKBONE": {"NAME": "VGG"}, "VGG": {"WIDTH": 4, "FC_CHANNELS": 16}}
_VGG_DEEPLAB = {"BACKBONE": {"NAME": "VGG"}, "VGG": {"WIDTH": 4, "OUTPUT_STRIDE": 8, "FC": "none"}}

# MODEL overrides per built-in (a new built-in must add one: builtin_cases() checks).
_MODEL_CASES: Dict[str, Dict[str, Dict[str, Any]]] = {
    "BACKBONE": {
        "ResNet": {**_RESNET, "RESNETS": {**_RESNET["RESNETS"], "OUT_FEATURES": ["res2", "res3", "res4", "res5"]}},
        "VGG": {**_VGG, "VGG": {**_VGG["VGG"], "OUT_FEATURES": ["pool3", "pool4", "fc7"]}},
        # timm's own test-size ResNet (random weights; skipped where the timm extra is missing).
        "TimmBackbone": {"BACKBONE": {"NAME": "TimmBackbone"},
                         "TIMM": {"NAME": "test_resnet", "OUTPUT_STRIDE": 16}},
    },
    "HEAD": {
        "FCNHead": {**_VGG, "HEAD": {"NAME": "FCNHead", "IN_FEATURES": ["pool3", "pool4", "fc7"]}},
        "DeepLabV2Head": {**_VGG_DEEPLAB, "HEAD": {"NAME": "DeepLabV2Head", "IN_FEATURES": ["pool5"]},
                          "DEEPLAB": {"RATES": [2, 4], "BRANCH_CHANNELS": 8}},
        "RefineNetHead": {**_RESNET32, "HEAD": {"NAME": "RefineNetHead", "IN_FEATURES": ["res2", "res3", "res4", "res5"]},
                          "REFINENET": {"CHANNELS": [16, 8, 8, 8]}},
        "DUCHead": {**_RESNET, "HEAD": {"NAME": "DUCHead", "IN_FEATURES": ["res5"]}, "DUC": {"DILATIONS": [1, 2]}},
    },
    "META_ARCH": {
        "SemanticSegmentor": {**_RESNET, "HEAD": {"NAME": "FCNHead", "IN_FEATURES": ["res5"]}},
        "MultiScaleSegmentor": {**_RESNET, "HEAD": {"NAME": "FCNHead", "IN_FEATURES": ["res5"]},
                                "MSC": {"SCALES": [1.0, 0.5]}},
    },
}

# Meta-architectures and evaluators whose inputs differ from the kit's (N, 3, H, W) images and
# (N, H, W) targets: several stacked inputs (INPUT.MODALITIES) or several label sets. Their own
# tests (tests/test_benchmark_configs.py) train, evaluate and export them on dataset fixtures.
NOT_FOR_IMAGE_MASK = {"META_ARCH": {"LateFusionSegmentor", "MultiTaskSegmentor"},
                      "EVALUATOR": {"MultiTaskSemSegEvaluator"}}

# Transforms that need inputs other than an image and a mask (boxes, metadata, 3-D
# volumes, reference images, a callable) or change the image's type (to float or
# a tensor): segkit's training pipelines never use them on their own.
TRANSFORMS_NOT_FOR_IMAGE_MASK = {
    "AtLeastOneBBoxRandomCrop", "BBoxSafeRandomCrop", "RandomSizedBBoxSafeCrop", "RandomCropNearBBox",
    "CenterCrop3D", "CoarseDropout3D", "PadIfNeeded3D", "Pad3D", "RandomCrop3D", "CubicSymmetry",
    "Mosaic", "OverlayElements", "ToTensorV2", "TextImage", "FDA",
    "HistogramMatching", "PixelDistributionAdaptation", "ToFloat", "FromFloat", "Normalize",
}
# ARGS for transforms without usable defaults.
TRANSFORM_ARGS: Dict[str, Dict[str, Any]] = {
    "CenterCrop": {"height": 24, "width": 24}, "RandomCrop": {"height": 24, "width": 24},
    "CropNonEmptyMaskIfExists": {"height": 24, "width": 24}, "Resize": {"height": 50, "width": 37},
    "RandomResizedCrop": {"size": (29, 31)}, "RandomSizedCrop": {"min_max_height": (10, 30), "size": (29, 31)},
    "GridElasticDeform": {"num_grid_xy": (4, 4), "magnitude": 5}, "Crop": {"x_max": 20, "y_max": 25},
    "PadIfNeeded": {"min_height": 64, "min_width": 70}, "Pad": {"padding": 7},
    "LongestMaxSize": {"max_size": 61}, "SmallestMaxSize": {"max_size": 53},
    "RandomScale": {"scale_limit": (-0.6, 0.9)}, "CropAndPad": {"px": (-5, 9)},
    "DeepLabRandomScaleCrop": {"crop_size": 33, "scale_range": (0.3, 1.5)},
    "RandomScaleCrop": {"crop_size": 33, "scale_range": (0.3, 1.5)},
    "OneOf": {"transforms": [{"NAME": "HorizontalFlip"}, {"NAME": "Rotate", "ARGS": {"limit": 30}}]},
    "SomeOf": {"n": 1, "transforms": [{"NAME": "HorizontalFlip"}, {"NAME": "Rotate", "ARGS": {"limit": 30}}]},
    "Sequential": {"transforms": [{"NAME": "HorizontalFlip"}, {"NAME": "Rotate", "ARGS": {"limit": 30}}]},
    "RandomOrder": {"transforms": [{"NAME": "HorizontalFlip"}, {"NAME": "Rotate", "ARGS": {"limit": 30}}]},
    "OneOrOther": {"transforms": [{"NAME": "HorizontalFlip"}, {"NAME": "Rotate", "ARGS": {"limit": 30}}]},
    "SelectiveChannelTransform": {"transforms": [{"NAME": "RandomBrightnessContrast"}], "channels": [0, 1]},
}


def small_cfg(model: Optional[Dict[str, Any]] = None, num_classes: int = NUM_CLASSES):
    """``get_cfg()`` made tiny: ResNet-18 of width 8 at output stride 8, FCN head on res5, CPU.

    Args:
        model: overrides merged into ``MODEL`` (e.g. ``{"HEAD": {"NAME": "MyHead"}}``).
        num_classes: ``MODEL.NUM_CLASSES``.
    """
    from segkit.config import get_cfg

    cfg = get_cfg()
    base = {**_RESNET, "HEAD": {"NAME": "FCNHead", "IN_FEATURES": ["res5"]}, "NUM_CLASSES": num_classes,
            "DEVICE": "cpu", "HDC": {"GRIDDING_CHECK": "off"}}
    cfg.merge_from_dict({"MODEL": base})
    if model:
        cfg.merge_from_dict({"MODEL": dict(model)})
    cfg.SOLVER.MAX_ITER = 10
    cfg.TEST.VIS_NUM_IMAGES = 0
    # No dataset: a component check needs none, and NUM_CLASSES is then checked against none.
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), ()
    return cfg


def builtin_cases(kind: str) -> List[Tuple[str, Any]]:
    """``(name, cfg or ARGS)`` for every built-in component of registry ``kind`` (timm-style).

    Raises:
        LookupError: a built-in has no tiny case here (add one when adding a built-in).
    """
    from segkit import load_components
    from segkit.registry import all_registries

    load_components()
    names = [n for n, _obj, p in all_registries()[kind].entries() if p.kind == "builtin"]
    names = [n for n in names if n not in NOT_FOR_IMAGE_MASK.get(kind, ())]
    if kind in _MODEL_CASES:
        missing = [n for n in names if n not in _MODEL_CASES[kind]]
        if missing:
            raise LookupError(f"segkit.testing.configs has no tiny {kind} case for built-in(s) {missing}; add one.")
        return [(n, small_cfg(_MODEL_CASES[kind][n])) for n in names]
    if kind == "TRANSFORM":
        return [(n, dict(TRANSFORM_ARGS.get(n, {}))) for n in names if n not in TRANSFORMS_NOT_FOR_IMAGE_MASK]
    return [(n, None) for n in names]
