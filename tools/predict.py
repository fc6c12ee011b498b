#!/usr/bin/env python
"""Segment image files with a trained segkit model.

Same as ``segkit predict``; the code is in segkit/tools/predict.py (so that an installed
segkit has it too). See ``--help``.
"""
import sys

from segkit.tools.predict import find_images, main, parse_args, IMAGE_SUFFIXES  # noqa: F401  (importable from this script, as before)

if __name__ == "__main__":
    sys.exit(main())
