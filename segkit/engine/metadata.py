"""What a caller needs to interpret an inference pipeline's input and output.

:class:`PipelineMetadata` is held by :class:`segkit.engine.inference_pipeline.InferencePipeline`
(so by :class:`segkit.Predictor`) and written into exported bundles
(:func:`segkit.export.bundle_metadata`). Class names and colours come from the
dataset's metadata (:func:`segkit.data.dataset_classes`), checked against
``MODEL.NUM_CLASSES`` once at set-up (:func:`segkit.data.setup_datasets`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

from segkit.data.registration import dataset_classes
from segkit.utils.visualize import default_palette

__all__ = ["PipelineMetadata", "pipeline_metadata", "PIPELINE_INPUT_FORMAT"]

#: Channel order of every pipeline's input: images are RGB from the reader to the model.
PIPELINE_INPUT_FORMAT = "RGB"


@dataclass(frozen=True)
class PipelineMetadata:
    """What a caller needs to interpret a pipeline's input and output.

    Attributes:
        class_names: ``K`` names, index = label value.
        palette: ``K`` RGB colours, index = label value.
        input_format: channel order the pipeline takes: always ``"RGB"``.
        weights_format: channel order the weights were trained on (``INPUT.FORMAT``);
            the model flips RGB input to it on the device.
        pixel_mean: per-channel mean (0-255 scale, ``weights_format`` order) the model subtracts.
        pixel_std: per-channel std (``weights_format`` order) the model divides by.
        ignore_value: label value that never comes out of the pipeline but marks
            unlabelled pixels in ground truth.
    """

    class_names: Tuple[str, ...]
    palette: Tuple[Tuple[int, int, int], ...]
    input_format: str
    pixel_mean: Tuple[float, ...]
    pixel_std: Tuple[float, ...]
    ignore_value: int
    weights_format: str = "RGB"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
            "input_format": self.input_format,
            "weights_format": self.weights_format,
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
            "ignore_value": self.ignore_value,
            "num_classes": self.num_classes,
        }


def pipeline_metadata(cfg) -> PipelineMetadata:
    """Build :class:`PipelineMetadata` from a config and its dataset's metadata.

    Class names and colours come from the first dataset of ``DATASETS.TEST`` (then
    ``TRAIN``) that has them (:func:`segkit.data.dataset_classes`); with none, the
    names are ``class_0..`` and the palette is :func:`segkit.utils.visualize.default_palette`.
    Call :func:`segkit.data.setup_datasets` first (the inference pipeline does) so that
    folder datasets are known and the class count is checked.
    """
    k = int(cfg.MODEL.NUM_CLASSES)
    names, colors, _ = dataset_classes(cfg)
    names = names or [f"class_{i}" for i in range(k)]
    if not colors or len(colors) != k:
        colors = default_palette(k)
    return PipelineMetadata(
        class_names=tuple(str(n) for n in names),
        palette=tuple(tuple(int(v) for v in c) for c in colors),
        input_format=PIPELINE_INPUT_FORMAT,
        weights_format=str(cfg.INPUT.FORMAT).upper(),
        pixel_mean=tuple(float(v) for v in cfg.MODEL.PIXEL_MEAN),
        pixel_std=tuple(float(v) for v in cfg.MODEL.PIXEL_STD),
        ignore_value=int(cfg.MODEL.IGNORE_VALUE),
    )
