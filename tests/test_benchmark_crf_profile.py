"""benchmarks/crf.py --profile: every stage of both backends is timed and the stages cover the whole call.

Structure only (names, positive CPU times, parts adding up to the whole within a wide
tolerance), never speeds: the numbers come from a shared machine.
"""
import json

import pytest

from script_loader import load_script


@pytest.fixture(scope="module")
def crf_bench():
    return load_script("benchmarks/crf.py", "segkit_bench_crf")


def test_native_stages_cover_the_whole_call(crf_bench):
    image, probs = crf_bench.make_input((64, 48), 3, "chelsea.png")
    times = crf_bench.profile_native(image, probs, iterations=3, repeats=3)
    assert set(times) == set(crf_bench.NATIVE_STAGES) | {"whole"}
    assert crf_bench.NATIVE_STAGES == ("setup", "smoothness lattice", "smoothness normalisation",
                                       "appearance lattice", "appearance normalisation", "mean field")
    assert all(t > 0 for t in times.values()), times
    parts = sum(times[s] for s in crf_bench.NATIVE_STAGES)
    # The stages re-run the call's own steps; a stage left out (or counted twice) moves this far from 1.
    assert 0.5 < parts / times["whole"] < 2.0, times


def test_reference_stages_cover_the_whole_call(crf_bench):
    pytest.importorskip("pydensecrf.densecrf")
    image, probs = crf_bench.make_input((64, 48), 2, "chelsea.png")
    times = crf_bench.profile_reference(image, probs, iterations=3, repeats=3)
    assert set(times) == set(crf_bench.REFERENCE_STAGES) | {"whole"}
    assert all(t > 0 for t in times.values()), times
    parts = sum(times[s] for s in crf_bench.REFERENCE_STAGES)
    assert 0.5 < parts / times["whole"] < 2.0, times


def test_profile_command_prints_and_writes_every_case(crf_bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(crf_bench.SIZES, "tiny", ((40, 32), "chelsea.png"))
    out = tmp_path / "profile.json"
    argv = ["--profile", "--sizes", "tiny", "--labels", "2", "3", "--repeats", "1", "--iterations", "2",
            "--json", str(out)]
    assert crf_bench.main(argv) == 0  # --sizes' choices are read from SIZES at parse time
    printed = capsys.readouterr().out
    assert "native whole" in printed and "smoothness lattice" in printed
    data = json.loads(out.read_text())
    assert [(r["size"], r["labels"]) for r in data["profile"]] == [("tiny", 2), ("tiny", 3)]
    for row in data["profile"]:
        assert row["threads"] == 1 and row["native"]["whole"] > 0
        assert row["native_parts_over_whole"] > 0
    assert data["meta"]["clock"] == "process CPU time"
