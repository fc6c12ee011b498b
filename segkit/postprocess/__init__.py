"""Post-processing: dense CRF (native PyTorch or pydensecrf), TTA and sliding window."""
from segkit.postprocess.dense_crf import BACKENDS, CRFParams, DenseCRF, dense_crf, dense_crf_batch
from segkit.postprocess.permutohedral import PermutohedralLattice

__all__ = ["BACKENDS", "CRFParams", "DenseCRF", "PermutohedralLattice", "dense_crf", "dense_crf_batch"]
