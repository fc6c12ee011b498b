"""segkit's default config. Every key has a one-line comment above it.

Sections are owned by the subsystem that reads them (MODEL.* by segkit.modeling,
DATASETS/INPUT/DATALOADER by segkit.data, SOLVER by segkit.solver, POSTPROCESS by
segkit.postprocess, TEST/OUTPUT_DIR by segkit.engine). Plugins add their own keys
through ``segkit.registry.CONFIG_REGISTRY``.
"""
from segkit.config.config import CfgNode as CN

_C = CN()

# Version of the config schema, bumped when keys are renamed.
_C.VERSION = 1

# ---------------------------------------------------------------------------- #
# Plugins
# ---------------------------------------------------------------------------- #
_C.PLUGINS = CN()
# Entry-point or distribution names to load; empty loads every installed plugin.
_C.PLUGINS.ALLOW = []
# What a plugin that fails to import does: "raise" (default) or "warn" (skip it).
_C.PLUGINS.ON_ERROR = "raise"

# ---------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------- #
_C.MODEL = CN()
# Name in META_ARCH_REGISTRY of the model that ties backbone, head and losses.
_C.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
# Device to run on: "auto" (CUDA if available, else CPU), or any torch device string.
_C.MODEL.DEVICE = "auto"
# Checkpoint of the whole model to load (a segkit checkpoint); empty for none.
_C.MODEL.WEIGHTS = ""
# Number of classes the head predicts (background included).
_C.MODEL.NUM_CLASSES = 21
# Label value ignored by losses and metrics.
_C.MODEL.IGNORE_VALUE = 255
# Per-channel mean subtracted from the image on the device, in INPUT.FORMAT order, 0-255 scale.
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
# Per-channel standard deviation the image is divided by on the device (1.0 = mean subtraction only).
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

_C.MODEL.BACKBONE = CN()
# Name in BACKBONE_REGISTRY.
_C.MODEL.BACKBONE.NAME = "ResNet"
# Local path to ImageNet weights in torchvision format; "" for random initialisation.
_C.MODEL.BACKBONE.PRETRAINED = ""
# Freeze the stem and the first N stages (0 = train everything).
_C.MODEL.BACKBONE.FREEZE_AT = 0

_C.MODEL.HEAD = CN()
# Name in HEAD_REGISTRY.
_C.MODEL.HEAD.NAME = "FCNHead"
# Backbone feature maps the head reads, by name.
_C.MODEL.HEAD.IN_FEATURES = ["res5"]

# ---------------------------------------------------------------------------- #
# Losses (segkit.modeling.losses; see docs/losses_and_solver.md)
# ---------------------------------------------------------------------------- #
_C.MODEL.LOSS = CN()
# Loss terms summed by build_loss: list of {NAME (LOSS_REGISTRY), WEIGHT, ARGS (constructor overrides), KEY (loss_<KEY>)}.
_C.MODEL.LOSS.TERMS = [{"NAME": "CrossEntropy", "WEIGHT": 1.0}]
# Default extra factor for the loss of auxiliary outputs (CombinedLoss.aux_weight; e.g. 0.4 for an auxiliary head).
_C.MODEL.LOSS.AUX_WEIGHT = 1.0

_C.MODEL.LOSS.CLASS_WEIGHT = CN()
# Class weighting: "none", "explicit" (VALUES), "inverse_frequency", "median_frequency" or "effective_number" (STATS_FILE).
_C.MODEL.LOSS.CLASS_WEIGHT.METHOD = "none"
# Class-statistics JSON written by segkit.data.class_stats; read for the frequency-based methods.
_C.MODEL.LOSS.CLASS_WEIGHT.STATS_FILE = ""
# Explicit per-class weights (length NUM_CLASSES) for METHOD "explicit".
_C.MODEL.LOSS.CLASS_WEIGHT.VALUES = []
# Let the trainer compute STATS_FILE from DATASETS.TRAIN before building the model when it is empty.
_C.MODEL.LOSS.CLASS_WEIGHT.COMPUTE = False
# Effective-number beta (Cui et al. 2019), used only when the stats file lacks cached effective_number weights.
_C.MODEL.LOSS.CLASS_WEIGHT.BETA = 0.9999

_C.MODEL.LOSS.SAMPLING = CN()
# FCN loss sampling (FCN sec. 3.4) for pixel-wise terms (CrossEntropy, Focal).
_C.MODEL.LOSS.SAMPLING.ENABLED = False
# "bernoulli" (each cell kept with probability RATE) or "fraction" (exactly RATE of each image's cells).
_C.MODEL.LOSS.SAMPLING.MODE = "bernoulli"
# Keep probability p, or fraction kept, in (0, 1].
_C.MODEL.LOSS.SAMPLING.RATE = 0.5
# Side in pixels of a sampling cell (1 = pixels; the output stride = FCN's final-layer cells).
_C.MODEL.LOSS.SAMPLING.CELL_SIZE = 1
# Sample classes evenly within each image (unbiased for the class-balanced loss).
_C.MODEL.LOSS.SAMPLING.BALANCE = False
# Seed of the sampler's own generator; negative draws from torch's global generator (seeded from SEED).
_C.MODEL.LOSS.SAMPLING.SEED = -1

