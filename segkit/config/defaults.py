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
# Require MODEL.WEIGHTS to match the model exactly when training starts from it; False loads
# what matches (FCN-16s/8s start from the coarser net, whose skip layers are absent).
_C.MODEL.WEIGHTS_STRICT = True
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

# Stages that train the backbone before segmentation training (segkit/engine/pretrain.py).
_C.MODEL.PRETRAIN = CN()
_C.MODEL.PRETRAIN.CLASSIFY = CN()
# Classify the embedded Fashion-MNIST train garments first (FCN sec. 3.1); runs when training starts at iteration 0.
_C.MODEL.PRETRAIN.CLASSIFY.ENABLED = False
# Classification iterations (optimizer steps).
_C.MODEL.PRETRAIN.CLASSIFY.ITERS = 1000
# Garment crops per iteration.
_C.MODEL.PRETRAIN.CLASSIFY.IMS_PER_BATCH = 64
# AdamW peak learning rate (linear warm-up over 5% of ITERS, then cosine decay to 0).
_C.MODEL.PRETRAIN.CLASSIFY.BASE_LR = 0.002
# AdamW weight decay.
_C.MODEL.PRETRAIN.CLASSIFY.WEIGHT_DECAY = 0.0001
# Side of a square crop in pixels.
_C.MODEL.PRETRAIN.CLASSIFY.SIZE = 32
# (min, max) garment side as a fraction of the crop side.
_C.MODEL.PRETRAIN.CLASSIFY.SCALE_RANGE = [0.6, 1.0]

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
# With STATS_FILE empty: the trainer counts DATASETS.TRAIN into OUTPUT_DIR/class_stats.json, which the losses read.
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

# ResNet backbone (BACKBONE.NAME "ResNet"); torchvision's block definitions.
_C.MODEL.RESNETS = CN()
# Depth: 18, 34, 50, 101 or 152.
_C.MODEL.RESNETS.DEPTH = 50
# Base width: stem and res2 channels (64 = the paper's ResNet; 32 gives a 2.8M-param ResNet-18 for CPU).
_C.MODEL.RESNETS.WIDTH = 64
# Output stride of res5: 32 (classification), 16 or 8 (stride replaced by dilation, DeepLab v2 sec. 3.1).
_C.MODEL.RESNETS.OUTPUT_STRIDE = 8
# Normalisation: "BN", "FrozenBN" (fixed statistics and affine, as DeepLab v2) or "SyncBN".
_C.MODEL.RESNETS.NORM = "BN"
# Feature maps returned, among "stem", "res2".."res5".
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
# Absolute dilation rates of the res4 blocks, cycled (HDC sawtooth, e.g. [1, 2, 5]); [] = uniform stage rate.
_C.MODEL.RESNETS.RES4_DILATIONS = []
# Absolute dilation rates of the res5 blocks, cycled (e.g. [5, 9, 17]); [] = uniform stage rate.
_C.MODEL.RESNETS.RES5_DILATIONS = []
# Multi-grid multipliers of the res5 rate per block (DeepLab v3 sec. 3.2, e.g. [1, 2, 4]); [] = none.
_C.MODEL.RESNETS.MULTI_GRID = []

# VGG backbone (BACKBONE.NAME "VGG"); torchvision's layout, classifier convolutionalised.
_C.MODEL.VGG = CN()
# Depth: 11, 13, 16 or 19.
_C.MODEL.VGG.DEPTH = 16
# Channels of conv1 (64 = the paper's VGG; smaller for CPU tests), doubled per block up to 8x.
_C.MODEL.VGG.WIDTH = 64
# Output stride: 32 (FCN) or 8 (DeepLab: pool4/pool5 stride 1, conv5 dilation 2, 3x3 pools).
_C.MODEL.VGG.OUTPUT_STRIDE = 32
# Classifier as convolutions: "conv" (FCN sec. 3.1: fc6 7x7, fc7 1x1), "largefov" (DeepLab: fc6 3x3 dilation 12), "none".
_C.MODEL.VGG.FC = "conv"
# Channels of fc6/fc7; 0 = the variant's own (4096 for "conv", 1024 for "largefov").
_C.MODEL.VGG.FC_CHANNELS = 0
# Dropout after fc6 and fc7.
_C.MODEL.VGG.DROPOUT = 0.5
# Feature maps returned, among "conv1".."conv5", "pool1".."pool5", "fc7"; [] = all.
_C.MODEL.VGG.OUT_FEATURES = []

