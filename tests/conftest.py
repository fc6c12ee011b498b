"""Shared test setup: quiet, deterministic, offline."""
import os

# albumentations checks PyPI for updates on import; tests are offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
