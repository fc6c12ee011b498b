"""The checks of :mod:`segkit.testing`, one per registry kind."""
from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import uuid
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "CHECKS", "ConformanceError", "check_backbone", "check_component", "check_config", "check_dataset",
    "check_evaluator", "check_head", "check_hook", "check_loss", "check_lr_scheduler", "check_meta_arch",
    "check_optimizer", "check_postprocessor", "check_transform",
]


class ConformanceError(AssertionError):
    """A component breaks its registry's contract; the message names it and says what to change."""


def _fail(label: str, what: str, fix: str) -> None:
    raise ConformanceError(f"{label}: {what}. {fix}")


@contextlib.contextmanager
def _registered(registry: Any, name_or_class: Any) -> Iterator[Tuple[str, str]]:
    """Yield ``(name, label)``; an unregistered class/function is registered for the block only."""
    from segkit import load_components

    load_components()
    if isinstance(name_or_class, str):
        registry.get(name_or_class)  # unknown name: RegistryKeyError with suggestions
        prov = registry.provenance(name_or_class).describe()
        yield name_or_class, f"{registry.name}_REGISTRY '{name_or_class}' ({prov})"
        return
    for name, obj, prov in registry.entries():
        if obj is name_or_class:
            yield name, f"{registry.name}_REGISTRY '{name}' ({prov.describe()})"
            return
    name = f"_segkit_testing_{getattr(name_or_class, '__name__', 'obj')}_{uuid.uuid4().hex[:6]}"
    registry.register(name_or_class, name=name)
    try:
        yield name, f"{getattr(name_or_class, '__qualname__', name)} (not registered; checked as {registry.name})"
    finally:
        registry.unregister(name)


def _cfg(cfg: Any) -> Any:
    from segkit.testing.configs import small_cfg

    return small_cfg() if cfg is None else cfg.clone()


def _build(registry: Any, name: str, label: str, cfg: Any, args: Optional[Dict[str, Any]] = None, **inputs: Any):
    from segkit.config.configurable import ComponentError, build_component

    try:
        return build_component(registry, name, cfg, args, **inputs)
    except ComponentError as exc:
        raise ConformanceError(f"{label}: cannot be built the way segkit builds it: {exc}") from exc


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _trace_matches(label: str, module: nn.Module, example: Any, reference: Any) -> None:
    """TorchScript tracing (what segkit's export uses) must reproduce the eager outputs."""
    try:
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        out = traced(*example)
    except Exception as exc:  # noqa: BLE001 - reported with the component's name
        _fail(label, f"does not trace with torch.jit.trace ({type(exc).__name__}: {exc})",
              "Avoid Python data-dependent control flow and non-tensor outputs in forward().")
    flat_ref = reference.values() if isinstance(reference, dict) else [reference]
    flat_out = out.values() if isinstance(out, dict) else [out]
    for a, b in zip(flat_ref, flat_out):
        if a.shape != b.shape or not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
            _fail(label, "gives different outputs when traced with TorchScript",
                  "Shapes or values must not depend on Python-side state captured at trace time.")


