"""Dataset and metadata catalogs (Detectron2 style) on top of ``DATASET_REGISTRY``.

A dataset name maps to a *lazily called* function that returns ``list[dict]``
records and to a :class:`Metadata` object (class names, palette, ignore label).
Built-in datasets register themselves at import time; plugins register theirs
the same way::

    DatasetCatalog.register("my_train", lambda root: load_folder(...))
    MetadataCatalog.get("my_train").set(stuff_classes=[...], stuff_colors=[...], ignore_label=255)

Record keys: ``file_name`` (image path), ``sem_seg_file_name`` (mask path),
``height``, ``width`` (of the original image), ``image_id`` and, where the
on-disk label ids are not the training ids, ``label_map`` (a key into
:data:`segkit.data.label_maps.LABEL_MAPS`).
"""
from __future__ import annotations

import inspect
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from segkit.registry import DATASET_REGISTRY

__all__ = [
    "DatasetCatalog",
    "MetadataCatalog",
    "Metadata",
    "DataError",
    "resolve_dataset_root",
    "default_cache_dir",
]


class DataError(RuntimeError):
    """Bad data: the message names the file (or dataset) and what is wrong with it."""


def resolve_dataset_root(root: Optional[str] = None) -> str:
    """Folder holding the datasets.

    Order: an explicit ``root`` (``cfg.DATASETS.ROOT`` when non-empty), then the
    ``SEGKIT_DATASETS`` environment variable, then ``./datasets``.
    """
    if root:
        return os.path.expanduser(str(root))
    env = os.environ.get("SEGKIT_DATASETS", "")
    return os.path.expanduser(env) if env else "datasets"


def default_cache_dir() -> str:
    """``$SEGKIT_CACHE`` or ``~/.cache/segkit``: where generated datasets are materialised."""
    return os.path.expanduser(os.environ.get("SEGKIT_CACHE", "") or os.path.join("~", ".cache", "segkit"))


def _takes_root(func: Callable) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: assume (root)
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


class _DatasetCatalog:
    """Name -> function returning records. Backed by ``DATASET_REGISTRY``.

    A registered function receives ``(root: str)`` (the resolved dataset root,
    see :func:`resolve_dataset_root`); zero-argument functions are accepted too,
    as in detectron2.
    """

    def register(self, name: str, func: Callable[..., List[dict]]) -> None:
        """Register ``func`` under ``name``; a duplicate name raises ``RegistryError``."""
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a callable, got {type(func).__name__}.")
        DATASET_REGISTRY.register(func, name=name)

    def get(self, name: str, root: Optional[str] = None) -> List[dict]:
        """Call the function registered as ``name`` and return its records.

        Raises:
            RegistryKeyError: unknown name (lists the registered ones).
            DataError: the dataset is empty (names the dataset and its root).
        """
        func = DATASET_REGISTRY.get(name)
        root = resolve_dataset_root(root)
        records = func(root) if _takes_root(func) else func()
        if not isinstance(records, list):
            raise TypeError(f"Dataset '{name}' returned {type(records).__name__}; a list of record dicts is required.")
        if not records:
            raise DataError(
                f"Dataset '{name}' is empty (dataset root '{os.path.abspath(root)}'): "
                "its split list or folders hold no images."
            )
        return records

    def list(self) -> List[str]:
        """Every registered dataset name."""
        return DATASET_REGISTRY.keys()

    def remove(self, name: str) -> None:
        """Unregister ``name`` (tests, interactive use)."""
        DATASET_REGISTRY.unregister(name)

    def __contains__(self, name: str) -> bool:
        return name in DATASET_REGISTRY


class Metadata:
    """Attributes of a dataset: ``stuff_classes``, ``stuff_colors``, ``ignore_label``, ...

    Set once: changing an attribute to a different value raises, because two
    pieces of code disagreeing about a dataset's classes is always a bug.
    """

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        known = ", ".join(sorted(k for k in self.__dict__ if k != "name")) or "nothing"
        raise AttributeError(f"Metadata of dataset '{self.name}' has no '{key}'. It has: {known}.")

    def __setattr__(self, key: str, value: Any) -> None:
        old = self.__dict__.get(key, _MISSING)
        if old is not _MISSING and old != value:
            raise ValueError(
                f"Metadata '{key}' of dataset '{self.name}' is already {old!r}; refusing to change it to {value!r}."
            )
        object.__setattr__(self, key, value)

    def set(self, **kwargs: Any) -> "Metadata":
        """Set several attributes; returns ``self``."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Metadata({self.__dict__!r})"


_MISSING = object()


class _MetadataCatalog:
    """Name -> :class:`Metadata`, created on first access."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: Dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        with self._lock:
            if name not in self._items:
                self._items[name] = Metadata(name)
            return self._items[name]

    def list(self) -> List[str]:
        return sorted(self._items)

    def remove(self, name: str) -> None:
        self._items.pop(name, None)


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()


def register_semseg(
    name: str,
    loader: Callable[..., List[dict]],
    classes: List[str],
    colors: List[Tuple[int, int, int]],
    ignore_label: int = 255,
    **extra: Any,
) -> None:
    """Register a semantic-segmentation dataset and its metadata in one call."""
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(
        stuff_classes=list(classes), stuff_colors=[tuple(int(c) for c in col) for col in colors],
        ignore_label=int(ignore_label), **extra,
    )
