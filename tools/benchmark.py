#!/usr/bin/env python
"""Measure inference latency (p50/p90/p99), throughput and peak memory.

Same as ``segkit benchmark``; the code is in segkit/tools/benchmark.py (so that an installed
segkit has it too). See ``--help``.
"""
import sys

# The names scripts and tests imported from this file before the code moved.
from segkit.tools.benchmark import main, parse_args, parse_size  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
