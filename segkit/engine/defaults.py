"""What a training script needs: the command line, the run's setup, and DefaultTrainer.

``tools/train_net.py`` is these three calls::

    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
    # main(args): cfg = setup(args); DefaultTrainer(cfg).resume_or_load(args.resume).train()
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import logging
import os
import random
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from segkit.config import CfgNode, load_config, save_config
from segkit.data import build_test_loader, build_train_loader, dataset_classes, setup_datasets
from segkit.data.class_stats import compute_dataset_class_stats
from segkit.engine import hooks as hooks_mod
from segkit.engine.checkpoint import (
    LAST_CHECKPOINT_FILE,
    CheckpointError,
    Checkpointer,
    load_model_weights,
    read_resume_state,
    restore_rng_state,
    unwrap_model,
)
from segkit.engine.comm import all_gather_object, get_local_rank, get_rank, get_world_size, is_main_process, synchronize
from segkit.engine.events import ConsolePrinter, JSONWriter, TensorboardWriter, get_event_storage
from segkit.engine.inference_pipeline import build_inference_pipeline
from segkit.engine.prediction_writer import PredictionWriter
from segkit.engine.pretrain import maybe_pretrain
from segkit.engine.train_loop import SimpleTrainer, TrainerBase, resolve_amp_dtype
from segkit.engine.visualization import save_evaluation_pictures
from segkit.evaluation import inference_on_dataset, postprocessed_key
from segkit.evaluation.sem_seg_evaluation import build_evaluator
from segkit.modeling import build_model
from segkit.modeling.losses import class_stats_file
from segkit.modeling.optimize import to_channels_last
from segkit.postprocess import build_postprocessor_chain
from segkit.solver import build_lr_scheduler, build_optimizer, clip_gradients
from segkit.utils.device import resolve_device
from segkit.utils.visualize import default_palette

__all__ = [
    "default_argument_parser",
    "default_setup",
    "setup_logger",
    "seed_all",
    "DefaultTrainer",
    "previous_run_files",
    "move_previous_run_aside",
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
    parser.add_argument("--save-predictions", default=None, metavar="DIR",
                        help="with --eval-only: write every prediction (label PNG, overlay) and per-image IoU to DIR")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (one per GPU; CPU processes on gloo when there is no GPU)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine")
    parser.add_argument("--dist-url", default="auto",
                        help="rendezvous URL, tcp://<host of machine 0>:<port>; 'auto' = free local port")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.01")
    return parser


class _PrintableFormatter(logging.Formatter):
    """Escapes what no encoding can write (file names with undecodable bytes arrive as lone
    surrogates), so such a line is logged as ``\\udce9`` instead of being dropped."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).encode("utf-8", "backslashreplace").decode("utf-8")


