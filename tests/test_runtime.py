"""The edge runtime on real exported artifacts of the session's trained run (fp32, 32 px).

Covers: same pixels as training, same probabilities as Keras, no TensorFlow imported,
`vgg-edge predict` (table, --json, --csv, --top-k, exit status naming every unreadable input,
the bad-input corpus) and every way an artifact folder can be wrong.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import READABLE, UNREADABLE, bad_corpus, interrupt_after, leftovers, snapshot, vgg_edge

from vgg_edge.errors import VggEdgeError
from vgg_edge.run import RunDir
from vgg_edge.manifest import MANIFEST
from vgg_edge.manifest import read as read_manifest
from vgg_edge.runtime import load_artifact

FORMATS = ("onnx", "tflite", "openvino")
HEAVY = ("tensorflow", "keras", "sklearn", "matplotlib")


@pytest.fixture(scope="session")
def artifacts(fp32_exports) -> dict[str, Path]:
    """fp32 exports of the trained run in every format, each through the real export pipeline."""
    return {fmt: fp32_exports / f"{fmt}-fp32" for fmt in FORMATS}


@pytest.fixture(scope="session")
def test_files(trained_run) -> list[Path]:
    split = RunDir.open(trained_run).split
    return [Path(split.data_root) / e.path for e in split.files("test")]


def assert_clean_failure(proc: subprocess.CompletedProcess, status: int, *named: str) -> list[str]:
    """Exit `status`, no traceback, and one `error:` line naming each of `named`."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    for name in named:
        assert sum(name in line for line in errors) == 1, (name, proc.stderr)
    return errors


