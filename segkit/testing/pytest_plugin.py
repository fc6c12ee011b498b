"""pytest plugin (entry point ``pytest11``: ``segkit``): the ``segkit_check`` fixture.

With segkit installed, any test can ask for it::

    def test_my_loss(segkit_check):
        segkit_check(LOSS_REGISTRY, "MyLoss")

Without the entry point (e.g. an editable install made before it existed), import
the fixture in a test module: ``from segkit.testing.pytest_plugin import segkit_check``.
"""
import pytest

__all__ = ["segkit_check"]


@pytest.fixture
def segkit_check():
    """:func:`segkit.testing.check_component`, with components loaded (built-ins, then plugins)."""
    from segkit import load_components
    from segkit.testing import check_component

    load_components()
    return check_component