def setup_logger(output_dir: Optional[str] = None, rank: int = 0, name: str = "segkit") -> logging.Logger:
    """Console (main process, INFO) and ``<output_dir>/log.txt`` (``log.txt.rank<N>`` elsewhere)."""
    log = logging.getLogger(name)
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = _PrintableFormatter("[%(asctime)s %(name)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        log.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fname = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
        fh = logging.FileHandler(fname, encoding="utf-8", errors="backslashreplace")
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
    if not getattr(args, "resume", False) and not getattr(args, "eval_only", False):
        if is_main_process():
            move_previous_run_aside(cfg.OUTPUT_DIR)

        synchronize()
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    if cfg.SEED < 0:
        # Every process must agree on the drawn seed: derive it once and share it.
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
    """``load_config(args.config_file, args.opts)`` (plugins first), the config's datasets
    (registered, class list checked: :func:`segkit.data.setup_datasets`), ``default_setup``, freeze."""
    cfg = load_config(args.config_file or None, args.opts or [])
    setup_datasets(cfg)
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
        setup_datasets(cfg)  # a no-op after setup(); here for trainers built straight from a config
        check_evaluation_setup(cfg)
        prepare_class_weights(cfg)
        self.cfg = cfg
        self.device = resolve_device(cfg.MODEL.DEVICE)
        model = self.build_model(cfg)
        if cfg.SOLVER.CHANNELS_LAST:
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
        model = build_model(cfg)
        logger.info("Model: %s with %.2fM parameters", type(model).__name__,
                    sum(p.numel() for p in model.parameters()) / 1e6)
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_grad_clipper(cls, cfg: CfgNode):
        return lambda params: clip_gradients(cfg, params)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, start_iter: int = 0):
        """The data helper's infinite loader, positioned at micro-batch ``start_iter``.

        With ``SOLVER.ACCUM_STEPS = k`` each micro-batch holds ``IMS_PER_BATCH / k`` images.
        """
        return build_train_loader(micro_batch_cfg(cfg), start_iter=start_iter)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_test_loader(cfg, dataset_name, batch_size=cfg.TEST.IMS_PER_BATCH)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_dir: Optional[str] = None):
        output_dir = output_dir or os.path.join(cfg.OUTPUT_DIR, "inference")

        return build_evaluator(cfg, dataset_name, output_dir)

    def build_hooks(self) -> List[hooks_mod.HookBase]:
        """``hooks.DEFAULT_HOOKS`` then ``SOLVER.EXTRA_HOOKS``, each built by HOOK_REGISTRY."""
        names = list(hooks_mod.DEFAULT_HOOKS) + list(self.cfg.SOLVER.EXTRA_HOOKS)
        return [hooks_mod.build_hook(self.cfg, n, self) for n in names]

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
        after its iteration. Otherwise load ``MODEL.WEIGHTS`` (model only) when set.

        Raises:
            CheckpointError: ``last_checkpoint`` names a missing, unreadable or corrupt
                file (never a silent restart from iteration 0).
        """
        self._resume_requested = bool(resume)
        path = self.checkpointer.get_checkpoint_file() if resume else None
        if path is not None:
            extra = self.checkpointer.load(path)
            self.start_iter, self._rng_to_restore = read_resume_state(extra, path, get_rank(), get_world_size())
            logger.info("Resuming from %s at iteration %d", path, self.start_iter)
        else:
            if resume:
                logger.info("--resume: no checkpoint in %s, starting a new run.", self.cfg.OUTPUT_DIR)
            if self.cfg.MODEL.WEIGHTS:
                load_model_weights(self.model, self.cfg.MODEL.WEIGHTS, strict=self.cfg.MODEL.WEIGHTS_STRICT)
                logger.info("Loaded weights from %s", self.cfg.MODEL.WEIGHTS)
        return self

    def train(self) -> Dict[str, Dict[str, float]]:
        """Train ``[start_iter, MAX_ITER)``; returns the last evaluation's results.

        Raises:
            CheckpointError: a new run (not resumed) would write into an OUTPUT_DIR that
                holds another run's checkpoints.
        """
        if self.start_iter == 0 and not getattr(self, "_resume_requested", False):
            _refuse_used_output_dir(self.cfg.OUTPUT_DIR)
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
             pictures: bool = True, save_predictions: Optional[str] = None) -> Dict[str, Dict[str, float]]:
        """Evaluate on every dataset in ``DATASETS.TEST``.

        ``save_predictions``: a folder; every prediction and the per-image IoU are written
        to ``<folder>/<dataset>/`` (:class:`segkit.engine.prediction_writer.PredictionWriter`).

        Returns:
            ``{variant: metrics}`` for a single dataset, else ``{"<dataset>/<variant>": metrics}``.
        """
        postprocess = cfg.TEST.EVAL_POSTPROCESS if postprocess is None else postprocess
        inner = unwrap_model(model)
        was_training = inner.training
        inner.eval()
        pipeline = build_inference_pipeline(cfg, model=inner)
        chain = list(cfg.POSTPROCESS.CHAIN)
        post = {postprocessed_key(chain): pipeline.postprocess} if (postprocess and chain) else {}
        all_results: Dict[str, Dict[str, float]] = {}
        for name in cfg.DATASETS.TEST:
            evaluator = cls.build_evaluator(cfg, name)
            _stamp_iteration(evaluator)
            if save_predictions:
                evaluator = cls._prediction_writer(cfg, evaluator, os.path.join(save_predictions, name))
            # segkit.data shards the test set across processes; the evaluator sums the matrices.
            loader = cls.build_test_loader(cfg, name)
            results = inference_on_dataset(loader, evaluator, pipeline.inference, post)
            # Pictures need what SemSegEvaluator keeps (samples, class_names); the EVALUATOR
            # contract does not require it of plugin evaluators.
            if pictures and is_main_process() and hasattr(evaluator, "samples") and hasattr(evaluator, "class_names"):
                cls.save_pictures(cfg, evaluator)
            prefix = "" if len(cfg.DATASETS.TEST) == 1 else f"{name}/"
            all_results.update({prefix + k: v for k, v in results.items()})
        inner.train(was_training)
        return all_results

    @classmethod
    def _prediction_writer(cls, cfg: CfgNode, evaluator, folder: str):
        _, palette, _ = dataset_classes(cfg, [evaluator.dataset_name])
        return PredictionWriter(evaluator, folder, palette or default_palette(evaluator.num_classes))

    @classmethod
    def save_pictures(cls, cfg: CfgNode, evaluator) -> List[str]:
        _, palette, _ = dataset_classes(cfg, [evaluator.dataset_name])
        paths = save_evaluation_pictures(evaluator, os.path.join(cfg.OUTPUT_DIR, "pictures"), palette)
        logger.info("Saved %d pictures to %s", len(paths), os.path.join(cfg.OUTPUT_DIR, "pictures"))
        return paths


def check_evaluation_setup(cfg: CfgNode) -> None:
    """Build the post-processing chain the evaluations will use once, before training, so
    that e.g. a CRF backend missing on this Python fails now rather than after the last
    iteration (the error names the config key)."""
    if not (cfg.TEST.EVAL_POSTPROCESS and list(cfg.POSTPROCESS.CHAIN)):
        return

    chain = build_postprocessor_chain(cfg)
    for step in chain.steps:
        if hasattr(step, "close"):
            step.close()


def _stamp_iteration(evaluator) -> None:
    """Tell the evaluator which training iteration it evaluates (written into its JSON)."""

    try:
        evaluator.iteration = int(get_event_storage().iter)
    except RuntimeError:  # not inside a training loop (eval-only)
        pass


# What a training run writes into OUTPUT_DIR besides logs and config.yaml.
_RUN_FILE_PATTERNS = ("model_*.pth", LAST_CHECKPOINT_FILE, "best_metric.json", "metrics.jsonl")
_RUN_FOLDERS = ("inference", "tensorboard", "pictures")


def previous_run_files(output_dir: str) -> List[str]:
    """Checkpoints, metrics and evaluation outputs of a run in ``output_dir`` (empty when none).

    Only a folder holding a checkpoint (or ``last_checkpoint``) counts as holding a run.
    """

    pattern = lambda p: glob.glob(os.path.join(glob.escape(output_dir), p))  # noqa: E731
    if not (pattern("model_*.pth") or os.path.isfile(os.path.join(output_dir, LAST_CHECKPOINT_FILE))):
        return []
    found = [f for p in _RUN_FILE_PATTERNS for f in pattern(p)]
    return sorted(set(found + [d for d in pattern("*") if os.path.basename(d) in _RUN_FOLDERS]))


def move_previous_run_aside(output_dir: str) -> Optional[str]:
    """Move an earlier run's files (see :func:`previous_run_files`) into
    ``<output_dir>/previous_runs/<UTC time>/``, so a new run neither mixes with nor
    deletes them. Returns that folder, or None when there was nothing to move."""

    files = previous_run_files(output_dir)
    if not files:
        return None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    dest = os.path.join(output_dir, "previous_runs", stamp)
    os.makedirs(dest)
    for f in files:
        os.replace(f, os.path.join(dest, os.path.basename(f)))
    logger.warning(
        "OUTPUT_DIR %s already held a run; it was moved to %s and a new run starts. To continue that run "
        "instead, move its files back and pass --resume (as in detectron2).", output_dir, dest,
    )
    return dest


def _refuse_used_output_dir(output_dir: str) -> None:
    # Every process checks (the folder is shared on one machine), so none is left waiting for the others.
    if previous_run_files(output_dir):
        raise CheckpointError(
            f"OUTPUT_DIR {output_dir} already holds a run's checkpoints; a new run there would mix with them. "
            "Continue it with resume_or_load(resume=True) (--resume in tools/train_net.py), choose another "
            "OUTPUT_DIR, or call segkit.engine.defaults.move_previous_run_aside(OUTPUT_DIR) before building "
            "the trainer (tools/train_net.py does this for runs without --resume)."
        )


def prepare_class_weights(cfg: CfgNode) -> str:
    """Count the training set's class pixels when ``MODEL.LOSS.CLASS_WEIGHT.COMPUTE`` asks for it.

    The losses read ``class_stats_file(cfg)`` (``STATS_FILE``, else
    ``OUTPUT_DIR/class_stats.json`` with ``COMPUTE``); when that file is missing the main
    process counts ``DATASETS.TRAIN`` into it (kept across resumes) and every process
    waits for it. The config is not changed.

    Returns:
        The statistics file the losses will read ("" when the method needs none).
    """
    cw = cfg.MODEL.LOSS.CLASS_WEIGHT
    if cw.METHOD in ("none", "explicit"):
        return ""
    path = class_stats_file(cfg)
    if cw.COMPUTE and not cw.STATS_FILE:
        if is_main_process() and not os.path.isfile(path):
            logger.info("Counting class pixels of %s for %s class weights", list(cfg.DATASETS.TRAIN), cw.METHOD)
            compute_dataset_class_stats(cfg, output=path, progress=False)
        synchronize()
    return path


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
        weights = cfg.MODEL.WEIGHTS or Checkpointer(nn.Module(), cfg.OUTPUT_DIR, save_to_disk=False).get_checkpoint_file()
        if not weights:
            raise FileNotFoundError(
                f"--eval-only needs MODEL.WEIGHTS or a checkpoint in OUTPUT_DIR ({cfg.OUTPUT_DIR}); found neither."
            )
        pipeline = build_inference_pipeline(cfg, weights, who="--eval-only")
        logger.info("Evaluating %s", weights)
        results = DefaultTrainer.test(cfg, pipeline.model, save_predictions=getattr(args, "save_predictions", None))
        if is_main_process():  # a plugin's evaluator may log nothing itself
            logger.info("Evaluation results: %s", json.dumps(results, sort_keys=True, default=float))
        return results
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if trainer.start_iter == 0:  # a fresh run, not a resumed one

        maybe_pretrain(cfg, trainer.model)
    return trainer.train()