_C.MODEL.LOSS.OHEM = CN()
# Online hard example mining for pixel-wise terms: keep only hard pixels.
_C.MODEL.LOSS.OHEM.ENABLED = False
# Keep pixels whose softmax probability of the true class is below this.
_C.MODEL.LOSS.OHEM.THRESH = 0.7
# Keep at least this many pixels per batch (the hardest ones).
_C.MODEL.LOSS.OHEM.MIN_KEPT = 100000

# ---------------------------------------------------------------------------- #
# Datasets, input and loading
# ---------------------------------------------------------------------------- #
_C.DATASETS = CN()
# Registered dataset names used for training.
_C.DATASETS.TRAIN = ("fashion_scenes_train",)
# Registered dataset names used for evaluation.
_C.DATASETS.TEST = ("fashion_scenes_val",)
# Root folder of the datasets; "" uses $SEGKIT_DATASETS, then ./datasets.
_C.DATASETS.ROOT = ""

_C.INPUT = CN()
# Channel order of images handed to the model: "RGB" or "BGR".
_C.INPUT.FORMAT = "RGB"

_C.DATALOADER = CN()
# Worker processes per data loader.
_C.DATALOADER.NUM_WORKERS = 2

# ---------------------------------------------------------------------------- #
# Solver
# ---------------------------------------------------------------------------- #
_C.SOLVER = CN()
# Total number of training iterations.
_C.SOLVER.MAX_ITER = 1000
# Images per batch across all processes.
_C.SOLVER.IMS_PER_BATCH = 8
# Base learning rate.
_C.SOLVER.BASE_LR = 0.01
# --- engine keys of SOLVER (segkit.engine) ---
# Save a checkpoint every N iterations (0 = only the final one).
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# Keep only the last N periodic checkpoints (0 = keep all); model_final and model_best are never deleted.
_C.SOLVER.MAX_TO_KEEP = 3
# Micro-batches accumulated per optimizer step; each holds IMS_PER_BATCH / ACCUM_STEPS images.
_C.SOLVER.ACCUM_STEPS = 1
# Print the progress line and write metrics every N iterations.
_C.SOLVER.LOG_PERIOD = 20
# Names in HOOK_REGISTRY of extra hooks appended after the default ones.
_C.SOLVER.EXTRA_HOOKS = []
_C.SOLVER.AMP = CN()
# Mixed-precision training (autocast + gradient scaling for float16).
_C.SOLVER.AMP.ENABLED = False
# Autocast dtype: "auto" (bfloat16 where supported, else float16), "float16" or "bfloat16".
_C.SOLVER.AMP.DTYPE = "auto"

# ---------------------------------------------------------------------------- #
# Post-processing
# ---------------------------------------------------------------------------- #
_C.POSTPROCESS = CN()
# Names in POSTPROCESSOR_REGISTRY applied in order at inference (e.g. ["DenseCRF"]).
_C.POSTPROCESS.CHAIN = []

# ---------------------------------------------------------------------------- #
# Test / evaluation
# ---------------------------------------------------------------------------- #
_C.TEST = CN()
# Evaluate every N iterations during training (0 = only at the end).
_C.TEST.EVAL_PERIOD = 0
# Name in EVALUATOR_REGISTRY of the evaluator built for each dataset in DATASETS.TEST.
_C.TEST.EVALUATOR = "SemSegEvaluator"
# Images per batch of the test loader, per process.
_C.TEST.IMS_PER_BATCH = 1
# Also score predictions after POSTPROCESS.CHAIN at the final evaluation (same pass).
_C.TEST.EVAL_POSTPROCESS = True
# Also score the post-processed predictions at periodic evaluations during training (slow with CRF).
_C.TEST.EVAL_POSTPROCESS_PERIODIC = False
# Metric that picks the best checkpoint ("<variant>/<metric>", e.g. "sem_seg/mIoU"); "" disables it.
_C.TEST.BEST_METRIC = "sem_seg/mIoU"
# Whether a larger ("max") or smaller ("min") BEST_METRIC is better.
_C.TEST.BEST_MODE = "max"
# Number of validation images drawn with predictions beside ground truth in OUTPUT_DIR/pictures.
_C.TEST.VIS_NUM_IMAGES = 4

# ---------------------------------------------------------------------------- #
# Misc
# ---------------------------------------------------------------------------- #
# Directory for checkpoints, logs, metrics and pictures.
_C.OUTPUT_DIR = "./output"
# Global random seed (negative = draw one and record it).
_C.SEED = 0
# Let cuDNN pick the fastest convolution algorithms (non-deterministic).
_C.CUDNN_BENCHMARK = False
