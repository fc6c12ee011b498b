"""tools/predict.py, benchmark.py, analyze_model.py and export_model.py on a real tiny model."""
import json
import mmap
import os
import runpy
import sys

import numpy as np
import pytest
import torch

import segkit
from segkit.config import load_config
from segkit.data import DatasetCatalog, MetadataCatalog, setup_datasets
from segkit.export.benchmark import BenchmarkResult, _MemoryMeter, benchmark_runner, format_table, percentile
from segkit.modeling import build_model
from segkit.predictor import read_image

from model_fixtures import perturbed_checkpoint

ROOT = os.path.join(os.path.dirname(__file__), "..")
TOOLS = os.path.join(ROOT, "tools")
CONFIG = os.path.join(ROOT, "examples", "embed_segmenter", "tiny_fcn.yaml")


def _tool(name):
    sys.path.insert(0, TOOLS)  # analyze_model imports parse_size from benchmark.py
    try:
        return runpy.run_path(os.path.join(TOOLS, name))["main"]
    finally:
        sys.path.remove(TOOLS)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tools")
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    setup_datasets(cfg)  # as every entry point: the built-in datasets follow this config, not an earlier test's
    weights = perturbed_checkpoint(cfg, tmp / "model_final.pth")
    return cfg, weights, tmp


def test_predict_writes_palette_pngs_and_overlays(setup):
    from PIL import Image

    cfg, weights, tmp = setup
    files = [r["file_name"] for r in DatasetCatalog.get("fashion_scenes_val")[:3]]
    folder = tmp / "in" / "sub"
    folder.mkdir(parents=True)
    Image.open(files[2]).crop((0, 0, 70, 50)).save(folder / "crop.png")
    out = tmp / "pred"
    main = _tool("predict.py")
    assert main(["--config-file", CONFIG, "--weights", weights, "--input", files[0], files[1], str(tmp / "in"),
                 "--output", str(out), "MODEL.DEVICE", "cpu"]) == 0
    predictor = segkit.Predictor(cfg, weights=weights)
    palette = [c for rgb in MetadataCatalog.get("fashion_scenes_val").stuff_colors for c in rgb]
    for src, stem in [(files[0], "val_000000"), (files[1], "val_000001"), (str(folder / "crop.png"), "sub/crop")]:
        label_png = Image.open(out / f"{stem}.png")
        assert label_png.mode == "P" and label_png.getpalette()[: len(palette)] == palette
        expected = predictor(read_image(src, "RGB"), format="RGB").labels
        np.testing.assert_array_equal(np.asarray(label_png), expected)
        assert Image.open(out / f"{stem}_overlay.jpg").size == label_png.size
    assert np.asarray(Image.open(out / "sub/crop.png")).shape == (50, 70)