# ----------------------------------------------------------------------------- models
def _size_ok(got: int, size: int, stride: int) -> bool:
    return got in (math.ceil(size / stride), size // stride)


def check_backbone(name_or_class: Any, cfg: Any = None, sizes: Sequence[Tuple[int, int]] = ((64, 64), (57, 71)),
                   trace: bool = True):
    """Backbone: ``output_shape()`` matches the real feature maps (names, channels, strides).

    Inputs are rounded up to ``size_divisibility`` when it is set. Returns the backbone.
    """
    from segkit.layers import ShapeSpec
    from segkit.modeling.backbone import Backbone
    from segkit.registry import BACKBONE_REGISTRY

    cfg = _cfg(cfg)
    with _registered(BACKBONE_REGISTRY, name_or_class) as (name, label):
        backbone = _build(BACKBONE_REGISTRY, name, label, cfg, input_shape=ShapeSpec(channels=3))
    if not isinstance(backbone, Backbone):
        _fail(label, f"built {type(backbone).__name__}", "Subclass segkit.modeling.backbone.Backbone.")
    shapes = backbone.output_shape()
    if not shapes or not all(isinstance(s, ShapeSpec) for s in shapes.values()):
        _fail(label, f"output_shape() returned {shapes!r}", "Return {name: ShapeSpec(channels=C, stride=s)}.")
    div = int(backbone.size_divisibility or 0)
    backbone.eval()
    for h, w in sizes:
        if div:
            h, w = -(-h // div) * div, -(-w // div) * div
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            feats = backbone(x)
        if not isinstance(feats, dict) or set(feats) != set(shapes):
            got = sorted(feats) if isinstance(feats, dict) else type(feats).__name__
            _fail(label, f"forward returned {got} but output_shape() promises {sorted(shapes)}",
                  "Return exactly the maps output_shape() lists (as a dict).")
        for k, f in feats.items():
            spec = shapes[k]
            if f.dim() != 4 or f.shape[0] != 2 or f.shape[1] != spec.channels:
                _fail(label, f"'{k}' has shape {tuple(f.shape)} but output_shape() promises {spec.channels} channels",
                      "Make output_shape() report the real channel count.")
            if spec.stride and not (_size_ok(f.shape[2], h, spec.stride) and _size_ok(f.shape[3], w, spec.stride)):
                _fail(label, f"'{k}' is {tuple(f.shape[2:])} for a {h}x{w} input, not at the promised stride "
                      f"{spec.stride}", "Fix output_shape()'s stride or set size_divisibility.")
            if not _finite(f):
                _fail(label, f"'{k}' has non-finite values", "Check the layers' initialisation.")
    if trace:
        example = (torch.rand(1, 3, *(sizes[0] if not div else (div * 2, div * 2))),)
        with torch.no_grad():
            ref = backbone(*example)
        _trace_matches(label, backbone, example, ref)
    return backbone


def _promised_stride(head: nn.Module, shapes: Dict[str, Any], cfg: Any) -> int:
    stride = getattr(head, "stride", None)
    if stride:
        return int(stride)
    names = [n for n in (getattr(head, "in_features", None) or cfg.MODEL.HEAD.IN_FEATURES) if n in shapes]
    return min(int(shapes[n].stride or 1) for n in names or shapes)


def check_head(name_or_class: Any, cfg: Any = None, size: Tuple[int, int] = (64, 64), trace: bool = True):
    """Head: on the configured backbone's real features, logits ``(N, K, h, w)`` at its stride.

    The promised stride is ``head.stride`` (``SegmentationHead`` sets it), else the
    finest stride among the maps it reads (``head.in_features``, else
    ``MODEL.HEAD.IN_FEATURES``). Gradients must reach its parameters.
    Returns the head.
    """
    from segkit.modeling import build_backbone
    from segkit.registry import HEAD_REGISTRY

    cfg = _cfg(cfg)
    backbone = build_backbone(cfg).eval()
    shapes = backbone.output_shape()
    with _registered(HEAD_REGISTRY, name_or_class) as (name, label):
        head = _build(HEAD_REGISTRY, name, label, cfg, input_shape=shapes)
    if not isinstance(head, nn.Module):
        _fail(label, f"built {type(head).__name__}", "A head is a torch.nn.Module.")
    h, w = size
    div = int(backbone.size_divisibility or 0)
    if div:
        h, w = -(-h // div) * div, -(-w // div) * div
    with torch.no_grad():
        feats = backbone(torch.rand(2, 3, h, w))
    head.train()
    out = head(feats)
    logits = out.get("sem_seg") if isinstance(out, dict) else out
    if not isinstance(logits, torch.Tensor):
        _fail(label, f"returned {type(out).__name__}", "Return logits (N, K, h, w) or a dict with 'sem_seg'.")
    k = cfg.MODEL.NUM_CLASSES
    stride = _promised_stride(head, shapes, cfg)
    if logits.dim() != 4 or logits.shape[:2] != (2, k):
        _fail(label, f"returned logits of shape {tuple(logits.shape)}, expected (2, {k}, h, w)",
              "Output MODEL.NUM_CLASSES channels, one per class.")
    if not (_size_ok(logits.shape[2], h, stride) and _size_ok(logits.shape[3], w, stride)):
        _fail(label, f"returned {tuple(logits.shape[2:])} logits for a {h}x{w} input; stride {stride} promises "
              f"{(math.ceil(h / stride), math.ceil(w / stride))}", "Set self.stride to the logits' real stride.")
    if not _finite(logits):
        _fail(label, "returned non-finite logits", "Check the initialisation.")
    _check_gradients(label, head, logits)
    if trace:
        head.eval()
        with torch.no_grad():
            ref = head(feats)
        _trace_matches(label, head, (feats,), ref)
    return head


def _check_gradients(label: str, module: nn.Module, out: torch.Tensor) -> None:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    module.zero_grad(set_to_none=True)
    (out.float() * torch.randn_like(out.float())).sum().backward()
    grads = [p.grad for p in params]
    if all(g is None for g in grads):
        _fail(label, "gets no gradient in any parameter", "Do not detach the computation from its parameters.")
    if not all(g is None or _finite(g) for g in grads):
        _fail(label, "gets non-finite gradients", "Check divisions and logarithms for zeros.")


def check_meta_arch(name_or_class: Any, cfg: Any = None, size: Tuple[int, int] = (40, 52), trace: bool = True,
                    onnx: bool = False):
    """Meta-architecture: ``loss_*`` scalars in training, logits ``(N, K, H, W)`` at the input size.

    Images are uint8 ``(N, 3, H, W)`` 0-255 of a size that is not a multiple of the
    stride. With ``trace`` the eval model must trace with TorchScript; with
    ``onnx`` also export to ONNX (needs the ``onnx`` package). Returns the model.
    """
    from segkit.registry import META_ARCH_REGISTRY

    cfg = _cfg(cfg)
    with _registered(META_ARCH_REGISTRY, name_or_class) as (name, label):
        model = _build(META_ARCH_REGISTRY, name, label, cfg)
    if not isinstance(model, nn.Module):
        _fail(label, f"built {type(model).__name__}", "A meta-architecture is a torch.nn.Module.")
    h, w = size
    images = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8)
    targets = torch.randint(0, cfg.MODEL.NUM_CLASSES, (2, h, w))
    targets[:, :3] = cfg.MODEL.IGNORE_VALUE
    model.train()
    losses = model(images, targets)
    if not isinstance(losses, dict) or not losses or not all(k.startswith("loss_") for k in losses):
        _fail(label, f"returned {type(losses).__name__} {list(losses) if isinstance(losses, dict) else ''} in "
              "training", "Return {'loss_<name>': scalar} when training with targets.")
    for k, v in losses.items():
        if not isinstance(v, torch.Tensor) or v.dim() != 0 or not _finite(v):
            _fail(label, f"'{k}' is not a finite scalar tensor", "Each loss term is a 0-d finite tensor.")
    sum(losses.values()).backward()
    if all(p.grad is None for p in model.parameters() if p.requires_grad):
        _fail(label, "losses do not reach any parameter", "Do not detach the logits before the losses.")
    model.eval()
    with torch.no_grad():
        logits = model(images)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, cfg.MODEL.NUM_CLASSES, h, w):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        _fail(label, f"returned {got} at inference for {h}x{w} images, expected (2, {cfg.MODEL.NUM_CLASSES}, {h}, "
              f"{w})", "Upsample the logits to the input size.")
    if trace:
        _trace_matches(label, model, (images,), logits)
    if onnx:
        _check_onnx(label, model, images, logits)
    return model


def _check_onnx(label: str, model: nn.Module, images: torch.Tensor, logits: torch.Tensor) -> None:
    """Export to ONNX (opset 17); with onnxruntime installed, its output must match the eager logits."""
    buffer = io.BytesIO()
    try:
        torch.onnx.export(model, (images,), buffer, opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["logits"])
    except Exception as exc:  # noqa: BLE001 - reported with the component's name
        _fail(label, f"does not export to ONNX ({type(exc).__name__}: {exc})",
              "Use operators ONNX opset 17 supports; see docs/embedding.md.")
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"images": images.numpy()})[0]
    if out.shape != tuple(logits.shape) or not np.allclose(out, logits.numpy(), atol=1e-3, rtol=1e-3):
        _fail(label, "gives different logits in ONNX Runtime than in PyTorch",
              "Avoid operators whose ONNX export differs (e.g. align_corners=True resizes); see docs/embedding.md.")


