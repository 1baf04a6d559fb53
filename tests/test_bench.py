"""`vgg-edge bench` on real exports of the tiny trained run, in the real runtimes (each in its own process).

One short bench (tiny run counts, 32 px) feeds the structural checks; nothing asserts a speed.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vgg_edge.bench import BenchConfig, compare, discover, latency_stats, load_bench, make_batches, parse_ints, regressions, run_bench
from vgg_edge.cli import app
from vgg_edge.errors import VggEdgeError
from vgg_edge.runtime import read_manifest

FORMATS = ("onnx", "tflite", "openvino")
TINY = ["--batch-sizes", "1,3", "--threads", "2,1", "--min-runs", "3", "--min-seconds", "0", "--warmup-runs", "1", "--warmup-seconds", "0", "--images", "5"]


@pytest.fixture(scope="module")
def exported(fp32_exports: Path) -> Path:
    """fp32 exports of the tiny run in every format, as `export` lays them out: exported/<run>/<format>-fp32/."""
    return fp32_exports


@pytest.fixture(scope="module")
def crafted_old(exported: Path, tmp_path_factory) -> Path:
    """An earlier bench.json in which Keras was impossibly fast and ONNX impossibly slow."""
    run = exported.name

    def target(key: str, p50: float) -> dict:
        return {"key": key, "measurements": [{"threads": 2, "batch": 1, "latency_ms": {"p50": p50}, "throughput_ips": 1000.0 / p50}]}

    doc = {"schema": "vgg-edge-bench/1", "targets": [target(f"{run}/keras@tensorflow:CPU", 1e-6), target(f"{run}/onnx-fp32@onnxruntime:CPU", 1e9)]}
    path = tmp_path_factory.mktemp("old") / "bench.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def bench_run(exported: Path, crafted_old: Path, tmp_path_factory):
    """The CLI on `exported/<run>` exactly as the README runs it, plus a regression gate against `crafted_old`."""
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(app, ["bench", str(exported), *TINY, "--out", str(out), "--compare", str(crafted_old), "--fail-if-slower", "1.10"])
    return result, out


def test_bench_measures_every_export_and_the_keras_baseline(bench_run, exported: Path, trained_run: Path):
    result, out = bench_run
    doc = load_bench(out / "bench.json")
    measured = {t["name"]: t for t in doc["targets"] if t["status"] == "ok"}
    assert set(measured) == {"keras", *(f"{f}-fp32" for f in FORMATS)}, [(t["key"], t["reason"]) for t in doc["targets"]]
    assert measured["keras"]["run"] == str(trained_run.resolve())  # found from the manifests' source run
    assert doc["config"]["threads"] == [2, 1] and doc["config"]["batch_sizes"] == [1, 3]
    for t in measured.values():
        sweep = {(m["threads"], m["batch"]) for m in t["measurements"]}
        assert sweep == {(2, 1), (2, 3), (1, 1)}, t["key"]  # batch sweep at the first thread count, thread sweep at batch 1
        for m in t["measurements"]:
            lat = m["latency_ms"]
            assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
            assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
            assert m["runs"] >= 3 and len(m["samples_ms"]) == m["runs"] and m["throughput_ips"] > 0
            assert m["vs_keras"]["latency_p50"] > 0 and m["vs_keras"]["throughput"] > 0
        cold = t["cold_start"]
        assert cold["load_s"] > 0 and cold["first_inference_s"] > 0 and cold["total_s"] >= cold["load_s"] + cold["first_inference_s"]
        assert t["peak_rss_mb"] > 50
    for m in measured["keras"]["measurements"]:
        assert m["vs_keras"] == {"latency_p50": 1.0, "throughput": 1.0}
    for name in (f"{f}-fp32" for f in FORMATS):
        manifest = read_manifest(exported / name).manifest
        assert measured[name]["accuracy"] == manifest["parity"]["accuracy"]
        assert measured[name]["accuracy_drop_pp"] == manifest["parity"]["accuracy_drop_pp"]
        assert measured[name]["size_bytes"] == sum(f["bytes"] for f in manifest["files"].values())
        assert measured[name]["files"] == manifest["files"]
    assert measured["keras"]["accuracy"] == json.loads((trained_run / "metrics.json").read_text())["accuracy"]


def test_absent_runtimes_and_devices_are_rows_with_a_reason(bench_run):
    _, out = bench_run
    doc = load_bench(out / "bench.json")
    unmeasured = {(t["name"], t["device"]): t for t in doc["targets"] if t["status"] != "ok"}
    assert {("onnx-fp32", "CUDA"), ("onnx-fp32", "TensorRT"), ("openvino-fp32", "GPU")} <= set(unmeasured)  # no GPU on the test machine
    for t in unmeasured.values():
        assert t["status"] == "skipped" and t["reason"] and not t["measurements"]
    assert "CUDAExecutionProvider" in unmeasured[("onnx-fp32", "CUDA")]["reason"]
    markdown = (out / "bench.md").read_text()
    assert "skipped onnxruntime CUDA (onnx-fp32)" in markdown


def test_reports_environment_csv_markdown_and_plots(bench_run):
    _, out = bench_run
    doc = load_bench(out / "bench.json")
    env = doc["environment"]
    assert env["cpu"]["usable_cores"] >= 1 and env["cpu"]["model"]
    assert {"numpy", "onnxruntime", "openvino", "ai-edge-litert", "tensorflow"} <= set(env["packages"])
    assert doc["command"].startswith("vgg-edge bench ")
    rows = list(csv.DictReader(io.StringIO((out / "bench.csv").read_text())))
    measured = sum(len(t["measurements"]) for t in doc["targets"])
    unmeasured = sum(1 for t in doc["targets"] if not t["measurements"])
    assert len(rows) == measured + unmeasured
    assert all(float(r["p50_ms"]) <= float(r["p99_ms"]) for r in rows if r["status"] == "ok")
    markdown = (out / "bench.md").read_text()
    assert "| target |" in markdown and "onnx-fp32" in markdown and env["cpu"]["model"] in markdown
    for name in ("latency.png", "pareto.png", "throughput.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fail_if_slower_exits_1_naming_the_regressions(bench_run, exported: Path):
    result, _ = bench_run
    assert result.exit_code == 1, result.output
    assert f"slower: {exported.name}/keras@tensorflow:CPU threads 2 batch 1" in result.output
    assert "onnx-fp32@onnxruntime:CPU threads 2" not in result.output.split("slower:", 1)[1]


def test_compare_matches_like_with_like_and_gates_on_the_median():
    def doc(p50s: dict[tuple[str, int, int], float]) -> dict:
        targets: dict[str, dict] = {}
        for (key, threads, batch), p50 in p50s.items():
            targets.setdefault(key, {"key": key, "measurements": []})["measurements"].append(
                {"threads": threads, "batch": batch, "latency_ms": {"p50": p50}, "throughput_ips": batch * 1000.0 / p50})
        return {"targets": list(targets.values())}

    old = doc({("a", 2, 1): 10.0, ("a", 2, 8): 40.0, ("b", 2, 1): 5.0, ("gone", 2, 1): 1.0})
    new = doc({("a", 2, 1): 11.0, ("a", 2, 8): 44.5, ("b", 2, 1): 4.0, ("b", 1, 1): 9.0, ("added", 2, 1): 1.0})
    found = {(c.key, c.threads, c.batch): c for c in compare(new, old)}
    assert set(found) == {("a", 2, 1), ("a", 2, 8), ("b", 2, 1)}
    assert found[("a", 2, 1)].latency_ratio == pytest.approx(1.10)
    assert found[("b", 2, 1)].throughput_ratio == pytest.approx(1.25)
    assert [(c.key, c.batch) for c in regressions(list(found.values()), 1.10)] == [("a", 8)]  # exactly 1.10 is not a regression
    assert regressions(list(found.values()), 1.2) == []


def test_a_tampered_artifact_is_a_failed_row_not_a_crash(exported: Path, tmp_path: Path):
    broken = tmp_path / "onnx-fp32"
    shutil.copytree(exported / "onnx-fp32", broken)
    model = broken / read_manifest(broken).model_file
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    config = BenchConfig(batch_sizes=(1,), threads=(1,), min_runs=1, min_seconds=0, warmup_runs=0, warmup_seconds=0, images=2)
    targets = [t for t in discover([broken], baseline=False) if t.device == "CPU"]
    doc = run_bench(targets, config, tmp_path / "out")
    (row,) = doc["targets"]
    assert row["status"] == "failed" and "sha256 or size differs" in row["reason"]


def test_bad_input_is_one_line_naming_the_fix(tmp_path: Path, crafted_old: Path):
    with pytest.raises(VggEdgeError, match="not an artifact folder"):
        discover([tmp_path])
    with pytest.raises(VggEdgeError, match="--batch-sizes '1,x'"):
        parse_ints("1,x", "--batch-sizes")
    (tmp_path / "other.json").write_text('{"schema": "something-else"}')
    with pytest.raises(VggEdgeError, match="not a vgg-edge-bench/1 file"):
        load_bench(tmp_path / "other.json")
    result = CliRunner().invoke(app, ["bench", str(tmp_path), "--fail-if-slower", "1.1"])
    assert isinstance(result.exception, VggEdgeError) and "--compare" in str(result.exception)


def test_batches_cycle_the_image_pool_and_stats_are_in_ms():
    import numpy as np

    pool = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    assert [len(b) for b in make_batches(pool, 2)] == [2, 2]
    assert [len(b) for b in make_batches(pool, 8)] == [8]  # a pool smaller than the batch is tiled
    stats = latency_stats(np.array([0.001, 0.002, 0.003, 0.004]))
    assert stats["p50"] == pytest.approx(2.5) and stats["max"] == pytest.approx(4.0) and stats["mean"] == pytest.approx(2.5)
    cores = BenchConfig().thread_counts()
    assert cores[0] >= 1 and cores[-1] == 1 and len(set(cores)) == len(cores)