def test_operating_point_travels_into_every_export_and_predict_applies_it(trained_run, artifacts, test_files):
    """The run's threshold on class 9 is in each manifest, judged by the gate, and decides `predict`'s labels."""
    run = RunDir.open(trained_run)
    rule = run.decision
    assert rule.positive == "9" and 0 < rule.threshold < 1
    recorded = json.loads((trained_run / "metrics.json").read_text())["operating_point"]
    for path in artifacts.values():
        info = read_manifest(path)
        assert info.decision == rule and info.manifest["decision"] == rule.record()
        # fp32: no flip, so the export's test figures at the operating point are the run's own
        assert info.manifest["parity"]["metrics"]["confusion_matrix"] == recorded["metrics"]["confusion_matrix"]
    predictor = load_artifact(artifacts["onnx"])
    probs = predictor.predict(run.load_images("test")[0])
    moved = np.flatnonzero(rule.decide(probs) != probs.argmax(1))
    assert len(moved) > 0  # on these images the rule and the argmax disagree: what predict prints tells them apart
    chosen = sorted(set(moved.tolist()) | set(range(10)))
    done = vgg_edge("predict", str(artifacts["onnx"]), *(str(test_files[i]) for i in chosen), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["decision"] == rule.record()
    labels = {p["path"]: p["label"] for p in doc["predictions"]}
    assert [labels[str(test_files[i])] for i in chosen] == [run.labels[k] for k in rule.decide(probs[chosen])]


def test_runtime_pixels_equal_training_pixels(trained_run, artifacts, test_files):
    """The device decodes the recorded test files into exactly the pixels the run was evaluated on."""
    run = RunDir.open(trained_run)
    trained_pixels, _ = run.load_images("test")
    predictor = load_artifact(artifacts["onnx"])
    device_pixels = np.stack([predictor.read(path) for path in test_files])
    assert device_pixels.dtype == trained_pixels.dtype == np.uint8
    assert np.array_equal(device_pixels, trained_pixels)
    # and classify (files -> labels) feeds the model those same pixels
    results, failures = predictor.classify(test_files[:40], top_k=len(run.labels), batch_size=16)
    direct = predictor.predict(trained_pixels[:40])
    assert not failures and [r.path for r in results] == [str(p) for p in test_files[:40]]
    for r, probs in zip(results, direct):
        top = dict(r.top)
        assert np.allclose([top[lab] for lab in run.labels], probs, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fp32_export_matches_keras(trained_run, artifacts, fmt):
    run = RunDir.open(trained_run)
    pixels, _ = run.load_images("test", limit=200)
    keras_probs = run.load_model().predict(pixels.astype(np.float32), verbose=0)
    predictor = load_artifact(artifacts[fmt])
    assert predictor.labels == run.labels and predictor.image_size == run.image_size
    probs = predictor.predict(pixels)
    assert probs.shape == keras_probs.shape
    assert np.abs(probs - keras_probs).max() < 1e-4
    assert np.array_equal(probs.argmax(1), keras_probs.argmax(1))
    assert np.allclose(predictor.predict(pixels[:1]), probs[:1], atol=1e-5)  # batch size changes nothing


def test_prediction_never_imports_tensorflow(artifacts, test_files):
    """In a fresh interpreter: the Python API and the CLI predict in all formats with no heavy module loaded."""
    script = f"""
import json, sys
from vgg_edge.runtime import load_artifact
from vgg_edge.cli import app
artifacts = {json.dumps({f: str(p) for f, p in artifacts.items()})}
files = {json.dumps([str(p) for p in test_files[:5]])}
labels = {{fmt: [r.label for r in load_artifact(path).classify(files)[0]] for fmt, path in artifacts.items()}}
try:
    app(["predict", artifacts["openvino"], *files, "--json"], standalone_mode=False)
finally:
    print(json.dumps({{"labels": labels, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["heavy"] == []
    assert len({tuple(v) for v in report["labels"].values()}) == 1 and len(report["labels"]["onnx"]) == 5


def test_cli_help_without_heavy_imports():
    script = "import sys\nfrom vgg_edge.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass\nprint(sorted(m for m in %r if m in sys.modules))" % (HEAVY,)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "predict" in proc.stdout and proc.stdout.splitlines()[-1] == "[]", proc.stdout + proc.stderr


def test_predict_cli_json_csv_table(artifacts, test_files, tmp_path):
    folder = tmp_path / "scans ünï"
    folder.mkdir()
    for path in test_files[:6]:
        shutil.copy(path, folder / f"{path.stem} copy.png")
    single = test_files[10]

    proc = vgg_edge("predict", artifacts["tflite"], folder, single, "--json", "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    expected, failures = load_artifact(artifacts["tflite"]).classify([*sorted(folder.iterdir()), single], top_k=3)
    assert doc["failures"] == [] and not failures
    assert [(p["path"], p["label"]) for p in doc["predictions"]] == [(r.path, r.label) for r in expected]
    for got, want in zip(doc["predictions"], expected):
        assert [t["label"] for t in got["top"]] == [lab for lab, _ in want.top] and len(got["top"]) == 3
        assert got["confidence"] == pytest.approx(want.confidence, abs=1e-6)

    proc = vgg_edge("predict", artifacts["onnx"], single, folder, "--csv", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert list(rows[0]) == ["path", "label", "confidence", "label_2", "confidence_2", "error"]
    assert len(rows) == 7 and all(r["error"] == "" and float(r["confidence"]) >= float(r["confidence_2"]) for r in rows)

    # Redirected output keeps whole lines: a long path is neither folded nor cut (grep on a log works).
    deep = tmp_path.joinpath(*["a long folder name on the ward PACS export share"] * 3)
    deep.mkdir(parents=True)
    shutil.copy(single, deep / single.name)
    proc = vgg_edge("predict", artifacts["openvino"], deep / single.name)
    assert proc.returncode == 0, proc.stderr
    assert f"{artifacts['openvino']} (openvino fp32," in proc.stdout and str(deep / single.name) in proc.stdout, proc.stdout


def test_predict_cli_on_bad_corpus(artifacts, tmp_path):
    """Readable oddities are classified; each unreadable file and missing path is named; exit status 1."""
    corpus = bad_corpus(tmp_path / "corpus ñ")
    missing = tmp_path / "odd [" / "gone].png"  # '[/gone]' in the message reads as rich markup: it must print as is
    proc = vgg_edge("predict", artifacts["onnx"], corpus, missing, corpus / "loop.png", "--json")
    errors = assert_clean_failure(proc, 1, *UNREADABLE, missing.name, "loop.png")
    assert len(errors) == len(UNREADABLE) + 2
    doc = json.loads(proc.stdout)
    assert sorted(Path(p["path"]).name for p in doc["predictions"]) == sorted(READABLE)
    assert len(doc["failures"]) == len(errors) and doc["skipped_non_images"] == 1  # the looping link inside the folder
    assert f"{len(errors)} of {len(errors) + len(READABLE)} inputs could not be read" in proc.stderr


def corrupt_copy(artifact: Path, dest: Path, change) -> Path:
    """A copy of the artifact folder with one thing changed by `change(folder, manifest) -> manifest`."""
    shutil.copytree(artifact, dest)
    manifest = json.loads((dest / MANIFEST).read_text())
    (dest / MANIFEST).write_text(json.dumps(change(dest, manifest)))
    return dest


def _flip_byte(folder: Path, doc: dict) -> dict:
    model = folder / doc["model_file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    return doc


def _drop_model(folder: Path, doc: dict) -> dict:
    (folder / doc["model_file"]).unlink()
    return doc


def _one_label_less(folder: Path, doc: dict) -> dict:
    return doc | {"labels": doc["labels"][:-1]}


def _one_label_less_everywhere(folder: Path, doc: dict) -> dict:
    """Labels and the manifest's output shape agree with each other, but not with the model itself."""
    return doc | {"labels": doc["labels"][:-1], "output": doc["output"] | {"shape": [None, len(doc["labels"]) - 1]}}


def _escape_folder(folder: Path, doc: dict) -> dict:
    return doc | {"files": doc["files"] | {"../outside.bin": {"sha256": "0" * 64, "bytes": 1}}}


def _malformed(folder: Path, doc: dict) -> dict:
    return doc | {"output": "probabilities"}


def _rejected(folder: Path, doc: dict) -> dict:
    return doc | {"status": "rejected"}


@pytest.mark.parametrize(
    "change, message",
    [
        (_flip_byte, r"model\.\w+: sha256 or size differs from the manifest"),
        (_drop_model, r"model\.\w+: named in the manifest but missing"),
        (_one_label_less, r"manifest\.json: 9 labels but the model has 10 outputs"),
        (_one_label_less_everywhere, r"manifest\.json: 9 labels but model\.\w+ has 10 outputs"),
        (_escape_folder, r"manifest\.json: bad 'files' entry '\.\./outside\.bin'"),
        (_malformed, r"manifest\.json: malformed manifest"),
        (_rejected, r"failed its parity gate"),
    ],
    ids=["wrong-hash", "missing-file", "labels-vs-manifest", "labels-vs-model", "path-escape", "malformed", "rejected"],
)
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_bad_artifact_refused_in_one_line(artifacts, tmp_path, test_files, fmt, change, message):
    bad = corrupt_copy(artifacts[fmt], tmp_path / "bad artifact", change)
    before = {p.name: p.read_bytes() for p in bad.iterdir()}
    proc = vgg_edge("predict", bad, test_files[0])
    errors = assert_clean_failure(proc, 2)
    assert len(errors) == 1 and re.search(message, errors[0]), proc.stderr
    assert {p.name: p.read_bytes() for p in bad.iterdir()} == before  # predict never writes into an artifact
    with pytest.raises(VggEdgeError, match=message):
        load_artifact(bad)


def test_not_an_artifact(tmp_path, test_files):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / MANIFEST).write_text("{ not json")
    for target, message in [(tmp_path, "no manifest"), (tmp_path / "junk", "not valid JSON")]:
        proc = vgg_edge("predict", target, test_files[0])
        assert message in assert_clean_failure(proc, 2)[0]


def test_model_file_or_manifest_names_its_artifact(artifacts, test_files):
    folder = artifacts["openvino"]
    for named in (folder / "model.xml", folder / MANIFEST):
        assert load_artifact(named).info.path == folder
    proc = vgg_edge("predict", folder / "model.xml", test_files[0], "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["format"] == "openvino", proc.stderr


def test_training_command_on_an_edge_install_is_one_line(tmp_path):
    """With TensorFlow absent (as in `pip install vgg-edge[edge]`), `train` says what to install instead of a traceback."""
    script = "import sys\nsys.modules['tensorflow'] = sys.modules['keras'] = None\nsys.argv = ['vgg-edge', 'train', '--out', %r]\nfrom vgg_edge.cli import main\nmain()" % str(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "error: this command needs keras, which this install lacks; pip install 'vgg-edge[full]'"


def test_ctrl_c_during_export_keeps_previous_artifact(trained_run, artifacts, tmp_path):
    """Interrupted while converting over an accepted artifact: the artifact stays byte-identical, no scratch left."""
    previous = tmp_path / "exported" / "onnx-fp32"
    shutil.copytree(artifacts["onnx"], previous)
    before = snapshot(previous)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    status, stderr = interrupt_after(
        ["export", trained_run, "--format", "onnx", "--precision", "fp32", "--out", previous],
        marker="decode test", log=tmp_path / "export.log", env=os.environ | {"TMPDIR": str(scratch)},
    )
    assert status == 130 and "Traceback" not in stderr, stderr
    assert snapshot(previous) == before
    # onnxruntime 1.31 writes its telemetry session id to $TMPDIR/.ses on import: not a leftover of ours,
    # and present only when the interrupt came after the parity check had loaded onnxruntime.
    assert leftovers(previous.parent, {previous.name}) == [] and [p.name for p in scratch.iterdir() if p.name != ".ses"] == []
    load_artifact(previous)  # still verifies and opens


def test_unproven_artifact_runs_and_says_so(artifacts, tmp_path, test_files):
    """The gate's `unproven` verdict publishes the model; predict runs it and marks every output."""
    unproven = corrupt_copy(artifacts["onnx"], tmp_path / "onnx-int8", lambda folder, doc: doc | {"status": "unproven"})
    proc = vgg_edge("predict", unproven, test_files[0], "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parity"] == "unproven"
    assert "unproven:" in proc.stderr and "gate.unproven" in proc.stderr
    table = vgg_edge("predict", unproven, test_files[0])
    assert table.returncode == 0 and "unproven:" in table.stderr
    accepted = vgg_edge("predict", artifacts["onnx"], test_files[0], "--json")
    assert json.loads(accepted.stdout)["parity"] == "accepted" and "unproven" not in accepted.stderr
