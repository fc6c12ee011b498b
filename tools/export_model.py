#!/usr/bin/env python
"""Export a trained model's whole inference pipeline to TorchScript and/or ONNX.

Same as ``segkit export``; the code is in segkit/tools/export_model.py (so that an installed
segkit has it too). See ``--help``.
"""
import sys

# The names scripts and tests imported from this file before the code moved.
from segkit.tools.export_model import main, parse_args, verification_images  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
