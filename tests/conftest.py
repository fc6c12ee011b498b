"""Shared test setup: quiet, deterministic, offline."""
import os

# albumentations checks PyPI for updates on import; tests are offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_gridding_warnings(monkeypatch):
    # GriddingWarning is emitted once per configuration and process; each test starts afresh.
    from segkit.modeling import gridding

    monkeypatch.setattr(gridding, "_WARNED", set())


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Test tensors are tiny: intra-op threads only add synchronisation, and stall badly
    # when the machine is shared. Tests that need more threads set them themselves.
    torch.manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
