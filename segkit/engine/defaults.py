"""What a training script needs: the command line, the run's setup, and DefaultTrainer.

``tools/train_net.py`` is these three calls::

    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
    # main(args): cfg = setup(args); DefaultTrainer(cfg).resume_or_load(args.resume).train()
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from segkit.config import CfgNode, load_config, save_config
from segkit.engine import hooks as hooks_mod
from segkit.engine.checkpoint import Checkpointer, load_model_weights, restore_rng_state, unwrap_model
from segkit.engine.comm import get_local_rank, get_rank, get_world_size, is_main_process
from segkit.engine.events import ConsolePrinter, JSONWriter, TensorboardWriter
from segkit.engine.train_loop import SimpleTrainer, TrainerBase, resolve_amp_dtype
from segkit.registry import EVALUATOR_REGISTRY, HOOK_REGISTRY
from segkit.utils.device import resolve_device

__all__ = [
    "default_argument_parser",
    "default_setup",
    "setup_logger",
    "seed_all",
    "DefaultTrainer",
]

logger = logging.getLogger("segkit")


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """detectron2's flags: ``--config-file --resume --eval-only --num-gpus --num-machines
    --machine-rank --dist-url`` and trailing ``KEY VALUE`` config overrides."""
    parser = argparse.ArgumentParser(
        epilog=epilog or "Example: train_net.py --config-file configs/fashion_scenes/main.yaml SOLVER.MAX_ITER 500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the YAML config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, schedule, RNG, data position)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS (or the last checkpoint)")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (one per GPU; CPU processes on gloo when there is no GPU)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine")
    parser.add_argument("--dist-url", default="auto",
                        help="rendezvous URL, tcp://<host of machine 0>:<port>; 'auto' = free local port")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.01")
    return parser


def setup_logger(output_dir: Optional[str] = None, rank: int = 0, name: str = "segkit") -> logging.Logger:
    """Console (main process, INFO) and ``<output_dir>/log.txt`` (``log.txt.rank<N>`` elsewhere)."""
    log = logging.getLogger(name)
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("[%(asctime)s %(name)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        log.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fname = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
        fh = logging.FileHandler(fname)
        fh.setFormatter(fmt)
        log.addHandler(fh)
    return log


def seed_all(seed: int) -> int:
    """Seed Python, NumPy and torch (all devices); a negative seed draws one. Returns the seed."""
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def default_setup(cfg: CfgNode, args: argparse.Namespace) -> CfgNode:
    """Output directory, logging, seeding and the saved merged config.

    The seed is ``cfg.SEED`` (drawn and written back when negative) plus the rank,
    so that processes differ in dropout but a rerun repeats itself.
    """
    rank = get_rank()
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, rank)
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    if cfg.SEED < 0:
        # Every process must agree on the drawn seed: derive it once and share it.
        from segkit.engine.comm import all_gather_object

        cfg.SEED = all_gather_object(seed_all(-1))[0]
    if was_frozen:
        cfg.freeze()
    seed_all(cfg.SEED + rank)
    logger.info("Rank %d of %d; torch %s; command line: %s", rank, get_world_size(), torch.__version__, vars(args))
    if is_main_process():
        path = save_config(cfg, cfg.OUTPUT_DIR)
        logger.info("Full config saved to %s", path)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    return cfg


def setup(args: argparse.Namespace) -> CfgNode:
    """``load_config(args.config_file, args.opts)`` (plugins first), ``default_setup``, freeze."""
    cfg = load_config(args.config_file or None, args.opts or [])
    default_setup(cfg, args)
    cfg.freeze()
    return cfg


class DefaultTrainer(TrainerBase):
    """Builds model, optimizer, schedule, data, checkpointer and hooks from a config.

    Usage::

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()

    Override the ``build_*`` classmethods to change one piece (detectron2's pattern).
    """

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__()
        cfg = prepare_class_weights(cfg)
        self.cfg = cfg
        self.device = resolve_device(cfg.MODEL.DEVICE)
        model = self.build_model(cfg)
        if cfg.SOLVER.CHANNELS_LAST:
            from segkit.modeling.optimize import to_channels_last

            to_channels_last(model)
        self.optimizer = self.build_optimizer(cfg, model)
        self.model = self._wrap_ddp(model)
        amp_dtype = resolve_amp_dtype(cfg.SOLVER.AMP.DTYPE, self.device) if cfg.SOLVER.AMP.ENABLED else None
        self._trainer = SimpleTrainer(
            self.model, None, self.optimizer, cfg.SOLVER.ACCUM_STEPS, amp_dtype, self.build_grad_clipper(cfg),
            self.device,
        )
        self.accum_steps = self._trainer.accum_steps
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        self.checkpointer = Checkpointer(
            self.model, cfg.OUTPUT_DIR, save_to_disk=is_main_process(),
            optimizer=self.optimizer, scheduler=self.scheduler, scaler=self._trainer.scaler,
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self._rng_to_restore: Optional[Dict[str, Any]] = None
        self.register_hooks(self.build_hooks())

    def _wrap_ddp(self, model: nn.Module) -> nn.Module:
        if get_world_size() == 1:
            return model
        device_ids = [get_local_rank()] if self.device.type == "cuda" else None
        # broadcast_buffers=False: BatchNorm statistics stay per-process, as in detectron2.
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    # ------------------------------------------------------------------ builders
    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        from segkit.modeling import build_model

        model = build_model(cfg)
        logger.info("Model: %s with %.2fM parameters", type(model).__name__,
                    sum(p.numel() for p in model.parameters()) / 1e6)
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        from segkit.solver import build_optimizer

        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        from segkit.solver import build_lr_scheduler

        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_grad_clipper(cls, cfg: CfgNode):
        from segkit.solver import clip_gradients

        return lambda params: clip_gradients(cfg, params)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, start_iter: int = 0):
        """The data helper's infinite loader, positioned at micro-batch ``start_iter``.

        With ``SOLVER.ACCUM_STEPS = k`` each micro-batch holds ``IMS_PER_BATCH / k`` images.
        """
        from segkit.data import build_train_loader

        return build_train_loader(micro_batch_cfg(cfg), start_iter=start_iter)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        from segkit.data import build_test_loader

        return build_test_loader(cfg, dataset_name, batch_size=cfg.TEST.IMS_PER_BATCH)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_dir: Optional[str] = None):
        output_dir = output_dir or os.path.join(cfg.OUTPUT_DIR, "inference")
        return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, dataset_name, output_dir)

    def build_hooks(self) -> List[hooks_mod.HookBase]:
        """``hooks.DEFAULT_HOOKS`` then ``SOLVER.EXTRA_HOOKS``, each built by HOOK_REGISTRY."""
        names = list(hooks_mod.DEFAULT_HOOKS) + list(self.cfg.SOLVER.EXTRA_HOOKS)
        return [HOOK_REGISTRY.get(n)(self.cfg, self) for n in names]

    def build_writers(self) -> list:
        out = self.cfg.OUTPUT_DIR
        return [
            ConsolePrinter(self.max_iter, self.cfg.SOLVER.IMS_PER_BATCH),
            JSONWriter(os.path.join(out, "metrics.jsonl")),
            TensorboardWriter(os.path.join(out, "tensorboard")),
        ]

    # ------------------------------------------------------------------ resume / train
    def resume_or_load(self, resume: bool = True) -> "DefaultTrainer":
        """With ``resume`` and a checkpoint in OUTPUT_DIR: restore everything and continue
        after its iteration. Otherwise load ``MODEL.WEIGHTS`` (model only) when set."""
        path = self.checkpointer.get_checkpoint_file() if resume else None
        if path is not None:
            extra = self.checkpointer.load(path)
            self.start_iter = int(extra["iteration"]) + 1
            rng = extra.get("rng") or []
            if rng:
                self._rng_to_restore = rng[get_rank()] if len(rng) == get_world_size() else rng[0]
                if len(rng) != get_world_size():
                    logger.warning("Checkpoint has RNG states of %d processes, running %d: using rank 0's.",
                                   len(rng), get_world_size())
            logger.info("Resuming from %s at iteration %d", path, self.start_iter)
        elif self.cfg.MODEL.WEIGHTS:
            load_model_weights(self.model, self.cfg.MODEL.WEIGHTS, strict=self.cfg.MODEL.WEIGHTS_STRICT)
            logger.info("Loaded weights from %s", self.cfg.MODEL.WEIGHTS)
        return self

    def train(self) -> Dict[str, Dict[str, float]]:
        """Train ``[start_iter, MAX_ITER)``; returns the last evaluation's results."""
        if self.start_iter >= self.max_iter:
            logger.info("Nothing to train: checkpoint is at iteration %d >= MAX_ITER %d.", self.start_iter,
                        self.max_iter)
            return {}
        loader = self.build_train_loader(self.cfg, start_iter=self.start_iter * self.accum_steps)
        self._trainer.set_data_loader(loader)
        if self._rng_to_restore is not None:
            # Restored last, after every builder that may draw random numbers.
            restore_rng_state(self._rng_to_restore)
        self.model.train()
        super().train(self.start_iter, self.max_iter)
        evals = [h for h in self._hooks if isinstance(h, hooks_mod.EvalHook)]
        return evals[0].latest_results if evals else {}

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.storage = self.storage
        self._trainer.run_step()

    # ------------------------------------------------------------------ evaluation
    def evaluate_during_training(self, final: bool) -> Dict[str, Dict[str, float]]:
        """Evaluation called by EvalHook: post-processed variants only at the end unless
        ``TEST.EVAL_POSTPROCESS_PERIODIC``."""
        post = self.cfg.TEST.EVAL_POSTPROCESS and (final or self.cfg.TEST.EVAL_POSTPROCESS_PERIODIC)
        results = self.test(self.cfg, self.model, postprocess=post, pictures=final)
        self.model.train()
        return results

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module, postprocess: Optional[bool] = None,
             pictures: bool = True) -> Dict[str, Dict[str, float]]:
        """Evaluate on every dataset in ``DATASETS.TEST``.

        Returns:
            ``{variant: metrics}`` for a single dataset, else ``{"<dataset>/<variant>": metrics}``.
        """
        from segkit.evaluation import inference_on_dataset, postprocessed_key
        from segkit.postprocess import build_inference, build_postprocessor_chain

        postprocess = cfg.TEST.EVAL_POSTPROCESS if postprocess is None else postprocess
        inner = unwrap_model(model)
        was_training = inner.training
        inner.eval()
        inference = build_inference(cfg, inner)
        chain = list(cfg.POSTPROCESS.CHAIN)
        post = {postprocessed_key(chain): build_postprocessor_chain(cfg)} if (postprocess and chain) else {}
        device = next(inner.parameters()).device
        all_results: Dict[str, Dict[str, float]] = {}
        for name in cfg.DATASETS.TEST:
            evaluator = cls.build_evaluator(cfg, name)
            # segkit.data shards the test set across processes; the evaluator sums the matrices.
            loader = cls.build_test_loader(cfg, name)
            results = inference_on_dataset(loader, evaluator, inference, post, device)
            if pictures and is_main_process():
                cls.save_pictures(cfg, evaluator)
            prefix = "" if len(cfg.DATASETS.TEST) == 1 else f"{name}/"
            all_results.update({prefix + k: v for k, v in results.items()})
        inner.train(was_training)
        return all_results

    @classmethod
    def save_pictures(cls, cfg: CfgNode, evaluator) -> List[str]:
        from segkit.engine.visualization import save_evaluation_pictures

        palette = None
        try:
            from segkit.data import MetadataCatalog

            palette = getattr(MetadataCatalog.get(evaluator.dataset_name), "stuff_colors", None)
        except (ImportError, KeyError, AttributeError):
            palette = None
        paths = save_evaluation_pictures(evaluator, os.path.join(cfg.OUTPUT_DIR, "pictures"), palette,
                                         cfg.INPUT.FORMAT)
        logger.info("Saved %d pictures to %s", len(paths), os.path.join(cfg.OUTPUT_DIR, "pictures"))
        return paths


