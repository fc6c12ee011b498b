"""Meta-architectures: how backbone, head and losses make a model."""
from segkit.modeling.meta_arch.build import build_model
from segkit.modeling.meta_arch.multiscale import MultiScaleSegmentor
from segkit.modeling.meta_arch.semantic_seg import SemanticSegmentor, upsample_logits
from segkit.modeling.meta_arch.multi_task import MultiTaskSegmentor, split_label_sets
from segkit.modeling.meta_arch.late_fusion import LateFusionSegmentor, fuse_branch_state_dicts

__all__ = ["build_model", "MultiScaleSegmentor", "SemanticSegmentor", "upsample_logits", "MultiTaskSegmentor",
           "split_label_sets", "LateFusionSegmentor", "fuse_branch_state_dicts"]
