"""The configs shipped with segkit, by name (detectron2's ``model_zoo``).

Example::

    from segkit import model_zoo

    model_zoo.list_configs("fashion_scenes")        # ['fashion_scenes/main.yaml', ...]
    path = model_zoo.get_config_file("fashion_scenes/main.yaml")
    cfg = model_zoo.get_config("fashion_scenes/main.yaml", ["SOLVER.MAX_ITER", 100])

In YAML, ``_BASE_: segkit://voc/Base-DeepLabV2.yaml`` extends a shipped config from
any folder; on the command line ``--config-file segkit://fashion_scenes/main.yaml``.
The model, size, FLOPs and measured results of each config are in docs/model_zoo.md.
"""
from __future__ import annotations

import difflib
import os
from typing import Iterable, List

from segkit.config.locate import PACKAGE_SCHEME, configs_root

__all__ = ["list_configs", "get_config_file", "get_config", "PACKAGE_SCHEME"]


def list_configs(prefix: str = "", include_bases: bool = False) -> List[str]:
    """Names (``"<folder>/<file>.yaml"``) of the shipped configs, sorted.

    Args:
        prefix: keep only names that start with it (e.g. ``"voc/"``).
        include_bases: also list the ``Base-*.yaml`` files that the others extend.
    """
    root = configs_root()
    names = []
    for folder, _dirs, files in os.walk(root):
        for f in files:
            if f.endswith((".yaml", ".yml")) and (include_bases or not f.startswith("Base-")):
                names.append(os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/"))
    return sorted(n for n in names if n.startswith(prefix))


def get_config_file(name: str) -> str:
    """Absolute path of a shipped config.

    Args:
        name: ``"fashion_scenes/main.yaml"`` or ``"segkit://fashion_scenes/main.yaml"``.

    Raises:
        FileNotFoundError: no such config; the message names the nearest and the folders.
    """
    rel = name[len(PACKAGE_SCHEME):] if name.startswith(PACKAGE_SCHEME) else name
    rel = rel.lstrip("/")
    path = os.path.join(configs_root(), *rel.split("/"))
    if rel and os.path.isfile(path):
        return path
    known = list_configs(include_bases=True)
    near = difflib.get_close_matches(rel, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    folders = sorted({k.split("/")[0] for k in known})
    raise FileNotFoundError(
        f"No shipped config '{rel}'.{hint} Folders: {folders}; see segkit.model_zoo.list_configs() or `segkit zoo`."
    )


def get_config(name: str, opts: Iterable = (), load_plugins: bool = True):
    """A shipped config loaded with segkit's defaults (``load_config``), plus ``KEY VALUE`` overrides.

    Args:
        name: as for :func:`get_config_file`.
        opts: flat ``[KEY, VALUE, ...]`` overrides (values may be Python objects or strings).
        load_plugins: load the plugins the file enables first (as the tools do).
    """
    from segkit.config import load_config

    return load_config(get_config_file(name), [str(v) if not isinstance(v, str) else v for v in opts], load_plugins)

