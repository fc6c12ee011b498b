"""The ``segkit`` console command and device selection, in process."""
import json

import pytest
import torch

from segkit import cli
from segkit.registry import all_registries
from segkit.utils.device import resolve_device


def test_segkit_list_prints_every_registry(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name, reg in all_registries().items():
        header = f"{name}_REGISTRY ({len(list(reg.entries()))})"
        assert header in out
    # built-ins are listed under their registry with their provenance
    start = out.index(next(l for l in out if l.startswith("LOSS_REGISTRY (")))
    losses = [l.split()[0] for l in out[start + 1:] if l.startswith("  ")][:3]
    assert "CrossEntropy" in {l.split()[0] for l in out if l.startswith("  ")} and losses
    assert any(l.startswith("Plugins (entry-point group 'segkit.plugins'):") for l in out)


def test_segkit_list_json_matches_the_registries(capsys):
    assert cli.main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"registries", "plugins"}
    for name, reg in all_registries().items():
        assert sorted(e["name"] for e in data["registries"][name]) == sorted(k for k, _o, _p in reg.entries())
    entry = next(e for e in data["registries"]["LOSS"] if e["name"] == "CrossEntropy")
    assert entry["kind"] and entry["provenance"]
    for record in data["plugins"]:
        assert {"name", "status", "distribution", "entry_point"} <= set(record)


def test_list_components_renders_text_or_json():
    text = cli.list_components()
    assert "LOSS_REGISTRY" in text and not text.lstrip().startswith("{")
    assert json.loads(cli.list_components(as_json=True))["registries"]["LOSS"]


def test_segkit_command_needs_a_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2 and "list" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["list", "--plugin-errors", "ignore"])


# --------------------------------------------------------------------------- devices
def _no_accelerator(monkeypatch, cuda=False, mps=False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("name", ["auto", ""])
def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch, name):
    _no_accelerator(monkeypatch)
    assert resolve_device(name) == torch.device("cpu")
    _no_accelerator(monkeypatch, cuda=True, mps=True)
    assert resolve_device(name) == torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None:
        _no_accelerator(monkeypatch, cuda=False, mps=True)
        assert resolve_device(name) == torch.device("mps")


def test_explicit_devices(monkeypatch):
    _no_accelerator(monkeypatch)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda:1' but CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="'gpu0' is not a valid torch device"):
        resolve_device("gpu0")
    _no_accelerator(monkeypatch, cuda=True)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
