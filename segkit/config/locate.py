"""Where segkit's shipped configs live, and ``segkit://`` references to them.

The YAML files are written once, in the repository's top-level ``configs/`` folder
(what ``python tools/train_net.py --config-file configs/...`` reads in a checkout).
Building a wheel copies that folder into the package as ``segkit/configs/`` (see
``setup.py``), so an installed segkit carries them. :func:`configs_root` finds
whichever of the two exists, and ``segkit://voc/Base-DeepLabV2.yaml`` names a file
under it from anywhere: a ``--config-file`` or a ``_BASE_`` entry in any folder.
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["PACKAGE_SCHEME", "configs_root", "resolve_config_path"]

#: Prefix of a reference to a config shipped with segkit.
PACKAGE_SCHEME = "segkit://"

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configs_root() -> str:
    """The folder that holds the shipped configs.

    Returns:
        ``<site-packages>/segkit/configs`` in an installed wheel, else the checkout's
        ``configs/`` (beside ``pyproject.toml``, for editable installs and PYTHONPATH use).

    Raises:
        FileNotFoundError: neither exists (a broken install).
    """
    packaged = os.path.join(_PACKAGE_DIR, "configs")
    if os.path.isdir(packaged):
        return packaged
    checkout = os.path.dirname(_PACKAGE_DIR)
    source = os.path.join(checkout, "configs")
    if os.path.isdir(source) and os.path.isfile(os.path.join(checkout, "pyproject.toml")):
        return source
    raise FileNotFoundError(
        f"segkit's configs are missing: neither {packaged} (installed wheel) nor {source} (source checkout) exists. "
        "Reinstall segkit (pip install --force-reinstall segkit)."
    )


def resolve_config_path(name: str, relative_to: Optional[str] = None) -> str:
    """Turn a config reference into a file path (not checked for existence).

    Args:
        name: ``segkit://<path under configs/>``, an absolute path, or a path relative
            to ``relative_to`` (or to the working directory when that is ``None``).
        relative_to: folder of the file that holds the reference (for ``_BASE_``).

    Raises:
        ValueError: a ``segkit://`` reference that is empty or leaves the configs folder.
    """
    name = str(name)
    if name.startswith(PACKAGE_SCHEME):
        rel = name[len(PACKAGE_SCHEME):].lstrip("/")
        root = configs_root()
        path = os.path.normpath(os.path.join(root, rel))
        if not rel or os.path.commonpath([root, path]) != os.path.normpath(root):
            raise ValueError(f"'{name}' does not name a file under segkit's configs ({root}).")
        return path
    name = os.path.expanduser(name)
    if os.path.isabs(name) or relative_to is None:
        return os.path.abspath(name)
    return os.path.join(relative_to, name)
