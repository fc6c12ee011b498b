"""Configs: defaults, safe YAML loading with ``_BASE_``, validation."""
from segkit.config.configurable import ComponentError, build_component, configurable, instantiate
from segkit.config.config import (
    CfgNode,
    ConfigError,
    get_cfg,
    load_config,
    peek_plugin_settings,
    save_config,
)

__all__ = [
    "CfgNode", "ComponentError", "ConfigError", "build_component", "configurable", "get_cfg", "instantiate",
    "load_config", "peek_plugin_settings", "save_config",
]
