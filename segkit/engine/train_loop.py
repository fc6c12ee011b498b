"""The iteration-based training loop and its hook protocol.

:class:`TrainerBase` runs ``before_step -> run_step -> after_step`` for every
iteration and calls the hooks around it; :class:`SimpleTrainer` implements one step
(data, forward under autocast, NaN/inf guard, backward with gradient accumulation
and scaling, clipping, optimizer step). ``DefaultTrainer`` in
:mod:`segkit.engine.defaults` builds all of it from a config.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from segkit.engine.checkpoint import NonFiniteWeightsError
from segkit.engine.events import EventStorage

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer", "resolve_amp_dtype", "cpu_runs_bfloat16", "NonFiniteLossError",
           "NonFiniteWeightsError"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training stopped because a loss term became NaN or infinite."""


class HookBase:
    """Called by the trainer around training and around each step.

    ``self.trainer`` is set (as a weak proxy) when the hook is registered; the
    current iteration is ``self.trainer.iter``.
    """

    trainer: "TrainerBase"

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


class TrainerBase:
    """Iteration loop with hooks. Subclasses implement :meth:`run_step`.

    Attributes:
        iter: the current iteration (0-based); after training it equals ``max_iter``.
        start_iter, max_iter: the range ``[start_iter, max_iter)`` being trained.
        storage: the :class:`EventStorage` of the running loop.
    """

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: Optional[EventStorage] = None

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Append hooks (None entries are skipped); they run in the order given."""
        for h in hooks:
            if h is None:
                continue
            # A weak proxy avoids a reference cycle trainer <-> hook.
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    @property
    def hooks(self) -> List[HookBase]:
        return list(self._hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``."""
        logger.info("Starting training from iteration %d to %d", start_iter, max_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.storage.iter = self.iter
                    self.before_step()
                    self.run_step()
                    self.after_step()
                self.iter += 1  # equals max_iter after a full run (detectron2 convention)
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        for h in self._hooks:
            h.before_step()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        raise NotImplementedError


def cpu_runs_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), so autocast to bfloat16 pays.

    Elsewhere oneDNN emulates bfloat16 and training under autocast runs slower than in
    float32. The check uses PyTorch's own CPU-feature probes; a PyTorch without them
    (or a CPU they do not know) counts as no.
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # a probe PyTorch could not run on this CPU
            continue
    return False


def resolve_amp_dtype(name: str, device: torch.device) -> Optional[torch.dtype]:
    """``SOLVER.AMP.DTYPE`` -> torch dtype, or None for full precision.

    ``"auto"``: on CUDA bfloat16 where supported, else float16; on CPU bfloat16 where
    the CPU has bfloat16 instructions (:func:`cpu_runs_bfloat16`), else None (float32:
    emulated bfloat16 would be slower, and CPU float16 autocast slower still). An
    explicit ``"float16"`` / ``"bfloat16"`` is always honoured.
    """
    name = name.lower()
    if name in ("float16", "fp16", "half"):
        return torch.float16
    if name in ("bfloat16", "bf16"):
        return torch.bfloat16
    if name != "auto":
        raise ValueError(f"SOLVER.AMP.DTYPE must be 'auto', 'float16' or 'bfloat16', got '{name}'.")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and not cpu_runs_bfloat16():
        logger.info("SOLVER.AMP.DTYPE auto: this CPU has no bfloat16 instructions; training in float32.")
        return None
    return torch.bfloat16