def prepare_class_weights(cfg: CfgNode) -> CfgNode:
    """Compute the class-statistics file when ``MODEL.LOSS.CLASS_WEIGHT.COMPUTE`` asks for it.

    The main process writes ``OUTPUT_DIR/class_stats.json`` from ``DATASETS.TRAIN`` (kept
    across resumes), every process waits for it, and the returned copy of ``cfg`` points
    ``MODEL.LOSS.CLASS_WEIGHT.STATS_FILE`` at it (the saved config is updated too).
    """
    cw = cfg.MODEL.get("LOSS", {}).get("CLASS_WEIGHT") if "LOSS" in cfg.MODEL else None
    if cw is None or not cw.get("COMPUTE", False) or cw.STATS_FILE or cw.METHOD in ("none", "explicit"):
        return cfg
    from segkit.data.class_stats import compute_dataset_class_stats
    from segkit.engine.comm import synchronize

    path = os.path.join(cfg.OUTPUT_DIR, "class_stats.json")
    if is_main_process() and not os.path.isfile(path):
        logger.info("Computing class statistics of %s for %s class weights", list(cfg.DATASETS.TRAIN), cw.METHOD)
        compute_dataset_class_stats(cfg, output=path, progress=False)
    synchronize()
    out = cfg.clone()
    out.defrost()
    out.MODEL.LOSS.CLASS_WEIGHT.STATS_FILE = path
    out.freeze()
    if is_main_process():
        save_config(out, out.OUTPUT_DIR)
    return out


