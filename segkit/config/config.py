"""Validated configs: fvcore ``CfgNode`` with safe YAML, ``_BASE_`` and actionable errors."""
from __future__ import annotations

import ast
import copy
import difflib
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import yaml
from fvcore.common.config import CfgNode as _FvcoreCfgNode

from segkit.config.locate import resolve_config_path

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_config", "save_config", "peek_plugin_settings"]

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says where and why."""


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _all_paths(node: "_FvcoreCfgNode", prefix: str = "") -> List[str]:
    out = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        out.append(full)
        if isinstance(v, _FvcoreCfgNode):
            out.extend(_all_paths(v, full + "."))
    return out


def _coerce(key: str, new: Any, old: Any, source: str) -> Any:
    """Return ``new`` converted to the type of the default ``old`` or raise ConfigError."""
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, int):
        return float(new)
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    elif isinstance(new, type(old)):
        return new
    raise ConfigError(
        f"{source}: config key '{key}' expects {_type_name(old)} (default {old!r}) "
        f"but got {_type_name(new)} ({new!r})."
    )


class CfgNode(_FvcoreCfgNode):
    """fvcore's CfgNode whose merges validate every key and type before applying.

    Differences from fvcore/yacs, all in the direction of clearer errors:

    * an unknown key raises :class:`ConfigError` with its full path, the file it came
      from and the nearest valid key;
    * a value of the wrong type names the key and both types; integers are accepted
      where a float is expected;
    * YAML is always read with ``yaml.safe_load``.
    """

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        if allow_unsafe:
            raise ConfigError("segkit reads configs with yaml.safe_load only; allow_unsafe is not supported.")
        loaded = load_yaml_with_base(cfg_filename)
        self.merge_from_dict(loaded, source=str(cfg_filename))

    def merge_from_dict(self, values: Dict[str, Any], source: str = "<dict>") -> None:
        """Validate all of ``values`` first, then apply them: a bad key changes nothing."""
        staged = self.clone()
        _merge_into(staged, values, prefix="", source=source, root=self)
        self._apply(staged)

    def merge_from_list(self, cfg_list: Sequence[str]) -> None:
        """Apply ``KEY VALUE`` pairs from the command line."""
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Command-line overrides must be KEY VALUE pairs; got an odd number of items: {list(cfg_list)}"
            )
        nested: Dict[str, Any] = {}
        for key, raw in zip(cfg_list[0::2], cfg_list[1::2]):
            node = nested
            *parents, leaf = str(key).split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = _parse_value(raw)
        self.merge_from_dict(nested, source="command line")

    def merge_from_other_cfg(self, cfg_other: "_FvcoreCfgNode") -> None:
        self.merge_from_dict(_to_dict(cfg_other), source="other config")

    def _apply(self, staged: "CfgNode") -> None:
        was_frozen = self.is_frozen()
        self.defrost()
        for k, v in staged.items():
            self[k] = v
        if was_frozen:
            self.freeze()

    def dump(self, **kwargs: Any) -> str:
        return yaml.safe_dump(_to_dict(self), sort_keys=False, **kwargs)


def _to_dict(node: Any) -> Any:
    if isinstance(node, _FvcoreCfgNode):
        return {k: _to_dict(v) for k, v in node.items()}
    if isinstance(node, tuple):
        return [_to_dict(v) for v in node]
    if isinstance(node, list):
        return [_to_dict(v) for v in node]
    return node


def _parse_value(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _merge_into(node: CfgNode, values: Dict[str, Any], prefix: str, source: str, root: CfgNode) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping at '{prefix or '<root>'}', got {_type_name(values)}.")
    for key, new in values.items():
        full = f"{prefix}{key}"
        if key == BASE_KEY:
            continue
        if key not in node:
            if node.is_new_allowed():
                node[key] = CfgNode(new) if isinstance(new, dict) else new
                continue
            raise ConfigError(_unknown_key_message(full, source, root))
        old = node[key]
        if isinstance(old, _FvcoreCfgNode):
            if not isinstance(new, dict):
                raise ConfigError(
                    f"{source}: config key '{full}' is a section (mapping) but got {_type_name(new)} ({new!r})."
                )
            _merge_into(old, new, full + ".", source, root)
        else:
            node[key] = _coerce(full, copy.deepcopy(new), old, source)


def _unknown_key_message(full: str, source: str, root: CfgNode) -> str:
    paths = _all_paths(root)
    leaf = full.split(".")[-1]
    same_leaf = [p for p in paths if p.split(".")[-1] == leaf]  # right key, wrong section
    close = same_leaf or difflib.get_close_matches(full, paths, n=1, cutoff=0.6)
    if not close:
        leaves = {p.split(".")[-1]: p for p in paths}
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[near[0]]] if near else []
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"{source}: unknown config key '{full}'.{hint} "
        "(If it belongs to a plugin, make sure the plugin is installed and loaded.)"
    )


# A config expands to a few thousand values; anything past this is an alias bomb ("billion laughs").
MAX_EXPANDED_NODES = 100_000


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and aliases expanding beyond reason."""

    def construct_mapping(self, node, deep=False):
        seen: Dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                raise ConfigError(
                    f"{self.name}, line {key_node.start_mark.line + 1}: duplicate key '{key}' (first defined on "
                    f"line {first.start_mark.line + 1}); YAML would silently keep only the last one. Merge the two "
                    "blocks into one."
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_document(self, node):
        sizes: Dict[int, int] = {}

        def size(n) -> int:
            if id(n) in sizes:
                return sizes[id(n)]
            sizes[id(n)] = 1  # guards against recursive aliases
            if isinstance(n, yaml.SequenceNode):
                total = 1 + sum(size(c) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                total = 1 + sum(size(k) + size(v) for k, v in n.value)
            else:
                total = 1
            sizes[id(n)] = total
            return total

        total = size(node)
        if total > MAX_EXPANDED_NODES:
            raise ConfigError(
                f"{self.name}: YAML anchors/aliases expand to {total:,} values (limit {MAX_EXPANDED_NODES:,}); "
                "this looks like an alias bomb. Write the values out or use fewer nested aliases."
            )
        return super().construct_document(node)


def _decode_config(filename: str, raw: bytes) -> str:
    boms = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
            b"\xfe\xff": "UTF-16"}
    for bom, name in boms.items():
        if raw.startswith(bom):
            raise ConfigError(f"Config file {filename} is {name}-encoded; save it as UTF-8.")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"Config file {filename} is not valid UTF-8: byte {raw[exc.start:exc.start + 1]!r} at line {line} "
            f"(offset {exc.start}). Save it as UTF-8."
        ) from exc