def test_predict_input_errors(setup, tmp_path):
    find_images = runpy.run_path(os.path.join(TOOLS, "predict.py"))["find_images"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        find_images([str(tmp_path / "missing.jpg")])
    with pytest.raises(ValueError, match="No images"):
        find_images([str(tmp_path)])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in "ab":
        (tmp_path / d / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="same output name"):
        find_images([str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg")])


def test_predict_never_overwrites_inputs_and_keeps_outputs_distinct(setup, tmp_path):
    from PIL import Image

    _, weights, _ = setup
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / name)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    mod = runpy.run_path(os.path.join(TOOLS, "predict.py"))
    assert sorted(stem for _, stem in mod["find_images"]([str(folder)])) == ["a.jpg", "a.png", "b"]
    main = _tool("predict.py")
    # --output = --input: b.png's label mask would replace the photo b.png.
    with pytest.raises(ValueError, match=r"b\.png would overwrite the input image"):
        main(["--config-file", CONFIG, "--weights", weights, "--input", str(folder), "--output", str(folder),
              "MODEL.DEVICE", "cpu"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written at all
    out = tmp_path / "out"
    assert main(["--config-file", CONFIG, "--weights", weights, "--input", str(folder), "--output", str(out),
                 "--no-overlay", "MODEL.DEVICE", "cpu"]) == 0
    assert sorted(os.listdir(out)) == ["a.jpg.png", "a.png.png", "b.png"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_benchmark_tool_json(setup, tmp_path):
    _, weights, _ = setup
    out = tmp_path / "bench.json"
    main = _tool("benchmark.py")
    assert main(["--config-file", CONFIG, "--weights", weights, "--sizes", "32x48", "40", "--batch-sizes", "1", "2",
                 "--iters", "3", "--warmup", "1", "--json", str(out), "MODEL.DEVICE", "cpu"]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["height"], r["width"], r["batch_size"]) for r in rows] == [(32, 48, 1), (32, 48, 2), (40, 40, 1), (40, 40, 2)]
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput_img_s"] == pytest.approx(r["batch_size"] * 1000 / r["mean_ms"])
        assert r["peak_memory_mb"] > 0 and r["device"] == "cpu"
        assert (r["warmup"], r["iters"], r["calls"]) == (1, 3, 4) and r["iqr_ms"] >= 0


def test_benchmark_bundle_backend(setup, tmp_path):
    from segkit.export import export

    cfg, weights, _ = setup
    path = export(cfg, weights, "onnx", str(tmp_path / "m.onnx"))
    main = _tool("benchmark.py")
    out = tmp_path / "b.json"
    assert main(["--backend", "onnx", "--bundle", path, "--sizes", "24x24", "--iters", "2", "--warmup", "0",
                 "--json", str(out), "--device", "cpu", "--threads", "1"]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["backend"] == "onnx" and row["iters"] == 2


def test_benchmark_runner_counts_calls_and_shapes():
    seen = []
    res = benchmark_runner(lambda b: seen.append(b.shape), [(5, 7)], [3], torch.device("cpu"), "fake", warmup=2, iters=4)
    assert seen == [(3, 5, 7, 3)] * 6
    assert isinstance(res[0], BenchmarkResult) and res[0].iters == 4
    assert "fake" in format_table(res) and "5x7" in format_table(res)
    with pytest.raises(ValueError, match="iters"):
        benchmark_runner(lambda b: None, [(5, 7)], [1], torch.device("cpu"), "fake", iters=0)


def test_percentile_values():
    vals = [float(v) for v in range(1, 101)]
    assert percentile(vals, 50) == pytest.approx(50.5)
    assert percentile(vals, 99) == pytest.approx(99.01)
    assert percentile([4.0], 90) == 4.0


def test_cpu_memory_meter_sees_a_large_allocation():
    meter = _MemoryMeter(torch.device("cpu"))
    meter.start()
    before = meter.peak_mb()
    # Fresh anonymous pages, touched: a numpy allocation may reuse memory the process
    # freed earlier but still holds resident, which raises no peak.
    block = mmap.mmap(-1, 64 * 2**20)
    np.frombuffer(block, dtype=np.uint8)[:] = 1
    after = meter.peak_mb()
    block.close()
    assert after - before >= 60 or meter.kind == "rss_lifetime_peak"


def test_analyze_model_counts(setup, tmp_path):
    cfg, _, _ = setup
    out = tmp_path / "a.json"
    main = _tool("analyze_model.py")
    assert main(["--config-file", CONFIG, "--size", "64x96", "--max-depth", "2", "--json", str(out), "MODEL.DEVICE", "cpu"]) == 0
    data = json.loads(out.read_text())
    model = build_model(cfg)
    assert data["total_params"] == sum(p.numel() for p in model.parameters())
    assert data["params_by_module"]["backbone.conv1"] == 16 * 3 * 7 * 7
    # ResNet stem: 7x7 stride-2 conv, 3 -> 16 channels, on a 32x48 output grid; one multiply-add = one flop.
    assert data["flops_by_module"]["backbone.conv1"] == 32 * 48 * 16 * 3 * 7 * 7
    assert data["total_flops"] == data["flops_by_module"][""] > data["flops_by_module"]["backbone.conv1"]


def test_export_tool_with_verify(setup, tmp_path, capsys):
    _, weights, _ = setup
    main = _tool("export_model.py")
    assert main(["--config-file", CONFIG, "--weights", weights, "--format", "onnx", "torchscript", "--output",
                 str(tmp_path), "--with-probs", "--verify", "--verify-images", "2", "MODEL.DEVICE", "cpu"]) == 0
    text = capsys.readouterr().out
    assert os.path.isfile(tmp_path / "model.onnx") and os.path.isfile(tmp_path / "model.ts")
    lines = [line for line in text.splitlines() if "pixel agreement" in line]
    assert len(lines) == 2
    for line in lines:
        assert float(line.split("pixel agreement ")[1].split(",")[0]) >= 0.9999
        assert float(line.split("max |prob diff| ")[1]) < 1e-4


def test_benchmark_predictor_backend_runs_the_crf_chain(setup, tmp_path):
    """End-to-end latency includes the configured post-processing: a CRF makes it slower."""
    _, weights, _ = setup
    main = _tool("benchmark.py")
    rows = {}
    for chain in ("[]", "['DenseCRF']"):
        out = tmp_path / f"b{len(chain)}.json"
        assert main(["--config-file", CONFIG, "--weights", weights, "--backend", "predictor", "--sizes", "48", "--batch-sizes", "2",
                     "--iters", "3", "--warmup", "1", "--json", str(out), "MODEL.DEVICE", "cpu", "POSTPROCESS.CHAIN", chain,
                     "POSTPROCESS.CRF.ITERATIONS", "10"]) == 0
        (rows[chain],) = json.loads(out.read_text())["results"]
    assert rows["[]"]["backend"] == "predictor" and rows["[]"]["batch_size"] == 2
    assert rows["['DenseCRF']"]["p50_ms"] > rows["[]"]["p50_ms"]


def test_benchmark_rejects_unknown_backend_and_amp():
    from segkit.export.benchmark import make_runner

    with pytest.raises(ValueError, match="Unknown benchmark backend 'tensorrt'"):
        make_runner("tensorrt", torch.device("cpu"))
    with pytest.raises(ValueError, match="only for the pytorch backend"):
        make_runner("onnx", torch.device("cpu"), bundle="x.onnx", amp="fp16")


def test_benchmark_bf16_autocast_runs_in_bf16(setup):
    from segkit.export.benchmark import make_runner

    cfg, _, _ = setup
    model = build_model(cfg).eval()
    dtypes = []
    model.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype if torch.is_tensor(o) else next(iter(o.values())).dtype))
    run = make_runner("pytorch", torch.device("cpu"), model=model, amp="bf16")
    dtypes.clear()
    run(np.zeros((1, 32, 32, 3), np.uint8))
    assert dtypes == [torch.bfloat16]