# ----------------------------------------------------------------------------- losses
def check_loss(name_or_class: Any, cfg: Any = None, args: Optional[Dict[str, Any]] = None):
    """Loss: a finite scalar; ignored pixels never count (all ignored: 0 and zero gradient); gradients flow.

    ``args`` are the YAML ``ARGS`` (any case), normalised as ``MODEL.LOSS.TERMS`` does.
    Returns the loss module.
    """
    from segkit.modeling.losses.build import _normalise_args
    from segkit.registry import LOSS_REGISTRY

    cfg = _cfg(cfg)
    with _registered(LOSS_REGISTRY, name_or_class) as (name, label):
        norm = _normalise_args(name, LOSS_REGISTRY.get(name), args or {})
        loss = _build(LOSS_REGISTRY, name, label, cfg, norm)
    if not isinstance(loss, nn.Module):
        _fail(label, f"built {type(loss).__name__}", "A loss is a torch.nn.Module.")
    k, ignore = cfg.MODEL.NUM_CLASSES, cfg.MODEL.IGNORE_VALUE
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, k, 9, 11, generator=gen, requires_grad=True)
    target = torch.randint(0, k, (2, 9, 11), generator=gen)
    target[0, :4] = ignore
    value = loss(logits, target)
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        _fail(label, f"returned {getattr(value, 'shape', type(value).__name__)}", "Return a 0-d tensor (reduce).")
    if not _finite(value):
        _fail(label, f"returned {float(value)}", "Return a finite value (guard divisions by zero).")
    if value.requires_grad:
        value.backward()
    if logits.grad is None or not _finite(logits.grad) or not logits.grad.abs().sum() > 0:
        _fail(label, "gives no (or non-finite) gradient to the logits", "Compute the loss from the logits.")
    if logits.grad[0, :, :4].abs().max() > 1e-7:
        _fail(label, f"gives gradient to pixels labelled {ignore} (the ignore value)",
              "Mask out target == ignore_index before reducing.")
    changed = logits.detach().clone()
    changed[0, :, :4] = torch.randn(k, 4, 11, generator=gen) * 10
    with torch.no_grad():
        if not torch.allclose(loss(changed, target), value.detach(), atol=1e-5, rtol=1e-4):
            _fail(label, "changes when only ignored pixels' logits change", "Ignored pixels must not count.")
    all_ignored = torch.full_like(target, ignore)
    empty_logits = logits.detach().clone().requires_grad_(True)
    empty = loss(empty_logits, all_ignored)
    if not isinstance(empty, torch.Tensor) or not _finite(empty) or abs(float(empty)) > 1e-6:
        _fail(label, f"returns {empty!r} when every pixel is ignored", "Return 0 (not NaN) for an empty selection.")
    if empty.requires_grad:
        empty.backward()
        if empty_logits.grad is not None and empty_logits.grad.abs().max() > 0:
            _fail(label, "gives gradient when every pixel is ignored", "Return logits.sum() * 0 for no pixels.")
    return loss


