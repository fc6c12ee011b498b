"""Run an exported bundle (ONNX through onnxruntime, or TorchScript) like a predictor.

Products that do not want segkit at run time only need what this module shows:
open the file, read the metadata, feed a uint8 batch, read ``labels``.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from segkit.export.exporters import TORCHSCRIPT_METADATA_FILE
from segkit.export.pipeline import METADATA_SCHEMA

__all__ = ["ExportedSegmenter", "load_bundle", "decode_metadata", "bundle_format"]


def decode_metadata(raw: Dict[str, str]) -> Dict[str, Any]:
    """Turn the bundle's string -> string metadata into Python values (``config`` stays YAML)."""
    if "schema" not in raw:
        raise ValueError("This file carries no segkit metadata; was it exported with segkit.export?")
    meta = {k: (v if k == "config" else json.loads(v)) for k, v in raw.items()}
    if meta["schema"] != METADATA_SCHEMA:
        raise ValueError(f"Bundle schema '{meta['schema']}' is not '{METADATA_SCHEMA}' understood by this segkit.")
    return meta


def _torchscript_metadata(path: str) -> Dict[str, str]:
    """The extra file written by the exporter, read from the TorchScript zip archive without loading the model."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/extra/" + TORCHSCRIPT_METADATA_FILE)]
        return json.loads(archive.read(names[0])) if names else {}


def _torchscript_device(raw: Dict[str, str], requested, path: str) -> torch.device:
    traced = torch.device(json.loads(raw.get("device", '"cpu"')))
    if requested is None:
        return traced
    requested = torch.device(requested)
    if requested.type != traced.type:
        raise ValueError(
            f"{path} was traced for {traced} and its graph moves inputs there; it cannot run on {requested}. "
            f"Export it again with segkit.export.export(..., device='{requested}') (tools/export_model.py --device)."
        )
    return requested


def bundle_format(path: str) -> str:
    """``"onnx"`` or ``"torchscript"`` from the file's content (ONNX protobuf vs. zip archive)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return "torchscript" if head.startswith(b"PK") else "onnx"


class ExportedSegmenter:
    """An exported pipeline with its metadata.

    Args:
        path: a ``.onnx`` or TorchScript file written by :func:`segkit.export.export`.
        providers: onnxruntime execution providers (default: CPU).
        device: torch device for TorchScript bundles (default: the device the bundle
            was traced for, from its metadata; another one raises, as the graph
            would move inputs back to the traced device).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, all cores).

    Attributes:
        metadata: decoded metadata (``class_names``, ``palette``, ``input_format``,
            ``input_layout``, ``pixel_mean``, ``pixel_std``, ``outputs``, ``config``...).
        format: ``"onnx"`` or ``"torchscript"``.
    """

    def __init__(
        self,
        path: str,
        providers: Optional[Sequence[str]] = None,
        device: Optional[Union[str, torch.device]] = None,
        threads: Optional[int] = None,
    ):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No exported bundle at {path}.")
        self.path = path
        self.format = bundle_format(path)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if self.format == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = int(threads)
            self._session = ort.InferenceSession(path, options, providers=list(providers or ["CPUExecutionProvider"]))
            raw = dict(self._session.get_modelmeta().custom_metadata_map)
        else:
            raw = _torchscript_metadata(path)  # read first: it names the device the graph was traced for
            self.device = _torchscript_device(raw, device, path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=FutureWarning)  # torch.jit is deprecated, still supported
                self._module = torch.jit.load(path, map_location=self.device)
        self.metadata = decode_metadata(raw)

    @property
    def class_names(self) -> List[str]:
        return list(self.metadata["class_names"])

    def run_batch(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        """Run a uint8 batch in the bundle's layout; returns ``{"labels": ..., ["probs": ...]}`` arrays."""
        if batch.dtype != np.uint8 or batch.ndim != 4:
            raise ValueError(f"Expected a 4-d uint8 batch in {self.metadata['input_layout']} layout, got {batch.dtype} {batch.shape}.")
        if 0 in batch.shape:
            raise ValueError(f"The batch is empty (shape {batch.shape}, {self.metadata['input_layout']} layout); "
                             "every image needs at least one pixel.")
        names = self.metadata["outputs"]
        if self.format == "onnx":
            values = self._session.run(names, {"image": np.ascontiguousarray(batch)})
        else:
            with torch.inference_mode():
                res = self._module(torch.from_numpy(np.array(batch, order="C")).to(self.device))
            values = [t.cpu().numpy() for t in (res if isinstance(res, (tuple, list)) else (res,))]
        return dict(zip(names, values))

    def __call__(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """Segment one ``(H, W, 3)`` uint8 image in the bundle's ``input_format`` order.

        Returns:
            ``{"labels": (H, W) int64}`` plus ``"probs": (K, H, W)`` when the bundle has it.
        """
        image = _check_image(image)
        batch = image[None] if self.metadata["input_layout"] == "NHWC" else image.transpose(2, 0, 1)[None]
        return {k: v[0] for k, v in self.run_batch(batch).items()}


def _check_image(image: Any) -> np.ndarray:
    """The checks the Predictor makes, so that bad input never reaches the runtime's own errors."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"Expected an H x W x 3 uint8 numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise TypeError(f"The image has dtype {image.dtype}; the bundle expects uint8 pixels 0-255.")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected an H x W x 3 image, got shape {image.shape}.")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"The image is empty (shape {image.shape}); it needs at least one pixel.")
    return image


def load_bundle(path: str, **kwargs: Any) -> ExportedSegmenter:
    """Open an exported pipeline; see :class:`ExportedSegmenter`."""
    return ExportedSegmenter(path, **kwargs)
