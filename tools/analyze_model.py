#!/usr/bin/env python
"""Print parameters and FLOPs per module of a segkit model (fvcore tables).

Same as ``segkit analyze``; the code is in segkit/tools/analyze_model.py (so that an installed
segkit has it too). See ``--help``.
"""
import sys

# The names scripts and tests imported from this file before the code moved.
from segkit.tools.analyze_model import main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
