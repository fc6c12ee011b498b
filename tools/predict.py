#!/usr/bin/env python
"""Segment image files with a trained segkit model.

Same as ``segkit predict``; the code is in segkit/tools/predict.py (so that an installed
segkit has it too). See ``--help``.
"""
import sys

# The names scripts and tests imported from this file before the code moved.
from segkit.tools.predict import IMAGE_SUFFIXES, find_images, main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
