"""Training engine: trainer and hooks, checkpoints, launch, command-line defaults, pictures."""
from segkit.engine import hooks  # noqa: F401  (registers the built-in hooks)
from segkit.engine.checkpoint import Checkpointer, CheckpointError, load_model_weights
from segkit.engine.defaults import DefaultTrainer, default_argument_parser, default_setup, setup
from segkit.engine.events import EventStorage, get_event_storage
from segkit.engine.hooks import (
    BestCheckpointer,
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    TrainingCurves,
)
from segkit.engine.launch import launch
from segkit.engine.train_loop import HookBase, NonFiniteLossError, NonFiniteWeightsError, SimpleTrainer, TrainerBase

__all__ = [
    "BestCheckpointer",
    "CheckpointError",
    "Checkpointer",
    "DefaultTrainer",
    "EvalHook",
    "EventStorage",
    "HookBase",
    "IterationTimer",
    "LRScheduler",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "SimpleTrainer",
    "TrainerBase",
    "TrainingCurves",
    "default_argument_parser",
    "default_setup",
    "get_event_storage",
    "launch",
    "load_model_weights",
    "setup",
]
