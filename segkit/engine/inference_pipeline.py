"""``build_inference_pipeline(cfg, weights)``: the one place an inference is put together.

ARCHITECTURE.md, "One inference": image -> the mapper's test-time preparation ->
segmentor (moves to its device, adapts the channel order, normalises) -> logits ->
whole-image / sliding-window / multi-scale + flip inference -> post-processor chain
(dense CRF) -> probabilities. :class:`segkit.Predictor`, export
(:func:`segkit.export.build_export_model`), ``tools/crf_search.py`` and the engine's
evaluation (``--eval-only`` and evaluation during training) all take their pieces
from the :class:`InferencePipeline` built here, so that they cannot drift apart.

The model is prepared for inference at exactly one place,
:func:`prepare_model_for_inference` (eval mode today; inference-time rewrites such
as batch-norm folding plug in there).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from segkit import load_components
from segkit.data.mapper import DatasetMapper
from segkit.data.registration import setup_datasets
from segkit.engine.checkpoint import load_model_weights
from segkit.engine.metadata import PipelineMetadata, pipeline_metadata
from segkit.modeling import build_model
from segkit.modeling.optimize import prepare_for_inference
from segkit.postprocess import PostprocessorChain, SegmentationInference, build_postprocessor_chain

__all__ = ["InferencePipeline", "build_inference_pipeline", "prepare_model_for_inference"]

logger = logging.getLogger(__name__)


@dataclass
class InferencePipeline:
    """The pieces of one inference, built once from a config.

    Attributes:
        model: the segmentor, in eval mode, weights loaded:
            ``RGB images (N, 3, H, W) uint8 -> logits (N, K, H, W)``.
        mapper: the data subsystem's test-time mapper; :meth:`DatasetMapper.prepare_image`
            applies ``INPUT.TEST_TRANSFORMS`` to one RGB ``(H, W, 3)`` image.
        inference: ``images (N, 3, H, W) uint8 -> probs (N, K, H, W)`` per ``TEST.AUG`` /
            ``TEST.SLIDING_WINDOW`` (softmax applied, no post-processing).
        postprocess: ``POSTPROCESS.CHAIN``: ``(probs, images) -> probs`` (identity when empty).
        metadata: class names, palette, channel orders, normalisation.
        weights: the checkpoint loaded ("" when none was).
    """

    model: nn.Module
    mapper: DatasetMapper
    inference: SegmentationInference
    postprocess: PostprocessorChain
    metadata: PipelineMetadata
    weights: str = ""

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """RGB images ``(N, 3, H, W)`` uint8 (any device) -> post-processed probabilities ``(N, K, H, W)``."""
        return self.postprocess(self.inference(images), images)


def prepare_model_for_inference(cfg, model: nn.Module) -> nn.Module:
    """The single hook where a freshly loaded model becomes an inference model.

    Inference-time rewrites that keep the outputs (batch-norm folding, channels-last:
    :func:`segkit.modeling.optimize.prepare_for_inference`, unless
    ``TEST.OPTIMIZE_MODEL`` is off) happen here and nowhere else, so that every
    consumer of the pipeline (Predictor, export, CRF search, eval-only) gets them.
    """
    return prepare_for_inference(model, cfg)


def _load_weights(model: nn.Module, weights: Optional[str], cfg, who: str) -> str:
    path = weights if weights is not None else cfg.MODEL.WEIGHTS
    if not path:
        warnings.warn(f"{who}: no weights given (weights=None, MODEL.WEIGHTS empty); the model is untrained.",
                      stacklevel=4)
        return ""
    load_model_weights(model, path)
    logger.info("%s: loaded weights from %s", who, path)
    return path


def build_inference_pipeline(cfg, weights: Optional[str] = None, *, model: Optional[nn.Module] = None,
                             who: str = "inference") -> InferencePipeline:
    """Build the inference pipeline of ``cfg``.

    Registers the config's datasets and checks ``MODEL.NUM_CLASSES`` against their
    class lists (:func:`segkit.data.setup_datasets`), builds the model on
    ``MODEL.DEVICE``, loads ``weights`` (default ``MODEL.WEIGHTS``; a warning when
    neither is set) and prepares it for inference (:func:`prepare_model_for_inference`).

    Args:
        cfg: a segkit config (not modified).
        weights: checkpoint path; overrides ``cfg.MODEL.WEIGHTS``.
        model: an already built model to use as is instead (e.g. the model being
            trained, evaluated in between iterations): no weights are loaded and it is
            neither rewritten nor switched to eval mode here; the caller owns its mode.
        who: how the caller is named in the log and warnings (``"Predictor"``, ``"export"``).

    Returns:
        An :class:`InferencePipeline`.
    """
    # Built-ins, then the plugins this config allows (the environment switches win).
    load_components(list(cfg.PLUGINS.ALLOW), cfg.PLUGINS.ON_ERROR)
    setup_datasets(cfg)
    loaded = ""
    if model is None:
        model = build_model(cfg)
        loaded = _load_weights(model, weights, cfg, who)
        model = prepare_model_for_inference(cfg, model)
    return InferencePipeline(
        model=model,
        mapper=DatasetMapper(cfg, is_train=False),
        inference=SegmentationInference(cfg, model),
        postprocess=build_postprocessor_chain(cfg),
        metadata=pipeline_metadata(cfg),
        weights=loaded,
    )
