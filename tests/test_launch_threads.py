"""CPU processes started by segkit.engine.launch split the cores instead of each taking all of them."""
import importlib

import pytest
import torch

from segkit.utils import threads

launch_module = importlib.import_module("segkit.engine.launch")  # segkit.engine.launch is also a function


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, processes, expected", [(2, 2, 1), (8, 2, 4), (8, 3, 2), (1, 4, 1), (16, 1, 16)])
def test_each_process_gets_its_share_of_the_cores(cores, processes, expected, monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    torch.set_num_threads(3)
    launch_module._share_cores(processes)
    assert torch.get_num_threads() == expected


def test_explicit_omp_num_threads_wins(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    torch.set_num_threads(3)
    launch_module._share_cores(2)
    assert torch.get_num_threads() == 3