# ----------------------------------------------------------------------------- data
def check_transform(name_or_class: Any, args: Optional[Dict[str, Any]] = None, ignore_value: int = 255,
                    seeds: Sequence[int] = (0, 1, 2, 3), size: Tuple[int, int] = (40, 48)):
    """Transform: built with the segmentation defaults; never invents a mask label; image and mask stay aligned.

    The mask holds labels {3, 7, 9} and the ignore value (0 is absent on purpose:
    filling with 0 would invent a class). Returns the pipeline.
    """
    from segkit.data.transforms import apply_transforms, build_transforms
    from segkit.registry import TRANSFORM_REGISTRY

    labels = {3, 7, 9}
    rng = np.random.default_rng(0)
    h, w = size
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.full((h, w), 3, np.uint8)
    mask[5:25, 8:30], mask[15:35, 20:44], mask[:3] = 7, 9, ignore_value
    with _registered(TRANSFORM_REGISTRY, name_or_class) as (name, label):
        try:
            pipe = build_transforms([{"NAME": name, "ARGS": {"p": 1.0, **dict(args or {})}}]
                                    if _takes_p(TRANSFORM_REGISTRY.get(name)) else [{"NAME": name, "ARGS": args or {}}],
                                    ignore_value=ignore_value, pixel_mean=(120.0, 110.0, 100.0))
        except ValueError as exc:
            raise ConformanceError(f"{label}: cannot be built from ARGS {args}: {exc}") from exc
    for seed in seeds:
        out_image, out_mask = apply_transforms(pipe, image, mask, seed=seed)
        if out_image.shape[:2] != out_mask.shape[:2]:
            _fail(label, f"made image {out_image.shape[:2]} and mask {out_mask.shape[:2]} differ in size",
                  "Apply the same geometry to the mask (apply_to_mask).")
        if out_image.ndim != 3 or out_image.shape[2] != 3 or out_image.dtype != np.uint8:
            _fail(label, f"returned an image {out_image.shape} {out_image.dtype}", "Keep (H, W, 3) uint8 images.")
        invented = set(np.unique(out_mask).tolist()) - labels - {ignore_value}
        if invented:
            _fail(label, f"invented mask label(s) {sorted(invented)} (seed {seed})",
                  "Fill masks with the ignore value (a fill_mask parameter gets it by default) and resize them "
                  "with nearest-neighbour interpolation.")
    return pipe


