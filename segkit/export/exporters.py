"""Write the inference pipeline as a TorchScript or ONNX file with its metadata.

Both formats trace :class:`SegmentationPipeline` on the CPU with an example image
and mark height and width (and batch) dynamic. Metadata (class names, palette,
channel order, layout, mean/std, config) travels inside the file: ONNX
``metadata_props``, TorchScript ``_extra_files["segkit_metadata.json"]``.

ONNX uses the TorchScript-based exporter (``dynamo=False``): torch >= 2.9 defaults
to the ``torch.export`` exporter, which needs ``onnxscript`` (not a segkit
dependency), while the legacy exporter works offline with torch alone and handles
the shape arithmetic of dynamic H, W through tracing.
"""
from __future__ import annotations

import copy
import io
import json
import logging
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from segkit.data.registration import setup_datasets
from segkit.engine.inference_pipeline import build_inference_pipeline
from segkit.export.pipeline import SegmentationPipeline, bundle_metadata
from segkit.utils.device import resolve_device
from segkit.utils.fileio import atomic_write

__all__ = ["FORMATS", "export", "export_torchscript", "export_onnx", "build_export_model", "TORCHSCRIPT_METADATA_FILE"]

logger = logging.getLogger(__name__)

# Supported export formats and their default file suffixes.
FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}
# Name of the metadata entry in a TorchScript file's extra files.
TORCHSCRIPT_METADATA_FILE = "segkit_metadata.json"
# Example input size for tracing: neither dimension a multiple of common strides,
# so any size-divisibility padding in the model is traced on its general path.
_EXAMPLE_HW = (83, 117)


def _input_channels(model: nn.Module) -> int:
    """Channels the model reads: one per ``pixel_mean`` entry (3, or 3 per stacked input of INPUT.MODALITIES)."""
    inner = getattr(model, "model", model)
    mean = getattr(inner, "pixel_mean", None)
    return int(mean.numel()) if isinstance(mean, torch.Tensor) else 3


def _example_input(layout: str, hw: Tuple[int, int] = _EXAMPLE_HW, channels: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    shape = (1, hw[0], hw[1], channels) if layout == "NHWC" else (1, channels, hw[0], hw[1])
    return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)


def _warn_dropped_steps(cfg) -> None:
    """Exports hold whole-image inference; say so when the config asks for more."""
    dropped = []
    if list(cfg.INPUT.get("TEST_TRANSFORMS", [])):
        dropped.append("INPUT.TEST_TRANSFORMS")
    if list(cfg.POSTPROCESS.CHAIN):
        dropped.append(f"POSTPROCESS.CHAIN={list(cfg.POSTPROCESS.CHAIN)}")
    for key in ("AUG", "SLIDING_WINDOW"):
        node = cfg.TEST.get(key)
        if node is not None and node.get("ENABLED", False):
            dropped.append(f"TEST.{key}.ENABLED")
    if dropped:
        warnings.warn(
            "The exported pipeline runs whole-image inference only; "
            f"{', '.join(dropped)} is not part of it (use segkit.Predictor for those).",
            stacklevel=3,
        )


def build_export_model(cfg, weights: Optional[str] = None) -> nn.Module:
    """The model of ``cfg``'s inference pipeline (:func:`build_inference_pipeline`) on the CPU.

    In eval mode with ``weights`` (or ``MODEL.WEIGHTS``) loaded; a warning says when
    neither is set (the export is then untrained).
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return build_inference_pipeline(cfg, weights, who="export").model


def _needs_resize(model: nn.Module) -> bool:
    """Whether the model's logits differ from its input size (then the pipeline upsamples)."""
    x = _example_input("NCHW", channels=_input_channels(model))
    with torch.no_grad():
        logits = model(x)
    return tuple(logits.shape[-2:]) != tuple(x.shape[-2:])


def make_pipeline(model: nn.Module, input_layout: str = "NHWC", with_probs: bool = False) -> SegmentationPipeline:
    """Wrap an eval-mode model into the exported pipeline (upsampling only if needed)."""
    return SegmentationPipeline(model, input_layout, with_probs, resize_logits=_needs_resize(model)).eval()