def micro_batch_cfg(cfg: CfgNode) -> CfgNode:
    """A copy of ``cfg`` whose ``SOLVER.IMS_PER_BATCH`` is one micro-batch (``/ ACCUM_STEPS``)."""
    k = cfg.SOLVER.ACCUM_STEPS
    if k == 1:
        return cfg
    if cfg.SOLVER.IMS_PER_BATCH % (k * get_world_size()) != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be divisible by SOLVER.ACCUM_STEPS ({k}) "
            f"times the number of processes ({get_world_size()})."
        )
    out = cfg.clone()
    out.defrost()
    out.SOLVER.IMS_PER_BATCH = cfg.SOLVER.IMS_PER_BATCH // k
    out.freeze()
    return out


def main(args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    """Per-process entry point of ``tools/train_net.py``: train (or ``--eval-only``) and return results."""
    cfg = setup(args)
    if args.eval_only:
        model = DefaultTrainer.build_model(cfg)
        checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, save_to_disk=False)
        weights = cfg.MODEL.WEIGHTS or checkpointer.get_checkpoint_file()
        if not weights:
            raise FileNotFoundError(
                f"--eval-only needs MODEL.WEIGHTS or a checkpoint in OUTPUT_DIR ({cfg.OUTPUT_DIR}); found neither."
            )
        load_model_weights(model, weights)
        logger.info("Evaluating %s", weights)
        return DefaultTrainer.test(cfg, model)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if trainer.start_iter == 0:  # a fresh run, not a resumed one
        from segkit.engine.pretrain import maybe_pretrain

        maybe_pretrain(cfg, trainer.model)
    return trainer.train()