def _takes_p(obj: Any) -> bool:
    import inspect

    try:
        return "p" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def check_dataset(name: str, root: Optional[str] = None, num_records: int = 3, num_classes: Optional[int] = None):
    """Dataset: records point to readable images and masks, labels within the declared classes.

    Args:
        name: the registered dataset name (``DatasetCatalog``).
        root: dataset root (default: ``SEGKIT_DATASETS`` or ``./datasets``).
        num_records: how many records to open.
        num_classes: expected class count (default: ``len(stuff_classes)``).

    Returns:
        The records.
    """
    from segkit.data import DatasetCatalog, MetadataCatalog
    from segkit.data.io import apply_label_map, read_image, read_mask

    label = f"dataset '{name}'"
    records = DatasetCatalog.get(name, root)
    meta = MetadataCatalog.get(name)
    classes = list(getattr(meta, "stuff_classes", None) or [])
    k = num_classes or len(classes)
    if not k:
        _fail(label, "declares no classes", "MetadataCatalog.get(name).set(stuff_classes=[...]).")
    ignore = int(getattr(meta, "ignore_label", 255))
    for rec in records[:num_records]:
        for key in ("file_name", "sem_seg_file_name"):
            if key not in rec or not os.path.isfile(rec[key]):
                _fail(label, f"record {rec.get('image_id', '?')} has {key}={rec.get(key)!r}, not a file",
                      "Records hold existing image and mask paths.")
        image = read_image(rec["file_name"])
        mask = apply_label_map(read_mask(rec["sem_seg_file_name"]), rec.get("label_map"), rec["sem_seg_file_name"])
        if image.shape[:2] != mask.shape[:2]:
            _fail(label, f"{rec['file_name']} is {image.shape[:2]} but its mask is {mask.shape[:2]}",
                  "Images and masks must have the same size.")
        for key, n in (("height", image.shape[0]), ("width", image.shape[1])):
            if key in rec and int(rec[key]) != n:
                _fail(label, f"record says {key}={rec[key]} but {rec['file_name']} has {n}", "Fix the record.")
        bad = sorted(set(np.unique(mask).tolist()) - set(range(k)) - {ignore})
        if bad:
            _fail(label, f"{rec['sem_seg_file_name']} holds labels {bad} outside [0, {k}) and ignore {ignore}",
                  "Map the on-disk ids to training ids (record 'label_map') or fix stuff_classes.")
    return records


