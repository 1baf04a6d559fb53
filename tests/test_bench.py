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

from vgg_edge.bench import BenchConfig, compare, discover, load_bench, regressions, run_bench
from vgg_edge.bench.worker import latency_stats, make_batches, measure_streams, throughput_mode
from vgg_edge.cli import app, parse_ints
from vgg_edge.errors import VggEdgeError
from vgg_edge.manifest import read as read_manifest

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
    assert doc["config"]["throughput"] is True and "--throughput" in doc["command"]
    for t in measured.values():
        mode = t["throughput_mode"]
        assert mode["batch"] == 1 and mode["images"] >= 3 and mode["seconds"] > 0, t["key"]  # at least --min-runs batches
        assert mode["images_per_s"] == pytest.approx(mode["images"] / mode["seconds"]) and mode["images_per_s"] > 0
        assert mode["max_abs_diff"] < 1e-4, t["key"]  # each result is the latency path's for the same image
        assert mode["vs_keras"] > 0
    assert measured["keras"]["throughput_mode"]["vs_keras"] == 1.0
    layout = {name: (t["throughput_mode"]["streams"], t["throughput_mode"]["threads_per_stream"]) for name, t in measured.items()}
    assert layout["keras"] == (1, 2)  # sequential, on the latency sweep's 2 threads
    assert layout["onnx-fp32"] == layout["tflite-fp32"] == (2, 1)  # one single-threaded stream per core of the first thread count
    streams, threads_per_stream = layout["openvino-fp32"]  # OpenVINO's own choice, within the 2 threads it was given
    assert measured["openvino-fp32"]["throughput_mode"]["requests"] >= streams >= 1 and streams * threads_per_stream <= 2
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
    assert all(float(r["throughput_mode_ips"]) > 0 and int(r["throughput_mode_streams"]) >= 1 for r in rows if r["status"] == "ok")
    markdown = (out / "bench.md").read_text()
    assert "| target |" in markdown and "onnx-fp32" in markdown and env["cpu"]["model"] in markdown
    assert "| img/s throughput mode |" in markdown and "AsyncInferQueue" in markdown
    for name in ("latency.png", "pareto.png", "throughput.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_isa_cap_is_recorded_and_said(bench_run, monkeypatch):
    """A bench run with oneDNN kept below the CPU's ISA (to time a lesser CPU) says so; the fixture's, uncapped, does not."""
    from vgg_edge.bench.report import to_markdown
    from vgg_edge.machine import environment

    _, out = bench_run
    doc = load_bench(out / "bench.json")
    assert doc["environment"]["isa_caps"] == {} and "ONEDNN_MAX_CPU_ISA" not in (out / "bench.md").read_text()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    doc["environment"] = environment()
    assert doc["environment"]["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert "ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN kept below the CPU's ISA)" in to_markdown(doc)


def test_the_tiny_bench_tables_show_throughput_mode_in_wide_only(bench_run):
    from vgg_edge.bench.report import THROUGHPUT_MODE_COLUMNS, compact_rows, summary_rows
    from vgg_edge.ui import render_table
    from vgg_edge.bench import summary_table

    _, out = bench_run
    doc = load_bench(out / "bench.json")
    compact = render_table(summary_table(doc), 80)
    assert max(map(len, compact.splitlines())) <= 80 and "…" not in compact and "throughput mode" not in compact
    assert not set(THROUGHPUT_MODE_COLUMNS) & set(compact_rows(doc)[0])
    header, rows = summary_rows(doc)
    assert set(THROUGHPUT_MODE_COLUMNS) <= set(header)
    wide = render_table(summary_table(doc, wide=True), 80)
    assert "…" not in wide and not _rows_whole(wide, rows)


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


def test_each_artifact_is_benched_against_the_run_its_manifest_names(exported: Path, trained_run: Path, tmp_path: Path):
    """A run given on the command line does not capture another run's artifacts (a pruned run's exports benched beside
    their source); it stands in only for a source run that is not here (an artifact copied from another machine)."""
    from vgg_edge.manifest import write as write_manifest

    other = tmp_path / "other-run"
    shutil.copytree(trained_run, other)

    def artifact_of(run: Path, name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(exported / "onnx-fp32", folder)
        doc = json.loads((folder / "manifest.json").read_text())
        doc["source"]["run"] = str(run)
        write_manifest(folder, doc)
        return folder

    targets = discover([trained_run, artifact_of(other, "theirs"), artifact_of(tmp_path / "moved-away", "copied")], baseline=True)
    runs = {Path(t.path).name: Path(t.run) for t in targets if t.device == "CPU" and t.format == "onnx"}
    assert runs == {"theirs": other.resolve(), "copied": trained_run.resolve()}
    assert {Path(t.run) for t in targets if t.format == "keras"} == {other.resolve(), trained_run.resolve()}  # each run's own baseline


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


def test_thread_counts_are_all_cores_then_one_without_repeats(monkeypatch):
    import vgg_edge.bench.runner as runner

    monkeypatch.setattr(runner, "available_cores", lambda: 4)
    assert BenchConfig().thread_counts() == (4, 1)
    monkeypatch.setattr(runner, "available_cores", lambda: 1)
    assert BenchConfig().thread_counts() == (1,)  # one core: the thread sweep would repeat the batch sweep
    assert BenchConfig(threads=(4, 4, 1)).thread_counts() == (4, 1)


def test_threaded_streams_run_each_entry_once_at_a_time_and_raise_its_errors():
    import threading

    import numpy as np

    from vgg_edge.backends import threaded_streams

    both = threading.Barrier(2, timeout=30)  # the first two calls are in flight together, or this breaks
    lock, busy, peak = threading.Lock(), [0], [0]

    def run(x: np.ndarray) -> np.ndarray:
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        if x[0] < 2:
            both.wait()
        with lock:
            busy[0] -= 1
        return x * 2

    streams = threaded_streams([run, run], 1)
    done: list[np.ndarray] = []
    for i in range(6):
        streams.start(np.array([i]), done.append)
    streams.wait()
    assert sorted(int(d[0]) for d in done) == [0, 2, 4, 6, 8, 10] and peak[0] == 2
    assert (streams.streams, streams.requests, streams.threads_per_stream) == (2, 2, 1)
    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("the runtime failed")

    failing = threaded_streams([broken], None)
    failing.start(np.zeros(1), done.append)
    with pytest.raises(RuntimeError, match="the runtime failed"):  # in the caller's thread, not lost in the pool's
        failing.wait()


def test_throughput_mode_counts_images_and_catches_results_for_the_wrong_input():
    import numpy as np

    from vgg_edge.backends import threaded_streams

    pool = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    calls: list[int] = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x.reshape(len(x), -1)[:, :2].astype(np.float32)

    config = BenchConfig(min_runs=7, min_seconds=0, warmup_runs=0, warmup_seconds=0)
    count, _, outputs = measure_streams(threaded_streams([predict] * 3, 1), make_batches(pool, 1), config)
    assert count == 7 and len(calls) == 3 + 7 and set(outputs) == set(range(5))  # warm-up: every request's first call
    mode = throughput_mode(threaded_streams([predict] * 3, 1), predict, pool, config)
    assert (mode["streams"], mode["requests"], mode["threads_per_stream"], mode["batch"], mode["images"]) == (3, 3, 1, 1, 7)
    assert mode["images_per_s"] == pytest.approx(7 / mode["seconds"]) and mode["max_abs_diff"] == 0.0
    always_first = threaded_streams([lambda x: predict(pool[:1])] * 2, 1)
    assert throughput_mode(always_first, predict, pool, config)["max_abs_diff"] > 0


# ----------------------------------------------------------------------------------- output, from saved bench.json files
# These read the committed bench results and train, export and time nothing: seconds in all.

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SAVED = sorted(RESULTS.glob("bench_brain_mri_*/bench.json"))


def _rows_whole(text: str, rows: list[list[str]]) -> list[list[str]]:
    """The rows whose cells do not all appear, in order and uncut, on one line of `text`."""
    import re

    return [row for row in rows if not re.search(r"(^|\s)" + r"\s+".join(map(re.escape, row)) + r"(\s|$)", text, re.MULTILINE)]


def _no_baseline(doc: dict) -> dict:
    """`doc` as `--no-baseline` on artifact folders leaves it: no Keras target, no ratios."""
    import copy

    from vgg_edge.bench import add_ratios

    doc = copy.deepcopy(doc)
    doc["targets"] = [t for t in doc["targets"] if t["format"] != "keras"]
    add_ratios(doc)
    return doc


def _identity_columns(doc: dict) -> list[str]:
    """What names a row: the target, and its run where the bench holds several runs (pruned runs beside their source)."""
    return ["run", "target"] if len({t["run"] for t in doc["targets"]}) > 1 else ["target"]


def _without_throughput_mode(doc: dict) -> dict:
    """`doc` as a bench file from before throughput mode (some saved ones are, some are not)."""
    import copy

    doc = copy.deepcopy(doc)
    for t in doc["targets"]:
        t["throughput_mode"] = None
    return doc


def _with_throughput_mode(doc: dict) -> dict:
    """`doc` as if throughput mode had run: 4 single-threaded streams at twice each target's batch-1 throughput."""
    import copy

    from vgg_edge.bench import add_ratios, measurement

    doc = copy.deepcopy(doc)
    for t in doc["targets"]:
        if t["status"] == "ok":
            ips = 2 * measurement(t, 1)["throughput_ips"]
            t["throughput_mode"] = {"streams": 4, "requests": 4, "threads_per_stream": 1, "batch": 1, "images": round(2 * ips), "seconds": 2.0,
                                    "images_per_s": ips, "max_abs_diff": 0.0}
    add_ratios(doc)
    return doc


def test_saved_bench_files_are_there():
    assert len(SAVED) >= 3, f"expected the committed bench results under {RESULTS}"


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("path", SAVED, ids=lambda p: p.parent.name)
def test_compact_table_fits_the_terminal_and_cuts_no_cell(path: Path, width: int):
    from vgg_edge.ui import render_table
    from vgg_edge.bench.report import compact_rows, summary_table

    doc = load_bench(path)
    text = render_table(summary_table(doc), width)
    header, rows = compact_rows(doc)
    identity = _identity_columns(doc)
    if identity == ["target"]:  # with a run column too, the table is drawn as wide as those two must be (never cut)
        assert max(len(line) for line in text.splitlines()) <= width, text
    assert "…" not in text, text
    assert not _rows_whole(text, rows), text
    names = {t["name"] for t in doc["targets"] if t["status"] == "ok"}
    assert {row[header.index("target")] for row in rows} == names
    assert header[:len(identity) + 3] == [*identity, "device", "gate", "accuracy"] and "x Keras p50" in header
    for word in " ".join(header).split():
        assert word in text


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("path", SAVED, ids=lambda p: p.parent.name)
def test_wide_table_has_every_column_and_cuts_no_cell(path: Path, width: int):
    from vgg_edge.ui import render_table
    from vgg_edge.bench.report import summary_rows, summary_table

    doc = load_bench(path)
    text = render_table(summary_table(doc, wide=True), width)
    header, rows = summary_rows(doc)
    assert "…" not in text, text
    assert not _rows_whole(text, rows), text  # drawn wider than `width` where it must be: never cropped
    assert {"runtime", "p99 ms", "RSS MB", "cold s"} <= set(header)
    for word in " ".join(header).split():
        assert word in text


def test_the_identity_columns_never_wrap_or_shrink():
    from rich.table import Table

    from vgg_edge.ui import render_table
    from vgg_edge.bench import summary_table

    doc = load_bench(SAVED[0])
    other = json.loads(json.dumps(doc))
    for t in other["targets"]:
        t["run"] = t["run"] + "-a-second-run-with-a-long-name"
    doc["targets"] += other["targets"]  # two runs: a run column beside the target
    table = summary_table(doc)
    assert isinstance(table, Table) and [c.header for c in table.columns][:2] == ["run", "target"]
    assert all(c.no_wrap and c.min_width >= max(len(cell) for cell in c._cells) for c in table.columns[:2])
    text = render_table(table, 80)
    assert "…" not in text
    assert Path(other["targets"][0]["run"]).name in text


def test_without_a_baseline_the_tables_drop_the_keras_ratios():
    from vgg_edge.ui import render_table
    from vgg_edge.bench.report import compact_rows, has_baseline, summary_rows, summary_table, to_markdown

    doc = _no_baseline(load_bench(SAVED[0]))
    assert not has_baseline(doc) and has_baseline(load_bench(SAVED[0]))
    for header, _ in (compact_rows(doc), summary_rows(doc)):
        assert not [c for c in header if "Keras" in c]
    for wide in (False, True):
        table = summary_table(doc, wide=wide)
        assert "Keras" not in str(table.title)
        assert "Keras" not in render_table(table, 120)
    assert "x Keras" not in to_markdown(doc)
    assert "x Keras p50" in to_markdown(load_bench(SAVED[0]))


@pytest.mark.parametrize("path", SAVED, ids=lambda p: p.parent.name)
def test_throughput_mode_joins_the_wide_table_markdown_and_csv_not_the_compact_table(path: Path):
    from vgg_edge.bench.report import THROUGHPUT_MODE_COLUMNS, compact_rows, summary_rows, to_csv, to_markdown
    from vgg_edge.ui import render_table
    from vgg_edge.bench import summary_table

    doc = _without_throughput_mode(load_bench(path))
    with_mode = _with_throughput_mode(doc)
    assert compact_rows(with_mode) == compact_rows(doc)
    assert max(map(len, render_table(summary_table(with_mode), 80).splitlines())) <= max(80, max(map(len, render_table(summary_table(doc), 80).splitlines())))
    assert not set(THROUGHPUT_MODE_COLUMNS) & set(summary_rows(doc)[0])  # files from before throughput mode: no empty columns
    header, rows = summary_rows(with_mode)
    keras = next(row for row in rows if row[header.index("target")] == "keras")
    assert keras[header.index("streams x threads")] == "4x1" and keras[header.index("x Keras throughput mode")] == "1.00"
    text = render_table(summary_table(with_mode, wide=True), 120)
    assert "…" not in text and not _rows_whole(text, rows)
    assert "| img/s throughput mode |" in to_markdown(with_mode) and "throughput mode" not in to_markdown(doc)
    ok = [r for r in csv.DictReader(io.StringIO(to_csv(with_mode))) if r["status"] == "ok"]
    assert ok and all(float(r["throughput_mode_ips"]) > 0 and r["throughput_mode_streams"] == "4" for r in ok)
    header, _ = summary_rows(_no_baseline(with_mode))
    assert "img/s throughput mode" in header and "x Keras throughput mode" not in header


def test_wilson_interval_matches_published_values():
    from vgg_edge.bench import accuracy_interval, wilson_interval

    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3; and the 0/10, 10/10, 50/100 cases.
    published = {(0, 10): (0.0, 0.2775), (10, 10): (0.7225, 1.0), (50, 100): (0.4038, 0.5962),
                 (81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}
    for (k, n), (low, high) in published.items():
        assert wilson_interval(k, n) == pytest.approx((low, high), abs=5e-5), (k, n)
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in ((0, 7), (3, 40), (1219, 1281), (33, 120)):
        ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert wilson_interval(5, 10, 0.99)[0] < wilson_interval(5, 10)[0]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    assert accuracy_interval({"accuracy": 0.9516003122560499, "accuracy_n": 1281}) == pytest.approx(wilson_interval(1219, 1281))
    assert accuracy_interval({"accuracy": 0.95}) is None  # a bench.json written before accuracy_n: no interval


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("recorded_n", [True, False], ids=["with-n", "without-n"])
def test_pareto_png_from_a_saved_bench(tmp_path: Path, monkeypatch, recorded_n: bool):
    from vgg_edge import plots

    doc = load_bench(RESULTS / "bench_brain_mri_128" / "bench.json")
    measured = [t for t in doc["targets"] if t["measurements"]]
    if recorded_n:
        for t in measured:
            t["accuracy_n"] = 1281  # the test split those runs were measured on
    figures = []
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, dest: (figures.append(fig), save(fig, dest)))
    plots.bench_pareto(measured, tmp_path / "pareto.png")
    width, height = _png_size(tmp_path / "pareto.png")
    assert 900 <= width <= 1400 and 500 <= height <= 700, (width, height)  # 8x5 in at 120 dpi, plus the legend beside it
    (ax,) = figures[0].axes
    low, high = ax.get_ylim()
    assert high <= 1.0 and low > 0.9  # accuracies of about 0.95: no axis running on past 1
    labels = ax.get_legend().get_texts()
    assert [t.get_text() for t in labels] == ["Pareto front", *(f"{t['name']} CPU" for t in measured)]
    assert not ax.texts  # a legend, not labels printed over each other
    bars = [c for c in ax.containers if c.has_yerr]
    assert len(bars) == (len(measured) if recorded_n else 0)
    if recorded_n:  # room for the intervals, about 1.2 points either side at n=1281
        assert low < min(t["accuracy"] for t in measured) - 0.01


def test_the_pareto_front_is_drawn_only_with_two_points(tmp_path: Path, monkeypatch):
    from vgg_edge import plots

    assert plots.pareto_front([(1.0, 0.9), (2.0, 0.95), (3.0, 0.94), (0.5, 0.8)]) == [(0.5, 0.8), (1.0, 0.9), (2.0, 0.95)]
    assert plots.pareto_front([(1.0, 0.95), (2.0, 0.9)]) == [(1.0, 0.95)]
    doc = load_bench(RESULTS / "bench_brain_mri_128" / "bench.json")
    fastest_and_best = [t for t in doc["targets"] if t["name"] in ("keras", "onnx-int8") and t["measurements"]]
    fastest_and_best[1]["accuracy"] = 0.99  # onnx-int8: faster and more accurate, a one-point front
    figures = []
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, dest: (figures.append(fig), save(fig, dest)))
    plots.bench_pareto(fastest_and_best, tmp_path / "pareto.png")
    (ax,) = figures[0].axes
    assert "Pareto front" not in [t.get_text() for t in ax.get_legend().get_texts()]
    assert all(line.get_label() != "Pareto front" for line in ax.get_lines())


def test_bench_cli_reports_only_what_it_times_on_one_line_each(tmp_path: Path, monkeypatch):
    """The CLI around run_bench, with the timing replaced by the saved figures of a real bench."""
    from dataclasses import fields

    import vgg_edge.bench as bench
    import vgg_edge.bench.runner as runner
    from vgg_edge.bench import Target

    saved = load_bench(RESULTS / "bench_brain_mri_128" / "bench.json")
    rows = {t["key"]: t for t in saved["targets"]}
    targets = [Target(**{f.name: t[f.name] for f in fields(Target)}) for t in saved["targets"]]
    skipped = {(t["format"], t["device"]): t["reason"] for t in saved["targets"] if t["status"] == "skipped"}
    spawned = []

    def spawn(target, config, threads, batches, images, scratch):
        spawned.append((target.key, threads, config.throughput))
        row = rows[target.key]
        return {"status": "ok", "threads": threads, "cold_start": row["cold_start"], "peak_rss_mb": row["peak_rss_mb"],
                "measurements": [m for m in row["measurements"] if m["threads"] == threads and m["batch"] in batches]}

    def describe(target):
        return {**rows[target.key], "status": "ok", "reason": None, "cold_start": None, "peak_rss_mb": None, "measurements": []}

    monkeypatch.setattr(bench, "discover", lambda paths, baseline=True: targets)  # the CLI's import, from the package
    monkeypatch.setattr(runner, "_image_pools", lambda targets, limit, scratch: {(t.run, t.image_size): "unused.npy" for t in targets})
    monkeypatch.setattr(runner, "absent_runtimes", lambda targets, scratch: dict(skipped))
    monkeypatch.setattr(runner, "_describe", describe)
    monkeypatch.setattr(runner, "_spawn", spawn)
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", str(tmp_path), "--batch-sizes", "1,8", "--threads", "2,1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    measured = [t.key for t in targets if (t.format, t.device) not in skipped]
    progress = [line for line in result.stderr.splitlines() if line.startswith("bench ")]
    assert progress == [f"bench {i}/{len(measured)} {key}" for i, key in enumerate(measured, 1)]
    assert sorted({key for key, _, _ in spawned}) == sorted(measured)
    assert {(threads, throughput) for _, threads, throughput in spawned} == {(2, True), (1, False)}  # throughput mode once, beside the batch sweep
    lines = result.stderr.splitlines()
    assert all(line.startswith(("bench ", "skipped ", "wrote ")) for line in lines), lines  # nothing wrapped onto a second line
    assert sum(line.startswith("skipped ") for line in lines) == 3  # CUDA, TensorRT, OpenVINO GPU: once each, after the table
    assert result.output.index("every column: --wide") < result.output.index("skipped onnxruntime CUDA")
    assert lines[-1] == f"wrote {out}/: bench.json, bench.csv, bench.md, latency.png, pareto.png, throughput.png"
    assert sorted(p.name for p in out.iterdir()) == sorted(bench.output_files(load_bench(out / "bench.json")))
    assert "x Keras p50" in result.stdout and "p99 ms" not in result.stdout and "every column: --wide" in result.stdout
    wide = CliRunner().invoke(app, ["bench", str(tmp_path), "--batch-sizes", "1,8", "--threads", "2,1", "--out", str(out), "--wide"])
    assert wide.exit_code == 0 and "p99 ms" in wide.stdout and "RSS MB" in wide.stdout and "…" not in wide.stdout
