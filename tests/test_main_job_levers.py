"""benchmarks/main_job_levers.py: the kept measurements print as a table and draw one curve per run."""
import json

from script_loader import load_script


def test_kept_results_table_and_picture(tmp_path, capsys):
    levers = load_script("benchmarks/main_job_levers.py", "segkit_bench_main_job_levers")
    with open(levers.RESULTS, encoding="utf-8") as f:
        results = json.load(f)
    out = tmp_path / "levers.png"
    assert levers.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for run in results["runs"].values():
        assert run["points"], run["label"]
        cpus = [p[1] for p in run["points"]]
        assert cpus == sorted(cpus) and all(0 < p[2] < 1 for p in run["points"])  # CPU grows, mIoU is a fraction
        assert run["label"][:60].strip() in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dense CRF on held-out train" in printed
