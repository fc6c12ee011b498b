"""segkit: semantic segmentation with Detectron2-style registries.

Faithful FCN-32s/16s/8s, DeepLab v2, RefineNet and hybrid dilated convolution,
with a dense-CRF post-processor, on CPU or GPU.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "load_components"]


def load_components(allow=None, on_error=None, disabled=None):
    """Register every built-in component, then load plugins as the switches say.

    See :func:`segkit._builtins.load_components`. ``import segkit`` alone imports
    no plugin; every entry point (``load_config``, ``get_cfg``, the tools,
    ``segkit list``, ``Predictor``) calls this.
    """
    from segkit._builtins import load_components as _load

    return _load(allow, on_error, disabled)


def __getattr__(name):
    # Lazy: `import segkit` stays light; `segkit.Predictor` imports the inference stack.
    if name == "Predictor":
        from segkit.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'segkit' has no attribute '{name}'")