def read_yaml_file(filename: str) -> Any:
    """Read one YAML file safely: UTF-8 only, no duplicate keys, no alias bombs.

    Raises:
        ConfigError: naming the file (and line) and the problem.
    """
    with open(filename, "rb") as f:
        text = _decode_config(filename, f.read())
    loader = _ConfigLoader(text)
    loader.name = filename
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {filename} is not valid YAML: {exc}") from exc
    finally:
        loader.dispose()


def load_yaml_with_base(filename: str, _seen: Optional[List[str]] = None) -> Dict[str, Any]:
    """Read ``filename`` with :func:`read_yaml_file` and resolve ``_BASE_`` (relative to the file).

    ``filename`` and each ``_BASE_`` entry may be a ``segkit://`` reference to a shipped config.
    """
    try:
        filename = resolve_config_path(filename)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from exc
    seen = list(_seen or [])
    if filename in seen:
        raise ConfigError(f"Circular _BASE_ chain: {' -> '.join(seen + [filename])}")
    if not os.path.isfile(filename):
        raise ConfigError(f"Config file not found: {filename}")
    loaded = read_yaml_file(filename) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file {filename} must hold a mapping at top level, got {_type_name(loaded)}.")
    base = loaded.pop(BASE_KEY, None)
    if base is None:
        return loaded
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(
            f"Config file {filename}: {BASE_KEY} must be a file path or a list of file paths, got "
            f"{_type_name(base)} ({base!r})."
        )
    merged: Dict[str, Any] = {}
    for b in bases:
        try:
            path = resolve_config_path(b, relative_to=os.path.dirname(filename))
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"{filename}: _BASE_ {b!r}: {exc}") from exc
        _deep_update(merged, load_yaml_with_base(path, seen + [filename]))
    _deep_update(merged, loaded)
    return merged


def _deep_update(dst: Dict[str, Any], src: Dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def get_cfg() -> CfgNode:
    """A fresh copy of segkit's defaults, with every loaded plugin's keys added.

    Makes sure components are registered first (:func:`segkit.load_components`:
    built-ins, then plugins as the environment says, unless an entry point such as
    :func:`load_config` already loaded them).
    """
    from segkit import load_components
    from segkit.config.defaults import _C
    from segkit.registry import CONFIG_REGISTRY

    load_components()
    cfg = _C.clone()
    for name, add_keys, _prov in CONFIG_REGISTRY.entries():
        try:
            add_keys(cfg)
        except Exception as exc:
            raise ConfigError(f"Config extension '{name}' ({_prov.describe()}) failed: {exc}") from exc
    return cfg


def peek_plugin_settings(config_file: Optional[str], opts: Sequence[str] = ()) -> Dict[str, Any]:
    """Read ``PLUGINS.ALLOW`` / ``PLUGINS.ON_ERROR`` before plugins (and their keys) load."""
    raw = load_yaml_with_base(config_file) if config_file else {}
    plugins = dict(raw.get("PLUGINS", {}) or {})
    for key, value in zip(list(opts)[0::2], list(opts)[1::2]):
        if key in ("PLUGINS.ALLOW", "PLUGINS.ON_ERROR"):
            plugins[key.split(".")[1]] = _parse_value(value)
    return {"ALLOW": list(plugins.get("ALLOW", []) or []), "ON_ERROR": plugins.get("ON_ERROR", "raise")}


def load_config(config_file: Optional[str] = None, opts: Iterable[str] = (), load_plugins: bool = True) -> CfgNode:
    """Plugins (as the file says), then defaults, then the file, then ``KEY VALUE`` overrides.

    This is what the tools call: it makes plugin keys valid in the same file that
    enables the plugin. Built-ins are registered first; ``SEGKIT_DISABLE_PLUGINS``,
    ``SEGKIT_PLUGINS`` and ``SEGKIT_PLUGIN_ERRORS`` override ``PLUGINS.*`` (see
    :mod:`segkit.plugins`). ``load_plugins=False`` loads no plugin.
    """
    from segkit import load_components

    opts = list(opts)
    if load_plugins:
        settings = peek_plugin_settings(config_file, opts)
        load_components(settings["ALLOW"], settings["ON_ERROR"], False)
    else:
        load_components(disabled=True)
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(opts)
    from segkit.config.validate import validate_schedule

    validate_schedule(cfg)
    return cfg


def save_config(cfg: CfgNode, output_dir: str, name: str = "config.yaml") -> str:
    """Write the merged config into ``output_dir`` atomically; returns the path."""
    from segkit.utils.fileio import atomic_write

    return atomic_write(os.path.join(output_dir, name), cfg.dump())