# timm backbone (BACKBONE.NAME "TimmBackbone", pip install segkit[timm]); weights: MODEL.BACKBONE.PRETRAINED
# is a local file or "timm" (timm's local cache only; nothing is downloaded).
_C.MODEL.TIMM = CN()
# timm model name with features_only support, e.g. "convnext_tiny", "mobilenetv3_large_100".
_C.MODEL.TIMM.NAME = "convnext_tiny"
# Feature maps returned, "res<k>" = nominal stride 2**k (res2 = 1/4 .. res5 = 1/32); [] = every level.
_C.MODEL.TIMM.OUT_FEATURES = []
# Output stride: 32, or 16 / 8 where timm can dilate the architecture's last stages.
_C.MODEL.TIMM.OUTPUT_STRIDE = 32
# Stochastic depth rate (ConvNeXt, EfficientNet, ...); 0 = off.
_C.MODEL.TIMM.DROP_PATH_RATE = 0.0

# FCN head (HEAD.NAME "FCNHead"): IN_FEATURES fine-to-coarse, e.g. ["pool3", "pool4", "fc7"] = FCN-8s.
_C.MODEL.FCN = CN()
# Channels of a 3x3 conv-norm-ReLU before each score layer (0 = the paper's bare 1x1 score layers; 512 = torchvision's FCN).
_C.MODEL.FCN.HIDDEN_CHANNELS = 0
# Dropout after the hidden conv (only when HIDDEN_CHANNELS > 0).
_C.MODEL.FCN.DROPOUT = 0.1
# Learn the 2x skip-fusion deconvolutions (initialised to bilinear, FCN sec. 3.3); False keeps them fixed.
_C.MODEL.FCN.LEARN_UPSAMPLE = True
# Normalisation of the hidden conv: "BN", "FrozenBN", "SyncBN" or "" (none).
_C.MODEL.FCN.NORM = "BN"

# DeepLab v2 head (HEAD.NAME "DeepLabV2Head"): parallel dilated branches fused by sum.
_C.MODEL.DEEPLAB = CN()
# Dilation rates, one branch each: [12] LargeFOV, [2, 4, 8, 12] ASPP-S, [6, 12, 18, 24] ASPP-L.
_C.MODEL.DEEPLAB.RATES = [6, 12, 18, 24]
# Branch width: 0 = one 3x3 conv to the classes (ResNet); 1024 = fc6 3x3, fc7 1x1, fc8 (VGG-16).
_C.MODEL.DEEPLAB.BRANCH_CHANNELS = 0
# Dropout after fc6 and fc7 of each branch (only when BRANCH_CHANNELS > 0).
_C.MODEL.DEEPLAB.DROPOUT = 0.5

# Multi-scale inputs (META_ARCHITECTURE "MultiScaleSegmentor", DeepLab v2 sec. 3.3 MSC).
_C.MODEL.MSC = CN()
# Input scales; the first is the reference the others are resized to before fusion.
_C.MODEL.MSC.SCALES = [1.0, 0.75, 0.5]

# RefineNet head (HEAD.NAME "RefineNetHead", Lin et al. 2017); IN_FEATURES e.g. ["res2", "res3", "res4", "res5"].
_C.MODEL.REFINENET = CN()
# Width of each RefineNet block from the coarsest input to the finest (sec. 3.2: 512 for RefineNet-4, 256 elsewhere).
_C.MODEL.REFINENET.CHANNELS = [512, 256, 256, 256]
# Residual conv units adapting each input path (sec. 3.2: two).
_C.MODEL.REFINENET.ADAPT_RCUS = 2
# Pooling blocks (5x5 max-pool + 3x3 conv) in each chained residual pooling (released code: 4; paper figure: 2).
_C.MODEL.REFINENET.CRP_STAGES = 4
# RCUs after the pooling of each block (released code: 3; paper: 1, plus two extra before the classifier).
_C.MODEL.REFINENET.OUTPUT_RCUS = 3
# Extra RCUs before the classifier on top of OUTPUT_RCUS (paper sec. 3.2: 2 with OUTPUT_RCUS 1; 0 with the released 3).
_C.MODEL.REFINENET.EXTRA_RCUS = 0
# Dropout on the two coarsest inputs and before the classifier (released code: 0.5).
_C.MODEL.REFINENET.DROPOUT = 0.5

