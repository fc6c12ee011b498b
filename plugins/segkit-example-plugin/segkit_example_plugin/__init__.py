"""An example segkit plugin, written as any third party would write one.

Importing this module (which segkit does through the ``segkit.plugins`` entry
point declared in pyproject.toml) registers:

* ``LightDecoderHead`` in ``HEAD_REGISTRY``: fuses two backbone features by name
  (a coarse one upsampled onto a finer one) and classifies;
* its config keys ``MODEL.LIGHT_DECODER.*`` through ``CONFIG_REGISTRY``.
"""
from segkit_example_plugin.head import LightDecoderHead, add_light_decoder_config

__all__ = ["LightDecoderHead", "add_light_decoder_config"]