# ----------------------------------------------------------------------------- inference
def check_postprocessor(name_or_class: Any, cfg: Any = None, devices: Optional[Sequence[str]] = None):
    """Post-processor: probabilities in, valid probabilities of the same shape out, on CPU and (if present) GPU.

    Returns the post-processor.
    """
    from segkit.registry import POSTPROCESSOR_REGISTRY

    cfg = _cfg(cfg)
    with _registered(POSTPROCESSOR_REGISTRY, name_or_class) as (name, label):
        pp = _build(POSTPROCESSOR_REGISTRY, name, label, cfg)
    if not callable(pp) or isinstance(pp, (dict, type)):
        _fail(label, f"built {type(pp).__name__}, which is not callable",
              "from_config returns a dict of constructor arguments; the built object has __call__(probs, images).")
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    k = cfg.MODEL.NUM_CLASSES
    gen = torch.Generator().manual_seed(0)
    for device in devices:
        probs = torch.randn(2, k, 12, 15, generator=gen).softmax(1).to(device)
        images = torch.randint(0, 256, (2, 3, 12, 15), generator=gen, dtype=torch.uint8).to(device)
        out = pp(probs, images)
        if not isinstance(out, torch.Tensor) or out.shape != probs.shape:
            _fail(label, f"returned {getattr(out, 'shape', type(out).__name__)} for probs {tuple(probs.shape)}",
                  "Return refined probabilities of the input's shape (N, K, H, W).")
        if out.device != probs.device or out.dtype != probs.dtype:
            _fail(label, f"returned {out.dtype} on {out.device} for {probs.dtype} on {probs.device}",
                  "Return the input's dtype and device.")
        if not _finite(out) or out.min() < -1e-5 or not torch.allclose(out.sum(1), torch.ones_like(out.sum(1)),
                                                                        atol=1e-3):
            _fail(label, "returned values that are not probabilities (finite, >= 0, summing to 1 over K)",
                  "Normalise the output over the class dimension.")
    return pp


def check_evaluator(name_or_class: Any, cfg: Any = None):
    """Evaluator: perfect predictions score 100 (or 1) on every IoU/accuracy metric, worse ones less.

    Inputs follow the test loader (``{"sem_seg": (N, H, W) int64, "image": (N, 3, H, W) uint8}``),
    outputs are ``{"sem_seg": (N, K, H, W) logits}``. Returns the evaluator.
    """
    from segkit.registry import EVALUATOR_REGISTRY

    cfg = _cfg(cfg)
    k, ignore = cfg.MODEL.NUM_CLASSES, cfg.MODEL.IGNORE_VALUE
    with tempfile.TemporaryDirectory() as out_dir:
        with _registered(EVALUATOR_REGISTRY, name_or_class) as (name, label):
            ev = _build(EVALUATOR_REGISTRY, name, label, cfg, dataset_name="_segkit_testing_dataset",
                        output_dir=out_dir)
        for m in ("reset", "process", "evaluate"):
            if not callable(getattr(ev, m, None)):
                _fail(label, f"has no {m}()", "An evaluator has reset(), process(inputs, outputs), evaluate().")
        gen = torch.Generator().manual_seed(0)
        target = torch.arange(k).repeat_interleave(4).repeat(2, 8, 1)[..., : 4 * k]
        target[:, 0, :] = ignore
        images = torch.zeros(2, 3, *target.shape[1:], dtype=torch.uint8)
        perfect = torch.nn.functional.one_hot(target.clamp(max=k - 1), k).permute(0, 3, 1, 2).float()
        scores = _metrics(label, ev, {"sem_seg": target, "image": images}, {"sem_seg": perfect})
        for key, v in scores.items():
            if "iou" in key.lower() or "acc" in key.lower():
                if not (abs(v - 100.0) < 1e-3 or abs(v - 1.0) < 1e-6):
                    _fail(label, f"scores {key}={v} for perfect predictions", "Count against the ground truth.")
        wrong = torch.randn(2, k, *target.shape[1:], generator=gen)
        worse = _metrics(label, ev, {"sem_seg": target, "image": images}, {"sem_seg": wrong})
        miou = [key for key in worse if key.lower().endswith("miou")]
        if miou and not worse[miou[0]] < scores[miou[0]]:
            _fail(label, f"scores random predictions {worse[miou[0]]} >= perfect ones", "reset() must forget.")
    return ev