# Dense upsampling convolution head (HEAD.NAME "DUCHead", Wang et al. 2018 sec. 3.1).
_C.MODEL.DUC = CN()
# Dilations of the summed 3x3 convs producing K*r*r channels ([6, 12, 18, 24] as the authors' release; [1] = one plain conv).
_C.MODEL.DUC.DILATIONS = [6, 12, 18, 24]
# Upscale factor r of the pixel shuffle; 0 = the input feature's stride (full resolution output).
_C.MODEL.DUC.UPSCALE = 0

# Hybrid dilated convolution checks (Wang et al. 2018 sec. 3.2).
_C.MODEL.HDC = CN()
# What building a backbone whose dilated stack grids does: "warn" (GriddingWarning), "raise" or "off".
_C.MODEL.HDC.GRIDDING_CHECK = "warn"

# Several label sets predicted at once (META_ARCHITECTURE "MultiTaskSegmentor"; FCN's two-headed SIFT Flow net).
_C.MODEL.MULTI_TASK = CN()
# Label sets besides the dataset's main one: list of {NAME (record key <NAME>_sem_seg_file_name), NUM_CLASSES, LOSS_WEIGHT}.
_C.MODEL.MULTI_TASK.EXTRA_LABEL_SETS = []
# Weight of the main label set's loss terms (MODEL.NUM_CLASSES classes).
_C.MODEL.MULTI_TASK.MAIN_LOSS_WEIGHT = 1.0
# Inference output: "all" (every set's log-probabilities, concatenated; the multi-task evaluator) or one set ("sem_seg" = main).
_C.MODEL.MULTI_TASK.INFERENCE_OUTPUT = "all"

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
# Skip records whose files are missing/unreadable/inconsistent (counted and reported) instead of raising.
_C.DATASETS.SKIP_BAD_RECORDS = False
# Folder-dataset description files (YAML/JSON) to register before loading; see docs/data.md.
_C.DATASETS.FOLDER_DATASETS = []
# Accept MODEL.NUM_CLASSES differing from a named dataset's class count (otherwise set-up raises, naming both).
_C.DATASETS.ALLOW_NUM_CLASSES_MISMATCH = False
# The embedded FashionScenes dataset (generated once into $SEGKIT_CACHE).
_C.DATASETS.FASHION_SCENES = CN()
# Number of generated training scenes of the built-in fashion_scenes_train.
_C.DATASETS.FASHION_SCENES.NUM_TRAIN = 10000
# Number of generated validation scenes of the built-in fashion_scenes_val.
_C.DATASETS.FASHION_SCENES.NUM_VAL = 500
# Side of the square FashionScenes canvases, in pixels.
_C.DATASETS.FASHION_SCENES.SIZE = 128
# Seed of the scene generator (part of the cache key; independent of SEED).
_C.DATASETS.FASHION_SCENES.SEED = 0

