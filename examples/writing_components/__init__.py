"""One complete, small example of each kind of segkit component (docs/writing_components.md).

Each module registers its component when imported, as a plugin module would;
tests/test_writing_components.py imports every one and runs segkit.testing on it.
"""