def _metrics(label: str, ev: Any, inputs: dict, outputs: dict) -> Dict[str, float]:
    ev.reset()
    ev.process(inputs, outputs)
    res = ev.evaluate()
    if not isinstance(res, dict):
        _fail(label, f"evaluate() returned {type(res).__name__}", "Return a dict of metrics.")
    flat: Dict[str, float] = {}
    for key, v in res.items():
        for k2, v2 in (v.items() if isinstance(v, dict) else [(None, v)]):
            if isinstance(v2, (int, float)) and not isinstance(v2, bool):
                flat[f"{key}/{k2}" if k2 else key] = float(v2)
    return flat


# ----------------------------------------------------------------------------- training
class _TinyTrainer:
    """What hooks see of a trainer: model, optimizer, scheduler, checkpointer, storage, iter."""

    def __init__(self, cfg: Any, out_dir: str) -> None:
        from segkit.engine.checkpoint import Checkpointer
        from segkit.engine.events import EventStorage
        from segkit.solver import build_lr_scheduler, build_optimizer

        self.cfg = cfg
        self.model = nn.Linear(2, 2)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.checkpointer = Checkpointer(self.model, out_dir, optimizer=self.optimizer, scheduler=self.scheduler)
        self.storage = EventStorage(0)
        self.iter = self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER

    def evaluate_during_training(self, final: bool = False) -> Dict[str, Dict[str, float]]:
        return {"sem_seg": {"mIoU": 50.0 + self.iter}}

    def build_writers(self) -> list:
        return []


def check_hook(name_or_class: Any, cfg: Any = None, iterations: int = 3):
    """Hook: built for a trainer (``from_config(cfg, trainer)``), a ``HookBase`` or None, runs a short loop.

    Returns the hook (or None).
    """
    from segkit.engine.train_loop import HookBase
    from segkit.registry import HOOK_REGISTRY

    cfg = _cfg(cfg)
    with tempfile.TemporaryDirectory() as out_dir:
        cfg.defrost()
        cfg.OUTPUT_DIR = out_dir
        cfg.SOLVER.MAX_ITER = iterations
        cfg.SOLVER.CHECKPOINT_PERIOD = 2
        cfg.TEST.EVAL_PERIOD = 2
        trainer = _TinyTrainer(cfg, out_dir)
        with _registered(HOOK_REGISTRY, name_or_class) as (name, label):
            hook = _build(HOOK_REGISTRY, name, label, cfg, trainer=trainer)
        if hook is None:
            return None
        if not isinstance(hook, HookBase):
            _fail(label, f"built {type(hook).__name__}", "Subclass segkit.engine.HookBase (or return None).")
        hook.trainer = trainer
        with trainer.storage:
            hook.before_train()
            for trainer.iter in range(iterations):
                trainer.storage.iter = trainer.iter
                hook.before_step()
                trainer.storage.put_scalars(total_loss=1.0 / (trainer.iter + 1), lr=0.1)
                hook.after_step()
            trainer.iter += 1
            hook.after_train()
    return hook


def check_optimizer(name_or_class: Any, cfg: Any = None):
    """Optimizer: a ``torch.optim.Optimizer`` that keeps each group's ``lr`` and moves the parameters.

    Returns the optimizer.
    """
    from segkit.registry import OPTIMIZER_REGISTRY

    cfg = _cfg(cfg)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    groups = [{"params": list(model[0].parameters()), "lr": 0.05, "weight_decay": 0.0},
              {"params": list(model[1].parameters()), "lr": 0.01, "weight_decay": 1e-4}]
    with _registered(OPTIMIZER_REGISTRY, name_or_class) as (name, label):
        opt = _build(OPTIMIZER_REGISTRY, name, label, cfg, params=groups)
    if not isinstance(opt, torch.optim.Optimizer):
        _fail(label, f"built {type(opt).__name__}", "Return a torch.optim.Optimizer.")
    lrs = [g["lr"] for g in opt.param_groups]
    if lrs != [0.05, 0.01]:
        _fail(label, f"changed the groups' learning rates to {lrs}",
              "Pass the param groups through: their lr carries BIAS_LR_FACTOR and SOLVER.PARAM_GROUPS.")
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(8, 3)
    model(x).pow(2).mean().backward()
    opt.step()
    if all(torch.equal(a, p) for a, p in zip(before, model.parameters())):
        _fail(label, "did not change any parameter in a step", "step() must update the parameters.")
    return opt


