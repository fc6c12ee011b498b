"""Post-processing: dense CRF (native PyTorch or pydensecrf), TTA and sliding window."""
from segkit.postprocess.chain import PostprocessorChain, build_postprocessor, build_postprocessor_chain, on_valid_regions
from segkit.postprocess.dense_crf import (
    BACKENDS,
    CRFParams,
    DenseCRF,
    dense_crf,
    dense_crf_batch,
    set_kernel_cache_size,
)
from segkit.postprocess.inference import SegmentationInference, build_inference, window_starts
from segkit.postprocess.permutohedral import LatticeFilter, PermutohedralLattice

__all__ = [
    "BACKENDS",
    "CRFParams",
    "DenseCRF",
    "LatticeFilter",
    "PermutohedralLattice",
    "PostprocessorChain",
    "SegmentationInference",
    "build_inference",
    "build_postprocessor",
    "build_postprocessor_chain",
    "dense_crf",
    "dense_crf_batch",
    "on_valid_regions",
    "set_kernel_cache_size",
    "window_starts",
]