class SimpleTrainer(TrainerBase):
    """One optimizer step per iteration over ``accum_steps`` micro-batches.

    Args:
        model: in training mode, ``model(images, targets)`` returns ``dict`` of scalar
            ``loss_*`` terms (possibly wrapped in DistributedDataParallel).
        data_loader: iterable of batches ``{"image": uint8 (N, 3, H, W), "sem_seg": (N, H, W)}``;
            may be set later (before :meth:`train`).
        optimizer: a torch optimizer.
        accum_steps: micro-batches whose gradients are summed (each loss divided by
            ``accum_steps``) before one optimizer step.
        amp_dtype: autocast dtype, or None for full precision. float16 also enables a
            ``GradScaler``.
        grad_clipper: called with the model parameters after unscaling, before the step.
        device: the device type autocast and the gradient scaler use (default: the
            model's parameters' device). Batches are not moved here: the model moves them.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Optional[Iterable],
        optimizer: torch.optim.Optimizer,
        accum_steps: int = 1,
        amp_dtype: Optional[torch.dtype] = None,
        grad_clipper: Optional[Callable[[Iterable[torch.Tensor]], object]] = None,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        if accum_steps < 1:
            raise ValueError(f"SOLVER.ACCUM_STEPS must be >= 1, got {accum_steps}.")
        self.model = model
        self.optimizer = optimizer
        self.accum_steps = int(accum_steps)
        self.grad_clipper = grad_clipper
        self.device = device or next(model.parameters()).device
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(self.device.type) if amp_dtype == torch.float16 else None
        self.data_loader = data_loader
        self._data_iter = None

    def set_data_loader(self, data_loader: Iterable) -> None:
        self.data_loader = data_loader
        self._data_iter = None

    def _next_batch(self):
        if self._data_iter is None:
            if self.data_loader is None:
                raise RuntimeError("SimpleTrainer has no data loader; call set_data_loader() first.")
            self._data_iter = iter(self.data_loader)
        return next(self._data_iter)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def run_step(self) -> None:
        assert self.model.training, "SimpleTrainer: the model was switched to eval mode and not back."
        self.optimizer.zero_grad(set_to_none=True)
        sums: Dict[str, float] = {}
        data_time = 0.0
        for micro in range(self.accum_steps):
            start = time.perf_counter()
            batch = self._next_batch()
            data_time += time.perf_counter() - start
            # The segmentor moves its inputs to its device (SemanticSegmentor.normalize / compute_losses).
            with self._sync_context(micro), self._autocast():
                loss_dict = self.model(batch["image"], batch["sem_seg"])
            self._check_finite(loss_dict, micro)
            with self._sync_context(micro):
                total = sum(loss_dict.values()) / self.accum_steps
                (self.scaler.scale(total) if self.scaler else total).backward()
            for k, v in loss_dict.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / self.accum_steps
        self._optimizer_step()
        self.storage.put_scalars(total_loss=sum(sums.values()), **sums)
        self.storage.put_scalar("data_time", data_time)

    def _sync_context(self, micro: int):
        # Only the last micro-batch all-reduces gradients under DDP (no_sync on the others).
        is_ddp = isinstance(self.model, nn.parallel.DistributedDataParallel)
        if is_ddp and micro < self.accum_steps - 1:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.grad_clipper is not None:
            self.grad_clipper([p for p in self.model.parameters() if p.grad is not None])
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self._check_finite_weights()

    def _check_finite_weights(self) -> None:
        # A finite loss can still take a step to NaN/inf weights (e.g. a huge learning rate);
        # stop here so that no hook evaluates or checkpoints them.
        params = [p for p in self.model.parameters() if p.is_floating_point()]
        if not params or bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            return
        bad = [n for n, p in self.model.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
        raise NonFiniteWeightsError(
            f"Weights became NaN or infinite in the optimizer step of iteration {self.iter} ({len(bad)} tensors, "
            f"e.g. {', '.join(bad[:3])}); nothing of this step was saved. Resume from the last checkpoint with a "
            "lower SOLVER.BASE_LR, a longer SOLVER.WARMUP_ITERS or gradient clipping."
        )

    def _check_finite(self, loss_dict: Dict[str, torch.Tensor], micro: int) -> None:
        bad = {k: float(v.detach()) for k, v in loss_dict.items() if not math.isfinite(float(v.detach()))}
        flag = torch.tensor([1.0 if bad else 0.0], device=self.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank must stop together, or the healthy ones hang in the next all-reduce.
            dist.all_reduce(flag)
        if bad or float(flag) > 0:
            terms = ", ".join(f"{k} = {v}" for k, v in bad.items()) or "a loss term on another process"
            values = ", ".join(f"{k} = {float(v.detach()):.4g}" for k, v in loss_dict.items())
            raise NonFiniteLossError(
                f"Loss became NaN or infinite at iteration {self.iter} (micro-batch {micro}): {terms}. "
                f"All terms: {values}. Try a lower SOLVER.BASE_LR, gradient clipping, or SOLVER.AMP.ENABLED False."
            )