_C.INPUT = CN()
# Channel order the weights were trained on, "RGB" or "BGR"; images stay RGB, the segmentor flips them on the device.
_C.INPUT.FORMAT = "RGB"
# Training augmentations, {NAME, ARGS} in TRANSFORM_REGISTRY; [] = FCN whole-image training (DeepLab: crop 321 on VOC).
_C.INPUT.TRAIN_TRANSFORMS = [
    {"NAME": "DeepLabRandomScaleCrop", "ARGS": {"crop_size": 128, "scale_range": [0.5, 1.5]}},
    {"NAME": "HorizontalFlip", "ARGS": {"p": 0.5}},
]
# Test-time input transforms (deterministic ones only); [] = original size.
_C.INPUT.TEST_TRANSFORMS = []
# Inputs read for each record (segkit.data.io.read_input) and stacked along the channels, e.g. ["image", "hha"].
_C.INPUT.MODALITIES = ["image"]

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
# --- Solver: optimiser, schedule and clipping keys (segkit.solver; see docs/losses_and_solver.md) ---
# Name in OPTIMIZER_REGISTRY: "SGD" or "AdamW".
_C.SOLVER.OPTIMIZER = "SGD"
# SGD momentum (FCN and DeepLab: 0.9).
_C.SOLVER.MOMENTUM = 0.9
# Use Nesterov momentum with SGD.
_C.SOLVER.NESTEROV = False
# AdamW (beta1, beta2).
_C.SOLVER.ADAM_BETAS = [0.9, 0.999]
# AdamW epsilon.
_C.SOLVER.ADAM_EPS = 1e-8
# Weight decay of ordinary weights (FCN and DeepLab v2: 5e-4).
_C.SOLVER.WEIGHT_DECAY = 0.0005
# Weight decay of normalisation-layer parameters (0.0 = none on norm layers).
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
# Weight decay of biases outside norm layers; null = same as WEIGHT_DECAY, 0.0 = none.
_C.SOLVER.WEIGHT_DECAY_BIAS = None
# Learning-rate factor for every bias (Caffe FCN/DeepLab prototxts use 2.0).
_C.SOLVER.BIAS_LR_FACTOR = 1.0
# Per-module multipliers: list of {PATTERN (regex, full parameter name), LR_MULT, WEIGHT_DECAY_MULT}; first match wins.
_C.SOLVER.PARAM_GROUPS = []
# Name in LR_SCHEDULER_REGISTRY: "PolyLR", "MultiStepLR", "CosineLR" or "ConstantLR".
_C.SOLVER.LR_SCHEDULER_NAME = "PolyLR"
# Power of the poly schedule (1 - it / MAX_ITER) ** POLY_POWER (DeepLab v2: 0.9).
_C.SOLVER.POLY_POWER = 0.9
# Iterations at which MultiStepLR multiplies the learning rate by GAMMA.
_C.SOLVER.STEPS = []
# Factor applied at each of STEPS.
_C.SOLVER.GAMMA = 0.1
# Warmup iterations (0 = no warmup).
_C.SOLVER.WARMUP_ITERS = 0
# Learning-rate factor at iteration 0 of the warmup.
_C.SOLVER.WARMUP_FACTOR = 0.001
# Warmup shape: "linear" (factor rises to 1) or "constant" (factor until WARMUP_ITERS).
_C.SOLVER.WARMUP_METHOD = "linear"
# Gradient clipping applied by clip_gradients(cfg, parameters).
_C.SOLVER.CLIP_GRADIENTS = CN()
# Clip gradients before each optimizer step.
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
# "norm" (rescale to total norm <= CLIP_VALUE) or "value" (clamp each element to +-CLIP_VALUE).
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
# The maximum norm or absolute value.
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
# p of the p-norm for CLIP_TYPE "norm" (inf for the max norm).
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
# --- engine keys of SOLVER (segkit.engine) ---
# Save a checkpoint every N iterations (0 = only the final one).
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# Keep only the last N periodic checkpoints (0 = keep all); model_final and model_best are never deleted.
_C.SOLVER.MAX_TO_KEEP = 3
# Train in the channels-last (NHWC) memory format: fewer CPU seconds per step (docs/engine.md).
_C.SOLVER.CHANNELS_LAST = False
# Micro-batches accumulated per optimizer step; each holds IMS_PER_BATCH / ACCUM_STEPS images.
_C.SOLVER.ACCUM_STEPS = 1
# Print the progress line and write metrics every N iterations.
_C.SOLVER.LOG_PERIOD = 20
# Names in HOOK_REGISTRY of extra hooks appended after the default ones.
_C.SOLVER.EXTRA_HOOKS = []
_C.SOLVER.AMP = CN()
# Mixed-precision training (autocast + gradient scaling for float16).
_C.SOLVER.AMP.ENABLED = False
# Autocast dtype: "auto" (CUDA: bfloat16 where supported, else float16; CPU: bfloat16 where the CPU
# has bfloat16 instructions, else float32), "float16" or "bfloat16".
_C.SOLVER.AMP.DTYPE = "auto"

