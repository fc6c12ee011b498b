"""The ``segkit`` console command.

``segkit list`` prints every registry's entries with provenance and what happened
to each installed plugin (loaded, skipped, failed, disabled). The other commands
(``train``, ``eval``, ``predict``, ``export``, ``benchmark``, ``analyze``, ``env``,
``browse``, ``plot``, ``zoo``, ``stats``, ``crf-search``, ``gridding``) run the
modules in :mod:`segkit.tools` with the same flags as the checkout's ``tools/*.py``;
see docs/cli.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

__all__ = ["main", "list_components", "run_tool", "TOOL_COMMANDS"]


def list_components(as_json: bool = False, allow: Optional[List[str]] = None, on_error: Optional[str] = None) -> str:
    """Render the component listing as text (or JSON).

    Components are loaded by :func:`segkit.load_components` like every other entry
    point: built-ins first, then plugins; ``SEGKIT_DISABLE_PLUGINS``,
    ``SEGKIT_PLUGINS`` and ``SEGKIT_PLUGIN_ERRORS`` win over ``allow``/``on_error``.
    """
    from segkit import load_components, plugins
    from segkit.registry import all_registries

    load_components(allow or [], on_error or "raise", False)
    registries = {
        name: [
            {"name": k, "kind": p.kind, "provenance": p.describe(), "distribution": p.distribution, "version": p.version}
            for k, _obj, p in reg.entries()
        ]
        for name, reg in all_registries().items()
    }
    records = [vars(r) | {"entry_point": r.entry_point} for r in plugins.plugin_records()]
    if as_json:
        return json.dumps({"registries": registries, "plugins": records}, indent=2)
    lines = []
    for name, entries in registries.items():
        lines.append(f"{name}_REGISTRY ({len(entries)})")
        for e in entries:
            lines.append(f"  {e['name']:<32} {e['provenance']}")
    lines.append(f"Plugins (entry-point group '{plugins.ENTRY_POINT_GROUP}'): {len(records)}")
    for r in records:
        err = f" -- {r['error']}" if r["error"] else ""
        lines.append(f"  {r['name']:<24} {r['status']:<9} {r['distribution']} {r['version']} ({r['value']}){err}")
    return "\n".join(lines)


# command -> (module in segkit.tools, one-line help); each module has main(argv) -> int.
TOOL_COMMANDS = {
    "train": ("train_net", "train a model (tools/train_net.py's flags)"),
    "eval": ("train_net", "evaluate MODEL.WEIGHTS; --save-predictions DIR writes every prediction"),
    "predict": ("predict", "segment image files and folders (tools/predict.py)"),
    "export": ("export_model", "export the inference pipeline to ONNX/TorchScript (tools/export_model.py)"),
    "benchmark": ("benchmark", "latency, throughput and memory (tools/benchmark.py)"),
    "analyze": ("analyze_model", "parameters and FLOPs per module (tools/analyze_model.py)"),
    "env": ("env", "versions, devices, threads and plugins, for bug reports"),
    "browse": ("browse", "write dataset images with their masks, optionally after augmentation"),
    "plot": ("plot", "loss, learning-rate and mIoU curves of one or more runs"),
    "zoo": ("zoo", "the shipped configs (segkit://...) with model, parameters and GFLOPs"),
    "stats": ("dataset_stats", "class pixel frequencies and weights of a dataset (tools/dataset_stats.py)"),
    "crf-search": ("crf_search", "grid-search the dense CRF's parameters (tools/crf_search.py)"),
    "gridding": ("gridding", "gridding report of dilated stacks (tools/gridding.py)"),
}


def run_tool(command: str, argv: List[str]) -> int:
    """Run ``segkit <command> argv...`` (a :data:`TOOL_COMMANDS` entry)."""
    import importlib

    module = importlib.import_module(f"segkit.tools.{TOOL_COMMANDS[command][0]}")
    if command in ("train", "eval"):
        return module.main(argv, eval_only=command == "eval")
    prog = sys.argv[0]
    sys.argv[0] = f"segkit {command}"  # the tools' --help and usage lines name the command
    try:
        return int(module.main(argv) or 0)
    finally:
        sys.argv[0] = prog


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segkit", description="segkit command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_module, text) in TOOL_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    p_list = sub.add_parser("list", help="list registered components and plugins")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_list.add_argument("--allow", nargs="*", default=None, help="load only these plugins")
    p_list.add_argument(
        "--plugin-errors", choices=("raise", "warn"), default=None,
        help="what a plugin that fails to import does (default: warn, so the listing shows it; "
        "SEGKIT_PLUGIN_ERRORS wins)",
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOL_COMMANDS:  # the tool parses its own flags
        return run_tool(argv[0], argv[1:])
    args = _build_parser().parse_args(argv)
    if args.command == "list":
        print(list_components(args.json, args.allow, args.plugin_errors or "warn"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
