"""Shared test setup: quiet, deterministic, offline, and writing only into temporary folders."""
import os
import shutil
import tempfile

# albumentations checks PyPI for updates on import; tests are offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Tests never write outside temporary directories: datasets generated on demand (FashionScenes)
# go to one temporary cache per session, shared by every test and the subprocesses they start
# (a session generates the 500 default val scenes once; tests that train use small NUM_TRAIN).
# SEGKIT_TEST_CACHE names a folder to reuse across sessions instead (e.g. a CI cache).
_OWN_CACHE = not os.environ.get("SEGKIT_TEST_CACHE")
SESSION_CACHE = os.environ.get("SEGKIT_TEST_CACHE") or tempfile.mkdtemp(prefix="segkit-test-cache-")
os.environ["SEGKIT_CACHE"] = SESSION_CACHE


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)

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
