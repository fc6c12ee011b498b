"""Configs: defaults, safe YAML loading with ``_BASE_``, validation."""
from segkit.config.configurable import configurable
from segkit.config.config import (
    CfgNode,
    ConfigError,
    get_cfg,
    load_config,
    peek_plugin_settings,
    save_config,
)

__all__ = ["CfgNode", "ConfigError", "configurable", "get_cfg", "load_config", "peek_plugin_settings", "save_config"]
