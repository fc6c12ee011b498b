"""Segmentation heads: backbone feature maps -> class logits."""
import importlib
import importlib.util

from segkit.modeling.heads.build import build_head, check_in_features
from segkit.modeling.heads.deeplab_v2 import DeepLabV2Head
from segkit.modeling.heads.fcn import FCNHead

# Head families kept in their own files register themselves when imported.
for _name in ("refinenet", "duc"):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["build_head", "check_in_features", "DeepLabV2Head", "FCNHead"]
