"""The intra-op thread policy: explicit counts win, else work size and machine load decide."""
import numpy as np
import pytest
import torch

import segkit.utils.threads as threads
from segkit.utils.threads import ENV_VAR, choose_threads, intra_op_threads, other_runnable, thread_override


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.mark.parametrize(
    "work, grain, cores, busy, expected",
    [
        (10, 100, 8, 0, 1),  # small work: one thread, whatever the machine
        (150, 100, 8, 0, 1),  # 1.5 grains: still one
        (250, 100, 8, 0, 2),  # two grains of work: two threads
        (10_000, 100, 8, 0, 8),  # large work on a quiet machine: every core
        (10_000, 100, 8, 3, 5),  # three other runnable tasks: the free cores only
        (10_000, 100, 2, 1, 1),  # 2 cores, one competitor: no spinning at barriers
        (10_000, 100, 2, 5, 1),  # overloaded: never below one
        (10_000, 100, 1, 0, 1),
    ],
)
def test_policy(work, grain, cores, busy, expected):
    assert choose_threads(work, grain, cores=cores, busy=busy) == expected


@pytest.mark.parametrize(
    "work, grain, cores, busy, expected",
    [
        (10_000, 100, 2, 0, 2),  # quiet: every core, as for short ops
        (10_000, 100, 8, 0, 8),
        (10_000, 100, 2, 2, 4),  # a competing 2-thread process on 2 cores: twice the cores
        (10_000, 100, 2, 1, 4),
        (10_000, 100, 8, 3, 16),  # not the free cores (5) as for short ops
        (10_000, 100, 2, 9, 4),  # overloaded: still twice the cores, never more
        (300, 100, 2, 2, 3),  # three grains of work: three threads at most
        (150, 100, 8, 5, 1),  # small work: one thread, whatever the load
        (10_000, 100, 1, 3, 1),  # one core: one thread
    ],
)
def test_policy_for_long_ops(work, grain, cores, busy, expected):
    assert choose_threads(work, grain, cores=cores, busy=busy, ops="long") == expected


def test_kind_of_ops_is_checked():
    with pytest.raises(ValueError, match="ops must be one of"):
        choose_threads(10_000, 100, cores=2, busy=0, ops="medium")


def test_explicit_counts_win_over_long_ops(monkeypatch):
    big = dict(work=1e9, grain=1, cores=2, busy=2, ops="long")
    monkeypatch.setenv(ENV_VAR, "1")
    assert choose_threads(**big) == 1
    with thread_override(3):
        assert choose_threads(**big) == 3
    assert choose_threads(**big, num_threads=2) == 2


def test_explicit_counts_win_in_order(monkeypatch):
    big = dict(work=1e9, grain=1, cores=8, busy=0)
    monkeypatch.setenv(ENV_VAR, "3")
    assert choose_threads(**big) == 3
    assert choose_threads(work=1, grain=100, cores=8, busy=7) == 3  # also above what the policy would pick
    with thread_override(5):
        assert choose_threads(**big) == 5
        assert choose_threads(**big, num_threads=2) == 2
        with thread_override(0):  # 0: no change
            assert choose_threads(**big) == 5
    assert choose_threads(**big) == 3  # scope restored
    monkeypatch.setenv(ENV_VAR, "0")
    assert choose_threads(**big) == 8
    monkeypatch.setenv(ENV_VAR, "many")
    with pytest.raises(ValueError, match=ENV_VAR):
        choose_threads(**big)


def test_load_reading_excludes_this_process(monkeypatch):
    monkeypatch.setattr(threads, "_runnable_now", lambda: 4)
    monkeypatch.setattr(threads, "_own_running", lambda: 1)
    assert other_runnable() == 3
    reads = iter([9, 2, 5])  # a blip is not load: least of the reads
    monkeypatch.setattr(threads, "_runnable_now", lambda: next(reads))
    assert other_runnable(samples=3) == 1
    monkeypatch.setattr(threads, "_runnable_now", lambda: None)  # unreadable: assume quiet
    assert other_runnable() == 0
    assert threads._own_running() >= 1  # the real /proc: at least the caller


def test_scope_sets_and_restores():
    before = torch.get_num_threads()
    with intra_op_threads(before + 1) as n:
        assert n == before + 1 and torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with intra_op_threads(before + 1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_native_crf_uses_the_policy(monkeypatch):
    """The CRF asks the policy with its work (pixels x labels) and runs with the answer."""
    import importlib

    from segkit.postprocess import dense_crf

    module = importlib.import_module("segkit.postprocess.dense_crf")

    seen = []
    real = module.choose_threads
    monkeypatch.setattr(module, "choose_threads", lambda work, grain: seen.append((work, grain)) or real(work, grain))
    image = np.zeros((6, 7, 3), np.uint8)
    probs = np.full((3, 6, 7), 1 / 3, np.float32)
    with thread_override(2):
        inside = []
        monkeypatch.setattr(module, "_native_compute", lambda *a: inside.append(torch.get_num_threads()) or
                            torch.full((1, 3, 6, 7), 1 / 3))
        dense_crf(image, probs)
    assert seen == [(3 * 6 * 7, module._CRF_GRAIN)]
    assert inside == [2]


def test_small_native_crf_stays_on_one_thread(monkeypatch):
    """A tiny CRF (126 pixels x labels) on a quiet 8-core machine: one thread, not every core."""
    from segkit.postprocess import dense_crf
    import importlib

    module = importlib.import_module("segkit.postprocess.dense_crf")
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "other_runnable", lambda: 0)
    inside = []
    monkeypatch.setattr(module, "_native_compute", lambda *a: inside.append(torch.get_num_threads()) or
                        torch.full((1, 3, 6, 7), 1 / 3))
    dense_crf(np.zeros((6, 7, 3), np.uint8), np.full((3, 6, 7), 1 / 3, np.float32))
    assert inside == [1]


@pytest.mark.parametrize("work, busy, expected", [
    (1_000, 0, 1),            # tiny: one thread, whatever the load
    (480 * 320 * 2, 0, 2),    # quiet: every core from 2**16 pixels x labels on
    (480 * 320 * 2, 2, 1),    # busy, short ops: the free cores (at least one)
    (2048 * 1024 * 2, 0, 2),  # quiet, large: every core
    (2048 * 1024 * 2, 2, 1),  # busy, large but few labels: still the free cores
    (2048 * 1024 * 19, 2, 4),  # busy, many labels: the long-ops count, twice the cores
])
def test_native_crf_thread_count_by_work_and_load(monkeypatch, work, busy, expected):
    import importlib

    import segkit.utils.threads as threads

    module = importlib.import_module("segkit.postprocess.dense_crf")
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "other_runnable", lambda samples=3: busy)
    assert module._crf_threads(work) == expected