# ---------------------------------------------------------------------------- #
# Post-processing
# ---------------------------------------------------------------------------- #
_C.POSTPROCESS = CN()
# Names in POSTPROCESSOR_REGISTRY applied in order at inference (e.g. ["DenseCRF"]).
_C.POSTPROCESS.CHAIN = []
# Dense CRF (post-processor "DenseCRF"); defaults are DeepLab v2's PASCAL VOC values.
_C.POSTPROCESS.CRF = CN()
# Implementation: "native" (PyTorch permutohedral lattice, CPU/GPU), "pydensecrf" (pip install pydensecrf2) or "auto" (pydensecrf if installed, else native).
_C.POSTPROCESS.CRF.BACKEND = "native"
# Weight w1 of the bilateral (appearance) kernel.
_C.POSTPROCESS.CRF.W1 = 4.0
# Spatial standard deviation theta_alpha (pixels) of the bilateral kernel.
_C.POSTPROCESS.CRF.THETA_ALPHA = 121.0
# Colour standard deviation theta_beta (0-255 units) of the bilateral kernel.
_C.POSTPROCESS.CRF.THETA_BETA = 5.0
# Weight w2 of the Gaussian (smoothness) kernel.
_C.POSTPROCESS.CRF.W2 = 3.0
# Spatial standard deviation theta_gamma (pixels) of the Gaussian kernel.
_C.POSTPROCESS.CRF.THETA_GAMMA = 3.0
# Number of mean-field iterations.
_C.POSTPROCESS.CRF.ITERATIONS = 10
# Worker processes the pydensecrf backend spreads a batch over (0 = in process).
_C.POSTPROCESS.CRF.NUM_WORKERS = 0

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
# Predictor and export run the model with batch norm folded and channels-last weights (segkit.modeling.optimize); False: eager.
_C.TEST.OPTIMIZE_MODEL = True
# CPU threads for Predictor inference and the native CRF; 0 = chosen per call by work size and machine load (segkit.utils.threads).
_C.TEST.NUM_THREADS = 0
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
# Test-time augmentation (segkit.postprocess): multi-scale + flip, probabilities averaged.
_C.TEST.AUG = CN()
# Run the model at every scale in SCALES (and flipped if FLIP) and average the softmax.
_C.TEST.AUG.ENABLED = False
# Resize factors of the input for test-time augmentation (DeepLab MSC: [0.5, 0.75, 1.0]).
_C.TEST.AUG.SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
# Also run on the horizontally flipped input at each scale.
_C.TEST.AUG.FLIP = True
# Sliding-window inference for images larger than the training crop (segkit.postprocess).
_C.TEST.SLIDING_WINDOW = CN()
# Predict overlapping windows and average their probabilities instead of the whole image.
_C.TEST.SLIDING_WINDOW.ENABLED = False
# Window size [height, width] in pixels (usually the training crop).
_C.TEST.SLIDING_WINDOW.CROP_SIZE = [512, 512]
# Step between windows [height, width]; smaller than CROP_SIZE to overlap (MMSeg: 2/3 of the crop).
_C.TEST.SLIDING_WINDOW.STRIDE = [341, 341]
# Windows sent through the model per forward pass.
_C.TEST.SLIDING_WINDOW.BATCH_SIZE = 4

# ---------------------------------------------------------------------------- #
# Misc
# ---------------------------------------------------------------------------- #
# Directory for checkpoints, logs, metrics and pictures.
_C.OUTPUT_DIR = "./output"
# Global random seed (negative = draw one and record it).
_C.SEED = 0
# Let cuDNN pick the fastest convolution algorithms (non-deterministic).
_C.CUDNN_BENCHMARK = False