def export_torchscript(pipeline: SegmentationPipeline, out: str, metadata: Dict[str, str]) -> str:
    """Trace ``pipeline`` on the device of its parameters and save it with ``metadata``. Returns ``out``.

    A traced graph keeps the device the model moved its input to (the segmentor's
    ``images.to(self.device)`` in ``normalize``), so a TorchScript bundle runs on the
    device it was traced on; trace on the GPU for GPU deployment.
    """
    device = next(pipeline.parameters()).device
    example = _example_input(pipeline.input_layout, channels=_input_channels(pipeline)).to(device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)  # torch.jit is deprecated, still supported
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(pipeline, (example,), check_trace=False)
        extra = {TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)}
        atomic_write(out, lambda f: torch.jit.save(traced, f, _extra_files=extra))
    return out


def _dynamic_axes(layout: str, with_probs: bool) -> Dict[str, Dict[int, str]]:
    image = {0: "batch", 1: "height", 2: "width"} if layout == "NHWC" else {0: "batch", 2: "height", 3: "width"}
    axes = {"image": image, "labels": {0: "batch", 1: "height", 2: "width"}}
    if with_probs:
        axes["probs"] = {0: "batch", 2: "height", 3: "width"}
    return axes


def export_onnx(pipeline: SegmentationPipeline, out: str, metadata: Dict[str, str], opset: int = 17) -> str:
    """Export ``pipeline`` to ONNX (legacy exporter), attach ``metadata_props`` and check the graph."""
    import onnx

    outputs = ["labels", "probs"] if pipeline.with_probs else ["labels"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)  # legacy exporter notice
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        # Strided slices are kept as Slice nodes instead of being folded: harmless.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        buffer = io.BytesIO()
        torch.onnx.export(
            pipeline, (_example_input(pipeline.input_layout, channels=_input_channels(pipeline)),), buffer,
            dynamo=False, opset_version=opset,
            input_names=["image"], output_names=outputs,
            dynamic_axes=_dynamic_axes(pipeline.input_layout, pipeline.with_probs),
        )
    proto = onnx.load_model_from_string(buffer.getvalue())
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "segkit"
    onnx.checker.check_model(proto)
    return atomic_write(out, proto.SerializeToString())


def export(
    cfg,
    weights: Optional[str],
    format: str,
    out: str,
    *,
    input_layout: str = "NHWC",
    with_probs: bool = False,
    opset: int = 17,
    model: Optional[nn.Module] = None,
    device: str = "cpu",
) -> str:
    """Export the whole inference pipeline of ``cfg`` + ``weights`` to one file.

    Args:
        cfg: segkit config of the trained model.
        weights: checkpoint path (segkit checkpoint); None uses ``cfg.MODEL.WEIGHTS``.
        format: ``"torchscript"`` or ``"onnx"``.
        out: output file, or an existing directory (then ``model.ts`` / ``model.onnx`` inside it).
        input_layout: ``"NHWC"`` (default) or ``"NCHW"`` layout of the uint8 ``image`` input.
        with_probs: add a ``probs`` (N, K, H, W) softmax output next to ``labels``.
        opset: ONNX opset version.
        model: an already built CPU model to export instead of building ``cfg`` and
            loading ``weights`` (e.g. straight after training).
        device: device a TorchScript bundle is traced for and runs on (the graph
            keeps it, see :func:`export_torchscript`). ONNX is always exported on the
            CPU and runs on any onnxruntime execution provider.

    Returns:
        The path written.
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown export format '{format}'; use one of {', '.join(FORMATS)}.")
    if os.path.isdir(out):
        out = os.path.join(out, "model" + FORMATS[format])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    _warn_dropped_steps(cfg)
    setup_datasets(cfg)  # class names in the metadata (a no-op when the pipeline builder already did it)
    model = model.eval() if model is not None else build_export_model(cfg, weights)
    pipeline = make_pipeline(model, input_layout, with_probs)
    if format == "torchscript":
        target = resolve_device(device)
        if next(pipeline.parameters()).device != target:  # never move the caller's model
            pipeline = copy.deepcopy(pipeline).to(target)
        metadata = bundle_metadata(cfg, input_layout, with_probs, device=str(target))
        export_torchscript(pipeline, out, metadata)
    else:
        export_onnx(pipeline, out, bundle_metadata(cfg, input_layout, with_probs), opset)
    logger.info("Exported %s pipeline to %s", format, out)
    return out
