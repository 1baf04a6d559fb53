"""`vgg-edge export` on the session's trained run (32 px MNIST digits): every format x precision
converted, run in its real edge runtime, and held to its parity gate; the manifest's provenance
and hashes; the gate's refusal of an impossible int8 bound, with the accepted artifact untouched.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vgg_edge.cli import app
from vgg_edge.errors import VggEdgeError
from vgg_edge.export import PRECISIONS, ExportJob, ExportResult, rejected_name
from vgg_edge.export.pipeline import BATCH
from vgg_edge.export.calibration import CalibrationSet, select
from vgg_edge.fileio import sha256_file
from vgg_edge.run import RunDir
from vgg_edge.formats import FORMATS
from vgg_edge.manifest import read as read_manifest
from vgg_edge.runtime import load_artifact
from vgg_edge.ui import console

CALIBRATION = 20  # images: enough for a 32 px model, keeps int8 conversion to seconds
LOOSE = 10.0  # pp: a 32 px, 3-epoch model flips a few borderline digits when quantized
GRID = [(f, p) for f in FORMATS for p in PRECISIONS]


@dataclass
class Exported:
    results: dict[tuple[str, str], ExportResult]
    pixels: np.ndarray  # the recorded test split
    labels: np.ndarray
    reference: np.ndarray  # Keras probabilities on it
    printed: str = ""  # what the export printed


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Exported:
    """One job exports the whole grid (the Keras reference and calibration set are loaded once)."""
    out = tmp_path_factory.mktemp("exported")
    with ExportJob(trained_run, calibration_size=CALIBRATION) as job, console.capture() as printed:
        results = {(f, p): job.export(f, p, out / f"{f}-{p}", max_drop=LOOSE) for f, p in GRID}
        exported = Exported(results, *job.test, job.reference["test"])
    exported.printed = " ".join(printed.get().split())
    return exported


def test_calibration_is_a_seeded_stratified_sample_of_train_only(trained_run):
    split = RunDir.open(trained_run).split
    chosen = select(split, 50, seed=0)
    assert len(chosen) == 50 and {e.split for e in chosen} == {"train"}
    assert not {e.path for e in chosen} & {e.path for e in split.files("test")}
    train_counts = {lab: sum(e.label == lab for e in split.files("train")) for lab in split.labels}
    for lab in split.labels:  # every class, in proportion to its share of train (+-1 for rounding)
        share = 50 * train_counts[lab] / len(split.files("train"))
        assert abs(sum(e.label == lab for e in chosen) - share) <= 1
    assert [e.path for e in select(split, 50, seed=0)] == [e.path for e in chosen]
    assert [e.path for e in select(split, 50, seed=1)] != [e.path for e in chosen]
    pixels = np.zeros((50, 1, 1, 3), np.uint8)
    assert CalibrationSet(pixels, chosen, 0).sha256 == CalibrationSet(pixels, chosen[::-1], 0).sha256
    assert CalibrationSet(pixels, chosen, 0).sha256 != CalibrationSet(pixels, select(split, 50, seed=1), 0).sha256
    with pytest.raises(VggEdgeError, match="at least one image per class"):
        select(split, len(split.labels) - 1)


def test_calibration_takes_exactly_the_size_asked_in_proportion():
    """Any class counts: the sample has exactly `size` images, none of the classes empty, each near its share
    (within one, plus one where the one-per-class minimum moved images between classes)."""
    from vgg_edge.data import Entry, SplitManifest

    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(1, 400, rng.integers(2, 12))
        labels = [f"c{i}" for i in range(len(counts))]
        entries = [Entry(f"train/{lab}/{j}.png", "train", lab, f"{lab}{j}") for lab, n in zip(labels, counts) for j in range(n)]
        size = int(rng.integers(len(labels), 300))
        chosen = select(SplitManifest("/data", labels, entries, 0), size)
        assert len(chosen) == min(size, counts.sum())
        for lab, n in zip(labels, counts):
            got = sum(e.label == lab for e in chosen)
            assert got >= 1 and abs(got - len(chosen) * n / counts.sum()) < 2


@pytest.mark.parametrize(("fmt", "precision"), GRID)
def test_every_export_meets_its_gate_in_its_own_runtime(exported, trained_run, fmt, precision):
    """Float exports accepted, quantized ones published, each judged on the run's whole test split plus its
    whole val split, unless the converter setting kept had tuned on val. (What each verdict means for
    given figures is proven on synthetic predictions in test_parity_stats.py.)"""
    result = exported.results[fmt, precision]
    if precision in ("fp32", "fp16"):
        assert result.accepted, result.failures
    else:  # published: accepted, or unproven (what its images could not settle within the margin)
        assert result.status in ("accepted", "unproven") and not result.failures, result.failures
    assert result.artifact.name == f"{fmt}-{precision}" and not rejected_name(result.artifact).exists()
    split = RunDir.open(trained_run).split
    kept = result.manifest["conversion"]["attempt"]
    tuned_on_val = any(a.tunes_on_val for a in FORMATS[fmt].make_exporter().attempts(precision, LOOSE) if a.name == kept)
    evidence, val = result.parity["evidence"], len(split.files("val"))
    assert evidence["splits"] == {"test": len(split.files("test")), **({"val": val} if val and not tuned_on_val else {})}
    assert ("excluded" in evidence) == tuned_on_val
    if precision not in ("fp32", "fp16"):  # quantized: a real, measured difference, held to the drop bound
        parity = result.parity
        assert 0 < parity["max_abs_prob_diff"] < 1
        assert parity["accuracy_drop_pp"] <= LOOSE
        assert all(d <= LOOSE for d in parity["sensitivity_drop_pp"].values())


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_recorded_int8_parity_is_what_the_device_gets(exported, fmt):
    """Re-run the published int8 folder as a device would (batches as in the gate) and recompute the figures."""
    result = exported.results[fmt, "int8"]
    predictor = load_artifact(result.artifact)
    probs = np.concatenate([predictor.predict(exported.pixels[i:i + BATCH]) for i in range(0, len(exported.pixels), BATCH)])
    parity = result.parity
    decide = predictor.info.decision.decide  # the run's operating point: the gate judges the decisions the device makes
    assert predictor.info.decision.positive == "9"
    assert int((decide(probs) != decide(exported.reference)).sum()) == parity["flips"]
    assert np.abs(probs - exported.reference).max() == pytest.approx(parity["max_abs_prob_diff"], abs=1e-7)
    assert parity["accuracy"] == pytest.approx(float((decide(probs) == exported.labels).mean()))
    assert parity["reference_accuracy"] == pytest.approx(float((decide(exported.reference) == exported.labels).mean()))


@pytest.mark.parametrize(("fmt", "precision"), GRID)
def test_manifest_records_files_source_calibration_and_io(exported, trained_run, fmt, precision):
    result = exported.results[fmt, precision]
    on_disk = json.loads((result.artifact / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(result.manifest))
    info = read_manifest(result.artifact)  # verifies every listed file's size and sha256
    assert (info.format, info.precision, info.status) == (fmt, precision, result.status)
    on_disk_files = {p.relative_to(result.artifact).as_posix() for p in result.artifact.rglob("*") if p.is_file()}
    assert set(on_disk["files"]) == on_disk_files - {"manifest.json"} and on_disk["model_file"] in on_disk["files"]
    for name, meta in on_disk["files"].items():
        assert meta == {"sha256": sha256_file(result.artifact / name), "bytes": (result.artifact / name).stat().st_size}
    assert on_disk["labels"] == RunDir.open(trained_run).labels
    assert on_disk["source"]["model_sha256"] == sha256_file(Path(trained_run) / "model.keras")
    assert on_disk["source"]["split_sha256"] == sha256_file(Path(trained_run) / "split.json")
    assert on_disk["preprocessing"]["in_graph"] and on_disk["preprocessing"]["mode"] == "vgg16"
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "openvino", "nncf"} <= set(on_disk["versions"])
    assert on_disk["created"] and on_disk["conversion"]["seconds"] > 0
    assert {k: on_disk["input"][k] for k in ("shape", "layout", "range")} == {"shape": [None, 32, 32, 3], "layout": "NHWC", "range": [0, 255]}
    assert on_disk["output"]["shape"] == [None, 10]
    if precision == "int8":
        calibration = on_disk["calibration"]
        assert calibration["size"] == CALIBRATION and calibration["split"] == "train"
        assert len(calibration["files"]) == CALIBRATION and len(calibration["sha256"]) == 64
    else:
        assert on_disk["calibration"] is None
    if (fmt, precision) == ("tflite", "int8"):  # full integer: the device quantizes pixels with the model's own scale
        assert on_disk["input"]["dtype"] == on_disk["output"]["dtype"] == "int8"
        assert on_disk["input"]["quantization"]["scale"] > 0
    else:
        assert on_disk["input"]["dtype"] == "float32"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_smaller_precisions_make_smaller_models(exported, fmt):
    size = {p: sum(f["bytes"] for f in exported.results[fmt, p].manifest["files"].values()) for p in PRECISIONS}
    assert size["fp16"] < 0.6 * size["fp32"] and size["int8"] < size["fp32"]
    if fmt != "openvino":  # int8 weights are a quarter of fp32's
        assert size["int8"] < size["fp16"] and size["int8"] < 0.5 * size["fp32"]
    # OpenVINO's fallback, NNCF's accuracy control, keeps in float as many layers as parity needs: on this weak model
    # (32 px, 3 epochs, about 76% accurate, many near-ties) 10 of its 17 weighted ops, 0.56 of fp32's size.


def test_openvino_int8_manifest_names_the_layers_it_left_in_float(exported, trained_run):
    """Accuracy control reverts layers to float on its own; the manifest reads them from the graph, and the IR's size
    bears it out: int8 kernels for the other layers, float32 for these (biases float32 everywhere)."""
    model = RunDir.open(trained_run).load_model()
    doc = exported.results["openvino", "int8"].manifest
    kept_float = set(doc["conversion"]["settings"]["float_layers"])
    weighted = [layer for layer in model.layers if layer.weights]
    assert kept_float <= {layer.name for layer in weighted}
    predicted = sum(np.prod(layer.weights[0].shape) * (4 if layer.name in kept_float else 1) + 4 * sum(np.prod(w.shape) for w in layer.weights[1:])
                    for layer in weighted)
    size = {p: sum(f["bytes"] for f in exported.results["openvino", p].manifest["files"].values()) for p in ("fp32", "int8")}
    assert abs(size["int8"] - predicted) < 0.05 * size["fp32"], (size, predicted, sorted(kept_float))


def test_unprovable_int8_bound_is_refused_under_require_proof_and_the_good_artifact_kept(exported, trained_run, tmp_path):
    """A zero margin can never be shown: --require-proof rejects it after every fallback, the
    ranked one included (the diagnosis names the layers it kept in float), and publishes nothing."""
    good = tmp_path / "onnx-int8"
    shutil.copytree(exported.results["onnx", "int8"].artifact, good)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    run = CliRunner().invoke(app, [
        "export", str(trained_run), "--format", "onnx", "--int8", "--max-drop", "0", "--require-proof",
        "--calibration-size", str(CALIBRATION), "--out", str(good),
    ])
    assert run.exit_code == 1, run.output
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before  # the accepted artifact is untouched
    rejected = rejected_name(good)
    report = json.loads((rejected / "manifest.json").read_text())
    assert report["status"] == "rejected" and report["gate"]["bounds"]["max_drop_pp"] == 0.0 and report["gate"]["bounds"]["require_proof"]
    # under a zero margin every figure either shows a drop or cannot show its absence: rejected either way
    assert report["gate"]["failures"] and all(f.startswith("unproven (--require-proof)") or "worse than the 0 pp margin" in f for f in report["gate"]["failures"])
    assert "rejected" in run.output
    # the toolchain's own settings first, then the layers ranked by the diagnosis, 1, 2, 4, ... of them in float
    static = [a.name for a in FORMATS["onnx"].make_exporter().attempts("int8", 0.0)]
    names = [a["attempt"] for a in report["attempts"]]
    assert names[:len(static)] == static and len(names) > len(static)
    ranked = report["diagnosis"]["ranking"]
    kept_float = [a["float_layers"] for a in report["attempts"][len(static):]]
    assert kept_float == [ranked[:k] for k in (1, 2, 4, 8)] and len(ranked) == 16  # never all 16: that is no int8 model
    assert all(a["status"] == "rejected" and a["failures"] and a["latency_ms_batch1"] > 0 for a in report["attempts"])
    assert (good.parent / "diagnosis" / "diagnosis.json").is_file()
    # test_runtime's bad-artifact cases refuse a rejected artifact; asked for explicitly, it still runs
    assert load_artifact(rejected, allow_rejected=True).predict(exported.pixels[:2]).shape == (2, 10)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_dynamic_range_is_not_called_int8_and_ignored_calibration_is_warned(exported, fmt):
    dynamic = exported.results[fmt, "dynamic"].manifest  # its precision and calibration: test_manifest_records_files_source_calibration_and_io
    assert "weights" in dynamic["conversion"]["settings"]["quantization"]
    for precision in ("fp32", "fp16", "dynamic"):
        assert f"{fmt}-{precision} uses no calibration data; --calibration-size {CALIBRATION} is ignored" in exported.printed
    assert f"{fmt}-int8 uses no calibration data" not in exported.printed


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "caffe"], "--format caffe: unknown"),
    (["--format", "onnx", "--precision", "int4"], "--precision int4: unknown"),
    (["--format", "onnx", "--int8", "--fp16"], "pick one precision"),
])
def test_bad_options_are_one_line_errors(trained_run, tmp_path, args, message):
    run = CliRunner().invoke(app, ["export", str(trained_run), *args, "--out", str(tmp_path / "x")])
    assert isinstance(run.exception, VggEdgeError) and message in str(run.exception)
    assert not (tmp_path / "x").exists()


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(VggEdgeError, match="not a complete run directory"):
        ExportJob(tmp_path)
