"""Deploying segkit pipelines: TorchScript/ONNX export, runtime, parity check, benchmark, analysis.

``export(cfg, weights, format, out)`` writes the whole inference pipeline
(uint8 image -> normalisation -> model -> upsampling -> arg-max) with its
metadata; ``load_bundle(path)`` runs it; ``check_parity`` compares it with PyTorch.
"""
from segkit.export.exporters import FORMATS, build_export_model, export, export_onnx, export_torchscript, make_pipeline
from segkit.export.pipeline import SegmentationPipeline, bundle_metadata
from segkit.export.runtime import ExportedSegmenter, decode_metadata, load_bundle
from segkit.export.verify import check_parity

__all__ = [
    "FORMATS",
    "export",
    "export_onnx",
    "export_torchscript",
    "build_export_model",
    "make_pipeline",
    "SegmentationPipeline",
    "bundle_metadata",
    "ExportedSegmenter",
    "decode_metadata",
    "load_bundle",
    "check_parity",
]
