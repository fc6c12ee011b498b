"""Import a repository script (``benchmarks/*.py``, ``tools/*.py``) as a module, for tests."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relpath: str, name: str):
    """Execute ``ROOT/relpath`` as module ``name`` (registered in ``sys.modules``: dataclasses need it)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
