"""The code behind ``segkit <command>`` and ``tools/*.py``.

Each module has ``main(argv=None) -> int`` and the same flags as the script of the
same name in the checkout's ``tools/`` folder, which is a thin wrapper over it; the
modules live in the package so that an installed wheel has them too.
"""
