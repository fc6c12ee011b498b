"""segkit: semantic segmentation with Detectron2-style registries.

Faithful FCN-32s/16s/8s, DeepLab v2, RefineNet and hybrid dilated convolution,
with a dense-CRF post-processor, on CPU or GPU.
"""
__version__ = "0.1.0"

__all__ = ["__version__"]


def __getattr__(name):
    # Lazy: `import segkit` stays light; `segkit.Predictor` imports the inference stack.
    if name == "Predictor":
        from segkit.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'segkit' has no attribute '{name}'")
