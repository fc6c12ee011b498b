#!/usr/bin/env python
"""Grid-search the dense CRF's w1, theta_alpha, theta_beta on validation images.

Same as ``segkit crf-search``; the code is in segkit/tools/crf_search.py (so that an installed
segkit has it too). See ``--help``.
"""
import sys

# The names scripts and tests imported from this file before the code moved.
from segkit.tools.crf_search import collect, main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
