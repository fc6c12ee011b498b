"""Classification pretraining of a segmentation backbone on the embedded garment crops.

FCN (Long et al. 2015, sec. 3.1) adapts networks trained to *classify* into
segmentation networks: the classifier's convolutions are kept and its
fully-connected layers become convolutions. segkit's CPU models start from
random weights (nothing is downloaded), so this stage provides the
classification net cheaply: before segmentation training the backbone learns to
classify the 10 Fashion-MNIST garment types from small synthetic crops (one
garment, randomly scaled, shifted, flipped and coloured, on a random
low-frequency colour background, ``SIZE`` px square: a 32 px crop costs about
1/16 of a 128 px scene). Only the *train* garments are used, the same source
images FashionScenes composes its train scenes from; the val scenes' garments
are never seen.

The backbone is then used as is (with its dilation: a convolution's weights do
not depend on its rate, so the same weights serve any output stride) and the
classifier (global average pooling + linear) is dropped.

Config: ``MODEL.PRETRAIN.CLASSIFY.*``. ``tools/train_net.py`` runs the stage
when it is enabled and training starts from iteration 0 (not on ``--resume``).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from segkit.data.datasets.fashion_scenes import _garments
from segkit.engine.checkpoint import unwrap_model
from segkit.engine.comm import get_world_size, is_main_process

__all__ = ["GarmentCropSampler", "BackboneClassifier", "pretrain_backbone_classify", "maybe_pretrain"]

logger = logging.getLogger("segkit")

# Grey level above which a Fashion-MNIST pixel belongs to the garment (as FashionScenes).
_FOREGROUND_THRESHOLD = 24


class GarmentCropSampler:
    """Batches of synthetic single-garment crops from the FashionScenes *train* garments.

    Each crop: a low-frequency colour background (a random 2x2..4x4 grid of colours,
    bilinearly upsampled), one garment resized to a random fraction of the crop
    (``scale_range``) and aspect ratio, at a random position, flipped with p=0.5,
    shaded ``(0.35 + 0.65 * grey / 255) * colour`` with a random colour (as
    FashionScenes draws garments) where its grey level exceeds the foreground
    threshold, plus Gaussian noise.

    Args:
        size: crop side in pixels.
        scale_range: (min, max) garment side as a fraction of ``size``.
        seed: seed of the sampler's own generator (reproducible batches).
        garments: optional ``(images (G, 28, 28) uint8, labels (G,) int)`` to sample
            from; default the embedded Fashion-MNIST *train* subset.
    """

    def __init__(self, size: int = 32, scale_range: Tuple[float, float] = (0.6, 1.0), seed: int = 0,
                 garments: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> None:
        if size < 8:
            raise ValueError(f"MODEL.PRETRAIN.CLASSIFY.SIZE must be at least 8 px, got {size}.")
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"MODEL.PRETRAIN.CLASSIFY.SCALE_RANGE must satisfy 0 < min <= max <= 1, got {scale_range}.")
        if garments is None:
            garments = _garments()["train"]  # never the val scenes' source garments
        images, labels = garments
        self.images = torch.as_tensor(np.asarray(images), dtype=torch.float32).unsqueeze(1)  # (G, 1, 28, 28)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.num_classes = int(self.labels.max()) + 1
        self.size, self.scale_range = int(size), (lo, hi)
        self.generator = torch.Generator().manual_seed(int(seed))

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def sample(self, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(images (n, 3, S, S) float on 0-255, labels (n,) int64 in 0..num_classes-1)``."""
        s, g = self.size, self.generator
        idx = torch.randint(len(self.images), (n,), generator=g)
        lo, hi = self.scale_range
        side = lo + (hi - lo) * self._rand(n)                       # garment width / crop width
        aspect = 0.8 + 0.45 * self._rand(n)                         # height / width, as FashionScenes
        sx, sy = side, (side * aspect).clamp(max=1.0)
        tx, ty = (1 - sx) * (2 * self._rand(n) - 1), (1 - sy) * (2 * self._rand(n) - 1)
        flip = torch.where(self._rand(n) < 0.5, -1.0, 1.0)
        # Affine map from output coordinates to garment coordinates (grid_sample's [-1, 1] convention).
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = flip / sx, -flip * tx / sx
        theta[:, 1, 1], theta[:, 1, 2] = 1 / sy, -ty / sy
        grid = F.affine_grid(theta, (n, 1, s, s), align_corners=False)
        grey = F.grid_sample(self.images[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        fg = (grey > _FOREGROUND_THRESHOLD).float()                 # (n, 1, S, S)
        colour = 30 + 225 * self._rand(n, 3, 1, 1)
        garment = (0.35 + 0.65 * grey / 255.0) * colour
        cells = int(torch.randint(2, 5, (1,), generator=g))
        background = F.interpolate(255 * self._rand(n, 3, cells, cells), size=(s, s), mode="bilinear",
                                   align_corners=False)
        noise = torch.randn(n, 3, s, s, generator=g) * (3 + 9 * self._rand(n, 1, 1, 1))
        images = (fg * garment + (1 - fg) * background + noise).clamp_(0, 255)
        return images, self.labels[idx]


class BackboneClassifier(nn.Module):
    """A backbone + global average pooling + linear layer over its deepest feature map.

    ``forward(x: (N, C, H, W) normalised)`` returns logits ``(N, num_classes)``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        shapes = backbone.output_shape()
        # The deepest feature: largest stride, then most channels.
        self.feature = max(shapes, key=lambda k: ((shapes[k].stride or 0), (shapes[k].channels or 0)))
        self.backbone = backbone
        self.fc = nn.Linear(shapes[self.feature].channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)[self.feature]
        return self.fc(f.mean(dim=(2, 3)))


def pretrain_backbone_classify(cfg, model: nn.Module, output_dir: Optional[str] = None,
                               sampler: Optional[GarmentCropSampler] = None) -> Dict[str, float]:
    """Train ``model.backbone`` in place to classify garment crops (``MODEL.PRETRAIN.CLASSIFY.*``).

    Args:
        cfg: the run's config; ``MODEL.PRETRAIN.CLASSIFY`` gives iterations, batch,
            learning rate, weight decay, crop size and scale range; ``SEED`` seeds the crops.
        model: a segmentor with ``backbone`` and ``normalize(images (N, 3, H, W) 0-255)``
            (``SemanticSegmentor``); its backbone's weights and BatchNorm statistics change.
        output_dir: where ``pretrain_classify_backbone.pth`` (the backbone's state dict)
            is written; ``None`` writes nothing.
        sampler: the crop source (default: :class:`GarmentCropSampler` from the config).

    Returns:
        ``{"loss", "accuracy"}`` over the last 10% of iterations, ``"seconds"`` (wall) and
        ``"cpu_seconds"`` (this process, all threads) of the stage.
    """

    c = cfg.MODEL.PRETRAIN.CLASSIFY
    model = unwrap_model(model)
    if not hasattr(model, "backbone") or not hasattr(model.backbone, "output_shape"):
        raise ValueError(f"MODEL.PRETRAIN.CLASSIFY needs a model with a segkit backbone; {type(model).__name__} "
                         "has no 'backbone' with output_shape().")
    if int(c.ITERS) <= 0 or int(c.IMS_PER_BATCH) <= 0:
        raise ValueError(f"MODEL.PRETRAIN.CLASSIFY.ITERS ({c.ITERS}) and IMS_PER_BATCH ({c.IMS_PER_BATCH}) "
                         "must be positive.")
    sampler = sampler or GarmentCropSampler(int(c.SIZE), tuple(c.SCALE_RANGE), seed=int(cfg.SEED) + 1)
    device = next(model.parameters()).device
    classifier = BackboneClassifier(model.backbone, sampler.num_classes).to(device)
    params = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(c.BASE_LR), weight_decay=float(c.WEIGHT_DECAY))
    iters = int(c.ITERS)
    # Linear warm-up over 5% of the iterations, then cosine decay to 0.
    warm = max(1, iters // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: (i + 1) / warm if i < warm else 0.5 * (1 + np.cos(np.pi * (i - warm) / max(1, iters - warm))))
    was_training = model.training
    classifier.train()
    t0, c0, tail, losses, correct, seen = time.perf_counter(), time.process_time(), max(1, iters // 10), [], 0, 0
    logger.info("Classification pretraining of the backbone ('%s' features): %d iterations x %d crops of %d px",
                classifier.feature, iters, int(c.IMS_PER_BATCH), sampler.size)
    for it in range(iters):
        images, labels = sampler.sample(int(c.IMS_PER_BATCH))
        images, labels = images.to(device), labels.to(device)
        logits = classifier(model.normalize(images))
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if it >= iters - tail:
            losses.append(loss.item())
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        if (it + 1) % max(1, int(cfg.SOLVER.LOG_PERIOD) * 5) == 0 or it + 1 == iters:
            logger.info("pretrain iter %d/%d  loss %.3f  lr %.2e", it + 1, iters, loss.item(),
                        optimizer.param_groups[0]["lr"])
    model.train(was_training)
    stats = {"loss": float(np.mean(losses)), "accuracy": correct / max(1, seen), "seconds": time.perf_counter() - t0,
             "cpu_seconds": time.process_time() - c0}
    logger.info("Classification pretraining done in %.0f s (%.0f CPU s): loss %.3f, train accuracy %.3f "
                "(last %d iterations)", stats["seconds"], stats["cpu_seconds"], stats["loss"], stats["accuracy"], tail)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "pretrain_classify_backbone.pth")
        torch.save({k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}, path)
        logger.info("Pretrained backbone saved to %s", path)
    return stats


def maybe_pretrain(cfg, model: nn.Module) -> Optional[Dict[str, float]]:
    """Run :func:`pretrain_backbone_classify` when ``MODEL.PRETRAIN.CLASSIFY.ENABLED``.

    With several processes the main process pretrains and broadcasts the backbone's
    parameters and buffers, so that every process starts segmentation from the same weights.
    Returns the pretraining statistics (main process), else ``None``.
    """
    if not cfg.MODEL.PRETRAIN.CLASSIFY.ENABLED:
        return None

    stats = None
    if is_main_process():
        stats = pretrain_backbone_classify(cfg, model, cfg.OUTPUT_DIR)
    if get_world_size() > 1:
        for t in unwrap_model(model).backbone.state_dict().values():
            dist.broadcast(t, 0)
    return stats