def check_lr_scheduler(name_or_class: Any, cfg: Any = None):
    """LR schedule: an ``LRScheduler`` giving finite, non-negative rates over MAX_ITER, resumable.

    Returns the scheduler.
    """
    from torch.optim.lr_scheduler import LRScheduler

    from segkit.registry import LR_SCHEDULER_REGISTRY

    cfg = _cfg(cfg)
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with _registered(LR_SCHEDULER_REGISTRY, name_or_class) as (name, label):
        sched = _build(LR_SCHEDULER_REGISTRY, name, label, cfg, optimizer=opt)
        if not isinstance(sched, LRScheduler):
            _fail(label, f"built {type(sched).__name__}", "Return a torch.optim.lr_scheduler.LRScheduler.")
        lrs = []
        for _ in range(cfg.SOLVER.MAX_ITER):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        if not all(math.isfinite(v) and v >= 0 for v in lrs):
            _fail(label, f"gave learning rates {lrs}", "Rates must be finite and non-negative.")
        state = sched.state_dict()
        opt2 = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
        again = _build(LR_SCHEDULER_REGISTRY, name, label, cfg, optimizer=opt2)
        again.load_state_dict(state)
        if abs(opt2.param_groups[0]["lr"] - lrs[-1]) > 1e-12 and abs(again.get_last_lr()[0] - lrs[-1]) > 1e-12:
            _fail(label, "does not resume at the saved rate from state_dict()", "Implement state_dict/load_state_dict.")
    return sched


def check_config(name_or_function: Any):
    """Config extension: adds keys with defaults to a fresh config, idempotent on a new one, returns None."""
    from segkit.config.defaults import _C
    from segkit.registry import CONFIG_REGISTRY

    with _registered(CONFIG_REGISTRY, name_or_function) as (name, label):
        fn = CONFIG_REGISTRY.get(name)
    fresh = _C.clone()
    before = set(_paths(fresh))
    out = fn(fresh)
    if out is not None:
        _fail(label, f"returned {type(out).__name__}", "Change the config in place and return None.")
    added = set(_paths(fresh)) - before
    if not added:
        _fail(label, "added no key", "Add the plugin's keys with defaults (cfg.MY_PLUGIN = CfgNode(); ...).")
    return sorted(added)


def _paths(node: Any, prefix: str = "") -> Iterator[str]:
    for k, v in node.items():
        yield prefix + k
        if hasattr(v, "items"):
            yield from _paths(v, prefix + k + ".")


CHECKS: Dict[str, Callable[..., Any]] = {
    "BACKBONE": check_backbone, "HEAD": check_head, "META_ARCH": check_meta_arch, "LOSS": check_loss,
    "TRANSFORM": check_transform, "POSTPROCESSOR": check_postprocessor, "DATASET": check_dataset,
    "EVALUATOR": check_evaluator, "HOOK": check_hook, "OPTIMIZER": check_optimizer,
    "LR_SCHEDULER": check_lr_scheduler, "CONFIG": check_config,
}


def check_component(registry: Any, name_or_class: Any, cfg: Any = None, **kwargs: Any) -> Any:
    """Run the check of ``registry``'s kind (see :data:`CHECKS`) on ``name_or_class``.

    ``cfg`` is the config (for transforms: their ``ARGS``; for datasets: the root;
    unused for config extensions). Returns what the kind's check returns.
    """
    kind = registry.name if hasattr(registry, "name") else str(registry).upper().replace("_REGISTRY", "")
    if kind not in CHECKS:
        raise ValueError(f"No conformance check for registry {kind}; known: {sorted(CHECKS)}.")
    if kind == "TRANSFORM":
        return check_transform(name_or_class, cfg, **kwargs)
    if kind == "DATASET":
        return check_dataset(name_or_class, cfg, **kwargs)
    if kind == "CONFIG":
        return check_config(name_or_class)
    return CHECKS[kind](name_or_class, cfg, **kwargs)
