#!/usr/bin/env python
"""Gridding report for a stack of dilation rates or for a config's backbone.

Same as ``segkit gridding``; the code is in segkit/tools/gridding.py (so that an installed
segkit has it too). See ``--help``.
"""
import sys

# The names scripts and tests imported from this file before the code moved.
from segkit.tools.gridding import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
