"""segkit benchmark times with torch.utils.benchmark: exactly warmup + iters calls, and
p50/p90/p99/mean/IQR of the timed calls only (a fake model on a fake clock is the oracle)."""
import time

import numpy as np
import pytest
import torch
import torch.utils.benchmark

from segkit.export import benchmark as bench


class _FakeClock:
    """A clock that only the fake model moves: the durations are known exactly."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_runner_makes_exactly_warmup_plus_iters_calls_and_times_only_the_timed(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(bench, "_clock", clock)
    # Two warm-up calls of 1 s each (untimed), then five timed calls, in seconds.
    durations = [1.0, 1.0, 0.010, 0.030, 0.020, 0.050, 0.040]
    calls = []

    def fake_model(batch):
        calls.append(batch.shape)
        clock.now += durations[len(calls) - 1]

    (r,) = bench.benchmark_runner(fake_model, [(6, 4)], [2], torch.device("cpu"), "fake", warmup=2, iters=5)
    assert calls == [(2, 6, 4, 3)] * 7
    assert (r.warmup, r.iters, r.calls) == (2, 5, 7)
    # Hand-computed over the timed 10, 30, 20, 50, 40 ms (linear interpolation, numpy's default):
    assert r.p50_ms == pytest.approx(30.0)
    assert r.mean_ms == pytest.approx(30.0)
    assert r.p90_ms == pytest.approx(46.0)  # 40 + 0.6 * (50 - 40)
    assert r.p99_ms == pytest.approx(49.6)
    assert r.iqr_ms == pytest.approx(20.0)  # 40 - 20
    assert r.throughput_img_s == pytest.approx(2 * 1000 / 30.0)
    assert r.noisy  # IQR 67% of the median: torch.utils.benchmark warns
    table = bench.format_table([r])
    assert "2 untimed warm-up + 5 timed = 7 calls" in table and "noisy" in table
    row = r.as_dict()
    assert row["calls"] == 7 and row["warmup"] == 2 and row["iqr_ms"] == pytest.approx(20.0)


def test_steady_calls_are_not_flagged(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(bench, "_clock", clock)

    def fake_model(batch):
        clock.now += 0.004

    (r,) = bench.benchmark_runner(fake_model, [(2, 2)], [1], torch.device("cpu"), "fake", warmup=0, iters=4)
    assert r.calls == 4 and r.p50_ms == pytest.approx(4.0) and r.iqr_ms == pytest.approx(0.0) and not r.noisy
    assert "noisy" not in bench.format_table([r])


def test_time_calls_returns_a_torch_measurement_with_the_real_clock():
    # The clock is torch.utils.benchmark's (it synchronises the accelerator before reading the time).
    assert bench._clock is torch.utils.benchmark.timer
    calls = []

    def sleepy(arg):
        calls.append(arg)
        time.sleep(0.005)

    m = bench.time_calls(sleepy, "x", 3, label="sleep", sub_label="5 ms")
    assert isinstance(m, torch.utils.benchmark.Measurement)
    assert calls == ["x"] * 3 and m.number_per_run == 1 and len(m.times) == 3
    assert min(m.times) >= 0.005  # a sleep lasts at least what it asks for
    assert m.median == pytest.approx(float(np.median(m.times)))
    assert "sleep: 5 ms" in repr(m)
