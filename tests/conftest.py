"""Shared test setup: quiet, deterministic, offline."""
import os

# albumentations checks PyPI for updates on import; tests are offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Test tensors are tiny: intra-op threads only add synchronisation, and stall badly
    # when the machine is shared. Tests that need more threads set them themselves.
    torch.manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    # The timm-backbone configs (configs/*/*mobilenetv3*, *convnext*) need the optional
    # timm extra; tests parameterised over every config skip them cleanly without it.
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        return
    skip = pytest.mark.skip(reason="timm is not installed (pip install 'segkit[timm]')")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec and any(s in callspec.id for s in ("mobilenetv3", "convnext")):
            item.add_marker(skip)
