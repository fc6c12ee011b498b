"""Packaging hook: ship the top-level ``configs/`` folder inside the package.

``configs/`` stays the one place the YAML files are written (the README's
``python tools/train_net.py --config-file configs/...`` and the tests read it in a
checkout); a built wheel gets a copy as ``segkit/configs/`` so that an installed
segkit can run ``segkit train --config-file segkit://fashion_scenes/main.yaml``
without the source tree. Editable installs read ``configs/`` directly
(``segkit.config.locate.configs_root``). Everything else is in pyproject.toml.
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class build_py(_build_py):
    """``build_py`` that also copies ``configs/**/*.yaml`` to ``<build_lib>/segkit/configs``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        src = os.path.join(HERE, "configs")
        if not os.path.isdir(src):  # building from an sdist: MANIFEST.in brings configs/ along
            raise FileNotFoundError(f"configs/ is missing from {HERE}; cannot ship the model zoo.")
        dst = os.path.join(self.build_lib, "segkit", "configs")
        for folder, _dirs, files in os.walk(src):
            for name in sorted(files):
                if name.endswith((".yaml", ".yml")):
                    target = os.path.join(dst, os.path.relpath(os.path.join(folder, name), src))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copyfile(os.path.join(folder, name), target)


setup(cmdclass={"build_py": build_py})
