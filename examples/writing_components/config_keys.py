"""CONFIG_REGISTRY: a plugin's own config keys, with defaults, so YAML using them validates."""
from segkit.config import CfgNode
from segkit.registry import CONFIG_REGISTRY


@CONFIG_REGISTRY.register()
def add_tiny_conv_config(cfg: CfgNode) -> None:
    """Add ``MODEL.TINY_CONV.*`` (read by ``TinyConvBackbone``)."""
    cfg.MODEL.TINY_CONV = CfgNode()
    # Channels of the first stage; the second has twice as many.
    cfg.MODEL.TINY_CONV.WIDTH = 8
