"""``segkit env``: what a bug report needs (detectron2's ``collect_env``).

Versions of Python, segkit and its libraries, the accelerator stack (CUDA, cuDNN),
devices, threads, and the plugins found with their provenance.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from typing import Any, Dict, List, Optional, Tuple

# (row label, module to import, attribute holding the version) -- optional ones may be missing.
LIBRARIES = [
    ("torch", "torch", "__version__"),
    ("torchvision", "torchvision", "__version__"),
    ("albumentations", "albumentations", "__version__"),
    ("OpenCV", "cv2", "__version__"),
    ("NumPy", "numpy", "__version__"),
    ("fvcore", "fvcore", None),
    ("pydensecrf", "pydensecrf.densecrf", None),
    ("onnx", "onnx", "__version__"),
    ("onnxruntime", "onnxruntime", "__version__"),
    ("timm", "timm", "__version__"),
    ("matplotlib", "matplotlib", "__version__"),
    ("tensorboard", "tensorboard", "__version__"),
]
_DISTRIBUTION = {"fvcore": "fvcore", "pydensecrf": "pydensecrf2", "OpenCV": "opencv-python-headless"}


def _version(label: str, module: str, attr: Optional[str]) -> str:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - report any import failure, do not crash the report
        return "not installed" if isinstance(exc, ImportError) else f"fails to import ({type(exc).__name__}: {exc})"
    if attr and getattr(mod, attr, None):
        return str(getattr(mod, attr))
    from importlib import metadata

    for dist in (_DISTRIBUTION.get(label), module.split(".")[0]):
        try:
            return metadata.version(dist) if dist else "installed"
        except metadata.PackageNotFoundError:
            continue
    return "installed (version unknown)"


def _devices() -> List[Tuple[str, str]]:
    import torch

    rows = [("CUDA available", str(torch.cuda.is_available())),
            ("CUDA (torch built with)", str(torch.version.cuda)),
            ("cuDNN", str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "not available")]
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        rows.append((f"GPU {i}", f"{p.name} ({p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor})"))
    mps = getattr(torch.backends, "mps", None)
    rows.append(("MPS available", str(bool(mps and mps.is_available()))))
    rows.append(("torch threads (intra / inter op)", f"{torch.get_num_threads()} / {torch.get_num_interop_threads()}"))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    rows.append(("CPU cores (usable / total)", f"{usable} / {os.cpu_count()}"))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "SEGKIT_CACHE"):
        if os.environ.get(var) is not None:
            rows.append((var, os.environ[var]))
    return rows


def collect_env() -> Dict[str, Any]:
    """Everything ``segkit env`` prints, as a dict (``"rows"``: label/value pairs, ``"plugins"``)."""
    import segkit
    from segkit import plugins
    from segkit.config.locate import configs_root

    rows: List[Tuple[str, str]] = [
        ("Python", sys.version.replace("\n", " ")),
        ("Platform", platform.platform()),
        ("segkit", f"{getattr(segkit, '__version__', '?')} at {os.path.dirname(segkit.__file__)}"),
        ("segkit configs", configs_root()),
    ]
    rows += [(label, _version(label, mod, attr)) for label, mod, attr in LIBRARIES]
    rows += _devices()
    # Built-ins, then plugins as the switches say; a broken plugin is reported, not fatal here.
    segkit.load_components(on_error="warn")
    records = [{"name": r.name, "status": r.status, "distribution": r.distribution, "version": r.version,
                "entry_point": r.value, "error": r.error} for r in plugins.plugin_records()]
    return {"rows": rows, "plugins": records}


def format_env(env: Dict[str, Any]) -> str:
    width = max(len(k) for k, _ in env["rows"])
    lines = [f"{k:<{width}}  {v}" for k, v in env["rows"]]
    lines.append(f"Plugins (entry-point group 'segkit.plugins'): {len(env['plugins'])}")
    for r in env["plugins"]:
        err = f" -- {r['error']}" if r["error"] else ""
        lines.append(f"  {r['name']:<24} {r['status']:<9} {r['distribution']} {r['version']} ({r['entry_point']}){err}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="segkit env", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    env = collect_env()
    print(json.dumps(env, indent=2) if args.json else format_env(env))
    return 0
