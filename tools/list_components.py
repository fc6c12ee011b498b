#!/usr/bin/env python
"""Print every registry's entries with provenance, and the plugins found.

Same as ``segkit list``; see ``--help``.
"""
import sys

from segkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["list", *sys.argv[1:]]))
