"""The ``segkit`` console command.

``segkit list`` prints every registry's entries with provenance and what happened
to each installed plugin (loaded, skipped, failed, disabled).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

__all__ = ["main", "list_components"]


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


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segkit", description="segkit command line")
    sub = parser.add_subparsers(dest="command", required=True)
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
    args = _build_parser().parse_args(argv)
    if args.command == "list":
        print(list_components(args.json, args.allow, args.plugin_errors or "warn"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
