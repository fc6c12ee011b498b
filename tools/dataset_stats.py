#!/usr/bin/env python
"""Class pixel frequencies and class weights of a dataset, written as the JSON the losses read.

Same as ``segkit stats``; the code is in segkit/tools/dataset_stats.py (so that an installed
segkit has it too). See ``--help``.
"""
import sys

# The names scripts and tests imported from this file before the code moved.
from segkit.tools.dataset_stats import main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
